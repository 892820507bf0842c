//! The prompt dataset: JSONL or Parquet rows, and the seeded order in which the trainer visits them.
//!
//! A row is a JSON object (a JSONL line, or a Parquet row as [`parquet::record::Row::to_json_value`] gives it)
//! with
//! - `id` (string or number; optional, defaults to `line-N` in JSONL, `row-N` in Parquet), unique in the file;
//! - the prompt: `question` (a string, sent as the user message) or `prompt`: a list of `{"role", "content"}`
//!   messages, or a string (sent as the user message; HumanEval's function signature and docstring);
//! - the reference: `answer` (string or number), or `reward_model.ground_truth` (the verl layout; `style` is
//!   accepted and ignored); both may be given when they agree;
//! - for code problems (`reward = "code"`): `tests`, a Python test program (HumanEval's `check(entry_point)`,
//!   MBPP's asserts) or a non-empty list of `{"input", "output"}` stdin/stdout cases, and `entry_point` (a
//!   string, or null for stdin/stdout problems). A code row needs no answer. When the prompt is a string and
//!   an entry point is given, the prompt is also the code put before the candidate (see
//!   [`CodeTests::prefix`]), as HumanEval is judged;
//! - every other column (`data_source`, `ability`, `extra_info`, `agent_name`, `images`, ...): not used by the
//!   trainer, kept as they are in [`Example::extra`] and written with the results (`sod eval`'s
//!   `results.jsonl`), never an error: datasets prepared for verl load as they are.
//!
//! A row lacking what its reward needs is refused with its index and the missing field (a misspelt `answer`
//! therefore still fails: the row has no reference).
//!
//! Parquet files (`.parquet`) follow the verl/SOD layout: `prompt` a list of `{role, content}` structs,
//! `reward_model` a struct `{ground_truth, style}`, optional `data_source`, `ability`, `extra_info`. They are
//! read with the row API of the `parquet` crate (uncompressed or snappy, the pyarrow default; other codecs are
//! reported as errors).

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use sod_model::{ChatMessage, Role};

use crate::error::{Result, TrainError};

/// The tests of a code problem, as the `judge` tool takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeTests {
    /// A Python test program (a JSON string) or a list of `{"input", "output"}` cases.
    pub tests: serde_json::Value,
    /// The function the tests call (HumanEval); `None` for stdin/stdout problems.
    pub entry_point: Option<String>,
    /// Code put before the candidate's (HumanEval's prompt: imports, helpers, the signature and docstring):
    /// the row's prompt when it is a string and the row has an entry point.
    pub prefix: Option<String>,
}

/// One prompt with its reference answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Unique id; with the run seed it seeds the sampling of this prompt's trajectories.
    pub id: String,
    /// The conversation given to the model (without the tool-bearing system prompt the trainer adds when the
    /// conversation has no system message).
    pub messages: Vec<ChatMessage>,
    /// The reference answer (empty for a code problem without one).
    pub answer: String,
    /// The tests of a code problem.
    pub code: Option<CodeTests>,
    /// The row's other columns, as they were (see the module docs).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    prompt: Option<Prompt>,
    #[serde(default)]
    answer: Option<serde_json::Value>,
    #[serde(default)]
    reward_model: Option<RewardModel>,
    #[serde(default)]
    tests: Option<serde_json::Value>,
    #[serde(default)]
    entry_point: Option<String>,
    /// Every other column.
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Messages(Vec<PromptMessage>),
}

#[derive(Deserialize)]
struct RewardModel {
    #[serde(default)]
    ground_truth: Option<serde_json::Value>,
    #[serde(default, rename = "style")]
    _style: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct PromptMessage {
    role: Role,
    content: String,
}

/// Text of a JSON scalar used as an id or answer.
fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `tests` is a test program or a non-empty list of `{"input", "output"}` string pairs.
fn check_tests(tests: &serde_json::Value) -> std::result::Result<(), String> {
    match tests {
        serde_json::Value::String(program) if !program.trim().is_empty() => Ok(()),
        serde_json::Value::Array(cases) if !cases.is_empty() => {
            for (i, case) in cases.iter().enumerate() {
                let ok = case.as_object().is_some_and(|o| {
                    o.len() == 2
                        && o.get("input").is_some_and(serde_json::Value::is_string)
                        && o.get("output").is_some_and(serde_json::Value::is_string)
                });
                if !ok {
                    return Err(format!(
                        "`tests[{i}]` must be an object {{\"input\": string, \"output\": string}}"
                    ));
                }
            }
            Ok(())
        }
        _ => Err(
            "`tests` must be a non-empty test program or a non-empty list of {input, output} cases"
                .into(),
        ),
    }
}

/// The example of one row; `default_id` names a row without `id`. The error says what is wrong with the row.
fn parse_row(value: serde_json::Value, default_id: String) -> std::result::Result<Example, String> {
    let row: Row = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let id = match &row.id {
        None | Some(serde_json::Value::Null) => default_id,
        Some(v) => scalar_text(v).ok_or("`id` must be a string or a number")?,
    };
    let mut prefix = None;
    let messages = match (row.question, row.prompt) {
        (Some(q), None) => vec![ChatMessage::user(q)],
        (None, Some(Prompt::Text(text))) => {
            if row.entry_point.as_deref().is_some_and(|e| !e.is_empty()) {
                prefix = Some(text.clone());
            }
            vec![ChatMessage::user(text)]
        }
        (None, Some(Prompt::Messages(p))) if !p.is_empty() => p
            .into_iter()
            .map(|m| match m.role {
                Role::System => ChatMessage::system(m.content),
                Role::User => ChatMessage::user(m.content),
                Role::Assistant => ChatMessage::assistant(m.content),
                Role::Tool => ChatMessage::tool(m.content),
            })
            .collect(),
        (None, Some(Prompt::Messages(_))) => return Err("`prompt` has no messages".into()),
        (Some(_), Some(_)) => return Err("give `question` or `prompt`, not both".into()),
        (None, None) => return Err("a row needs `question` or `prompt`".into()),
    };
    let answer = match &row.answer {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(scalar_text(v).ok_or("`answer` must be a string or a number")?),
    };
    let ground_truth = match row
        .reward_model
        .as_ref()
        .and_then(|r| r.ground_truth.as_ref())
    {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            Some(scalar_text(v).ok_or("`reward_model.ground_truth` must be a string or a number")?)
        }
    };
    let answer = match (answer, ground_truth) {
        (Some(a), Some(g)) if a != g => {
            return Err(format!(
                "`answer` {a:?} and `reward_model.ground_truth` {g:?} differ"
            ));
        }
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    let code = match row.tests {
        None | Some(serde_json::Value::Null) => {
            if row.entry_point.is_some() {
                return Err("`entry_point` is given without `tests`".into());
            }
            None
        }
        Some(tests) => {
            check_tests(&tests)?;
            Some(CodeTests {
                tests,
                entry_point: row.entry_point.filter(|e| !e.is_empty()),
                prefix,
            })
        }
    };
    let answer = match (answer, &code) {
        (Some(a), _) => a,
        (None, Some(_)) => String::new(),
        (None, None) => {
            return Err(
                "a row needs `answer` or `reward_model.ground_truth` (or `tests` for a code problem)"
                    .into(),
            );
        }
    };
    Ok(Example {
        id,
        messages,
        answer,
        code,
        extra: row.extra,
    })
}

/// The examples of a dataset, in file order.
#[derive(Debug, Clone)]
pub struct Dataset {
    examples: Vec<Example>,
}

/// An example picked for a step: which one, and which pass over the data it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Scheduled<'a> {
    /// The example.
    pub example: &'a Example,
    /// 0 for the first pass over the dataset, 1 for the second, ...
    pub epoch: u64,
}

/// Where a row of a data file is: a JSONL line (1-based, as editors count) or a Parquet row (0-based, as pandas
/// counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowAt {
    /// A JSONL line, from 1.
    Line(usize),
    /// A Parquet row, from 0.
    Row(usize),
}

impl RowAt {
    /// An error about this row of `path`.
    pub fn error(self, path: &Path, message: impl Into<String>) -> TrainError {
        let (path, message) = (path.to_path_buf(), message.into());
        match self {
            RowAt::Line(line) => TrainError::Dataset {
                path,
                line,
                message,
            },
            RowAt::Row(row) => TrainError::DatasetRow { path, row, message },
        }
    }

    /// The id of a row that has none: `line-N` or `row-N`.
    pub fn default_id(self) -> String {
        match self {
            RowAt::Line(n) => format!("line-{n}"),
            RowAt::Row(n) => format!("row-{n}"),
        }
    }
}

/// The rows of a data file as JSON values, with where each one is: Parquet when the file name ends in `.parquet`
/// (each row as [`parquet::record::Row::to_json_value`] gives it), JSONL otherwise (blank lines skipped). A line
/// that is not JSON, or a row that cannot be decoded, is an error naming it.
pub fn read_rows(path: &Path) -> Result<Vec<(RowAt, serde_json::Value)>> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    {
        read_parquet_rows(path)
    } else {
        let text = std::fs::read_to_string(path).map_err(TrainError::io("reading", path))?;
        parse_jsonl_rows(&text, path)
    }
}

/// The rows of JSONL text; `path` is only used in messages.
pub fn parse_jsonl_rows(text: &str, path: &Path) -> Result<Vec<(RowAt, serde_json::Value)>> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = RowAt::Line(index + 1);
        let value = serde_json::from_str(line).map_err(|e| at.error(path, e.to_string()))?;
        rows.push((at, value));
    }
    Ok(rows)
}

fn read_parquet_rows(path: &Path) -> Result<Vec<(RowAt, serde_json::Value)>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let file_err = |message: String| TrainError::DatasetFile {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(TrainError::io("reading", path))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| file_err(format!("not a readable Parquet file: {e}")))?;
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| file_err(format!("cannot read the rows: {e}")))?;
    let mut rows = Vec::new();
    for (index, row) in iter.enumerate() {
        let at = RowAt::Row(index);
        let row = row.map_err(|e| at.error(path, format!("cannot decode the row: {e}")))?;
        rows.push((at, row.to_json_value()));
    }
    Ok(rows)
}

impl Dataset {
    /// Reads a dataset: Parquet when the file name ends in `.parquet`, JSONL otherwise (see [`read_rows`]); any
    /// malformed row is an error naming its line (JSONL, from 1) or row (Parquet, from 0).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_rows(read_rows(path)?, path)
    }

    /// Parses JSONL text; `path` is only used in messages.
    pub fn parse_jsonl(text: &str, path: &Path) -> Result<Self> {
        Self::from_rows(parse_jsonl_rows(text, path)?, path)
    }

    fn from_rows(rows: Vec<(RowAt, serde_json::Value)>, path: &Path) -> Result<Self> {
        let mut examples = Vec::new();
        let mut seen = HashSet::new();
        for (at, value) in rows {
            let example = parse_row(value, at.default_id()).map_err(|m| at.error(path, m))?;
            if !seen.insert(example.id.clone()) {
                return Err(at.error(path, format!("id {:?} appears twice", example.id)));
            }
            examples.push(example);
        }
        Self::non_empty(examples, path)
    }

    fn non_empty(examples: Vec<Example>, path: &Path) -> Result<Self> {
        if examples.is_empty() {
            return Err(TrainError::DatasetFile {
                path: path.to_path_buf(),
                message: "the dataset has no rows".into(),
            });
        }
        Ok(Dataset { examples })
    }

    /// A dataset of the given examples (ids must be unique).
    pub fn from_examples(examples: Vec<Example>) -> Self {
        Dataset { examples }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples (a loaded dataset never is empty).
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The examples in file order.
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// The `count` examples at positions `cursor..cursor + count` of the run's visiting order: each pass over the
    /// data is a permutation seeded by `(seed, epoch)`, and passes follow each other. The order depends only on
    /// the seed, so a resumed run continues exactly where the interrupted one was.
    pub fn take(&self, seed: u64, cursor: u64, count: usize) -> Vec<Scheduled<'_>> {
        let n = self.examples.len() as u64;
        let mut out = Vec::with_capacity(count);
        let mut order: Option<(u64, Vec<usize>)> = None;
        for position in cursor..cursor + count as u64 {
            let epoch = position / n;
            if order.as_ref().map(|(e, _)| *e) != Some(epoch) {
                order = Some((epoch, permutation(self.examples.len(), seed, epoch)));
            }
            let (_, perm) = order.as_ref().expect("set above");
            out.push(Scheduled {
                example: &self.examples[perm[(position % n) as usize]],
                epoch,
            });
        }
        out
    }
}

/// A seeded Fisher–Yates permutation of `0..n` (splitmix64 stream: small, fast, and fixed forever so that
/// recorded runs replay).
fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut state = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED_DA7A;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_questions_prompts_and_numbers() {
        let text = r#"{"id": 7, "question": "1+1?", "answer": 2}

{"id": "b", "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}], "answer": "4"}
{"question": "3+3?", "answer": "6", "data_source": "x"}"#;
        let d = Dataset::parse_jsonl(text, Path::new("t.jsonl")).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.examples()[0].id, "7");
        assert_eq!(d.examples()[0].answer, "2");
        assert_eq!(d.examples()[1].messages.len(), 2);
        assert_eq!(d.examples()[2].id, "line-4");
    }

    #[test]
    fn parses_code_rows_and_verl_references() {
        let text = r#"{"id": "HumanEval/9", "source": "HumanEval", "prompt": "def f():\n", "entry_point": "f", "tests": "check(f)"}
{"id": "io", "prompt": "Add two numbers.", "entry_point": null, "tests": [{"input": "1 2", "output": "3"}]}
{"prompt": [{"role": "user", "content": "2+2?"}], "reward_model": {"ground_truth": 4, "style": "rule"}, "ability": "math", "extra_info": {"index": 3}}
{"question": "1+1?", "answer": "2", "reward_model": {"ground_truth": "2"}}"#;
        let d = Dataset::parse_jsonl(text, Path::new("t.jsonl")).unwrap();
        let he = &d.examples()[0];
        let code = he.code.as_ref().unwrap();
        assert_eq!(he.answer, "");
        assert_eq!(he.messages[0].content, "def f():\n");
        assert_eq!(code.entry_point.as_deref(), Some("f"));
        assert_eq!(code.prefix.as_deref(), Some("def f():\n"));
        assert_eq!(code.tests, serde_json::json!("check(f)"));
        let io = d.examples()[1].code.as_ref().unwrap();
        assert_eq!(
            (io.entry_point.as_deref(), io.prefix.as_deref()),
            (None, None)
        );
        assert_eq!(d.examples()[2].answer, "4");
        assert_eq!(d.examples()[2].id, "line-3");
        assert!(d.examples()[2].code.is_none());
        assert_eq!(d.examples()[3].answer, "2");
    }

    #[test]
    fn verl_rows_keep_their_other_columns() {
        let text = r#"{"prompt": [{"role": "user", "content": "2+2?"}], "reward_model": {"ground_truth": "4", "style": "rule", "extra": 1}, "agent_name": "tool_agent", "images": null, "data_source": "gsm8k", "extra_info": {"index": 3, "need_tools_kwargs": true, "tools_kwargs": {"calc": {}}}}"#;
        let d = Dataset::parse_jsonl(text, Path::new("t.jsonl")).unwrap();
        let e = &d.examples()[0];
        assert_eq!(e.answer, "4");
        assert_eq!(e.extra["agent_name"], "tool_agent");
        assert_eq!(e.extra["data_source"], "gsm8k");
        assert!(e.extra["images"].is_null());
        assert_eq!(
            e.extra["extra_info"]["tools_kwargs"],
            serde_json::json!({"calc": {}})
        );
        assert!(!e.extra.contains_key("prompt") && !e.extra.contains_key("reward_model"));
    }

    #[test]
    fn bad_code_rows_say_why() {
        for (text, needle) in [
            (
                r#"{"question": "q", "entry_point": "f", "answer": 1}"#,
                "without `tests`",
            ),
            (r#"{"question": "q", "tests": ""}"#, "non-empty"),
            (r#"{"question": "q", "tests": []}"#, "non-empty"),
            (
                r#"{"question": "q", "tests": [{"input": "1"}]}"#,
                "tests[0]",
            ),
            (r#"{"question": "q", "tests": 5}"#, "tests"),
            (
                r#"{"question": "q", "answer": 1, "reward_model": {"ground_truth": "2"}}"#,
                "differ",
            ),
            (
                r#"{"question": "q", "reward_model": {"truth": "2"}}"#,
                "truth",
            ),
            // A misspelt reference leaves the row without one.
            (r#"{"question": "q", "anwser": 2}"#, "needs `answer`"),
        ] {
            let e = Dataset::parse_jsonl(text, Path::new("t.jsonl"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.contains("line 1"),
                "{e} lacks {needle}"
            );
        }
    }

    #[test]
    fn bad_rows_name_their_line() {
        for (text, needle) in [
            ("{\"answer\": 1}", "question"),
            (
                "{\"id\": 1, \"question\": \"q\", \"answer\": 1}\n{\"id\": 1, \"question\": \"q\", \"answer\": 1}",
                "twice",
            ),
            ("{\"question\": \"q\"}", "answer"),
            ("not json", "line 1"),
            ("", "no rows"),
        ] {
            let e = Dataset::parse_jsonl(text, Path::new("t.jsonl"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn visiting_order_is_a_seeded_permutation_per_epoch() {
        let examples = (0..5)
            .map(|i| Example {
                id: i.to_string(),
                messages: vec![],
                answer: String::new(),
                code: None,
                extra: serde_json::Map::new(),
            })
            .collect();
        let d = Dataset::from_examples(examples);
        let ids = |seed, cursor, count| -> Vec<String> {
            d.take(seed, cursor, count)
                .iter()
                .map(|s| s.example.id.clone())
                .collect()
        };
        let first = ids(1, 0, 5);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, ["0", "1", "2", "3", "4"]);
        // Taking in pieces gives the same order as taking at once, across epoch boundaries.
        let whole = ids(1, 0, 12);
        let pieces: Vec<String> = [ids(1, 0, 3), ids(1, 3, 4), ids(1, 7, 5)].concat();
        assert_eq!(whole, pieces);
        assert_ne!(ids(1, 0, 10), ids(2, 0, 10));
        assert_eq!(d.take(1, 7, 1)[0].epoch, 1);
    }
}

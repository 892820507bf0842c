//! The prompt dataset: JSONL rows and the seeded order in which the trainer visits them.
//!
//! Each line is a JSON object with
//! - `id` (string or number; optional, defaults to `line-N`), unique in the file;
//! - `question` (a string, sent as the user message) or `prompt` (a list of `{"role", "content"}` messages);
//! - `answer` (string or number): the reference the reward compares against.
//!
//! Parquet files in the verl layout are not read yet: convert them to JSONL.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use sod_model::{ChatMessage, Role};

use crate::error::{Result, TrainError};

/// One prompt with its reference answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Unique id; with the run seed it seeds the sampling of this prompt's trajectories.
    pub id: String,
    /// The conversation given to the model (without the tool-bearing system prompt the trainer adds when the
    /// conversation has no system message).
    pub messages: Vec<ChatMessage>,
    /// The reference answer.
    pub answer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    prompt: Option<Vec<PromptMessage>>,
    answer: serde_json::Value,
    // Carried by many datasets; not used by the trainer.
    #[serde(default, rename = "data_source")]
    _data_source: Option<serde_json::Value>,
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

impl Dataset {
    /// Reads a JSONL file; blank lines are skipped; any malformed row is an error naming its line.
    pub fn load_jsonl(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io("reading", path))?;
        Self::parse_jsonl(&text, path)
    }

    /// Parses JSONL text; `path` is only used in messages.
    pub fn parse_jsonl(text: &str, path: &Path) -> Result<Self> {
        let mut examples = Vec::new();
        let mut seen = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let err = |message: String| TrainError::Dataset {
                path: path.to_path_buf(),
                line: line_no,
                message,
            };
            let row: Row = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
            let id = match &row.id {
                None => format!("line-{line_no}"),
                Some(v) => {
                    scalar_text(v).ok_or_else(|| err("`id` must be a string or a number".into()))?
                }
            };
            if !seen.insert(id.clone()) {
                return Err(err(format!("id {id:?} appears twice")));
            }
            let messages = match (row.question, row.prompt) {
                (Some(q), None) => vec![ChatMessage::user(q)],
                (None, Some(p)) if !p.is_empty() => p
                    .into_iter()
                    .map(|m| match m.role {
                        Role::System => ChatMessage::system(m.content),
                        Role::User => ChatMessage::user(m.content),
                        Role::Assistant => ChatMessage::assistant(m.content),
                        Role::Tool => ChatMessage::tool(m.content),
                    })
                    .collect(),
                (None, Some(_)) => return Err(err("`prompt` has no messages".into())),
                (Some(_), Some(_)) => {
                    return Err(err("give `question` or `prompt`, not both".into()));
                }
                (None, None) => return Err(err("a row needs `question` or `prompt`".into())),
            };
            let answer = scalar_text(&row.answer)
                .ok_or_else(|| err("`answer` must be a string or a number".into()))?;
            examples.push(Example {
                id,
                messages,
                answer,
            });
        }
        if examples.is_empty() {
            return Err(TrainError::Dataset {
                path: path.to_path_buf(),
                line: 0,
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

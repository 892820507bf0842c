//! Parquet datasets in the verl layout: files written here with the `parquet` crate's column writer, in the
//! shape pyarrow gives a pandas frame of verl rows (nullable columns, 3-level lists of structs, snappy).

mod support;

use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use sod_model::Role;
use sod_train::TrainError;
use sod_train::dataset::Dataset;

/// The schema pyarrow writes for verl's `{data_source, prompt, ability, reward_model, extra_info, agent_name}` rows
/// (`agent_name` as verl's multi-turn tool-agent datasets have it).
const VERL_SCHEMA: &str = "
message schema {
  OPTIONAL BYTE_ARRAY data_source (UTF8);
  OPTIONAL group prompt (LIST) {
    REPEATED group list {
      OPTIONAL group element {
        OPTIONAL BYTE_ARRAY content (UTF8);
        OPTIONAL BYTE_ARRAY role (UTF8);
      }
    }
  }
  OPTIONAL BYTE_ARRAY ability (UTF8);
  OPTIONAL group reward_model {
    OPTIONAL BYTE_ARRAY ground_truth (UTF8);
    OPTIONAL BYTE_ARRAY style (UTF8);
  }
  OPTIONAL group extra_info {
    OPTIONAL INT64 index;
    OPTIONAL BYTE_ARRAY split (UTF8);
  }
  OPTIONAL BYTE_ARRAY agent_name (UTF8);
}";

/// One verl row; `None` is a null.
struct VerlRow {
    data_source: Option<&'static str>,
    prompt: Vec<(&'static str, &'static str)>,
    ground_truth: Option<&'static str>,
    index: i64,
}

/// A nullable string column of a top-level field (`depth` 1) or of a field of a top-level struct (`depth` 2).
fn optional_strings(values: &[Option<&str>], depth: i16) -> (Vec<ByteArray>, Vec<i16>) {
    let present: Vec<ByteArray> = values
        .iter()
        .flatten()
        .map(|s| ByteArray::from(*s))
        .collect();
    let defs = values
        .iter()
        .map(|v| if v.is_some() { depth } else { depth - 1 })
        .collect();
    (present, defs)
}

/// Writes `rows` in the verl layout, snappy-compressed, as one row group.
fn write_verl(path: &Path, rows: &[VerlRow]) {
    write_verl_as(path, rows, VERL_SCHEMA);
}

/// [`write_verl`] with another schema of the same leaf columns (the message list under another name).
fn write_verl_as(path: &Path, rows: &[VerlRow], schema: &str) {
    let schema = Arc::new(parse_message_type(schema).expect("schema"));
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(path).expect("create");
    let mut writer = SerializedFileWriter::new(file, schema, props).expect("writer");
    let mut group = writer.next_row_group().expect("row group");

    // prompt.list.element.{content, role}: definition 4 for a present string (1 for an empty list), repetition 1
    // within a list.
    let message_column = |pick: fn(&(&'static str, &'static str)) -> &'static str| {
        let mut values = Vec::new();
        let (mut defs, mut reps) = (Vec::new(), Vec::new());
        for row in rows {
            if row.prompt.is_empty() {
                // An empty list: defined up to the list, no element.
                defs.push(1);
                reps.push(0);
            }
            for (j, message) in row.prompt.iter().enumerate() {
                values.push(ByteArray::from(pick(message)));
                defs.push(4);
                reps.push(i16::from(j > 0));
            }
        }
        (values, defs, reps)
    };
    let mut column = 0;
    while let Some(mut col) = group.next_column().expect("column") {
        match column {
            0 => {
                let data: Vec<Option<&str>> = rows.iter().map(|r| r.data_source).collect();
                let (values, defs) = optional_strings(&data, 1);
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("data_source");
            }
            1 | 2 => {
                let (values, defs, reps) = if column == 1 {
                    message_column(|m| m.1)
                } else {
                    message_column(|m| m.0)
                };
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), Some(&reps))
                    .expect("prompt");
            }
            3 => {
                let data = vec![Some("math"); rows.len()];
                let (values, defs) = optional_strings(&data, 1);
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("ability");
            }
            4 | 5 => {
                let data: Vec<Option<&str>> = if column == 4 {
                    rows.iter().map(|r| r.ground_truth).collect()
                } else {
                    vec![Some("rule"); rows.len()]
                };
                let (values, defs) = optional_strings(&data, 2);
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("reward_model");
            }
            6 => {
                let values: Vec<i64> = rows.iter().map(|r| r.index).collect();
                col.typed::<Int64Type>()
                    .write_batch(&values, Some(&vec![2; rows.len()]), None)
                    .expect("index");
            }
            7 => {
                let (values, defs) = optional_strings(&vec![Some("train"); rows.len()], 2);
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("split");
            }
            8 => {
                let (values, defs) = optional_strings(&vec![Some("tool_agent"); rows.len()], 1);
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("agent_name");
            }
            other => panic!("unexpected column {other}"),
        }
        col.close().expect("close column");
        column += 1;
    }
    assert_eq!(column, 9, "the schema has 9 leaf columns");
    group.close().expect("close row group");
    writer.close().expect("close file");
}

fn good_rows() -> Vec<VerlRow> {
    vec![
        VerlRow {
            data_source: Some("openai/gsm8k"),
            prompt: vec![("system", "Be brief."), ("user", "What is 6 * 7?")],
            ground_truth: Some("42"),
            index: 0,
        },
        VerlRow {
            data_source: None,
            prompt: vec![("user", "What is 2 + 3?")],
            ground_truth: Some("5"),
            index: 1,
        },
        VerlRow {
            data_source: Some("openai/gsm8k"),
            prompt: vec![("user", "Half of 9?")],
            ground_truth: Some("4.5"),
            index: 2,
        },
    ]
}

#[test]
fn reads_verl_rows_with_message_lists_and_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.parquet");
    write_verl(&path, &good_rows());
    let d = Dataset::load(&path).unwrap();
    assert_eq!(d.len(), 3);
    let e = &d.examples()[0];
    assert_eq!(e.id, "row-0");
    assert_eq!(e.answer, "42");
    assert_eq!(e.messages.len(), 2);
    assert_eq!(
        (e.messages[0].role, e.messages[0].content.as_str()),
        (Role::System, "Be brief.")
    );
    assert_eq!(
        (e.messages[1].role, e.messages[1].content.as_str()),
        (Role::User, "What is 6 * 7?")
    );
    let e = &d.examples()[1];
    assert_eq!((e.id.as_str(), e.answer.as_str()), ("row-1", "5"));
    assert_eq!(e.messages.len(), 1);
    assert_eq!(e.messages[0].content, "What is 2 + 3?");
    assert_eq!(d.examples()[2].answer, "4.5");
    assert!(d.examples().iter().all(|e| e.code.is_none()));
}

#[test]
fn malformed_rows_and_files_are_named() {
    let dir = tempfile::tempdir().unwrap();

    // Row 1 has no reference answer.
    let mut rows = good_rows();
    rows[1].ground_truth = None;
    let path = dir.path().join("no_answer.parquet");
    write_verl(&path, &rows);
    let err = Dataset::load(&path).unwrap_err();
    assert!(
        matches!(err, TrainError::DatasetRow { row: 1, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("row 1")
            && text.contains("ground_truth")
            && text.contains("no_answer.parquet"),
        "{text}"
    );

    // Row 2 has a message with an unknown role.
    let mut rows = good_rows();
    rows[2].prompt = vec![("robot", "beep")];
    let path = dir.path().join("bad_role.parquet");
    write_verl(&path, &rows);
    let text = Dataset::load(&path).unwrap_err().to_string();
    assert!(text.contains("row 2"), "{text}");

    // Row 0 has an empty prompt list.
    let mut rows = good_rows();
    rows[0].prompt = vec![];
    let path = dir.path().join("empty_prompt.parquet");
    write_verl(&path, &rows);
    let text = Dataset::load(&path).unwrap_err().to_string();
    assert!(text.contains("row 0"), "{text}");

    // Not Parquet at all.
    let path = dir.path().join("fake.parquet");
    std::fs::write(&path, "{\"question\": \"q\", \"answer\": 1}\n").unwrap();
    let err = Dataset::load(&path).unwrap_err();
    assert!(
        matches!(err, TrainError::DatasetFile { .. }) && err.to_string().contains("Parquet"),
        "{err}"
    );
}

/// A verl Parquet file with columns the trainer does not use (`agent_name`, `extra_info`, `data_source`) trains,
/// and those columns come back as they were in the step's rollout records.
#[test]
fn a_verl_parquet_with_extra_columns_trains_and_keeps_them_in_the_rollout_records() {
    let fx = support::Fixture::new();
    let data = fx.path().join("verl.parquet");
    write_verl(&data, &good_rows()[..2]);
    let config = fx.config(
        "out",
        &[
            &format!("dataset={:?}", data.display().to_string()),
            "steps=1",
            "rollouts_every=1",
        ],
    );
    let out = config.out_dir.clone();
    let mut trainer = sod_train::Trainer::new(config, support::options(false)).unwrap();
    let summary = trainer.run().unwrap();
    assert_eq!(summary.step, 1);
    let text = std::fs::read_to_string(out.join("rollouts/step-1.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Two prompts x two samples.
    assert_eq!(records.len(), 4);
    for r in &records {
        assert_eq!(r["extra"]["agent_name"], "tool_agent", "{r}");
        assert_eq!(r["extra"]["extra_info"]["split"], "train", "{r}");
        assert!(r["response"].is_string() && r["finish"].is_string(), "{r}");
    }
    let first = records.iter().find(|r| r["prompt_id"] == "row-0").unwrap();
    assert_eq!(first["extra"]["data_source"], "openai/gsm8k");
    assert_eq!(first["extra"]["extra_info"]["index"], 0);
}

/// verl's multi-turn SFT layout in Parquet (a `messages` list of `{role, content}` structs beside columns the
/// trainer does not use): `sod sft` reads it, keeps the other columns, names a bad row by its index, and trains.
#[test]
fn sft_reads_and_trains_on_a_verl_parquet_of_conversations() {
    use sod_train::sft::data::{Columns, load_conversations};
    use sod_train::sft::run::{SftRunConfig, SftRunOptions, run_sft};
    let fx = support::Fixture::new();
    let data = fx.path().join("sft.parquet");
    let schema = VERL_SCHEMA.replace("group prompt (LIST)", "group messages (LIST)");
    let conversation = |q: &'static str, a: &'static str| VerlRow {
        data_source: Some("sft-test"),
        prompt: vec![("user", q), ("assistant", a)],
        ground_truth: None,
        index: 0,
    };
    let rows = vec![
        conversation("What is 6 * 7?", "The answer is \\boxed{42}."),
        conversation("What is 2 + 3?", "The answer is \\boxed{5}."),
    ];
    write_verl_as(&data, &rows, &schema);
    let conversations = load_conversations(&data, &Columns::default()).unwrap();
    assert_eq!(conversations.len(), 2);
    assert_eq!(conversations[1].id, "row-1");
    assert_eq!(
        conversations[1].messages[1].content,
        "The answer is \\boxed{5}."
    );
    assert_eq!(conversations[0].extra["agent_name"], "tool_agent");
    assert_eq!(conversations[0].extra["data_source"], "sft-test");

    let out = fx.path().join("sft-out");
    let config = |data: &Path| {
        let text = format!(
            "model = \"student\"\ndata = {data:?}\nout_dir = {out:?}\nsteps = 2\nbatch_size = 2\nmicro_batch = 1\n"
        );
        let path = fx.path().join("sft.toml");
        std::fs::write(&path, text).unwrap();
        SftRunConfig::load(&path, &[]).unwrap()
    };
    let options = SftRunOptions {
        progress: false,
        log_every: 0,
        ..SftRunOptions::default()
    };
    let summary = run_sft(&config(&data), &options).unwrap();
    assert_eq!((summary.step, summary.conversations), (2, 2));
    assert!(summary.model.join("model.safetensors").is_file());

    // A row whose assistant message has an unknown role: refused, naming the row.
    let bad = fx.path().join("bad.parquet");
    let mut rows = rows;
    rows[1].prompt[1].0 = "robot";
    write_verl_as(&bad, &rows, &schema);
    let err = load_conversations(&bad, &Columns::default()).unwrap_err();
    assert!(
        matches!(err, TrainError::DatasetRow { row: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("message 1"), "{err}");
}

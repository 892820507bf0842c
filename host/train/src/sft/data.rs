//! Training conversations from JSONL or Parquet files, in the layout of verl's multi-turn SFT datasets and of
//! OpenAI's fine-tuning files: one conversation per row, its messages under `messages` (OpenAI/Hugging Face
//! message objects: `role`, `content`, `tool_calls` with `{"type": "function", "function": {"name",
//! "arguments"}}`, `reasoning_content`, a per-message `weight` of 0 or 1) and the tools it may call under an
//! optional `tools` column (a list of OpenAI function schemas, or that list as a JSON string, as verl stores it).
//! Other columns are kept in [`Conversation::extra`] and never an error; `id` names the row when present.
//!
//! Parquet stores a list of objects as structs with the union of their keys, so an object read from Parquet has
//! every key any of its siblings has, the missing ones as `null`: inside tool schemas and tool-call arguments
//! those `null` members are dropped (a schema never means `null` there), elsewhere they read as absent.

use std::collections::HashSet;
use std::path::Path;

use sod_model::ChatMessage;

use crate::dataset::{RowAt, read_rows};
use crate::error::{Result, TrainError};

/// One training conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// Its `id` column, else `line-N` (JSONL) or `row-N` (Parquet).
    pub id: String,
    /// Where it is in the file (for messages).
    pub at: RowAt,
    /// The messages.
    pub messages: Vec<ChatMessage>,
    /// The tools' function schemas shown to the model (may be empty).
    pub tools: Vec<serde_json::Value>,
    /// The row's other columns, as they are.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Which columns hold the messages and the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The messages column (default `messages`).
    pub messages: String,
    /// The tools column (default `tools`); a row without it has no tools.
    pub tools: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            messages: "messages".into(),
            tools: "tools".into(),
        }
    }
}

/// Reads every conversation of `path`; a malformed row is an error naming its line (JSONL) or row (Parquet) and
/// what is wrong with it.
pub fn load_conversations(path: &Path, columns: &Columns) -> Result<Vec<Conversation>> {
    let parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (at, row) in read_rows(path)? {
        let conversation = parse_conversation(at, row, columns, parquet)
            .map_err(|message| at.error(path, message))?;
        if !seen.insert(conversation.id.clone()) {
            return Err(at.error(path, format!("id {:?} appears twice", conversation.id)));
        }
        out.push(conversation);
    }
    if out.is_empty() {
        return Err(TrainError::DatasetFile {
            path: path.to_path_buf(),
            message: "the file has no conversations".into(),
        });
    }
    Ok(out)
}

/// One row (a JSON object) as a conversation (see the module docs); `at` names it when it has no `id`, `parquet`
/// undoes Parquet's struct unions. The error says what is wrong with the row.
pub fn parse_conversation(
    at: RowAt,
    row: serde_json::Value,
    columns: &Columns,
    parquet: bool,
) -> std::result::Result<Conversation, String> {
    let serde_json::Value::Object(mut row) = row else {
        return Err("a row must be a JSON object".into());
    };
    let id = match row.remove("id") {
        None | Some(serde_json::Value::Null) => at.default_id(),
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("id must be a string or a number, not {other}")),
    };
    let mut messages = match row.remove(&columns.messages) {
        Some(value) => list_column(value, &columns.messages, "messages")?
            .ok_or_else(|| format!("column {:?} is empty: no messages", columns.messages))?,
        None => {
            let mut present: Vec<&str> = row.keys().map(String::as_str).collect();
            present.sort_unstable();
            return Err(format!(
                "no {:?} column (the row has {present:?}); name the messages column with messages_key",
                columns.messages
            ));
        }
    };
    if parquet {
        for message in &mut messages {
            drop_nulls_in_tool_call_arguments(message);
        }
    }
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(k, m)| {
            serde_json::from_value::<ChatMessage>(m).map_err(|e| format!("message {k}: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let tools = match row.remove(&columns.tools) {
        Some(value) => list_column(value, &columns.tools, "tool schemas")?.unwrap_or_default(),
        None => Vec::new(),
    };
    let tools: Vec<serde_json::Value> = if parquet {
        tools.into_iter().map(without_nulls).collect()
    } else {
        tools
    };
    if let Some(k) = tools.iter().position(|t| !t.is_object()) {
        return Err(format!("tool schema {k} is not a JSON object"));
    }
    Ok(Conversation {
        id,
        at,
        messages,
        tools,
        extra: row,
    })
}

/// A column holding a JSON list of `what`, or that list written as a JSON string (verl stores `tools` so);
/// `None` for `null`, an empty string, or a string holding `null`.
fn list_column(
    value: serde_json::Value,
    column: &str,
    what: &str,
) -> std::result::Result<Option<Vec<serde_json::Value>>, String> {
    let value = match value {
        serde_json::Value::String(text) if text.trim().is_empty() => return Ok(None),
        serde_json::Value::String(text) => serde_json::from_str(&text).map_err(|_| {
            format!("column {column:?} is a string that is not a JSON list of {what}")
        })?,
        other => other,
    };
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Array(list) => Ok(Some(list)),
        other => Err(format!(
            "column {column:?} must be a list of {what}, not {}",
            kind(&other)
        )),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `value` without `null` object members, at any depth.
fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(list) => {
            serde_json::Value::Array(list.into_iter().map(without_nulls).collect())
        }
        other => other,
    }
}

fn drop_nulls_in_tool_call_arguments(message: &mut serde_json::Value) {
    let Some(calls) = message
        .get_mut("tool_calls")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for call in calls {
        let target = match call.get_mut("function") {
            Some(f) if f.is_object() => f,
            _ => call,
        };
        if let Some(arguments) = target.get_mut("arguments") {
            *arguments = without_nulls(arguments.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<Conversation>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, text).unwrap();
        load_conversations(&path, &Columns::default())
    }

    #[test]
    fn rows_read_as_openai_and_verl_write_them() {
        let rows = load(concat!(
            r#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"e\": \"2+2\"}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "4"}, {"role": "assistant", "content": "4"}], "tools": "[{\"type\": \"function\", \"function\": {\"name\": \"calc\"}}]", "agent_name": "tool_agent"}"#,
            "\n\n",
            r#"{"id": 7, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "weight": 0}]}"#,
        ))
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, "line-1");
        assert_eq!(rows[0].messages.len(), 4);
        assert_eq!(rows[0].messages[1].tool_calls[0].arguments["e"], "2+2");
        assert_eq!(rows[0].tools[0]["function"]["name"], "calc");
        assert_eq!(rows[0].extra["agent_name"], "tool_agent");
        assert_eq!((rows[1].id.as_str(), rows[1].at), ("7", RowAt::Line(3)));
        assert!(rows[1].tools.is_empty());
        assert_eq!(rows[1].messages[1].weight, Some(0));
    }

    #[test]
    fn bad_rows_name_their_line_and_problem() {
        let err = |text: &str| load(text).unwrap_err().to_string();
        let e = err("{\"messages\": []}\n{\"conversation\": []}\n");
        assert!(e.contains(":2") || e.contains("line 2"), "{e}");
        assert!(
            e.contains("no \"messages\" column") && e.contains("conversation"),
            "{e}"
        );
        let e = err("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}");
        assert!(e.contains("message 0"), "{e}");
        let e = err("{\"messages\": [], \"tools\": 3}");
        assert!(e.contains("list of tool schemas"), "{e}");
        let e = err("{\"id\": \"a\", \"messages\": []}\n{\"id\": \"a\", \"messages\": []}");
        assert!(e.contains("appears twice"), "{e}");
        let e = err("\n");
        assert!(e.contains("no conversations"), "{e}");
    }

    #[test]
    fn parquet_nulls_leave_schemas_and_arguments() {
        let mut message = serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": {"x": 1, "y": null}}}]});
        drop_nulls_in_tool_call_arguments(&mut message);
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            serde_json::json!({"x": 1})
        );
        let schema = without_nulls(
            serde_json::json!({"type": "function", "function": {"name": "f",
            "parameters": {"properties": {"x": {"type": "integer", "enum": null}}, "required": null}}}),
        );
        assert_eq!(
            schema,
            serde_json::json!({"type": "function", "function": {"name": "f",
                "parameters": {"properties": {"x": {"type": "integer"}}}}})
        );
    }
}

//! Hermes-style tool calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in assistant text.

use serde::{Deserialize, Serialize};

/// Opening tag of a Hermes tool call.
pub const TOOL_CALL_OPEN: &str = "<tool_call>";
/// Closing tag of a Hermes tool call.
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

/// Markers that end an unterminated tool call body (besides the end of the text).
const BODY_TERMINATORS: &[&str] = &[
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    "<|im_end|>",
    "<|endoftext|>",
];

/// A parsed tool call.
///
/// Deserialises from this shape (`{"name", "arguments"}`) and from the one OpenAI and Hugging Face datasets write
/// (`{"type": "function", "id": ..., "function": {"name", "arguments"}}`), with `arguments` an object or a string
/// holding a JSON object (a string is parsed: chat templates then render it as `tojson` does, which equals the
/// string when it was written by `json.dumps` with its default separators).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireToolCall")]
pub struct ToolCall {
    /// Name of the function to call.
    pub name: String,
    /// Arguments, always a JSON object.
    pub arguments: serde_json::Value,
}

/// A tool call as datasets write it (see [`ToolCall`]).
#[derive(Deserialize)]
#[serde(untagged)]
enum WireToolCall {
    OpenAi { function: WireFunction },
    Plain(WireFunction),
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

impl TryFrom<WireToolCall> for ToolCall {
    type Error = String;

    fn try_from(wire: WireToolCall) -> Result<Self, String> {
        let (WireToolCall::OpenAi { function } | WireToolCall::Plain(function)) = wire;
        let arguments = match function.arguments {
            serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
            serde_json::Value::String(text) => serde_json::from_str(&text).map_err(|e| {
                format!(
                    "tool call {:?}: its arguments are a string that is not JSON ({e})",
                    function.name
                )
            })?,
            value => value,
        };
        if !arguments.is_object() {
            return Err(format!(
                "tool call {:?}: arguments must be a JSON object, not {arguments}",
                function.name
            ));
        }
        Ok(ToolCall {
            name: function.name,
            arguments,
        })
    }
}

/// Why a `<tool_call>` block could not be understood. The `Display` text is written to be sent back to the model
/// as the tool response, so it says what was wrong and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallError {
    /// The block is empty.
    #[error(
        "error: empty tool call. Write {{\"name\": <function-name>, \"arguments\": <args-json-object>}} between <tool_call> and </tool_call>."
    )]
    Empty,
    /// The body is not JSON, even after lenient repairs.
    #[error(
        "error: the tool call is not valid JSON ({detail}). Write {{\"name\": <function-name>, \"arguments\": <args-json-object>}} between <tool_call> and </tool_call>."
    )]
    InvalidJson {
        /// The JSON parser's message.
        detail: String,
    },
    /// The body is JSON but not an object.
    #[error(
        "error: the tool call must be a JSON object with \"name\" and \"arguments\", got {found}."
    )]
    NotAnObject {
        /// The kind of JSON value found.
        found: &'static str,
    },
    /// No usable `"name"`.
    #[error("error: the tool call has no \"name\" string naming the function to call.")]
    MissingName,
    /// `"arguments"` is neither an object nor a string holding one.
    #[error("error: the \"arguments\" of tool call {name:?} must be a JSON object, got {found}.")]
    BadArguments {
        /// The function name given.
        name: String,
        /// What was found instead.
        found: String,
    },
}

/// Parses every `<tool_call>` block of `text`, in order, leniently:
///
/// - whitespace around the JSON and Markdown code fences (```` ```json ... ``` ````) inside the block are ignored;
/// - a missing `</tool_call>` is accepted: the body then ends at the next `<tool_call>`, `<|im_end|>`,
///   `<|endoftext|>` or the end of the text;
/// - trailing commas before `}`/`]` are removed and missing closing brackets at the end are added when the JSON
///   does not parse as is;
/// - `"arguments"` may be an object, a string holding a JSON object, or absent/null (= no arguments);
///   `"parameters"` is accepted as a synonym, and an OpenAI-style `{"function": {...}}` wrapper is unwrapped.
///
/// Each block gives `Ok(ToolCall)` or an `Err` whose message can be sent back to the model. Never panics.
pub fn parse_tool_calls(text: &str) -> Vec<Result<ToolCall, ToolCallError>> {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(TOOL_CALL_OPEN) {
        let after = &rest[start + TOOL_CALL_OPEN.len()..];
        let (end, skip) = BODY_TERMINATORS
            .iter()
            .filter_map(|m| {
                after
                    .find(m)
                    .map(|i| (i, if *m == TOOL_CALL_CLOSE { m.len() } else { 0 }))
            })
            .min_by_key(|(i, _)| *i)
            .unwrap_or((after.len(), 0));
        calls.push(parse_one(&after[..end]));
        rest = &after[end + skip..];
    }
    calls
}

/// `text` without its `<tool_call>` blocks (with the same lenient block boundaries as [`parse_tool_calls`]),
/// trimmed: the assistant's prose.
pub fn strip_tool_calls(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(TOOL_CALL_OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + TOOL_CALL_OPEN.len()..];
        let (end, skip) = BODY_TERMINATORS
            .iter()
            .filter_map(|m| {
                after
                    .find(m)
                    .map(|i| (i, if *m == TOOL_CALL_CLOSE { m.len() } else { 0 }))
            })
            .min_by_key(|(i, _)| *i)
            .unwrap_or((after.len(), 0));
        rest = &after[end + skip..];
    }
    out.push_str(rest);
    out.trim().to_string()
}

fn parse_one(body: &str) -> Result<ToolCall, ToolCallError> {
    let body = strip_fences(body.trim());
    if body.is_empty() {
        return Err(ToolCallError::Empty);
    }
    let value = parse_lenient(body)?;
    let mut obj = match value {
        serde_json::Value::Object(obj) => obj,
        other => {
            return Err(ToolCallError::NotAnObject {
                found: kind(&other),
            });
        }
    };
    if !obj.contains_key("name")
        && let Some(serde_json::Value::Object(inner)) = obj.remove("function")
    {
        obj = inner;
    }
    let name = match obj.get("name") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(ToolCallError::MissingName),
    };
    let args = obj.remove("arguments").or_else(|| obj.remove("parameters"));
    let arguments = match args {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(serde_json::Map::new()),
        Some(v @ serde_json::Value::Object(_)) => v,
        Some(serde_json::Value::String(s)) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                match parse_lenient(trimmed) {
                    Ok(v @ serde_json::Value::Object(_)) => v,
                    Ok(other) => {
                        return Err(ToolCallError::BadArguments {
                            name,
                            found: format!("a string holding {}", kind(&other)),
                        });
                    }
                    Err(_) => {
                        return Err(ToolCallError::BadArguments {
                            name,
                            found: "a string that is not a JSON object".to_string(),
                        });
                    }
                }
            }
        }
        Some(other) => {
            return Err(ToolCallError::BadArguments {
                name,
                found: kind(&other).to_string(),
            });
        }
    };
    Ok(ToolCall { name, arguments })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Removes a surrounding Markdown code fence (with an optional language tag).
fn strip_fences(body: &str) -> &str {
    let Some(inner) = body.strip_prefix("```") else {
        return body;
    };
    // Drop the info string (e.g. "json") up to the first newline, if the next thing is not JSON already.
    let inner = match inner.find('\n') {
        Some(nl) if !inner.trim_start().starts_with(['{', '[']) => &inner[nl + 1..],
        _ => inner,
    };
    let inner = inner.trim_end();
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// Parses JSON, retrying with trailing commas removed and missing closing brackets appended.
fn parse_lenient(text: &str) -> Result<serde_json::Value, ToolCallError> {
    let first_error = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let repaired = repair_json(text);
    if let Some(repaired) = repaired
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&repaired)
    {
        return Ok(v);
    }
    // A valid object followed by junk (e.g. a stray closing brace): take the first complete value.
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    if let Some(Ok(v @ serde_json::Value::Object(_))) = stream.next() {
        return Ok(v);
    }
    Err(ToolCallError::InvalidJson {
        detail: first_error.to_string(),
    })
}

/// Removes commas directly before `}`/`]` and closes brackets left open at the end, outside strings.
/// `None` when the text ends inside a string or has unbalanced closers (nothing sensible to do).
fn repair_json(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 4);
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut pending_comma: Option<String> = None; // a comma plus the whitespace after it, held back
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if let Some(held) = pending_comma.as_mut() {
            if c.is_whitespace() {
                held.push(c);
                continue;
            }
            let held = pending_comma.take().unwrap_or_default();
            if c == '}' || c == ']' {
                out.push_str(&held[1..]); // keep the whitespace, drop the comma
            } else {
                out.push_str(&held);
            }
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' => {
                stack.push('}');
                out.push(c);
            }
            '[' => {
                stack.push(']');
                out.push(c);
            }
            '}' | ']' => {
                if stack.pop() != Some(c) {
                    return None;
                }
                out.push(c);
            }
            ',' => pending_comma = Some(",".to_string()),
            _ => out.push(c),
        }
    }
    if in_string {
        return None;
    }
    // A trailing comma at the very end is dropped; then close what is open.
    while let Some(closer) = stack.pop() {
        out.push(closer);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> ToolCall {
        let mut calls = parse_tool_calls(text);
        assert_eq!(calls.len(), 1, "{text}");
        calls.remove(0).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn parses_a_well_formed_call() {
        let call = ok(
            "I will add.\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expr\": \"1+2\"}}\n</tool_call>",
        );
        assert_eq!(call.name, "calculator");
        assert_eq!(call.arguments, json!({"expr": "1+2"}));
    }

    #[test]
    fn parses_several_calls_in_order() {
        let text = "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> and \
                    <tool_call>{\"name\": \"b\", \"arguments\": {\"x\": 1}}</tool_call>";
        let calls: Vec<_> = parse_tool_calls(text)
            .into_iter()
            .map(|c| c.unwrap().name)
            .collect();
        assert_eq!(calls, ["a", "b"]);
        assert_eq!(strip_tool_calls(text), "and");
    }

    #[test]
    fn lenient_variants() {
        let fenced = ok(
            "<tool_call>\n```json\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n```\n</tool_call>",
        );
        assert_eq!(fenced.arguments, json!({"a": 1}));
        let string_args =
            ok(r#"<tool_call>{"name": "f", "arguments": "{\"a\": [1, 2]}"}</tool_call>"#);
        assert_eq!(string_args.arguments, json!({"a": [1, 2]}));
        let trailing = ok(
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, 2,], \"b\": \"x,}\",},}</tool_call>",
        );
        assert_eq!(trailing.arguments, json!({"a": [1, 2], "b": "x,}"}));
        let unclosed = ok("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}");
        assert_eq!(unclosed.arguments, json!({"a": 1}));
        let truncated = ok("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1");
        assert_eq!(truncated.arguments, json!({"a": 1}));
        let no_args = ok("<tool_call>{\"name\": \"now\"}</tool_call>");
        assert_eq!(no_args.arguments, json!({}));
        let openai =
            ok(r#"<tool_call>{"function": {"name": "g", "parameters": {"q": "x"}}}</tool_call>"#);
        assert_eq!(
            (openai.name.as_str(), openai.arguments),
            ("g", json!({"q": "x"}))
        );
        let before_im_end =
            parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": {}}<|im_end|>");
        assert_eq!(before_im_end.len(), 1);
        assert!(before_im_end[0].is_ok());
    }

    #[test]
    fn malformed_calls_give_messages() {
        type Check = fn(&ToolCallError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("<tool_call>  </tool_call>", |e| {
                matches!(e, ToolCallError::Empty)
            }),
            ("<tool_call>calculator(1+2)</tool_call>", |e| {
                matches!(e, ToolCallError::InvalidJson { .. })
            }),
            ("<tool_call>[1, 2]</tool_call>", |e| {
                matches!(e, ToolCallError::NotAnObject { .. })
            }),
            ("<tool_call>{\"arguments\": {}}</tool_call>", |e| {
                matches!(e, ToolCallError::MissingName)
            }),
            ("<tool_call>{\"name\": 3}</tool_call>", |e| {
                matches!(e, ToolCallError::MissingName)
            }),
            (
                "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>",
                |e| matches!(e, ToolCallError::BadArguments { .. }),
            ),
            (
                "<tool_call>{\"name\": \"f\", \"arguments\": \"x=1\"}</tool_call>",
                |e| matches!(e, ToolCallError::BadArguments { .. }),
            ),
            (
                "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"unterminated}</tool_call>",
                |e| matches!(e, ToolCallError::InvalidJson { .. }),
            ),
            ("<tool_call>{\"name\": \"f\"]]</tool_call>", |e| {
                matches!(e, ToolCallError::InvalidJson { .. })
            }),
        ];
        for (text, check) in cases {
            let calls = parse_tool_calls(text);
            assert_eq!(calls.len(), 1, "{text}");
            let err = calls[0].as_ref().expect_err(text);
            assert!(check(err), "{text}: {err:?}");
            assert!(err.to_string().starts_with("error: "), "{err}");
        }
    }

    #[test]
    fn mixed_good_and_bad_calls_keep_order() {
        let calls = parse_tool_calls(
            "<tool_call>nope</tool_call><tool_call>{\"name\": \"ok\"}</tool_call>",
        );
        assert!(calls[0].is_err());
        assert_eq!(calls[1].as_ref().map(|c| c.name.as_str()), Ok("ok"));
        assert!(parse_tool_calls("no calls here").is_empty());
    }
}

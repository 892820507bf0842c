//! Chat messages and chat templates rendered with minijinja the way Hugging Face renders them.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::tool_calls::{ToolCall, ToolCallError, parse_tool_calls, strip_tool_calls};

/// sod's built-in chat template, used when `tokenizer_config.json` has none. It writes the Qwen3 format
/// (ChatML turns, a `# Tools` system block with the JSON schemas inside `<tools></tools>`, Hermes
/// `<tool_call>` blocks, tool results as `<tool_response>` blocks inside a user turn, `<think>` blocks from
/// `reasoning_content`).
///
/// Unlike Qwen3's own template it never drops the reasoning of earlier turns, so the rendering of a conversation
/// is always a prefix of the rendering of any continuation of it (what multi-turn rollouts need).
pub const BUILTIN_CHAT_TEMPLATE: &str = r#"{#- sod built-in chat template: Qwen3 format (ChatML, Hermes tool calls) -#}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages and messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages and messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- if not loop.first %}
            {{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message.role == 'user' %}
        {{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- if message.reasoning_content is string %}
            {{- '<think>\n' + message.reasoning_content.strip('\n') + '\n</think>\n\n' }}
        {%- endif %}
        {{- message.content }}
        {%- for call in message.tool_calls or [] %}
            {%- set f = call.function if call.function is defined else call %}
            {%- if message.content or not loop.first %}
                {{- '\n' }}
            {%- endif %}
            {{- '<tool_call>\n{"name": "' + f.name + '", "arguments": ' }}
            {%- if f.arguments is string %}
                {{- f.arguments }}
            {%- else %}
                {{- f.arguments | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or loop.previtem.role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or loop.nextitem.role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- raise_exception('unknown message role: ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"#;

/// Who speaks in a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// The text (for an assistant message: without the tool calls and reasoning, which have their own fields).
    /// Read as empty when a dataset writes `null` or leaves it out (OpenAI's assistant messages with tool calls).
    #[serde(default, deserialize_with = "string_or_null")]
    pub content: String,
    /// Tool calls made by an assistant message (`null` reads as none, as Parquet files write a message without).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "list_or_null"
    )]
    pub tool_calls: Vec<ToolCall>,
    /// The `<think>` part of an assistant message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Whether supervised training learns this assistant message (OpenAI fine-tuning's per-message `weight`: 1 or
    /// absent trains it, 0 keeps it in the context only, as a deliberately wrong step before a recovery). Chat
    /// templates never see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
}

/// A list, or `null` read as the empty list.
fn list_or_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A string, or `null` read as the empty string.
fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl ChatMessage {
    fn plain(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            reasoning_content: None,
            weight: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }

    /// An assistant message without tool calls.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(Role::Assistant, content)
    }

    /// An assistant message with tool calls.
    pub fn assistant_with_tool_calls(
        content: impl Into<String>,
        tool_calls: Vec<ToolCall>,
    ) -> Self {
        ChatMessage {
            tool_calls,
            ..Self::plain(Role::Assistant, content)
        }
    }

    /// Whether supervised training learns this message (its `weight`: absent or 1 trains it, 0 keeps it as
    /// context); any other weight is an error that says so.
    pub fn trained(&self) -> std::result::Result<bool, String> {
        match self.weight {
            None | Some(1) => Ok(true),
            Some(0) => Ok(false),
            Some(w) => Err(format!(
                "an assistant message has weight {w}: 0 (context only) or 1 (trained)"
            )),
        }
    }

    /// A tool result.
    pub fn tool(content: impl Into<String>) -> Self {
        Self::plain(Role::Tool, content)
    }

    /// Splits raw assistant output (as decoded from generated tokens, special tokens such as `<|im_end|>`
    /// removed or not) into reasoning (`<think>...</think>`), prose and tool calls. Malformed tool calls are
    /// returned separately, in order, with messages suitable as tool responses.
    pub fn from_assistant_output(text: &str) -> (Self, Vec<ToolCallError>) {
        let mut text = text;
        for end in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(i) = text.find(end) {
                text = &text[..i];
            }
        }
        let (reasoning, rest) = match text.find("</think>") {
            Some(i) => {
                let think = &text[..i];
                let think = think
                    .find("<think>")
                    .map_or(think, |j| &think[j + "<think>".len()..]);
                (
                    Some(think.trim_matches('\n').to_string()),
                    &text[i + "</think>".len()..],
                )
            }
            None => (None, text),
        };
        let mut calls = Vec::new();
        let mut errors = Vec::new();
        for call in parse_tool_calls(rest) {
            match call {
                Ok(c) => calls.push(c),
                Err(e) => errors.push(e),
            }
        }
        let message = ChatMessage {
            role: Role::Assistant,
            content: strip_tool_calls(rest),
            tool_calls: calls,
            reasoning_content: reasoning,
            weight: None,
        };
        (message, errors)
    }

    /// The message as the JSON object chat templates expect (OpenAI shape; tool calls as
    /// `{"type": "function", "function": {"name", "arguments"}}`).
    pub fn to_template_value(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert(
            "role".into(),
            serde_json::to_value(self.role).unwrap_or_default(),
        );
        obj.insert("content".into(), self.content.clone().into());
        if !self.tool_calls.is_empty() {
            let calls = self
                .tool_calls
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect();
            obj.insert("tool_calls".into(), serde_json::Value::Array(calls));
        }
        if let Some(r) = &self.reasoning_content {
            obj.insert("reasoning_content".into(), r.clone().into());
        }
        serde_json::Value::Object(obj)
    }
}

/// A compiled chat template with the environment Hugging Face uses (`trim_blocks`, `lstrip_blocks`, Python string
/// methods, Python-style `tojson`, `raise_exception`).
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson_filter);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ModelError::Template(format!("cannot compile: {e:#}")))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
        })
    }

    /// The built-in Qwen3-style template ([`BUILTIN_CHAT_TEMPLATE`]).
    pub fn builtin() -> Self {
        // The built-in template is a constant that the tests compile.
        Self::new(BUILTIN_CHAT_TEMPLATE).unwrap_or_else(|e| panic!("built-in chat template: {e}"))
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation. `tools` are function schemas in OpenAI format
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`); an empty slice means no tools.
    /// `extra` adds template variables (e.g. `bos_token`, `eos_token`, `enable_thinking`).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let mut ctx = extra.clone();
        ctx.insert(
            "messages".into(),
            serde_json::Value::Array(
                messages
                    .iter()
                    .map(ChatMessage::to_template_value)
                    .collect(),
            ),
        );
        ctx.insert(
            "tools".into(),
            if tools.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::Array(tools.to_vec())
            },
        );
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ModelError::Template(e.to_string()))?;
        template
            .render(Value::from_serialize(&ctx))
            .map_err(|e| ModelError::Template(format!("cannot render: {e:#}")))
    }
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)` as Hugging Face's `tojson` filter produces it:
/// `", "` and `": "` separators, keys in the order the template sees them, no HTML escaping.
fn tojson_filter(value: Value, kwargs: Kwargs) -> std::result::Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_py_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_py_json(
    v: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), JinjaError> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let json = serde_json::to_value(v).map_err(|e| {
                JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
            })?;
            out.push_str(&json.to_string());
        }
        ValueKind::String => out.push_str(
            &serde_json::Value::String(v.as_str().unwrap_or_default().to_string()).to_string(),
        ),
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                let name = key.as_str().map_or_else(|| key.to_string(), str::to_string);
                out.push_str(&serde_json::Value::String(name).to_string());
                out.push_str(": ");
                write_py_json(&v.get_item(key)?, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_py_json(item, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        _ => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a {} value", v.kind()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ x | tojson }}|{{ y | tojson(indent=2) }}|{{ {'b': 1, 'a': [1.5, none, true]} | tojson }}",
        )
        .unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert("x".into(), json!(["é\n\"<&", {}, [], -3]));
        extra.insert("y".into(), json!({"k": [1, 2]}));
        let out = t.render(&[], &[], false, &extra).unwrap();
        assert_eq!(
            out,
            "[\"é\\n\\\"<&\", {}, [], -3]|{\n  \"k\": [\n    1,\n    2\n  ]\n}|{\"b\": 1, \"a\": [1.5, null, true]}"
        );
    }

    #[test]
    fn assistant_output_is_split() {
        let text = "<think>\nadd them\n</think>\n\nLet me compute.\n<tool_call>\n{\"name\": \"calc\", \"arguments\": {\"e\": \"1+1\"}}\n</tool_call>\n<tool_call>oops</tool_call><|im_end|>";
        let (m, errors) = ChatMessage::from_assistant_output(text);
        assert_eq!(m.reasoning_content.as_deref(), Some("add them"));
        assert_eq!(m.content, "Let me compute.");
        assert_eq!(m.tool_calls.len(), 1);
        assert_eq!(m.tool_calls[0].name, "calc");
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn raise_exception_and_bad_templates_are_errors() {
        let t = ChatTemplate::new("{{ raise_exception('no system messages') }}").unwrap();
        let err = t
            .render(&[], &[], false, &serde_json::Map::new())
            .unwrap_err();
        assert!(err.to_string().contains("no system messages"), "{err}");
        assert!(matches!(
            ChatTemplate::new("{% if %}"),
            Err(ModelError::Template(_))
        ));
    }
}

//! `ChatTokenizer`: a Hugging Face `tokenizer.json` plus the chat template and special tokens of
//! `tokenizer_config.json`.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{ModelError, Result};

/// Tokens that end an assistant turn in the ChatML format, used by [`ChatTokenizer::stop_token_ids`].
const CHATML_STOP_TOKENS: &[&str] = &["<|im_end|>", "<|endoftext|>"];

/// A tokenizer with its chat template.
#[derive(Debug)]
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    template_is_builtin: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    template_kwargs: serde_json::Map<String, serde_json::Value>,
}

/// A special-token entry of `tokenizer_config.json`: a plain string or an `AddedToken` object with `content`.
fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The fixed conversation after which [`ChatTokenizer::render_continuation`] renders new messages when the real
/// history is not prefix-stable: a user message, then, when the history ends with an assistant or tool message, an
/// assistant message with reasoning and content (Qwen3's template writes such a turn the same way last or not),
/// then a tool response when the history ends with one.
fn continuation_base(last: Option<crate::chat::Role>) -> Vec<ChatMessage> {
    use crate::chat::Role;
    let mut base = vec![ChatMessage::user("0")];
    if matches!(last, Some(Role::Assistant | Role::Tool)) {
        let mut assistant = ChatMessage::assistant("0");
        assistant.reasoning_content = Some("0".to_string());
        base.push(assistant);
    }
    if last == Some(Role::Tool) {
        base.push(ChatMessage::tool("0"));
    }
    base
}

/// A rendered conversation (see [`ChatTokenizer::render_trained`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenderedChat {
    /// The template's text.
    pub text: String,
    /// Its token ids.
    pub ids: Vec<u32>,
    /// 1 on the tokens a supervised fine-tuning trains, per id.
    pub assistant_mask: Vec<u8>,
}

impl ChatTokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` (chat template, bos/eos/pad tokens) and
    /// `chat_template.jinja` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = dir.join("tokenizer_config.json");
        let mut tok = Self::from_files(
            &dir.join("tokenizer.json"),
            config.is_file().then_some(config.as_path()),
        )?;
        let jinja = dir.join("chat_template.jinja");
        if tok.template_is_builtin && jinja.is_file() {
            let source =
                std::fs::read_to_string(&jinja).map_err(ModelError::io("reading", &jinja))?;
            tok.template = ChatTemplate::new(&source)
                .map_err(|e| ModelError::Template(format!("{}: {e}", jinja.display())))?;
            tok.template_is_builtin = false;
        }
        Ok(tok)
    }

    /// Loads a `tokenizer.json` and an optional `tokenizer_config.json`. Without a chat template in the config,
    /// [`crate::chat::BUILTIN_CHAT_TEMPLATE`] is used.
    pub fn from_files(tokenizer_json: &Path, tokenizer_config_json: Option<&Path>) -> Result<Self> {
        if !tokenizer_json.is_file() {
            return Err(ModelError::Tokenizer(format!(
                "{} does not exist",
                tokenizer_json.display()
            )));
        }
        let tokenizer = Tokenizer::from_file(tokenizer_json).map_err(|e| {
            ModelError::Tokenizer(format!("cannot load {}: {e}", tokenizer_json.display()))
        })?;
        let config = match tokenizer_config_json {
            None => serde_json::Value::Object(serde_json::Map::new()),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(ModelError::io("reading", path))?;
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    path: path.to_path_buf(),
                    source,
                })?
            }
        };
        let where_ = tokenizer_config_json.map_or_else(String::new, |p| p.display().to_string());
        let template = match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default" (or the first one).
            Some(serde_json::Value::Array(list)) => {
                let named = |name: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                };
                let first = list
                    .first()
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str());
                Some(
                    named("default")
                        .or(first)
                        .ok_or_else(|| {
                            ModelError::Template(format!(
                                "{where_}: chat_template list has no template"
                            ))
                        })?
                        .to_string(),
                )
            }
            Some(_) => {
                return Err(ModelError::Template(format!(
                    "{where_}: chat_template is neither a string nor a list"
                )));
            }
        };
        let template_is_builtin = template.is_none();
        let template = match template {
            Some(source) => ChatTemplate::new(&source)
                .map_err(|e| ModelError::Template(format!("{where_}: {e}")))?,
            None => ChatTemplate::builtin(),
        };
        let tok = ChatTokenizer {
            tokenizer,
            template,
            template_is_builtin,
            bos_token: token_text(config.get("bos_token")),
            eos_token: token_text(config.get("eos_token")),
            pad_token: token_text(config.get("pad_token")),
            template_kwargs: serde_json::Map::new(),
        };
        for (what, token) in [("eos_token", &tok.eos_token), ("pad_token", &tok.pad_token)] {
            if let Some(t) = token
                && tok.tokenizer.token_to_id(t).is_none()
            {
                return Err(ModelError::Tokenizer(format!(
                    "{where_}: {what} {t:?} is not in the vocabulary"
                )));
            }
        }
        Ok(tok)
    }

    /// Wraps an in-memory tokenizer with a chat template (`None`: the built-in one) and special tokens.
    pub fn new(
        tokenizer: Tokenizer,
        chat_template: Option<&str>,
        eos_token: Option<&str>,
        pad_token: Option<&str>,
    ) -> Result<Self> {
        Ok(ChatTokenizer {
            tokenizer,
            template_is_builtin: chat_template.is_none(),
            template: match chat_template {
                Some(source) => ChatTemplate::new(source)?,
                None => ChatTemplate::builtin(),
            },
            bos_token: None,
            eos_token: eos_token.map(str::to_string),
            pad_token: pad_token.map(str::to_string),
            template_kwargs: serde_json::Map::new(),
        })
    }

    /// The same tokenizer with template variables every rendering gets (transformers' `apply_chat_template`
    /// keyword arguments, verl's `apply_chat_template_kwargs`), e.g. `{"enable_thinking": false}` for Qwen3:
    /// rollouts, SFT and evaluation then render prompts, tool responses and generation prompts with them. A
    /// rendering's own `extra` variables override them.
    pub fn with_template_kwargs(
        mut self,
        kwargs: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        self.template_kwargs = kwargs;
        self
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template in use.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Whether the chat template is the built-in one (the tokenizer config had none).
    pub fn uses_builtin_template(&self) -> bool {
        self.template_is_builtin
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`...) become their ids; nothing is
    /// added around the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(format!("encoding failed: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`. With `skip_special_tokens = false`, `decode(encode(text)) == text` for byte-level BPE
    /// tokenizers.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Tokenizer(format!("decoding failed: {e}")))
    }

    /// Id of a token (special or not), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The end-of-sequence token of `tokenizer_config.json`.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Id of the end-of-sequence token.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// Id of the padding token (falls back to the end-of-sequence token, as Hugging Face does for Qwen).
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token
            .as_deref()
            .and_then(|t| self.token_id(t))
            .or_else(|| self.eos_token_id())
    }

    /// Tokens that end an assistant turn: the eos token plus `<|im_end|>` and `<|endoftext|>` when they exist.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_token_id().into_iter().collect();
        for t in CHATML_STOP_TOKENS {
            if let Some(id) = self.token_id(t)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        ids
    }

    /// Renders a conversation with the chat template. `tools` are OpenAI-format function schemas
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`), shown in the system prompt.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_chat_with(
            messages,
            tools,
            add_generation_prompt,
            &serde_json::Map::new(),
        )
    }

    /// Like [`Self::render_chat`] with extra template variables (e.g. `{"enable_thinking": false}`).
    /// `bos_token`/`eos_token` and the tokenizer's template kwargs ([`Self::with_template_kwargs`]) are provided
    /// unless `extra` sets them.
    pub fn render_chat_with(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let mut vars = serde_json::Map::new();
        vars.insert(
            "bos_token".into(),
            self.bos_token.clone().unwrap_or_default().into(),
        );
        vars.insert(
            "eos_token".into(),
            self.eos_token.clone().unwrap_or_default().into(),
        );
        vars.extend(
            self.template_kwargs
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        self.template
            .render(messages, tools, add_generation_prompt, &vars)
    }

    /// The text the chat template adds when `new` messages follow `history`: the rendering of `history + new`
    /// (with the generation prompt if asked) minus the rendering of `history` alone.
    ///
    /// Some templates rewrite the last message once others follow: Qwen3's writes an empty `<think>` block into
    /// the last assistant turn only while it is last. Then `new` is rendered after a fixed base conversation that
    /// ends with a message of the same role as `history`'s last (verl renders tool responses the same way): what
    /// the template writes for `new` depends on the messages before it only through such local context. Fails
    /// when neither rendering is prefix-stable.
    pub fn render_continuation(
        &self,
        history: &[ChatMessage],
        new: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_continuation_with(
            history,
            new,
            tools,
            add_generation_prompt,
            &serde_json::Map::new(),
        )
    }

    /// [`Self::render_continuation`] with extra template variables (e.g. `{"enable_thinking": false}`).
    pub fn render_continuation_with(
        &self,
        history: &[ChatMessage],
        new: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let before = self.render_chat_with(history, tools, false, extra)?;
        self.continuation_after(&before, history, new, tools, add_generation_prompt, extra)
    }

    /// [`Self::render_continuation_with`] given `before`, the rendering of `history` alone.
    fn continuation_after(
        &self,
        before: &str,
        history: &[ChatMessage],
        new: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let suffix = |before: &str, history: &[ChatMessage]| -> Result<Option<String>> {
            let all: Vec<ChatMessage> = history.iter().chain(new).cloned().collect();
            let after = self.render_chat_with(&all, tools, add_generation_prompt, extra)?;
            Ok(after.strip_prefix(before).map(str::to_string))
        };
        if let Some(text) = suffix(before, history)? {
            return Ok(text);
        }
        let base = continuation_base(history.last().map(|m| m.role));
        let base_before = self.render_chat_with(&base, tools, false, extra)?;
        if let Some(text) = suffix(&base_before, &base)? {
            return Ok(text);
        }
        Err(ModelError::Template(
            "the chat template is not prefix-stable here: rendering the longer conversation changes the \
             rendering of the earlier messages, even after a plain base conversation"
                .to_string(),
        ))
    }

    /// The text that follows the generated tokens of `history`'s last turn when `new` messages come: what the
    /// template writes after the stop token the model emitted (the newline after `<|im_end|>` in ChatML), then
    /// [`Self::render_continuation_with`]. A multi-turn rollout appends `encode` of this to the tokens it has
    /// (prompt and generated) instead of re-tokenising the conversation, so that the model's own tokens stay as
    /// they were sampled.
    pub fn render_after_generated(
        &self,
        history: &[ChatMessage],
        new: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let before = self.render_chat_with(history, tools, false, extra)?;
        let stops: Vec<String> = self
            .stop_token_ids()
            .into_iter()
            .filter_map(|id| self.tokenizer.id_to_token(id))
            .collect();
        let tail = stops
            .iter()
            .filter_map(|s| before.rfind(s.as_str()).map(|i| i + s.len()))
            .max()
            .map_or("", |end| &before[end..]);
        let continuation =
            self.continuation_after(&before, history, new, tools, add_generation_prompt, extra)?;
        Ok(format!("{tail}{continuation}"))
    }

    /// The whole conversation as the chat template renders it (what Hugging Face's `apply_chat_template` gives),
    /// its token ids, and which of them a supervised fine-tuning trains: the assistant turns as the template
    /// writes them, from after each `<|im_start|>assistant\n` header through its `<|im_end|>` (ChatML, the Qwen
    /// family's layout), except messages with `weight: 0`. Transformers' `return_assistant_tokens_mask` gives
    /// this for templates with `{% generation %}` markers; Qwen3's has none, so the turns are found by their
    /// headers. A token is trained when it starts inside a turn. A generation prompt (its header, and the empty
    /// think block `enable_thinking = false` adds) trains nothing. Fails when the headers do not match the
    /// assistant messages one to one.
    pub fn render_trained(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<RenderedChat> {
        const HEADER: &str = "<|im_start|>assistant\n";
        const END: &str = "<|im_end|>";
        let text = self.render_chat_with(messages, tools, add_generation_prompt, extra)?;
        let assistants: Vec<&ChatMessage> = messages
            .iter()
            .filter(|m| m.role == crate::chat::Role::Assistant)
            .collect();
        // Byte spans of the assistant turns, in order.
        let mut spans = Vec::new();
        let mut from = 0;
        while let Some(i) = text[from..].find(HEADER) {
            let start = from + i + HEADER.len();
            let end = text[start..]
                .find(END)
                .map_or(text.len(), |j| start + j + END.len());
            spans.push((start, end));
            from = end.max(start);
        }
        // The generation prompt's header opens a turn that the text never closes (with `enable_thinking = false`
        // Qwen3 puts an empty think block in it): context, not a turn.
        if add_generation_prompt
            && spans
                .last()
                .is_some_and(|&(_, e)| e == text.len() && !text.ends_with(END))
        {
            spans.pop();
        }
        let trained: Vec<bool> = assistants
            .iter()
            .map(|m| m.trained())
            .collect::<std::result::Result<_, _>>()
            .map_err(ModelError::Template)?;
        if spans.len() != assistants.len() {
            return Err(ModelError::Template(format!(
                "the rendering has {} assistant turns (`{HEADER:?}` headers) for {} assistant messages: this \
                 template does not write turns the ChatML way",
                spans.len(),
                assistants.len()
            )));
        }
        let encoding = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| ModelError::Tokenizer(format!("encoding failed: {e}")))?;
        let mut assistant_mask = Vec::with_capacity(encoding.len());
        let mut turn = 0;
        for &(start, _) in encoding.get_offsets() {
            while turn < spans.len() && spans[turn].1 <= start {
                turn += 1;
            }
            let inside = turn < spans.len() && start >= spans[turn].0 && trained[turn];
            assistant_mask.push(u8::from(inside));
        }
        Ok(RenderedChat {
            ids: encoding.get_ids().to_vec(),
            text,
            assistant_mask,
        })
    }

    /// [`Self::render_chat`] then [`Self::encode`].
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.encode(&self.render_chat(messages, tools, add_generation_prompt)?)
    }
}

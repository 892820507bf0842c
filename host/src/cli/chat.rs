//! `sod chat render`: what a model's own chat template makes of a conversation, as the trainer and
//! `apply_chat_template` see it: the text, the token ids, and which tokens a supervised fine-tuning trains. The
//! tool a user runs when a template misbehaves.
//!
//! The messages file is a JSON array of messages in the OpenAI / Hugging Face format (`role`, `content`
//! (string or null), `reasoning_content`, `tool_calls` as `{"type": "function", "function": {"name",
//! "arguments"}}` with arguments an object or a JSON string, `weight` 0 or 1), or an object with a `messages`
//! array (and optionally `tools`), like one row of an SFT dataset. The tools file is a JSON array of function
//! schemas (`{"type": "function", "function": {...}}`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use sod_model::{ChatMessage, ChatTokenizer};
use sod_train::dataset::RowAt;
use sod_train::sft::data::{Columns, parse_conversation};

use super::usage;

/// `sod chat ...`
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(subcommand)]
    command: ChatCommand,
}

#[derive(Debug, Subcommand)]
enum ChatCommand {
    /// Print the template's text, the token ids and the trained-token mask of a conversation, as JSON.
    Render(RenderArgs),
}

/// `sod chat render --model DIR --messages FILE`
#[derive(Debug, Args)]
struct RenderArgs {
    /// Model (or tokenizer) directory: tokenizer.json, and tokenizer_config.json or chat_template.jinja with
    /// the chat template (else the built-in ChatML template).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The conversation: a JSON array of messages, or an object with `messages` (and `tools`).
    #[arg(long, value_name = "FILE")]
    messages: PathBuf,
    /// Function schemas shown to the model: a JSON array (overrides the messages file's `tools`).
    #[arg(long, value_name = "FILE")]
    tools: Option<PathBuf>,
    /// End with the assistant header a generation starts from.
    #[arg(long)]
    add_generation_prompt: bool,
    /// Render with `enable_thinking = false` (Qwen3: an empty think block after the generation prompt).
    #[arg(long)]
    no_thinking: bool,
}

pub(super) fn run(args: &ChatArgs) -> anyhow::Result<()> {
    match &args.command {
        ChatCommand::Render(args) => render(args),
    }
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| usage(format!("{} is not JSON: {e}", path.display())))
}

fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let tokenizer = ChatTokenizer::from_dir(&args.model)
        .with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    let bad = |e: String| usage(format!("{}: bad messages: {e}", args.messages.display()));
    let (messages, mut tools) = match read_json(&args.messages)? {
        // One row of an SFT dataset, read as `sod sft` reads its rows.
        row @ serde_json::Value::Object(_) => {
            let c =
                parse_conversation(RowAt::Line(1), row, &Columns::default(), false).map_err(bad)?;
            (c.messages, c.tools)
        }
        messages => (
            serde_json::from_value::<Vec<ChatMessage>>(messages).map_err(|e| bad(e.to_string()))?,
            Vec::new(),
        ),
    };
    if let Some(path) = &args.tools {
        tools = match read_json(path)? {
            serde_json::Value::Array(tools) => tools,
            other => {
                return Err(usage(format!(
                    "{}: expected a JSON array, not {other}",
                    path.display()
                )));
            }
        };
    }
    let mut extra = serde_json::Map::new();
    if args.no_thinking {
        extra.insert("enable_thinking".into(), false.into());
    }
    let rendered =
        tokenizer.render_trained(&messages, &tools, args.add_generation_prompt, &extra)?;
    println!("{}", serde_json::to_string_pretty(&rendered)?);
    Ok(())
}

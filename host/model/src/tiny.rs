//! Tiny, fully local model directories: a byte-level BPE tokenizer trained in Rust and a randomly initialised
//! Qwen3, written in the Hugging Face layout. Tests and demos use them; nothing is downloaded.

use std::path::Path;
use std::str::FromStr;

use candle_core::Device;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::chat::BUILTIN_CHAT_TEMPLATE;
use crate::checkpoint::{SaveDtype, init_random, save_checkpoint};
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};

/// Special tokens of the tiny tokenizers, in id order (ids 0..9). The first three are "special" (skipped by
/// `decode(.., true)`); the tool and think tags are ordinary added tokens, as in Qwen3's tokenizer.
pub const TINY_ADDED_TOKENS: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
];

/// How many of [`TINY_ADDED_TOKENS`] are special.
const NUM_SPECIAL: usize = 3;

/// Qwen2/Qwen3's pre-tokenisation pattern. Among other things it makes every digit its own pre-token (and never
/// glues a space to a digit), so numbers are encoded digit by digit, the same way wherever they appear: copying a
/// number is a token-by-token copy.
pub const QWEN_PRETOKENIZE_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Trains a byte-level BPE tokenizer on `corpus` with at most `vocab_size` tokens (the 256 byte symbols and
/// [`TINY_ADDED_TOKENS`] included), like Qwen3's: no normaliser, Qwen's pre-tokenisation pattern
/// ([`QWEN_PRETOKENIZE_PATTERN`]) then byte-level mapping, byte-level decoder. Deterministic in its inputs. Any
/// text round-trips through encode/decode.
pub fn train_tiny_tokenizer(corpus: &[&str], vocab_size: usize) -> Result<Tokenizer> {
    let minimum = 256 + TINY_ADDED_TOKENS.len();
    if vocab_size < minimum {
        return Err(ModelError::Input(format!(
            "a byte-level tokenizer needs vocab_size >= {minimum} (256 bytes + {} added tokens), got {vocab_size}",
            TINY_ADDED_TOKENS.len()
        )));
    }
    let split = Split::new(
        SplitPattern::Regex(QWEN_PRETOKENIZE_PATTERN.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| ModelError::Tokenizer(format!("pre-tokenisation pattern: {e}")))?;
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ])));
    tokenizer.with_post_processor(Some(ByteLevel::new(false, false, false)));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, false)));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            TINY_ADDED_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, corpus.iter())
        .map_err(|e| ModelError::Tokenizer(format!("training failed: {e}")))?;
    // The trainer registers every listed token as special; mark the tool/think tags as ordinary added tokens.
    let mut json: serde_json::Value = serde_json::from_str(
        &tokenizer
            .to_string(false)
            .map_err(|e| ModelError::Tokenizer(format!("serialising failed: {e}")))?,
    )
    .map_err(|e| ModelError::Tokenizer(format!("serialised tokenizer is not JSON: {e}")))?;
    if let Some(added) = json.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        for entry in added {
            let content = entry
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default();
            if TINY_ADDED_TOKENS[NUM_SPECIAL..].contains(&content) {
                entry["special"] = serde_json::Value::Bool(false);
            }
        }
    }
    let tokenizer = Tokenizer::from_str(&json.to_string()).map_err(|e| {
        ModelError::Tokenizer(format!("reloading the trained tokenizer failed: {e}"))
    })?;
    for (i, t) in TINY_ADDED_TOKENS.iter().enumerate() {
        if tokenizer.token_to_id(t) != Some(i as u32) {
            return Err(ModelError::Tokenizer(format!(
                "added token {t} did not get id {i}"
            )));
        }
    }
    Ok(tokenizer)
}

/// `tokenizer_config.json` for a tiny tokenizer: the built-in chat template, `<|im_end|>` as eos and
/// `<|endoftext|>` as pad, as in Qwen3's instruct models.
fn tiny_tokenizer_config(model_max_length: usize) -> serde_json::Value {
    let decoder: serde_json::Map<String, serde_json::Value> = TINY_ADDED_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                i.to_string(),
                serde_json::json!({
                    "content": t, "lstrip": false, "normalized": false, "rstrip": false,
                    "single_word": false, "special": i < NUM_SPECIAL,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": decoder,
        "bos_token": null,
        "chat_template": BUILTIN_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null,
    })
}

/// Writes a complete tiny Hugging Face model directory at `dir` (atomically, like [`save_checkpoint`]):
/// `tokenizer.json` trained on `tokenizer_corpus` with at most `config.vocab_size` tokens,
/// `tokenizer_config.json` with the built-in chat template, `generation_config.json`, `config.json` and f32
/// `model.safetensors` from [`init_random`]`(config, seed)`.
///
/// The config's `bos_token_id`/`eos_token_id` are set to `<|endoftext|>`/`<|im_end|>`; the config actually
/// written is returned. Load the result with [`crate::load_model_dir`] and [`crate::ChatTokenizer::from_dir`].
pub fn write_tiny_model_dir(
    dir: &Path,
    config: &Qwen3Config,
    tokenizer_corpus: &[&str],
    seed: u64,
) -> Result<Qwen3Config> {
    let tokenizer = train_tiny_tokenizer(tokenizer_corpus, config.vocab_size)?;
    let mut config = config.clone();
    config.bos_token_id = tokenizer.token_to_id("<|endoftext|>");
    config.eos_token_id = tokenizer.token_to_id("<|im_end|>").into_iter().collect();
    config.torch_dtype = Some("float32".to_string());
    config.fill_hf_metadata();
    config.validate()?;
    let model = init_random(&config, seed, &Device::Cpu)?;

    let name = dir
        .file_name()
        .ok_or_else(|| {
            ModelError::Input(format!(
                "model path {} has no final component",
                dir.display()
            ))
        })?
        .to_string_lossy()
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(ModelError::io("creating", &parent))?;
    let staging = parent.join(format!(".{name}.tokenizer-{}", std::process::id()));
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(&staging).map_err(ModelError::io("creating", &staging))?;
        let tokenizer_json = staging.join("tokenizer.json");
        tokenizer.save(&tokenizer_json, false).map_err(|e| {
            ModelError::Tokenizer(format!("cannot write {}: {e}", tokenizer_json.display()))
        })?;
        let write_json = |file: &str, value: &serde_json::Value| -> Result<()> {
            let path = staging.join(file);
            let text = serde_json::to_string_pretty(value).unwrap_or_default();
            std::fs::write(&path, text).map_err(ModelError::io("writing", &path))
        };
        write_json(
            "tokenizer_config.json",
            &tiny_tokenizer_config(config.max_position_embeddings),
        )?;
        let stop: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        write_json(
            "generation_config.json",
            &serde_json::json!({
                "bos_token_id": config.bos_token_id,
                "eos_token_id": stop,
                "pad_token_id": tokenizer.token_to_id("<|endoftext|>"),
            }),
        )?;
        save_checkpoint(dir, &config, &model.varmap, SaveDtype::F32, Some(&staging))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| config)
}

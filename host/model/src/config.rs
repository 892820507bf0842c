//! `Qwen3Config`: the Hugging Face `config.json` of a Qwen3 model, with validation.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ModelError, Result};

/// A `config.json` field whose value this crate cannot build a model from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct ConfigError {
    /// Name of the offending field as spelled in `config.json`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

/// Architecture hyper-parameters of a Qwen3 model, as in a Hugging Face `config.json`.
///
/// Fields this crate does not interpret are kept in [`Qwen3Config::extra`] so that saving a loaded config
/// writes them back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen3Config {
    /// Number of rows of the embedding matrix (may exceed the tokenizer's vocabulary).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); must divide `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Width of one attention head; Hugging Face defaults it to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Epsilon of every RMSNorm.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary embedding frequencies. Newer `config.json` files keep it in
    /// `rope_parameters.rope_theta`; loading handles both.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest sequence (prompt plus generation) the rotary tables are built for.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Whether the output head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The dtype the weights were published in ("bfloat16", "float16" or "float32"). Training always runs in f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// Beginning-of-sequence token id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id(s); `config.json` may give one id or a list.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "ser_ids",
        deserialize_with = "de_ids"
    )]
    pub eos_token_id: Vec<u32>,
    /// Activation of the MLP; only "silu" is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Whether q/k/v projections have biases (not the case for Qwen3; unsupported).
    #[serde(default)]
    pub attention_bias: bool,
    /// Standard deviation used by [`crate::init_random`] for weight matrices.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Rotary scaling (YaRN, linear...): unsupported, must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Sliding-window attention: unsupported, must be false.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Every other field of `config.json`, kept verbatim for saving.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    f64::NAN
}
fn default_max_position_embeddings() -> usize {
    32768
}
fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_initializer_range() -> f64 {
    0.02
}

fn ser_ids<S: Serializer>(ids: &[u32], s: S) -> std::result::Result<S::Ok, S::Error> {
    if ids.len() == 1 {
        s.serialize_u32(ids[0])
    } else {
        ids.serialize(s)
    }
}

fn de_ids<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        One(u32),
        Many(Vec<u32>),
        None(()),
    }
    Ok(match Ids::deserialize(d)? {
        Ids::One(id) => vec![id],
        Ids::Many(ids) => ids,
        Ids::None(()) => Vec::new(),
    })
}

/// Rotary base used by Hugging Face's `Qwen3Config` when `config.json` gives none.
const HF_DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Qwen3Config {
    /// A small config for tests and demos: `hidden` wide, `layers` deep, 4 query heads and 2 key/value heads,
    /// tied embeddings, `vocab_size` rows.
    pub fn tiny(vocab_size: usize, hidden: usize, layers: usize) -> Self {
        Qwen3Config {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: hidden * 3,
            num_hidden_layers: layers,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: Some(hidden / 4),
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 4096,
            tie_word_embeddings: true,
            torch_dtype: Some("float32".to_string()),
            bos_token_id: None,
            eos_token_id: Vec::new(),
            hidden_act: "silu".to_string(),
            attention_bias: false,
            initializer_range: 0.02,
            rope_scaling: None,
            use_sliding_window: false,
            extra: serde_json::Map::new(),
        }
    }

    /// Parses a `config.json` text (without validating it: see [`Self::validate`]).
    pub fn from_json_str(text: &str) -> std::result::Result<Self, serde_json::Error> {
        let mut config: Qwen3Config = serde_json::from_str(text)?;
        config.resolve_rope_theta();
        Ok(config)
    }

    /// Reads and validates `config.json` (or any file of that format).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(ModelError::io("reading", path))?;
        let config = Self::from_json_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Serialises the config as pretty JSON in the `config.json` format (with `architectures` and `model_type`
    /// filled in when absent).
    pub fn to_json_string(&self) -> String {
        let mut config = self.clone();
        config.fill_hf_metadata();
        // Serialising a struct of plain fields and a JSON map cannot fail.
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }

    /// Sets `architectures` and `model_type` in [`Self::extra`] to Qwen3's values when they are absent.
    pub fn fill_hf_metadata(&mut self) {
        self.extra
            .entry("architectures")
            .or_insert_with(|| serde_json::json!(["Qwen3ForCausalLM"]));
        self.extra
            .entry("model_type")
            .or_insert_with(|| serde_json::json!("qwen3"));
    }

    fn resolve_rope_theta(&mut self) {
        if self.rope_theta.is_nan() {
            let nested = self
                .extra
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .and_then(|t| t.as_f64());
            self.rope_theta = nested.unwrap_or(HF_DEFAULT_ROPE_THETA);
        }
    }

    /// Width of one attention head (`head_dim`, or `hidden_size / num_attention_heads` when absent).
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or_else(|| self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Checks that a model can be built from this config.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(bad(field, "must be positive"));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads = {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        let head_dim = self.head_dim();
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad(
                "head_dim",
                format!("{head_dim} must be positive and even (rotary embeddings rotate pairs)"),
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(
                "head_dim",
                format!(
                    "absent, and hidden_size = {} is not a multiple of num_attention_heads = {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(bad(
                "rms_norm_eps",
                format!("{} must be finite and positive", self.rms_norm_eps),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(bad(
                "rope_theta",
                format!("{} must be finite and greater than 1", self.rope_theta),
            ));
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return Err(bad(
                "initializer_range",
                format!("{} must be finite and non-negative", self.initializer_range),
            ));
        }
        if let Some(id) = self.bos_token_id
            && id as usize >= self.vocab_size
        {
            return Err(bad(
                "bos_token_id",
                format!("{id} is not below vocab_size = {}", self.vocab_size),
            ));
        }
        if let Some(id) = self
            .eos_token_id
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(bad(
                "eos_token_id",
                format!("{id} is not below vocab_size = {}", self.vocab_size),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(bad(
                "hidden_act",
                format!("{:?} is not supported (only \"silu\")", self.hidden_act),
            ));
        }
        if self.attention_bias {
            return Err(bad("attention_bias", "attention biases are not supported"));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad("rope_scaling", "rotary scaling is not supported"));
        }
        if self.use_sliding_window {
            return Err(bad(
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        if let Some(dtype) = &self.torch_dtype
            && !matches!(dtype.as_str(), "float32" | "bfloat16" | "float16")
        {
            return Err(bad(
                "torch_dtype",
                format!("{dtype:?} is not one of \"float32\", \"bfloat16\", \"float16\""),
            ));
        }
        Ok(())
    }

    /// Number of trainable parameters a model of this config has.
    pub fn num_parameters(&self) -> usize {
        crate::qwen3::parameter_shapes(self)
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }
}

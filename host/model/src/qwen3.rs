//! The Qwen3 decoder, written with differentiable candle ops only.
//!
//! Every operation used here has a backward pass in candle: RMSNorm is spelled out (`x / sqrt(mean(x²) + eps)`),
//! rotary embeddings are applied with `narrow`/`cat`/multiplications, attention uses [`candle_nn::ops::softmax`]
//! with an additive causal/padding mask, and the KV cache concatenates without detaching. candle's fused
//! `rms_norm`, `softmax_last_dim` and `rope` ops have no backward and are deliberately not used.

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Tensor, Var};

use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;

mod layers;
pub use layers::{Attention, DecoderLayer, Linear, Mlp, RmsNorm, RotaryEmbedding};

/// Additive mask value for padding keys. Finite, so that a row with no real key (a padding query before the first
/// token of a left-padded sequence) still has a well-defined softmax instead of NaN; `exp(-1e9)` is exactly 0 in f32.
const PAD_MASK_VALUE: f32 = -1e9;

/// Upper bound on the number of logits [`Qwen3::token_logprobs`] materialises at once (per chunk of positions).
const LOGPROB_CHUNK_ELEMENTS: usize = 1 << 24;

/// Hugging Face names and shapes of every trainable tensor of a Qwen3 model with this config, in a fixed order.
///
/// `lm_head.weight` is listed only when the embeddings are not tied.
pub fn parameter_shapes(config: &Qwen3Config) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let hd = config.head_dim();
    let q = config.num_attention_heads * hd;
    let kv = config.num_key_value_heads * hd;
    let i = config.intermediate_size;
    let mut shapes = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![config.vocab_size, h],
    )];
    for layer in 0..config.num_hidden_layers {
        let p = format!("model.layers.{layer}");
        shapes.extend([
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.self_attn.q_norm.weight"), vec![hd]),
            (format!("{p}.self_attn.k_norm.weight"), vec![hd]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
        ]);
    }
    shapes.push(("model.norm.weight".to_string(), vec![h]));
    if !config.tie_word_embeddings {
        shapes.push(("lm_head.weight".to_string(), vec![config.vocab_size, h]));
    }
    shapes
}

/// Supplies the tensor with a given Hugging Face name, checked against the expected shape.
pub(crate) type WeightSource<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor> + 'a;

/// The dtype a model's decoder layers compute in ([`Qwen3::with_compute_dtype`]); named as `torch_dtype` names them.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ComputeDtype {
    /// 32-bit floats throughout.
    #[default]
    #[serde(rename = "float32")]
    F32,
    /// bfloat16 products over f32 weights.
    #[serde(rename = "bfloat16")]
    Bf16,
}

impl ComputeDtype {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
        }
    }
}

/// A Qwen3 causal language model.
///
/// # Padding
///
/// Batched calls take an optional padding mask `[b, t]` (non-zero = real token, zero = padding). **Both left and
/// right padding work**, and so does padding anywhere: rotary positions are counted over real tokens only
/// (the first real token of every row gets position 0), and padding keys are masked out of attention. Outputs at
/// padding positions are finite but meaningless; ignore them. Right padding is the natural choice for training
/// (no wasted positions before the prompt); [`Qwen3::generate_batch`](crate::sampling) left-pads prompts so that
/// every row's last prompt token is in the last column.
#[derive(Debug, Clone)]
pub struct Qwen3 {
    config: Qwen3Config,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rotary: RotaryEmbedding,
    /// The dtype of the decoder layers' products (f32 unless [`Qwen3::with_compute_dtype`]).
    compute: DType,
}

/// What [`Qwen3::forward_checkpointed`] keeps for [`Qwen3::backward_checkpointed`]: the input of every decoder
/// layer and of the final norm (no graph), and what the layers were run with.
#[derive(Debug)]
pub struct Checkpoint {
    layer_inputs: Vec<Tensor>,
    call: CallInputs,
}

/// What the decoder layers of one call share: the flat token ids, the rotary tables, the additive attention mask,
/// which positions are real, and the call's `(batch, length)`.
#[derive(Debug)]
struct CallInputs {
    ids: Tensor,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
    valid: Vec<Vec<bool>>,
    shape: (usize, usize),
}

/// Per-call layout: token ids checked, rotary positions and the additive attention mask.
struct StepLayout {
    ids: Tensor,
    positions: Vec<u32>,
    mask: Tensor,
    valid: Vec<Vec<bool>>,
}

impl Qwen3 {
    /// Builds the model from a source of named tensors (see [`parameter_shapes`]); the source decides what a
    /// missing or misshapen tensor means.
    pub(crate) fn from_source(
        config: &Qwen3Config,
        device: &Device,
        get: &mut WeightSource<'_>,
    ) -> Result<Self> {
        config.validate()?;
        let (v, h) = (config.vocab_size, config.hidden_size);
        let embed_tokens = get("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..config.num_hidden_layers)
            .map(|layer| DecoderLayer::load(config, layer, get))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(get("model.norm.weight", &[h])?, config.rms_norm_eps);
        let lm_head = if config.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            get("lm_head.weight", &[v, h])?
        };
        Ok(Qwen3 {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: RotaryEmbedding::new(config, device)?,
            compute: DType::F32,
        })
    }

    /// Builds the model from the variables of `varmap`, stored under their Hugging Face names (see
    /// [`parameter_shapes`]). The model's tensors share storage with the variables, so optimiser steps on the
    /// `VarMap` are seen by the model. A missing or misshapen variable is an error naming it; nothing is created.
    pub fn from_varmap(
        config: &Qwen3Config,
        varmap: &candle_nn::VarMap,
        device: &Device,
    ) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Input("the VarMap's lock is poisoned".to_string()))?;
        let mut get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let var = data.get(name).ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                location: "VarMap".to_string(),
            })?;
            if var.dims() != shape {
                return Err(ModelError::TensorShape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    found: var.dims().to_vec(),
                });
            }
            if var.dtype() != DType::F32 {
                return Err(ModelError::TensorDtype {
                    name: name.to_string(),
                    dtype: var.dtype(),
                });
            }
            Ok(var.as_tensor().clone())
        };
        Self::from_source(config, device, &mut get)
    }

    /// A copy whose tensors are detached from the autograd graph but share storage with this model: it sees
    /// every optimiser update and builds no graph. Use it for sampling and for no-grad log-probs.
    pub fn detached(&self) -> Self {
        Qwen3 {
            config: self.config.clone(),
            embed_tokens: self.embed_tokens.detach(),
            layers: self.layers.iter().map(DecoderLayer::detached).collect(),
            norm: self.norm.detached(),
            lm_head: self.lm_head.detach(),
            rotary: self.rotary.clone(),
            compute: self.compute,
        }
    }

    /// This model with the products of its decoder layers (projections, feed-forward, attention) computed in
    /// `compute`: [`ComputeDtype::F32`] (the default) or [`ComputeDtype::Bf16`] (mixed precision: weights, norms,
    /// softmax, the output head and the log-probs stay f32, so the trainable variables and the optimiser's state are
    /// f32 master copies).
    pub fn with_compute_dtype(self, compute: ComputeDtype) -> Self {
        let compute = compute.dtype();
        Qwen3 {
            layers: self
                .layers
                .into_iter()
                .map(|l| l.with_compute(compute))
                .collect(),
            compute,
            ..self
        }
    }

    /// The dtype the decoder layers compute in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// The config the model was built from.
    pub fn config(&self) -> &Qwen3Config {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// An empty KV cache for `batch_size` sequences.
    pub fn new_cache(&self, batch_size: usize) -> KvCache {
        KvCache::new(self.layers.len(), batch_size)
    }

    /// Logits `[b, t, vocab]` for `input_ids: [b, t]` (u32 or i64), with an optional padding mask `[b, t]`
    /// (see the type's docs on padding). Differentiable with respect to every weight.
    pub fn forward(&self, input_ids: &Tensor, padding_mask: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.forward_hidden(input_ids, padding_mask)?;
        self.lm_head(&hidden)
    }

    /// Final normalised hidden states `[b, t, hidden]` (the input of the output head).
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.run(input_ids, padding_mask, None)
    }

    /// Like [`Self::forward`] but continuing from (and appending to) `cache`: `input_ids: [b, t]` are the next
    /// `t` positions of each sequence. With `padding_mask`, zero entries are padding (they are cached but never
    /// attended to by real tokens). Prefill followed by one-token steps gives the same logits as one
    /// [`Self::forward`] over the whole sequence.
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden = self.run(input_ids, padding_mask, Some(cache))?;
        self.lm_head(&hidden)
    }

    /// The forward half of a backward pass with activation checkpointing: runs the decoder without building a
    /// graph, keeping only each layer's input (`[b, t, hidden]` per layer), and returns the final normalised hidden
    /// states as a fresh variable, on which the caller builds its loss, with the [`Checkpoint`]. Once the caller
    /// has the loss's gradient with respect to that variable, [`Self::backward_checkpointed`] recomputes the layers
    /// one at a time. A backward pass then holds one layer's activations instead of every layer's, for the price of
    /// one more forward pass (transformers' `gradient_checkpointing_enable` makes the same trade).
    pub fn forward_checkpointed(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
    ) -> Result<(Var, Checkpoint)> {
        let call = self.call_inputs(input_ids, padding_mask, None)?;
        let plain = self.detached();
        let mut x = plain.embed(&call)?;
        let mut layer_inputs = Vec::with_capacity(self.layers.len() + 1);
        for layer in &plain.layers {
            layer_inputs.push(x.clone());
            x = layer.forward(&x, &call.cos, &call.sin, &call.mask, None)?;
        }
        let out = plain.norm.forward(&x)?;
        layer_inputs.push(x);
        Ok((Var::from_tensor(&out)?, Checkpoint { layer_inputs, call }))
    }

    /// The backward half (see [`Self::forward_checkpointed`]): pushes `grad`, the loss's gradient with respect to
    /// the hidden states that call returned, through the final norm, every decoder layer (recomputed from its saved
    /// input, last to first) and the embedding. `sink` receives each piece's gradients, keyed by this model's
    /// weights (add them up per variable); the sum equals the gradient a plain backward pass gives, up to float
    /// rounding.
    pub fn backward_checkpointed(
        &self,
        checkpoint: Checkpoint,
        grad: &Tensor,
        mut sink: impl FnMut(&GradStore) -> Result<()>,
    ) -> Result<()> {
        let Checkpoint {
            mut layer_inputs,
            call,
        } = checkpoint;
        // Each piece: a fresh leaf for its input, the piece run on it with gradients, and `sum(output * g)`
        // differentiated, which gives `g`'s product with the piece's Jacobian for its weights and its input.
        let mut piece = |input: Tensor,
                         g: &Tensor,
                         run: &dyn Fn(&Tensor) -> Result<Tensor>|
         -> Result<Tensor> {
            let leaf = Var::from_tensor(&input)?;
            let out = run(leaf.as_tensor())?;
            let store = (out * g)?.sum_all()?.backward()?;
            sink(&store)?;
            Ok(match store.get(leaf.as_tensor()) {
                Some(g) => g.detach(),
                None => leaf.zeros_like()?,
            })
        };
        let last = layer_inputs
            .pop()
            .ok_or_else(|| ModelError::Input("the checkpoint holds no layer inputs".to_string()))?;
        let mut g = piece(last, grad, &|x| self.norm.forward(x))?;
        for (layer, input) in self.layers.iter().zip(layer_inputs).rev() {
            g = piece(input, &g, &|x| {
                layer.forward(x, &call.cos, &call.sin, &call.mask, None)
            })?;
        }
        sink(&(self.embed(&call)? * g)?.sum_all()?.backward()?)
    }

    /// Applies the output head to hidden states `[..., hidden]`, giving logits `[..., vocab]`.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        Linear::new(self.lm_head.clone()).forward(hidden)
    }

    /// `log p(targets[b, i] | input_ids[b, ..=i])` for every position: `[b, t]` f32, where `targets: [b, t]`
    /// holds, for each position, the token whose log-probability is wanted (usually `input_ids` shifted left by
    /// one). Entries at padding positions are meaningless. Logits are materialised in chunks of positions so that
    /// no more than about 16M of them exist at once when no gradient is tracked (use a [`Self::detached`] model
    /// for teacher/behaviour log-probs); with gradients the chunks stay alive in the graph.
    pub fn token_logprobs(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
        targets: &Tensor,
    ) -> Result<Tensor> {
        let hidden = self.forward_hidden(input_ids, padding_mask)?;
        self.logprobs_from_hidden(&hidden, targets)
    }

    /// `log p(input_ids[b, i + 1] | input_ids[b, ..=i])`: `[b, t - 1]`, the log-probability of each next token.
    pub fn next_token_logprobs(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_, t) = input_ids.dims2()?;
        if t < 2 {
            return Err(ModelError::Input(format!(
                "next_token_logprobs needs at least 2 positions, got {t}"
            )));
        }
        let hidden = self.forward_hidden(input_ids, padding_mask)?;
        let hidden = hidden.narrow(1, 0, t - 1)?;
        let targets = input_ids.narrow(1, 1, t - 1)?;
        self.logprobs_from_hidden(&hidden, &targets)
    }

    /// Gathers `log_softmax(lm_head(hidden))[b, i, targets[b, i]]`, chunked over positions.
    pub fn logprobs_from_hidden(&self, hidden: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (b, t, _) = hidden.dims3()?;
        if targets.dims() != [b, t] {
            return Err(ModelError::Input(format!(
                "targets have shape {:?}, hidden states {:?}",
                targets.dims(),
                hidden.dims()
            )));
        }
        let targets = self.ids_in_vocab(targets, "target")?;
        let vocab = self.config.vocab_size;
        let chunk = (LOGPROB_CHUNK_ELEMENTS / (b * vocab).max(1)).max(1);
        let mut parts = Vec::with_capacity(t.div_ceil(chunk));
        let mut start = 0;
        while start < t {
            let len = chunk.min(t - start);
            let logits = self.lm_head(&hidden.narrow(1, start, len)?)?; // [b, len, V]
            // log-sum-exp with a detached max: exact for any constant shift, and keeps the gradient dense.
            let max = logits.max_keepdim(D::Minus1)?.detach();
            let lse = (logits
                .broadcast_sub(&max)?
                .exp()?
                .sum_keepdim(D::Minus1)?
                .log()?
                + &max)?;
            let idx = targets.narrow(1, start, len)?.unsqueeze(2)?.contiguous()?;
            let picked = logits.gather(&idx, D::Minus1)?;
            parts.push((picked - lse)?.squeeze(2)?);
            start += len;
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// `ids` as u32, or an error naming the first id (`what`: "token", "target") outside the vocabulary.
    fn ids_in_vocab(&self, ids: &Tensor, what: &str) -> Result<Tensor> {
        let ids = ids.to_dtype(DType::U32)?;
        let vocab = self.config.vocab_size;
        if let Some(&bad) = ids
            .flatten_all()?
            .to_vec1::<u32>()?
            .iter()
            .find(|&&id| id as usize >= vocab)
        {
            return Err(ModelError::Input(format!(
                "{what} id {bad} is not below vocab_size = {vocab}"
            )));
        }
        Ok(ids)
    }

    fn layout(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
        cache: Option<&KvCache>,
    ) -> Result<StepLayout> {
        let (b, t) = input_ids.dims2().map_err(|_| {
            ModelError::Input(format!(
                "input_ids must be [batch, seq], got shape {:?}",
                input_ids.dims()
            ))
        })?;
        if b == 0 || t == 0 {
            return Err(ModelError::Input(format!(
                "input_ids is empty: shape {:?}",
                input_ids.dims()
            )));
        }
        let ids = self.ids_in_vocab(input_ids, "token")?;
        let valid: Vec<Vec<bool>> = match padding_mask {
            None => vec![vec![true; t]; b],
            Some(mask) => {
                if mask.dims() != [b, t] {
                    return Err(ModelError::Input(format!(
                        "padding mask has shape {:?}, input_ids {:?}",
                        mask.dims(),
                        input_ids.dims()
                    )));
                }
                mask.to_dtype(DType::F32)?
                    .to_vec2::<f32>()?
                    .into_iter()
                    .map(|row| row.into_iter().map(|m| m != 0.0).collect())
                    .collect()
            }
        };
        let (past, past_valid, start_pos): (usize, Vec<&[bool]>, Vec<usize>) = match cache {
            None => (0, vec![&[][..]; b], vec![0; b]),
            Some(cache) => {
                if cache.batch_size() != b {
                    return Err(ModelError::Input(format!(
                        "KV cache holds {} sequences but the input has {b}",
                        cache.batch_size()
                    )));
                }
                (
                    cache.len(),
                    cache.key_valid.iter().map(Vec::as_slice).collect(),
                    cache.next_pos.clone(),
                )
            }
        };
        let total = past + t;
        let mut positions = Vec::with_capacity(b * t);
        let mut key_mask = Vec::with_capacity(b * total);
        for row in 0..b {
            let mut pos = start_pos[row];
            for &ok in &valid[row] {
                positions.push(pos as u32);
                if ok {
                    pos += 1;
                }
            }
            for &ok in past_valid[row].iter().chain(&valid[row]) {
                key_mask.push(if ok { 0.0 } else { PAD_MASK_VALUE });
            }
        }
        let mut causal = Vec::with_capacity(t * total);
        for i in 0..t {
            for j in 0..total {
                causal.push(if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                });
            }
        }
        let device = self.device();
        let key_mask = Tensor::from_vec(key_mask, (b, 1, 1, total), device)?;
        let causal = Tensor::from_vec(causal, (1, 1, t, total), device)?;
        Ok(StepLayout {
            ids,
            positions,
            mask: key_mask.broadcast_add(&causal)?,
            valid,
        })
    }

    /// Runs the decoder (with an optional cache) and returns the final normalised hidden states.
    pub(crate) fn run(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let call = self.call_inputs(input_ids, padding_mask, cache.as_deref())?;
        let mut x = self.embed(&call)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, &call.cos, &call.sin, &call.mask, layer_cache)?;
        }
        if let Some(cache) = cache {
            for (row, valid) in call.valid.iter().enumerate() {
                cache.key_valid[row].extend_from_slice(valid);
                cache.next_pos[row] += valid.iter().filter(|&&v| v).count();
            }
        }
        self.norm.forward(&x)
    }

    /// The layout of a call (see [`Self::layout`]) with its rotary tables and flat ids.
    fn call_inputs(
        &self,
        input_ids: &Tensor,
        padding_mask: Option<&Tensor>,
        cache: Option<&KvCache>,
    ) -> Result<CallInputs> {
        let layout = self.layout(input_ids, padding_mask, cache)?;
        let (b, t) = layout.ids.dims2()?;
        let (cos, sin) = self.rotary.select(&layout.positions, b, t)?;
        Ok(CallInputs {
            ids: layout.ids.flatten_all()?.to_device(self.device())?,
            cos,
            sin,
            mask: layout.mask,
            valid: layout.valid,
            shape: (b, t),
        })
    }

    /// The token embeddings of a call, `[b, t, hidden]`.
    fn embed(&self, call: &CallInputs) -> Result<Tensor> {
        let (b, t) = call.shape;
        Ok(self.embed_tokens.index_select(&call.ids, 0)?.reshape((
            b,
            t,
            self.config.hidden_size,
        ))?)
    }

    /// The `[vocab, hidden]` output-head weight (the embedding matrix when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        &self.lm_head
    }
}

//! The layers of the Qwen3 decoder ([`super::Qwen3`]), each a plain struct with `load` and `forward`: the
//! bias-free [`Linear`], [`RmsNorm`] spelled out, [`RotaryEmbedding`], grouped-query [`Attention`] with q/k norms,
//! the SwiGLU [`Mlp`] and the [`DecoderLayer`] that joins them. Only differentiable candle ops (see the parent's
//! docs).

use candle_core::{D, DType, Device, Tensor};

use super::WeightSource;
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;

/// `a · b` computed in `compute` (f32 or bf16) and returned in `a`'s dtype. In bf16 the operands are rounded to
/// bf16 for the product only (mixed precision: the weights stay f32, and so do their gradients, which flow back
/// through the casts).
pub(crate) fn matmul_in(a: &Tensor, b: &Tensor, compute: DType) -> Result<Tensor> {
    if compute == a.dtype() {
        return Ok(a.matmul(b)?);
    }
    Ok(a.to_dtype(compute)?
        .matmul(&b.to_dtype(compute)?)?
        .to_dtype(a.dtype())?)
}

/// A bias-free linear layer `y = x Wᵀ` with `W: [out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: Tensor,
    /// The dtype the product is computed in ([`Qwen3::with_compute_dtype`]).
    pub(crate) compute: DType,
}

impl Linear {
    /// Wraps a `[out, in]` weight; the product is computed in the weight's dtype.
    pub fn new(weight: Tensor) -> Self {
        let compute = weight.dtype();
        Linear { weight, compute }
    }

    /// This layer with its product computed in `compute`.
    pub fn with_compute(self, compute: DType) -> Self {
        Linear { compute, ..self }
    }

    /// The `[out, in]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Applies the layer to `[..., in]`, giving `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let y = matmul_in(&x.reshape((rows, in_dim))?, &self.weight.t()?, self.compute)?;
        let mut out_dims = dims.to_vec();
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(0)?;
        Ok(y.reshape(out_dims)?)
    }

    pub(crate) fn detached(&self) -> Self {
        Linear::new(self.weight.detach()).with_compute(self.compute)
    }
}

/// Root-mean-square normalisation over the last dimension, `x / sqrt(mean(x²) + eps) * weight`, written with
/// differentiable elementary ops.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    /// Wraps a `[dim]` weight.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps }
    }

    /// Normalises `[..., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (mean_sq + self.eps)?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&inv)?.broadcast_mul(&self.weight)?)
    }

    pub(crate) fn detached(&self) -> Self {
        RmsNorm::new(self.weight.detach(), self.eps)
    }
}

/// Rotary position embedding tables (`cos`/`sin` of `position * theta^(-2i/head_dim)`), applied in the
/// "rotate half" layout Qwen3 uses.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    pub(crate) max_positions: usize,
}

impl RotaryEmbedding {
    /// Builds `[max_position_embeddings, head_dim / 2]` tables on `device` (computed in f64, stored in f32).
    pub fn new(config: &Qwen3Config, device: &Device) -> Result<Self> {
        let half = config.head_dim() / 2;
        let max = config.max_position_embeddings;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| {
                config
                    .rope_theta
                    .powf(-(2.0 * i as f64) / (2 * half) as f64)
            })
            .collect();
        let mut cos = Vec::with_capacity(max * half);
        let mut sin = Vec::with_capacity(max * half);
        for pos in 0..max {
            for f in &inv_freq {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(RotaryEmbedding {
            cos: Tensor::from_vec(cos, (max, half), device)?,
            sin: Tensor::from_vec(sin, (max, half), device)?,
            max_positions: max,
        })
    }

    /// `cos`/`sin` rows for `positions` (`b * t` of them), shaped `[b, 1, t, head_dim / 2]`.
    pub(crate) fn select(&self, positions: &[u32], b: usize, t: usize) -> Result<(Tensor, Tensor)> {
        if let Some(&p) = positions.iter().max()
            && p as usize >= self.max_positions
        {
            return Err(ModelError::Input(format!(
                "position {p} exceeds max_position_embeddings = {}",
                self.max_positions
            )));
        }
        let idx = Tensor::from_slice(positions, positions.len(), self.cos.device())?;
        let half = self.cos.dim(1)?;
        let cos = self.cos.index_select(&idx, 0)?.reshape((b, 1, t, half))?;
        let sin = self.sin.index_select(&idx, 0)?.reshape((b, 1, t, half))?;
        Ok((cos, sin))
    }

    /// Rotates `x: [b, heads, t, head_dim]` with tables from [`Self::select`].
    pub(crate) fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let r1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
        let r2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
        Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
    }
}

/// Grouped-query self-attention with per-head RMSNorm on queries and keys.
#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    pub(crate) q_norm: RmsNorm,
    pub(crate) k_norm: RmsNorm,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    /// The dtype of the attention products (the projections carry their own).
    pub(crate) compute: DType,
}

impl Attention {
    pub(crate) fn with_compute(self, compute: DType) -> Self {
        Attention {
            q_proj: self.q_proj.with_compute(compute),
            k_proj: self.k_proj.with_compute(compute),
            v_proj: self.v_proj.with_compute(compute),
            o_proj: self.o_proj.with_compute(compute),
            compute,
            ..self
        }
    }

    pub(crate) fn load(
        config: &Qwen3Config,
        prefix: &str,
        get: &mut WeightSource<'_>,
    ) -> Result<Self> {
        let h = config.hidden_size;
        let hd = config.head_dim();
        let nh = config.num_attention_heads;
        let nkv = config.num_key_value_heads;
        let mut linear = |name: &str, shape: [usize; 2]| -> Result<Linear> {
            Ok(Linear::new(get(
                &format!("{prefix}.{name}.weight"),
                &shape,
            )?))
        };
        let q_proj = linear("q_proj", [nh * hd, h])?;
        let k_proj = linear("k_proj", [nkv * hd, h])?;
        let v_proj = linear("v_proj", [nkv * hd, h])?;
        let o_proj = linear("o_proj", [h, nh * hd])?;
        let q_norm = RmsNorm::new(
            get(&format!("{prefix}.q_norm.weight"), &[hd])?,
            config.rms_norm_eps,
        );
        let k_norm = RmsNorm::new(
            get(&format!("{prefix}.k_norm.weight"), &[hd])?,
            config.rms_norm_eps,
        );
        Ok(Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            q_norm,
            k_norm,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            compute: DType::F32,
        })
    }

    /// `x: [b, t, hidden]` → `[b, t, hidden]`. `mask: [b, 1, t, past + t]` is additive.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.head_dim;
        let q = self
            .q_proj
            .forward(x)?
            .reshape((b, t, self.num_heads, hd))?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape((b, t, self.num_kv_heads, hd))?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape((b, t, self.num_kv_heads, hd))?;
        let q = self.q_norm.forward(&q)?.transpose(1, 2)?;
        let k = self.k_norm.forward(&k)?.transpose(1, 2)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let q = RotaryEmbedding::apply(&q, cos, sin)?;
        let k = RotaryEmbedding::apply(&k, cos, sin)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        // Grouped-query attention without copying keys and values per query head: the `n_rep` query heads that
        // read one key/value head (head `h` reads `h / n_rep`) are stacked as rows of one product,
        // `[b, kv_heads, n_rep * t, hd] x [b, kv_heads, hd, total]`.
        let (nkv, n_rep) = (self.num_kv_heads, self.num_heads / self.num_kv_heads);
        let total = k.dim(2)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let q = q.contiguous()?.reshape((b, nkv, n_rep * t, hd))?;
        let scores = (matmul_in(&q, &k.t()?, self.compute)? * scale)?
            .reshape((b, nkv, n_rep, t, total))?
            .broadcast_add(&mask.unsqueeze(1)?)?;
        let probs =
            candle_nn::ops::softmax(&scores, D::Minus1)?.reshape((b, nkv, n_rep * t, total))?;
        let out = matmul_in(&probs, &v, self.compute)?.reshape((b, self.num_heads, t, hd))?;
        let out = out.transpose(1, 2)?.reshape((b, t, self.num_heads * hd))?;
        self.o_proj.forward(&out)
    }

    pub(crate) fn detached(&self) -> Self {
        Attention {
            q_proj: self.q_proj.detached(),
            k_proj: self.k_proj.detached(),
            v_proj: self.v_proj.detached(),
            o_proj: self.o_proj.detached(),
            q_norm: self.q_norm.detached(),
            k_norm: self.k_norm.detached(),
            ..*self
        }
    }
}

/// The SwiGLU feed-forward block, `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

impl Mlp {
    pub(crate) fn load(
        config: &Qwen3Config,
        prefix: &str,
        get: &mut WeightSource<'_>,
    ) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::new(get(&format!("{prefix}.gate_proj.weight"), &[i, h])?),
            up_proj: Linear::new(get(&format!("{prefix}.up_proj.weight"), &[i, h])?),
            down_proj: Linear::new(get(&format!("{prefix}.down_proj.weight"), &[h, i])?),
        })
    }

    /// `[..., hidden]` → `[..., hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.silu()?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&(gate * up)?)
    }

    pub(crate) fn with_compute(self, compute: DType) -> Self {
        Mlp {
            gate_proj: self.gate_proj.with_compute(compute),
            up_proj: self.up_proj.with_compute(compute),
            down_proj: self.down_proj.with_compute(compute),
        }
    }

    pub(crate) fn detached(&self) -> Self {
        Mlp {
            gate_proj: self.gate_proj.detached(),
            up_proj: self.up_proj.detached(),
            down_proj: self.down_proj.detached(),
        }
    }
}

/// One pre-norm decoder layer: `x + attn(norm(x))`, then `h + mlp(norm(h))`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(crate) self_attn: Attention,
    pub(crate) mlp: Mlp,
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    pub(crate) fn load(
        config: &Qwen3Config,
        layer: usize,
        get: &mut WeightSource<'_>,
    ) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        let h = config.hidden_size;
        let eps = config.rms_norm_eps;
        Ok(DecoderLayer {
            self_attn: Attention::load(config, &format!("{p}.self_attn"), get)?,
            mlp: Mlp::load(config, &format!("{p}.mlp"), get)?,
            input_layernorm: RmsNorm::new(get(&format!("{p}.input_layernorm.weight"), &[h])?, eps),
            post_attention_layernorm: RmsNorm::new(
                get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                eps,
            ),
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let attn =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, cos, sin, mask, cache)?;
        let h = (x + attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        Ok((h + mlp)?)
    }

    pub(crate) fn with_compute(self, compute: DType) -> Self {
        DecoderLayer {
            self_attn: self.self_attn.with_compute(compute),
            mlp: self.mlp.with_compute(compute),
            ..self
        }
    }

    pub(crate) fn detached(&self) -> Self {
        DecoderLayer {
            self_attn: self.self_attn.detached(),
            mlp: self.mlp.detached(),
            input_layernorm: self.input_layernorm.detached(),
            post_attention_layernorm: self.post_attention_layernorm.detached(),
        }
    }
}

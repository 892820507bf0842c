//! `KvCache`: keys and values of earlier positions, for incremental decoding.

use candle_core::Tensor;

/// Cached keys/values of one layer: `[batch, num_key_value_heads, capacity, head_dim]` each, of which the first
/// [`KvCache::len`] positions along axis 2 are filled (capacity = len for graph-carrying tensors).
pub(crate) type LayerKv = Option<(Tensor, Tensor)>;

/// Capacity (positions) of a new in-place buffer, at the least.
const MIN_CAPACITY: usize = 64;

/// Keys and values of every layer for the positions already processed, plus the bookkeeping that batched
/// decoding with padding needs (which cached positions are real tokens, and the next rotary position of each
/// sequence).
///
/// Two ways to append, chosen per call:
/// - keys and values that carry an autograd graph (a model that is not [`crate::Qwen3::detached`]) are joined
///   with [`Tensor::cat`], which keeps the graph: a loss computed from logits of a cached decode step
///   back-propagates into the earlier positions' keys and values (no silent detach);
/// - detached ones (sampling) are written in place into a buffer with spare capacity along the sequence axis,
///   which grows by doubling, and the layer reads a view of its filled part. Decoding one token then copies
///   one position per layer instead of the whole cache, which made the copies, not the arithmetic, the largest
///   cost of a rollout on CPU (measured: `docs/benchmarks.md`).
///
/// Not `Clone`: two handles on one in-place buffer would write over each other's positions.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    /// `key_valid[b][j]`: whether cached position `j` of sequence `b` is a real token (not padding).
    pub(crate) key_valid: Vec<Vec<bool>>,
    /// Rotary position the next real token of sequence `b` gets.
    pub(crate) next_pos: Vec<usize>,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers and a batch of `batch_size` sequences.
    pub fn new(num_layers: usize, batch_size: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            key_valid: vec![Vec::new(); batch_size],
            next_pos: vec![0; batch_size],
        }
    }

    /// Number of cached positions (padding included), the same for every sequence of the batch.
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of sequences the cache holds.
    pub fn batch_size(&self) -> usize {
        self.key_valid.len()
    }

    /// Number of real (non-padding) tokens cached for each sequence.
    pub fn num_tokens(&self) -> &[usize] {
        &self.next_pos
    }

    /// Forgets everything cached, keeping the layer count and batch size.
    pub fn reset(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
        for valid in &mut self.key_valid {
            valid.clear();
        }
        for pos in &mut self.next_pos {
            *pos = 0;
        }
    }

    /// Keeps only the sequences at batch rows `rows` (in that order), e.g. to drop finished sequences from a
    /// batched generation.
    pub fn retain_rows(&mut self, rows: &[usize]) -> candle_core::Result<()> {
        let b = self.batch_size();
        if let Some(&bad) = rows.iter().find(|&&r| r >= b) {
            candle_core::bail!("row {bad} out of range for a KV cache of {b} sequences");
        }
        if let Some(Some((k, _))) = self.layers.first() {
            let idx = Tensor::from_vec(
                rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                rows.len(),
                k.device(),
            )?;
            for layer in self.layers.iter_mut().flatten() {
                *layer = (
                    layer.0.index_select(&idx, 0)?,
                    layer.1.index_select(&idx, 0)?,
                );
            }
        }
        self.key_valid = rows.iter().map(|&r| self.key_valid[r].clone()).collect();
        self.next_pos = rows.iter().map(|&r| self.next_pos[r]).collect();
        Ok(())
    }

    /// Appends this step's keys and values (`[batch, kv_heads, t, head_dim]`) for `layer` and returns the full
    /// (cached + new) keys and values, `[batch, kv_heads, len + t, head_dim]` (views of the buffer when in place).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let len = self.len();
        let t = k.dim(2)?;
        let held = self.layers[layer].take();
        let tracked = [
            Some(k),
            Some(v),
            held.as_ref().map(|h| &h.0),
            held.as_ref().map(|h| &h.1),
        ]
        .into_iter()
        .flatten()
        .any(Tensor::track_op);
        let (kb, vb) = match held {
            None if tracked => (k.clone(), v.clone()),
            Some((pk, pv)) if tracked => (
                Tensor::cat(&[&pk.narrow(2, 0, len)?, k], 2)?,
                Tensor::cat(&[&pv.narrow(2, 0, len)?, v], 2)?,
            ),
            held => {
                let (kb, vb) = match held {
                    Some((pk, pv)) if pk.dim(2)? >= len + t => (pk, pv),
                    held => {
                        let cap = (len + t).max(2 * len).max(MIN_CAPACITY);
                        let (ok, ov) = held.map_or((None, None), |(pk, pv)| (Some(pk), Some(pv)));
                        (buffer(k, ok, len, cap)?, buffer(v, ov, len, cap)?)
                    }
                };
                kb.slice_set(&k.contiguous()?, 2, len)?;
                vb.slice_set(&v.contiguous()?, 2, len)?;
                (kb, vb)
            }
        };
        let filled = (kb.narrow(2, 0, len + t)?, vb.narrow(2, 0, len + t)?);
        self.layers[layer] = Some((kb, vb));
        Ok(filled)
    }
}

/// A zeroed `[b, heads, cap, d]` buffer shaped like `x` along the other axes, holding the first `len` positions
/// of `old` when there is one.
fn buffer(x: &Tensor, old: Option<Tensor>, len: usize, cap: usize) -> candle_core::Result<Tensor> {
    let (b, h, _, d) = x.dims4()?;
    let buf = Tensor::zeros((b, h, cap, d), x.dtype(), x.device())?;
    if let Some(old) = old
        && len > 0
    {
        buf.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(buf)
}

/// What a model has already computed of one sequence, kept between calls: the keys and values of `tokens` in every
/// layer (`[1, kv_heads, tokens.len(), head_dim]`, real positions only). A multi-turn rollout keeps one per
/// trajectory, so that each turn feeds the model only what came after the previous turn's last fed token (the
/// tool responses and the next assistant header) instead of the whole conversation again. Empty by default.
#[derive(Debug, Default)]
pub struct SequenceKv {
    tokens: Vec<u32>,
    layers: Vec<(Tensor, Tensor)>,
}

impl SequenceKv {
    /// The tokens whose keys and values are held.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many of `prompt`'s first tokens this state covers: its length when `prompt` continues its tokens
    /// with at least one more (the model needs one new token to predict from), else 0.
    pub fn reusable_for(&self, prompt: &[u32], num_layers: usize) -> usize {
        let n = self.tokens.len();
        if n > 0
            && n < prompt.len()
            && self.layers.len() == num_layers
            && prompt.starts_with(&self.tokens)
        {
            n
        } else {
            0
        }
    }
}

impl KvCache {
    /// A cache for a batch whose row `i` starts with the first `reuse[i]` tokens of `states[i]` (0: nothing),
    /// left-padded to the longest: row `i` holds `max(reuse) - reuse[i]` padding positions, then its keys and
    /// values. Padding is marked invalid (never attended to) and rotary positions continue from `reuse[i]`.
    pub(crate) fn from_sequences(
        num_layers: usize,
        states: &[SequenceKv],
        reuse: &[usize],
    ) -> candle_core::Result<Self> {
        let b = states.len();
        let longest = reuse.iter().copied().max().unwrap_or(0);
        let mut cache = KvCache::new(num_layers, b);
        // A row that reuses the most gives the shapes of the padding.
        let Some(widest) = reuse
            .iter()
            .position(|&n| n == longest)
            .filter(|_| longest > 0)
        else {
            return Ok(cache);
        };
        for (layer, slot) in cache.layers.iter_mut().enumerate() {
            let like = &states[widest].layers[layer].0;
            let (_, h, _, d) = like.dims4()?;
            let (mut ks, mut vs) = (Vec::with_capacity(b), Vec::with_capacity(b));
            for (state, &n) in states.iter().zip(reuse) {
                let pad = Tensor::zeros((1, h, longest - n, d), like.dtype(), like.device())?;
                // `reuse[i]` is 0 or the whole state (`SequenceKv::reusable_for`).
                let (k, v) = match n {
                    0 => (pad.clone(), pad),
                    _ => {
                        let (k, v) = &state.layers[layer];
                        (Tensor::cat(&[&pad, k], 2)?, Tensor::cat(&[&pad, v], 2)?)
                    }
                };
                ks.push(k);
                vs.push(v);
            }
            *slot = Some((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?));
        }
        for (row, &n) in reuse.iter().enumerate() {
            cache.key_valid[row] = std::iter::repeat_n(false, longest - n)
                .chain(std::iter::repeat_n(true, n))
                .collect();
            cache.next_pos[row] = n;
        }
        Ok(cache)
    }

    /// Row `row`'s keys and values at its real positions, as the state of `tokens` (which must be the tokens
    /// those positions hold, in order).
    pub(crate) fn sequence(&self, row: usize, tokens: Vec<u32>) -> candle_core::Result<SequenceKv> {
        let valid: Vec<u32> = self.key_valid[row]
            .iter()
            .enumerate()
            .filter(|(_, ok)| **ok)
            .map(|(j, _)| j as u32)
            .collect();
        if valid.len() != tokens.len() {
            candle_core::bail!(
                "row {row} caches {} real positions, not the {} tokens given",
                valid.len(),
                tokens.len()
            );
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let Some((k, v)) = layer else {
                candle_core::bail!("an empty cache layer has no sequence to take");
            };
            let idx = Tensor::from_vec(valid.clone(), valid.len(), k.device())?;
            layers.push((
                k.narrow(0, row, 1)?.index_select(&idx, 2)?,
                v.narrow(0, row, 1)?.index_select(&idx, 2)?,
            ));
        }
        Ok(SequenceKv { tokens, layers })
    }
}

//! `KvCache`: keys and values of earlier positions, for incremental decoding.

use candle_core::Tensor;

/// Cached keys/values of one layer: `[batch, num_key_value_heads, cached_len, head_dim]` each.
pub(crate) type LayerKv = Option<(Tensor, Tensor)>;

/// Keys and values of every layer for the positions already processed, plus the bookkeeping that batched
/// decoding with padding needs (which cached positions are real tokens, and the next rotary position of each
/// sequence).
///
/// Appending uses [`Tensor::cat`], which keeps the autograd graph: a loss computed from logits of a cached
/// decode step back-propagates into the earlier positions' keys and values (no silent detach). For sampling,
/// run a [`crate::Qwen3::detached`] copy of the model so that no graph is built at all.
#[derive(Debug, Clone)]
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

    /// Appends this step's keys and values for `layer` and returns the full (cached + new) keys and values.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (k, v) = match &self.layers[layer] {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

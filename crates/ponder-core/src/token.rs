//! Token-level early exit in language models: the step-wise interface that DYNAMAX- and
//! CALM-style decoders drive one layer at a time (DYNAMAX: Nogales, Gambella & Roveri 2025,
//! arXiv:2504.20922; CALM: Schuster et al., NeurIPS 2022, arXiv:2207.07061).
//!
//! A [`TokenLm`] generates one token per row at a time. For each token the decoder runs
//! the layers in order; a row that exits after layer `e` *skips* the later layers
//! (all of them, or all but the last one, with DYNAMAX's "always run the last layer"),
//! and the caches of the layers it skipped are filled by a [`SkipRule`]. Every layer
//! call names the rows that run it and the rows that skip it, so exited rows leave the
//! batch (the layer runs on fewer rows) while every row's cache stays complete.

use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::{PonderError, Result, index_tensor};

/// Checks a generation prompt: at least one token, every token in the vocabulary.
pub fn check_prompt(prompt: &[usize], vocab_size: usize) -> Result<()> {
    if prompt.is_empty() {
        return Err(PonderError::config(
            "prompt",
            "must have at least one token",
        ));
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t >= vocab_size) {
        return Err(PonderError::config(
            "prompt",
            format!("token {bad} is outside the vocabulary of {vocab_size}"),
        ));
    }
    Ok(())
}

/// What a layer's cache gets for a row that skipped the layer at the current token: later
/// tokens still read that layer's K/V (Transformer) or conv/SSM state (Mamba) at this
/// position, so it must be filled one way or another, and recomputing it has a cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipRule {
    /// Transformer: the row's previous position's K/V are written again at the current
    /// position (DYNAMAX `recompute_states = False`). Free.
    Copy,
    /// The skipped layer's cache is computed from the exited hidden state: the K/V
    /// projections of the exited state (transformer; CALM's state propagation), or the
    /// layer run on the exited state for its conv/SSM state only (Mamba). Costs a part of
    /// a layer per skipped layer.
    Recompute,
    /// Mamba: the skipped layer's conv and SSM states are not advanced for this token.
    /// Free.
    Unadvanced,
}

impl SkipRule {
    /// Every rule, in a fixed order.
    pub const ALL: [SkipRule; 3] = [SkipRule::Copy, SkipRule::Recompute, SkipRule::Unadvanced];

    /// The rule's name in configs and tables.
    pub fn name(self) -> &'static str {
        match self {
            SkipRule::Copy => "copy",
            SkipRule::Recompute => "recompute",
            SkipRule::Unadvanced => "unadvanced",
        }
    }
}

/// A set of batch rows, on the host and on the device.
#[derive(Debug, Clone)]
pub struct Rows {
    /// Row indices into the batch, increasing.
    pub indices: Vec<usize>,
    /// The same as a device tensor (for `select`).
    pub tensor: Tensor<1, Int>,
    /// The batch size the indices refer to.
    pub batch_size: usize,
}

impl Rows {
    /// Rows `indices` (increasing, below `batch_size`) of a batch.
    pub fn new(indices: Vec<usize>, batch_size: usize, device: &Device) -> Self {
        debug_assert!(indices.windows(2).all(|w| w[0] < w[1]));
        debug_assert!(indices.iter().all(|&r| r < batch_size));
        let tensor = index_tensor(&indices, device);
        Self {
            indices,
            tensor,
            batch_size,
        }
    }

    /// Every row of a batch.
    pub fn all(batch_size: usize, device: &Device) -> Self {
        Self::new((0..batch_size).collect(), batch_size, device)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Every row of the batch.
    pub fn is_all(&self) -> bool {
        self.indices.len() == self.batch_size
    }
}

/// Joins per-row values of disjoint row sets that together cover a batch (rows along
/// dimension 0) back into batch order.
///
/// # Panics
/// If the parts do not cover `0..batch_size` exactly once.
pub fn merge_rows<const D: usize>(parts: Vec<(&Rows, Tensor<D>)>) -> Tensor<D> {
    let parts: Vec<_> = parts.into_iter().filter(|(r, _)| !r.is_empty()).collect();
    if parts.len() == 1 {
        assert!(
            parts[0].0.is_all(),
            "merge_rows: the rows do not cover the batch"
        );
        return parts.into_iter().next().expect("one part").1;
    }
    let batch_size = parts[0].0.batch_size;
    let mut position = vec![usize::MAX; batch_size];
    let mut offset = 0;
    for (rows, _) in &parts {
        for (i, &r) in rows.indices.iter().enumerate() {
            assert!(position[r] == usize::MAX, "merge_rows: row {r} given twice");
            position[r] = offset + i;
        }
        offset += rows.len();
    }
    assert!(
        position.iter().all(|&p| p != usize::MAX),
        "merge_rows: the rows do not cover the batch"
    );
    let device = parts[0].1.device();
    let joined = Tensor::cat(parts.into_iter().map(|(_, t)| t).collect(), 0);
    joined.select(0, index_tensor(&position, &device))
}

/// What one layer does for the current token: the rows that run it with their inputs,
/// and the rows that skipped it with their exited hidden states.
#[derive(Debug, Clone)]
pub struct LayerCall<'a> {
    /// Rows that run the layer, and their inputs `[rows, d_model]` (the residual stream).
    pub run: (&'a Rows, Tensor<2>),
    /// Rows that exited before this layer, their exited residual streams `[rows,
    /// d_model]` and the rule for this layer's cache. `None` when no row skipped it.
    pub skip: Option<(&'a Rows, Tensor<2>, SkipRule)>,
}

/// The output of a layer for the rows that ran it.
#[derive(Debug, Clone)]
pub struct LayerStep {
    /// The residual stream after the layer `[rows, d_model]`.
    pub stream: Tensor<2>,
    /// The input of DYNAMAX's exit classifier at this layer `[rows, feature_size]`
    /// (Mamba: `[mixer output; residual before it]`, 2d wide; transformer: the layer's
    /// output, d wide).
    pub features: Tensor<2>,
}

/// Every layer's outputs over whole sequences (to train exit classifiers).
#[derive(Debug, Clone)]
pub struct SequenceLayers {
    /// The input of layer 0 (the embeddings) `[batch, seq_len, d_model]`.
    pub input: Tensor<3>,
    /// The residual stream after each layer, `[batch, seq_len, d_model]` (not
    /// normalised).
    pub streams: Vec<Tensor<3>>,
    /// The exit classifier's input at each layer `[batch, seq_len, feature_size]`.
    pub features: Vec<Tensor<3>>,
}

/// A language model generated one token at a time and one layer at a time, with
/// per-layer caches that rows skipping a layer fill by a [`SkipRule`].
pub trait TokenLm {
    /// Every layer's cache for a batch (KV cache, recurrent states).
    type Cache: Clone;

    /// Number of layers N.
    fn n_layers(&self) -> usize;
    /// Width of the residual stream.
    fn d_model(&self) -> usize;
    /// Vocabulary size.
    fn vocab_size(&self) -> usize;
    /// Width of DYNAMAX's exit-classifier input ([`LayerStep::features`]).
    fn feature_size(&self) -> usize;
    /// The device of the weights.
    fn device(&self) -> Device;
    /// Longest sequence (prompt and generated tokens) the model can hold; `None`
    /// without a limit.
    fn max_len(&self) -> Option<usize>;
    /// Whether this model's caches have a meaning for `rule`.
    fn supports(&self, rule: SkipRule) -> bool;
    /// DYNAMAX's state-recompute penalty `c` in its speed-up formula: the share of a
    /// layer charged per recomputed skipped layer (DYNAMAX's evaluation code,
    /// arXiv:2504.20922: 4/24 for Mistral, 9/26 for Mamba).
    fn dynamax_penalty(&self) -> f64;
    /// What DYNAMAX's speed-up formula adds to each exited token's skipped layers
    /// (DYNAMAX's evaluation code, arXiv:2504.20922: +1 per exit for Mistral, 0 for Mamba).
    fn dynamax_skip_offset(&self) -> f64;

    /// Runs a prompt `[batch, len]` through every layer: the logits of the last prompt
    /// position `[batch, vocab]` and the caches after the prompt.
    fn prefill(&self, ids: Tensor<2, Int>) -> (Tensor<2>, Self::Cache);
    /// Positions the cache holds (the next token's position).
    fn cache_len(&self, cache: &Self::Cache) -> usize;
    /// Bytes the cache holds (f32).
    fn cache_bytes(&self, cache: &Self::Cache) -> usize;
    /// Shapes of layer 0's cache tensors (Mamba: conv and SSM state; transformer: K
    /// and V).
    fn cache_shapes(&self, cache: &Self::Cache) -> Vec<Vec<usize>>;
    /// The input of layer 0 for tokens `ids` `[batch]` at `position`: `[batch, d]`.
    fn embed(&self, ids: Tensor<1, Int>, position: usize) -> Tensor<2>;
    /// Layer `layer` for the current token: runs it on `call.run`'s rows (their part of
    /// the cache advances by one position) and fills the skipping rows' part of the cache
    /// by their rule. `None` when no row runs it.
    fn layer(
        &self,
        layer: usize,
        call: LayerCall<'_>,
        cache: &mut Self::Cache,
    ) -> Option<LayerStep>;
    /// Hidden states through the final norm (`[rows, d]`): what the shared head reads.
    fn final_norm(&self, stream: Tensor<2>) -> Tensor<2>;
    /// The shared output head on normalised hidden states → logits `[rows, vocab]`.
    fn head(&self, normed: Tensor<2>) -> Tensor<2>;
    /// Every layer's streams and classifier features over whole sequences `[batch,
    /// seq_len]` from position 0.
    fn sequence_layers(&self, ids: Tensor<2, Int>) -> SequenceLayers;
    /// The final norm and head over a sequence `[batch, seq_len, d]` → logits.
    fn sequence_logits(&self, stream: Tensor<3>) -> Tensor<3>;

    /// FLOPs of the embedding for one row.
    fn embed_flops(&self) -> u64;
    /// FLOPs of layer `layer` for one row at `position` (0-based; a KV cache makes later
    /// positions dearer).
    fn layer_flops(&self, layer: usize, position: usize) -> u64;
    /// FLOPs of filling layer `layer`'s cache for one skipping row by `rule`.
    fn skip_flops(&self, layer: usize, rule: SkipRule) -> u64;
    /// FLOPs of the final norm and head for one row.
    fn head_flops(&self) -> u64;

    /// One token through every layer (full depth): next-token logits `[batch, vocab]`
    /// after feeding `ids` `[batch]`.
    fn step_full(&self, ids: Tensor<1, Int>, cache: &mut Self::Cache) -> Tensor<2> {
        let [batch] = ids.dims();
        let all = Rows::all(batch, &self.device());
        let mut x = self.embed(ids, self.cache_len(cache));
        for layer in 0..self.n_layers() {
            x = self
                .layer(
                    layer,
                    LayerCall {
                        run: (&all, x),
                        skip: None,
                    },
                    cache,
                )
                .expect("every row runs")
                .stream;
        }
        self.head(self.final_norm(x))
    }

    /// Checks that `rule` applies to this model.
    fn check_rule(&self, rule: SkipRule) -> Result<()> {
        if self.supports(rule) {
            Ok(())
        } else {
            Err(PonderError::config(
                "token_exit.skip_rule",
                format!(
                    "\"{}\" does not apply to this backbone (transformer: copy or \
                     recompute; Mamba: unadvanced or recompute)",
                    rule.name()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_host;
    use burn::tensor::TensorData;

    #[test]
    fn merge_rows_restores_batch_order() {
        let device = Device::default();
        let a = Rows::new(vec![1, 3], 4, &device);
        let b = Rows::new(vec![0, 2], 4, &device);
        let ta = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 1.5, 3.0, 3.5], [2, 2]),
            &device,
        );
        let tb = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 0.5, 2.0, 2.5], [2, 2]),
            &device,
        );
        let merged = merge_rows(vec![(&a, ta.clone()), (&b, tb)]);
        assert_eq!(
            to_host(merged),
            vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
        );
        let all = Rows::all(2, &device);
        let empty = Rows::new(vec![], 2, &device);
        let same = merge_rows(vec![(&all, ta.clone()), (&empty, ta.clone())]);
        assert_eq!(to_host(same), to_host(ta));
    }

    #[test]
    #[should_panic(expected = "do not cover")]
    fn merge_rows_refuses_a_gap() {
        let device = Device::default();
        let a = Rows::new(vec![0], 3, &device);
        let b = Rows::new(vec![2], 3, &device);
        let t = Tensor::<2>::zeros([1, 2], &device);
        merge_rows(vec![(&a, t.clone()), (&b, t)]);
    }
}

//! [`MambaLm`] as a [`TokenLm`]: token-level early exit with per-layer recurrent states.
//!
//! The cache is the stack's [`MambaState`] and the number of positions consumed. A row
//! that skips layer `l` leaves that layer's conv and SSM states as they were
//! ([`SkipRule::Unadvanced`]) or advances them from the exited residual stream without
//! computing the layer's output ([`SkipRule::Recompute`], DYNAMAX's recompute flag:
//! [`crate::MambaMixer::advance`]). [`SkipRule::Copy`] has no meaning here (a recurrent state has no
//! per-position entries to copy) and is refused.
//!
//! DYNAMAX's exit-classifier input is mamba_ssm's block pair `[hidden_states;
//! residual]`: the mixer's output and the residual stream before it is added (2d wide).

use burn::tensor::{Device, Int, Tensor};
use ponder_core::{
    LayerCall, LayerStep, SequenceLayers, SkipRule, TokenLm, linear_flops, merge_rows,
};

use crate::mixer::LayerState;
use crate::model::{MambaLm, MambaState};

/// The caches of a [`MambaLm`] driven token by token.
#[derive(Debug, Clone)]
pub struct MambaCache {
    /// Every layer's conv and SSM state.
    pub state: MambaState,
    /// Tokens consumed.
    pub len: usize,
}

fn merge_state(parts: Vec<(&ponder_core::Rows, LayerState)>) -> LayerState {
    let (conv, ssm): (Vec<_>, Vec<_>) = parts
        .into_iter()
        .map(|(rows, s)| ((rows, s.conv), (rows, s.ssm)))
        .unzip();
    LayerState {
        conv: merge_rows(conv),
        ssm: merge_rows(ssm),
    }
}

impl TokenLm for MambaLm {
    type Cache = MambaCache;

    fn n_layers(&self) -> usize {
        self.mamba.n_layers()
    }

    fn d_model(&self) -> usize {
        self.mamba.d_model
    }

    fn vocab_size(&self) -> usize {
        self.mamba.embedding.weight.dims()[0]
    }

    fn feature_size(&self) -> usize {
        2 * self.mamba.d_model
    }

    fn device(&self) -> Device {
        self.mamba.embedding.weight.device()
    }

    fn max_len(&self) -> Option<usize> {
        None
    }

    fn supports(&self, rule: SkipRule) -> bool {
        matches!(rule, SkipRule::Recompute | SkipRule::Unadvanced)
    }

    fn dynamax_penalty(&self) -> f64 {
        9.0 / 26.0
    }

    fn dynamax_skip_offset(&self) -> f64 {
        0.0
    }

    fn prefill(&self, ids: Tensor<2, Int>) -> (Tensor<2>, MambaCache) {
        let [batch, len] = ids.dims();
        let (logits, state) = self.forward_prefill(ids, None);
        let vocab = logits.dims()[2];
        let last = logits.narrow(1, len - 1, 1).reshape([batch, vocab]);
        (last, MambaCache { state, len })
    }

    fn cache_len(&self, cache: &MambaCache) -> usize {
        cache.len
    }

    fn cache_bytes(&self, cache: &MambaCache) -> usize {
        cache.state.bytes()
    }

    fn cache_shapes(&self, cache: &MambaCache) -> Vec<Vec<usize>> {
        cache.state.shapes()[0].to_vec()
    }

    fn embed(&self, ids: Tensor<1, Int>, _position: usize) -> Tensor<2> {
        let [batch] = ids.dims();
        self.mamba
            .embed(ids.reshape([batch, 1]))
            .reshape([batch, self.mamba.d_model])
    }

    fn layer(
        &self,
        layer: usize,
        call: LayerCall<'_>,
        cache: &mut MambaCache,
    ) -> Option<LayerStep> {
        let block = &self.mamba.layers[layer];
        let (run_rows, x) = call.run;
        if run_rows.is_empty() && matches!(call.skip, Some((_, _, SkipRule::Unadvanced)) | None) {
            // Every row skips this layer and leaves its state as it is: nothing to do.
            if layer + 1 == self.n_layers() {
                cache.len += 1;
            }
            return None;
        }
        let old = cache.state.layers[layer].clone();
        let mut step = None;
        let mut run_state = None;
        if !run_rows.is_empty() {
            let mut state = if run_rows.is_all() {
                old.clone()
            } else {
                old.select_rows(run_rows.tensor.clone())
            };
            let mixed = block.step_mixed(x.clone(), &mut state);
            step = Some(LayerStep {
                stream: x.clone() + mixed.clone(),
                features: Tensor::cat(vec![mixed, x], 1),
            });
            run_state = Some(state);
        }
        let skip_state = call.skip.map(|(rows, exited, rule)| {
            let mut state = old.select_rows(rows.tensor.clone());
            match rule {
                SkipRule::Recompute => block.advance(exited, &mut state),
                SkipRule::Unadvanced => {}
                SkipRule::Copy => {
                    panic!("SkipRule::Copy has no meaning for Mamba (check_rule refuses it)")
                }
            }
            (rows, state)
        });
        let mut parts = Vec::new();
        if let Some(state) = run_state {
            parts.push((run_rows, state));
        }
        if let Some((rows, state)) = skip_state {
            parts.push((rows, state));
        }
        if !parts.is_empty() {
            cache.state.layers[layer] = merge_state(parts);
        }
        if layer + 1 == self.n_layers() {
            cache.len += 1;
        }
        step
    }

    fn final_norm(&self, stream: Tensor<2>) -> Tensor<2> {
        self.mamba.norm_f.forward(stream)
    }

    fn head(&self, normed: Tensor<2>) -> Tensor<2> {
        self.logits(normed)
    }

    fn sequence_layers(&self, ids: Tensor<2, Int>) -> SequenceLayers {
        let mut x = self.mamba.embed(ids);
        let input = x.clone();
        let mut streams = Vec::with_capacity(self.n_layers());
        let mut features = Vec::with_capacity(self.n_layers());
        for block in &self.mamba.layers {
            let mixed = block.forward_mixed(x.clone());
            features.push(Tensor::cat(vec![mixed.clone(), x.clone()], 2));
            x = x + mixed;
            streams.push(x.clone());
        }
        SequenceLayers {
            input,
            streams,
            features,
        }
    }

    fn sequence_logits(&self, stream: Tensor<3>) -> Tensor<3> {
        self.logits(self.mamba.norm_f.forward(stream))
    }

    fn embed_flops(&self) -> u64 {
        0
    }

    fn layer_flops(&self, layer: usize, _position: usize) -> u64 {
        self.mamba.layers[layer].step_flops(self.mamba.d_model as u64)
    }

    fn skip_flops(&self, layer: usize, rule: SkipRule) -> u64 {
        match rule {
            SkipRule::Recompute => {
                // The RMSNorm and the state-only update (no read-out, gate or out_proj).
                let d = self.mamba.d_model as u64;
                5 * d + self.mamba.layers[layer].mixer.advance_flops(d)
            }
            SkipRule::Copy | SkipRule::Unadvanced => 0,
        }
    }

    fn head_flops(&self) -> u64 {
        let d = self.mamba.d_model as u64;
        5 * d + linear_flops(1, d, self.vocab_size() as u64)
    }
}

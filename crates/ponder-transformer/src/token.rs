//! [`DecoderLm`] as a [`TokenLm`]: token-level early exit with a KV cache.
//!
//! At each layer the current token's K/V column is written for every row of the
//! batch: rows that run the layer write their own; rows that exited before it write
//! the previous position's K/V again ([`SkipRule::Copy`]) or the K/V that the layer's
//! projections give for the exited hidden state ([`SkipRule::Recompute`], CALM's state
//! propagation and DYNAMAX's `recompute_states`). The running rows then attend over
//! their part of the cache. [`SkipRule::Unadvanced`] is refused: every position must
//! have K/V for later tokens to attend to. With rotary positions the copied key keeps
//! the previous position's rotation, while a recomputed one is rotated to the token's
//! own position.
//!
//! DYNAMAX's exit-classifier input for a transformer is the layer's output (d wide).

use burn::tensor::{Device, Int, Tensor};
use ponder_core::{LayerCall, LayerStep, SequenceLayers, SkipRule, TokenLm, merge_rows};

use crate::decoder::DecoderLm;
use crate::kv_cache::KvCache;

impl TokenLm for DecoderLm {
    type Cache = KvCache;

    fn n_layers(&self) -> usize {
        DecoderLm::n_layers(self)
    }

    fn d_model(&self) -> usize {
        DecoderLm::d_model(self)
    }

    fn vocab_size(&self) -> usize {
        DecoderLm::vocab_size(self)
    }

    fn feature_size(&self) -> usize {
        DecoderLm::d_model(self)
    }

    fn device(&self) -> Device {
        DecoderLm::device(self)
    }

    fn max_len(&self) -> Option<usize> {
        Some(DecoderLm::max_len(self))
    }

    fn supports(&self, rule: SkipRule) -> bool {
        matches!(rule, SkipRule::Copy | SkipRule::Recompute)
    }

    fn dynamax_penalty(&self) -> f64 {
        4.0 / 24.0
    }

    fn dynamax_skip_offset(&self) -> f64 {
        1.0
    }

    fn prefill(&self, ids: Tensor<2, Int>) -> (Tensor<2>, KvCache) {
        let [batch, len] = ids.dims();
        let (logits, cache) = self.forward_prefill(ids);
        let vocab = logits.dims()[2];
        (logits.narrow(1, len - 1, 1).reshape([batch, vocab]), cache)
    }

    fn cache_len(&self, cache: &KvCache) -> usize {
        cache.len()
    }

    fn cache_bytes(&self, cache: &KvCache) -> usize {
        cache.bytes()
    }

    fn cache_shapes(&self, cache: &KvCache) -> Vec<Vec<usize>> {
        let layer = &cache.layers[0];
        [&layer.k, &layer.v]
            .into_iter()
            .map(|t| t.as_ref().map(|t| t.dims().to_vec()).unwrap_or_default())
            .collect()
    }

    fn embed(&self, ids: Tensor<1, Int>, position: usize) -> Tensor<2> {
        self.embed_step(ids, position)
    }

    fn layer(&self, layer: usize, call: LayerCall<'_>, cache: &mut KvCache) -> Option<LayerStep> {
        let block = &self.layers[layer];
        // the position this token takes in this layer's cache
        let position = cache.layers[layer].len();
        let (run_rows, x) = call.run;
        let run = (!run_rows.is_empty()).then(|| block.qkv(x.clone(), position));
        let skip = call.skip.map(|(rows, exited, rule)| {
            let (k, v) = match rule {
                SkipRule::Recompute => block.kv(exited, position),
                SkipRule::Copy => {
                    let (k, v) = cache.layers[layer]
                        .last()
                        .expect("a prompt fills every layer's cache before decoding");
                    (
                        k.select(0, rows.tensor.clone()),
                        v.select(0, rows.tensor.clone()),
                    )
                }
                SkipRule::Unadvanced => panic!(
                    "SkipRule::Unadvanced has no meaning for a KV cache (check_rule refuses it)"
                ),
            };
            (rows, k, v)
        });
        let (k_col, v_col) = match (&run, &skip) {
            (Some((_, k, v)), None) => (k.clone(), v.clone()),
            (None, Some((_, k, v))) => (k.clone(), v.clone()),
            (Some((_, kr, vr)), Some((rows, ks, vs))) => (
                merge_rows(vec![(run_rows, kr.clone()), (*rows, ks.clone())]),
                merge_rows(vec![(run_rows, vr.clone()), (*rows, vs.clone())]),
            ),
            (None, None) => return None,
        };
        cache.layers[layer].append(k_col, v_col);
        let (q, _, _) = run?;
        let kv = &cache.layers[layer];
        let (k_all, v_all) = (
            kv.k.clone().expect("just appended"),
            kv.v.clone().expect("just appended"),
        );
        let (k_all, v_all) = if run_rows.is_all() {
            (k_all, v_all)
        } else {
            (
                k_all.select(0, run_rows.tensor.clone()),
                v_all.select(0, run_rows.tensor.clone()),
            )
        };
        let stream = block.attend(x, q, k_all, v_all);
        Some(LayerStep {
            features: stream.clone(),
            stream,
        })
    }

    fn final_norm(&self, stream: Tensor<2>) -> Tensor<2> {
        self.norm(stream)
    }

    fn head(&self, normed: Tensor<2>) -> Tensor<2> {
        self.logits(normed)
    }

    fn sequence_layers(&self, ids: Tensor<2, Int>) -> SequenceLayers {
        let input = self.embed(ids.clone(), 0);
        let streams = self.hidden_states(ids);
        SequenceLayers {
            input,
            features: streams.clone(),
            streams,
        }
    }

    fn sequence_logits(&self, stream: Tensor<3>) -> Tensor<3> {
        self.logits(self.norm(stream))
    }

    fn embed_flops(&self) -> u64 {
        DecoderLm::embed_flops(self)
    }

    fn layer_flops(&self, layer: usize, position: usize) -> u64 {
        self.layers[layer].step_flops(position as u64)
    }

    fn skip_flops(&self, layer: usize, rule: SkipRule) -> u64 {
        match rule {
            SkipRule::Recompute => self.layers[layer].kv_flops(),
            SkipRule::Copy | SkipRule::Unadvanced => 0,
        }
    }

    fn head_flops(&self) -> u64 {
        DecoderLm::head_flops(self)
    }
}

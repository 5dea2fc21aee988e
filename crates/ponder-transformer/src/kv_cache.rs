//! The key/value cache of a [`DecoderLm`](crate::DecoderLm): per layer ([`LayerKv`]) and
//! for the whole stack ([`KvCache`]).
//!
//! A layer-wise caller may fill layers at different times (a token that exits early
//! leaves the layers it skipped for a skip rule to fill), so each layer's cache knows its
//! own length, and the stack's length is the longest.

use burn::tensor::{Int, Tensor};

/// The keys and values one layer has cached, for one batch of rows.
///
/// Both are `None` before the first position; otherwise both have shape
/// `[batch_size, n_heads, len, d_head]`, oldest position first.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    /// Keys `[batch_size, n_heads, len, d_head]`.
    pub k: Option<Tensor<4>>,
    /// Values `[batch_size, n_heads, len, d_head]`.
    pub v: Option<Tensor<4>>,
}

impl LayerKv {
    /// The cache before the first token: no position held.
    pub fn initial() -> Self {
        Self::default()
    }

    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of rows, `None` before the first position.
    pub fn batch_size(&self) -> Option<usize> {
        self.k.as_ref().map(|k| k.dims()[0])
    }

    /// Appends positions (usually one) on the position axis.
    ///
    /// # Shapes
    /// - k, v: `[batch_size, n_heads, new_len, d_head]`
    ///
    /// # Panics
    /// If `k` and `v` differ in shape, or their batch size, heads or head width differ
    /// from what the cache holds.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) {
        let (k_dims, v_dims) = (k.dims(), v.dims());
        assert_eq!(k_dims, v_dims, "LayerKv::append: k and v differ in shape");
        let (k, v) = match (self.k.take(), self.v.take()) {
            (Some(old_k), Some(old_v)) => {
                let old = old_k.dims();
                assert!(
                    old[0] == k_dims[0] && old[1] == k_dims[1] && old[3] == k_dims[3],
                    "LayerKv::append: new keys {k_dims:?} do not extend cached {old:?}"
                );
                (
                    Tensor::cat(vec![old_k, k], 2),
                    Tensor::cat(vec![old_v, v], 2),
                )
            }
            _ => (k, v),
        };
        self.k = Some(k);
        self.v = Some(v);
    }

    /// Keeps the given rows (indices into the batch axis).
    pub fn select_rows(&self, rows: Tensor<1, Int>) -> LayerKv {
        LayerKv {
            k: self.k.clone().map(|k| k.select(0, rows.clone())),
            v: self.v.clone().map(|v| v.select(0, rows)),
        }
    }

    /// The last position's key and value, `[batch_size, n_heads, 1, d_head]` each;
    /// `None` when empty.
    pub fn last(&self) -> Option<(Tensor<4>, Tensor<4>)> {
        let len = self.len();
        match (&self.k, &self.v) {
            (Some(k), Some(v)) if len > 0 => Some((
                k.clone().narrow(2, len - 1, 1),
                v.clone().narrow(2, len - 1, 1),
            )),
            _ => None,
        }
    }

    /// Number of values held (keys and values).
    pub fn numel(&self) -> usize {
        let count = |t: &Option<Tensor<4>>| t.as_ref().map_or(0, |t| t.shape().num_elements());
        count(&self.k) + count(&self.v)
    }
}

/// The caches of every layer of a [`DecoderLm`](crate::DecoderLm).
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One cache per block, in order.
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    /// The cache before the first token: `n_layers` empty layer caches.
    pub fn initial(n_layers: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| LayerKv::initial()).collect(),
        }
    }

    /// Number of positions held: the most any layer holds (all layers hold the same
    /// number after [`DecoderLm::forward_prefill`](crate::DecoderLm::forward_prefill) and [`DecoderLm::step`](crate::DecoderLm::step); a
    /// layer-wise caller may leave some behind until it fills them).
    pub fn len(&self) -> usize {
        self.layers.iter().map(LayerKv::len).max().unwrap_or(0)
    }

    /// Whether no layer holds a position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of rows, `None` while every layer is empty.
    pub fn batch_size(&self) -> Option<usize> {
        self.layers.iter().find_map(LayerKv::batch_size)
    }

    /// Number of values held.
    pub fn numel(&self) -> usize {
        self.layers.iter().map(LayerKv::numel).sum()
    }

    /// Bytes held (f32).
    pub fn bytes(&self) -> usize {
        4 * self.numel()
    }

    /// Keeps the given rows of every layer.
    pub fn select_rows(&self, rows: Tensor<1, Int>) -> KvCache {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|l| l.select_rows(rows.clone()))
                .collect(),
        }
    }
}

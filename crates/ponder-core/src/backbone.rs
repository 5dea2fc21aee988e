//! The contracts between backbones, exit heads and the runner.

use burn::tensor::{Device, Int, Tensor};

/// A backbone that can be advanced one layer at a time, on any subset of rows.
///
/// The runner calls [`embed`](Self::embed) once, then
/// [`forward_layer`](Self::forward_layer) for `layer_idx = 0..n_layers()`, asking for
/// [`features`](Self::features) after each layer and dropping exited rows with
/// [`select_rows`](Self::select_rows) in between. Running all layers this way must give
/// exactly the backbone's full forward pass.
pub trait LayerwiseBackbone {
    /// What the backbone consumes (token ids with a mask, images, …).
    type Input;
    /// Everything layer `i` needs from layer `i - 1` (hidden states, masks, …).
    type Hidden: Clone;

    /// Number of layers (ALBERT: the number of applications of the shared layer).
    fn n_layers(&self) -> usize;
    /// Embeds the input into the hidden state that layer 0 consumes.
    fn embed(&self, input: Self::Input) -> Self::Hidden;
    /// Applies layer `layer_idx` (0-based).
    fn forward_layer(&self, layer_idx: usize, hidden: Self::Hidden) -> Self::Hidden;
    /// Per-row features read by the exit heads after a layer.
    ///
    /// # Shapes
    /// - output: `[batch_size, d_features]`
    fn features(&self, hidden: &Self::Hidden) -> Tensor<2>;
    /// Keeps only the given rows (in the given order) of the hidden state.
    fn select_rows(&self, hidden: Self::Hidden, rows: Tensor<1, Int>) -> Self::Hidden;
    /// Number of rows in the hidden state.
    fn batch_size(&self, hidden: &Self::Hidden) -> usize;
    /// FLOPs of [`embed`](Self::embed) for one row of this hidden state.
    fn embed_flops(&self, hidden: &Self::Hidden) -> u64;
    /// FLOPs of layer `layer_idx` for one row of a hidden state of this shape (the runner
    /// also asks it on the embedded state, for the full-depth count).
    fn layer_flops(&self, layer_idx: usize, hidden: &Self::Hidden) -> u64;
    /// FLOPs of [`features`](Self::features) for one row.
    fn features_flops(&self, hidden: &Self::Hidden) -> u64;
    /// The device the backbone's weights live on.
    fn device(&self) -> Device;
}

/// Exit heads: turn features after a layer into logits and, optionally, a halting
/// probability, keeping any per-row state they need (e.g. the previous layer's
/// features for PALBERT's Lambda layer) in a caller-owned [`Self::State`].
pub trait ExitHeads {
    /// Per-row state carried from layer to layer (use `()` when none is needed).
    type State;

    /// Number of output classes (1 for regression).
    fn n_classes(&self) -> usize;
    /// A fresh state for `batch_size` rows.
    fn start(&self, batch_size: usize, device: &Device) -> Self::State;
    /// Logits of layer `layer_idx` and the optional halting probability.
    ///
    /// # Shapes
    /// - features: `[batch_size, d_features]`
    /// - output: logits `[batch_size, n_classes]`, halting `[batch_size]`
    fn forward(
        &self,
        layer_idx: usize,
        features: Tensor<2>,
        state: &mut Self::State,
    ) -> (Tensor<2>, Option<Tensor<1>>);
    /// Keeps only the given rows of the state.
    fn select_rows(&self, state: Self::State, rows: Tensor<1, Int>) -> Self::State;
    /// FLOPs of [`forward`](Self::forward) at `layer_idx` for one row.
    fn flops(&self, layer_idx: usize) -> u64;
}

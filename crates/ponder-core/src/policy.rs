//! The exit-policy contract and the signals a policy sees.

/// What the heads produced after one layer, for the rows still in the batch, copied to
/// the host (one device-to-host transfer per layer).
#[derive(Debug, Clone, Copy)]
pub struct ExitSignals<'a> {
    /// The layer that just ran, 0-based.
    pub layer_idx: usize,
    /// Number of layers of the backbone.
    pub n_layers: usize,
    /// Number of classes (columns of `logits`).
    pub n_classes: usize,
    /// Logits of the active rows, row-major `[rows, n_classes]`.
    pub logits: &'a [f32],
    /// The heads' per-row exit signal, if they produce one: the halting probability λ
    /// (PonderNet, PALBERT) or the gate value g (JEI-DNN; none at the final exit).
    pub halting: Option<&'a [f32]>,
    /// The true class of each active row, when the caller supplied targets (used only
    /// by analysis policies such as the oracle).
    pub targets: Option<&'a [usize]>,
}

impl<'a> ExitSignals<'a> {
    /// Signals for `logits` (row-major, `n_classes` columns) without halting or targets.
    pub fn new(layer_idx: usize, n_layers: usize, n_classes: usize, logits: &'a [f32]) -> Self {
        assert!(n_classes > 0, "ExitSignals: n_classes must be positive");
        assert_eq!(
            logits.len() % n_classes,
            0,
            "ExitSignals: {} logits is not a multiple of n_classes = {n_classes}",
            logits.len()
        );
        Self {
            layer_idx,
            n_layers,
            n_classes,
            logits,
            halting: None,
            targets: None,
        }
    }

    /// Adds per-row halting probabilities.
    pub fn with_halting(mut self, halting: &'a [f32]) -> Self {
        self.halting = Some(halting);
        self
    }

    /// Adds per-row targets.
    pub fn with_targets(mut self, targets: &'a [usize]) -> Self {
        self.targets = Some(targets);
        self
    }

    /// Number of active rows.
    pub fn rows(&self) -> usize {
        self.logits.len() / self.n_classes
    }

    /// The logits of one row.
    pub fn row(&self, row: usize) -> &'a [f32] {
        &self.logits[row * self.n_classes..(row + 1) * self.n_classes]
    }

    /// Whether this is the last layer (where every row exits).
    pub fn is_last_layer(&self) -> bool {
        self.layer_idx + 1 == self.n_layers
    }

    /// Index of the largest logit of a row (the first one on ties).
    pub fn argmax(&self, row: usize) -> usize {
        argmax(self.row(row))
    }

    /// Softmax probabilities of a row.
    pub fn probs(&self, row: usize) -> Vec<f32> {
        softmax(self.row(row))
    }
}

/// Index of the largest value (the first one on ties; NaN never wins).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if !v.is_nan() && (values[best].is_nan() || v > values[best]) {
            best = i;
        }
    }
    best
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Turns what one layer produced into a per-row decision (exit now or go deeper),
/// keeping per-row state (a patience counter, the previous prediction, a cumulative
/// halting probability…) in a caller-owned carry.
///
/// The runner always exits every remaining row at the last layer, whatever the policy
/// says, and drops exited rows from the carry with [`retain_rows`](Self::retain_rows).
pub trait ExitPolicy {
    /// Per-row state carried from layer to layer.
    type Carry;

    /// A short name for tables and logs, with the policy's parameter (e.g. `patience=3`).
    fn name(&self) -> String;
    /// A fresh carry for `batch_size` rows.
    fn start(&self, batch_size: usize) -> Self::Carry;
    /// `true` for each active row that exits at this layer.
    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut Self::Carry) -> Vec<bool>;
    /// Keeps the carry of the given active rows, in the given order.
    fn retain_rows(&self, carry: Self::Carry, rows: &[usize]) -> Self::Carry;

    /// Whether the policy makes the output of exiting rows itself with
    /// [`exit_output`](Self::exit_output) (e.g. PonderNet's expectation over the layers
    /// run so far) instead of reporting the exit layer's logits. When it does, the
    /// runner also calls [`decide`](Self::decide) at the last layer (ignoring its
    /// answer: every row exits there) so the carry sees every layer. Default: `false`.
    fn mixes_outputs(&self) -> bool {
        false
    }

    /// The outputs, row-major `[rows.len(), n_classes]` (logits or log-probabilities:
    /// anything whose softmax is the prediction), of the active rows `rows` that exit
    /// after this layer; called after [`decide`](Self::decide), only when
    /// [`mixes_outputs`](Self::mixes_outputs). The default is the layer's own logits.
    fn exit_output(
        &self,
        signals: &ExitSignals<'_>,
        _carry: &Self::Carry,
        rows: &[usize],
    ) -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| signals.row(r).iter().copied())
            .collect()
    }
}

/// Keeps `rows` (in order) of a per-row vector: the usual `retain_rows` of a carry.
pub fn retain<T: Clone>(values: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&r| values[r].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_is_stable() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn argmax_takes_first_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 2.0]), 1);
    }

    #[test]
    fn signals_rows() {
        let logits = [0.0, 1.0, 2.0, 0.5, 0.1, 0.2];
        let s = ExitSignals::new(0, 3, 2, &logits);
        assert_eq!(s.rows(), 3);
        assert_eq!(s.argmax(1), 0);
        assert_eq!(s.row(2), &[0.1, 0.2]);
    }
}

//! The batched adaptive runner: per-row exits with row compaction.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::backbone::{ExitHeads, LayerwiseBackbone};
use crate::policy::{ExitPolicy, ExitSignals};

/// What adaptive inference returns, in the original row order.
#[derive(Debug, Clone)]
pub struct AdaptiveOutput {
    /// The logits of the layer each row exited at.
    ///
    /// # Shapes
    /// `[batch_size, n_classes]`
    pub logits: Tensor<2>,
    /// The layer each row exited at, 1-based (`1..=n_layers`).
    pub exit_layer: Vec<usize>,
    /// FLOPs actually spent on each row: embedding, the layers it went through, and the
    /// heads evaluated on it.
    pub flops: Vec<u64>,
    /// FLOPs of one row of this batch through every layer and the final head only: the
    /// full-depth model a speed-up is measured against.
    pub full_depth_flops: u64,
}

/// The heads' outputs at every layer for every row (training and analysis).
#[derive(Debug, Clone)]
pub struct AllLayersOutput {
    /// `logits[l]`: the logits after layer `l` (0-based), `[batch_size, n_classes]`.
    pub logits: Vec<Tensor<2>>,
    /// `halting[l]`: the halting probabilities after layer `l`, `[batch_size]`, if any.
    pub halting: Vec<Option<Tensor<1>>>,
    /// `features[l]`: the features the heads read after layer `l`, `[batch_size, d]`.
    pub features: Vec<Tensor<2>>,
}

/// A 1-D index tensor of `rows`.
pub fn index_tensor(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(data, [rows.len()]), device)
}

/// Copies a tensor to the host as `f32` (this syncs the device).
///
/// # Panics
/// If the device fails to read the tensor back.
pub fn to_host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .try_into_vec_as::<f32>()
        .unwrap_or_else(|e| panic!("reading a tensor back to the host failed: {e}"))
}

/// FLOPs of one row for layer `layer_idx`, the features after it and the heads there:
/// what the runner charges every row still in the batch at that layer.
pub fn step_flops<B, H>(backbone: &B, heads: &H, layer_idx: usize, hidden: &B::Hidden) -> u64
where
    B: LayerwiseBackbone,
    H: ExitHeads,
{
    backbone.layer_flops(layer_idx, hidden)
        + backbone.features_flops(hidden)
        + heads.flops(layer_idx)
}

/// The FLOPs one row of (the shape of) `hidden` has spent when it exits after each layer,
/// embedding included: what [`run_adaptive`] charges a row that exits there.
pub fn exit_flops<B, H>(backbone: &B, heads: &H, hidden: &B::Hidden) -> Vec<u64>
where
    B: LayerwiseBackbone,
    H: ExitHeads,
{
    let mut spent = backbone.embed_flops(hidden);
    (0..backbone.n_layers())
        .map(|l| {
            spent += step_flops(backbone, heads, l, hidden);
            spent
        })
        .collect()
}

/// Runs every layer on every row and returns each layer's head outputs: the training
/// forward pass of a multi-exit model (no row ever leaves the batch).
pub fn forward_all_layers<B, H>(backbone: &B, heads: &H, input: B::Input) -> AllLayersOutput
where
    B: LayerwiseBackbone,
    H: ExitHeads,
{
    let mut hidden = backbone.embed(input);
    let batch_size = backbone.batch_size(&hidden);
    let mut state = heads.start(batch_size, &backbone.device());
    let n_layers = backbone.n_layers();
    let mut out = AllLayersOutput {
        logits: Vec::with_capacity(n_layers),
        halting: Vec::with_capacity(n_layers),
        features: Vec::with_capacity(n_layers),
    };
    for layer_idx in 0..n_layers {
        hidden = backbone.forward_layer(layer_idx, hidden);
        let features = backbone.features(&hidden);
        let (logits, halting) = heads.forward(layer_idx, features.clone(), &mut state);
        out.logits.push(logits);
        out.halting.push(halting);
        out.features.push(features);
    }
    out
}

/// Adaptive inference: each row exits on its own.
///
/// After each layer the heads run on the rows still in the batch, their outputs are
/// copied to the host, and the policy decides which rows exit. Exiting rows have their
/// logits recorded; the others are gathered into a smaller batch (hidden state, head
/// state and policy carry alike) before the next layer, so skipped layers are never
/// computed. At the last layer every remaining row exits. `targets`, if given, are
/// passed to the policy (for analysis policies such as the oracle).
///
/// # Panics
/// If `targets` does not have one entry per row.
pub fn run_adaptive<B, H, P>(
    backbone: &B,
    heads: &H,
    policy: &P,
    input: B::Input,
    targets: Option<&[usize]>,
) -> AdaptiveOutput
where
    B: LayerwiseBackbone,
    H: ExitHeads,
    P: ExitPolicy,
{
    let device = backbone.device();
    let n_layers = backbone.n_layers();
    let n_classes = heads.n_classes();
    let mut hidden = backbone.embed(input);
    let batch_size = backbone.batch_size(&hidden);
    if let Some(t) = targets {
        assert_eq!(
            t.len(),
            batch_size,
            "run_adaptive: {} targets for {batch_size} rows",
            t.len()
        );
    }

    let embed_flops = backbone.embed_flops(&hidden);
    // FLOP counts depend on the state's shape only, which the layers keep
    let full_depth_flops = embed_flops
        + (0..n_layers)
            .map(|l| backbone.layer_flops(l, &hidden))
            .sum::<u64>()
        + backbone.features_flops(&hidden)
        + heads.flops(n_layers - 1);
    let mut flops = vec![embed_flops; batch_size];
    let mut exit_layer = vec![0usize; batch_size];
    // original row index of each active row
    let mut active: Vec<usize> = (0..batch_size).collect();
    let mut active_targets: Option<Vec<usize>> = targets.map(|t| t.to_vec());
    let mut head_state = heads.start(batch_size, &device);
    let mut carry = policy.start(batch_size);
    // (original rows, their logits) for each group of rows that exited together
    let mut exited: Vec<(Vec<usize>, Tensor<2>)> = Vec::new();

    for layer_idx in 0..n_layers {
        hidden = backbone.forward_layer(layer_idx, hidden);
        let step_flops = step_flops(backbone, heads, layer_idx, &hidden);
        for &row in &active {
            flops[row] += step_flops;
        }
        let features = backbone.features(&hidden);
        let (logits, halting) = heads.forward(layer_idx, features, &mut head_state);

        let last = layer_idx + 1 == n_layers;
        if last && !policy.mixes_outputs() {
            for &row in &active {
                exit_layer[row] = n_layers;
            }
            exited.push((std::mem::take(&mut active), logits));
            break;
        }

        let logits_host = to_host(logits.clone());
        let halting_host = halting.map(to_host);
        let mut signals = ExitSignals::new(layer_idx, n_layers, n_classes, &logits_host);
        if let Some(h) = &halting_host {
            signals = signals.with_halting(h);
        }
        if let Some(t) = &active_targets {
            signals = signals.with_targets(t);
        }
        let mut decision = policy.decide(&signals, &mut carry);
        assert_eq!(
            decision.len(),
            active.len(),
            "policy {} returned {} decisions for {} rows",
            policy.name(),
            decision.len(),
            active.len()
        );
        if last {
            decision = vec![true; active.len()];
        }

        let (exit_local, stay_local): (Vec<usize>, Vec<usize>) =
            (0..active.len()).partition(|&i| decision[i]);
        if exit_local.is_empty() {
            continue;
        }
        let exit_rows: Vec<usize> = exit_local.iter().map(|&i| active[i]).collect();
        for &row in &exit_rows {
            exit_layer[row] = layer_idx + 1;
        }
        let exit_logits = if policy.mixes_outputs() {
            let values = policy.exit_output(&signals, &carry, &exit_local);
            assert_eq!(
                values.len(),
                exit_local.len() * n_classes,
                "policy {} made {} outputs for {} rows of {n_classes} classes",
                policy.name(),
                values.len(),
                exit_local.len()
            );
            Tensor::from_data(
                TensorData::new(values, [exit_local.len(), n_classes]),
                &device,
            )
        } else if stay_local.is_empty() {
            logits
        } else {
            logits.select(0, index_tensor(&exit_local, &device))
        };
        exited.push((exit_rows, exit_logits));
        if stay_local.is_empty() {
            break;
        }

        let keep = index_tensor(&stay_local, &device);
        hidden = backbone.select_rows(hidden, keep.clone());
        head_state = heads.select_rows(head_state, keep);
        carry = policy.retain_rows(carry, &stay_local);
        active = stay_local.iter().map(|&i| active[i]).collect();
        active_targets = active_targets.map(|t| stay_local.iter().map(|&i| t[i]).collect());
    }
    debug_assert!(exit_layer.iter().all(|&l| l > 0));

    // Put the rows back in their original order.
    let mut order = Vec::with_capacity(batch_size);
    let mut pieces = Vec::with_capacity(exited.len());
    for (rows, logits) in exited {
        order.extend(rows);
        pieces.push(logits);
    }
    let logits = if pieces.len() == 1 {
        pieces.pop().unwrap_or_else(|| unreachable!())
    } else {
        Tensor::cat(pieces, 0)
    };
    let is_identity = order.iter().enumerate().all(|(i, &r)| i == r);
    let logits = if is_identity {
        logits
    } else {
        let mut inverse = vec![0usize; batch_size];
        for (position, &row) in order.iter().enumerate() {
            inverse[row] = position;
        }
        logits.select(0, index_tensor(&inverse, &device))
    };

    AdaptiveOutput {
        logits,
        exit_layer,
        flops,
        full_depth_flops,
    }
}

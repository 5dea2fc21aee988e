//! PonderNet and PALBERT end to end: gradients reach the halting head (checked against
//! finite differences), the halting policies give the same answers through the batched
//! runner as computed by hand from a full forward pass (Q-exit, expectation, and
//! sampling's reproducibility), mixed-exit batches equal rows run alone with PALBERT's
//! Lambda layer (whose state is the previous layer's features), and PALBERT trains.

use std::sync::{Mutex, MutexGuard};

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_core::{ExitPolicy, ExitSignals, softmax, to_host};
use ponder_exits::ponder::{LastLayer, exit_distribution};
use ponder_exits::{Expectation, HaltingHeadConfig, PonderSample, QExit};
use ponder_models::{
    MultiExitClassifier, MultiExitConfig, ParityModel, ParityModelConfig, ParityTrainConfig,
    parity_tensors,
};
use ponder_transformer::{EncoderConfig, EncoderInput};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The parity loss of `model` on a fixed batch, as an `f64`.
fn parity_loss(
    model: &ParityModel,
    x: Tensor<2>,
    y: Tensor<1, Int>,
    config: &ParityTrainConfig,
) -> Tensor<1> {
    let (logits, lambdas) = model.forward_all(x);
    config.ponder.loss(logits, &lambdas, y).total
}

#[test]
fn gradients_reach_the_halting_head_and_match_finite_differences() {
    let _guard = serial();
    let device = Device::flex().autodiff();
    device.seed(3);
    let model = ParityModelConfig::new(4)
        .with_n_hidden(6)
        .with_max_steps(4)
        .init(&device);
    let set = ponder_data::parity_set(16, 4, 1..=4, 5).unwrap();
    let rows: Vec<usize> = (0..16).collect();
    let (x, y) = parity_tensors(&set, &rows, &device);
    // a KL weight large enough that both terms matter
    let mut config = ParityTrainConfig::default();
    config.ponder.beta = 0.5;

    let loss = parity_loss(&model, x.clone(), y.clone(), &config);
    let grads = loss.backward();
    let bias = model.halting.output.bias.as_ref().unwrap().val();
    let analytic = to_host(
        bias.grad(&grads)
            .expect("the λ head's bias gets a gradient"),
    )[0] as f64;
    let weight_grad = to_host(
        model
            .halting
            .output
            .weight
            .val()
            .grad(&grads)
            .expect("the λ head's weight gets a gradient"),
    );
    assert!(weight_grad.iter().any(|g| g.abs() > 0.0));

    // central difference on the bias (in f64 arithmetic around f32 losses)
    let h = 1e-2f32;
    let shifted = |delta: f32| -> f64 {
        let mut m = model.clone();
        let b = m.halting.output.bias.take().unwrap().val().inner();
        m.halting.output.bias = Some(Param::from_tensor(b.add_scalar(delta)));
        let m = m.valid();
        let x = x.clone().inner();
        let y = y.clone().inner();
        parity_loss(&m, x, y, &config).into_scalar::<f32>() as f64
    };
    let numeric = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
    assert!(analytic.abs() > 1e-4, "the gradient is ~0: {analytic}");
    assert!(
        (analytic - numeric).abs() <= 0.02 * numeric.abs().max(1e-3),
        "autodiff {analytic} vs finite differences {numeric}"
    );
}

fn palbert_model(seed: u64, cat_previous: bool) -> MultiExitClassifier {
    let device = Device::flex();
    device.seed(seed);
    let encoder = EncoderConfig::tiny()
        .with_dropout(0.0)
        .with_share_layers(true)
        .with_d_embed(Some(16));
    let halting = if cat_previous {
        HaltingHeadConfig::palbert(encoder.d_model).with_dropout(0.0)
    } else {
        HaltingHeadConfig::new(encoder.d_model)
    };
    MultiExitConfig::new(encoder, 3)
        .with_shared_head(true)
        .with_head_dropout(0.0)
        .with_halting(Some(halting))
        .init(&device)
        .valid()
}

/// Token ids of rows with different lengths, right-padded with id 0, and the mask.
fn text_input(lengths: &[usize], offset: usize) -> EncoderInput {
    let device = Device::flex();
    let seq_len = *lengths.iter().max().unwrap();
    let mut ids = Vec::new();
    let mut pad = Vec::new();
    for (r, &len) in lengths.iter().enumerate() {
        for t in 0..seq_len {
            ids.push(if t < len {
                (1 + (offset + r * 7 + t * 13) % 99) as i64
            } else {
                0
            });
            pad.push(t >= len);
        }
    }
    let b = lengths.len();
    EncoderInput::Tokens {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, seq_len]), &device),
        type_ids: None,
        mask_pad: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(pad, [b, seq_len]),
            &device,
        )),
    }
}

/// Every layer's logits and λ of every row, on the host: `(logits[l][r], lambda[l][r])`.
fn all_layers(
    model: &MultiExitClassifier,
    input: EncoderInput,
) -> (Vec<Vec<Vec<f32>>>, Vec<Vec<f32>>) {
    let out = model.forward_all(input);
    let c = model.heads.n_classes;
    let logits = out
        .logits
        .into_iter()
        .map(|l| to_host(l).chunks(c).map(<[f32]>::to_vec).collect())
        .collect();
    let lambdas = out
        .halting
        .into_iter()
        .map(|h| to_host(h.unwrap()))
        .collect();
    (logits, lambdas)
}

/// The exit layer (1-based) of each row under `policy`, decided on host copies of a
/// full forward pass, one row at a time.
fn host_exits<P: ExitPolicy>(
    policy: &P,
    logits: &[Vec<Vec<f32>>],
    lambdas: &[Vec<f32>],
) -> Vec<usize> {
    let n_layers = logits.len();
    (0..lambdas[0].len())
        .map(|r| {
            let mut carry = policy.start(1);
            for l in 0..n_layers {
                if l + 1 == n_layers {
                    return n_layers;
                }
                let lam = [lambdas[l][r]];
                let s = ExitSignals::new(l, n_layers, logits[l][r].len(), &logits[l][r])
                    .with_halting(&lam);
                if policy.decide(&s, &mut carry)[0] {
                    return l + 1;
                }
            }
            n_layers
        })
        .collect()
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn q_exit_through_the_runner_matches_the_full_pass_and_rows_run_alone() {
    let _guard = serial();
    for cat_previous in [true, false] {
        let model = palbert_model(11, cat_previous);
        let lengths = [5, 9, 3, 12, 7, 12, 2, 8];
        let (logits, lambdas) = all_layers(&model, text_input(&lengths, 0));
        // a quantile that splits the rows across several exit layers
        let n_layers = logits.len();
        let q = (1..40)
            .map(|k| k as f64 / 40.0)
            .find(|&q| {
                let e = host_exits(&QExit::new(q).unwrap(), &logits, &lambdas);
                let mut distinct = e.clone();
                distinct.sort_unstable();
                distinct.dedup();
                distinct.len() >= 2 && e.iter().any(|&l| l < n_layers)
            })
            .expect("some q spreads the exits");
        let policy = QExit::new(q).unwrap();
        let expected = host_exits(&policy, &logits, &lambdas);
        let out = model.adaptive(text_input(&lengths, 0), &policy, None);
        assert_eq!(out.exit_layer, expected, "q = {q}");
        let got = to_host(out.logits);
        for (r, &e) in expected.iter().enumerate() {
            assert!(
                close(&got[r * 3..r * 3 + 3], &logits[e - 1][r], 1e-5),
                "row {r}"
            );
            // the row alone exits at the same layer with the same logits
            let alone = model.adaptive(text_input(&lengths[r..=r], r * 7), &policy, None);
            let alone_full = all_layers(&model, text_input(&[lengths[r]], r * 7));
            assert_eq!(
                alone.exit_layer[0],
                host_exits(&policy, &alone_full.0, &alone_full.1)[0]
            );
        }
    }
}

#[test]
fn mixed_batch_rows_equal_rows_run_alone_with_the_lambda_layer() {
    let _guard = serial();
    let model = palbert_model(5, true);
    let lengths = [4, 10, 6, 10, 3];
    // exits planned by a Q-exit whose decisions depend on every earlier λ
    let (logits, lambdas) = all_layers(&model, text_input(&lengths, 0));
    let q = (1..40)
        .map(|k| k as f64 / 40.0)
        .find(|&q| {
            let mut e = host_exits(&QExit::new(q).unwrap(), &logits, &lambdas);
            e.sort_unstable();
            e.dedup();
            e.len() >= 2
        })
        .expect("some q splits the rows");
    let policy = QExit::new(q).unwrap();
    let batch = model.adaptive(text_input(&lengths, 0), &policy, None);
    let batch_logits = to_host(batch.logits);
    for r in 0..lengths.len() {
        // the same row, padded to the batch's length so the sequence is identical
        let device = Device::flex();
        let seq_len = 10;
        let EncoderInput::Tokens { ids, mask_pad, .. } = text_input(&lengths, 0) else {
            unreachable!()
        };
        let rows = ponder_core::index_tensor(&[r], &device);
        let alone_input = EncoderInput::Tokens {
            ids: ids.select(0, rows.clone()),
            type_ids: None,
            mask_pad: mask_pad.map(|m| m.select(0, rows)),
        };
        let alone = model.adaptive(alone_input, &policy, None);
        assert_eq!(
            alone.exit_layer[0], batch.exit_layer[r],
            "row {r} (seq {seq_len})"
        );
        assert!(
            close(
                &to_host(alone.logits),
                &batch_logits[r * 3..r * 3 + 3],
                1e-5
            ),
            "row {r}"
        );
    }
}

#[test]
fn expectation_through_the_runner_is_the_corrected_mixture() {
    let _guard = serial();
    let model = palbert_model(2, true);
    let lengths = [6, 3, 9];
    let (logits, lambdas) = all_layers(&model, text_input(&lengths, 0));
    let device = Device::flex();
    let lambda_tensors: Vec<Tensor<1>> = lambdas
        .iter()
        .map(|l| Tensor::from_data(TensorData::new(l.clone(), [l.len()]), &device))
        .collect();
    let p: Vec<Vec<f32>> = exit_distribution(&lambda_tensors, LastLayer::ForceHalt)
        .into_iter()
        .map(to_host)
        .collect();
    let out = model.adaptive(
        text_input(&lengths, 0),
        &Expectation::new(0.0).unwrap(),
        None,
    );
    assert_eq!(out.exit_layer, vec![logits.len(); 3]);
    let got = to_host(out.logits);
    for r in 0..3 {
        let mut mix = [0f64; 3];
        for (l, layer) in logits.iter().enumerate() {
            for (m, q) in mix.iter_mut().zip(softmax(&layer[r])) {
                *m += p[l][r] as f64 * q as f64;
            }
        }
        let got_probs = softmax(&got[r * 3..r * 3 + 3]);
        for k in 0..3 {
            assert!(
                (got_probs[k] as f64 - mix[k]).abs() < 1e-5,
                "row {r}: {got_probs:?} vs {mix:?}"
            );
        }
        assert!((mix.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn sampling_through_the_runner_is_reproducible_and_follows_lambda() {
    let _guard = serial();
    let model = palbert_model(9, false);
    let lengths = vec![6usize; 64];
    let run = |seed: u64| {
        model
            .adaptive(text_input(&lengths, 0), &PonderSample::new(seed), None)
            .exit_layer
    };
    assert_eq!(run(4), run(4));
    let seeds: Vec<Vec<usize>> = (0..6).map(run).collect();
    assert!(
        seeds.windows(2).any(|w| w[0] != w[1]),
        "different seeds never differ"
    );
}

#[test]
fn palbert_trains_and_a_method_without_halting_head_is_refused() {
    use ponder_models::{
        Batch, ClassificationSource, Method, TrainConfig, fit, layer_accuracies, make_batches,
    };

    /// Three classes told apart by their first token.
    struct Tokens(Vec<(Vec<i64>, usize)>);
    impl ClassificationSource for Tokens {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn n_classes(&self) -> usize {
            3
        }
        fn targets(&self) -> Vec<usize> {
            self.0.iter().map(|e| e.1).collect()
        }
        fn batch(&self, positions: &[usize], device: &Device) -> Batch {
            let len = 6;
            let ids: Vec<i64> = positions
                .iter()
                .flat_map(|&p| self.0[p].0.clone())
                .collect();
            Batch {
                input: EncoderInput::Tokens {
                    ids: Tensor::from_data(TensorData::new(ids, [positions.len(), len]), device),
                    type_ids: None,
                    mask_pad: None,
                },
                targets: positions.iter().map(|&p| self.0[p].1).collect(),
            }
        }
    }
    let make = |n: usize, salt: usize| {
        Tokens(
            (0..n)
                .map(|i| {
                    let class = i % 3;
                    let ids = (0..6)
                        .map(|t| {
                            if t == 0 {
                                10 + class as i64
                            } else {
                                (20 + (i * 31 + t * 17 + salt) % 70) as i64
                            }
                        })
                        .collect();
                    (ids, class)
                })
                .collect(),
        )
    };
    let (train, valid) = (make(96, 0), make(48, 5));
    let _guard = serial();
    let device = Device::flex().autodiff();
    device.seed(1);
    let encoder = EncoderConfig::tiny()
        .with_dropout(0.0)
        .with_share_layers(true)
        .with_d_embed(Some(16));
    let model = MultiExitConfig::new(encoder.clone(), 3)
        .with_shared_head(true)
        .with_halting(Some(HaltingHeadConfig::palbert(encoder.d_model)))
        .init(&device);
    let config = TrainConfig {
        method: Method::Palbert,
        epochs: 4,
        batch_size: 16,
        learning_rate: 5e-3,
        ..TrainConfig::default()
    };
    let out = fit(
        model,
        &train,
        &valid,
        &config,
        &device,
        None,
        false,
        &mut (),
    )
    .unwrap();
    let history = &out.state.history;
    let last = history.last().unwrap();
    assert!(last.train_loss < history[0].train_loss, "{history:#?}");
    assert!(
        last.valid_metric > 0.8,
        "accuracy under the exit distribution: {history:#?}"
    );
    let layers = layer_accuracies(&out.model, &make_batches(&valid, 48, &Device::flex()));
    assert!(
        layers
            .expected_depth
            .is_some_and(|d| (1.0..=encoder.n_layers as f64).contains(&d))
    );

    // PALBERT on a model without a halting head, or PABEE on one with it: a config error
    let plain = MultiExitConfig::new(encoder.clone(), 3).init(&device);
    let err = fit(
        plain,
        &train,
        &valid,
        &config,
        &device,
        None,
        false,
        &mut (),
    )
    .unwrap_err();
    assert!(err.to_string().contains("halting"), "{err}");
}

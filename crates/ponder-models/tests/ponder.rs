//! PonderNet and PALBERT end to end: gradients reach the halting head (checked against
//! finite differences), the halting policies give the same answers through the batched
//! runner as computed by hand from a full forward pass (Q-exit, expectation, and
//! sampling's reproducibility), mixed-exit batches equal rows run alone with PALBERT's
//! Lambda layer (whose state is the previous layer's features), and PALBERT trains.

mod support;

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::{ExitPolicy, ExitSignals, softmax, to_host};
use ponder_exits::ponder::{LastLayer, exit_distribution};
use ponder_exits::{Expectation, HaltingHeadConfig, PonderSample, QExit};
use ponder_models::{
    FitOptions, MultiExitClassifier, MultiExitConfig, ParityModel, ParityModelConfig,
    ParityTrainConfig, parity_tensors,
};
use ponder_transformer::{EncoderConfig, EncoderInput};
use support::{serial, text_input};

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
    MultiExitConfig::new(encoder.into(), 3)
        .with_shared_head(true)
        .with_head_dropout(0.0)
        .with_halting(Some(halting))
        .init(&device)
        .valid()
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
        let (logits, lambdas) = all_layers(&model, text_input(&lengths, &Device::flex()));
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
        let out = model.adaptive(text_input(&lengths, &Device::flex()), &policy, None);
        assert_eq!(out.exit_layer, expected, "q = {q}");
        let got = to_host(out.logits);
        for (r, &e) in expected.iter().enumerate() {
            assert!(
                close(&got[r * 3..r * 3 + 3], &logits[e - 1][r], 1e-5),
                "row {r}"
            );
        }
    }
}

#[test]
fn mixed_batch_rows_equal_rows_run_alone_with_the_lambda_layer() {
    let _guard = serial();
    for cat_previous in [true, false] {
        let model = palbert_model(5, cat_previous);
        let lengths = [4, 10, 6, 10, 3];
        // exits planned by a Q-exit whose decisions depend on every earlier λ
        let (logits, lambdas) = all_layers(&model, text_input(&lengths, &Device::flex()));
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
        let batch = model.adaptive(text_input(&lengths, &Device::flex()), &policy, None);
        let batch_logits = to_host(batch.logits);
        for r in 0..lengths.len() {
            // the same row, padded to the batch's length so the sequence is identical
            let device = Device::flex();
            let seq_len = 10;
            let EncoderInput::Tokens { ids, mask_pad, .. } = text_input(&lengths, &Device::flex())
            else {
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
}

#[test]
fn expectation_through_the_runner_is_the_corrected_mixture() {
    let _guard = serial();
    let model = palbert_model(2, true);
    let lengths = [6, 3, 9];
    let (logits, lambdas) = all_layers(&model, text_input(&lengths, &Device::flex()));
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
        text_input(&lengths, &Device::flex()),
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
fn expectation_with_a_tolerance_exits_rows_at_different_layers_with_their_mixtures() {
    let _guard = serial();
    let model = palbert_model(4, true);
    let lengths = [6, 3, 9, 2, 7, 5];
    let (logits, lambdas) = all_layers(&model, text_input(&lengths, &Device::flex()));
    let n_layers = logits.len();
    // per row on the host: the layer where Π(1 − λ) first drops to the tolerance, and
    // the mixture with the remainder on that layer
    let host = |tol: f64| -> Vec<(usize, Vec<f64>)> {
        (0..lengths.len())
            .map(|r| {
                let (mut cond, mut mix) = (1f64, vec![0f64; 3]);
                for l in 0..n_layers {
                    let lam = if l + 1 == n_layers {
                        1.0
                    } else {
                        lambdas[l][r] as f64
                    };
                    let p = lam * cond;
                    cond *= 1.0 - lam;
                    let probs = softmax(&logits[l][r]);
                    for (m, &q) in mix.iter_mut().zip(&probs) {
                        *m += p * q as f64;
                    }
                    if cond <= tol || l + 1 == n_layers {
                        for (m, &q) in mix.iter_mut().zip(&probs) {
                            *m += cond * q as f64;
                        }
                        return (l + 1, mix);
                    }
                }
                unreachable!()
            })
            .collect()
    };
    // a tolerance that spreads the rows over at least two exit layers
    let tol = (1..100)
        .map(|k| k as f64 / 100.0)
        .find(|&t| {
            let mut e: Vec<usize> = host(t).into_iter().map(|x| x.0).collect();
            e.sort_unstable();
            e.dedup();
            e.len() >= 2
        })
        .expect("some tolerance splits the rows");
    let expected = host(tol);
    let out = model.adaptive(
        text_input(&lengths, &Device::flex()),
        &Expectation::new(tol).unwrap(),
        None,
    );
    let got = to_host(out.logits);
    for (r, (layer, mix)) in expected.iter().enumerate() {
        assert_eq!(out.exit_layer[r], *layer, "row {r}, tolerance {tol}");
        let probs = softmax(&got[r * 3..r * 3 + 3]);
        for k in 0..3 {
            assert!(
                (probs[k] as f64 - mix[k]).abs() < 1e-5,
                "row {r}: {probs:?} vs {mix:?}"
            );
        }
    }
}

#[test]
fn sampling_through_the_runner_follows_the_exit_distribution() {
    let _guard = serial();
    let model = palbert_model(9, false);
    // identical rows: one λ sequence, so the exit layers are draws from one p
    let n = 4000;
    let lengths = vec![6usize; n];
    let input = || {
        let EncoderInput::Tokens { ids, .. } = text_input(&[6], &Device::flex()) else {
            unreachable!()
        };
        EncoderInput::Tokens {
            ids: ids.repeat_dim(0, n),
            type_ids: None,
            mask_pad: None,
        }
    };
    let (_, lambdas) = all_layers(&model, text_input(&[6], &Device::flex()));
    let n_layers = lambdas.len();
    let mut p = Vec::new();
    let mut cond = 1f64;
    for (l, lam) in lambdas.iter().enumerate() {
        let lam = if l + 1 == n_layers {
            1.0
        } else {
            lam[0] as f64
        };
        p.push(lam * cond);
        cond *= 1.0 - lam;
    }
    let out = model.adaptive(input(), &PonderSample::new(3), None);
    let mut counts = vec![0f64; n_layers];
    for &e in &out.exit_layer {
        counts[e - 1] += 1.0;
    }
    // χ² over the layers with an expected count of at least 5
    let (mut stat, mut dof) = (0.0, 0usize);
    for (c, &q) in counts.iter().zip(&p) {
        let e = q * n as f64;
        if e >= 5.0 {
            stat += (c - e).powi(2) / e;
            dof += 1;
        }
    }
    assert!(dof >= 2, "p too concentrated to test: {p:?}");
    // the 99.9% quantile of χ² with at most 5 degrees of freedom is 20.52
    assert!(
        stat < 20.52,
        "χ² = {stat} ({dof} cells), counts {counts:?}, p {p:?}"
    );
    // reproducible per seed, different across seeds
    let again = model.adaptive(input(), &PonderSample::new(3), None);
    assert_eq!(out.exit_layer, again.exit_layer);
    let other = model.adaptive(input(), &PonderSample::new(4), None);
    assert_ne!(out.exit_layer, other.exit_layer);
    drop(lengths);
}

#[test]
fn a_prior_that_underflows_is_a_config_error_for_the_papers_kl() {
    use ponder_exits::ponder::KlDirection;
    let mut config = ponder_models::PonderConfig {
        kl: KlDirection::ExitsToPrior,
        lambda_p: 0.99,
        ..ponder_models::PonderConfig::default()
    };
    assert!(config.validate_for("train.ponder", 6).is_ok());
    let err = config
        .validate_for("train.ponder", 40)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.ponder.lambda_p") && err.contains("layer"),
        "{err}"
    );
    config.kl = KlDirection::PriorToExits;
    assert!(config.validate_for("train.ponder", 40).is_ok());
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
                scores: None,
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
    let model = MultiExitConfig::new(encoder.clone().into(), 3)
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
    let out = fit(model, &train, &valid, &config, FitOptions::new(&device)).unwrap();
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
    let plain = MultiExitConfig::new(encoder.clone().into(), 3).init(&device);
    let err = fit(plain, &train, &valid, &config, FitOptions::new(&device)).unwrap_err();
    assert!(err.to_string().contains("halting"), "{err}");
}

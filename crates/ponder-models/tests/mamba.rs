//! The Mamba backbone end to end: a multi-exit Mamba classifier learns a task that
//! needs its recurrence, and the language model trains, evaluates and resumes exactly.

mod support;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_core::to_host;
use ponder_data::{CorpusSplit, LmCorpus};
use ponder_exits::NeverExit;
use ponder_mamba::{MambaConfig, MambaEncoderConfig, Pooling};
use ponder_models::{
    Batch, CheckpointFiles, ClassificationSource, FitOptions, LmObserver, LmTrainConfig,
    MultiExitConfig, TrainConfig, evaluate_lm, fit, fit_lm, layer_accuracies, make_batches,
};
use ponder_transformer::EncoderInput;
use support::{lcg, serial};

/// Sequences of 4–12 tokens (right-padded); the label says whether token 5 occurs
/// anywhere. With last-token pooling only the recurrence can carry that to the end.
struct Contains5 {
    rows: Vec<Vec<i64>>,
    labels: Vec<usize>,
}

impl Contains5 {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = lcg(seed);
        let mut next = move || rng() as usize;
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let len = 4 + next() % 9;
            let mut row: Vec<i64> = (0..len).map(|_| (6 + next() % 40) as i64).collect();
            let label = i % 2;
            if label == 1 {
                let at = next() % len;
                row[at] = 5;
            }
            rows.push(row);
            labels.push(label);
        }
        Self { rows, labels }
    }
}

impl ClassificationSource for Contains5 {
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn n_classes(&self) -> usize {
        2
    }
    fn targets(&self) -> Vec<usize> {
        self.labels.clone()
    }
    fn batch(&self, positions: &[usize], device: &Device) -> Batch {
        let t = positions
            .iter()
            .map(|&p| self.rows[p].len())
            .max()
            .unwrap_or(1);
        let (mut ids, mut pad) = (Vec::new(), Vec::new());
        for &p in positions {
            for i in 0..t {
                ids.push(*self.rows[p].get(i).unwrap_or(&0));
                pad.push(i >= self.rows[p].len());
            }
        }
        let b = positions.len();
        Batch {
            input: EncoderInput::Tokens {
                ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device),
                type_ids: None,
                mask_pad: Some(Tensor::<2, Bool>::from_data(
                    TensorData::new(pad, [b, t]),
                    device,
                )),
            },
            targets: positions.iter().map(|&p| self.labels[p]).collect(),
            scores: None,
        }
    }
}

#[test]
fn a_multi_exit_mamba_classifier_learns_a_task_that_needs_the_recurrence() {
    let _guard = serial();
    let device = Device::flex();
    let (train, valid) = (Contains5::new(384, 1), Contains5::new(128, 2));
    let ad = device.clone().autodiff();
    ad.seed(3);
    let mamba = MambaConfig::new(50, 32, 3).with_d_state(8);
    let model = MultiExitConfig::new(
        MambaEncoderConfig::new(mamba)
            .with_pooling(Pooling::Last)
            .into(),
        2,
    )
    .with_head_dropout(0.0)
    .init(&ad);
    let config = TrainConfig {
        epochs: 8,
        batch_size: 16,
        learning_rate: 1e-2,
        ..TrainConfig::default()
    };
    let out = fit(model, &train, &valid, &config, FitOptions::new(&ad)).unwrap();
    let batches = make_batches(&valid, 64, &device);
    let accuracy = layer_accuracies(&out.model, &batches).accuracy;
    assert!(
        *accuracy.last().unwrap() > 0.9,
        "the last exit reaches only {accuracy:?} (chance 0.5)"
    );
    // The trained model runs through the batched runner like any backbone.
    let eval = ponder_models::evaluate(&out.model, &batches, &NeverExit);
    assert_eq!(eval.stats.mean_exit_layer, 3.0);
}

fn corpus() -> LmCorpus {
    let train_text = "to be or not to be, that is the question. ".repeat(40);
    let valid_text = "to be or not to be: the question is that. ".repeat(4);
    LmCorpus::from_texts(&train_text, &valid_text)
}

fn lm_config() -> LmTrainConfig {
    LmTrainConfig {
        steps: 40,
        batch_size: 8,
        seq_len: 24,
        learning_rate: 1e-2,
        warmup_steps: 4,
        eval_every: 10,
        eval_windows: 0,
        checkpoint_every: 7,
        ..LmTrainConfig::default()
    }
}

struct StopAt(usize);

impl LmObserver for StopAt {
    fn should_stop(&mut self, step: usize) -> bool {
        step == self.0
    }
}

#[test]
fn the_language_model_learns_and_resumes_exactly() {
    let _guard = serial();
    let device = Device::flex();
    let corpus = corpus();
    let config = lm_config();
    let mamba = MambaConfig::new(corpus.vocab.len(), 32, 2).with_d_state(8);
    let ad = device.clone().autodiff();
    let init = |seed: u64| {
        ad.seed(seed);
        mamba.init_lm(&ad)
    };

    let dir = tempfile::tempdir().unwrap();
    let whole = CheckpointFiles::new(dir.path().join("whole"));
    let a = fit_lm(init(5), &corpus, &config, &ad, Some(&whole), &mut ()).unwrap();
    assert!(!a.interrupted && a.steps_run == 40 && a.logs.len() == 4);
    let first = a.logs.first().unwrap();
    let last = a.logs.last().unwrap();
    assert!(
        last.valid_bpc < first.valid_bpc && last.valid_bpc < 2.5,
        "validation bits/char do not fall enough: {:?}",
        a.logs
    );
    let score = evaluate_lm(&a.model, &corpus.valid, config.seq_len, 0, 16, &device);
    let bpc = score.bits_per_char;
    assert!(
        (bpc - last.valid_bpc).abs() < 1e-6,
        "{bpc} vs {}",
        last.valid_bpc
    );
    // characters: bits per token are bits per character, exactly
    assert_eq!(score.bits_per_token.to_bits(), bpc.to_bits());
    assert_eq!(last.valid_bpt.to_bits(), last.valid_bpc.to_bits());
    assert_eq!(last.train_bpt.to_bits(), last.train_bpc.to_bits());
    assert_eq!(score.chars, score.tokens as f64);

    // Stopped after step 17 (between checkpoints and evaluations), then resumed.
    let parts = CheckpointFiles::new(dir.path().join("parts"));
    let b1 = fit_lm(
        init(5),
        &corpus,
        &config,
        &ad,
        Some(&parts),
        &mut StopAt(17),
    )
    .unwrap();
    assert!(b1.interrupted && b1.steps_run == 17 && b1.logs.len() == 1);
    // The resumed run starts from a different initialisation: it must load the
    // checkpoint, not train from scratch.
    let b2 = fit_lm(init(99), &corpus, &config, &ad, Some(&parts), &mut ()).unwrap();
    assert_eq!(b2.steps_run, 23);
    let bits = |logs: &[ponder_models::LmLog]| -> Vec<(u64, u64)> {
        logs.iter()
            .map(|l| (l.train_loss.to_bits(), l.valid_bpc.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a.logs), bits(&b2.logs));
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5], [1, 5]), &device);
    assert_eq!(
        to_host(a.model.forward(ids.clone())),
        to_host(b2.model.forward(ids))
    );
    let _ = a.model.num_params();
}

#[test]
fn a_validation_text_shorter_than_a_window_is_an_error() {
    let device = Device::flex();
    let mut short = corpus();
    short.valid.ids.truncate(10);
    let config = lm_config();
    let model = MambaConfig::new(short.vocab.len(), 8, 1).init_lm(&device.clone().autodiff());
    let err = fit_lm(
        model,
        &short,
        &config,
        &device.clone().autodiff(),
        None,
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train.seq_len") && err.contains("10 characters"),
        "{err}"
    );
    assert!(
        evaluate_lm(
            &MambaConfig::new(short.vocab.len(), 8, 1).init_lm(&device),
            &short.valid,
            24,
            0,
            4,
            &device
        )
        .bits_per_char
        .is_nan()
    );
}

#[test]
fn bits_per_character_count_the_characters_the_tokens_cover() {
    let device = Device::flex();
    device.seed(1);
    let model = MambaConfig::new(6, 8, 1).init_lm(&device);
    let ids: Vec<u32> = (0..40).map(|i| (i * 7 % 6) as u32).collect();
    // tokens of 2 characters, except the first, which covers 5
    let mut token_chars = vec![2u32; ids.len()];
    token_chars[0] = 5;
    let split = CorpusSplit {
        chars: 83,
        ids,
        token_chars,
        files: vec![],
    };
    let score = evaluate_lm(&model, &split, 8, 0, 4, &device);
    // 4 windows of 8 predict tokens 1..=32, which cover 64 characters
    assert_eq!((score.tokens, score.chars), (32, 64.0));
    assert!((score.bits_per_char - score.bits_per_token / 2.0).abs() < 1e-12);
    // without per-token counts: the split's mean characters per token
    let mean = CorpusSplit {
        token_chars: Vec::new(),
        ..split
    };
    let score = evaluate_lm(&model, &mean, 8, 0, 4, &device);
    assert!((score.chars - 32.0 * 83.0 / 40.0).abs() < 1e-9);
}

#[test]
fn bad_lm_configs_are_named() {
    let c = LmTrainConfig {
        warmup_steps: 50,
        steps: 50,
        ..LmTrainConfig::default()
    };
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("train.warmup_steps")
    );
    let c = LmTrainConfig {
        seq_len: 0,
        ..LmTrainConfig::default()
    };
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("train.seq_len")
    );
    // the schedule: warm-up to the peak, cosine down to the floor
    let c = LmTrainConfig::default();
    assert!((c.lr_at(c.warmup_steps - 1) - c.learning_rate).abs() < 1e-12);
    assert!((c.lr_at(c.steps - 1) - c.learning_rate * c.final_lr_fraction).abs() < 1e-12);
    assert!(c.lr_at(c.steps - 2) > c.lr_at(c.steps - 1));
    assert!(c.lr_at(c.warmup_steps + 10) > c.lr_at(c.warmup_steps + 500));
}

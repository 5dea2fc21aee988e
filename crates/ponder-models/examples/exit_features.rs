//! What the exits of a pretrained encoder can read, before any fine-tuning: for every
//! layer and both poolings (`[CLS]` and the token mean), how much the features vary
//! between inputs, and what a linear probe on them, standardised, predicts.
//!
//! ```text
//! cargo run -p ponder-models --example exit_features                     # tiny random BERT, made-up data
//! cargo run --release -p ponder-models --example exit_features -- data/all-minilm-l6-v2 data/spamassassin
//! ```
//!
//! With a checkpoint folder (`config.json`, `model.safetensors`, `tokenizer.json` or
//! `vocab.txt`) and a SpamAssassin folder (`scripts/fetch-data.sh spamassassin minilm`),
//! it reads 2,400 e-mails (a seeded sample; a third argument changes the number) cut to
//! 64 tokens. Without arguments it runs the tiny random BERT committed for the loader's
//! tests on made-up token rows labelled by whether their first token id is even, so that
//! it runs offline.
//!
//! Per layer and pooling it prints:
//! * **spread**: the root of the features' total variance between inputs over the norm of
//!   their mean. all-MiniLM-L6-v2's `[CLS]` state after layers 1–5 has a spread of
//!   0.1–3%: its exits need batch-normalised inputs (`model.head_input_norm`) to learn
//!   in an epoch, and no dropout noise on top (docs/methods.md, PABEE);
//! * **probe**: training and held-out accuracy (70/30) of a logistic regression on the
//!   standardised pre-pooler features, fitted by gradient descent. A probe well above the
//!   majority class with a tiny spread is information a head can only read once its
//!   input is standardised.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_core::{SafeTensors, to_host};
use ponder_data::{Encoded, TextTokenizer, TokenBatch, load_spam_assassin, shuffled_indices};
use ponder_transformer::{EmbeddingKind, EncoderInput, HfConfig, load_with_config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Labelled rows: token ids (without padding) and a binary label.
struct Rows {
    encoded: Vec<Encoded>,
    labels: Vec<usize>,
    pad_id: u32,
}

fn run(args: &[String]) -> Result<(), Box<dyn Error>> {
    let tiny =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ponder-transformer/tests/data/tiny-bert");
    let dir = args.first().map_or(tiny, PathBuf::from);
    let hf = HfConfig::read(dir.join("config.json"))?;
    let file = SafeTensors::open(dir.join("model.safetensors"))?;
    let config = hf.encoder_config()?;
    let EmbeddingKind::Text {
        vocab_size,
        max_position,
        ..
    } = config.embedding
    else {
        return Err("the checkpoint is not a text encoder".into());
    };
    let rows = match args.get(1) {
        Some(data) => {
            let n = match args.get(2) {
                Some(n) => n
                    .parse()
                    .map_err(|_| format!("not a number of e-mails: {n}"))?,
                None => 2400,
            };
            spam_rows(
                &dir,
                Path::new(data),
                n,
                max_position.saturating_sub(2).min(64),
            )?
        }
        None => made_up_rows(vocab_size, max_position.saturating_sub(2).clamp(2, 12)),
    };
    let n = rows.labels.len();
    let majority = rows.labels.iter().filter(|&&l| l == 0).count() as f64 / n as f64;
    println!(
        "{}: {n} rows, majority class {:.1}%",
        dir.display(),
        100.0 * majority.max(1.0 - majority)
    );
    let device = Device::flex();
    for mean_pool in [false, true] {
        let loaded = load_with_config(
            &hf,
            config.clone().with_mean_pool(mean_pool),
            &file,
            &device,
        )?;
        let encoder = loaded.encoder.valid();
        let n_layers = loaded.config.n_layers;
        let mut features: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n_layers];
        for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
            let input = batch(&rows, chunk, &device)?;
            let mut state = encoder.embed_input(input);
            for (layer, out) in features.iter_mut().enumerate() {
                state = encoder.layer_forward(layer, state);
                let f = to_host(encoder.pre_pooled(&state));
                out.extend(f.chunks_exact(loaded.config.d_model).map(<[f32]>::to_vec));
            }
        }
        let pooling = if mean_pool { "mean " } else { "[CLS]" };
        for (layer, x) in features.iter().enumerate() {
            let (train, held_out) = probe(x, &rows.labels, n * 7 / 10);
            println!(
                "{pooling} layer {}: spread {:6.2}%   probe {:5.1}% train, {:5.1}% held out",
                layer + 1,
                100.0 * spread(x),
                100.0 * train,
                100.0 * held_out
            );
        }
    }
    Ok(())
}

/// `n` e-mails of a SpamAssassin folder, a seeded sample, tokenized with the
/// checkpoint's tokenizer (label 1: spam).
fn spam_rows(dir: &Path, data: &Path, n: usize, max_len: usize) -> Result<Rows, Box<dyn Error>> {
    let tokenizer = TextTokenizer::from_file(dir)?;
    let set = load_spam_assassin(data, 2000)?;
    let mut picked = shuffled_indices(set.len(), 1);
    picked.truncate(n);
    let encoded = picked
        .iter()
        .map(|&i| tokenizer.encode_example(&set.examples[i], max_len))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rows {
        encoded,
        labels: set.labels_of(&picked),
        pad_id: tokenizer.pad_id()?,
    })
}

/// 96 rows of 2 to `max_len` made-up token ids; label 1 when the first id is even.
fn made_up_rows(vocab_size: usize, max_len: usize) -> Rows {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut encoded = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..96 {
        let len = 2 + (next() % (max_len as u64 - 1)) as usize;
        let ids: Vec<u32> = (0..len)
            .map(|_| (1 + next() % (vocab_size as u64 - 1)) as u32)
            .collect();
        labels.push(usize::from(ids[0].is_multiple_of(2)));
        encoded.push(Encoded {
            type_ids: vec![0; ids.len()],
            ids,
        });
    }
    Rows {
        encoded,
        labels,
        pad_id: 0,
    }
}

/// The rows `chunk`, right-padded, as the encoder's input.
fn batch(rows: &Rows, chunk: &[usize], device: &Device) -> Result<EncoderInput, Box<dyn Error>> {
    let refs: Vec<&Encoded> = chunk.iter().map(|&i| &rows.encoded[i]).collect();
    let batch = TokenBatch::from_encoded(&refs, vec![0; refs.len()], rows.pad_id)?;
    let shape = [batch.batch_size, batch.seq_len];
    let ids: Vec<i64> = batch.ids.iter().map(|&i| i64::from(i)).collect();
    // burn's convention: `true` marks padding
    let pad: Vec<bool> = batch.mask.iter().map(|&real| !real).collect();
    Ok(EncoderInput::Tokens {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, shape), device),
        type_ids: None,
        mask_pad: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(pad, shape),
            device,
        )),
    })
}

/// Per-feature mean and standard deviation of `x`.
fn moments(x: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = (x.len() as f64, x[0].len());
    let mut mean = vec![0.0; d];
    for row in x {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v) / n;
        }
    }
    let mut var = vec![0.0; d];
    for row in x {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(v) - m).powi(2) / n;
        }
    }
    (mean, var.into_iter().map(f64::sqrt).collect())
}

/// √(total variance) / ‖mean‖.
fn spread(x: &[Vec<f32>]) -> f64 {
    let (mean, sd) = moments(x);
    let var: f64 = sd.iter().map(|s| s * s).sum();
    var.sqrt() / mean.iter().map(|m| m * m).sum::<f64>().sqrt().max(1e-12)
}

/// Training and held-out accuracy of a logistic regression on the first `n_train` rows,
/// standardised with their statistics (full-batch gradient descent, rate 0.5, 400 steps,
/// L2 1e-3).
fn probe(x: &[Vec<f32>], labels: &[usize], n_train: usize) -> (f64, f64) {
    let (mean, sd) = moments(&x[..n_train]);
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|row| {
            row.iter()
                .zip(mean.iter().zip(&sd))
                .map(|(&v, (m, s))| (f64::from(v) - m) / s.max(1e-12))
                .collect()
        })
        .collect();
    let d = mean.len();
    let (mut w, mut b) = (vec![0.0f64; d], 0.0f64);
    let score =
        |w: &[f64], b: f64, row: &[f64]| b + w.iter().zip(row).map(|(a, c)| a * c).sum::<f64>();
    for _ in 0..400 {
        let (mut gw, mut gb) = (vec![0.0; d], 0.0);
        for (row, &y) in z[..n_train].iter().zip(labels) {
            let g = 1.0 / (1.0 + (-score(&w, b, row)).exp()) - y as f64;
            gb += g;
            for (acc, v) in gw.iter_mut().zip(row) {
                *acc += g * v;
            }
        }
        for (wi, g) in w.iter_mut().zip(&gw) {
            *wi -= 0.5 * (g / n_train as f64 + 1e-3 * *wi);
        }
        b -= 0.5 * gb / n_train as f64;
    }
    let accuracy = |range: std::ops::Range<usize>| {
        let len = range.len().max(1) as f64;
        range
            .filter(|&i| usize::from(score(&w, b, &z[i]) > 0.0) == labels[i])
            .count() as f64
            / len
    };
    (accuracy(0..n_train), accuracy(n_train..x.len()))
}

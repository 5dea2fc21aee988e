//! A pretrained Hugging Face encoder (BERT, RoBERTa or ALBERT: a folder with
//! `config.json` and `model.safetensors`) as a frozen layer-wise backbone with exits.
//!
//! ```text
//! cargo run -p ponder-models --example hf_encoder                              # the committed tiny BERT
//! cargo run --release -p ponder-models --example hf_encoder -- data/all-minilm-l6-v2
//! ```
//!
//! Without an argument it loads the tiny random BERT committed for the loader's tests
//! (`crates/ponder-transformer/tests/data/tiny-bert`), so it runs offline; any folder of
//! a Hugging Face checkpoint works (`scripts/fetch-data.sh minilm` fetches
//! all-MiniLM-L6-v2 into `data/all-minilm-l6-v2`). When the folder also holds a
//! `tokenizer.json` or `vocab.txt`, a few sentences are tokenized with it; otherwise the
//! input is made-up token ids.
//!
//! It shows:
//! 1. the per-layer features of the frozen encoder (the pooled `[CLS]` vector after each
//!    layer, what exit heads read) and how close each is to the last layer's;
//! 2. exit heads attached to it, and adaptive inference under a max-probability policy.
//!
//! The heads here are new and untrained, so their predictions and exits are arbitrary:
//! the example shows the plumbing and the FLOP accounting, not early-exit accuracy. To get
//! useful exits, train the heads (e.g. `fit` with `Method::DeeBert`, or PABEE fine-tuning
//! the whole model; `ponder compare experiments/configs/spamassassin-minilm.toml` does
//! this end to end on a real data set).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_core::{ExitStats, run_adaptive, to_host};
use ponder_data::{Encoded, TextTokenizer, TokenBatch};
use ponder_exits::{ClassifierHeadsConfig, MaxProbThreshold};
use ponder_transformer::{EmbeddingKind, EncoderInput, load_hf_encoder};

const SENTENCES: [&str; 4] = [
    "Early exit saves compute on easy inputs.",
    "Congratulations! You've WON a FREE cruise -- reply now.",
    "The quick brown fox jumps over the lazy dog's back.",
    "ok",
];

fn main() -> ExitCode {
    let dir = match std::env::args_os().nth(1) {
        Some(arg) => PathBuf::from(arg),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../ponder-transformer/tests/data/tiny-bert")
        }
    };
    match run(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path) -> Result<(), Box<dyn Error>> {
    for file in ["config.json", "model.safetensors"] {
        if !dir.join(file).is_file() {
            return Err(format!(
                "{} has no {file}: give a folder holding a Hugging Face encoder's config.json and \
                 model.safetensors (e.g. `scripts/fetch-data.sh minilm` writes data/all-minilm-l6-v2)",
                dir.display()
            )
            .into());
        }
    }
    let device = Device::flex();
    // Loading checks every tensor's name and shape and fails naming the tensor. The
    // features are the `[CLS]` vector through the checkpoint's pooler; sentence-transformers
    // checkpoints such as all-MiniLM-L6-v2 were trained on the mean of the tokens instead:
    // `load_with_config` with `HfConfig::encoder_config()?.with_mean_pool(true)` gives that.
    let loaded = load_hf_encoder(
        dir.join("config.json"),
        dir.join("model.safetensors"),
        &device,
    )?;
    let encoder = loaded.encoder.valid(); // inference: no autodiff, no dropout
    let n_layers = loaded.config.n_layers;
    let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    println!(
        "{}: {:?} layout, {n_layers} layers, H = {}, pooler {}",
        shown.display(),
        loaded.layout,
        loaded.config.d_model,
        if loaded.pooler_loaded {
            "loaded"
        } else {
            "absent (freshly initialised)"
        }
    );

    let input = token_input(dir, &loaded.config.embedding, &device)?;

    // 1. The frozen encoder, one layer at a time: embed, then each layer, reading the
    // features an exit head would see (`pooled`: tanh(W·h_[CLS] + b)).
    let mut state = encoder.embed_input(input.clone());
    let mut features = Vec::new();
    for layer in 0..n_layers {
        state = encoder.layer_forward(layer, state);
        features.push(to_host(encoder.pooled(&state)));
    }
    let d = loaded.config.d_model;
    let last = &features[n_layers - 1];
    println!(
        "cosine similarity of each row's features after layer l with those after the last layer:"
    );
    for (layer, f) in features.iter().enumerate() {
        let cos: Vec<String> = f
            .chunks_exact(d)
            .zip(last.chunks_exact(d))
            .map(|(a, b)| format!("{:.3}", cosine(a, b)))
            .collect();
        println!("  layer {}: [{}]", layer + 1, cos.join(", "));
    }

    // 2. New exit heads (one linear classifier per layer, 2 classes) on the frozen
    // encoder, and the batched runner under a max-probability policy: rows leave the
    // batch at their exit, and later layers run on the rest only.
    device.seed(0);
    let heads = ClassifierHeadsConfig::new(n_layers, d, 2)
        .with_dropout(0.0)
        .init(&device);
    let policy = MaxProbThreshold::new(0.6)?;
    let out = run_adaptive(&encoder, &heads, &policy, input, None);
    let stats = ExitStats::new(&out.exit_layer, &out.flops, n_layers, out.full_depth_flops);
    let probs = to_host(burn::tensor::activation::softmax(out.logits, 1));
    println!("untrained heads under max_prob > 0.6 (arbitrary until the heads are trained):");
    for (row, p) in probs.chunks_exact(2).enumerate() {
        println!(
            "  row {row}: exit layer {}, p = [{:.3}, {:.3}]",
            out.exit_layer[row], p[0], p[1]
        );
    }
    println!(
        "mean exit layer {:.2} of {n_layers}, FLOP speed-up {:.2}× against full depth",
        stats.mean_exit_layer, stats.flop_speedup
    );
    Ok(())
}

/// The batch: `SENTENCES` through the folder's tokenizer if it has one, else made-up ids
/// (rows of 8, 5 and 3 tokens below the vocabulary size); right-padded, with the mask.
fn token_input(
    dir: &Path,
    embedding: &EmbeddingKind,
    device: &Device,
) -> Result<EncoderInput, Box<dyn Error>> {
    let EmbeddingKind::Text {
        vocab_size,
        max_position,
        ..
    } = *embedding
    else {
        return Err("the checkpoint is not a text encoder".into());
    };
    let has_tokenizer = dir.join("tokenizer.json").is_file() || dir.join("vocab.txt").is_file();
    let (encoded, pad_id) = if has_tokenizer {
        let tokenizer = TextTokenizer::from_file(dir)?;
        // RoBERTa's positions start at 2: keep two positions spare
        let max_len = max_position.saturating_sub(2).min(128);
        let encoded = SENTENCES
            .iter()
            .map(|s| tokenizer.encode(s, max_len))
            .collect::<Result<Vec<_>, _>>()?;
        println!(
            "input: {} sentences, tokenized with the folder's tokenizer",
            encoded.len()
        );
        (encoded, tokenizer.pad_id()?)
    } else {
        let encoded: Vec<Encoded> = [8usize, 5, 3]
            .iter()
            .enumerate()
            .map(|(row, &len)| Encoded {
                ids: (0..len)
                    .map(|t| ((1 + 7 * row + 13 * t) % (vocab_size - 1) + 1) as u32)
                    .collect(),
                type_ids: vec![0; len],
            })
            .collect();
        println!(
            "input: {} rows of made-up token ids (the folder has no tokenizer)",
            encoded.len()
        );
        (encoded, 0)
    };
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = TokenBatch::from_encoded(&refs, vec![0; refs.len()], pad_id)?;
    let shape = [batch.batch_size, batch.seq_len];
    let ids: Vec<i64> = batch.ids.iter().map(|&i| i64::from(i)).collect();
    let types: Vec<i64> = batch.type_ids.iter().map(|&i| i64::from(i)).collect();
    // burn's convention: `true` marks padding
    let pad: Vec<bool> = batch.mask.iter().map(|&real| !real).collect();
    Ok(EncoderInput::Tokens {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, shape), device),
        type_ids: Some(Tensor::<2, Int>::from_data(
            TensorData::new(types, shape),
            device,
        )),
        mask_pad: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(pad, shape),
            device,
        )),
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-12)
}

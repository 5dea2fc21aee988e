//! A pretrained Hugging Face decoder (GPT-2 or Llama family: SmolLM, TinyLlama, Qwen2,
//! ...) with token-level early exit: load the checkpoint folder, tokenize a prompt with
//! its `tokenizer.json`, and generate greedily at full depth and with CALM's softmax rule
//! at a few exit positions, printing the text, the layers used and the time taken.
//!
//! ```sh
//! scripts/fetch-data.sh smollm2    # SmolLM2-135M-Instruct (4-bit weights) into data/
//! cargo run --release -p ponder-models --example pretrained_lm -- [FOLDER] ["PROMPT"] [TOKENS]
//! ```
//!
//! FOLDER holds `config.json`, `model.safetensors` and `tokenizer.json`; it defaults to
//! `data/smollm2-135m` when that is there, else to the tiny random Llama checkpoint the
//! tests use (no tokenizer: the prompt is a few token ids and the output is ids).

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use ponder_core::SkipRule;
use ponder_exits::token::{TokenExitConfig, TokenRule};
use ponder_models::decode;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let folder = match args.next() {
        Some(f) => PathBuf::from(f),
        None if PathBuf::from("data/smollm2-135m/config.json").is_file() => {
            PathBuf::from("data/smollm2-135m")
        }
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../ponder-transformer/tests/data/tiny-llama"),
    };
    let prompt = args
        .next()
        .unwrap_or_else(|| "The capital of France is Paris. The capital of Italy is".into());
    let n_tokens: usize = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("TOKENS `{n}`: {e}"))?,
        None => 16,
    };
    let device = Device::default();
    let loaded = ponder_transformer::load_hf_decoder(&folder, &device)?;
    let lm = loaded.lm;
    let tokenizer_file = folder.join("tokenizer.json");
    let tokenizer = if tokenizer_file.is_file() {
        Some(ponder_data::TextTokenizer::from_file(&tokenizer_file)?)
    } else {
        None
    };
    let ids: Vec<usize> = match &tokenizer {
        Some(t) => t
            .inner()
            .encode(prompt.as_str(), false)
            .map_err(|e| format!("tokenizing the prompt: {e}"))?
            .get_ids()
            .iter()
            .map(|&i| i as usize)
            .collect(),
        None => vec![1, 2, 3, 4],
    };
    let prompt = match &tokenizer {
        Some(_) => prompt,
        None => format!("{ids:?} → "),
    };
    let n_layers = lm.n_layers();
    println!(
        "{} ({}): {n_layers} layers, d {}, vocabulary {}, {:.1} M parameters; prompt of {} tokens",
        folder.display(),
        loaded.hf.model_type,
        lm.d_model(),
        lm.vocab_size(),
        lm.n_params() as f64 / 1e6,
        ids.len()
    );
    // exits at a fifth, two fifths, ... of the depth
    let exits: Vec<usize> = (1..5)
        .map(|i| i * n_layers / 5)
        .filter(|&l| l > 0)
        .collect();
    for rule in [
        TokenRule::Never,
        TokenRule::Softmax(0.9),
        TokenRule::Softmax(0.5),
    ] {
        let config = TokenExitConfig {
            rule,
            exits: exits.clone(),
            skip_rule: SkipRule::Recompute,
            always_run_last: false,
        };
        let start = Instant::now();
        let out = decode(
            &lm,
            &config,
            None,
            std::slice::from_ref(&ids),
            n_tokens,
            None,
            None,
        )?;
        let seconds = start.elapsed().as_secs_f64();
        let tokens: Vec<u32> = out.tokens[0].iter().map(|&t| t as u32).collect();
        let text = match &tokenizer {
            Some(t) => t
                .inner()
                .decode(&tokens, true)
                .map_err(|e| format!("decoding: {e}"))?,
            None => format!("{tokens:?}"),
        };
        let layers = &out.layers_run[0];
        let mean = layers.iter().sum::<usize>() as f64 / layers.len() as f64;
        let spent: u64 = out.flops[0].iter().sum();
        let full: u64 = out.full_flops[0].iter().sum();
        let name = match rule {
            TokenRule::Never => "full depth".to_string(),
            _ => format!("{} > {}", rule.measure(), rule.threshold()),
        };
        println!(
            "\n{name}: mean layers run {mean:.1} of {n_layers}, FLOP speed-up {:.2}x, {:.1} tokens/s\n  {prompt}{text}",
            full as f64 / spent as f64,
            n_tokens as f64 / seconds
        );
    }
    Ok(())
}

//! Token-level early exit on a decoder language model (CALM's confidence rules and
//! DYNAMAX's setting): generate greedily, let each token leave the stack after the first
//! exit position whose intermediate prediction is confident enough, and count what it
//! saved.
//!
//! ```sh
//! cargo run --release -p ponder-models --example token_exits
//! ```
//!
//! The decoder here has random weights, so the tokens mean nothing; what the example
//! shows is the API and the bookkeeping: a threshold of 0 exits every token at the first
//! exit position, `Never` is full-depth decoding, and exited tokens' K/V entries in the
//! layers they skipped are filled by the chosen `SkipRule` (here CALM's recomputation).
//! With a trained model (`ponder lm`, or a checkpoint) the same calls measure real
//! savings; a DYNAMAX exit classifier plugs in as `TokenRule::Classifier` with
//! `Some((&classifier, &spec))`.

use burn::tensor::Device;
use ponder_core::{Result, SkipRule};
use ponder_exits::token::{TokenExitConfig, TokenRule};
use ponder_models::decode;
use ponder_transformer::DecoderConfig;

fn main() -> Result<()> {
    let device = Device::default();
    device.seed(0);
    // vocabulary 64, width 32, 4 heads, 6 layers, FFN 64, up to 128 positions
    let lm = DecoderConfig::new(64, 32, 4, 6, 64, 128).init_lm(&device);
    let prompts = vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]];
    let n_tokens = 12;

    for rule in [
        TokenRule::Never,
        TokenRule::Softmax(0.0),
        // a random model's predictions are near uniform (largest probability about 1/64),
        // so only thresholds around 1/64 split the tokens
        TokenRule::Softmax(0.0165),
        TokenRule::Margin(0.0005),
    ] {
        let config = TokenExitConfig {
            rule,
            exits: vec![2, 4],
            skip_rule: SkipRule::Recompute,
            always_run_last: false,
        };
        let out = decode(&lm, &config, None, &prompts, n_tokens, None, None)?;
        let spent: u64 = out.flops.iter().flatten().sum();
        let full: u64 = out.full_flops.iter().flatten().sum();
        let layers: Vec<usize> = out.exit_layers.iter().flatten().copied().collect();
        let mean = layers.iter().sum::<usize>() as f64 / layers.len() as f64;
        println!(
            "{:<10} threshold {:>7}: mean exit layer {mean:.2} of 6, FLOP speed-up {:.2}x, row 0 {:?}",
            rule.measure(),
            rule.threshold(),
            full as f64 / spent as f64,
            out.tokens[0]
        );
    }
    Ok(())
}

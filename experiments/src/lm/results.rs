//! What `ponder lm` measured and how it is shown: [`LmResults`] (with the test text's
//! [`LmTestResult`] and the generation state's [`MemoryPoint`]s), written as
//! `results.json`, the Markdown [`table`] of `results.md` and the [`loss_plot`] of
//! `loss_curve.svg`.

use anyhow::Result;
use plotters::prelude::SeriesLabelPosition;
use ponder_models::{LmLog, LmScore};
use serde::{Deserialize, Serialize};

use super::LmBackbone;
use crate::report::{ChartSpec, line_chart};

/// The state size and process memory after generating some tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Tokens generated (characters, with a character vocabulary).
    pub generated: usize,
    /// Bytes of the recurrent state or KV cache (all layers).
    pub state_bytes: usize,
    /// Shapes of layer 0's conv and SSM states (Mamba) or K and V (transformer).
    pub layer0_shapes: Vec<Vec<usize>>,
    /// Resident memory of the process after generating, in MiB (Linux; `null` elsewhere).
    pub rss_mib: Option<f64>,
    /// Tokens per second of the step mode.
    #[serde(alias = "chars_per_second")]
    pub tokens_per_second: f64,
}

/// How the model does on the test text (`data.test`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmTestResult {
    /// The test files.
    pub files: Vec<String>,
    /// Tokens predicted.
    pub tokens: usize,
    /// Characters they cover.
    pub chars: f64,
    /// Bits per token.
    pub bpt: f64,
    /// Bits per character.
    pub bpc: f64,
    /// Perplexity per token (2^bpt).
    pub perplexity: f64,
}

impl LmTestResult {
    pub(super) fn new(files: &[String], score: LmScore) -> Self {
        Self {
            files: files.to_vec(),
            tokens: score.tokens,
            chars: score.chars,
            bpt: score.bits_per_token,
            bpc: score.bits_per_char,
            perplexity: score.bits_per_token.exp2(),
        }
    }
}

fn characters() -> String {
    "characters".into()
}

/// Everything `ponder lm` measured. With a character vocabulary, tokens are characters
/// and bits per token are bits per character.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmResults {
    /// Experiment name.
    pub experiment: String,
    /// The backbone.
    #[serde(default)]
    pub backbone: LmBackbone,
    /// Trainable parameters.
    pub n_params: usize,
    /// `characters`, or `tokenizer PATH`.
    #[serde(default = "characters")]
    pub vocabulary: String,
    /// Ids in the vocabulary (characters, or the tokenizer's largest id + 1).
    pub vocab_size: usize,
    /// Tokens of the training text.
    #[serde(default)]
    pub train_tokens: usize,
    /// Characters of the training text.
    pub train_chars: usize,
    /// Tokens of the validation text.
    #[serde(default)]
    pub valid_tokens: usize,
    /// Characters of the validation text.
    pub valid_chars: usize,
    /// Validation files (held-out works in the Shakespeare form).
    pub valid_files: Vec<String>,
    /// Training steps.
    pub steps: usize,
    /// Tokens seen in training (steps × batch × window).
    #[serde(default)]
    pub tokens_seen: usize,
    /// Characters seen in training (tokens seen × the training text's characters per
    /// token).
    pub chars_seen: usize,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Bits per token on the whole validation text.
    #[serde(default)]
    pub valid_bpt: f64,
    /// Bits per character on the whole validation text.
    pub valid_bpc: f64,
    /// Perplexity per character on the validation text (2^bpc).
    pub valid_perplexity: f64,
    /// Bits per token of a unigram model of the training text on the validation text.
    #[serde(default)]
    pub unigram_bpt: f64,
    /// The same per character (the baseline any LM must beat).
    pub unigram_bpc: f64,
    /// The test text, evaluated once after training (`null` without `data.test`).
    #[serde(default)]
    pub test: Option<LmTestResult>,
    /// The state size at each `generate.memory_lengths`.
    pub memory: Vec<MemoryPoint>,
}

impl LmResults {
    fn is_chars(&self) -> bool {
        self.vocabulary == "characters"
    }
}

/// The results as Markdown.
pub fn table(results: &LmResults, logs: &[LmLog]) -> String {
    let chars = results.is_chars();
    let mut s = if chars {
        format!(
            "## {}: character-level {} LM\n\n\
             | parameters | train chars | steps (chars seen) | train time | validation bits/char | perplexity/char | unigram bits/char |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} ({}) | {:.1} min | **{:.3}** | {:.2} | {:.3} |\n\n",
            results.experiment,
            results.backbone.name(),
            results.n_params,
            results.train_chars,
            results.steps,
            results.chars_seen,
            results.train_seconds / 60.0,
            results.valid_bpc,
            results.valid_perplexity,
            results.unigram_bpc,
        )
    } else {
        format!(
            "## {}: {} LM, {} ({} ids)\n\n\
             | parameters | train tokens (chars) | steps (tokens seen) | train time | validation bits/token | validation bits/char | perplexity/token | unigram bits/token | unigram bits/char |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} ({}) | {} ({}) | {:.1} min | {:.3} | **{:.3}** | {:.2} | {:.3} | {:.3} |\n\n",
            results.experiment,
            results.backbone.name(),
            results.vocabulary,
            results.vocab_size,
            results.n_params,
            results.train_tokens,
            results.train_chars,
            results.steps,
            results.tokens_seen,
            results.train_seconds / 60.0,
            results.valid_bpt,
            results.valid_bpc,
            results.valid_bpt.exp2(),
            results.unigram_bpt,
            results.unigram_bpc,
        )
    };
    if chars {
        s.push_str(&format!(
            "Validation: {} ({} characters).\n\n",
            results.valid_files.join(", "),
            results.valid_chars
        ));
    } else {
        s.push_str(&format!(
            "Validation: {} ({} tokens, {} characters).\n\n",
            results.valid_files.join(", "),
            results.valid_tokens,
            results.valid_chars
        ));
    }
    if let Some(t) = &results.test {
        if chars {
            s.push_str(&format!(
                "Test: {} ({} characters predicted): **{:.3}** bits/char, perplexity {:.2}.\n\n",
                t.files.join(", "),
                t.tokens,
                t.bpc,
                t.perplexity
            ));
        } else {
            s.push_str(&format!(
                "Test: {} ({} tokens predicted, covering {} characters): {:.3} bits/token, **{:.3}** bits/char, perplexity/token {:.2}.\n\n",
                t.files.join(", "),
                t.tokens,
                t.chars,
                t.bpt,
                t.bpc,
                t.perplexity
            ));
        }
    }
    if chars {
        s.push_str(
            "| step | train bits/char | validation bits/char | minutes |\n|---:|---:|---:|---:|\n",
        );
        for l in logs {
            s.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.1} |\n",
                l.step,
                l.train_bpc,
                l.valid_bpc,
                l.seconds / 60.0
            ));
        }
    } else {
        s.push_str("| step | train bits/token | train bits/char (mean chars/token) | validation bits/token | validation bits/char | minutes |\n|---:|---:|---:|---:|---:|---:|\n");
        for l in logs {
            s.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |\n",
                l.step,
                l.train_bpt,
                l.train_bpc,
                l.valid_bpt,
                l.valid_bpc,
                l.seconds / 60.0
            ));
        }
    }
    let unit = if chars { "chars" } else { "tokens" };
    s.push_str(&format!("\nGeneration state (batch 1), token by token:\n\n| generated {unit} | state bytes | layer-0 {} | process RSS (MiB) | {unit}/s |\n|---:|---:|---|---:|---:|\n", match results.backbone {
        LmBackbone::Mamba => "conv / SSM state",
        LmBackbone::Transformer => "K / V cache",
    }));
    for m in &results.memory {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} |\n",
            m.generated,
            m.state_bytes,
            m.layer0_shapes
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" / "),
            m.rss_mib.map_or("n/a".into(), |r| format!("{r:.1}")),
            m.tokens_per_second
        ));
    }
    s
}

/// Train and validation bits per character against steps, as SVG.
pub fn loss_plot(name: &str, logs: &[LmLog]) -> Result<String> {
    let values = || logs.iter().flat_map(|l| [l.train_bpc, l.valid_bpc]);
    let hi = values().fold(0.0f64, f64::max).max(1.0) * 1.05;
    let lo = values().fold(f64::INFINITY, f64::min).min(hi) * 0.95;
    let max_step = logs.iter().map(|l| l.step).max().unwrap_or(1) as f64;
    let line = |pick: fn(&LmLog) -> f64| -> Vec<(f64, f64)> {
        logs.iter().map(|l| (l.step as f64, pick(l))).collect()
    };
    line_chart(
        ChartSpec {
            caption: format!("{name}: bits per character"),
            x_desc: "training step",
            y_desc: "bits per character",
            x: 0f64..max_step,
            y: lo..hi,
            size: (900, 550),
            legend: SeriesLabelPosition::UpperRight,
        },
        &[
            (
                "train (mean since previous point)".into(),
                line(|l| l.train_bpc),
            ),
            ("validation".into(), line(|l| l.valid_bpc)),
        ],
    )
}

//! The held-out sequences (calibration and test prompts with their true continuations,
//! interleaved over the validation text) and their decoding in batches.

use anyhow::Result;
use ponder_core::TokenLm;
use ponder_data::LmCorpus;
use ponder_exits::token::{ExitClassifierSpec, TokenExitConfig};
use ponder_models::{Decoded, ExitClassifier, decode, spread_windows};

use super::TokenExitSweep;

/// Prompts, their full-depth continuations and the true text of a set of held-out
/// sequences.
pub(super) struct Sequences {
    pub(super) prompts: Vec<Vec<usize>>,
    pub(super) truth: Vec<Vec<usize>>,
}

pub(super) fn sequences(
    corpus: &LmCorpus,
    sweep: &TokenExitSweep,
) -> Result<(Sequences, Sequences)> {
    let len = sweep.prompt_len + sweep.gen_len;
    let total = sweep.calibration_sequences + sweep.test_sequences;
    let windows = spread_windows(&corpus.valid.ids, len, total)?;
    // Interleave so both sets cover every held-out work.
    let (mut calibration, mut test) = (
        Sequences {
            prompts: vec![],
            truth: vec![],
        },
        Sequences {
            prompts: vec![],
            truth: vec![],
        },
    );
    for (i, w) in windows.iter().enumerate() {
        let into_test = if test.prompts.len() >= sweep.test_sequences {
            false
        } else if calibration.prompts.len() >= sweep.calibration_sequences {
            true
        } else {
            i % 2 == 1
        };
        let target = if into_test {
            &mut test
        } else {
            &mut calibration
        };
        let ids = |part: &[u32]| part.iter().map(|&id| id as usize).collect::<Vec<_>>();
        target.prompts.push(ids(&w[..sweep.prompt_len]));
        target.truth.push(ids(&w[sweep.prompt_len..]));
    }
    Ok((calibration, test))
}

/// Decodes `prompts` in batches and joins the rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_all<L: TokenLm>(
    lm: &L,
    config: &TokenExitConfig,
    classifier: Option<(&ExitClassifier, &ExitClassifierSpec)>,
    prompts: &[Vec<usize>],
    n_tokens: usize,
    forced: Option<&[Vec<usize>]>,
    targets: Option<&[Vec<usize>]>,
    batch_size: usize,
) -> Result<Decoded> {
    let mut out: Option<Decoded> = None;
    for start in (0..prompts.len()).step_by(batch_size) {
        let end = (start + batch_size).min(prompts.len());
        let d = decode(
            lm,
            config,
            classifier,
            &prompts[start..end],
            n_tokens,
            forced.map(|f| &f[start..end]),
            targets.map(|t| &t[start..end]),
        )?;
        out = Some(match out {
            None => d,
            Some(mut acc) => {
                acc.tokens.extend(d.tokens);
                acc.exit_layers.extend(d.exit_layers);
                acc.layers_run.extend(d.layers_run);
                acc.flops.extend(d.flops);
                acc.full_flops.extend(d.full_flops);
                if let (Some(a), Some(b)) = (acc.target_log_probs.as_mut(), d.target_log_probs) {
                    a.extend(b);
                }
                acc.seconds += d.seconds;
                acc
            }
        });
    }
    Ok(out.expect("at least one prompt"))
}

//! Token-by-token generation with the recurrent state (constant memory in the length).

use burn::tensor::{Int, Tensor, TensorData};
use ponder_core::{Result, check_prompt, to_host, uniform01};

use crate::model::{MambaLm, MambaState};

/// How to pick each next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Seed of the sampler.
    pub seed: u64,
}

/// The output of [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated tokens (the prompt not included).
    pub tokens: Vec<usize>,
    /// The state after the last generated token was fed back.
    pub state: MambaState,
    /// The state's size in f32 values after the prompt and after each generated token
    /// (index 0: after the prompt).
    pub state_numel: Vec<usize>,
}

/// Picks the next token from `logits` (greedy at temperature 0), advancing `rng`.
pub fn pick(logits: &[f32], sampling: Sampling, rng: &mut u64) -> usize {
    if sampling.temperature <= 0.0 {
        return ponder_core::argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / sampling.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = uniform01(rng) * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i;
        }
        target -= w;
    }
    weights.len() - 1
}

/// Feeds `prompt` through the full-sequence scan (prefill), then generates `n_tokens`
/// one at a time with [`MambaLm::step`], for one sequence.
pub fn generate(
    lm: &MambaLm,
    prompt: &[usize],
    n_tokens: usize,
    sampling: Sampling,
) -> Result<Generation> {
    let vocab = lm.mamba.embedding.weight.dims()[0];
    check_prompt(prompt, vocab)?;
    let device = lm.mamba.embedding.weight.device();
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            prompt.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, prompt.len()],
        ),
        &device,
    );
    let (logits, mut state) = lm.forward_prefill(ids, None);
    let last = logits.narrow(1, prompt.len() - 1, 1).reshape([1, vocab]);
    let mut next_logits = to_host(last);
    let mut rng = sampling.seed;
    let mut tokens = Vec::with_capacity(n_tokens);
    let mut state_numel = vec![state.numel()];
    for _ in 0..n_tokens {
        let token = pick(&next_logits, sampling, &mut rng);
        tokens.push(token);
        let input = Tensor::<1, Int>::from_data(TensorData::new(vec![token as i64], [1]), &device);
        next_logits = to_host(lm.step(input, &mut state));
        state_numel.push(state.numel());
    }
    Ok(Generation {
        tokens,
        state,
        state_numel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_sampled_picks() {
        let mut rng = 1;
        let greedy = Sampling {
            temperature: 0.0,
            seed: 0,
        };
        assert_eq!(pick(&[0.1, 3.0, -1.0], greedy, &mut rng), 1);
        let hot = Sampling {
            temperature: 1.0,
            seed: 0,
        };
        let mut counts = [0usize; 2];
        for _ in 0..20_000 {
            counts[pick(&[0.0, (3.0f32).ln()], hot, &mut rng)] += 1;
        }
        // p = (1/4, 3/4)
        let p1 = counts[1] as f64 / 20_000.0;
        assert!((p1 - 0.75).abs() < 0.02, "{p1}");
    }
}

//! Greedy and teacher-forced decoding with per-token exits, at any batch size.

use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use ponder_core::{
    LayerCall, PonderError, Result, Rows, TokenLm, argmax, index_tensor, merge_rows, softmax,
    to_host,
};
use serde::{Deserialize, Serialize};

use ponder_exits::token::{
    ExitClassifierSpec, TokenExitConfig, TokenRule, confidence_summary, exit_probability,
    saturation, validate_exits,
};

use super::classifier::ExitClassifier;

/// What [`decode`] produced, per row and per generated token. Token 0 of each row comes
/// from the prompt's full-depth prefill; tokens `1..` went through the exit decoder,
/// and only they have exit layers, layer counts and FLOPs (index `s − 1` for token
/// `s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoded {
    /// Emitted (greedy) tokens `[rows][n_tokens]`.
    pub tokens: Vec<Vec<usize>>,
    /// The layer (1-based) after which each stepped token exited; N when it did not.
    pub exit_layers: Vec<Vec<usize>>,
    /// Layers each stepped token ran (with the last layer when it is always run).
    pub layers_run: Vec<Vec<usize>>,
    /// FLOPs of each stepped token: embedding, layers run, exit measures or classifier,
    /// skipped layers' cache rule, and the final norm and head (once: an exited token
    /// that does not run the last layer reuses its exit measure's prediction when the
    /// measure computed one).
    pub flops: Vec<Vec<u64>>,
    /// FLOPs the same token costs at full depth (embedding, every layer, the head).
    pub full_flops: Vec<Vec<u64>>,
    /// Log-probability (nats) of each target token under the emitted distribution of
    /// stepped tokens, when targets were given.
    pub target_log_probs: Option<Vec<Vec<f64>>>,
    /// Wall-clock seconds of the whole call (prefill included).
    pub seconds: f64,
}

fn ids_2d(rows: &[Vec<usize>], device: &burn::tensor::Device) -> Tensor<2, Int> {
    let width = rows[0].len();
    let data: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(data, [rows.len(), width]), device)
}

/// Rows that have exited at the current token and their exit streams.
struct Exited {
    rows: Rows,
    streams: Tensor<2>,
    /// Their exit layer's logits when the exit measure computed them (reused as the
    /// emitted prediction when the last layer is not run).
    logits: Option<Tensor<2>>,
}

/// Generates `n_tokens` tokens per row after `prompts` (all of one length), greedily.
///
/// With `forced` (`[rows][n_tokens − 1]`), stepped token `s` (1-based) is fed
/// `forced[row][s − 1]` instead of the token emitted before it (teacher forcing:
/// consistency given the same prefix). With `targets` (`[rows][n_tokens − 1]`),
/// `target_log_probs[row][s − 1]` is the log-probability of `targets[row][s − 1]` at
/// stepped token `s`: for the perplexity of a text `t` after the prompt, pass
/// `forced = t` and `targets = t[1..]` (each fed character is scored on the next).
///
/// `classifier` is required by [`TokenRule::Classifier`] and ignored otherwise.
pub fn decode<L: TokenLm>(
    lm: &L,
    config: &TokenExitConfig,
    classifier: Option<(&ExitClassifier, &ExitClassifierSpec)>,
    prompts: &[Vec<usize>],
    n_tokens: usize,
    forced: Option<&[Vec<usize>]>,
    targets: Option<&[Vec<usize>]>,
) -> Result<Decoded> {
    let n = lm.n_layers();
    let vocab = lm.vocab_size();
    let device = lm.device();
    config.rule.validate(n)?;
    lm.check_rule(config.skip_rule)?;
    let exits: Vec<usize> = match (&config.rule, classifier) {
        (TokenRule::Classifier(_), Some((_, spec))) => spec.exits.clone(),
        (TokenRule::Classifier(_), None) => {
            return Err(PonderError::config(
                "token_exit.rule",
                "the classifier rule needs a trained exit classifier",
            ));
        }
        (TokenRule::Fixed(l), _) => {
            if *l < n {
                vec![*l]
            } else {
                vec![]
            }
        }
        (TokenRule::Never, _) => vec![],
        _ => {
            validate_exits(&config.exits, n, "token_exit.exits")?;
            config.exits.clone()
        }
    };
    let classifier = match config.rule {
        TokenRule::Classifier(_) => classifier,
        _ => None,
    };
    if prompts.is_empty() || n_tokens == 0 {
        return Err(PonderError::config(
            "decode",
            "needs at least one prompt and one token to generate",
        ));
    }
    let prompt_len = prompts[0].len();
    if prompt_len == 0 || prompts.iter().any(|p| p.len() != prompt_len) {
        return Err(PonderError::config(
            "decode.prompts",
            "prompts must be non-empty and of one length",
        ));
    }
    for (name, rows) in [("forced", forced), ("targets", targets)] {
        if let Some(rows) = rows
            && (rows.len() != prompts.len() || rows.iter().any(|r| r.len() + 1 < n_tokens))
        {
            return Err(PonderError::config(
                format!("decode.{name}"),
                format!(
                    "needs {} rows of at least {} tokens",
                    prompts.len(),
                    n_tokens - 1
                ),
            ));
        }
    }
    let all_tokens = prompts
        .iter()
        .flatten()
        .chain(forced.into_iter().flatten().flatten())
        .chain(targets.into_iter().flatten().flatten());
    if let Some(&bad) = all_tokens.clone().find(|&&t| t >= vocab) {
        return Err(PonderError::config(
            "decode.prompts",
            format!("token {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    if let Some(max) = lm.max_len()
        && prompt_len + n_tokens - 1 > max
    {
        return Err(PonderError::config(
            "decode",
            format!(
                "a prompt of {prompt_len} and {n_tokens} generated tokens exceed the model's \
                 {max} positions"
            ),
        ));
    }

    let start = Instant::now();
    let batch = prompts.len();
    let (first, mut cache) = lm.prefill(ids_2d(prompts, &device));
    let first = to_host(first);
    let mut tokens: Vec<Vec<usize>> = (0..batch)
        .map(|r| vec![argmax(&first[r * vocab..(r + 1) * vocab])])
        .collect();
    let mut out = Decoded {
        tokens: Vec::new(),
        exit_layers: vec![Vec::new(); batch],
        layers_run: vec![Vec::new(); batch],
        flops: vec![Vec::new(); batch],
        full_flops: vec![Vec::new(); batch],
        target_log_probs: targets.map(|_| vec![Vec::new(); batch]),
        seconds: 0.0,
    };
    let measure_flops = |layer: usize| -> u64 {
        let mut f = 0;
        if let Some((c, spec)) = classifier {
            f += c.step_flops(spec, layer);
            if c.needs_confidence(spec) && c.runs_at(spec, layer) {
                f += lm.head_flops() + 12 * vocab as u64 + 6 * lm.d_model() as u64;
            }
        }
        if exits.contains(&layer) {
            f += match config.rule {
                TokenRule::Softmax(_) | TokenRule::Margin(_) => lm.head_flops() + 3 * vocab as u64,
                TokenRule::Saturation(_) => 6 * lm.d_model() as u64,
                _ => 0,
            };
        }
        f
    };
    let last_check = match classifier {
        Some((_, spec)) => spec.last_exit(),
        None => exits.last().copied().unwrap_or(0),
    };

    for s in 1..n_tokens {
        let position = lm.cache_len(&cache);
        let inputs: Vec<usize> = (0..batch)
            .map(|r| match forced {
                Some(f) => f[r][s - 1],
                None => tokens[r][s - 1],
            })
            .collect();
        let ids = Tensor::<1, Int>::from_data(
            TensorData::new(
                inputs.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [batch],
            ),
            &device,
        );
        let mut x = lm.embed(ids, position);
        let mut active = Rows::all(batch, &device);
        let mut exited: Option<Exited> = None;
        let mut exit_layer = vec![n; batch];
        let mut layers_run = vec![0usize; batch];
        // The final head is charged below, to the rows whose prediction it computes.
        let mut flops = vec![lm.embed_flops(); batch];
        let full: u64 = lm.embed_flops()
            + (0..n).map(|l| lm.layer_flops(l, position)).sum::<u64>()
            + lm.head_flops();
        let mut clf_state = classifier.map(|(c, _)| c.start(batch, &device));
        // The rows that ran the last layer and their output streams.
        let mut final_stream: Option<(Rows, Tensor<2>)> = None;
        for l in 0..n {
            let layer = l + 1;
            let is_last = layer == n;
            if is_last && config.always_run_last && exited.is_some() {
                let all = Rows::all(batch, &device);
                let e = exited.take().expect("checked");
                let input = merge_rows(vec![(&active, x.clone()), (&e.rows, e.streams)]);
                let step = lm
                    .layer(
                        l,
                        LayerCall {
                            run: (&all, input),
                            skip: None,
                        },
                        &mut cache,
                    )
                    .expect("every row runs the last layer");
                for r in 0..batch {
                    layers_run[r] += 1;
                    flops[r] += lm.layer_flops(l, position);
                }
                final_stream = Some((all, step.stream));
                break;
            }
            let skip = exited
                .as_ref()
                .map(|e| (&e.rows, e.streams.clone(), config.skip_rule));
            let step = lm.layer(
                l,
                LayerCall {
                    run: (&active, x.clone()),
                    skip,
                },
                &mut cache,
            );
            for &r in &active.indices {
                layers_run[r] += 1;
                flops[r] += lm.layer_flops(l, position);
            }
            if let Some(e) = &exited {
                for &r in &e.rows.indices {
                    flops[r] += lm.skip_flops(l, config.skip_rule);
                }
            }
            let Some(step) = step else {
                // Every row has exited; this layer only filled caches.
                continue;
            };
            let previous = std::mem::replace(&mut x, step.stream);
            if is_last {
                final_stream = Some((active.clone(), x.clone()));
                break;
            }
            if layer > last_check {
                continue;
            }
            for &r in &active.indices {
                flops[r] += measure_flops(layer);
            }
            // The score of each active row at this layer, when it is an exit position.
            let mut scores: Option<Vec<f32>> = None;
            let needs_logits = config.rule.needs_prediction() && exits.contains(&layer)
                || classifier.is_some_and(|(c, spec)| c.needs_confidence(spec));
            let logits = needs_logits.then(|| lm.head(lm.final_norm(x.clone())));
            if let Some((c, spec)) = classifier
                && c.runs_at(spec, layer)
            {
                let confidence = c.needs_confidence(spec).then(|| {
                    confidence_summary(
                        logits.clone().expect("computed"),
                        previous.clone(),
                        x.clone(),
                    )
                });
                let state = clf_state.as_mut().expect("a classifier has a state");
                if let Some(out) = c.step(spec, layer, step.features.clone(), confidence, state) {
                    scores = Some(to_host(exit_probability(out)));
                }
            }
            if exits.contains(&layer) {
                match config.rule {
                    TokenRule::Softmax(_) | TokenRule::Margin(_) => {
                        let host = to_host(logits.clone().expect("computed"));
                        scores = Some(
                            host.chunks(vocab)
                                .map(|row| {
                                    let p = softmax(row);
                                    let mut top = [0.0f32; 2];
                                    for &v in &p {
                                        if v > top[0] {
                                            top = [v, top[0]];
                                        } else if v > top[1] {
                                            top[1] = v;
                                        }
                                    }
                                    if matches!(config.rule, TokenRule::Softmax(_)) {
                                        top[0]
                                    } else {
                                        top[0] - top[1]
                                    }
                                })
                                .collect(),
                        );
                    }
                    TokenRule::Saturation(_) => {
                        scores = Some(to_host(saturation(previous, x.clone())));
                    }
                    _ => {}
                }
            }
            let leaving: Vec<usize> = match (config.rule, scores) {
                (TokenRule::Fixed(f), _) if f == layer => (0..active.len()).collect(),
                (rule, Some(scores)) if exits.contains(&layer) => {
                    let t = rule.threshold();
                    (0..active.len())
                        .filter(|&i| scores[i] as f64 > t)
                        .collect()
                }
                _ => Vec::new(),
            };
            if leaving.is_empty() {
                continue;
            }
            let staying: Vec<usize> = (0..active.len()).filter(|i| !leaving.contains(i)).collect();
            for &i in &leaving {
                exit_layer[active.indices[i]] = layer;
            }
            let leaving_index = index_tensor(&leaving, &device);
            let leaving_streams = x.clone().select(0, leaving_index.clone());
            let leaving_logits = match (&logits, config.always_run_last) {
                (Some(l), false) => Some(l.clone().select(0, leaving_index)),
                _ => None,
            };
            let leaving_rows: Vec<usize> = leaving.iter().map(|&i| active.indices[i]).collect();
            exited = Some(match exited.take() {
                None => Exited {
                    rows: Rows::new(leaving_rows, batch, &device),
                    streams: leaving_streams,
                    logits: leaving_logits,
                },
                Some(e) => {
                    let mut rows: Vec<usize> = e.rows.indices.clone();
                    rows.extend(&leaving_rows);
                    let mut order: Vec<usize> = (0..rows.len()).collect();
                    order.sort_by_key(|&i| rows[i]);
                    let order_tensor = index_tensor(&order, &device);
                    let sorted_rows: Vec<usize> = order.iter().map(|&i| rows[i]).collect();
                    let join = |a: Tensor<2>, b: Tensor<2>| {
                        Tensor::cat(vec![a, b], 0).select(0, order_tensor.clone())
                    };
                    Exited {
                        rows: Rows::new(sorted_rows, batch, &device),
                        streams: join(e.streams, leaving_streams),
                        logits: match (e.logits, leaving_logits) {
                            (Some(a), Some(b)) => Some(join(a, b)),
                            _ => None,
                        },
                    }
                }
            });
            if staying.is_empty() {
                active = Rows::new(Vec::new(), batch, &device);
            } else {
                let keep = index_tensor(&staying, &device);
                x = x.select(0, keep.clone());
                if let Some(state) = clf_state.as_mut() {
                    state.select_rows(keep);
                }
                active = Rows::new(
                    staying.iter().map(|&i| active.indices[i]).collect(),
                    batch,
                    &device,
                );
            }
        }
        // The emitted predictions: the final head on the rows that ran the last layer, and
        // on exited rows' streams unless their exit measure already computed them.
        let mut parts = Vec::new();
        let mut headed = Vec::new();
        if let Some((rows, stream)) = &final_stream
            && !rows.is_empty()
        {
            parts.push((rows.clone(), lm.head(lm.final_norm(stream.clone()))));
            headed.extend(rows.indices.iter().copied());
        }
        if let Some(e) = exited.take() {
            match e.logits {
                Some(l) => parts.push((e.rows, l)),
                None => {
                    headed.extend(e.rows.indices.iter().copied());
                    parts.push((e.rows, lm.head(lm.final_norm(e.streams))));
                }
            }
        }
        for r in headed {
            flops[r] += lm.head_flops();
        }
        let logits = merge_rows(parts.iter().map(|(r, t)| (r, t.clone())).collect());
        let log_probs = targets.map(|_| to_host(log_softmax(logits.clone(), 1)));
        let host = to_host(logits);
        for r in 0..batch {
            tokens[r].push(argmax(&host[r * vocab..(r + 1) * vocab]));
            out.exit_layers[r].push(exit_layer[r]);
            out.layers_run[r].push(layers_run[r]);
            out.flops[r].push(flops[r]);
            out.full_flops[r].push(full);
            if let (Some(lp), Some(t), Some(acc)) =
                (&log_probs, targets, out.target_log_probs.as_mut())
            {
                acc[r].push(lp[r * vocab + t[r][s - 1]] as f64);
            }
        }
    }
    out.tokens = tokens;
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

//! Token-level early exit (DYNAMAX, CALM) on both language models: never exiting is
//! full-depth greedy decoding, a forced exit emits that layer's prediction, every cache
//! rule leaves its documented state, batched decoding with exits equals decoding each
//! row alone, and compute is counted. The transformer checks run on the decoder trained
//! here and on the imported GPT-2 and Llama checkpoints (rotary positions, grouped-query
//! attention) of `scripts/decoder_reference.py`.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::{LayerCall, Rows, SkipRule, TokenLm, argmax, to_host};
use ponder_exits::token::{
    ExitClassifierSpec, SummaryInput, TokenExitConfig, TokenRule, confidence_summary,
    exit_probability,
};
use ponder_mamba::{MambaConfig, MambaLm, Sampling, generate};
use ponder_models::{ExitClassifier, decode};
use ponder_transformer::{DecoderConfig, DecoderLm};

const VOCAB: usize = 29;

fn mamba(device: &Device) -> MambaLm {
    mamba_scaled(device, 30.0)
}

fn mamba_scaled(device: &Device, scale: f32) -> MambaLm {
    device.seed(3);
    let mut lm = MambaConfig::new(VOCAB, 24, 4)
        .with_d_state(8)
        .init_lm(device);
    for block in lm.mamba.layers.iter_mut() {
        let m = &mut block.mixer;
        m.x_proj.weight = m.x_proj.weight.clone().map(|w| w.mul_scalar(4.0));
        m.dt_proj.bias = m.dt_proj.bias.clone().map(|b| b.map(|b| b.add_scalar(1.5)));
    }
    lm.mamba.embedding.weight = lm
        .mamba
        .embedding
        .weight
        .clone()
        .map(|w| w.mul_scalar(scale));
    lm
}

fn transformer(device: &Device) -> DecoderLm {
    transformer_scaled(device, 30.0)
}

fn transformer_scaled(device: &Device, scale: f32) -> DecoderLm {
    device.seed(5);
    let mut lm = DecoderConfig::new(VOCAB, 24, 4, 4, 48, 64).init_lm(device);
    lm.token_embedding.weight = lm
        .token_embedding
        .weight
        .clone()
        .map(|w| w.mul_scalar(scale));
    for block in lm.layers.iter_mut() {
        for linear in [
            &mut block.wq,
            &mut block.wk,
            &mut block.wv,
            &mut block.ff_in,
        ] {
            linear.weight = linear.weight.clone().map(|w| w.mul_scalar(10.0));
        }
    }
    lm
}

/// An imported checkpoint of `crates/ponder-transformer/tests/data` (4 layers).
fn imported(name: &str, device: &Device) -> DecoderLm {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ponder-transformer/tests/data")
        .join(name);
    ponder_transformer::load_hf_decoder(dir, device)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .lm
}

fn imported_decoders(device: &Device) -> [DecoderLm; 2] {
    [
        imported("tiny-gpt2", device),
        imported("tiny-llama", device),
    ]
}

fn prompts(batch: usize, len: usize) -> Vec<Vec<usize>> {
    (0..batch)
        .map(|r| (0..len).map(|i| (7 * r + 3 * i + 1) % VOCAB).collect())
        .collect()
}

fn config(rule: TokenRule, skip_rule: SkipRule, always_run_last: bool) -> TokenExitConfig {
    TokenExitConfig {
        rule,
        exits: vec![1, 2, 3],
        skip_rule,
        always_run_last,
    }
}

/// Full-depth greedy decoding of a decoder with its own prefill and step.
fn transformer_greedy(lm: &DecoderLm, prompt: &[usize], n: usize) -> Vec<usize> {
    let device = lm.device();
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            prompt.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, prompt.len()],
        ),
        &device,
    );
    let (logits, mut cache) = lm.forward_prefill(ids);
    let last = to_host(logits.narrow(1, prompt.len() - 1, 1));
    let mut tokens = vec![argmax(&last)];
    while tokens.len() < n {
        let input = Tensor::<1, Int>::from_data(
            TensorData::new(vec![*tokens.last().unwrap() as i64], [1]),
            &device,
        );
        tokens.push(argmax(&to_host(lm.step(input, &mut cache))));
    }
    tokens
}

fn mamba_greedy(lm: &MambaLm, prompt: &[usize], n: usize) -> Vec<usize> {
    let sampling = Sampling {
        temperature: 0.0,
        seed: 0,
    };
    let out = generate(lm, prompt, n - 1, sampling).unwrap();
    // `generate` returns the tokens after the first prediction too: the first is the
    // prompt's prediction.
    out.tokens
}

#[test]
fn never_exit_is_full_depth_greedy_decoding() {
    let device = Device::default();
    let m = mamba(&device);
    // the decoder trained here and the imported GPT-2 and Llama checkpoints
    let [gpt2, llama] = imported_decoders(&device);
    let transformers = [transformer(&device), gpt2, llama];
    for batch in [1, 3] {
        let p = prompts(batch, 5);
        for (rule, always) in [(TokenRule::Never, false), (TokenRule::Softmax(1.5), true)] {
            let dm = decode(
                &m,
                &config(rule, SkipRule::Unadvanced, always),
                None,
                &p,
                12,
                None,
                None,
            )
            .unwrap();
            for r in 0..batch {
                let mut greedy = vec![];
                greedy.extend(mamba_greedy(&m, &p[r], 13));
                assert_eq!(dm.tokens[r], greedy[..12].to_vec(), "mamba row {r}");
                assert!(dm.exit_layers[r].iter().all(|&l| l == 4));
                if rule == TokenRule::Never {
                    assert_eq!(dm.flops[r], dm.full_flops[r]);
                } else {
                    // the measure is computed at every exit position and costs
                    assert!(dm.flops[r][0] > dm.full_flops[r][0]);
                }
            }
            for (i, t) in transformers.iter().enumerate() {
                let dt = decode(
                    t,
                    &config(rule, SkipRule::Copy, always),
                    None,
                    &p,
                    12,
                    None,
                    None,
                )
                .unwrap();
                for r in 0..batch {
                    assert_eq!(
                        dt.tokens[r],
                        transformer_greedy(t, &p[r], 12),
                        "transformer {i} row {r}"
                    );
                    if rule == TokenRule::Never {
                        assert_eq!(dt.flops[r], dt.full_flops[r]);
                    }
                    assert!(dt.layers_run[r].iter().all(|&l| l == 4));
                }
            }
        }
    }
}

/// The argmax of layer `layer`'s intermediate prediction at every position of `ids`.
fn layer_argmax<L: TokenLm>(lm: &L, ids: &[usize], layer: usize) -> Vec<usize> {
    let device = lm.device();
    let t = Tensor::<2, Int>::from_data(
        TensorData::new(
            ids.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, ids.len()],
        ),
        &device,
    );
    let layers = lm.sequence_layers(t);
    let logits = to_host(lm.sequence_logits(layers.streams[layer - 1].clone()));
    logits.chunks(lm.vocab_size()).map(argmax).collect()
}

fn check_forced_exit<L: TokenLm>(lm: &L, rules: &[SkipRule]) {
    let p = prompts(2, 4);
    for &rule in rules {
        for layer in 1..lm.n_layers() {
            let d = decode(
                lm,
                &config(TokenRule::Fixed(layer), rule, false),
                None,
                &p,
                10,
                None,
                None,
            )
            .unwrap();
            for r in 0..2 {
                let mut seq = p[r].clone();
                seq.extend(&d.tokens[r][..9]);
                let expected = layer_argmax(lm, &seq, layer);
                for s in 1..10 {
                    assert_eq!(
                        d.tokens[r][s],
                        expected[p[r].len() - 1 + s],
                        "layer {layer}, rule {rule:?}, row {r}, token {s}"
                    );
                }
                assert!(d.exit_layers[r].iter().all(|&l| l == layer));
                assert!(d.layers_run[r].iter().all(|&l| l == layer));
            }
        }
    }
}

#[test]
fn a_forced_exit_emits_that_layers_prediction() {
    let device = Device::default();
    check_forced_exit(
        &mamba(&device),
        &[SkipRule::Unadvanced, SkipRule::Recompute],
    );
    check_forced_exit(
        &transformer(&device),
        &[SkipRule::Copy, SkipRule::Recompute],
    );
    for lm in imported_decoders(&device) {
        check_forced_exit(&lm, &[SkipRule::Copy, SkipRule::Recompute]);
    }
}

fn max_diff(a: Vec<f32>, b: Vec<f32>) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs one token through layers 0..=exit for all rows, then layer `skipped` with rows
/// `skip` skipping it (exited with their stream after layer `exit`) and the others
/// running it. Returns the exited streams, the cache before and after.
fn one_token<L: TokenLm>(
    lm: &L,
    rule: SkipRule,
    skip: &[usize],
) -> (Tensor<2>, L::Cache, L::Cache) {
    let device = lm.device();
    let p = prompts(3, 4);
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            p.iter().flatten().map(|&t| t as i64).collect::<Vec<_>>(),
            [3, 4],
        ),
        &device,
    );
    let (_, mut cache) = lm.prefill(ids);
    let all = Rows::all(3, &device);
    let input = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [3]), &device);
    let x = lm.embed(input, lm.cache_len(&cache));
    let x = lm
        .layer(
            0,
            LayerCall {
                run: (&all, x),
                skip: None,
            },
            &mut cache,
        )
        .unwrap()
        .stream;
    let before = cache.clone();
    let skip_rows = Rows::new(skip.to_vec(), 3, &device);
    let run: Vec<usize> = (0..3).filter(|r| !skip.contains(r)).collect();
    let run_rows = Rows::new(run, 3, &device);
    let exited = x.clone().select(0, skip_rows.tensor.clone());
    let step = lm.layer(
        1,
        LayerCall {
            run: (&run_rows, x.clone().select(0, run_rows.tensor.clone())),
            skip: Some((&skip_rows, exited.clone(), rule)),
        },
        &mut cache,
    );
    assert_eq!(step.is_some(), !run_rows.is_empty());
    (exited, before, cache)
}

#[test]
fn transformer_cache_rules_write_the_documented_kv() {
    let device = Device::default();
    check_transformer_cache_rules(&transformer(&device));
    for lm in imported_decoders(&device) {
        check_transformer_cache_rules(&lm);
    }
}

fn check_transformer_cache_rules(lm: &DecoderLm) {
    let device = lm.device();
    for skip in [vec![1], vec![0, 2], vec![0, 1, 2]] {
        let rows = Rows::new(skip.clone(), 3, &device);
        // Copy: the skipping rows' new position holds their previous position's K/V.
        let (_, before, after) = one_token(lm, SkipRule::Copy, &skip);
        let (k_prev, v_prev) = before.layers[1].last().unwrap();
        let (k_new, v_new) = after.layers[1].last().unwrap();
        assert_eq!(after.layers[1].len(), before.layers[1].len() + 1);
        assert_eq!(
            max_diff(
                to_host(k_new.select(0, rows.tensor.clone())),
                to_host(k_prev.select(0, rows.tensor.clone()))
            ),
            0.0
        );
        assert_eq!(
            max_diff(
                to_host(v_new.select(0, rows.tensor.clone())),
                to_host(v_prev.select(0, rows.tensor.clone()))
            ),
            0.0
        );
        // Recompute: they hold the layer's K/V projections of the exited state.
        // (with rotary positions, the keys rotated to the new position)
        let (exited, before, after) = one_token(lm, SkipRule::Recompute, &skip);
        let (k_new, v_new) = after.layers[1].last().unwrap();
        let (k_ref, v_ref) = lm.layers[1].kv(exited, before.layers[1].len());
        assert!(
            max_diff(
                to_host(k_new.select(0, rows.tensor.clone())),
                to_host(k_ref)
            ) < 1e-5
        );
        assert!(
            max_diff(
                to_host(v_new.select(0, rows.tensor.clone())),
                to_host(v_ref)
            ) < 1e-5
        );
        // The running rows' K/V are what a full step writes.
        let run: Vec<usize> = (0..3).filter(|r| !skip.contains(r)).collect();
        if !run.is_empty() {
            let (_, before, after) = one_token(lm, SkipRule::Copy, &[]);
            let _ = before;
            let (_, _, mixed) = one_token(lm, SkipRule::Copy, &skip);
            let run_rows = Rows::new(run, 3, &device);
            let pick = |c: &ponder_transformer::KvCache| {
                to_host(
                    c.layers[1]
                        .last()
                        .unwrap()
                        .0
                        .select(0, run_rows.tensor.clone()),
                )
            };
            assert!(max_diff(pick(&after), pick(&mixed)) < 1e-5);
        }
    }
    assert!(lm.check_rule(SkipRule::Unadvanced).is_err());
}

#[test]
fn mamba_cache_rules_write_the_documented_state() {
    let device = Device::default();
    let lm = mamba(&device);
    for skip in [vec![1], vec![0, 2], vec![0, 1, 2]] {
        let rows = Rows::new(skip.clone(), 3, &device);
        // Unadvanced: the skipping rows' states are exactly as before the token.
        let (_, before, after) = one_token(&lm, SkipRule::Unadvanced, &skip);
        let state = |c: &ponder_mamba::MambaCache| {
            let s = c.state.layers[1].select_rows(rows.tensor.clone());
            (to_host(s.conv), to_host(s.ssm))
        };
        assert_eq!(state(&before), state(&after));
        // Recompute: they are the state after stepping the layer on the exited stream.
        let (exited, before, after) = one_token(&lm, SkipRule::Recompute, &skip);
        let mut expected = before.state.layers[1].select_rows(rows.tensor.clone());
        lm.mamba.layers[1].step(exited, &mut expected);
        let (conv, ssm) = state(&after);
        assert!(max_diff(conv.clone(), to_host(expected.conv)) < 1e-5);
        assert!(max_diff(ssm.clone(), to_host(expected.ssm)) < 1e-5);
        assert!(
            max_diff(conv, state(&before).0) > 1e-3,
            "recompute must move the state"
        );
    }
    assert!(lm.check_rule(SkipRule::Copy).is_err());
}

/// Thresholds between the P(exit) values `classifier` gives on the prompts' positions
/// (their quintiles), so that some rows exit where others do not whatever the weights.
fn spread_thresholds<L: TokenLm>(
    lm: &L,
    classifier: &ExitClassifier,
    spec: &ExitClassifierSpec,
    prompts: &[Vec<usize>],
) -> Vec<f64> {
    let device = lm.device();
    let (b, t) = (prompts.len(), prompts[0].len());
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            prompts
                .iter()
                .flatten()
                .map(|&x| x as i64)
                .collect::<Vec<_>>(),
            [b, t],
        ),
        &device,
    );
    let layers = lm.sequence_layers(ids);
    let (n, d, f) = (b * t, lm.d_model(), lm.feature_size());
    let mut features = Vec::new();
    let mut confidence = Vec::new();
    for l in 0..spec.last_exit() {
        let previous = if l == 0 {
            layers.input.clone()
        } else {
            layers.streams[l - 1].clone()
        };
        let logits = lm
            .sequence_logits(layers.streams[l].clone())
            .reshape([n, lm.vocab_size()]);
        confidence.push(confidence_summary(
            logits,
            previous.reshape([n, d]),
            layers.streams[l].clone().reshape([n, d]),
        ));
        features.push(layers.features[l].clone().reshape([n, f]));
    }
    let mut p: Vec<f64> = classifier
        .forward_exits(spec, &features, &confidence)
        .into_iter()
        .flat_map(|l| to_host(exit_probability(l)))
        .map(f64::from)
        .collect();
    p.sort_by(f64::total_cmp);
    (1..5).map(|q| p[q * p.len() / 5]).collect()
}

fn check_batch_equals_rows<L: TokenLm>(lm: &L, rules: &[SkipRule]) {
    let p = prompts(4, 3);
    let mut mixed = false;
    // Classifier rules: untrained linear and Mamba classifiers (both summaries); the
    // Mamba classifier's per-row state must follow the rows that stay.
    let device = lm.device();
    device.seed(11);
    let specs = [
        ExitClassifierSpec::linear(vec![1, 2, 3], 1),
        ExitClassifierSpec::mamba(vec![1, 2, 3], 1, SummaryInput::Hidden),
        ExitClassifierSpec::mamba(vec![1, 2, 3], 1, SummaryInput::Confidence),
    ];
    for spec in &specs {
        // weights scaled up so that P(exit) differs between rows
        let classifier = match ExitClassifier::new(spec, lm.feature_size(), &device) {
            ExitClassifier::Linear(mut l) => {
                for head in l.heads.iter_mut() {
                    head.weight = head.weight.clone().map(|w| w.mul_scalar(20.0));
                }
                ExitClassifier::Linear(l)
            }
            ExitClassifier::Mamba(mut m) => {
                m.summary.weight = m.summary.weight.clone().map(|w| w.mul_scalar(5.0));
                ExitClassifier::Mamba(m)
            }
        };
        let mut spec_mixed = false;
        for always in [false, true] {
            for t in spread_thresholds(lm, &classifier, spec, &p) {
                let c = config(TokenRule::Classifier(t), rules[0], always);
                let with = Some((&classifier, spec));
                let batched = decode(lm, &c, with, &p, 8, None, None).unwrap();
                for r in 0..4 {
                    let alone = decode(lm, &c, with, &p[r..r + 1], 8, None, None).unwrap();
                    assert_eq!(
                        batched.tokens[r],
                        alone.tokens[0],
                        "{} {t} row {r}",
                        spec.name()
                    );
                    assert_eq!(batched.exit_layers[r], alone.exit_layers[0]);
                    assert_eq!(batched.flops[r], alone.flops[0]);
                }
                // within one token, rows of the batch exit at different layers
                spec_mixed |= (0..7).any(|s| {
                    let at: Vec<usize> = batched.exit_layers.iter().map(|row| row[s]).collect();
                    at.iter().any(|&l| l != at[0])
                });
            }
        }
        assert!(
            spec_mixed,
            "{}: rows never exited at different layers",
            spec.name()
        );
    }
    for &skip_rule in rules {
        for always in [false, true] {
            let rules = (1..10).flat_map(|i| {
                let t = i as f64 / 10.0 + 0.0137;
                [
                    TokenRule::Softmax(t),
                    TokenRule::Margin(t),
                    TokenRule::Saturation(1.0 - t * t / 5.0),
                ]
            });
            for rule in rules {
                let c = config(rule, skip_rule, always);
                let batched = decode(lm, &c, None, &p, 8, None, None).unwrap();
                for r in 0..4 {
                    let alone = decode(lm, &c, None, &p[r..r + 1], 8, None, None).unwrap();
                    assert_eq!(
                        batched.tokens[r], alone.tokens[0],
                        "{rule:?} {skip_rule:?} row {r}"
                    );
                    assert_eq!(batched.exit_layers[r], alone.exit_layers[0]);
                    assert_eq!(batched.flops[r], alone.flops[0]);
                }
                mixed |= (0..7).any(|s| {
                    let at: Vec<usize> = batched.exit_layers.iter().map(|row| row[s]).collect();
                    at.iter().any(|&l| l != at[0])
                });
            }
        }
    }
    assert!(
        mixed,
        "the thresholds never made rows exit at different layers"
    );
}

#[test]
fn batched_decoding_with_exits_equals_decoding_each_row() {
    let device = Device::default();
    check_batch_equals_rows(
        &mamba_scaled(&device, 3.0),
        &[SkipRule::Unadvanced, SkipRule::Recompute],
    );
    check_batch_equals_rows(
        &transformer_scaled(&device, 3.0),
        &[SkipRule::Copy, SkipRule::Recompute],
    );
    for lm in imported_decoders(&device) {
        check_batch_equals_rows(&lm, &[SkipRule::Copy, SkipRule::Recompute]);
    }
}

#[test]
fn exit_compute_is_counted() {
    let device = Device::default();
    let lm = transformer(&device);
    let p = prompts(1, 3);
    for (rule, always) in [
        (SkipRule::Copy, false),
        (SkipRule::Recompute, false),
        (SkipRule::Recompute, true),
    ] {
        let d = decode(
            &lm,
            &config(TokenRule::Fixed(1), rule, always),
            None,
            &p,
            4,
            None,
            None,
        )
        .unwrap();
        for s in 0..3 {
            let position = 3 + s;
            let mut expected = lm.embed_flops() + lm.head_flops() + lm.layer_flops(0, position);
            let skipped = if always { 2 } else { 3 };
            expected += skipped * lm.skip_flops(1, rule);
            if always {
                expected += lm.layer_flops(3, position);
            }
            assert_eq!(
                d.flops[0][s], expected,
                "{rule:?} always {always} token {s}"
            );
            assert_eq!(d.layers_run[0][s], if always { 2 } else { 1 });
        }
    }
}

#[test]
fn exit_measures_are_counted_once_and_reused_as_the_prediction() {
    let device = Device::default();
    let lm = transformer(&device);
    let p = prompts(1, 3);
    let (embed, head, vocab) = (lm.embed_flops(), lm.head_flops(), VOCAB as u64);
    for always in [false, true] {
        // Softmax(−1) exits every token after layer 1; its measure computed layer 1's
        // logits, which are the emitted prediction unless the last layer runs.
        let d = decode(
            &lm,
            &config(TokenRule::Softmax(-1.0), SkipRule::Copy, always),
            None,
            &p,
            3,
            None,
            None,
        )
        .unwrap();
        for s in 0..2 {
            let position = 3 + s;
            let mut expected = embed + lm.layer_flops(0, position) + head + 3 * vocab;
            if always {
                expected += lm.layer_flops(3, position) + head;
            }
            assert_eq!(d.flops[0][s], expected, "always {always}, token {s}");
        }
        // and the emitted tokens are layer 1's argmax without the last layer
        if !always {
            let fixed = decode(
                &lm,
                &config(TokenRule::Fixed(1), SkipRule::Copy, false),
                None,
                &p,
                3,
                None,
                None,
            )
            .unwrap();
            assert_eq!(d.tokens, fixed.tokens);
        }
    }
}

#[test]
fn mamba_recompute_is_charged_the_state_update_only() {
    let device = Device::default();
    let lm = mamba(&device);
    let (d, di, n, r, k) = (24u64, 48u64, 8u64, 2u64, 4u64);
    // RMSNorm, the x half of in_proj, x_proj, dt_proj (+ bias), the update and the
    // convolution with its SiLU and Δ's softplus
    let expected =
        5 * d + 2 * d * di + 2 * di * (r + 2 * n) + 2 * r * di + di + 5 * di * n + di * (2 * k + 6);
    assert_eq!(lm.skip_flops(1, SkipRule::Recompute), expected);
    assert!(expected < lm.layer_flops(1, 0) / 2 + lm.layer_flops(1, 0) / 4);
    assert_eq!(lm.skip_flops(1, SkipRule::Unadvanced), 0);
}

#[test]
fn teacher_forcing_scores_the_targets() {
    let device = Device::default();
    let lm = mamba(&device);
    let p = prompts(2, 4);
    let text: Vec<Vec<usize>> = (0..2)
        .map(|r| (0..8).map(|i| (r + 5 * i) % VOCAB).collect())
        .collect();
    let targets: Vec<Vec<usize>> = text.iter().map(|t| t[1..].to_vec()).collect();
    let c = config(TokenRule::Never, SkipRule::Unadvanced, false);
    let d = decode(&lm, &c, None, &p, 8, Some(&text), Some(&targets)).unwrap();
    // At full depth, stepped token s feeds text[s − 1] at position 4 + s − 1 and is
    // scored on text[s]: the full model's log-softmax there.
    for r in 0..2 {
        let mut seq = p[r].clone();
        seq.extend(&text[r]);
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(
                seq.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [1, seq.len()],
            ),
            &device,
        );
        let logits = to_host(lm.forward(ids));
        let lp = &d.target_log_probs.as_ref().unwrap()[r];
        assert_eq!(lp.len(), 7);
        for s in 1..8 {
            let row = &logits[(4 + s - 1) * VOCAB..(4 + s) * VOCAB];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_z = row
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            let expected = row[text[r][s]] as f64 - log_z;
            assert!(
                (lp[s - 1] - expected).abs() < 1e-3,
                "row {r} token {s}: {} vs {expected}",
                lp[s - 1]
            );
            // teacher forcing: the emitted token is the full model's argmax there
            assert_eq!(d.tokens[r][s], argmax(row));
        }
    }
    let bad = decode(&lm, &c, None, &p, 8, Some(&text[..1]), None);
    assert!(bad.is_err());
}

#[test]
fn classifier_rules_need_a_classifier_and_valid_specs() {
    let device = Device::default();
    let lm = mamba(&device);
    let p = prompts(1, 3);
    let c = config(TokenRule::Classifier(0.5), SkipRule::Unadvanced, true);
    assert!(decode(&lm, &c, None, &p, 4, None, None).is_err());
    let spec = ExitClassifierSpec::mamba(vec![1, 2, 3], 1, SummaryInput::Confidence);
    let classifier = ExitClassifier::new(&spec, lm.feature_size(), &device);
    let d = decode(&lm, &c, Some((&classifier, &spec)), &p, 6, None, None).unwrap();
    assert_eq!(d.tokens[0].len(), 6);
    assert!(
        ExitClassifierSpec::linear(vec![1, 4], 1)
            .validate(4, VOCAB, "c")
            .is_err()
    );
    assert!(
        ExitClassifierSpec::linear(vec![1, 2], 0)
            .validate(4, VOCAB, "c")
            .is_err()
    );
    assert!(
        decode(
            &lm,
            &config(TokenRule::Never, SkipRule::Copy, false),
            None,
            &p,
            4,
            None,
            None
        )
        .is_err()
    );
}

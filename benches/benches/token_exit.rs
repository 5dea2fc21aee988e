//! Token-level early-exit generation (`ponder_models::decode`) against
//! full-depth generation, in generated tokens per second, at batch 1 and batch 8, for
//! the two Shakespeare language-model shapes (vocabulary 84, d = 128, 4 layers: Mamba
//! with n = 16; a transformer decoder with 4 heads and d_ff = 256), on the flex CPU
//! backend, evaluation mode.
//!
//! Each call prefills a 16-token prompt and generates 48 tokens greedily (47 through the
//! exiting decoder, each read back to the host to pick the next token, as real
//! generation does). Exit rates are fixed so that the cases are comparable:
//! * `full`: every token runs the 4 layers;
//! * `exit1` / `exit2`: every token exits after layer 1 / 2 and emits that layer's
//!   prediction, the skipped layers' caches filled by recomputation (K/V projections,
//!   or Mamba's state-only update);
//! * `exit1-free`: the same with the free rule (transformer: copy the previous K/V;
//!   Mamba: leave the states un-advanced);
//! * `exit1-last`: exit after layer 1 but run the last layer (DYNAMAX);
//! * `exit1-linear` / `exit1-mamba`: exit after layer 1 decided by a linear / Mamba exit
//!   classifier (threshold −1, so every token exits there): the classifiers' overhead.
//!
//! The summary (stderr) prints each case's median tokens/s and its speed-up over
//! `full` at the same batch size.
//!
//! With a pretrained checkpoint folder (`PONDER_BENCH_LM=FOLDER`, by default
//! `data/smollm2-135m` from `scripts/fetch-data.sh smollm2` when it is there), the same
//! cases run on it with exits after layers 6, 12 and 18 (`exit1` = layer 6, `exit2` =
//! layer 12) and 8 generated tokens per call.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ponder_core::{SkipRule, TokenLm};
use ponder_exits::token::{ExitClassifierSpec, SummaryInput, TokenExitConfig, TokenRule};
use ponder_mamba::MambaConfig;
use ponder_models::{ExitClassifier, decode};
use ponder_transformer::DecoderConfig;

const VOCAB: usize = 84;
const PROMPT: usize = 16;
const GENERATED: usize = 48;
const BATCHES: [usize; 2] = [1, 8];

fn prompts(batch: usize) -> Vec<Vec<usize>> {
    (0..batch)
        .map(|r| (0..PROMPT).map(|i| (r * 17 + i * 31 + 7) % VOCAB).collect())
        .collect()
}

struct Case {
    name: &'static str,
    config: TokenExitConfig,
    classifier: Option<(ExitClassifier, ExitClassifierSpec)>,
}

/// The cases for exit positions `exits` (`exit1` = the first, `exit2` = the second).
fn cases<L: TokenLm>(lm: &L, free_rule: SkipRule, exits: [usize; 3], device: &Device) -> Vec<Case> {
    let config = |rule, skip_rule, always_run_last| TokenExitConfig {
        rule,
        exits: exits.to_vec(),
        skip_rule,
        always_run_last,
    };
    let linear = ExitClassifierSpec::linear(exits.to_vec(), 1);
    let mamba = ExitClassifierSpec::mamba(exits.to_vec(), 1, SummaryInput::Hidden);
    let recompute = SkipRule::Recompute;
    vec![
        Case {
            name: "full",
            config: config(TokenRule::Never, recompute, false),
            classifier: None,
        },
        Case {
            name: "exit2",
            config: config(TokenRule::Fixed(exits[1]), recompute, false),
            classifier: None,
        },
        Case {
            name: "exit1",
            config: config(TokenRule::Fixed(exits[0]), recompute, false),
            classifier: None,
        },
        Case {
            name: "exit1-free",
            config: config(TokenRule::Fixed(exits[0]), free_rule, false),
            classifier: None,
        },
        Case {
            name: "exit1-last",
            config: config(TokenRule::Fixed(exits[0]), recompute, true),
            classifier: None,
        },
        Case {
            name: "exit1-linear",
            config: config(TokenRule::Classifier(-1.0), recompute, false),
            classifier: Some((
                ExitClassifier::new(&linear, lm.feature_size(), device).valid(),
                linear,
            )),
        },
        Case {
            name: "exit1-mamba",
            config: config(TokenRule::Classifier(-1.0), recompute, false),
            classifier: Some((
                ExitClassifier::new(&mamba, lm.feature_size(), device).valid(),
                mamba,
            )),
        },
    ]
}

fn run<L: TokenLm>(lm: &L, case: &Case, prompts: &[Vec<usize>], generated: usize) -> Duration {
    let start = Instant::now();
    let out = decode(
        lm,
        &case.config,
        case.classifier.as_ref().map(|(c, s)| (c, s)),
        prompts,
        generated,
        None,
        None,
    )
    .expect("decoding");
    let elapsed = start.elapsed();
    drop(out);
    elapsed
}

/// How a model is benched: its free skip rule, exit positions and tokens per call.
struct Setup {
    free_rule: SkipRule,
    exits: [usize; 3],
    generated: usize,
}

fn bench_model<L: TokenLm>(c: &mut Criterion, name: &str, lm: &L, setup: Setup, device: &Device) {
    let generated = setup.generated;
    let cases = cases(lm, setup.free_rule, setup.exits, device);
    let mut summary = Vec::new();
    for batch in BATCHES {
        let p = prompts(batch);
        let mut group = c.benchmark_group(format!("token_exit/{name}/batch{batch}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .throughput(Throughput::Elements((batch * generated) as u64));
        let mut medians = Vec::new();
        for case in &cases {
            run(lm, case, &p, generated); // warm-up
            let mut times = Vec::new();
            group.bench_with_input(BenchmarkId::from_parameter(case.name), &p, |b, p| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let t = run(lm, case, p, generated);
                            times.push(t);
                            t
                        })
                        .sum()
                })
            });
            times.sort();
            medians.push(times.get(times.len() / 2).map(Duration::as_secs_f64));
        }
        group.finish();
        let full = medians[0];
        for (case, m) in cases.iter().zip(&medians) {
            if let (Some(m), Some(full)) = (m, full) {
                summary.push(format!(
                    "{name} batch {batch} {:<13} {:>8.0} tokens/s  speed-up {:.2}",
                    case.name,
                    (batch * generated) as f64 / m,
                    full / m
                ));
            }
        }
    }
    for line in summary {
        eprintln!("{line}");
    }
}

fn bench_token_exit(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(7);
    let mamba = MambaConfig::new(VOCAB, 128, 4)
        .with_d_state(16)
        .init_lm(&device)
        .valid();
    let small = |free_rule| Setup {
        free_rule,
        exits: [1, 2, 3],
        generated: GENERATED,
    };
    bench_model(c, "mamba", &mamba, small(SkipRule::Unadvanced), &device);
    let transformer = DecoderConfig::new(VOCAB, 128, 4, 4, 256, 128)
        .init_lm(&device)
        .valid();
    bench_model(
        c,
        "transformer",
        &transformer,
        small(SkipRule::Copy),
        &device,
    );

    let folder = std::env::var_os("PONDER_BENCH_LM").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/smollm2-135m"),
        std::path::PathBuf::from,
    );
    if !folder.join("config.json").is_file() {
        eprintln!(
            "no pretrained checkpoint in {} (scripts/fetch-data.sh smollm2, or PONDER_BENCH_LM=FOLDER): its cases are skipped",
            folder.display()
        );
        return;
    }
    let lm = ponder_transformer::load_hf_decoder(&folder, &device)
        .unwrap_or_else(|e| panic!("loading {}: {e}", folder.display()))
        .lm
        .valid();
    let setup = Setup {
        free_rule: SkipRule::Copy,
        exits: [6, 12, 18],
        generated: 8,
    };
    bench_model(c, "pretrained", &lm, setup, &device);
}

criterion_group!(benches, bench_token_exit);
criterion_main!(benches);

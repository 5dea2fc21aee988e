//! # ponder-models: early-exit methods as ready models
//!
//! Multi-exit classifiers on either backbone with the training of every method (PABEE,
//! DeeBERT, PALBERT, PonderNet, JEI-DNN), adaptive evaluation, PonderNet's parity model,
//! and the language models and exit classifiers of token-level early exit.
//!
//! ## Where it sits
//!
//! The one crate that joins the others: backbones from `ponder-transformer` and
//! `ponder-mamba`, heads, policies and losses from `ponder-exits`, the runner of
//! `ponder-core`, and data from `ponder-data` (plain vectors, which it turns into
//! tensors). The `ponder` program and the benches are built on it; calibration
//! (`ponder-calibration`) measures what it outputs. See `docs/architecture.md` in the
//! repository.
//!
//! ## Entry points
//!
//! * [`MultiExitConfig`] → [`MultiExitClassifier`]: a layer-wise [`Backbone`] (the
//!   transformer [`Encoder`](ponder_transformer::Encoder) or the Mamba stack
//!   [`MambaEncoder`](ponder_mamba::MambaEncoder)) with
//!   [`ClassifierHeads`](ponder_exits::ClassifierHeads) at every layer, and optionally a
//!   halting head (PonderNet, PALBERT) or JEI-DNN's gates.
//!   [`MultiExitClassifier::adaptive`] runs a batch under any exit policy (rows leave the
//!   batch at their exit), [`MultiExitClassifier::forward_all`] every exit for every row.
//! * [`Batch`] and [`ClassificationSource`]: how data reaches the model
//!   ([`ImageSource`] for images, [`TextSource`] for tokenized text).
//! * [`fit()`]: the training loop of every [`Method`] (AdamW, warm-up then linear decay,
//!   gradient clipping, evaluation every epoch, best checkpoint on validation, resumable
//!   checkpoints). [`Method::Pabee`] trains all exits with the depth-weighted loss,
//!   [`Method::DeeBert`] the final layer first and then the internal heads on the frozen
//!   backbone, [`Method::FinalOnly`] only the last head (the baseline).
//! * [`evaluate`]: a policy over a data set, with accuracy, [`ExitStats`](ponder_core::ExitStats)
//!   and wall-clock time; [`layer_accuracies`] / [`layer_outputs`]: every exit's.
//! * [`GateData`], [`gate_report`], [`refit_gates`]: JEI-DNN's gates against their
//!   targets; [`halting_optimum`]: a halting head against the per-row optimum of the
//!   PonderNet loss.
//! * [`ParityModel`], [`fit_parity`], [`evaluate_parity`]: PonderNet on the parity task.
//! * [`fit_lm`] / [`evaluate_lm`] / [`sample_lm`]: language models ([`WindowLm`]: Mamba or
//!   the transformer decoder) on an [`LmCorpus`](ponder_data::LmCorpus); and token-level
//!   early exit: DYNAMAX's exit classifiers trained on a frozen language model, generation
//!   with per-token exits, and their metrics.
//!
//! Runnable examples: `cargo run --release -p ponder-models --example adaptive_encoder`
//! (train a tiny multi-exit ViT, then exit early under a threshold) and
//! `cargo run -p ponder-models --example hf_encoder [FOLDER]` (a Hugging Face encoder as
//! a frozen backbone with exit heads).
//!
//! ## Example
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use ponder_exits::{FixedLayer, NeverExit};
//! use ponder_models::MultiExitConfig;
//! use ponder_transformer::{EncoderConfig, EncoderInput};
//!
//! let device = Device::flex();
//! // A 4-layer text encoder (H = 32, a vocabulary of 100) with a 3-class head after every
//! // layer; random weights (`fit` would train them).
//! let model = MultiExitConfig::new(EncoderConfig::tiny().into(), 3).init(&device);
//! let ids = TensorData::new(vec![1i64, 7, 42, 9, 2, 8], [2, 3]);
//! let input = EncoderInput::Tokens {
//!     ids: Tensor::<2, Int>::from_data(ids, &device),
//!     type_ids: None,
//!     mask_pad: None,
//! };
//!
//! let early = model.adaptive(input.clone(), &FixedLayer::new(2)?, None);
//! let full = model.adaptive(input, &NeverExit, None);
//! assert_eq!((early.exit_layer, full.exit_layer), (vec![2, 2], vec![4, 4]));
//! assert_eq!(early.logits.dims(), [2, 3]);
//! // the layers above the exit were never run
//! assert!(early.flops[0] < full.flops[0]);
//! # Ok::<(), ponder_core::PonderError>(())
//! ```

mod backbone;
mod checkpoint;
mod classifier;
mod eval;
mod gates;
mod lm;
mod method_name;
mod parity;
mod ponder_optimum;
mod source;
mod token_exit;
mod train;

pub use backbone::{Backbone, BackboneConfig, BackboneHidden, PrePooled};
pub use checkpoint::{CheckpointFiles, write_atomic};
pub use classifier::{MultiExitClassifier, MultiExitConfig};
pub use eval::{
    EvalOutput, LayerAccuracy, LayerOutputs, correlation, evaluate, layer_accuracies,
    layer_outputs, make_batches,
};
pub use gates::{
    GateData, GateReport, GateSummary, REFIT_MAX_ITERATIONS, REFIT_TOLERANCE, gate_report,
    refit_gates,
};
pub use lm::{
    LmLog, LmObserver, LmOutcome, LmScore, LmTrainConfig, LmTrainState, Sampled, WindowLm,
    evaluate_lm, fit_lm, sample_lm,
};
pub use parity::{
    DifficultyRow, ParityEval, ParityLog, ParityModel, ParityModelConfig, ParityObserver,
    ParityState, ParityTrainConfig, distribution_accuracy, evaluate_parity, fit_parity,
    parity_tensors,
};
pub use ponder_optimum::{HaltingOptimum, halting_optimum};
pub use source::{Batch, ClassificationSource, ImageSource, TextSource};
pub use token_exit::{
    ClassifierReport, ClassifierState, ClassifierTrainConfig, Decoded, DynamaxConstants,
    ExitClassifier, ExitDecisionMetrics, LinearExitClassifier, MambaExitClassifier,
    TokenExitMetrics, decode, dynamax_speedup, fit_exit_classifier, load_exit_classifier,
    save_exit_classifier, spread_windows, token_exit_metrics,
};
pub use train::{
    EpochLog, ExitWeights, FitOptions, GroupRates, JEI_ALTERNATION_STAGE, JeiConfig, JeiOptimizer,
    LEARNED_MARGIN, Method, ParamGroup, PonderConfig, SgdSchedule, TrainConfig, TrainObserver,
    TrainOutcome, TrainState, fit, majority_rate, unlearned_exits, unlearned_warning,
};

//! # ponder-models: early-exit methods as ready models
//!
//! * [`MultiExitClassifier`]: a layer-wise [`Backbone`] (the transformer
//!   [`Encoder`](ponder_transformer::Encoder) or the Mamba stack
//!   [`MambaEncoder`](ponder_mamba::MambaEncoder)) with [`ClassifierHeads`](ponder_exits::ClassifierHeads) at every layer. With
//!   per-layer heads trained by [`Method::Pabee`] it is PABEE's model; trained by
//!   [`Method::DeeBert`] (final layer first, then the internal heads on a frozen
//!   backbone; with [`OffRampPooler::Separate`](ponder_exits::OffRampPooler), the
//!   reference form, each off-ramp pools the layer's state with its own copy of the
//!   main pooler) it is DeeBERT's; [`Method::FinalOnly`] trains only the last head, the
//!   baseline a multi-exit model is compared with.
//! * [`Batch`] and [`ClassificationSource`]: how data reaches the model
//!   ([`ImageSource`] for IDX images, [`TextSource`] for tokenized text).
//! * [`fit`]: the training loop (AdamW, warm-up then linear decay, gradient clipping,
//!   evaluation every epoch, best checkpoint on validation, resumable checkpoints).
//! * [`evaluate`]: adaptive inference of a policy over a data set through the batched
//!   runner, with accuracy, exit statistics and wall-clock time.
//! * [`GateData`], [`gate_report`], [`refit_gates`]: JEI-DNN's gates on frozen
//!   inference modules, their targets and fit, and each gate refitted to convergence.
//! * [`halting_optimum`]: a trained halting head against the per-row optimum of the
//!   PonderNet loss.
//! * [`fit_lm`]: a language model ([`WindowLm`]: Mamba or the transformer decoder) on
//!   an [`LmCorpus`](ponder_data::LmCorpus) of characters or subword tokens, with
//!   resumable checkpoints; [`evaluate_lm`] gives bits per token and per character;
//!   [`sample_lm`] generates from any [`ponder_core::TokenLm`].
//! * [`fit_exit_classifier`]: DYNAMAX's exit classifiers on a frozen language model, and
//!   [`token_exit_metrics`]: compute saved, consistency and speed of token-level exits.

mod backbone;
mod checkpoint;
mod classifier;
mod eval;
mod gates;
mod lm;
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
    EpochLog, JEI_ALTERNATION_STAGE, JeiConfig, JeiOptimizer, Method, PonderConfig, SgdSchedule,
    TrainConfig, TrainObserver, TrainOutcome, TrainState, fit,
};

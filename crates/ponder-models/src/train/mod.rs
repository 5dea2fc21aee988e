//! The training loop of multi-exit classifiers.
//!
//! Where things are:
//! * [`config`]: what a run is configured by: the [`Method`], [`TrainConfig`], the
//!   PonderNet loss's [`PonderConfig`] and JEI-DNN's [`JeiConfig`].
//! * [`schedule`]: each stage's optimiser and learning rate (AdamW with linear warm-up
//!   and decay, or JEI-DNN's [`SgdSchedule`]).
//! * [`stages`]: the stages of every method ([`Method::stages`]) and what each optimises:
//!   a step's loss and the validation metric of the best epoch.
//! * [`state`]: what training records and reports: [`EpochLog`], the resumable
//!   [`TrainState`], the [`TrainObserver`] hooks and the [`TrainOutcome`].
//! * [`fit`](mod@fit): the loop itself, [`fit()`] with its [`FitOptions`] (device,
//!   checkpoints, resumption, observer).

mod config;
pub mod fit;
mod schedule;
mod stages;
mod state;

pub use config::{
    ExitWeights, GroupRates, JEI_ALTERNATION_STAGE, JeiConfig, JeiOptimizer, Method, ParamGroup,
    PonderConfig, TrainConfig,
};
pub use fit::{FitOptions, fit};
pub use schedule::SgdSchedule;
pub(crate) use stages::gate_positive_weights;
pub use state::{
    EpochLog, LEARNED_MARGIN, TrainObserver, TrainOutcome, TrainState, majority_rate,
    unlearned_exits, unlearned_warning,
};

//! TOFA supernet training (Algorithm 1 of Kundu et al., arXiv 2303.15485), the single-model
//! baselines of Table 3, pre-training on a source task, evaluation with BN recalibration, and
//! exact-resume checkpoints.
//!
//! # Pieces
//! - [`TrainConfig`] ([`config`]): every hyper-parameter, defaulting to Section 4.2; the
//!   [`Variant`] of eq. (4) (`lab`, `fm`, `dist`, `full`); the [`LrSchedule`] (linear warm-up,
//!   cosine to 0; an epoch is one pass over the labelled set).
//! - [`loss`]: label-smoothed CE, distillation (KL to the detached maxnet), FixMatch mask and
//!   loss.
//! - [`train_tofa`], [`train_single`], [`pretrain`] ([`train`]): one loop with a per-iteration
//!   generator keyed by `(seed, iteration)`, one SGD step per iteration, per-iteration loss
//!   records ([`IterRecord`], CSV), the [`Omega`](tofa_nn::Omega) and a [`TrainCost`].
//! - [`evaluate`] / [`evaluate_raw`] ([`eval`]): top-1 accuracy after BN recalibration, or on
//!   the running statistics.
//! - [`checkpoint`]: atomic checkpoint directories; resume is bit-identical.
//!
//! # Example
//! ```no_run
//! use tofa_data::BatchConfig;
//! use tofa_nn::{SearchSpace, SubnetConfig, Supernet};
//! use tofa_train::{TrainConfig, TrainData, Variant, train_tofa};
//!
//! # fn demo(ds: &tofa_data::Dataset, lab: &[u32], unl: &[u32]) -> tofa_train::Result<()> {
//! let space = SearchSpace::builtin("tiny")?.with_num_classes(ds.num_classes())?;
//! let mut net = Supernet::new(&space, 0)?;
//! let data = TrainData { dataset: ds, labelled: lab, unlabelled: unl, batch: BatchConfig::new((32, 32)) };
//! let cfg = TrainConfig { iterations: 100, variant: Variant::Full, ..Default::default() };
//! let out = train_tofa(&mut net, &data, &cfg, None, &mut |_| {})?;
//! assert!(out.omega.get(&SubnetConfig::minnet(&space).id()).is_some());
//! # Ok(()) }
//! ```
//!
//! # Speed
//! Measured seconds per iteration: see the crate's `README.md` (`examples/iter_time.rs`).

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod loss;
pub mod train;

pub use config::{LrSchedule, TrainConfig, Variant};
pub use error::{Result, Stage, TrainError};
pub use eval::{EvalResult, calibration_batches, evaluate, evaluate_raw, resize};
pub use train::{
    IterRecord, PretrainMode, SingleMode, TrainCost, TrainData, TrainOutcome, TrainProgress,
    pretrain, train_single, train_tofa,
};

//! Subnet selection for TOFA: the zero-cost fixed rule (Algorithm 2), and the costly
//! alternatives it is compared with (random search, evolutionary search with an accuracy
//! predictor), each with its measured cost; and device benchmarks of exported subnets.
//!
//! # Pieces
//! - [`Metric`], [`MetricProvider`], [`Metrics`] ([`metric`]): macs and params analytic,
//!   latency and peak memory from a table of measurements; [`Budget`] = `metric <= limit`.
//! - [`select_fixed`], [`palette`] ([`rule`]): Algorithm 2 over a [`tofa_nn::Omega`], rule
//!   [`Rule::LastSampled`] or [`Rule::Cumulative`]; deterministic ties.
//! - [`Evaluator`] ([`eval`]): the accuracy boundary. The pipeline implements it (BN
//!   recalibration + validation accuracy); this crate does not depend on training.
//!   [`SearchCost`]: evaluations, images, predictor training time, wall time.
//! - [`random_search`] ([`random`]): K random feasible subnets per budget, best kept;
//!   [`best_sample`]: the best of an already evaluated pool within each budget.
//! - [`evolutionary_search`] ([`evolution`]): M evaluated samples, an MLP predictor
//!   ([`predictor`], encodings in [`encode`]) with held-out Kendall tau and RMSE, constrained
//!   evolution per budget, the pick evaluated for real.
//! - [`device`]: latency (batch 1 and N, median and p90) and peak memory of an exported model,
//!   in process or in a fresh process, on the CPU or a CUDA device ([`gpu_memory`]: the GPU
//!   memory through NVML); the machine described.
//!
//! No I/O besides reading exported models, `/proc` and NVML; every random choice comes from a
//! seeded ChaCha RNG.

pub mod device;
pub mod encode;
pub mod error;
pub mod eval;
pub mod evolution;
pub mod gpu_memory;
pub mod metric;
pub mod predictor;
pub mod random;
pub mod rule;

pub use device::{
    BenchOpts, BenchResult, DeviceBenchArgs, bench_in_fresh_process, bench_in_process,
    bench_in_process_on, device_bench_main,
};
pub use encode::{Encoder, Encoding};
pub use error::{BoxError, Result, SelectError};
pub use eval::{Evaluation, Evaluator, FnEvaluator, Found, SearchCost};
pub use evolution::{
    EvoOpts, EvolutionOutcome, EvolutionSetup, evolutionary_search, evolve, search_with_predictor,
};
pub use metric::{Budget, Metric, MetricProvider, Metrics};
pub use predictor::{
    Predictor, PredictorOpts, PredictorReport, Sample, collect_samples, train_predictor,
};
pub use random::{RandomOpts, best_sample, random_search};
pub use rule::{
    Ranges, Rule, Selected, metric_range, metric_values, palette, select_fixed,
    select_fixed_in_range, select_fixed_values,
};

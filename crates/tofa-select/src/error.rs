//! The crate's one error type.

use std::path::PathBuf;

/// An error from a caller's [`crate::Evaluator`] (boxed so any error type fits; `anyhow`
/// errors convert with `.into()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every failure of `tofa-select`. Messages are lowercase and name the budget, metric or file.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// Omega is empty: nothing was sampled in training.
    #[error("omega is empty: no subnet to select from")]
    EmptyOmega,
    /// No subnet of Omega meets the budget.
    #[error(
        "no subnet in omega meets the budget {metric} <= {budget}: the smallest feasible value of {metric} is {smallest}"
    )]
    InfeasibleBudget {
        /// Metric name (`macs`, `params`, `latency_ms`, `peak_mem_bytes`).
        metric: String,
        /// The budget asked for.
        budget: f64,
        /// The smallest value of the metric over Omega.
        smallest: f64,
    },
    /// Rejection sampling found no (or too few) subnets within the budget.
    #[error(
        "{method}: no subnet with {metric} <= {budget} after {tries} random draws (smallest value seen: {smallest_seen}); raise the budget or the draw cap"
    )]
    NoFeasibleSample {
        /// `random search` or `evolutionary search`.
        method: String,
        metric: String,
        budget: f64,
        tries: usize,
        smallest_seen: f64,
    },
    /// A measured metric (latency, peak memory) is missing for a subnet.
    #[error("no measured {metric} for subnet {id} in the metric table")]
    MissingMetric { metric: String, id: String },
    /// The evaluator failed.
    #[error("evaluator failed on subnet {id}: {source}")]
    Evaluator {
        id: String,
        #[source]
        source: BoxError,
    },
    /// The evaluator returned an accuracy outside `[0, 1]` or a non-finite value.
    #[error("evaluator returned accuracy {accuracy} for subnet {id}: expected a value in [0, 1]")]
    BadAccuracy { id: String, accuracy: f64 },
    /// Bad options or inputs (the message names the option).
    #[error("invalid input: {0}")]
    Input(String),
    /// A device benchmark failed (the message names the model dir or child command).
    #[error("device benchmark: {0}")]
    Bench(String),
    /// An I/O error, with its path.
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error from `tofa-nn` (invalid config, export loading).
    #[error(transparent)]
    Nn(#[from] tofa_nn::NnError),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T, E = SelectError> = std::result::Result<T, E>;

pub(crate) fn input_err(msg: impl Into<String>) -> SelectError {
    SelectError::Input(msg.into())
}

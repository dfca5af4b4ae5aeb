//! The crate's one error type.

use std::fmt;
use std::path::PathBuf;

/// Which training procedure an error or a progress report belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Supervised training on the source task ([`crate::pretrain`]).
    Pretrain,
    /// TOFA supernet training, Algorithm 1 ([`crate::train_tofa`]).
    Tofa,
    /// One fixed network ([`crate::train_single`]): the Table 3 baselines and fine-tuning.
    Single,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Pretrain => "pretrain",
            Stage::Tofa => "tofa",
            Stage::Single => "single",
        })
    }
}

/// Every failure of `tofa-train`. Messages are lowercase and name the field, stage, iteration
/// or file.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A training config field is out of range.
    #[error("invalid training config: {field}: {msg}")]
    Config { field: String, msg: String },
    /// A loss term became NaN or infinite; the last good checkpoint is left as it was.
    #[error(
        "{stage}: iteration {iter}: loss term `{term}` is not finite ({value}); the last good checkpoint is kept"
    )]
    NonFinite {
        stage: Stage,
        iter: u64,
        term: &'static str,
        value: f64,
    },
    /// A weight or BN statistic became NaN or infinite after the optimiser step (found when a
    /// checkpoint was due; the previous checkpoint is kept).
    #[error(
        "{stage}: iteration {iter}: tensor `{tensor}` is not finite after the update; the last good checkpoint is kept"
    )]
    NonFiniteWeights {
        stage: Stage,
        iter: u64,
        tensor: String,
    },
    /// A checkpoint is missing a piece or does not belong to this run.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// An I/O error, with its path.
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any failure inside one training iteration, with where it happened.
    #[error("{stage}: iteration {iter}: {source}")]
    At {
        stage: Stage,
        iter: u64,
        #[source]
        source: Box<TrainError>,
    },
    /// From the supernet.
    #[error(transparent)]
    Nn(#[from] tofa_nn::NnError),
    /// From the data layer.
    #[error(transparent)]
    Data(#[from] tofa_data::DataError),
    /// From candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn config_err(field: impl Into<String>, msg: impl Into<String>) -> TrainError {
    TrainError::Config {
        field: field.into(),
        msg: msg.into(),
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}

//! The crate's one error type.

use std::path::PathBuf;

/// Every failure of `tofa-nn`. Messages are lowercase and name the field, file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A search space failed validation; `field` is a dotted path such as `stages[2].kernels`.
    #[error("invalid search space: {field}: {msg}")]
    Space { field: String, msg: String },
    /// A search space file could not be parsed.
    #[error("cannot parse search space: {0}")]
    SpaceParse(String),
    /// No built-in space has this name.
    #[error("unknown built-in search space `{0}` (known: paper, lite0, small, tiny)")]
    UnknownSpace(String),
    /// A subnet config does not belong to the space; `field` names the offending choice.
    #[error("subnet config not in space: {field}: {msg}")]
    Config { field: String, msg: String },
    /// A subnet id string could not be parsed.
    #[error("cannot parse subnet id `{id}`: {msg}")]
    ConfigId { id: String, msg: String },
    /// An input tensor has the wrong shape.
    #[error("bad input: {0}")]
    Input(String),
    /// A weight file is missing a tensor or holds one of the wrong shape.
    #[error("weights: tensor `{name}`: {msg}")]
    Weights { name: String, msg: String },
    /// A weight or config file could not be read or parsed.
    #[error("file {path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// An I/O error, with the path it happened on.
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

pub(crate) fn space_err(field: impl Into<String>, msg: impl Into<String>) -> NnError {
    NnError::Space {
        field: field.into(),
        msg: msg.into(),
    }
}

pub(crate) fn config_err(field: impl Into<String>, msg: impl Into<String>) -> NnError {
    NnError::Config {
        field: field.into(),
        msg: msg.into(),
    }
}

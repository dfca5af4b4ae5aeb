//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, splitting or batching data.
///
/// Messages are lowercase and name the file, field, column or class at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O failure; `fs-err` puts the path into the message.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// An IDX file whose header or length does not match the layout.
    #[error("idx file {path}: {reason}")]
    Idx { path: PathBuf, reason: String },

    /// A CIFAR binary batch whose length is not a whole number of records.
    #[error("cifar batch {path}: {reason}")]
    Cifar { path: PathBuf, reason: String },

    /// An image file (or encoded image bytes) that cannot be decoded.
    #[error("unreadable image {what}: {reason}")]
    Image { what: String, reason: String },

    /// A label that is not below the number of classes.
    #[error("label {label} out of range in {source_name} at record {index}: {num_classes} classes")]
    LabelOutOfRange {
        source_name: String,
        index: usize,
        label: i64,
        num_classes: usize,
    },

    /// A class with fewer images than a split asks for.
    #[error(
        "class {class:?} has {available} training images, fewer than the {requested} labelled images per class asked for"
    )]
    ClassTooSmall {
        class: String,
        available: usize,
        requested: usize,
    },

    /// A parquet shard that lacks a required column or has one of the wrong type.
    #[error("hub dataset {repo}: {reason}")]
    HubColumn { repo: String, reason: String },

    /// Anything else from the hub: listing, download, cache.
    #[error("hub dataset {repo}: {reason}")]
    Hub { repo: String, reason: String },

    /// A parquet shard that cannot be read.
    #[error("parquet file {path}: {reason}")]
    Parquet { path: PathBuf, reason: String },

    /// A folder layout that does not fit the loader.
    #[error("image folder {path}: {reason}")]
    Folder { path: PathBuf, reason: String },

    /// A split manifest that is malformed or no longer matches its data.
    #[error("split manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },

    /// A decoded data set file ([`crate::decoded`]) that is truncated or not one.
    #[error("decoded data set {path}: {reason}")]
    Decoded { path: PathBuf, reason: String },

    /// A configuration value outside its domain.
    #[error("invalid {field}: {reason}")]
    Config { field: String, reason: String },

    /// A failure building a tensor.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn config(field: &str, reason: impl Into<String>) -> DataError {
    DataError::Config {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

//! The runner's error type.

use std::path::PathBuf;

/// A boxed error with a source chain, as returned by stage kinds.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while loading, planning or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },

    /// The pipeline file parsed but is inconsistent (a cycle, a missing dependency, ...).
    #[error("{path}:{line}: {message}")]
    Spec {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A name given on the command line does not exist.
    #[error("{what} `{name}` not found{hint}")]
    NotFound {
        what: &'static str,
        name: String,
        hint: String,
    },

    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (manifest, rows, pointer) could not be read or written.
    #[error("invalid json in {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A cache entry exists but does not match its manifest.
    #[error("cache entry {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },

    /// One or more stages failed; the message lists them with their error chains.
    #[error("{0}")]
    StagesFailed(String),

    /// Writing or reading a result table failed.
    #[error("result table {table}: {message}")]
    Table { table: String, message: String },

    /// Another process holds a lock we need and waiting is not allowed.
    #[error("{0}")]
    Locked(String),

    /// A `--set` override is malformed or reaches no stage.
    #[error("--set {spec}: {message}")]
    Override { spec: String, message: String },

    /// Submitting to or polling the Slurm cluster failed, or the run was interrupted.
    #[error("slurm: {0}")]
    Slurm(String),

    /// A git command failed.
    #[error("git {args}: {message}")]
    Git { args: String, message: String },
}

/// The runner's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Formats an error and its source chain as `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

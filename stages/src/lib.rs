//! Stage kinds of the TOFA pipeline: thin glue from typed params to the library crates.
//!
//! | kind | file | does |
//! |---|---|---|
//! | `split` | [`data`] | loads a data set, cuts labelled / unlabelled / validation, pins it by digest |
//! | `pretrain` | [`train`] | source-task pre-training or ImageNet weights into the maxnet |
//! | `tofa_train` | [`train`] | Algorithm 1 with one loss variant; maxnet/minnet accuracy; Omega |
//! | `baseline_train` | [`train`] | single-network training (Table 3 baselines, per-budget fine-tuning) |
//! | `palette` | [`select`] | Algorithm 2 over budgets, each subnet tested and exported |
//! | `selection` | [`select`] | fixed rule vs random vs evolutionary search, with costs |
//! | `device_bench` | [`bench`](mod@bench) | latency and peak memory of exported models, fresh process each |
//! | `artifact` | [`report`] | one paper table or figure from its dependencies' rows |
//! | `report` | [`report`] | `REPORT.md` from the artifacts, with provenance |
//!
//! Stages pass files, never memory: a training stage writes `supernet.safetensors`,
//! `space.toml` and `omega.json`; the stages after it read them from the dependency's
//! directory, each file through the one function or constant beside its writer. Result rows
//! are typed ([`rows`]). Dependencies are found by kind ([`one_dep`]`::<K>`, which names
//! `K::NAME`). Files under `publish/` are copied by the binary into `reports/<profile>/`.

pub mod bench;
pub mod data;
pub mod report;
pub mod rows;
pub mod select;
pub mod train;

use std::path::Path;

use tofa_runner::kind::{DepOutput, Registry, StageContext, StageKind};

/// Every stage kind the `tofa-pipeline` binary knows.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register(data::Split);
    r.register(train::Pretrain);
    r.register(train::TofaTrain);
    r.register(train::BaselineTrain);
    r.register(select::Palette);
    r.register(select::Selection);
    r.register(bench::DeviceBench);
    r.register(report::Artifact);
    r.register(report::Report);
    r
}

/// Errors of the glue itself (the libraries' errors pass through as their own types).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A param is inconsistent with the others or with the data.
    #[error("{0}")]
    Param(String),
    /// The stage's dependencies are not what the kind needs.
    #[error("dependencies: {0}")]
    Deps(String),
    #[error(transparent)]
    Data(#[from] tofa_data::DataError),
    #[error(transparent)]
    Nn(#[from] tofa_nn::NnError),
    #[error(transparent)]
    Train(#[from] tofa_train::TrainError),
    #[error(transparent)]
    Select(#[from] tofa_select::SelectError),
    #[error(transparent)]
    Report(#[from] tofa_report::ReportError),
    /// A dependency's row does not fit its table's type (see [`rows`]).
    #[error(transparent)]
    Row(#[from] tofa_runner::kind::RowError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias of the glue.
pub type Result<T, E = StageError> = std::result::Result<T, E>;

/// The device the run computes on (`StageContext::device`: the profile's `device` or
/// `--device`), opened.
pub fn device(ctx: &StageContext) -> Result<candle_core::Device> {
    Ok(tofa_nn::parse_device(&ctx.device)?)
}

/// The one dependency of stage kind `K`; an error naming the stage otherwise.
pub fn one_dep<K: StageKind>(ctx: &StageContext) -> Result<&DepOutput> {
    match ctx.deps_of::<K>().collect::<Vec<_>>().as_slice() {
        [d] => Ok(d),
        ds => Err(StageError::Deps(format!(
            "stage `{}` needs exactly one `{}` dependency, has {} ({})",
            ctx.id,
            K::NAME,
            ds.len(),
            ds.iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub(crate) fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StageError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    std::fs::write(path, bytes).map_err(|e| StageError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| StageError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| StageError::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

pub(crate) fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| StageError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    write(path, bytes)
}

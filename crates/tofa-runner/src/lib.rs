//! The `tofa-pipeline` runner: a DAG of stages declared in `pipeline.toml`, executed with
//! content-addressed caching, in parallel where the DAG allows.
//!
//! This crate knows nothing about candle or the paper: stage kinds are registered by the
//! binary ([`kind::Registry`]). The flow is [`spec::Pipeline::load`] -> [`spec::Pipeline::plan`]
//! (a profile applied, matrices expanded, DAG checked) -> [`exec::Runner`] (params checked
//! against kinds, keys computed, stages run or reused) -> [`results::Tables`].

pub mod cache;
pub mod error;
pub mod exec;
pub mod kind;
pub mod progress;
pub mod results;
pub mod scheduler;
pub mod slurm;
pub mod spec;

pub use error::{BoxError, Error, Result};

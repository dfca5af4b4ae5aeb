//! Figures and tables of the TOFA reports.
//!
//! - [`Figure`]: a 2-D chart (one series per method, axis titles with units, a legend, linear or
//!   log x axis) written as SVG and PNG with plotters. Text is drawn with DejaVu Sans embedded
//!   in the binary (`assets/`, Bitstream Vera licence), so rendering needs no system fonts and
//!   gives the same bytes on every machine.
//! - [`Table`]: rows of cells written as Markdown (for `REPORT.md`) and CSV.
//!
//! No pipeline knowledge: the stage glue in `tofa-stages` builds figures and tables from result
//! rows.

mod figure;
mod table;

pub use figure::{Figure, Series, SeriesKind};
pub use table::{Cell, Table};

use std::path::PathBuf;

/// Every failure of `tofa-report`; messages name the figure or file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A figure cannot be drawn as specified.
    #[error("figure `{figure}`: {msg}")]
    Figure { figure: String, msg: String },
    /// A table is malformed.
    #[error("table `{table}`: {msg}")]
    Table { table: String, msg: String },
    /// Writing an output failed.
    #[error("writing {path}: {msg}")]
    Write { path: PathBuf, msg: String },
}

/// Result alias of this crate.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

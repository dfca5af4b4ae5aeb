//! Numbers over replicates (mean ± standard deviation over training seeds) and the row
//! selections the tables, figures and claims share.

use std::collections::BTreeMap;

use tofa_report::Cell;
use tofa_train::{SingleMode, Variant};

use crate::rows::{BaselineRow, PredictorRow, SelectionRow, TofaRow};
use crate::train::Arch;

/// A number's cell, or a blank one.
pub(crate) fn cell(v: Option<f64>, decimals: usize) -> Cell {
    v.map_or(Cell::Missing, |v| Cell::num(v, decimals))
}

/// Mean, sample standard deviation and count of a set of values (seeds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        Some(Stat { mean, std, n })
    }

    /// Standard error of the mean (NaN for one value).
    pub fn se(&self) -> f64 {
        self.std / (self.n as f64).sqrt()
    }
}

/// `mean ± std` over seeds, or the plain number when there is one seed.
pub(crate) fn stat_cell(s: Option<Stat>, decimals: usize) -> Cell {
    match s {
        None => Cell::Missing,
        Some(s) if s.n > 1 => {
            Cell::text(format!("{:.*} ± {:.*}", decimals, s.mean, decimals, s.std))
        }
        Some(s) => Cell::num(s.mean, decimals),
    }
}

/// Values by replicate label.
pub(crate) type BySeed = BTreeMap<String, f64>;

/// A row of one replicate of a training (its `seed` key).
pub(crate) trait Replicate {
    fn seed(&self) -> &str;
}

impl Replicate for TofaRow {
    fn seed(&self) -> &str {
        &self.seed
    }
}

impl Replicate for BaselineRow {
    fn seed(&self) -> &str {
        &self.seed
    }
}

impl Replicate for SelectionRow {
    fn seed(&self) -> &str {
        &self.seed
    }
}

impl Replicate for PredictorRow {
    fn seed(&self) -> &str {
        &self.seed
    }
}

/// `value` of the rows it gives one for, by replicate label.
pub(crate) fn by_seed<'a, R: Replicate + 'a>(
    rows: impl IntoIterator<Item = &'a R>,
    value: impl Fn(&R) -> Option<f64>,
) -> BySeed {
    rows.into_iter()
        .filter_map(|r| Some((r.seed().to_string(), value(r)?)))
        .collect()
}

/// `mean ± std` of the values of `m`.
pub(crate) fn over_seeds(m: &BySeed) -> Option<Stat> {
    Stat::of(&m.values().copied().collect::<Vec<_>>())
}

/// A TOFA row of data set `d` and variant `v`.
pub(crate) fn is_tofa(r: &TofaRow, d: &str, v: Variant) -> bool {
    r.dataset == d && r.variant == v
}

/// A single-model row of the maxnet (Table 3's baselines) of data set `d` and mode `m`.
pub(crate) fn is_baseline(r: &BaselineRow, d: &str, m: SingleMode) -> bool {
    r.dataset == d && r.mode == m && r.arch == Arch::Maxnet
}

/// Data set names in first-seen order.
pub(crate) fn datasets<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in names {
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

//! Selection metrics and where their values come from.
//!
//! Multiply-adds and parameters are analytic ([`tofa_nn::cost()`]); latency and peak memory are
//! measured on a device ([`crate::device`]) and looked up per subnet id in a [`Metrics`] table.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use tofa_nn::{SearchSpace, SubnetConfig};

use crate::error::{Result, SelectError};

/// A resource metric a budget is expressed in. Lower is cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Multiply-adds for one image (the paper's "FLOPs").
    Macs,
    /// Parameters the subnet uses.
    Params,
    /// Measured inference latency in milliseconds (batch chosen when the table was filled).
    LatencyMs,
    /// Measured peak memory in bytes.
    PeakMemBytes,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 4] = [
        Metric::Macs,
        Metric::Params,
        Metric::LatencyMs,
        Metric::PeakMemBytes,
    ];

    /// The snake_case name used in messages, tables and `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Macs => "macs",
            Metric::Params => "params",
            Metric::LatencyMs => "latency_ms",
            Metric::PeakMemBytes => "peak_mem_bytes",
        }
    }

    /// Whether the value is computed analytically (no table needed).
    pub fn is_analytic(self) -> bool {
        matches!(self, Metric::Macs | Metric::Params)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = SelectError;
    fn from_str(s: &str) -> Result<Self> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                SelectError::Input(format!(
                    "unknown metric `{s}` (known: macs, params, latency_ms, peak_mem_bytes)"
                ))
            })
    }
}

/// Gives the value of a metric for a subnet.
pub trait MetricProvider {
    /// The value of `metric` for `cfg`; an error when it is unknown for this subnet.
    fn value(&self, metric: Metric, cfg: &SubnetConfig) -> Result<f64>;
}

/// The standard provider: analytic macs/params over a space, plus a lookup table of measured
/// values (latency, peak memory; any metric may be overridden by a measured entry).
#[derive(Clone, Debug)]
pub struct Metrics {
    space: SearchSpace,
    table: BTreeMap<Metric, BTreeMap<String, f64>>,
}

impl Metrics {
    /// Analytic metrics of `space` and an empty measurement table.
    pub fn new(space: &SearchSpace) -> Self {
        Metrics {
            space: space.clone(),
            table: BTreeMap::new(),
        }
    }

    /// The space the analytic costs are computed in.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// Records a measured value of `metric` for the subnet with canonical id `id`.
    pub fn insert(&mut self, metric: Metric, id: impl Into<String>, value: f64) {
        self.table
            .entry(metric)
            .or_default()
            .insert(id.into(), value);
    }

    /// Records latency (`batch`'s median) and peak memory from a device benchmark.
    pub fn insert_bench(&mut self, bench: &crate::device::BenchResult, batch: usize) -> Result<()> {
        let lat = bench
            .latency
            .iter()
            .find(|l| l.batch == batch)
            .ok_or_else(|| {
                SelectError::Input(format!(
                    "benchmark of {} has no latency at batch {batch}",
                    bench.source_id
                ))
            })?;
        self.insert(Metric::LatencyMs, bench.source_id.clone(), lat.median_ms);
        self.insert(
            Metric::PeakMemBytes,
            bench.source_id.clone(),
            bench.memory.peak_minus_baseline_bytes as f64,
        );
        Ok(())
    }

    /// The measured values of `metric`, by subnet id.
    pub fn measured(&self, metric: Metric) -> Option<&BTreeMap<String, f64>> {
        self.table.get(&metric)
    }
}

impl MetricProvider for Metrics {
    fn value(&self, metric: Metric, cfg: &SubnetConfig) -> Result<f64> {
        if let Some(v) = self.table.get(&metric).and_then(|t| t.get(&cfg.id())) {
            return Ok(*v);
        }
        match metric {
            Metric::Macs => Ok(tofa_nn::cost(&self.space, cfg)?.macs as f64),
            Metric::Params => Ok(tofa_nn::cost(&self.space, cfg)?.params as f64),
            Metric::LatencyMs | Metric::PeakMemBytes => Err(SelectError::MissingMetric {
                metric: metric.name().into(),
                id: cfg.id(),
            }),
        }
    }
}

impl<T: MetricProvider + ?Sized> MetricProvider for &T {
    fn value(&self, metric: Metric, cfg: &SubnetConfig) -> Result<f64> {
        (**self).value(metric, cfg)
    }
}

/// A budget: `metric <= limit`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub metric: Metric,
    pub limit: f64,
}

impl Budget {
    /// `metric <= limit`.
    pub fn new(metric: Metric, limit: f64) -> Self {
        Budget { metric, limit }
    }

    /// Whether `value` meets the budget (NaN never does).
    pub fn admits(&self, value: f64) -> bool {
        value <= self.limit
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <= {}", self.metric, self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
        let e = "flops".parse::<Metric>().unwrap_err().to_string();
        assert!(e.contains("unknown metric `flops`"), "{e}");
    }
}

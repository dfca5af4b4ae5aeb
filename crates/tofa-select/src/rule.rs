//! Algorithm 2: the fixed subnet selection rule ("last sampled").
//!
//! Given Omega (the subnets sampled in supernet training) and a budget `p(a) <= t`, return
//! `argmax_{a in Omega, p(a) <= t} s(a)` where `s` is the iteration at which `a` was last
//! sampled ([`Rule::LastSampled`], Algorithm 2) or the sum of the iterations at which it was
//! sampled ([`Rule::Cumulative`], Section 3.4's prose).
//!
//! # Size ranges
//! Read literally (`p(a) <= t`, [`Ranges::AtMost`]), every budget admits the minnet, which the
//! sandwich rule samples at every iteration: it wins every budget that the last random
//! subnets miss. The paper's prose says the rule "select[s] a subnet within each size range"
//! (Section 3.4), and that "the variation of accuracy across subnets within a given size
//! range ... is relatively small" (Introduction). [`Ranges::Bins`] reads it so: with budgets
//! `t_1 < ... < t_m`, budget `t_i` selects among `t_{i-1} < p(a) <= t_i` (`t_0 = -inf`), and
//! falls back to `p(a) <= t_i` when that range holds no subnet of Omega.
//!
//! # Ties
//! Several subnets share a last iteration (the sandwich rule samples several per iteration),
//! so ties are common. They are broken deterministically by, in order: the larger index `s`;
//! then the larger metric value (the subnet that uses more of the budget); then the
//! lexicographically smaller canonical id.

use std::cmp::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tofa_nn::{Omega, OmegaEntry, SubnetConfig};

use crate::error::{Result, SelectError};
use crate::eval::SearchCost;
use crate::metric::{Budget, Metric, MetricProvider};

/// Which index of an Omega entry the rule maximises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The last iteration at which the subnet was sampled (Algorithm 2).
    LastSampled,
    /// The sum of the iterations at which it was sampled (Section 3.4).
    Cumulative,
}

impl Rule {
    /// The index `s(a)` of an entry.
    pub fn index(self, e: &OmegaEntry) -> u64 {
        match self {
            Rule::LastSampled => e.last_iter,
            Rule::Cumulative => e.cumulative,
        }
    }

    /// `last_sampled` or `cumulative`.
    pub fn name(self) -> &'static str {
        match self {
            Rule::LastSampled => "last_sampled",
            Rule::Cumulative => "cumulative",
        }
    }
}

/// Which subnets a budget admits (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranges {
    /// `p(a) <= t`: Algorithm 2's line 3, literally.
    AtMost,
    /// `t_prev < p(a) <= t`, the budget's own size range, with `p(a) <= t` as fallback.
    Bins,
}

impl Ranges {
    /// `at_most` or `bins`.
    pub fn name(self) -> &'static str {
        match self {
            Ranges::AtMost => "at_most",
            Ranges::Bins => "bins",
        }
    }
}

/// The subnet the rule picked for one budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selected {
    /// Canonical id of the pick.
    pub id: String,
    /// The pick.
    pub config: SubnetConfig,
    /// The budget it meets.
    pub budget: Budget,
    /// Its value of the budget's metric.
    pub value: f64,
    /// The rule used.
    pub rule: Rule,
    /// Its index under the rule (`last_iter` or `cumulative`).
    pub index: u64,
    /// Its Omega statistics.
    pub last_iter: u64,
    pub cumulative: u64,
    pub count: u64,
    /// Size of Omega and how many of its subnets were candidates (in the budget's range, or
    /// meeting the budget when there is no range or it was empty).
    pub omega_len: usize,
    pub feasible: usize,
    /// Exclusive lower end of the size range searched (`None`: no lower end).
    pub range_lower: Option<f64>,
    /// Whether the range held no subnet and the rule fell back to `p(a) <= t`.
    pub fallback: bool,
    /// Measured cost: no evaluations, only metric look-ups and wall time.
    pub cost: SearchCost,
}

/// The value of `metric` for every entry of Omega, in entry order. Errors when a value is
/// unknown (e.g. a subnet without a measured latency).
pub fn metric_values(
    omega: &Omega,
    metrics: &dyn MetricProvider,
    metric: Metric,
) -> Result<Vec<f64>> {
    omega
        .entries()
        .iter()
        .map(|e| metrics.value(metric, &e.config))
        .collect()
}

/// Algorithm 2 for one budget: the subnet of Omega with the largest index among those meeting
/// `budget` (ties: see the module docs). An infeasible budget is an error naming the smallest
/// value of the metric over Omega.
pub fn select_fixed(
    omega: &Omega,
    metrics: &dyn MetricProvider,
    budget: Budget,
    rule: Rule,
) -> Result<Selected> {
    let t = Instant::now();
    let values = metric_values(omega, metrics, budget.metric)?;
    let mut s = select_fixed_values(omega, &values, budget, rule)?;
    s.cost.wall_s = t.elapsed().as_secs_f64();
    Ok(s)
}

/// Algorithm 2 within the size range `lower < p(a) <= budget.limit` (precomputed values as
/// in [`select_fixed_values`]); when no subnet of Omega lies in the range, the literal
/// `p(a) <= t` with `fallback` set.
pub fn select_fixed_in_range(
    omega: &Omega,
    values: &[f64],
    lower: f64,
    budget: Budget,
    rule: Rule,
) -> Result<Selected> {
    let in_range = |v: f64| v > lower && budget.admits(v);
    match pick(omega, values, budget, rule, &in_range) {
        Err(SelectError::InfeasibleBudget { .. }) => {
            let mut s = select_fixed_values(omega, values, budget, rule)?;
            s.range_lower = Some(lower);
            s.fallback = true;
            Ok(s)
        }
        Ok(mut s) => {
            s.range_lower = Some(lower);
            Ok(s)
        }
        Err(e) => Err(e),
    }
}

/// Algorithm 2 on precomputed metric values (`values[i]` belongs to `omega.entries()[i]`).
/// A NaN or infinite value never meets a budget: use it for unmeasured subnets.
pub fn select_fixed_values(
    omega: &Omega,
    values: &[f64],
    budget: Budget,
    rule: Rule,
) -> Result<Selected> {
    pick(omega, values, budget, rule, &|v| budget.admits(v))
}

/// The best entry by `rule` among those whose value `admits`; ties as in the module docs.
fn pick(
    omega: &Omega,
    values: &[f64],
    budget: Budget,
    rule: Rule,
    admits: &dyn Fn(f64) -> bool,
) -> Result<Selected> {
    let t = Instant::now();
    let entries = omega.entries();
    if entries.is_empty() {
        return Err(SelectError::EmptyOmega);
    }
    if values.len() != entries.len() {
        return Err(SelectError::Input(format!(
            "{} metric values for {} omega entries",
            values.len(),
            entries.len()
        )));
    }
    let mut best: Option<usize> = None;
    let mut feasible = 0;
    for (i, (e, &v)) in entries.iter().zip(values).enumerate() {
        if !(v.is_finite() && admits(v)) {
            continue;
        }
        feasible += 1;
        let better = match best {
            None => true,
            Some(b) => {
                let o = rule
                    .index(e)
                    .cmp(&rule.index(&entries[b]))
                    .then(v.partial_cmp(&values[b]).unwrap_or(Ordering::Equal))
                    .then(entries[b].id.cmp(&e.id));
                o == Ordering::Greater
            }
        };
        if better {
            best = Some(i);
        }
    }
    let Some(b) = best else {
        let smallest = values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
        return Err(SelectError::InfeasibleBudget {
            metric: budget.metric.name().into(),
            budget: budget.limit,
            smallest,
        });
    };
    let e = &entries[b];
    Ok(Selected {
        id: e.id.clone(),
        config: e.config.clone(),
        budget,
        value: values[b],
        rule,
        index: rule.index(e),
        last_iter: e.last_iter,
        cumulative: e.cumulative,
        count: e.count,
        omega_len: entries.len(),
        feasible,
        range_lower: None,
        fallback: false,
        cost: SearchCost {
            metric_queries: entries.len() as u64,
            wall_s: t.elapsed().as_secs_f64(),
            ..SearchCost::default()
        },
    })
}

/// Algorithm 2 over a list of budgets on one metric (the palette), metric values computed
/// once, results in the order of `limits`. With [`Ranges::Bins`] a budget's range starts
/// above the next smaller limit of the list. Fails on the first infeasible budget.
pub fn palette(
    omega: &Omega,
    metrics: &dyn MetricProvider,
    metric: Metric,
    limits: &[f64],
    rule: Rule,
    ranges: Ranges,
) -> Result<Vec<Selected>> {
    let t = Instant::now();
    let values = metric_values(omega, metrics, metric)?;
    let shared = t.elapsed().as_secs_f64() / limits.len().max(1) as f64;
    limits
        .iter()
        .map(|&l| {
            let budget = Budget::new(metric, l);
            let below = limits
                .iter()
                .copied()
                .filter(|&o| o < l)
                .fold(f64::NEG_INFINITY, f64::max);
            let mut s = match ranges {
                Ranges::AtMost => select_fixed_values(omega, &values, budget, rule)?,
                Ranges::Bins => select_fixed_in_range(omega, &values, below, budget, rule)?,
            };
            s.cost.wall_s += shared;
            Ok(s)
        })
        .collect()
}

/// The smallest and largest value of `metric` over Omega (to place palette budgets).
pub fn metric_range(
    omega: &Omega,
    metrics: &dyn MetricProvider,
    metric: Metric,
) -> Result<(f64, f64)> {
    if omega.is_empty() {
        return Err(SelectError::EmptyOmega);
    }
    let v = metric_values(omega, metrics, metric)?;
    Ok(v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        }))
}

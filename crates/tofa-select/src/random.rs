//! Random search: K random subnets within each budget, evaluated, the best kept.
//!
//! Subnets are drawn uniformly from the space and rejected when over budget or already drawn
//! for this budget; at most `max_draws` draws per budget. Fewer than K distinct feasible
//! subnets (a tight budget in a small space) is not an error; none is. Each budget draws from
//! its own stream of the seed (keyed by the budget's value), so a budget's pick does not depend
//! on the other budgets in the list. Ties in accuracy go to the subnet drawn first.
//!
//! A budget that uniform draws cannot meet but the minnet does (a budget at the minnet's cost
//! in a large space: in the `lite0` space not one of 20,000 draws comes within 3% of it) gets
//! the minnet, the one subnet known to be the smallest, as its candidate.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tofa_nn::{SearchSpace, SubnetConfig};

use crate::error::{Result, SelectError, input_err};
use crate::eval::{Evaluator, Found, Meter};
use crate::metric::{Budget, Metric, MetricProvider};

/// Options of [`random_search`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomOpts {
    /// Subnets evaluated per budget (paper: about 10).
    pub k: usize,
    /// Cap on random draws per budget (rejection sampling).
    pub max_draws: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for RandomOpts {
    fn default() -> Self {
        RandomOpts {
            k: 10,
            max_draws: 20_000,
            seed: 0,
        }
    }
}

/// A seeded RNG for one budget: stream `tag` of `seed`.
pub(crate) fn budget_rng(seed: u64, limit: f64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(limit.to_bits());
    rng
}

/// Draws a uniformly random subnet meeting `budget` (rejection sampling, at most `max_draws`
/// draws). Returns the subnet, its metric value and the draws used.
pub fn sample_feasible(
    space: &SearchSpace,
    metrics: &dyn MetricProvider,
    budget: Budget,
    rng: &mut ChaCha8Rng,
    max_draws: usize,
    method: &str,
) -> Result<(SubnetConfig, f64, usize)> {
    let mut smallest = f64::INFINITY;
    for n in 1..=max_draws {
        let c = SubnetConfig::sample(space, rng);
        let v = metrics.value(budget.metric, &c)?;
        if budget.admits(v) {
            return Ok((c, v, n));
        }
        smallest = smallest.min(v);
    }
    if let Some((c, v)) = minnet_within(space, metrics, budget)? {
        return Ok((c, v, max_draws));
    }
    Err(SelectError::NoFeasibleSample {
        method: method.into(),
        metric: budget.metric.name().into(),
        budget: budget.limit,
        tries: max_draws,
        smallest_seen: smallest,
    })
}

/// The minnet and its metric value when it meets `budget`.
pub(crate) fn minnet_within(
    space: &SearchSpace,
    metrics: &dyn MetricProvider,
    budget: Budget,
) -> Result<Option<(SubnetConfig, f64)>> {
    let c = SubnetConfig::minnet(space);
    let v = metrics.value(budget.metric, &c)?;
    Ok(budget.admits(v).then_some((c, v)))
}

/// Random search over `limits` of `metric`: per budget, up to `opts.k` distinct random
/// feasible subnets are evaluated and the most accurate kept. `metrics` must know `metric` for
/// every subnet of the space (analytic metrics, or a provider that models measured ones).
pub fn random_search(
    space: &SearchSpace,
    metrics: &dyn MetricProvider,
    metric: Metric,
    limits: &[f64],
    opts: &RandomOpts,
    evaluator: &mut dyn Evaluator,
) -> Result<Vec<Found>> {
    if opts.k == 0 || opts.max_draws == 0 {
        return Err(input_err(
            "random search: k and max_draws must be at least 1",
        ));
    }
    let mut meter = Meter::new(evaluator);
    let mut out = Vec::with_capacity(limits.len());
    for &limit in limits {
        let budget = Budget::new(metric, limit);
        let mut rng = budget_rng(opts.seed, limit);
        let mut seen = BTreeSet::new();
        let mut best: Option<(SubnetConfig, f64, f64)> = None;
        let (mut draws, mut smallest, mut queries) = (0usize, f64::INFINITY, 0u64);
        while seen.len() < opts.k && draws < opts.max_draws {
            draws += 1;
            let c = SubnetConfig::sample(space, &mut rng);
            let v = metrics.value(metric, &c)?;
            queries += 1;
            smallest = smallest.min(v);
            if !budget.admits(v) || !seen.insert(c.id()) {
                continue;
            }
            let acc = meter.evaluate(&c)?.accuracy;
            if best.as_ref().is_none_or(|b| acc > b.2) {
                best = Some((c, v, acc));
            }
        }
        if best.is_none()
            && let Some((c, v)) = minnet_within(space, metrics, budget)?
        {
            seen.insert(c.id());
            let acc = meter.evaluate(&c)?.accuracy;
            best = Some((c, v, acc));
        }
        let Some((config, value, accuracy)) = best else {
            return Err(SelectError::NoFeasibleSample {
                method: "random search".into(),
                metric: metric.name().into(),
                budget: limit,
                tries: draws,
                smallest_seen: smallest,
            });
        };
        let mut cost = meter.take();
        cost.metric_queries = queries;
        out.push(Found {
            method: "random".into(),
            id: config.id(),
            config,
            budget,
            value,
            accuracy,
            predicted: None,
            candidates: seen.len(),
            cost,
        });
    }
    Ok(out)
}

/// The paper's variant of random search when a pool of evaluated subnets already exists
/// (Section 4.6 samples 1,000 subnets "spread across the flops range" for both costly
/// methods): per budget, the most accurate sample within it. No new evaluations; the cost
/// is the metric look-ups and wall time (the pool's own cost is the caller's, e.g.
/// [`crate::evolution::EvolutionOutcome::shared_cost`]). Ties in accuracy go to the earlier
/// sample. A budget no sample meets is an error naming the smallest sample value.
pub fn best_sample(
    samples: &[crate::predictor::Sample],
    metrics: &dyn MetricProvider,
    metric: Metric,
    limits: &[f64],
) -> Result<Vec<Found>> {
    let t = std::time::Instant::now();
    let values = samples
        .iter()
        .map(|s| metrics.value(metric, &s.config))
        .collect::<Result<Vec<_>>>()?;
    let shared = t.elapsed().as_secs_f64() / limits.len().max(1) as f64;
    limits
        .iter()
        .map(|&limit| {
            let t = std::time::Instant::now();
            let budget = Budget::new(metric, limit);
            let mut best: Option<usize> = None;
            let mut feasible = 0;
            for (i, (s, &v)) in samples.iter().zip(&values).enumerate() {
                if budget.admits(v) {
                    feasible += 1;
                    if best.is_none_or(|b| s.accuracy > samples[b].accuracy) {
                        best = Some(i);
                    }
                }
            }
            let b = best.ok_or_else(|| SelectError::NoFeasibleSample {
                method: "best sample".into(),
                metric: metric.name().into(),
                budget: limit,
                tries: samples.len(),
                smallest_seen: values.iter().copied().fold(f64::INFINITY, f64::min),
            })?;
            Ok(Found {
                method: "best_sample".into(),
                id: samples[b].id.clone(),
                config: samples[b].config.clone(),
                budget,
                value: values[b],
                accuracy: samples[b].accuracy,
                predicted: None,
                candidates: feasible,
                cost: crate::eval::SearchCost {
                    metric_queries: samples.len() as u64,
                    wall_s: shared + t.elapsed().as_secs_f64(),
                    ..Default::default()
                },
            })
        })
        .collect()
}

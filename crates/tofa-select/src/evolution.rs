//! Evolutionary search with an accuracy predictor, as OFA's `EvolutionFinder` does it.
//!
//! Once: evaluate `m` random subnets ([`crate::predictor::collect_samples`]) and train the
//! predictor. Then per budget: a population of `population` random feasible subnets; each
//! generation keeps the `parents_ratio * population` best by predicted accuracy as parents,
//! then adds `mutation_ratio * population` children by mutation (each choice redrawn with
//! probability `mutate_prob`) and `population` minus that by uniform crossover of two parents
//! (so, as in OFA, a generation holds the parents plus `population` children). A child over budget is
//! redrawn (at most `max_draws` times, then its parent is copied), so the population is always
//! feasible and so is the pick: the best predicted subnet seen. The pick is then evaluated for
//! real. Ties in predicted accuracy go to the smaller canonical id.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tofa_nn::{SearchSpace, SubnetConfig};

use crate::error::{Result, SelectError, input_err};
use crate::eval::{Evaluator, Found, Meter, SearchCost};
use crate::metric::{Budget, Metric, MetricProvider};
use crate::predictor::{
    Predictor, PredictorOpts, PredictorReport, Sample, collect_samples, train_predictor,
};
use crate::random::{budget_rng, sample_feasible};

/// Options of the evolution (OFA's defaults except `generations`, 500 in OFA).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoOpts {
    pub population: usize,
    pub parents_ratio: f64,
    pub mutation_ratio: f64,
    pub mutate_prob: f64,
    pub generations: usize,
    /// Cap on draws for one feasible subnet (initial population and each child).
    pub max_draws: usize,
    pub seed: u64,
}

impl Default for EvoOpts {
    fn default() -> Self {
        EvoOpts {
            population: 100,
            parents_ratio: 0.25,
            mutation_ratio: 0.5,
            mutate_prob: 0.1,
            generations: 100,
            max_draws: 20_000,
            seed: 0,
        }
    }
}

/// What [`evolve`] returns for one budget (before the real evaluation).
#[derive(Clone, Debug, PartialEq)]
pub struct Evolved {
    pub config: SubnetConfig,
    /// Its metric value (within the budget).
    pub value: f64,
    pub predicted: f64,
    /// Distinct subnets scored by the predictor.
    pub candidates: usize,
    pub predictor_queries: u64,
    pub metric_queries: u64,
}

struct Scorer<'a> {
    predictor: &'a Predictor,
    cache: BTreeMap<String, f64>,
    queries: u64,
}

impl Scorer<'_> {
    fn score(&mut self, c: &SubnetConfig) -> Result<f64> {
        let id = c.id();
        if let Some(&p) = self.cache.get(&id) {
            return Ok(p);
        }
        self.queries += 1;
        let p = self.predictor.predict(c)?;
        self.cache.insert(id, p);
        Ok(p)
    }
}

fn check(opts: &EvoOpts) -> Result<()> {
    if opts.population < 2
        || opts.max_draws == 0
        || !(0.0..=1.0).contains(&opts.parents_ratio)
        || !(0.0..=1.0).contains(&opts.mutation_ratio)
        || !(0.0..=1.0).contains(&opts.mutate_prob)
    {
        return Err(input_err(
            "evolution: population must be at least 2, max_draws at least 1, and parents_ratio, mutation_ratio, mutate_prob in [0, 1]",
        ));
    }
    Ok(())
}

/// Constrained evolution for one budget, scored by `predictor` (see the module docs).
/// `metrics` must know the budget's metric for every subnet of the space.
pub fn evolve(
    space: &SearchSpace,
    metrics: &dyn MetricProvider,
    budget: Budget,
    predictor: &Predictor,
    opts: &EvoOpts,
) -> Result<Evolved> {
    check(opts)?;
    let mut rng = budget_rng(opts.seed, budget.limit);
    let mut sc = Scorer {
        predictor,
        cache: BTreeMap::new(),
        queries: 0,
    };
    let mut metric_queries = 0u64;
    // (predicted, id, config, value)
    type Member = (f64, String, SubnetConfig, f64);
    let mut pop: Vec<Member> = Vec::with_capacity(opts.population);
    while pop.len() < opts.population {
        let (c, v, n) = sample_feasible(
            space,
            metrics,
            budget,
            &mut rng,
            opts.max_draws,
            "evolutionary search",
        )?;
        metric_queries += n as u64;
        pop.push((sc.score(&c)?, c.id(), c, v));
    }
    let n_parents = ((opts.population as f64 * opts.parents_ratio).round() as usize).max(1);
    let n_mut = (opts.population as f64 * opts.mutation_ratio).round() as usize;
    let rank = |a: &Member, b: &Member| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1));
    let mut best: Option<Member> = None;
    for _ in 0..=opts.generations {
        pop.sort_by(rank);
        if best
            .as_ref()
            .is_none_or(|b| rank(&pop[0], b) == std::cmp::Ordering::Less)
        {
            best = Some(pop[0].clone());
        }
        let parents: Vec<Member> = pop[..n_parents.min(pop.len())].to_vec();
        let mut next = parents.clone();
        for i in 0..opts.population {
            let mut child = None;
            for _ in 0..opts.max_draws {
                let c = if i < n_mut {
                    let p = &parents[rng.random_range(0..parents.len())];
                    p.2.mutate(space, opts.mutate_prob, &mut rng)
                } else {
                    let a = &parents[rng.random_range(0..parents.len())];
                    let b = &parents[rng.random_range(0..parents.len())];
                    a.2.crossover(&b.2, &mut rng)
                };
                let v = metrics.value(budget.metric, &c)?;
                metric_queries += 1;
                if budget.admits(v) {
                    child = Some((c, v));
                    break;
                }
            }
            let (c, v) = match child {
                Some(cv) => cv,
                None => {
                    let p = &parents[rng.random_range(0..parents.len())];
                    (p.2.clone(), p.3)
                }
            };
            next.push((sc.score(&c)?, c.id(), c, v));
        }
        pop = next;
    }
    let (predicted, _, config, value) =
        best.ok_or_else(|| input_err("evolution: empty population"))?;
    if !budget.admits(value) {
        // Unreachable by construction; kept as a guard so an infeasible pick is never returned.
        return Err(SelectError::Input(format!(
            "evolution picked {} with {} = {value} over the budget {budget}",
            config.id(),
            budget.metric
        )));
    }
    Ok(Evolved {
        config,
        value,
        predicted,
        candidates: sc.cache.len(),
        predictor_queries: sc.queries,
        metric_queries,
    })
}

/// Everything the evolutionary method produced.
#[derive(Clone, Debug)]
pub struct EvolutionOutcome {
    /// The evaluated subnets the predictor learned from.
    pub samples: Vec<Sample>,
    /// The predictor's held-out quality.
    pub predictor: PredictorReport,
    /// The trained predictor.
    pub model: Predictor,
    /// One-time cost: evaluating the samples and training the predictor.
    pub shared_cost: SearchCost,
    /// Per budget: the pick, evaluated for real, and the budget's own cost.
    pub found: Vec<Found>,
}

/// What [`evolutionary_search`] runs with.
#[derive(Clone, Copy, Debug)]
pub struct EvolutionSetup<'a> {
    /// Random subnets evaluated to train the predictor on.
    pub samples: usize,
    /// The accuracy predictor's options.
    pub predictor: &'a PredictorOpts,
    /// The evolution's options.
    pub evolution: &'a EvoOpts,
}

/// The whole method: `setup.samples` evaluated samples, a predictor, evolution per budget of
/// `metric`, each pick evaluated through `evaluator`.
pub fn evolutionary_search(
    space: &SearchSpace,
    metrics: &dyn MetricProvider,
    metric: Metric,
    limits: &[f64],
    setup: EvolutionSetup<'_>,
    evaluator: &mut dyn Evaluator,
) -> Result<EvolutionOutcome> {
    let EvolutionSetup {
        samples: m,
        predictor: popts,
        evolution: eopts,
    } = setup;
    check(eopts)?;
    let t = Instant::now();
    let (samples, mut shared_cost) = collect_samples(space, m, popts.seed, evaluator)?;
    let (model, report) = train_predictor(space, &samples, popts)?;
    shared_cost.predictor_train_s = report.train_s;
    shared_cost.wall_s = t.elapsed().as_secs_f64();
    let found = search_with_predictor(space, metrics, metric, limits, &model, eopts, evaluator)?;
    Ok(EvolutionOutcome {
        samples,
        predictor: report,
        model,
        shared_cost,
        found,
    })
}

/// Evolution per budget with an already trained predictor; each pick evaluated for real.
pub fn search_with_predictor(
    space: &SearchSpace,
    metrics: &dyn MetricProvider,
    metric: Metric,
    limits: &[f64],
    predictor: &Predictor,
    opts: &EvoOpts,
    evaluator: &mut dyn Evaluator,
) -> Result<Vec<Found>> {
    let mut meter = Meter::new(evaluator);
    let mut out = Vec::with_capacity(limits.len());
    for &limit in limits {
        let budget = Budget::new(metric, limit);
        let e = evolve(space, metrics, budget, predictor, opts)?;
        let acc = meter.evaluate(&e.config)?.accuracy;
        let mut cost = meter.take();
        cost.predictor_queries = e.predictor_queries;
        cost.metric_queries = e.metric_queries;
        out.push(Found {
            method: "evolution".into(),
            id: e.config.id(),
            config: e.config,
            budget,
            value: e.value,
            accuracy: acc,
            predicted: Some(e.predicted),
            candidates: e.candidates,
            cost,
        });
    }
    Ok(out)
}

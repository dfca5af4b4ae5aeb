//! The accuracy boundary ([`Evaluator`]) and cost accounting ([`SearchCost`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tofa_nn::SubnetConfig;

use crate::error::{BoxError, Result, SelectError};

/// What one evaluation of a subnet returns.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Accuracy in `[0, 1]` (e.g. top-1 on the validation split after BN recalibration).
    pub accuracy: f64,
    /// Images run through the network for this evaluation (recalibration included, if the
    /// caller counts it).
    pub images: u64,
}

/// Measures a subnet's accuracy. The pipeline implements it with BN recalibration and
/// validation accuracy on a trained supernet; tests use synthetic evaluators.
pub trait Evaluator {
    /// Evaluates `cfg`. Errors are boxed so any error type fits.
    fn evaluate(&mut self, cfg: &SubnetConfig) -> std::result::Result<Evaluation, BoxError>;
}

impl<E: Evaluator + ?Sized> Evaluator for &mut E {
    fn evaluate(&mut self, cfg: &SubnetConfig) -> std::result::Result<Evaluation, BoxError> {
        (**self).evaluate(cfg)
    }
}

/// An evaluator from a closure.
pub struct FnEvaluator<F>(pub F);

impl<F> Evaluator for FnEvaluator<F>
where
    F: FnMut(&SubnetConfig) -> std::result::Result<Evaluation, BoxError>,
{
    fn evaluate(&mut self, cfg: &SubnetConfig) -> std::result::Result<Evaluation, BoxError> {
        (self.0)(cfg)
    }
}

/// The measured cost of a selection method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchCost {
    /// Calls to the evaluator (subnet evaluations).
    pub evaluations: u64,
    /// Images evaluated over those calls.
    pub images: u64,
    /// Wall time spent in the evaluator, seconds.
    pub eval_s: f64,
    /// Wall time training the accuracy predictor, seconds (0 for other methods).
    pub predictor_train_s: f64,
    /// Calls to the accuracy predictor.
    pub predictor_queries: u64,
    /// Metric values computed or looked up.
    pub metric_queries: u64,
    /// Wall time of the whole method, seconds (evaluations and training included).
    pub wall_s: f64,
}

impl SearchCost {
    /// The sum of two costs (e.g. a one-time predictor dataset plus a per-budget search).
    pub fn plus(&self, o: &SearchCost) -> SearchCost {
        SearchCost {
            evaluations: self.evaluations + o.evaluations,
            images: self.images + o.images,
            eval_s: self.eval_s + o.eval_s,
            predictor_train_s: self.predictor_train_s + o.predictor_train_s,
            predictor_queries: self.predictor_queries + o.predictor_queries,
            metric_queries: self.metric_queries + o.metric_queries,
            wall_s: self.wall_s + o.wall_s,
        }
    }
}

/// Wraps an evaluator: checks results and accumulates a [`SearchCost`].
pub(crate) struct Meter<'e> {
    eval: &'e mut dyn Evaluator,
    pub(crate) cost: SearchCost,
    start: Instant,
}

impl<'e> Meter<'e> {
    pub(crate) fn new(eval: &'e mut dyn Evaluator) -> Self {
        Meter {
            eval,
            cost: SearchCost::default(),
            start: Instant::now(),
        }
    }

    pub(crate) fn evaluate(&mut self, cfg: &SubnetConfig) -> Result<Evaluation> {
        let t = Instant::now();
        let ev = self
            .eval
            .evaluate(cfg)
            .map_err(|source| SelectError::Evaluator {
                id: cfg.id(),
                source,
            })?;
        self.cost.eval_s += t.elapsed().as_secs_f64();
        self.cost.evaluations += 1;
        self.cost.images += ev.images;
        if !(0.0..=1.0).contains(&ev.accuracy) {
            return Err(SelectError::BadAccuracy {
                id: cfg.id(),
                accuracy: ev.accuracy,
            });
        }
        Ok(ev)
    }

    /// The cost so far, with the wall time since creation (or the last `take`).
    pub(crate) fn take(&mut self) -> SearchCost {
        let mut c = std::mem::take(&mut self.cost);
        c.wall_s = self.start.elapsed().as_secs_f64();
        self.start = Instant::now();
        c
    }
}

/// The subnet a search kept for one budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Found {
    /// `random` or `evolution`.
    pub method: String,
    /// Canonical id of the pick.
    pub id: String,
    /// The pick.
    pub config: SubnetConfig,
    /// The budget it meets.
    pub budget: crate::metric::Budget,
    /// Its value of the budget's metric.
    pub value: f64,
    /// Its accuracy as measured by the evaluator.
    pub accuracy: f64,
    /// The predictor's estimate (evolution only).
    pub predicted: Option<f64>,
    /// Distinct subnets evaluated (random) or scored by the predictor (evolution).
    pub candidates: usize,
    /// The cost of this budget's search (for evolution: without the one-time predictor
    /// dataset and training, reported in [`crate::evolution::EvolutionOutcome::shared_cost`]).
    pub cost: SearchCost,
}

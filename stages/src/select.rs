//! Selection stages: `palette` (Algorithm 2 over budgets) and `selection` (the fixed rule
//! against random and evolutionary search, Figures 8-11).
//!
//! Budgets are in MFLOPs (multiply-adds, the paper's "FLOPs"). When a stage names none,
//! `n_budgets` budgets are spread evenly between the smallest and largest MFLOPs in Omega,
//! so every budget is feasible.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tofa_nn::{Omega, SubnetConfig};
use tofa_runner::BoxError;
use tofa_runner::kind::{DepOutput, StageContext, StageKind};
use tofa_select::{
    Evaluation, EvoOpts, EvolutionSetup, FnEvaluator, Metric, Metrics, PredictorOpts, RandomOpts,
    Ranges, Rule, evolutionary_search, metric_range, palette, random_search,
};

use crate::data::Prepared;
use crate::rows::{PaletteRow, PredictorRow, SelectionRow, TofaRow};
use crate::train::{EvalParams, Model, OMEGA_FILE, Tester, TofaTrain};
use crate::{StageError, one_dep};

/// Budgets of a selection stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Explicit budgets in MFLOPs; when empty, `n` budgets spread over Omega's range.
    #[serde(default)]
    pub mflops: Vec<f64>,
    #[serde(default = "five")]
    pub n: usize,
}

fn five() -> usize {
    5
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            mflops: Vec::new(),
            n: five(),
        }
    }
}

impl Budgets {
    /// The limits in multiply-adds.
    fn limits(&self, omega: &Omega, metrics: &Metrics) -> Result<Vec<f64>, StageError> {
        if !self.mflops.is_empty() {
            return Ok(self.mflops.iter().map(|m| m * 1e6).collect());
        }
        if self.n == 0 {
            return Err(StageError::Param(
                "budgets.n is 0 and budgets.mflops is empty".into(),
            ));
        }
        let (lo, hi) = metric_range(omega, metrics, Metric::Macs)?;
        Ok(if self.n == 1 {
            vec![hi]
        } else {
            (0..self.n)
                .map(|i| lo + (hi - lo) * i as f64 / (self.n - 1) as f64)
                .collect()
        })
    }
}

/// What a `tofa_train` dependency left: model, Omega, variant.
struct Trained {
    model: Model,
    omega: Omega,
    variant: tofa_train::Variant,
    /// The replicate label of the training run.
    seed: String,
}

fn trained(ctx: &StageContext) -> Result<Trained, StageError> {
    let dep = one_dep::<TofaTrain>(ctx)?;
    let row = match dep.rows_of::<TofaRow>()?.as_slice() {
        [r] => r.clone(),
        rs => {
            return Err(StageError::Deps(format!(
                "`{}` emitted {} `tofa` rows, expected one",
                dep.id,
                rs.len()
            )));
        }
    };
    Ok(Trained {
        model: Model::from_dir(&dep.dir, &crate::device(ctx)?)?,
        omega: Omega::load(&dep.dir.join(OMEGA_FILE))?,
        variant: row.variant,
        seed: row.seed,
    })
}

/// Exports `cfg` (with BN statistics recalibrated as the tester does) to `dir`.
pub fn export(tester: &Tester<'_>, cfg: &SubnetConfig, dir: &Path) -> Result<(), StageError> {
    let calib = tester
        .calib
        .iter()
        .map(|x| tofa_train::resize(x, cfg.resolution))
        .collect::<Result<Vec<_>, _>>()?;
    let stats = tester.model.net.recalibrate_bn(cfg, &calib)?;
    tofa_nn::export_subnet(&tester.model.net, cfg, Some(&stats), dir)?;
    Ok(())
}

/// `palette`: the fixed rule's subnet per budget, tested and exported to `models/<id>/`
/// (maxnet and minnet too, for Figure 7).
#[derive(Debug)]
pub struct Palette;

/// Params of [`Palette`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaletteParams {
    #[serde(default)]
    pub budgets: Budgets,
    /// `last_sampled` (Algorithm 2) or `cumulative` (Section 3.4's index).
    #[serde(default = "last_sampled")]
    pub rule: Rule,
    /// `bins` (each budget selects within its own size range, Section 3.4's prose) or
    /// `at_most` (Algorithm 2's `p(a) <= t`, literally).
    #[serde(default = "bins")]
    pub ranges: Ranges,
    #[serde(default)]
    pub eval: EvalParams,
}

fn last_sampled() -> Rule {
    Rule::LastSampled
}

fn bins() -> Ranges {
    Ranges::Bins
}

/// Why a subnet is in a palette.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The two extremes, always exported (paper Figure 7).
    Maxnet,
    Minnet,
    /// The pick of one budget, in budget order.
    Budget,
}

/// One subnet of a palette, as `palette.json` lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PaletteEntry {
    pub role: Role,
    pub budget_mflops: Option<f64>,
    pub id: String,
    pub mflops: f64,
    pub test_acc: f64,
    /// Directory under the stage's output, holding the exported model.
    pub dir: String,
}

impl PaletteEntry {
    /// The file a `palette` stage lists its subnets in.
    const FILE: &'static str = "palette.json";

    /// The entries of a `palette` dependency, maxnet and minnet first, then one per budget.
    pub fn read(dep: &DepOutput) -> Result<Vec<PaletteEntry>, StageError> {
        crate::read_json(&dep.dir.join(Self::FILE))
    }

    fn write(ctx: &StageContext, entries: &[PaletteEntry]) -> Result<(), StageError> {
        crate::write_json(&ctx.out(Self::FILE), &entries)
    }
}

impl StageKind for Palette {
    type Params = PaletteParams;
    const NAME: &'static str = "palette";
    // 2: rows keyed by budget index (budgets closer than 0.01 MFLOPs collided).
    // 3: size-range selection (`ranges`), fallback column.
    const VERSION: &'static str = "3";

    fn run(&self, p: &PaletteParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let data = Prepared::of(ctx)?;
        let t = trained(ctx)?;
        let metrics = Metrics::new(&t.model.space);
        let limits = p.budgets.limits(&t.omega, &metrics)?;
        let picks = palette(&t.omega, &metrics, Metric::Macs, &limits, p.rule, p.ranges)?;
        let tester = Tester::new(&t.model, &data, &p.eval, ctx.seed)?;
        let mut entries = Vec::new();
        ctx.progress.set_total(picks.len() as u64 + 2, "subnets");
        let mut add =
            |role: Role, budget: Option<f64>, cfg: &SubnetConfig| -> Result<_, BoxError> {
                let acc = tester.test(cfg)?.accuracy * 100.0;
                let mflops = tofa_nn::cost(&t.model.space, cfg)?.macs as f64 / 1e6;
                let dir = format!("models/{}", cfg.id());
                if !ctx.out(&dir).exists() {
                    export(&tester, cfg, &ctx.out(&dir))?;
                }
                ctx.progress.inc(1);
                entries.push(PaletteEntry {
                    role,
                    budget_mflops: budget,
                    id: cfg.id(),
                    mflops,
                    test_acc: acc,
                    dir,
                });
                Ok(())
            };
        add(Role::Maxnet, None, &SubnetConfig::maxnet(&t.model.space))?;
        add(Role::Minnet, None, &SubnetConfig::minnet(&t.model.space))?;
        for s in &picks {
            add(Role::Budget, Some(s.budget.limit / 1e6), &s.config)?;
        }
        PaletteEntry::write(ctx, &entries)?;
        for (i, (e, s)) in entries.iter().skip(2).zip(&picks).enumerate() {
            ctx.emit_row(&PaletteRow {
                dataset: data.spec.name.clone(),
                variant: t.variant,
                budget: i,
                budget_mflops: s.budget.limit / 1e6,
                subnet: e.id.clone(),
                mflops: e.mflops,
                test_acc: e.test_acc,
                last_iter: s.last_iter,
                feasible: s.feasible,
                fallback: s.fallback,
                omega: s.omega_len,
            })?;
        }
        Ok(())
    }
}

/// How a `selection` row's subnet was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The fixed rule within each budget's size range (Section 3.4; the default).
    Fixed,
    /// The fixed rule with Algorithm 2's literal `p(a) <= t`.
    FixedLe,
    /// Random search on the validation split.
    Random,
    /// Evolutionary search with an accuracy predictor.
    Evolution,
}

impl Method {
    /// Every method, in the order tables and figures list them.
    pub const ALL: [Method; 4] = [
        Method::Fixed,
        Method::FixedLe,
        Method::Random,
        Method::Evolution,
    ];

    /// The serde name (`fixed`, `fixed_le`, `random`, `evolution`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Fixed => "fixed",
            Method::FixedLe => "fixed_le",
            Method::Random => "random",
            Method::Evolution => "evolution",
        }
    }

    /// One of the two fixed-rule readings (no evaluations).
    pub fn is_fixed(self) -> bool {
        matches!(self, Method::Fixed | Method::FixedLe)
    }
}

/// `selection`: per budget, the fixed rule against random search and evolutionary search
/// with an accuracy predictor, all on the validation split; the picks tested on the test set.
#[derive(Debug)]
pub struct Selection;

/// Params of [`Selection`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionParams {
    #[serde(default)]
    pub budgets: Budgets,
    /// Random search (paper: about 10 subnets per budget).
    #[serde(default)]
    pub random: RandomOpts,
    /// Subnets evaluated to train the accuracy predictor (paper: about 1,000).
    #[serde(default = "thousand")]
    pub predictor_samples: usize,
    #[serde(default)]
    pub predictor: PredictorOpts,
    #[serde(default)]
    pub evolution: EvoOpts,
    #[serde(default)]
    pub eval: EvalParams,
}

fn thousand() -> usize {
    1000
}

impl StageKind for Selection {
    type Params = SelectionParams;
    const NAME: &'static str = "selection";
    // 2: rows keyed by budget index.
    // 3: the fixed rule both over size ranges (`fixed`) and literally (`fixed_le`).
    const VERSION: &'static str = "3";

    fn run(&self, p: &SelectionParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let data = Prepared::of(ctx)?;
        let t = trained(ctx)?;
        let metrics = Metrics::new(&t.model.space);
        let limits = p.budgets.limits(&t.omega, &metrics)?;
        let tester = Tester::new(&t.model, &data, &p.eval, ctx.seed)?;
        let total = (p.predictor_samples + limits.len() * (p.random.k + 4)) as u64;
        ctx.progress.set_total(total, "evals");
        let progress = ctx.progress.clone();
        let mut evaluator = FnEvaluator(|cfg: &SubnetConfig| {
            let r = tester.validate(cfg)?;
            progress.inc(1);
            Ok(Evaluation {
                accuracy: r.accuracy,
                images: r.images,
            })
        });
        let mut rows = Vec::new();
        // The fixed rule: Omega and metric look-ups only. Its validation accuracy is measured
        // for the table, outside its cost.
        let t0 = std::time::Instant::now();
        let fixed = palette(
            &t.omega,
            &metrics,
            Metric::Macs,
            &limits,
            Rule::LastSampled,
            Ranges::Bins,
        )?;
        let literal = palette(
            &t.omega,
            &metrics,
            Metric::Macs,
            &limits,
            Rule::LastSampled,
            Ranges::AtMost,
        )?;
        let fixed_s = t0.elapsed().as_secs_f64() / 2.0;
        for s in &fixed {
            rows.push((Method::Fixed, s.budget.limit, s.config.clone(), s.cost, 0.0));
        }
        for s in &literal {
            rows.push((
                Method::FixedLe,
                s.budget.limit,
                s.config.clone(),
                s.cost,
                0.0,
            ));
        }
        let mut ropts = p.random;
        ropts.seed ^= ctx.seed;
        for f in random_search(
            &t.model.space,
            &metrics,
            Metric::Macs,
            &limits,
            &ropts,
            &mut evaluator,
        )? {
            rows.push((Method::Random, f.budget.limit, f.config, f.cost, 0.0));
        }
        let mut popts = p.predictor.clone();
        popts.seed ^= ctx.seed;
        let mut eopts = p.evolution;
        eopts.seed ^= ctx.seed;
        let evo = evolutionary_search(
            &t.model.space,
            &metrics,
            Metric::Macs,
            &limits,
            EvolutionSetup {
                samples: p.predictor_samples,
                predictor: &popts,
                evolution: &eopts,
            },
            &mut evaluator,
        )?;
        // The predictor's data set is paid once and shared by every budget: spread evenly.
        let share = 1.0 / limits.len().max(1) as f64;
        for f in evo.found {
            rows.push((Method::Evolution, f.budget.limit, f.config, f.cost, share));
        }
        let shared = evo.shared_cost;
        let pr = &evo.predictor;
        ctx.emit_row(&PredictorRow {
            dataset: data.spec.name.clone(),
            seed: t.seed.clone(),
            samples: p.predictor_samples,
            test_n: pr.test_n,
            kendall_tau: pr.kendall_tau,
            rmse: pr.rmse,
            rmse_mean_baseline: pr.rmse_mean_baseline,
            train_s: pr.train_s,
        })?;
        for (method, limit, cfg, cost, share) in rows {
            let budget = limits.iter().position(|l| *l == limit).unwrap_or(0);
            let val = tester.validate(&cfg)?.accuracy * 100.0;
            let test = tester.test(&cfg)?.accuracy * 100.0;
            progress.inc(1);
            let mflops = tofa_nn::cost(&t.model.space, &cfg)?.macs as f64 / 1e6;
            let evaluations = cost.evaluations as f64 + share * shared.evaluations as f64;
            let images = cost.images as f64 + share * shared.images as f64;
            let wall = if method.is_fixed() {
                fixed_s / limits.len().max(1) as f64
            } else {
                cost.wall_s + share * shared.wall_s
            };
            ctx.emit_row(&SelectionRow {
                dataset: data.spec.name.clone(),
                seed: t.seed.clone(),
                budget,
                method,
                budget_mflops: limit / 1e6,
                subnet: cfg.id(),
                mflops,
                val_acc: val,
                test_acc: test,
                evaluations,
                images,
                search_s: wall,
            })?;
        }
        Ok(())
    }
}

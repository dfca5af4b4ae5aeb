//! The Claims section: each claim of the paper that our pipeline measures, with our two
//! numbers, their paired difference over the training seeds, and a verdict.
//!
//! A difference is taken per seed (replicate `s` of one method against replicate `s` of the
//! other, on the same split and pre-training), averaged over the data sets, and summarised
//! over seeds as mean ± standard deviation. The verdict compares the mean, shifted by the
//! claim's margin, with twice its standard error: `holds` above, `does not hold` below,
//! `within noise` between. With one seed there is no spread and the sign decides.

use tofa_report::{Cell, Table};
use tofa_train::{SingleMode, Variant};

use super::stat::{BySeed, Replicate, Stat, by_seed, datasets, is_baseline, is_tofa, stat_cell};
use super::{ArtifactParams, Inputs, Made, write_table};
use crate::StageError;
use crate::rows::{SelectionRow, TofaRow};
use crate::select::Method;
use crate::train::Arch;

/// The two sides of a claim on one data set (and budget, for selection claims).
struct Pair {
    a: BySeed,
    b: BySeed,
}

/// One checked claim.
struct Claim {
    claim: String,
    ours_a: String,
    ours_b: String,
    /// Per data set: `a` and `b` by seed.
    pairs: Vec<Pair>,
    /// Added to `a - b` before the verdict (1 for "within 1 point").
    margin: f64,
}

/// What one claim's numbers come to.
struct Summary {
    a: f64,
    b: f64,
    diff: Stat,
    holds_on: usize,
    datasets: usize,
}

impl Claim {
    fn summary(&self) -> Option<Summary> {
        // seeds present for both sides on every data set
        let mut seeds: Option<Vec<String>> = None;
        for Pair { a, b } in &self.pairs {
            let here: Vec<String> = a.keys().filter(|s| b.contains_key(*s)).cloned().collect();
            seeds = Some(match seeds {
                None => here,
                Some(prev) => prev.into_iter().filter(|s| here.contains(s)).collect(),
            });
        }
        let seeds = seeds.filter(|s| !s.is_empty())?;
        let nd = self.pairs.len() as f64;
        let per_seed: Vec<f64> = seeds
            .iter()
            .map(|s| self.pairs.iter().map(|p| p.a[s] - p.b[s]).sum::<f64>() / nd)
            .collect();
        let mean_of = |pick: &dyn Fn(&Pair) -> &BySeed| {
            self.pairs
                .iter()
                .map(|p| seeds.iter().map(|s| pick(p)[s]).sum::<f64>() / seeds.len() as f64)
                .sum::<f64>()
                / nd
        };
        let holds_on = self
            .pairs
            .iter()
            .filter(|p| {
                let d = seeds.iter().map(|s| p.a[s] - p.b[s]).sum::<f64>() / seeds.len() as f64;
                d + self.margin > 0.0
            })
            .count();
        Some(Summary {
            a: mean_of(&|p| &p.a),
            b: mean_of(&|p| &p.b),
            diff: Stat::of(&per_seed)?,
            holds_on,
            datasets: self.pairs.len(),
        })
    }
}

/// `holds`, `does not hold` or `within noise` (see the module docs).
pub(super) fn verdict(diff: Stat, margin: f64) -> &'static str {
    let x = diff.mean + margin;
    let se = diff.se();
    if diff.n > 1 && se.is_finite() {
        if x > 2.0 * se {
            "holds"
        } else if x < -2.0 * se {
            "does not hold"
        } else {
            "within noise"
        }
    } else if x > 0.0 {
        "holds"
    } else {
        "does not hold"
    }
}

/// Pairs `a`'s values against `b`'s (each given the data set) on every data set of the
/// TOFA rows where both exist.
fn pairs<A: Replicate, B: Replicate>(
    inp: &Inputs,
    a: &[A],
    va: impl Fn(&A, &str) -> Option<f64>,
    b: &[B],
    vb: impl Fn(&B, &str) -> Option<f64>,
) -> Vec<Pair> {
    datasets(inp.tofa.iter().map(|r| &r.dataset))
        .into_iter()
        .filter_map(|d| {
            let x = by_seed(a, |r| va(r, &d));
            let y = by_seed(b, |r| vb(r, &d));
            (!x.is_empty() && !y.is_empty()).then_some(Pair { a: x, b: y })
        })
        .collect()
}

/// (d): the fixed rule against each search, per budget (size ranges) and over all budgets
/// (the literal reading).
fn selection_claims(inp: &Inputs, out: &mut Vec<Claim>) {
    let sel = &inp.selection;
    let mut budgets: Vec<usize> = sel.iter().map(|r| r.budget).collect();
    budgets.sort_unstable();
    budgets.dedup();
    let is = |r: &SelectionRow, d: &str, b: usize, m: Method| {
        r.dataset == d && r.method == m && r.budget == b
    };
    for (fixed, label) in [
        (Method::Fixed, "fixed rule (size ranges)"),
        (Method::FixedLe, "fixed rule (literal `p <= t`)"),
    ] {
        for search in [Method::Random, Method::Evolution] {
            for &b in &budgets {
                // the literal reading is summarised over all budgets in one row per method
                if fixed == Method::FixedLe && b != budgets[0] {
                    continue;
                }
                let bs: Vec<usize> = if fixed == Method::FixedLe {
                    budgets.clone()
                } else {
                    vec![b]
                };
                let mut ps = Vec::new();
                for d in datasets(sel.iter().map(|r| &r.dataset)) {
                    for &bb in &bs {
                        let x = by_seed(sel, |r| is(r, &d, bb, fixed).then_some(r.test_acc));
                        let y = by_seed(sel, |r| is(r, &d, bb, search).then_some(r.test_acc));
                        if !x.is_empty() && !y.is_empty() {
                            ps.push(Pair { a: x, b: y });
                        }
                    }
                }
                let which = if fixed == Method::FixedLe {
                    "every budget".to_string()
                } else {
                    format!("budget {b}")
                };
                out.push(Claim {
                    claim: format!(
                        "(d) {label} within 1 point of {} search, {which}",
                        search.name()
                    ),
                    ours_a: "fixed".into(),
                    ours_b: search.name().into(),
                    pairs: ps,
                    margin: 1.0,
                });
            }
        }
    }
}

/// (e): one TOFA training against one fine-tuning per deployment scenario.
fn cost_rows(inp: &Inputs, t: &mut Table) -> Result<(), StageError> {
    let finetunes: Vec<_> = inp
        .baselines
        .iter()
        .filter(|r| matches!(r.arch, Arch::Palette(_)))
        .collect();
    for d in datasets(finetunes.iter().map(|r| &r.dataset)) {
        let ft: Vec<f64> = finetunes
            .iter()
            .filter(|r| r.dataset == d)
            .map(|r| r.train_gmacs)
            .collect();
        let tofa = inp
            .tofa
            .iter()
            .find(|r| is_tofa(r, &d, Variant::Lab) && r.seed == "0")
            .map(|r| r.train_gmacs);
        let (Some(tofa), false) = (tofa, ft.is_empty()) else {
            continue;
        };
        let n = ft.len();
        let total: f64 = ft.iter().sum();
        let break_even = tofa / (total / n as f64);
        t.push(vec![
            Cell::text(format!(
                "(e) training cost flat in the number of scenarios, fine-tuning linear ({d}, \
                 {n} scenarios; TOFA pays off from {break_even:.1} scenarios)"
            )),
            Cell::text(format!("fine-tuning GMACs, {n} models")),
            Cell::num(total, 1),
            Cell::text("TOFA GMACs, one training"),
            Cell::num(tofa, 1),
            Cell::num(total - tofa, 1),
            Cell::text(format!("{n} budgets")),
            Cell::text(if tofa < total {
                "holds"
            } else {
                "does not hold"
            }),
        ])?;
    }
    Ok(())
}

/// The Claims table.
pub(super) fn claims(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let tofa = |v: Variant, acc: fn(&TofaRow) -> f64| {
        move |r: &TofaRow, d: &str| is_tofa(r, d, v).then_some(acc(r))
    };
    let maxnet_acc: fn(&TofaRow) -> f64 = |r| r.maxnet_acc;
    let baseline = |m: SingleMode| {
        move |r: &crate::rows::BaselineRow, d: &str| is_baseline(r, d, m).then_some(r.acc)
    };
    let mut list = vec![
        Claim {
            claim: "(a) TOFA labelled > Baseline labelled (maxnet, Table 3)".into(),
            ours_a: "TOFA lab".into(),
            ours_b: "Baseline labelled".into(),
            pairs: pairs(
                inp,
                &inp.tofa,
                tofa(Variant::Lab, maxnet_acc),
                &inp.baselines,
                baseline(SingleMode::Labelled),
            ),
            margin: 0.0,
        },
        Claim {
            claim: "(b) TOFA full > FixMatch baseline (maxnet, Table 3)".into(),
            ours_a: "TOFA full".into(),
            ours_b: "Baseline FixMatch".into(),
            pairs: pairs(
                inp,
                &inp.tofa,
                tofa(Variant::Full, maxnet_acc),
                &inp.baselines,
                baseline(SingleMode::FixMatch),
            ),
            margin: 0.0,
        },
    ];
    let minnet_acc: fn(&TofaRow) -> f64 = |r| r.minnet_acc;
    for (model, acc) in [("maxnet", maxnet_acc), ("minnet", minnet_acc)] {
        for (a, b) in [(Variant::Full, Variant::Fm), (Variant::Dist, Variant::Lab)] {
            list.push(Claim {
                claim: format!("(c) Table 4: {} >= {}, {model}", a.name(), b.name()),
                ours_a: a.name().into(),
                ours_b: b.name().into(),
                pairs: pairs(inp, &inp.tofa, tofa(a, acc), &inp.tofa, tofa(b, acc)),
                margin: 0.0,
            });
        }
    }
    selection_claims(inp, &mut list);
    let mut t = Table::new(
        &p.title,
        &[
            "claim",
            "ours: A",
            "A",
            "ours: B",
            "B",
            "A - B (mean ± std over seeds)",
            "seeds; data sets where A - B + margin > 0",
            "verdict",
        ],
    );
    for c in &list {
        let Some(s) = c.summary() else { continue };
        t.push(vec![
            Cell::text(&c.claim),
            Cell::text(&c.ours_a),
            Cell::num(s.a, 1),
            Cell::text(&c.ours_b),
            Cell::num(s.b, 1),
            stat_cell(Some(s.diff), 2),
            Cell::text(format!("{}; {}/{}", s.diff.n, s.holds_on, s.datasets)),
            Cell::text(verdict(s.diff, c.margin)),
        ])?;
    }
    cost_rows(inp, &mut t)?;
    write_table(
        p,
        &t,
        dir,
        "Each claim of the paper that this pipeline measures, on this profile's data. A and B \
         are test accuracies (%, (e): training multiply-adds) averaged over data sets and training seeds; the difference is taken \
         per seed (same split and pre-training), averaged over data sets, then summarised over \
         seeds. Verdict: `holds` when the mean difference (plus the claim's margin: 1 point for \
         (d)) exceeds twice its standard error over seeds, `does not hold` when it is below \
         minus that, `within noise` otherwise; with one seed the sign decides. For (d), each \
         data set and budget is one pair; the size-range rule is the default (Section 3.4's \
         prose), the literal `p(a) <= t` reading is reported beside it. The hyper-parameters are \
         one set for the whole profile (`pipeline.toml`); none was tuned per claim.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(mean: f64, std: f64, n: usize) -> Stat {
        Stat { mean, std, n }
    }

    #[test]
    fn verdicts_use_twice_the_standard_error() {
        // se = 1 / sqrt(4) = 0.5: band 1.0
        assert_eq!(verdict(st(1.5, 1.0, 4), 0.0), "holds");
        assert_eq!(verdict(st(0.5, 1.0, 4), 0.0), "within noise");
        assert_eq!(verdict(st(-1.5, 1.0, 4), 0.0), "does not hold");
        // the margin of "within 1 point": fixed 0.5 below search holds when se is small
        assert_eq!(verdict(st(-0.5, 0.2, 4), 1.0), "holds");
        assert_eq!(verdict(st(-2.5, 0.2, 4), 1.0), "does not hold");
        // one seed: the sign decides
        assert_eq!(verdict(st(0.3, f64::NAN, 1), 0.0), "holds");
        assert_eq!(verdict(st(-0.3, f64::NAN, 1), 0.0), "does not hold");
    }

    #[test]
    fn differences_are_paired_by_seed_and_averaged_over_data_sets() {
        use super::super::testutil::{baseline, tofa};
        let mut inp = Inputs::default();
        for (d, off) in [("x", 0.0), ("y", 10.0)] {
            for (s, lab, base) in [("0", 50.0, 48.0), ("1", 52.0, 51.0), ("2", 49.0, 46.0)] {
                inp.tofa.push(tofa(d, Variant::Lab, s, lab + off, 1.0));
                inp.baselines
                    .push(baseline(d, SingleMode::Labelled, s, base + off));
            }
        }
        let c = Claim {
            claim: "a".into(),
            ours_a: "A".into(),
            ours_b: "B".into(),
            pairs: pairs(
                &inp,
                &inp.tofa,
                |r, d| is_tofa(r, d, Variant::Lab).then_some(r.maxnet_acc),
                &inp.baselines,
                |r, d| is_baseline(r, d, SingleMode::Labelled).then_some(r.acc),
            ),
            margin: 0.0,
        };
        let s = c.summary().unwrap();
        // per-seed differences 2, 1, 3 on both data sets: mean 2, std 1
        assert_eq!((s.diff.n, s.holds_on, s.datasets), (3, 2, 2));
        assert!((s.diff.mean - 2.0).abs() < 1e-12 && (s.diff.std - 1.0).abs() < 1e-12);
        assert!((s.a - (50.333333333333336 + 5.0)).abs() < 1e-9, "{}", s.a);
        // se = 1/sqrt(3) = 0.577, 2 se = 1.15 < 2: holds
        assert_eq!(verdict(s.diff, 0.0), "holds");
    }
}

//! The Claims section: each claim of the paper that our pipeline measures, with our two
//! numbers, their paired difference over the training seeds, and a verdict.
//!
//! A difference is taken per seed (replicate `s` of one method against replicate `s` of the
//! other, on the same split and pre-training), averaged over the data sets, and summarised
//! over seeds as mean ± standard deviation. The verdict compares the mean, shifted by the
//! claim's margin, with twice its standard error: `holds` above, `does not hold` below,
//! `within noise` between. With one seed there is no spread and the sign decides.

use std::collections::BTreeMap;

use tofa_report::{Cell, Table};
use tofa_runner::kind::Row;

use super::{
    ArtifactParams, Made, Stat, VARIANTS, datasets, is_baseline, is_tofa, key, num, seed_of,
    stat_cell, write_table,
};
use crate::StageError;

/// Accuracies (or costs) by seed.
type BySeed = BTreeMap<String, f64>;

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

/// Pairs `a` against `b` on every data set where both exist.
fn pairs(
    rows: &[Row],
    table: &str,
    a: impl Fn(&Row, &str) -> bool,
    ma: &str,
    b: impl Fn(&Row, &str) -> bool,
    mb: &str,
) -> Vec<Pair> {
    datasets(rows.iter().filter(|r| r.table == table))
        .into_iter()
        .filter_map(|d| {
            let x = super::by_seed(rows, |r| a(r, &d), ma);
            let y = super::by_seed(rows, |r| b(r, &d), mb);
            (!x.is_empty() && !y.is_empty()).then_some(Pair { a: x, b: y })
        })
        .collect()
}

fn selection_claims(rows: &[Row], out: &mut Vec<Claim>) {
    let sel: Vec<&Row> = rows.iter().filter(|r| r.table == "selection").collect();
    let mut budgets: Vec<u64> = sel
        .iter()
        .filter_map(|r| r.keys.get("budget").and_then(|v| v.as_u64()))
        .collect();
    budgets.sort_unstable();
    budgets.dedup();
    let is = |r: &Row, d: &str, b: u64, m: &str| {
        r.table == "selection"
            && key(r, "dataset") == Some(d)
            && key(r, "method") == Some(m)
            && r.keys.get("budget").and_then(|v| v.as_u64()) == Some(b)
    };
    for (fixed, label) in [
        ("fixed", "fixed rule (size ranges)"),
        ("fixed_le", "fixed rule (literal `p <= t`)"),
    ] {
        for search in ["random", "evolution"] {
            for &b in &budgets {
                // the literal reading is summarised over all budgets in one row per method
                if fixed == "fixed_le" && b != budgets[0] {
                    continue;
                }
                let bs: Vec<u64> = if fixed == "fixed_le" {
                    budgets.clone()
                } else {
                    vec![b]
                };
                let mut ps = Vec::new();
                for d in datasets(sel.iter().copied()) {
                    for &bb in &bs {
                        let x = super::by_seed(rows, |r| is(r, &d, bb, fixed), "test_acc");
                        let y = super::by_seed(rows, |r| is(r, &d, bb, search), "test_acc");
                        if !x.is_empty() && !y.is_empty() {
                            ps.push(Pair { a: x, b: y });
                        }
                    }
                }
                let which = if fixed == "fixed_le" {
                    "every budget".to_string()
                } else {
                    format!("budget {b}")
                };
                out.push(Claim {
                    claim: format!("(d) {label} within 1 point of {search} search, {which}"),
                    ours_a: "fixed".into(),
                    ours_b: search.into(),
                    pairs: ps,
                    margin: 1.0,
                });
            }
        }
    }
}

/// (e): one TOFA training against one fine-tuning per deployment scenario.
fn cost_rows(rows: &[Row], t: &mut Table) -> Result<(), StageError> {
    let finetunes: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.table == "baseline" && key(r, "arch").is_some_and(|a| a.starts_with("palette:"))
        })
        .collect();
    for d in datasets(finetunes.iter().copied()) {
        let ft: Vec<f64> = finetunes
            .iter()
            .filter(|r| key(r, "dataset") == Some(&d))
            .filter_map(|r| num(&r.metrics, "train_gmacs"))
            .collect();
        let tofa = rows
            .iter()
            .find(|r| is_tofa(r, &d, "lab") && seed_of(r) == "0")
            .and_then(|r| num(&r.metrics, "train_gmacs"));
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
    rows: &[Row],
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut list = vec![
        Claim {
            claim: "(a) TOFA labelled > Baseline labelled (maxnet, Table 3)".into(),
            ours_a: "TOFA lab".into(),
            ours_b: "Baseline labelled".into(),
            pairs: pairs(
                rows,
                "tofa",
                |r, d| is_tofa(r, d, "lab"),
                "maxnet_acc",
                |r, d| is_baseline(r, d, "labelled"),
                "acc",
            ),
            margin: 0.0,
        },
        Claim {
            claim: "(b) TOFA full > FixMatch baseline (maxnet, Table 3)".into(),
            ours_a: "TOFA full".into(),
            ours_b: "Baseline FixMatch".into(),
            pairs: pairs(
                rows,
                "tofa",
                |r, d| is_tofa(r, d, "full"),
                "maxnet_acc",
                |r, d| is_baseline(r, d, "fixmatch"),
                "acc",
            ),
            margin: 0.0,
        },
    ];
    for model in ["maxnet", "minnet"] {
        for (a, b) in [("full", "fm"), ("dist", "lab")] {
            debug_assert!(VARIANTS.contains(&a) && VARIANTS.contains(&b));
            let metric = format!("{model}_acc");
            list.push(Claim {
                claim: format!("(c) Table 4: {a} >= {b}, {model}"),
                ours_a: a.into(),
                ours_b: b.into(),
                pairs: pairs(
                    rows,
                    "tofa",
                    |r, d| is_tofa(r, d, a),
                    &metric,
                    |r, d| is_tofa(r, d, b),
                    &metric,
                ),
                margin: 0.0,
            });
        }
    }
    selection_claims(rows, &mut list);
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
    cost_rows(rows, &mut t)?;
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

    fn row(table: &str, keys: serde_json::Value, metrics: serde_json::Value) -> Row {
        Row {
            table: table.into(),
            keys: serde_json::from_value(keys).unwrap(),
            metrics: serde_json::from_value(metrics).unwrap(),
        }
    }

    #[test]
    fn differences_are_paired_by_seed_and_averaged_over_data_sets() {
        let mut rows = Vec::new();
        for (d, off) in [("x", 0.0), ("y", 10.0)] {
            for (s, lab, base) in [("0", 50.0, 48.0), ("1", 52.0, 51.0), ("2", 49.0, 46.0)] {
                rows.push(row(
                    "tofa",
                    serde_json::json!({"dataset": d, "variant": "lab", "seed": s}),
                    serde_json::json!({"maxnet_acc": lab + off, "minnet_acc": 1.0}),
                ));
                rows.push(row(
                    "baseline",
                    serde_json::json!({"dataset": d, "mode": "labelled", "arch": "maxnet", "seed": s}),
                    serde_json::json!({"acc": base + off}),
                ));
            }
        }
        let c = Claim {
            claim: "a".into(),
            ours_a: "A".into(),
            ours_b: "B".into(),
            pairs: pairs(
                &rows,
                "tofa",
                |r, d| is_tofa(r, d, "lab"),
                "maxnet_acc",
                |r, d| is_baseline(r, d, "labelled"),
                "acc",
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

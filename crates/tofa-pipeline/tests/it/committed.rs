//! The committed figure data of the profiles that train for real (`results/quick`,
//! `results/lite0`): properties of Algorithm 2 that must hold on a trained Omega, checked on
//! the numbers the reports show. These read the committed tables, so they fail when a rerun
//! publishes results that break them.

use std::collections::BTreeMap;

use super::paper::repo_root;

/// One selection row: (data set, seed, budget, method) -> (budget MFLOPs, pick MFLOPs, test %).
type Picks = BTreeMap<(String, String, u64, String), (f64, f64, f64)>;

fn selection(profile: &str) -> Picks {
    let path = repo_root().join(format!("results/{profile}/tables.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (committed results missing)", path.display()));
    let t: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = t["tables"]["selection"]
        .as_array()
        .expect("a selection table");
    assert!(!rows.is_empty(), "{profile}: empty selection table");
    rows.iter()
        .map(|r| {
            let k = &r["keys"];
            let m = &r["metrics"];
            let key = (
                k["dataset"].as_str().unwrap().to_string(),
                k["seed"].as_str().unwrap().to_string(),
                k["budget"].as_u64().unwrap(),
                k["method"].as_str().unwrap().to_string(),
            );
            let f = |n: &str| m[n].as_f64().unwrap_or_else(|| panic!("{profile}: no {n}"));
            (key, (f("budget_mflops"), f("mflops"), f("test_acc")))
        })
        .collect()
}

const PROFILES: [&str; 2] = ["quick", "lite0"];

/// Algorithm 2 over size ranges: each budget's pick lies in `(t_{i-1}, t_i]` (budget 0's
/// range starts at 0), so no budget above the first gets the minnet.
#[test]
fn committed_fixed_rule_picks_lie_in_their_size_range() {
    for profile in PROFILES {
        let picks = selection(profile);
        let mut checked = 0;
        for ((d, s, b, m), (limit, mflops, _)) in &picks {
            if m != "fixed" {
                continue;
            }
            let lower = match b {
                0 => 0.0,
                _ => picks[&(d.clone(), s.clone(), b - 1, m.clone())].0,
            };
            assert!(
                *mflops > lower && *mflops <= limit * (1.0 + 1e-9),
                "{profile} {d} seed {s} budget {b}: pick {mflops} MFLOPs outside ({lower}, {limit}]"
            );
            checked += 1;
        }
        assert!(checked >= 12, "{profile}: only {checked} fixed-rule picks");
    }
}

/// The paper (Section 4.6) has the fixed rule within about 1 point of search; on our profiles
/// it is not always (the report's Claims (d) on the budgets above the minnet's: 1.1-2.0 points
/// below random search on `quick`, whose supernet is pre-trained with the sandwich rule, and
/// 1.9-4.0 on `lite0`, whose subnets start from a single ImageNet network). The margin stated here is 5 points, on the unit of Claims (d): the mean over
/// data sets and seeds of the per-pair difference, per budget. Why 5: random search keeps the
/// best of 10 subnets evaluated on validation, the rule one subnet it never evaluates; for a
/// spread `s` of subnet accuracies the best of 10 draws is about 1.5 s above a typical one,
/// and the measured spread over random subnets (the predictor's mean-baseline RMSE) is 1.0-1.9
/// points on `lite0`; with the size effect inside a range and two standard errors of the
/// seed mean that gives up to about 5. The degenerate reading of Algorithm 2 this test guards
/// against (every pick the minnet of the last iteration) was 8-10 points below.
#[test]
fn committed_fixed_rule_is_within_five_points_of_random_search() {
    const MARGIN: f64 = 5.0;
    for profile in PROFILES {
        let picks = selection(profile);
        let mut gaps: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for ((d, s, b, m), (_, _, acc)) in &picks {
            if m == "fixed" {
                let random = picks[&(d.clone(), s.clone(), *b, "random".to_string())].2;
                gaps.entry(*b).or_default().push(acc - random);
            }
        }
        assert!(gaps.len() >= 3, "{profile}: {} budgets", gaps.len());
        for (b, g) in gaps {
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            assert!(
                mean >= -MARGIN,
                "{profile} budget {b}: fixed rule {mean:.2} points from random search (margin {MARGIN})"
            );
        }
    }
}

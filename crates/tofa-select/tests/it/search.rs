//! Algorithm 2, random search, the predictor and evolution.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Omega, SubnetConfig};
use tofa_select::{
    Budget, EvoOpts, EvolutionSetup, Metric, MetricProvider, Metrics, PredictorOpts, RandomOpts,
    Ranges, Rule, SelectError, collect_samples, evolutionary_search, evolve, palette,
    random_search, select_fixed, train_predictor,
};

use crate::{Synthetic, macs, tiny};

/// Omega of `n` iterations of sandwich-like sampling: maxnet, minnet and two random subnets.
fn omega(n: u64, seed: u64) -> Omega {
    let s = tiny();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut o = Omega::new();
    for it in 1..=n {
        o.record(it, &SubnetConfig::maxnet(&s));
        o.record(it, &SubnetConfig::minnet(&s));
        for _ in 0..2 {
            o.record(it, &SubnetConfig::sample(&s, &mut rng));
        }
    }
    o
}

#[test]
fn rule_returns_last_sampled_feasible_subnet() {
    let s = tiny();
    let m = Metrics::new(&s);
    let o = omega(40, 1);
    let (lo, hi) = tofa_select::metric_range(&o, &m, Metric::Macs).unwrap();
    for frac in [0.0, 0.2, 0.5, 0.8, 1.0] {
        let limit = lo + frac * (hi - lo);
        let b = Budget::new(Metric::Macs, limit);
        let got = select_fixed(&o, &m, b, Rule::LastSampled).unwrap();
        assert!(got.value <= limit);
        // brute force: the largest last_iter among feasible subnets, then larger macs, then id
        let best = o
            .entries()
            .iter()
            .filter(|e| macs(&s, &e.config) <= limit)
            .max_by(|a, b| {
                a.last_iter
                    .cmp(&b.last_iter)
                    .then(macs(&s, &a.config).total_cmp(&macs(&s, &b.config)))
                    .then(b.id.cmp(&a.id))
            })
            .unwrap();
        assert_eq!(got.id, best.id, "budget {limit}");
        assert_eq!(got.cost.evaluations, 0);
        assert_eq!(got.cost.metric_queries, o.len() as u64);
    }
}

#[test]
fn rule_picks_the_later_subnet_and_cumulative_differs() {
    let s = tiny();
    let m = Metrics::new(&s);
    let (small, big) = (SubnetConfig::minnet(&s), SubnetConfig::maxnet(&s));
    let mut o = Omega::new();
    // small: sampled at 1..=10 (cumulative 55, last 10); big: sampled once at 20.
    for it in 1..=10 {
        o.record(it, &small);
    }
    o.record(20, &big);
    let all = Budget::new(Metric::Macs, f64::INFINITY);
    let last = select_fixed(&o, &m, all, Rule::LastSampled).unwrap();
    assert_eq!(last.id, big.id());
    assert_eq!(last.index, 20);
    let cum = select_fixed(&o, &m, all, Rule::Cumulative).unwrap();
    assert_eq!(cum.id, small.id());
    assert_eq!(cum.index, 55);
    // under a budget below big, the last-sampled feasible one is small
    let tight = Budget::new(Metric::Macs, macs(&s, &small));
    assert_eq!(
        select_fixed(&o, &m, tight, Rule::LastSampled).unwrap().id,
        small.id()
    );
}

#[test]
fn ties_go_to_the_larger_metric_value() {
    let s = tiny();
    let m = Metrics::new(&s);
    let mut o = Omega::new();
    o.record(7, &SubnetConfig::maxnet(&s));
    o.record(7, &SubnetConfig::minnet(&s));
    let got = select_fixed(&o, &m, Budget::new(Metric::Params, 1e12), Rule::LastSampled).unwrap();
    assert_eq!(got.id, SubnetConfig::maxnet(&s).id());
}

#[test]
fn infeasible_budget_names_the_smallest_feasible_value() {
    let s = tiny();
    let m = Metrics::new(&s);
    let o = omega(10, 2);
    let min = macs(&s, &SubnetConfig::minnet(&s));
    let err = select_fixed(
        &o,
        &m,
        Budget::new(Metric::Macs, min - 1.0),
        Rule::LastSampled,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SelectError::InfeasibleBudget { smallest, .. } if smallest == min));
    assert!(
        msg.contains(&format!("smallest feasible value of macs is {min}")),
        "{msg}"
    );
    assert!(matches!(
        select_fixed(
            &Omega::new(),
            &m,
            Budget::new(Metric::Macs, 1.0),
            Rule::LastSampled
        ),
        Err(SelectError::EmptyOmega)
    ));
}

#[test]
fn binned_rule_picks_within_each_budgets_range() {
    // Algorithm 1's Omega: the minnet every iteration, two random subnets (no maxnet).
    let s = tiny();
    let m = Metrics::new(&s);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut o = Omega::new();
    for it in 1..=60 {
        o.record(it, &SubnetConfig::minnet(&s));
        for _ in 0..2 {
            o.record(it, &SubnetConfig::sample(&s, &mut rng));
        }
    }
    let (lo, hi) = tofa_select::metric_range(&o, &m, Metric::Macs).unwrap();
    let limits: Vec<f64> = (0..5).map(|i| lo + (hi - lo) * i as f64 / 4.0).collect();
    let min_id = SubnetConfig::minnet(&s).id();
    let literal = palette(
        &o,
        &m,
        Metric::Macs,
        &limits,
        Rule::LastSampled,
        Ranges::AtMost,
    )
    .unwrap();
    let bins = palette(
        &o,
        &m,
        Metric::Macs,
        &limits,
        Rule::LastSampled,
        Ranges::Bins,
    )
    .unwrap();
    // reversed limits give the same picks: a budget's range depends on the set, not the order
    let rev: Vec<f64> = limits.iter().rev().copied().collect();
    let bins_rev = palette(&o, &m, Metric::Macs, &rev, Rule::LastSampled, Ranges::Bins).unwrap();
    let mut non_min = 0;
    for (i, sel) in bins.iter().enumerate() {
        assert_eq!(sel.id, bins_rev[limits.len() - 1 - i].id);
        let lower = if i == 0 {
            f64::NEG_INFINITY
        } else {
            limits[i - 1]
        };
        let in_range: Vec<_> = o
            .entries()
            .iter()
            .filter(|e| {
                let v = macs(&s, &e.config);
                v > lower && v <= limits[i]
            })
            .collect();
        assert_eq!(sel.fallback, in_range.is_empty(), "budget {i}");
        if !sel.fallback {
            assert!(sel.value > lower && sel.value <= limits[i], "budget {i}");
            assert_eq!(sel.feasible, in_range.len());
            // the latest-sampled subnet of the range
            let best = in_range.iter().map(|e| e.last_iter).max().unwrap();
            assert_eq!(sel.last_iter, best);
        }
        // the minnet only where the range holds the minnet alone
        if sel.id == min_id {
            assert!(in_range.iter().all(|e| e.id == min_id), "budget {i}");
        } else {
            non_min += 1;
        }
    }
    assert!(
        non_min >= 3,
        "{non_min} of 5 budgets pick a subnet other than the minnet"
    );
    // the literal rule: the minnet, sampled at the last iteration, wins whatever the last two
    // random subnets miss
    let literal_min = literal.iter().filter(|p| p.id == min_id).count();
    let bins_min = bins.iter().filter(|p| p.id == min_id).count();
    assert!(literal_min >= bins_min);
}

#[test]
fn palette_and_measured_latency() {
    let s = tiny();
    let mut m = Metrics::new(&s);
    let o = omega(30, 3);
    let (lo, hi) = tofa_select::metric_range(&o, &m, Metric::Params).unwrap();
    let limits: Vec<f64> = (0..5).map(|i| lo + (hi - lo) * i as f64 / 4.0).collect();
    let p = palette(
        &o,
        &m,
        Metric::Params,
        &limits,
        Rule::LastSampled,
        Ranges::AtMost,
    )
    .unwrap();
    assert_eq!(p.len(), 5);
    for (sel, l) in p.iter().zip(&limits) {
        assert!(sel.value <= *l);
    }
    // latency from a table: missing values are an error naming the metric
    let err = select_fixed(
        &o,
        &m,
        Budget::new(Metric::LatencyMs, 1.0),
        Rule::LastSampled,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no measured latency_ms for subnet"), "{err}");
    for e in o.entries() {
        m.insert(Metric::LatencyMs, e.id.clone(), macs(&s, &e.config) / 1e6);
    }
    let sel = select_fixed(
        &o,
        &m,
        Budget::new(Metric::LatencyMs, 2.0),
        Rule::LastSampled,
    )
    .unwrap();
    assert!(sel.value <= 2.0);
    assert_eq!(m.value(Metric::LatencyMs, &sel.config).unwrap(), sel.value);
}

fn macs_limits() -> Vec<f64> {
    let s = tiny();
    let (lo, hi) = (
        macs(&s, &SubnetConfig::minnet(&s)),
        macs(&s, &SubnetConfig::maxnet(&s)),
    );
    [0.15, 0.4, 0.7]
        .iter()
        .map(|f| lo + f * (hi - lo))
        .collect()
}

#[test]
fn random_search_respects_budget_and_counts_costs() {
    let s = tiny();
    let m = Metrics::new(&s);
    let limits = macs_limits();
    let opts = RandomOpts {
        k: 6,
        max_draws: 5_000,
        seed: 4,
    };
    let mut ev = Synthetic::new(0.01);
    let found = random_search(&s, &m, Metric::Macs, &limits, &opts, &mut ev).unwrap();
    let mut evals = 0;
    for (f, l) in found.iter().zip(&limits) {
        assert!(f.value <= *l && macs(&s, &f.config) <= *l);
        assert_eq!(f.cost.evaluations, f.candidates as u64);
        assert!(f.candidates >= 1 && f.candidates <= 6);
        assert_eq!(f.cost.images, f.cost.evaluations * 100);
        assert!(f.cost.wall_s >= f.cost.eval_s);
        evals += f.cost.evaluations;
    }
    assert_eq!(evals, ev.calls);
    let again = random_search(
        &s,
        &m,
        Metric::Macs,
        &limits,
        &opts,
        &mut Synthetic::new(0.01),
    )
    .unwrap();
    let ids = |v: &[tofa_select::Found]| v.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&found), ids(&again));

    let min = macs(&s, &SubnetConfig::minnet(&s));
    let err = random_search(&s, &m, Metric::Macs, &[min - 1.0], &opts, &mut ev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("random search: no subnet with macs <=") && err.contains("5000"),
        "{err}"
    );
}

/// A budget at the minnet's cost that uniform draws do not hit (one draw allowed) still gets
/// a pick, the minnet, from random and evolutionary search alike.
#[test]
fn a_budget_only_the_minnet_meets_gets_the_minnet() {
    let s = tiny();
    let m = Metrics::new(&s);
    let min = SubnetConfig::minnet(&s);
    let limit = macs(&s, &min);
    let opts = RandomOpts {
        k: 4,
        max_draws: 1,
        seed: 9,
    };
    let mut ev = Synthetic::new(0.01);
    let found = random_search(&s, &m, Metric::Macs, &[limit], &opts, &mut ev).unwrap();
    assert_eq!(found[0].config, min);
    assert_eq!((found[0].candidates, found[0].cost.evaluations), (1, 1));
    let eopts = EvoOpts {
        population: 4,
        generations: 2,
        max_draws: 1,
        ..EvoOpts::default()
    };
    let popts = PredictorOpts {
        epochs: 5,
        ..PredictorOpts::default()
    };
    let evo = evolutionary_search(
        &s,
        &m,
        Metric::Macs,
        &[limit],
        EvolutionSetup {
            samples: 20,
            predictor: &popts,
            evolution: &eopts,
        },
        &mut Synthetic::new(0.01),
    )
    .unwrap();
    assert_eq!(evo.found[0].config, min);
}

#[test]
fn predictor_beats_the_mean_on_held_out_subnets() {
    let s = tiny();
    let mut ev = Synthetic::new(0.005);
    let (samples, cost) = collect_samples(&s, 250, 5, &mut ev).unwrap();
    assert_eq!(samples.len(), 250);
    assert_eq!(cost.evaluations, 250);
    for enc in [
        tofa_select::Encoding::OneHot,
        tofa_select::Encoding::Ordinal,
    ] {
        let opts = PredictorOpts {
            encoding: enc,
            epochs: 150,
            seed: 6,
            ..PredictorOpts::default()
        };
        let (p, r) = train_predictor(&s, &samples, &opts).unwrap();
        assert_eq!(r.test_n, 50);
        assert!(r.rmse < 0.5 * r.rmse_mean_baseline, "{enc:?}: {r:?}");
        assert!(r.kendall_tau > 0.7, "{enc:?}: {r:?}");
        // deterministic for a seed
        let (p2, r2) = train_predictor(&s, &samples, &opts).unwrap();
        assert_eq!(r.rmse, r2.rmse);
        let c = SubnetConfig::maxnet(&s);
        assert_eq!(p.predict(&c).unwrap(), p2.predict(&c).unwrap());
    }
}

#[test]
fn evolution_never_returns_an_infeasible_subnet() {
    let s = tiny();
    let m = Metrics::new(&s);
    let mut ev = Synthetic::new(0.005);
    let (samples, _) = collect_samples(&s, 120, 7, &mut ev).unwrap();
    let (p, _) = train_predictor(
        &s,
        &samples,
        &PredictorOpts {
            epochs: 60,
            ..PredictorOpts::default()
        },
    )
    .unwrap();
    let (lo, hi) = (
        macs(&s, &SubnetConfig::minnet(&s)),
        macs(&s, &SubnetConfig::maxnet(&s)),
    );
    for seed in 0..4 {
        for frac in [0.0, 0.05, 0.3, 0.6, 1.0] {
            let limit = lo + frac * (hi - lo);
            let opts = EvoOpts {
                population: 16,
                generations: 8,
                mutate_prob: 0.5,
                seed,
                ..EvoOpts::default()
            };
            for metric in [Metric::Macs, Metric::Params] {
                let limit = if metric == Metric::Macs {
                    limit
                } else {
                    let (pl, ph) = (
                        m.value(Metric::Params, &SubnetConfig::minnet(&s)).unwrap(),
                        m.value(Metric::Params, &SubnetConfig::maxnet(&s)).unwrap(),
                    );
                    pl + frac * (ph - pl)
                };
                let b = Budget::new(metric, limit);
                let e = evolve(&s, &m, b, &p, &opts).unwrap();
                assert!(e.value <= limit, "seed {seed} {b}");
                assert_eq!(m.value(metric, &e.config).unwrap(), e.value);
            }
        }
    }
}

#[test]
fn evolutionary_search_end_to_end_is_deterministic_and_costed() {
    let s = tiny();
    let m = Metrics::new(&s);
    let limits = macs_limits();
    let popts = PredictorOpts {
        epochs: 60,
        seed: 8,
        ..PredictorOpts::default()
    };
    let eopts = EvoOpts {
        population: 20,
        generations: 10,
        seed: 9,
        ..EvoOpts::default()
    };
    let run = || {
        let mut ev = Synthetic::new(0.005);
        let setup = EvolutionSetup {
            samples: 100,
            predictor: &popts,
            evolution: &eopts,
        };
        let out = evolutionary_search(&s, &m, Metric::Macs, &limits, setup, &mut ev).unwrap();
        (out, ev.calls)
    };
    let (a, calls) = run();
    assert_eq!(a.shared_cost.evaluations, 100);
    assert_eq!(a.shared_cost.images, 100 * 100);
    assert!(a.shared_cost.predictor_train_s > 0.0);
    assert_eq!(calls, 100 + limits.len() as u64);
    for (f, l) in a.found.iter().zip(&limits) {
        assert!(f.value <= *l);
        assert_eq!(f.cost.evaluations, 1);
        assert!(f.predicted.is_some() && f.cost.predictor_queries > 0);
    }
    let (b, _) = run();
    let ids = |o: &tofa_select::EvolutionOutcome| {
        o.found.iter().map(|f| f.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.predictor.kendall_tau, b.predictor.kendall_tau);
}

#[test]
fn best_sample_picks_the_most_accurate_within_budget() {
    let s = tiny();
    let m = Metrics::new(&s);
    let mut ev = Synthetic::new(0.01);
    let (samples, _) = collect_samples(&s, 60, 10, &mut ev).unwrap();
    let limits = macs_limits();
    let found = tofa_select::best_sample(&samples, &m, Metric::Macs, &limits).unwrap();
    for (f, l) in found.iter().zip(&limits) {
        assert!(f.value <= *l);
        assert_eq!(f.cost.evaluations, 0);
        let best = samples
            .iter()
            .filter(|x| macs(&s, &x.config) <= *l)
            .map(|x| x.accuracy)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(f.accuracy, best);
    }
    let err = tofa_select::best_sample(&samples, &m, Metric::Macs, &[0.0])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("best sample: no subnet with macs <= 0"),
        "{err}"
    );
}

//! The figures: the palette against individually fine-tuned models (Figures 2-4), latency
//! (Figures 5-6), the device extremes (Figure 7), selection methods (Figures 8-11), and the
//! training cost against the number of deployment scenarios (Section 3.5).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tofa_report::{Cell, Figure, Series, SeriesKind, Table};
use tofa_train::SingleMode;

use super::stat::{Stat, cell, datasets, stat_cell};
use super::{ArtifactParams, Inputs, Made, write_figure};
use crate::StageError;
use crate::rows::SelectionRow;
use crate::select::Method;
use crate::train::Arch;

/// Figures 2-4: accuracy against MFLOPs of the palette and of networks trained alone.
pub(crate) fn accuracy_flops(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut fig = Figure::new(
        &p.title,
        "MFLOPs (multiply-adds per image)",
        "top-1 accuracy (%)",
    );
    let mut t = Table::new(&p.title, &["method", "model", "MFLOPs", "accuracy (%)"]);
    let mut palette = Vec::new();
    for r in inp.palette.iter().filter(|r| r.variant == p.variant) {
        let (x, y) = (r.mflops, r.test_acc);
        palette.push((x, y));
        t.push(vec![
            Cell::text(format!("TOFA palette ({})", p.variant.name())),
            Cell::text(&r.subnet),
            Cell::num(x, 2),
            Cell::num(y, 1),
        ])?;
    }
    // Same-architecture fine-tuning (`arch = palette:i`), the maxnet fine-tuned alone, and
    // reference networks of other architectures (rows keyed by `model`), each its own series.
    let mut tuned = Vec::new();
    let mut maxnet = Vec::new();
    let mut refs: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in inp.baselines.iter().filter(|r| {
        r.mode == SingleMode::Labelled && Some(r.dataset.as_str()) == p.dataset.as_deref()
    }) {
        let (x, y) = (r.mflops, r.acc);
        let (method, model) = if let Some(m) = &r.model {
            refs.entry(m.clone()).or_default().push((x, y));
            ("reference model, fine-tuned alone", m.clone())
        } else if let Arch::Palette(_) = r.arch {
            tuned.push((x, y));
            ("fine-tuned individually", r.subnet.clone())
        } else {
            maxnet.push((x, y));
            (
                "maxnet fine-tuned alone (Table 3 baseline)",
                r.arch.to_string(),
            )
        };
        t.push(vec![
            Cell::text(method),
            Cell::text(model),
            Cell::num(x, 2),
            Cell::num(y, 1),
        ])?;
    }
    fig.series.push(Series::new(
        format!("TOFA palette ({}, one training)", p.variant.name()),
        SeriesKind::LineScatter,
        palette,
    ));
    fig.series.push(Series::new(
        "same architecture fine-tuned individually (one training each)",
        SeriesKind::Scatter,
        tuned,
    ));
    if !maxnet.is_empty() {
        fig.series.push(Series::new(
            "maxnet fine-tuned alone",
            SeriesKind::Scatter,
            maxnet,
        ));
    }
    for (m, pts) in refs {
        fig.series.push(Series::new(
            format!("{m}, fine-tuned alone"),
            SeriesKind::Scatter,
            pts,
        ));
    }
    write_figure(
        p,
        &fig,
        &t,
        dir,
        "Each palette point is the subnet Algorithm 2 picks for a FLOPs budget from one TOFA \
         training (BN recalibrated, no further training); each fine-tuned point is the same \
         architecture trained alone, one training per budget, from the same pre-trained weights \
         on the same labelled data, with the same iterations. The maxnet fine-tuned alone is \
         the Table 3 baseline (seed 0); a reference model (where the profile has one: \
         EfficientNet-Lite2 in `lite0`) is a larger pre-trained network fine-tuned alone the \
         same way, as the paper's individually fine-tuned models are. Same-architecture \
         training isolates the effect of weight sharing.",
    )
}

/// Figures 5 and 6: latency at batch 1 against MFLOPs, or accuracy against latency.
pub(crate) fn latency(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
    vs_accuracy: bool,
) -> Result<Made, StageError> {
    let (xl, yl) = if vs_accuracy {
        ("latency, batch 1 (ms, median)", "top-1 accuracy (%)")
    } else {
        (
            "MFLOPs (multiply-adds per image)",
            "latency, batch 1 (ms, median)",
        )
    };
    let mut fig = Figure::new(&p.title, xl, yl);
    let mut t = Table::new(
        &p.title,
        &[
            "data set",
            "model",
            "MFLOPs",
            "latency b1 (ms)",
            "p90 (ms)",
            "accuracy (%)",
        ],
    );
    for d in datasets(inp.latency.iter().map(|r| &r.dataset)) {
        let mut pts = Vec::new();
        for r in inp
            .latency
            .iter()
            .filter(|r| r.dataset == d && r.batch == 1)
        {
            let (f, l, a) = (r.mflops, r.median_ms, r.test_acc);
            pts.push(if vs_accuracy { (l, a) } else { (f, l) });
            t.push(vec![
                Cell::text(&d),
                Cell::text(&r.model),
                Cell::num(f, 2),
                Cell::num(l, 3),
                Cell::num(r.p90_ms, 3),
                Cell::num(a, 1),
            ])?;
        }
        fig.series.push(Series::new(
            format!("TOFA palette, {d}"),
            SeriesKind::LineScatter,
            pts,
        ));
    }
    write_figure(
        p,
        &fig,
        &t,
        dir,
        "Exported standalone models, each measured in a fresh process on this machine \
         (see the device table for the CPU and threads).",
    )
}

/// Figure 7: latency and peak memory of the maxnet and the minnet against the batch size.
pub(crate) fn device(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut fig = Figure::new(&p.title, "batch size (images)", "latency (ms, median)");
    let mut t = Table::new(
        &p.title,
        &[
            "model",
            "batch",
            "MFLOPs",
            "median (ms)",
            "p90 (ms)",
            "per image (ms)",
            "peak RSS (MiB)",
            "peak over baseline (MiB)",
            "parameters (MiB)",
        ],
    );
    for model in ["maxnet", "minnet"] {
        let mut pts = Vec::new();
        for r in inp.latency.iter().filter(|r| r.model == model) {
            let b = r.batch as f64;
            pts.push((b, r.median_ms));
            t.push(vec![
                Cell::text(model),
                Cell::num(b, 0),
                Cell::num(r.mflops, 2),
                Cell::num(r.median_ms, 3),
                Cell::num(r.p90_ms, 3),
                Cell::num(r.per_image_ms, 3),
                Cell::num(r.peak_rss_mb, 1),
                Cell::num(r.peak_over_baseline_mb, 1),
                Cell::num(r.param_mb, 2),
            ])?;
        }
        fig.series
            .push(Series::new(model, SeriesKind::LineScatter, pts));
    }
    write_figure(
        p,
        &fig,
        &t,
        dir,
        "The two extremes of the palette (paper Figure 7), each in a fresh process: latency \
         at batch 1 and batch N, and the process's peak resident memory.",
    )
}

/// Figures 8-11: per budget, the subnet each selection method keeps, with its cost.
pub(crate) fn selection(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut fig = Figure::new(&p.title, "FLOPs budget (MFLOPs)", "top-1 test accuracy (%)");
    let mut t = Table::new(
        &p.title,
        &[
            "data set",
            "budget",
            "budget (MFLOPs)",
            "method",
            "MFLOPs",
            "val acc (%)",
            "test acc (%)",
            "subnet evaluations",
            "images evaluated",
            "search time (s)",
        ],
    );
    let sel = &inp.selection;
    let mut budgets: Vec<usize> = sel.iter().map(|r| r.budget).collect();
    budgets.sort_unstable();
    budgets.dedup();
    for method in Method::ALL {
        let mut pts = Vec::new();
        for d in datasets(sel.iter().map(|r| &r.dataset)) {
            for &b in &budgets {
                let these: Vec<&SelectionRow> = sel
                    .iter()
                    .filter(|r| r.dataset == d && r.method == method && r.budget == b)
                    .collect();
                if these.is_empty() {
                    continue;
                }
                let over = |f: fn(&SelectionRow) -> f64| {
                    Stat::of(&these.iter().map(|r| f(r)).collect::<Vec<_>>())
                };
                let (limit, acc) = (over(|r| r.budget_mflops), over(|r| r.test_acc));
                if let (Some(x), Some(y)) = (limit, acc) {
                    pts.push((x.mean, y.mean));
                }
                t.push(vec![
                    Cell::text(&d),
                    Cell::num(b as f64, 0),
                    stat_cell(limit, 2),
                    Cell::text(method.name()),
                    stat_cell(over(|r| r.mflops), 2),
                    stat_cell(over(|r| r.val_acc), 1),
                    stat_cell(acc, 1),
                    cell(over(|r| r.evaluations).map(|s| s.mean), 1),
                    cell(over(|r| r.images).map(|s| s.mean), 0),
                    cell(over(|r| r.search_s).map(|s| s.mean), 3),
                ])?;
            }
        }
        let name = match method {
            Method::Fixed => "fixed rule, size ranges (Algorithm 2, zero evaluations)",
            Method::FixedLe => "fixed rule, literal p <= t",
            Method::Random => "random search (validation)",
            Method::Evolution => "evolutionary search + accuracy predictor",
        };
        fig.series
            .push(Series::new(name, SeriesKind::LineScatter, pts));
    }
    let mut note = String::from(
        "Per budget, the subnet each method keeps, tested on the test set; mean ± standard \
         deviation over the training seeds (one supernet per seed; budgets are placed on each \
         supernet's Omega, so their MFLOPs vary a little). The fixed rule is shown two ways: \
         within each budget's size range `(t_{i-1}, t_i]` (Section 3.4: \"select a subnet \
         within each size range\"; the default) and with Algorithm 2's literal `p(a) <= t`, \
         under which the minnet, sampled every iteration, wins every budget the last random \
         subnets miss. Costs are measured: subnet evaluations on the validation split (BN \
         recalibration + accuracy), images, wall time; the evolutionary method's predictor \
         data set is shared by all budgets and charged to each in equal parts.",
    );
    for r in &inp.predictor {
        let _ = write!(
            note,
            " Accuracy predictor on {}: Kendall tau {:.3}, RMSE {:.4} (predicting the mean: \
             {:.4}) on {} held-out subnets.",
            r.dataset, r.kendall_tau, r.rmse, r.rmse_mean_baseline, r.test_n,
        );
    }
    write_figure(p, &fig, &t, dir, &note)
}

/// Section 3.5: one TOFA training against one fine-tuning per deployment scenario.
pub(crate) fn cost(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut fig = Figure::new(
        &p.title,
        "deployment scenarios (models needed)",
        "training compute (GMACs)",
    );
    let mut t = Table::new(
        &p.title,
        &[
            "scenarios",
            "TOFA GMACs",
            "TOFA wall (s)",
            "fine-tuning GMACs",
            "fine-tuning wall (s)",
        ],
    );
    let (tg, tw) = inp
        .tofa
        .iter()
        .find(|r| r.variant == p.variant)
        .map_or((f64::NAN, f64::NAN), |r| (r.train_gmacs, r.wall_s));
    let mut tuned: Vec<(f64, f64, f64)> = inp
        .baselines
        .iter()
        .filter(|r| r.mode == SingleMode::Labelled)
        .map(|r| (r.mflops, r.train_gmacs, r.wall_s))
        .collect();
    tuned.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut g, mut w) = (0.0, 0.0);
    let (mut tofa_pts, mut ft_pts) = (Vec::new(), Vec::new());
    for (n, (_, gm, ws)) in tuned.iter().enumerate() {
        g += gm;
        w += ws;
        let n = (n + 1) as f64;
        tofa_pts.push((n, tg));
        ft_pts.push((n, g));
        t.push(vec![
            Cell::num(n, 0),
            Cell::num(tg, 1),
            Cell::num(tw, 1),
            Cell::num(g, 1),
            Cell::num(w, 1),
        ])?;
    }
    fig.series.push(Series::new(
        "TOFA: one supernet training (constant)",
        SeriesKind::LineScatter,
        tofa_pts,
    ));
    fig.series.push(Series::new(
        "fine-tuning one model per scenario (cumulative)",
        SeriesKind::LineScatter,
        ft_pts,
    ));
    write_figure(
        p,
        &fig,
        &t,
        dir,
        "Measured training compute (multiply-adds of every forward pass, x3 where gradients \
         flow) and wall time: one TOFA training serves every scenario; individual fine-tuning \
         pays once per scenario (the fine-tuned models of the accuracy-vs-FLOPs figure, \
         smallest first).",
    )
}

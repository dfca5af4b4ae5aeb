//! Report stages: `artifact` (one paper table or figure from its dependencies' rows) and
//! `report` (`REPORT.md` from the artifacts, with provenance).
//!
//! An artifact writes `publish/<name>.md` (its section of the report) plus `<name>.csv` for
//! tables and `<name>.svg` / `<name>.png` for figures; the binary copies `publish/` into
//! `reports/<profile>/`. Where the paper prints numbers (Tables 3 and 4) they stand beside ours.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tofa_report::{Cell, Figure, Series, SeriesKind, Table};
use tofa_runner::BoxError;
use tofa_runner::kind::{Row, StageContext, StageKind};

use crate::StageError;

mod claims;

/// Which artifact an `artifact` stage draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// Table 2: data set sizes and splits.
    Datasets,
    /// Table 3: TOFA maxnet (labelled, lab+unlab) against single-model baselines.
    Table3,
    /// Table 4: maxnet and minnet accuracy per loss variant.
    Table4,
    /// Figures 2-4: the TOFA palette against individually fine-tuned models, accuracy vs MFLOPs.
    AccuracyFlops,
    /// Figure 5: latency vs MFLOPs of the palette.
    LatencyFlops,
    /// Figure 6: accuracy vs latency.
    LatencyAccuracy,
    /// Figure 7: maxnet and minnet latency and peak memory.
    Device,
    /// Figures 8-11: fixed rule vs random vs evolutionary search, with costs.
    Selection,
    /// Section 3.5: training cost against the number of deployment scenarios.
    Cost,
    /// Does pre-training on the source task help the targets? TOFA from the `pretrain`
    /// weights against TOFA from scratch.
    Transfer,
    /// The paper's claims, each with our two numbers, their difference over seeds and a
    /// verdict (the report's first section).
    Claims,
}

/// `artifact` stage kind.
#[derive(Debug)]
pub struct Artifact;

/// Params of [`Artifact`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactParams {
    pub artifact: ArtifactKind,
    /// File stem (`table4`, `fig2`, ...).
    pub name: String,
    pub title: String,
    /// Only rows of this data set (figures that the paper draws per data set).
    #[serde(default)]
    pub dataset: Option<String>,
    /// The TOFA variant whose palette a figure shows (paper Figures 2-6: labelled only).
    #[serde(default = "lab")]
    pub variant: String,
}

fn lab() -> String {
    "lab".into()
}

/// The paper's data set a name stands for (`synth-cifar100` -> `Cifar-100`).
pub fn paper_dataset(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    [
        ("cifar100", "Cifar-100"),
        ("cifar-100", "Cifar-100"),
        ("cifar10", "Cifar-10"),
        ("cifar-10", "Cifar-10"),
        ("aircraft", "Aircraft"),
        ("car", "Car"),
        ("flower", "Flower"),
        ("pet", "Pet"),
    ]
    .into_iter()
    .find(|(k, _)| n.contains(k))
    .map(|(_, v)| v)
}

/// Table 3 of the paper: Baseline labelled, TOFA labelled, TOFA lab+unlab, Baseline lab+unlab.
const PAPER_T3: [(&str, [f64; 4]); 6] = [
    ("Aircraft", [65.6, 69.0, 75.2, 73.4]),
    ("Car", [66.9, 71.5, 82.4, 80.3]),
    ("Flower", [80.6, 81.7, 92.3, 89.4]),
    ("Pet", [81.8, 83.0, 87.6, 87.4]),
    ("Cifar-10", [70.4, 72.3, 83.5, 82.6]),
    ("Cifar-100", [71.0, 73.6, 79.0, 77.6]),
];

/// Table 4 of the paper: (maxnet, minnet) x (lab, fm, dist, full).
const PAPER_T4: [(&str, [[f64; 4]; 2]); 6] = [
    (
        "Aircraft",
        [[69.0, 71.5, 73.8, 75.2], [61.7, 65.1, 70.0, 71.2]],
    ),
    ("Car", [[71.5, 78.4, 79.9, 82.4], [63.6, 72.6, 75.5, 78.9]]),
    (
        "Flower",
        [[81.7, 92.0, 91.5, 92.3], [79.8, 90.9, 91.2, 92.0]],
    ),
    ("Pet", [[83.0, 87.1, 85.6, 87.6], [78.3, 83.5, 84.4, 86.2]]),
    (
        "Cifar-10",
        [[72.3, 82.7, 80.5, 83.5], [66.9, 76.0, 79.1, 80.9]],
    ),
    (
        "Cifar-100",
        [[73.6, 77.6, 76.9, 79.0], [67.2, 72.1, 73.1, 75.4]],
    ),
];

const VARIANTS: [&str; 4] = ["lab", "fm", "dist", "full"];

fn paper_cell<const N: usize>(table: &[(&str, [f64; N])], dataset: &str, i: usize) -> Cell {
    paper_dataset(dataset)
        .and_then(|p| table.iter().find(|(n, _)| *n == p))
        .map_or(Cell::Missing, |(_, v)| Cell::num(v[i], 1))
}

fn key<'a>(r: &'a Row, k: &str) -> Option<&'a str> {
    r.keys.get(k).and_then(Value::as_str)
}

fn num(map: &BTreeMap<String, Value>, k: &str) -> Option<f64> {
    map.get(k).and_then(Value::as_f64)
}

fn cell(v: Option<f64>, decimals: usize) -> Cell {
    v.map_or(Cell::Missing, |v| Cell::num(v, decimals))
}

/// Mean, sample standard deviation and count of a set of values (seeds).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    mean: f64,
    std: f64,
    n: usize,
}

impl Stat {
    fn of(v: &[f64]) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        Some(Stat { mean, std, n })
    }

    /// Standard error of the mean (NaN for one value).
    fn se(&self) -> f64 {
        self.std / (self.n as f64).sqrt()
    }
}

/// `mean ± std` over seeds, or the plain number when there is one seed.
fn stat_cell(s: Option<Stat>, decimals: usize) -> Cell {
    match s {
        None => Cell::Missing,
        Some(s) if s.n > 1 => {
            Cell::text(format!("{:.*} ± {:.*}", decimals, s.mean, decimals, s.std))
        }
        Some(s) => Cell::num(s.mean, decimals),
    }
}

/// The replicate label of a row (`0` for rows written before replicates existed).
fn seed_of(r: &Row) -> &str {
    key(r, "seed").unwrap_or("0")
}

/// `metric` of the rows that `pred` accepts, by replicate label.
fn by_seed(rows: &[Row], pred: impl Fn(&Row) -> bool, metric: &str) -> BTreeMap<String, f64> {
    rows.iter()
        .filter(|r| pred(r))
        .filter_map(|r| Some((seed_of(r).to_string(), num(&r.metrics, metric)?)))
        .collect()
}

fn values(m: &BTreeMap<String, f64>) -> Vec<f64> {
    m.values().copied().collect()
}

/// A TOFA row of data set `d` and variant `v`.
fn is_tofa(r: &Row, d: &str, v: &str) -> bool {
    r.table == "tofa" && key(r, "dataset") == Some(d) && key(r, "variant") == Some(v)
}

/// A single-model row of the maxnet (Table 3's baselines) of data set `d` and mode `m`.
fn is_baseline(r: &Row, d: &str, m: &str) -> bool {
    r.table == "baseline"
        && key(r, "dataset") == Some(d)
        && key(r, "mode") == Some(m)
        && key(r, "arch").is_none_or(|a| a == "maxnet")
}

/// Data sets in first-seen order.
fn datasets<'a>(rows: impl Iterator<Item = &'a Row>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if let Some(d) = key(r, "dataset")
            && !out.iter().any(|x| x == d)
        {
            out.push(d.to_string());
        }
    }
    out
}

/// What an artifact produced: a Markdown section and files in `publish/`.
#[derive(Debug)]
struct Made {
    md: String,
}

impl StageKind for Artifact {
    type Params = ArtifactParams;
    const NAME: &'static str = "artifact";
    const VERSION: &'static str = "1";

    fn run(&self, p: &ArtifactParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let rows: Vec<Row> = ctx
            .deps
            .values()
            .flat_map(|d| d.rows.iter().cloned())
            .filter(|r| {
                p.dataset
                    .as_deref()
                    .is_none_or(|d| key(r, "dataset").is_none_or(|x| x == d))
            })
            .collect();
        let dir = ctx.out("publish");
        std::fs::create_dir_all(&dir)?;
        let made = match p.artifact {
            ArtifactKind::Datasets => datasets_table(p, &rows, &dir)?,
            ArtifactKind::Table3 => table3(p, &rows, &dir)?,
            ArtifactKind::Table4 => table4(p, &rows, &dir)?,
            ArtifactKind::AccuracyFlops => accuracy_flops(p, &rows, &dir)?,
            ArtifactKind::LatencyFlops => latency(p, &rows, &dir, false)?,
            ArtifactKind::LatencyAccuracy => latency(p, &rows, &dir, true)?,
            ArtifactKind::Device => device(p, &rows, &dir)?,
            ArtifactKind::Selection => selection(p, &rows, &dir)?,
            ArtifactKind::Cost => cost(p, &rows, &dir)?,
            ArtifactKind::Transfer => transfer(p, &rows, &dir)?,
            ArtifactKind::Claims => claims::claims(p, &rows, &dir)?,
        };
        let wall: f64 = rows.iter().filter_map(|r| num(&r.metrics, "wall_s")).sum();
        crate::write(&dir.join(format!("{}.md", p.name)), made.md)?;
        crate::write_json(
            &ctx.out("inputs.json"),
            &serde_json::json!({ "rows": rows.len(), "train_wall_s": wall }),
        )?;
        Ok(())
    }
}

fn section(p: &ArtifactParams, body: &str, note: &str) -> String {
    let mut s = format!("## {}\n\n", p.title);
    if !note.is_empty() {
        s.push_str(note);
        s.push_str("\n\n");
    }
    s.push_str(body);
    s.push('\n');
    s
}

fn write_table(
    p: &ArtifactParams,
    t: &Table,
    dir: &std::path::Path,
    note: &str,
) -> Result<Made, StageError> {
    if t.rows.is_empty() {
        return Err(StageError::Deps(format!(
            "artifact `{}`: no input rows (are its dependencies the right stages?)",
            p.name
        )));
    }
    crate::write(&dir.join(format!("{}.csv", p.name)), t.to_csv())?;
    let body = format!("{}\n[CSV]({}.csv)\n", t.to_markdown(), p.name);
    Ok(Made {
        md: section(p, &body, note),
    })
}

fn write_figure(
    p: &ArtifactParams,
    f: &Figure,
    t: &Table,
    dir: &std::path::Path,
    note: &str,
) -> Result<Made, StageError> {
    f.write_both(dir, &p.name)?;
    crate::write(&dir.join(format!("{}.csv", p.name)), t.to_csv())?;
    let body = format!(
        "![{}]({}.svg)\n\n{}\n[CSV]({}.csv) · [PNG]({}.png)\n",
        p.title,
        p.name,
        t.to_markdown(),
        p.name,
        p.name
    );
    Ok(Made {
        md: section(p, &body, note),
    })
}

fn datasets_table(
    p: &ArtifactParams,
    rows: &[Row],
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    const COUNTS: [&str; 7] = [
        "classes",
        "train",
        "labelled",
        "unlabelled",
        "validation",
        "test",
        "resolution",
    ];
    let mut cols = vec!["data set"];
    cols.extend(COUNTS);
    let mut t = Table::new(&p.title, &cols);
    for r in rows.iter().filter(|r| r.table == "datasets") {
        let mut row = vec![Cell::text(key(r, "dataset").unwrap_or("?"))];
        row.extend(COUNTS.iter().map(|k| cell(num(&r.metrics, k), 0)));
        t.push(row)?;
    }
    write_table(p, &t, dir, "")
}

fn table3(p: &ArtifactParams, rows: &[Row], dir: &std::path::Path) -> Result<Made, StageError> {
    let mut t = Table::new(
        &p.title,
        &[
            "data set",
            "Baseline labelled",
            "TOFA labelled",
            "TOFA lab+unlab",
            "Baseline lab+unlab",
            "paper: Baseline labelled",
            "paper: TOFA labelled",
            "paper: TOFA lab+unlab",
            "paper: Baseline lab+unlab",
        ],
    );
    let st = |m: BTreeMap<String, f64>| stat_cell(Stat::of(&values(&m)), 1);
    for d in datasets(rows.iter()) {
        let mut row = vec![
            Cell::text(&d),
            st(by_seed(rows, |r| is_baseline(r, &d, "labelled"), "acc")),
            st(by_seed(rows, |r| is_tofa(r, &d, "lab"), "maxnet_acc")),
            st(by_seed(rows, |r| is_tofa(r, &d, "full"), "maxnet_acc")),
            st(by_seed(rows, |r| is_baseline(r, &d, "fixmatch"), "acc")),
        ];
        row.extend((0..4).map(|i| paper_cell(&PAPER_T3, &d, i)));
        t.push(row)?;
    }
    write_table(
        p,
        &t,
        dir,
        "Top-1 test accuracy (%) of the maxnet, mean ± standard deviation over the training \
         seeds; every model starts from the same pre-trained weights. The paper's columns are \
         its Table 3 for the data set ours stands in for.",
    )
}

fn table4(p: &ArtifactParams, rows: &[Row], dir: &std::path::Path) -> Result<Made, StageError> {
    let mut cols = vec!["data set", "model"];
    cols.extend(VARIANTS);
    cols.extend(["paper: lab", "paper: fm", "paper: dist", "paper: full"]);
    let mut t = Table::new(&p.title, &cols);
    for d in datasets(rows.iter().filter(|r| r.table == "tofa")) {
        for (mi, model) in ["maxnet", "minnet"].into_iter().enumerate() {
            let mut row = vec![Cell::text(&d), Cell::text(model)];
            for v in VARIANTS {
                let acc = by_seed(rows, |r| is_tofa(r, &d, v), &format!("{model}_acc"));
                row.push(stat_cell(Stat::of(&values(&acc)), 1));
            }
            let paper = paper_dataset(&d).and_then(|pd| PAPER_T4.iter().find(|(n, _)| *n == pd));
            for i in 0..4 {
                row.push(paper.map_or(Cell::Missing, |(_, v)| Cell::num(v[mi][i], 1)));
            }
            t.push(row)?;
        }
    }
    write_table(
        p,
        &t,
        dir,
        "Top-1 test accuracy (%) of the maxnet and the minnet (BN recalibrated) after TOFA \
         training with each loss of eq. (4), mean ± standard deviation over the training seeds: \
         `lab` labelled only, `fm` + FixMatch, `dist` + distillation on unlabelled data, `full` \
         all three. The paper's columns are its Table 4.",
    )
}

fn accuracy_flops(
    p: &ArtifactParams,
    rows: &[Row],
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut fig = Figure::new(
        &p.title,
        "MFLOPs (multiply-adds per image)",
        "top-1 accuracy (%)",
    );
    let mut t = Table::new(&p.title, &["method", "model", "MFLOPs", "accuracy (%)"]);
    let mut palette = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.table == "palette" && key(r, "variant") == Some(p.variant.as_str()))
    {
        if let (Some(x), Some(y)) = (num(&r.metrics, "mflops"), num(&r.metrics, "test_acc")) {
            palette.push((x, y));
            let id = r
                .metrics
                .get("subnet")
                .and_then(Value::as_str)
                .unwrap_or("?");
            t.push(vec![
                Cell::text(format!("TOFA palette ({})", p.variant)),
                Cell::text(id),
                Cell::num(x, 2),
                Cell::num(y, 1),
            ])?;
        }
    }
    // Same-architecture fine-tuning (`arch = palette:i`), the maxnet fine-tuned alone, and
    // reference networks of other architectures (rows keyed by `model`), each its own series.
    let mut tuned = Vec::new();
    let mut maxnet = Vec::new();
    let mut refs: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| {
        r.table == "baseline"
            && key(r, "mode") == Some("labelled")
            && key(r, "dataset").is_none_or(|d| Some(d) == p.dataset.as_deref())
    }) {
        let (Some(x), Some(y)) = (num(&r.metrics, "mflops"), num(&r.metrics, "acc")) else {
            continue;
        };
        let arch = key(r, "arch").unwrap_or("?");
        let (method, model) = if let Some(m) = key(r, "model") {
            refs.entry(m.to_string()).or_default().push((x, y));
            ("reference model, fine-tuned alone", m.to_string())
        } else if arch.starts_with("palette:") {
            tuned.push((x, y));
            let id = r.metrics.get("subnet").and_then(Value::as_str);
            ("fine-tuned individually", id.unwrap_or(arch).to_string())
        } else {
            maxnet.push((x, y));
            (
                "maxnet fine-tuned alone (Table 3 baseline)",
                arch.to_string(),
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
        format!("TOFA palette ({}, one training)", p.variant),
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

fn latency(
    p: &ArtifactParams,
    rows: &[Row],
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
    for d in datasets(rows.iter().filter(|r| r.table == "latency")) {
        let mut pts = Vec::new();
        for r in rows.iter().filter(|r| {
            r.table == "latency"
                && key(r, "dataset") == Some(&d)
                && r.keys.get("batch").and_then(Value::as_u64) == Some(1)
        }) {
            let m = &r.metrics;
            let (Some(f), Some(l), Some(a)) =
                (num(m, "mflops"), num(m, "median_ms"), num(m, "test_acc"))
            else {
                continue;
            };
            pts.push(if vs_accuracy { (l, a) } else { (f, l) });
            t.push(vec![
                Cell::text(&d),
                Cell::text(key(r, "model").unwrap_or("?")),
                Cell::num(f, 2),
                Cell::num(l, 3),
                cell(num(m, "p90_ms"), 3),
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

fn device(p: &ArtifactParams, rows: &[Row], dir: &std::path::Path) -> Result<Made, StageError> {
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
        for r in rows
            .iter()
            .filter(|r| r.table == "latency" && key(r, "model") == Some(model))
        {
            let m = &r.metrics;
            let b = r.keys.get("batch").and_then(Value::as_f64).unwrap_or(0.0);
            if let Some(l) = num(m, "median_ms") {
                pts.push((b, l));
            }
            t.push(vec![
                Cell::text(model),
                Cell::num(b, 0),
                cell(num(m, "mflops"), 2),
                cell(num(m, "median_ms"), 3),
                cell(num(m, "p90_ms"), 3),
                cell(num(m, "per_image_ms"), 3),
                cell(num(m, "peak_rss_mb"), 1),
                cell(num(m, "peak_over_baseline_mb"), 1),
                cell(num(m, "param_mb"), 2),
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

fn selection(p: &ArtifactParams, rows: &[Row], dir: &std::path::Path) -> Result<Made, StageError> {
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
    let sel: Vec<&Row> = rows.iter().filter(|r| r.table == "selection").collect();
    let budget_of = |r: &Row| r.keys.get("budget").and_then(Value::as_u64);
    let mut budgets: Vec<u64> = sel.iter().filter_map(|r| budget_of(r)).collect();
    budgets.sort_unstable();
    budgets.dedup();
    for method in ["fixed", "fixed_le", "random", "evolution"] {
        let mut pts = Vec::new();
        for d in datasets(sel.iter().copied()) {
            for &b in &budgets {
                let these: Vec<&Row> = sel
                    .iter()
                    .copied()
                    .filter(|r| {
                        key(r, "dataset") == Some(&d)
                            && key(r, "method") == Some(method)
                            && budget_of(r) == Some(b)
                    })
                    .collect();
                if these.is_empty() {
                    continue;
                }
                let over = |k: &str| {
                    let v: Vec<f64> = these.iter().filter_map(|r| num(&r.metrics, k)).collect();
                    Stat::of(&v)
                };
                let (limit, acc) = (over("budget_mflops"), over("test_acc"));
                if let (Some(x), Some(y)) = (limit, acc) {
                    pts.push((x.mean, y.mean));
                }
                t.push(vec![
                    Cell::text(&d),
                    Cell::num(b as f64, 0),
                    stat_cell(limit, 2),
                    Cell::text(method),
                    stat_cell(over("mflops"), 2),
                    stat_cell(over("val_acc"), 1),
                    stat_cell(acc, 1),
                    cell(over("evaluations").map(|s| s.mean), 1),
                    cell(over("images").map(|s| s.mean), 0),
                    cell(over("search_s").map(|s| s.mean), 3),
                ])?;
            }
        }
        let name = match method {
            "fixed" => "fixed rule, size ranges (Algorithm 2, zero evaluations)",
            "fixed_le" => "fixed rule, literal p <= t",
            "random" => "random search (validation)",
            _ => "evolutionary search + accuracy predictor",
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
    for r in rows.iter().filter(|r| r.table == "predictor") {
        let m = &r.metrics;
        let _ = write!(
            note,
            " Accuracy predictor on {}: Kendall tau {:.3}, RMSE {:.4} (predicting the mean: \
             {:.4}) on {} held-out subnets.",
            key(r, "dataset").unwrap_or("?"),
            num(m, "kendall_tau").unwrap_or(f64::NAN),
            num(m, "rmse").unwrap_or(f64::NAN),
            num(m, "rmse_mean_baseline").unwrap_or(f64::NAN),
            num(m, "test_n").unwrap_or(0.0),
        );
    }
    write_figure(p, &fig, &t, dir, &note)
}

fn cost(p: &ArtifactParams, rows: &[Row], dir: &std::path::Path) -> Result<Made, StageError> {
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
    let tofa = rows
        .iter()
        .find(|r| r.table == "tofa" && key(r, "variant") == Some(p.variant.as_str()));
    let (tg, tw) = tofa.map_or((f64::NAN, f64::NAN), |r| {
        (
            num(&r.metrics, "train_gmacs").unwrap_or(f64::NAN),
            num(&r.metrics, "wall_s").unwrap_or(f64::NAN),
        )
    });
    let mut tuned: Vec<(f64, f64, f64)> = rows
        .iter()
        .filter(|r| r.table == "baseline" && key(r, "mode") == Some("labelled"))
        .filter_map(|r| {
            Some((
                num(&r.metrics, "mflops")?,
                num(&r.metrics, "train_gmacs")?,
                num(&r.metrics, "wall_s")?,
            ))
        })
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

fn transfer(p: &ArtifactParams, rows: &[Row], dir: &std::path::Path) -> Result<Made, StageError> {
    let tofa: Vec<&Row> = rows.iter().filter(|r| r.table == "tofa").collect();
    let mut starts: Vec<String> = Vec::new();
    for r in &tofa {
        if let Some(s) = key(r, "start")
            && !starts.iter().any(|x| x == s)
        {
            starts.push(s.to_string());
        }
    }
    starts.sort();
    let mut cols = vec!["data set".to_string(), "variant".to_string()];
    for s in &starts {
        cols.push(format!("maxnet from `{s}`"));
        cols.push(format!("minnet from `{s}`"));
    }
    let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut t = Table::new(&p.title, &cols);
    for d in datasets(tofa.iter().copied()) {
        for v in VARIANTS {
            let mut row = vec![Cell::text(&d), Cell::text(v)];
            let mut all = true;
            for s in &starts {
                let r = tofa.iter().find(|r| {
                    key(r, "dataset") == Some(&d)
                        && key(r, "variant") == Some(v)
                        && key(r, "start") == Some(s)
                });
                all &= r.is_some();
                row.push(cell(r.and_then(|r| num(&r.metrics, "maxnet_acc")), 1));
                row.push(cell(r.and_then(|r| num(&r.metrics, "minnet_acc")), 1));
            }
            if all {
                t.push(row)?;
            }
        }
    }
    write_table(
        p,
        &t,
        dir,
        "Top-1 test accuracy (%) after the same TOFA training, started from the weights \
         pre-trained on the source task and from our seeded random initialisation: what \
         pre-training on the source buys the targets.",
    )
}

/// `report` stage kind: `REPORT.md` from its `artifact` dependencies.
#[derive(Debug)]
pub struct Report;

/// Params of [`Report`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub title: String,
    /// Artifact name prefixes in the order their sections appear (ties and unlisted
    /// artifacts alphabetically, after the listed ones).
    #[serde(default)]
    pub order: Vec<String>,
}

impl StageKind for Report {
    type Params = ReportParams;
    const NAME: &'static str = "report";
    const VERSION: &'static str = "1";

    fn run(&self, p: &ReportParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        std::fs::create_dir_all(ctx.out("publish"))?;
        let mut sections: Vec<(String, String, f64)> = Vec::new();
        for d in ctx.deps.values().filter(|d| d.kind == "artifact") {
            let pub_dir = d.dir.join("publish");
            let inputs: Value = crate::read_json(&d.dir.join("inputs.json"))?;
            let wall = inputs["train_wall_s"].as_f64().unwrap_or(0.0);
            for e in std::fs::read_dir(&pub_dir)? {
                let path = e?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if let Some(stem) = name.strip_suffix(".md") {
                    sections.push((stem.to_string(), std::fs::read_to_string(&path)?, wall));
                } else {
                    std::fs::copy(&path, ctx.out("publish").join(&name))?;
                }
            }
        }
        let pos = |n: &str| {
            p.order
                .iter()
                .position(|o| n.starts_with(o.as_str()))
                .unwrap_or(usize::MAX)
        };
        sections.sort_by(|a, b| (pos(&a.0), &a.0).cmp(&(pos(&b.0), &b.0)));
        let mut md = format!("# {}\n\n", p.title);
        let _ = writeln!(md, "| provenance | |\n|---|---|");
        let _ = writeln!(md, "| profile | `{}` |", ctx.profile);
        let _ = writeln!(
            md,
            "| commit | `{}` |",
            ctx.git_commit
                .as_deref()
                .map_or("unknown", |c| &c[..c.len().min(7)])
        );
        let _ = writeln!(
            md,
            "| machine | {} ({} logical CPUs), candle CPU backend, {} thread(s) per stage |",
            tofa_select::device::machine().cpu_model,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            ctx.threads
        );
        let _ = writeln!(md, "| sections | {} |", sections.len());
        md.push_str(
            "\nEvery number below was produced by `tofa-pipeline run` with this profile; per-stage \
             wall times are in each stage's cache manifest (`tofa-pipeline show <stage>`).\n\n",
        );
        md.push_str("Contents: ");
        md.push_str(
            &sections
                .iter()
                .map(|(n, _, _)| format!("[{n}](#{n})"))
                .collect::<Vec<_>>()
                .join(" · "),
        );
        md.push_str("\n\n");
        for (name, body, wall) in &sections {
            let _ = writeln!(md, "<a id=\"{name}\"></a>\n");
            md.push_str(body);
            if *wall > 0.0 {
                let _ = writeln!(
                    md,
                    "\n_Training wall time behind this section: {wall:.0} s._\n"
                );
            } else {
                md.push('\n');
            }
        }
        crate::write(&ctx.out("publish/REPORT.md"), md)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_papers_data_sets() {
        assert_eq!(paper_dataset("synth-cifar100"), Some("Cifar-100"));
        assert_eq!(paper_dataset("cifar10"), Some("Cifar-10"));
        assert_eq!(paper_dataset("synth-cars"), Some("Car"));
        assert_eq!(paper_dataset("fashion-mnist"), None);
        assert!(
            matches!(paper_cell(&PAPER_T3, "synth-pets", 2), Cell::Num { value, .. } if value == 87.6)
        );
    }

    fn row(table: &str, keys: serde_json::Value, metrics: serde_json::Value) -> Row {
        Row {
            table: table.into(),
            keys: serde_json::from_value(keys).unwrap(),
            metrics: serde_json::from_value(metrics).unwrap(),
        }
    }

    #[test]
    fn table4_places_each_variant_and_the_papers_numbers() {
        let rows: Vec<Row> = VARIANTS
            .iter()
            .enumerate()
            .map(|(i, v)| {
                row(
                    "tofa",
                    serde_json::json!({"dataset": "synth-flowers", "variant": v}),
                    serde_json::json!({"maxnet_acc": 50.0 + i as f64, "minnet_acc": 40.0 + i as f64}),
                )
            })
            .collect();
        let p = ArtifactParams {
            artifact: ArtifactKind::Table4,
            name: "t4".into(),
            title: "T4".into(),
            dataset: None,
            variant: lab(),
        };
        let dir = tempfile::tempdir().unwrap();
        let made = table4(&p, &rows, dir.path()).unwrap();
        assert!(
            made.md.contains(
                "| synth-flowers | maxnet | 50.0 | 51.0 | 52.0 | 53.0 | 81.7 | 92.0 | 91.5 | 92.3 |"
            ),
            "{}",
            made.md
        );
        assert!(
            made.md.contains(
                "| synth-flowers | minnet | 40.0 | 41.0 | 42.0 | 43.0 | 79.8 | 90.9 | 91.2 | 92.0 |"
            ),
            "{}",
            made.md
        );
        let empty = table4(&p, &[], dir.path()).unwrap_err().to_string();
        assert!(empty.contains("no input rows"), "{empty}");
    }
}

//! Report stages: `artifact` (one paper table or figure from its dependencies' rows) and
//! `report` (`REPORT.md` from the artifacts, with provenance).
//!
//! An artifact writes `publish/<name>.md` (its section of the report) plus `<name>.csv` for
//! tables and `<name>.svg` / `<name>.png` for figures; the binary copies `publish/` into
//! `reports/<profile>/`. Where the paper prints numbers (Tables 3 and 4) they stand beside ours.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the `artifact` kind: its params, its typed inputs (`Inputs`), section writing |
//! | `paper.rs` | the paper's own numbers (Tables 3 and 4) and data set names |
//! | `stat.rs` | mean ± std over seeds, and the row selections every artifact shares |
//! | `tables.rs` | Tables 2, 3, 4 and the transfer table |
//! | `figures.rs` | Figures 2-11 and the cost figure |
//! | `claims.rs` | the Claims section |
//! | `assembly.rs` | the `report` kind: `REPORT.md` |

use serde::{Deserialize, Serialize};
use tofa_report::{Figure, Table};
use tofa_runner::BoxError;
use tofa_runner::kind::{DepOutput, Row, RowError, StageContext, StageKind, TableRow};
use tofa_train::Variant;

use crate::StageError;
use crate::rows::{
    BaselineRow, DatasetRow, LatencyRow, PaletteRow, PredictorRow, PretrainRow, SelectionRow,
    TofaRow,
};

mod assembly;
mod claims;
mod figures;
mod paper;
mod stat;
mod tables;

pub use assembly::{Report, ReportParams};
pub use paper::paper_dataset;

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
    pub variant: Variant,
}

fn lab() -> Variant {
    Variant::Lab
}

/// An artifact's input: its dependencies' rows, typed, in dependency order (stage id), with
/// the rows of other data sets than `ArtifactParams::dataset` left out.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    pub datasets: Vec<DatasetRow>,
    pub pretrain: Vec<PretrainRow>,
    pub tofa: Vec<TofaRow>,
    pub baselines: Vec<BaselineRow>,
    pub palette: Vec<PaletteRow>,
    pub predictor: Vec<PredictorRow>,
    pub selection: Vec<SelectionRow>,
    pub latency: Vec<LatencyRow>,
    /// Data set names in the order their first row came, over every table.
    pub order: Vec<String>,
    /// Rows kept, and the training wall time they report (`wall_s`), in row order.
    pub rows: usize,
    pub train_wall_s: f64,
}

impl Inputs {
    /// The rows of `deps`; a row that does not fit its table's type is an error naming the
    /// stage it came from.
    fn read<'a>(
        deps: impl Iterator<Item = &'a DepOutput>,
        only: Option<&str>,
    ) -> Result<Self, RowError> {
        let mut inp = Inputs::default();
        for dep in deps {
            for r in &dep.rows {
                inp.add(r, only).map_err(|e| RowError {
                    stage: Some(dep.id.clone()),
                    ..e
                })?;
            }
        }
        Ok(inp)
    }

    fn add(&mut self, r: &Row, only: Option<&str>) -> Result<(), RowError> {
        match r.table.as_str() {
            DatasetRow::TABLE => {
                let x = self.keep(r, only)?;
                self.datasets.extend(x)
            }
            PretrainRow::TABLE => {
                let x = self.keep(r, only)?;
                self.pretrain.extend(x)
            }
            TofaRow::TABLE => {
                let x = self.keep(r, only)?;
                self.tofa.extend(x)
            }
            BaselineRow::TABLE => {
                let x = self.keep(r, only)?;
                self.baselines.extend(x)
            }
            PaletteRow::TABLE => {
                let x = self.keep(r, only)?;
                self.palette.extend(x)
            }
            PredictorRow::TABLE => {
                let x = self.keep(r, only)?;
                self.predictor.extend(x)
            }
            SelectionRow::TABLE => {
                let x = self.keep(r, only)?;
                self.selection.extend(x)
            }
            LatencyRow::TABLE => {
                let x = self.keep(r, only)?;
                self.latency.extend(x)
            }
            // a table no artifact draws (a utility kind's): counted, not read
            _ => self.rows += 1,
        }
        Ok(())
    }

    /// `r` as a `T` unless it is of another data set than `only`; counts it, its data set
    /// and its training wall time.
    fn keep<T: Input>(&mut self, r: &Row, only: Option<&str>) -> Result<Option<T>, RowError> {
        let x: T = r.parse()?;
        let d = x.dataset();
        if let (Some(only), Some(d)) = (only, d)
            && d != only
        {
            return Ok(None);
        }
        if let Some(d) = d
            && !self.order.iter().any(|o| o == d)
        {
            self.order.push(d.to_string());
        }
        self.rows += 1;
        self.train_wall_s += x.train_wall_s();
        Ok(Some(x))
    }
}

/// A row an artifact reads: which data set it is of (none: every artifact's), and the
/// training wall time it reports.
trait Input: TableRow {
    fn dataset(&self) -> Option<&str>;
    fn train_wall_s(&self) -> f64 {
        0.0
    }
}

impl Input for PretrainRow {
    fn dataset(&self) -> Option<&str> {
        None
    }
    fn train_wall_s(&self) -> f64 {
        self.wall_s.unwrap_or(0.0)
    }
}

impl Input for TofaRow {
    fn dataset(&self) -> Option<&str> {
        Some(&self.dataset)
    }
    fn train_wall_s(&self) -> f64 {
        self.wall_s
    }
}

impl Input for BaselineRow {
    fn dataset(&self) -> Option<&str> {
        Some(&self.dataset)
    }
    fn train_wall_s(&self) -> f64 {
        self.wall_s
    }
}

/// The rows whose only part in an artifact's inputs is their data set.
macro_rules! dataset_input {
    ($($t:ty),*) => {$(
        impl Input for $t {
            fn dataset(&self) -> Option<&str> {
                Some(&self.dataset)
            }
        }
    )*};
}

dataset_input!(
    DatasetRow,
    PaletteRow,
    PredictorRow,
    SelectionRow,
    LatencyRow
);

/// What an artifact tells the report about its inputs (`inputs.json`).
#[derive(Debug, Serialize, Deserialize)]
struct InputsSummary {
    rows: usize,
    /// The training wall time behind the artifact's rows (s).
    train_wall_s: f64,
}

impl InputsSummary {
    const FILE: &'static str = "inputs.json";

    fn write(&self, ctx: &StageContext) -> Result<(), StageError> {
        crate::write_json(&ctx.out(Self::FILE), self)
    }

    fn read(dep: &DepOutput) -> Result<Self, StageError> {
        crate::read_json(&dep.dir.join(Self::FILE))
    }
}

/// What an artifact produced: a Markdown section and files in `publish/`.
#[derive(Debug)]
pub(crate) struct Made {
    pub md: String,
}

impl StageKind for Artifact {
    type Params = ArtifactParams;
    const NAME: &'static str = "artifact";
    const VERSION: &'static str = "1";

    fn run(&self, p: &ArtifactParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let inp =
            Inputs::read(ctx.deps.values(), p.dataset.as_deref()).map_err(StageError::from)?;
        let dir = ctx.out("publish");
        std::fs::create_dir_all(&dir)?;
        let made = match p.artifact {
            ArtifactKind::Datasets => tables::datasets_table(p, &inp, &dir)?,
            ArtifactKind::Table3 => tables::table3(p, &inp, &dir)?,
            ArtifactKind::Table4 => tables::table4(p, &inp, &dir)?,
            ArtifactKind::Transfer => tables::transfer(p, &inp, &dir)?,
            ArtifactKind::AccuracyFlops => figures::accuracy_flops(p, &inp, &dir)?,
            ArtifactKind::LatencyFlops => figures::latency(p, &inp, &dir, false)?,
            ArtifactKind::LatencyAccuracy => figures::latency(p, &inp, &dir, true)?,
            ArtifactKind::Device => figures::device(p, &inp, &dir)?,
            ArtifactKind::Selection => figures::selection(p, &inp, &dir)?,
            ArtifactKind::Cost => figures::cost(p, &inp, &dir)?,
            ArtifactKind::Claims => claims::claims(p, &inp, &dir)?,
        };
        crate::write(&dir.join(format!("{}.md", p.name)), made.md)?;
        InputsSummary {
            rows: inp.rows,
            train_wall_s: inp.train_wall_s,
        }
        .write(ctx)?;
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

/// Writes `t` as `<name>.csv` and returns its section; an empty table is an error.
pub(crate) fn write_table(
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

/// Writes `f` as SVG and PNG and its data `t` as CSV, and returns its section.
pub(crate) fn write_figure(
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

/// Rows and params for the artifacts' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use tofa_train::SingleMode;

    use crate::train::Arch;

    pub fn params(artifact: ArtifactKind) -> ArtifactParams {
        ArtifactParams {
            artifact,
            name: "t".into(),
            title: "T".into(),
            dataset: None,
            variant: lab(),
        }
    }

    pub fn tofa(dataset: &str, variant: Variant, seed: &str, maxnet: f64, minnet: f64) -> TofaRow {
        TofaRow {
            dataset: dataset.into(),
            variant,
            start: "pretrain".into(),
            seed: seed.into(),
            mask_rate: None,
            pl_acc: None,
            maxnet_acc: maxnet,
            minnet_acc: minnet,
            maxnet_mflops: 1.0,
            minnet_mflops: 0.5,
            subnets_sampled: 1,
            iterations: 1,
            images: 1,
            train_gmacs: 1.0,
            wall_s: 1.0,
        }
    }

    pub fn baseline(dataset: &str, mode: SingleMode, seed: &str, acc: f64) -> BaselineRow {
        BaselineRow {
            dataset: dataset.into(),
            mode,
            arch: Arch::Maxnet,
            seed: seed.into(),
            model: None,
            mask_rate: None,
            pl_acc: None,
            acc,
            subnet: "s".into(),
            mflops: 1.0,
            iterations: 1,
            images: 1,
            train_gmacs: 1.0,
            wall_s: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::tofa;
    use super::*;

    #[test]
    fn inputs_are_typed_filtered_by_data_set_and_name_a_bad_rows_stage() {
        let good = Row::of(&tofa("x", Variant::Lab, "0", 50.0, 40.0)).unwrap();
        let other = Row::of(&tofa("y", Variant::Lab, "0", 50.0, 40.0)).unwrap();
        let dep = DepOutput {
            id: "tofa-x".into(),
            kind: "tofa_train".into(),
            dir: std::path::PathBuf::new(),
            rows: vec![other.clone(), good.clone()],
        };
        let all = Inputs::read([&dep].into_iter(), None).unwrap();
        assert_eq!(
            (all.tofa.len(), all.rows, all.order.clone()),
            (2, 2, vec!["y".into(), "x".into()])
        );
        assert_eq!(all.train_wall_s, 2.0);
        let x = Inputs::read([&dep].into_iter(), Some("x")).unwrap();
        assert_eq!(x.tofa, vec![tofa("x", Variant::Lab, "0", 50.0, 40.0)]);
        let mut bad = good;
        bad.metrics.remove("maxnet_acc");
        let dep = DepOutput {
            rows: vec![bad],
            ..dep
        };
        let e = Inputs::read([&dep].into_iter(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stage `tofa-x`") && e.contains("maxnet_acc"),
            "{e}"
        );
    }
}

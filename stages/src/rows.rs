//! The result rows every stage kind emits, one struct per table: the contract between the
//! stage that writes a table and the stages (palette, device bench, the report's artifacts)
//! that read it.
//!
//! Each is a [`TableRow`]: written with `ctx.emit_row(&row)`, read with
//! `dep.rows_of::<Row>()`. The field names and value types are the tables' columns in
//! `results/<profile>/` and the rows kept in cache entries, so renaming a field, changing its
//! type or whether a `None` is stored (`null`) or left out changes both: bump the kind's
//! `VERSION`.
//!
//! JSON has no NaN: a non-finite float is stored as `null`. A field that can be undefined
//! reads `null` back as NaN (`nan_if_null`: the predictor's statistics on too few held-out
//! subnets); anywhere else `null` is an error naming the field.

use serde::{Deserialize, Deserializer, Serialize};
use tofa_runner::kind::TableRow;
use tofa_train::{PretrainMode, SingleMode, Variant};

use crate::select::Method;
use crate::train::Arch;

/// `null` (a non-finite float, as JSON stores it) read back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The replicate label rows carried before replicates existed.
fn seed0() -> String {
    "0".into()
}

/// `split` (table `datasets`): the sizes of one data set and its splits (paper Table 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRow {
    pub dataset: String,
    pub classes: usize,
    pub train: usize,
    pub labelled: usize,
    pub unlabelled: usize,
    pub validation: usize,
    pub test: usize,
    pub resolution: usize,
}

impl TableRow for DatasetRow {
    const TABLE: &'static str = "datasets";
    const KEYS: &'static [&'static str] = &["dataset"];
}

/// `pretrain`: where the maxnet's weights came from and, when it trained on the source task,
/// what that cost and reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainRow {
    /// The source data set's name.
    pub source: String,
    pub iterations: u64,
    /// `scratch`, or the path of the weights file loaded.
    pub init: String,
    /// Tensors of the weights file mapped, adapted, missing, unmapped (a file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapped: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapted: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<usize>,
    /// Training on the source (only when `iterations > 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_gmacs: Option<f64>,
    /// What was trained on the source (only when `iterations > 0`): the maxnet alone or the
    /// whole supernet with the sandwich rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PretrainMode>,
    /// Source test accuracy of the maxnet (%), when asked for (`eval_images > 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_acc: Option<f64>,
    /// Source test accuracy of the minnet (%), BN recalibrated on source images, when asked
    /// for and trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_min_acc: Option<f64>,
}

impl PretrainRow {
    /// The row of a pre-training on `source` from the seeded initialisation, before any
    /// weights file, training or evaluation fills its other fields.
    pub fn from_scratch(source: &str, iterations: u64) -> Self {
        PretrainRow {
            source: source.into(),
            iterations,
            init: "scratch".into(),
            mapped: None,
            adapted: None,
            missing: None,
            unmapped: None,
            wall_s: None,
            train_gmacs: None,
            mode: None,
            source_acc: None,
            source_min_acc: None,
        }
    }
}

impl TableRow for PretrainRow {
    const TABLE: &'static str = "pretrain";
    const KEYS: &'static [&'static str] = &["source"];
}

/// `tofa_train` (table `tofa`): one TOFA training, its maxnet and minnet tested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TofaRow {
    pub dataset: String,
    pub variant: Variant,
    /// The id of the `pretrain` stage the training started from.
    pub start: String,
    /// The replicate label.
    #[serde(default = "seed0")]
    pub seed: String,
    /// FixMatch mask rate and pseudo-label accuracy over the last quarter of the run (`null`
    /// when FixMatch was off or nothing was confident).
    pub mask_rate: Option<f64>,
    pub pl_acc: Option<f64>,
    /// Top-1 test accuracy (%), BN recalibrated.
    pub maxnet_acc: f64,
    pub minnet_acc: f64,
    pub maxnet_mflops: f64,
    pub minnet_mflops: f64,
    /// Size of Omega.
    pub subnets_sampled: usize,
    pub iterations: u64,
    pub images: u64,
    pub train_gmacs: f64,
    pub wall_s: f64,
}

impl TableRow for TofaRow {
    const TABLE: &'static str = "tofa";
    const KEYS: &'static [&'static str] = &["dataset", "variant", "start", "seed"];
}

/// `baseline_train` (table `baseline`): one fixed network trained alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRow {
    pub dataset: String,
    pub mode: SingleMode,
    pub arch: Arch,
    #[serde(default = "seed0")]
    pub seed: String,
    /// A network that is not of the TOFA space (a reference model), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// As in [`TofaRow`].
    pub mask_rate: Option<f64>,
    pub pl_acc: Option<f64>,
    /// Top-1 test accuracy (%).
    pub acc: f64,
    /// The canonical subnet id of the architecture trained.
    pub subnet: String,
    pub mflops: f64,
    pub iterations: u64,
    pub images: u64,
    pub train_gmacs: f64,
    pub wall_s: f64,
}

impl TableRow for BaselineRow {
    const TABLE: &'static str = "baseline";
    const KEYS: &'static [&'static str] = &["dataset", "mode", "arch", "seed", "model"];
}

/// `palette`: the subnet Algorithm 2 keeps for one budget, tested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaletteRow {
    pub dataset: String,
    pub variant: Variant,
    /// The budget's index, smallest first.
    pub budget: usize,
    pub budget_mflops: f64,
    pub subnet: String,
    pub mflops: f64,
    pub test_acc: f64,
    /// The pick's last sampled iteration.
    pub last_iter: u64,
    /// Candidates in the budget's range, and whether the range was empty (rule fell back).
    pub feasible: usize,
    pub fallback: bool,
    /// Size of Omega.
    pub omega: usize,
}

impl TableRow for PaletteRow {
    const TABLE: &'static str = "palette";
    const KEYS: &'static [&'static str] = &["dataset", "variant", "budget"];
}

/// `selection` (table `predictor`): how well the evolutionary search's accuracy predictor
/// ranks held-out subnets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictorRow {
    pub dataset: String,
    #[serde(default = "seed0")]
    pub seed: String,
    /// Subnets evaluated for its data set, and how many of them were held out.
    pub samples: usize,
    pub test_n: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub kendall_tau: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub rmse: f64,
    /// The RMSE of predicting the mean.
    #[serde(deserialize_with = "nan_if_null")]
    pub rmse_mean_baseline: f64,
    pub train_s: f64,
}

impl TableRow for PredictorRow {
    const TABLE: &'static str = "predictor";
    const KEYS: &'static [&'static str] = &["dataset", "seed"];
}

/// `selection`: one method's pick for one budget, with its measured search cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectionRow {
    pub dataset: String,
    #[serde(default = "seed0")]
    pub seed: String,
    pub budget: usize,
    pub method: Method,
    pub budget_mflops: f64,
    pub subnet: String,
    pub mflops: f64,
    /// Accuracy (%) on the validation split (what the searches see) and the test split.
    pub val_acc: f64,
    pub test_acc: f64,
    /// Subnet evaluations and images evaluated (the predictor's share included).
    pub evaluations: f64,
    pub images: f64,
    pub search_s: f64,
}

impl TableRow for SelectionRow {
    const TABLE: &'static str = "selection";
    const KEYS: &'static [&'static str] = &["dataset", "seed", "budget", "method"];
}

/// `device_bench` (table `latency`): one exported model at one batch size, in a fresh process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    pub dataset: String,
    /// `maxnet`, `minnet`, or a budget pick's subnet id.
    pub model: String,
    pub batch: usize,
    pub mflops: f64,
    pub test_acc: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub per_image_ms: f64,
    /// Memory, MiB: the process's peak resident set, its peak over the baseline before the
    /// model was loaded, the parameters, the activations' peak.
    pub peak_rss_mb: f64,
    pub peak_over_baseline_mb: f64,
    pub param_mb: f64,
    pub activation_peak_mb: f64,
    /// On a CUDA device: the GPU memory's peak and its peak over the baseline before the
    /// model was loaded (the CUDA context), MiB, through NVML (`tofa_select::gpu_memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_gpu_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_gpu_over_baseline_mb: Option<f64>,
}

impl TableRow for LatencyRow {
    const TABLE: &'static str = "latency";
    const KEYS: &'static [&'static str] = &["dataset", "model", "batch"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use tofa_runner::kind::{Row, RowError};
    use tofa_runner::results::Tables;

    /// `row` read as its table's type and written back.
    fn retyped(row: &Row) -> Result<Row, RowError> {
        fn via<T: TableRow>(row: &Row) -> Result<Row, RowError> {
            Row::of(&row.parse::<T>()?)
        }
        match row.table.as_str() {
            DatasetRow::TABLE => via::<DatasetRow>(row),
            PretrainRow::TABLE => via::<PretrainRow>(row),
            TofaRow::TABLE => via::<TofaRow>(row),
            BaselineRow::TABLE => via::<BaselineRow>(row),
            PaletteRow::TABLE => via::<PaletteRow>(row),
            PredictorRow::TABLE => via::<PredictorRow>(row),
            SelectionRow::TABLE => via::<SelectionRow>(row),
            LatencyRow::TABLE => via::<LatencyRow>(row),
            t => panic!("table `{t}` has no row type"),
        }
    }

    /// What reading fills in for a row an older version of its kind wrote: the replicate label
    /// `0` and `null` FixMatch diagnostics.
    fn with_defaults(mut row: Row) -> Row {
        if matches!(
            row.table.as_str(),
            "tofa" | "baseline" | "predictor" | "selection"
        ) {
            row.keys.entry("seed".into()).or_insert_with(|| "0".into());
        }
        if matches!(row.table.as_str(), "tofa" | "baseline") {
            for k in ["mask_rate", "pl_acc"] {
                row.metrics
                    .entry(k.into())
                    .or_insert(serde_json::Value::Null);
            }
        }
        row
    }

    /// The types reproduce what the stages wrote before rows were typed: every row of the
    /// committed results (`results/<profile>/tables.json`) reads as its type and writes back
    /// to the same keys and metrics, `null`s included (plus [`with_defaults`] for rows of
    /// older kind versions, e.g. `results/fashion`).
    #[test]
    fn undefined_predictor_statistics_come_back_as_nan() {
        let p = PredictorRow {
            dataset: "d".into(),
            seed: "0".into(),
            samples: 2,
            test_n: 0,
            kendall_tau: f64::NAN,
            rmse: f64::NAN,
            rmse_mean_baseline: 1.0,
            train_s: 0.1,
        };
        let row = Row::of(&p).unwrap();
        assert_eq!(row.metrics["kendall_tau"], serde_json::Value::Null);
        let back: PredictorRow = row.parse().unwrap();
        assert!(back.kendall_tau.is_nan() && back.rmse.is_nan());
        assert_eq!(back.rmse_mean_baseline, 1.0);
    }

    #[test]
    fn committed_result_rows_round_trip_through_their_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results");
        let mut n = 0;
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.join("tables.json").exists() {
                continue;
            }
            for (table, rows) in Tables::load(&dir).unwrap().tables {
                for r in rows {
                    let row = Row {
                        table: table.clone(),
                        keys: r.keys,
                        metrics: r.metrics,
                    };
                    let back =
                        retyped(&row).unwrap_or_else(|e| panic!("{}: {e}: {row:?}", dir.display()));
                    assert_eq!(back, with_defaults(row), "{}", dir.display());
                    n += 1;
                }
            }
        }
        assert!(n > 100, "only {n} committed rows under {}", root.display());
    }
}

//! Result tables: rows from stages, upserted by stage into `tables.json`, written as CSV
//! (stable order, fixed decimals, made for `git diff`) and Parquet with Polars.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::write_atomic;
use crate::error::{Error, Result};
use crate::kind::Row;

/// One row with the stage that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    pub stage: String,
    pub keys: BTreeMap<String, Value>,
    pub metrics: BTreeMap<String, Value>,
}

/// All tables of a results directory: `tables.json`, the source the CSVs are made from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tables {
    pub tables: BTreeMap<String, Vec<StageRow>>,
}

impl Tables {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tables.json");
        match std::fs::read(&path) {
            Ok(b) => Self::from_slice(&b, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tables::default()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            source: e,
        })
    }

    /// Replaces the rows of `ran` stages, drops rows of stages no longer declared.
    pub fn upsert(&mut self, ran: &[(String, Vec<Row>)], declared: &BTreeSet<String>) {
        let ran_ids: BTreeSet<&String> = ran.iter().map(|(s, _)| s).collect();
        for rows in self.tables.values_mut() {
            rows.retain(|r| declared.contains(&r.stage) && !ran_ids.contains(&r.stage));
        }
        for (stage, rows) in ran {
            for r in rows {
                self.tables
                    .entry(r.table.clone())
                    .or_default()
                    .push(StageRow {
                        stage: stage.clone(),
                        keys: r.keys.clone(),
                        metrics: r.metrics.clone(),
                    });
            }
        }
        self.tables.retain(|_, rows| !rows.is_empty());
        for rows in self.tables.values_mut() {
            rows.sort_by(|a, b| {
                let ka: Vec<String> = a.keys.values().map(Value::to_string).collect();
                let kb: Vec<String> = b.keys.values().map(Value::to_string).collect();
                (&a.stage, ka).cmp(&(&b.stage, kb))
            });
        }
    }

    /// Writes `tables.json` and each table as CSV and Parquet.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Json {
            path: dir.join("tables.json"),
            source: e,
        })?;
        write_atomic(&dir.join("tables.json"), &json)?;
        for (name, rows) in &self.tables {
            let mut df = frame(name, rows)?;
            let terr = |e: PolarsError| Error::Table {
                table: name.clone(),
                message: e.to_string(),
            };
            let mut csv = Vec::new();
            CsvWriter::new(&mut csv)
                .with_float_precision(Some(4))
                .finish(&mut df)
                .map_err(terr)?;
            write_atomic(&dir.join(format!("{name}.csv")), &csv)?;
            let mut pq = Vec::new();
            ParquetWriter::new(&mut pq).finish(&mut df).map_err(terr)?;
            write_atomic(&dir.join(format!("{name}.parquet")), &pq)?;
        }
        Ok(())
    }
}

/// Column names of a table: `stage`, key columns, metric columns (each sorted).
pub fn columns(rows: &[StageRow]) -> (Vec<String>, Vec<String>) {
    // `stage` is the runner's own column.
    let keys: BTreeSet<&String> = rows
        .iter()
        .flat_map(|r| r.keys.keys())
        .filter(|k| k.as_str() != "stage")
        .collect();
    let metrics: BTreeSet<&String> = rows.iter().flat_map(|r| r.metrics.keys()).collect();
    let metrics = metrics
        .into_iter()
        .filter(|m| !keys.contains(m))
        .cloned()
        .collect();
    (keys.into_iter().cloned().collect(), metrics)
}

fn series(name: &str, vals: Vec<Option<&Value>>) -> Column {
    let all = |f: fn(&Value) -> bool| vals.iter().all(|v| v.is_none_or(|x| f(x) || x.is_null()));
    if all(|v| v.is_i64() || v.is_u64()) {
        Column::new(
            name.into(),
            vals.iter()
                .map(|v| v.and_then(Value::as_i64))
                .collect::<Vec<_>>(),
        )
    } else if all(Value::is_number) {
        Column::new(
            name.into(),
            vals.iter()
                .map(|v| v.and_then(Value::as_f64))
                .collect::<Vec<_>>(),
        )
    } else if all(Value::is_boolean) {
        Column::new(
            name.into(),
            vals.iter()
                .map(|v| v.and_then(Value::as_bool))
                .collect::<Vec<_>>(),
        )
    } else {
        Column::new(
            name.into(),
            vals.iter()
                .map(|v| {
                    v.filter(|x| !x.is_null()).map(|x| match x {
                        Value::String(s) => s.clone(),
                        o => o.to_string(),
                    })
                })
                .collect::<Vec<_>>(),
        )
    }
}

/// A table as a Polars frame, sorted by stage then key columns.
pub fn frame(name: &str, rows: &[StageRow]) -> Result<DataFrame> {
    let (keys, metrics) = columns(rows);
    let mut cols = vec![Column::new(
        "stage".into(),
        rows.iter().map(|r| r.stage.clone()).collect::<Vec<_>>(),
    )];
    for k in &keys {
        cols.push(series(k, rows.iter().map(|r| r.keys.get(k)).collect()));
    }
    for m in &metrics {
        cols.push(series(m, rows.iter().map(|r| r.metrics.get(m)).collect()));
    }
    let terr = |e: PolarsError| Error::Table {
        table: name.to_string(),
        message: e.to_string(),
    };
    let df = DataFrame::new(rows.len(), cols).map_err(terr)?;
    let mut by = vec!["stage".to_string()];
    by.extend(keys);
    df.sort(by, SortMultipleOptions::default().with_maintain_order(true))
        .map_err(terr)
}

/// One changed metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub table: String,
    pub row: String,
    pub metric: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
}

/// What changed between two sets of tables.
#[derive(Debug, Default, Serialize)]
pub struct TableDiff {
    pub deltas: Vec<Delta>,
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
}

fn row_id(r: &StageRow) -> String {
    let keys: Vec<String> = r
        .keys
        .iter()
        .filter(|(k, _)| k.as_str() != "stage")
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
        .collect();
    if keys.is_empty() {
        r.stage.clone()
    } else {
        format!("{} [{}]", r.stage, keys.join(" "))
    }
}

impl TableDiff {
    /// Matches rows on stage and key columns and compares numeric metrics.
    pub fn compute(old: &Tables, new: &Tables) -> Self {
        let mut d = TableDiff::default();
        let names: BTreeSet<&String> = old.tables.keys().chain(new.tables.keys()).collect();
        for t in names {
            let empty = Vec::new();
            let o: BTreeMap<String, &StageRow> = old
                .tables
                .get(t)
                .unwrap_or(&empty)
                .iter()
                .map(|r| (row_id(r), r))
                .collect();
            let n: BTreeMap<String, &StageRow> = new
                .tables
                .get(t)
                .unwrap_or(&empty)
                .iter()
                .map(|r| (row_id(r), r))
                .collect();
            for (id, nr) in &n {
                match o.get(id) {
                    None => d.added.push((t.clone(), id.clone())),
                    Some(or) => {
                        let ms: BTreeSet<&String> =
                            or.metrics.keys().chain(nr.metrics.keys()).collect();
                        for m in ms {
                            let a = or.metrics.get(m).and_then(Value::as_f64);
                            let b = nr.metrics.get(m).and_then(Value::as_f64);
                            let differs = match (a, b) {
                                (Some(x), Some(y)) => x != y && !(x.is_nan() && y.is_nan()),
                                (None, None) => or.metrics.get(m) != nr.metrics.get(m),
                                _ => true,
                            };
                            if differs {
                                d.deltas.push(Delta {
                                    table: t.clone(),
                                    row: id.clone(),
                                    metric: m.clone(),
                                    old: a,
                                    new: b,
                                });
                            }
                        }
                    }
                }
            }
            for id in o.keys().filter(|id| !n.contains_key(*id)) {
                d.removed.push((t.clone(), id.clone()));
            }
        }
        d
    }

    /// Largest absolute change of a metric present on both sides (infinite if one is missing).
    pub fn max_abs_delta(&self) -> f64 {
        self.deltas
            .iter()
            .map(|x| match (x.old, x.new) {
                (Some(a), Some(b)) => (b - a).abs(),
                _ => f64::INFINITY,
            })
            .fold(0.0, f64::max)
    }

    /// A readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.deltas.is_empty() && self.added.is_empty() && self.removed.is_empty() {
            return "no differences\n".into();
        }
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        if !self.deltas.is_empty() {
            let w = self
                .deltas
                .iter()
                .map(|d| d.table.len() + d.row.len() + d.metric.len() + 4)
                .max()
                .unwrap_or(0);
            out.push_str(&format!(
                "{:<w$} {:>12} {:>12} {:>12}\n",
                "table / row / metric", "old", "new", "delta"
            ));
            for d in &self.deltas {
                let delta = match (d.old, d.new) {
                    (Some(a), Some(b)) => format!("{:+.4}", b - a),
                    _ => "-".into(),
                };
                let name = format!("{} / {} / {}", d.table, d.row, d.metric);
                out.push_str(&format!(
                    "{name:<w$} {:>12} {:>12} {delta:>12}\n",
                    fmt(d.old),
                    fmt(d.new)
                ));
            }
        }
        for (t, r) in &self.added {
            out.push_str(&format!("+ {t} / {r}\n"));
        }
        for (t, r) in &self.removed {
            out.push_str(&format!("- {t} / {r}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: &str, acc: f64) -> (String, Vec<Row>) {
        (
            stage.into(),
            vec![Row {
                table: "t".into(),
                keys: BTreeMap::from([("model".into(), Value::from("max"))]),
                metrics: BTreeMap::from([("acc".into(), Value::from(acc))]),
            }],
        )
    }

    #[test]
    fn upsert_csv_and_diff() {
        let dir = tempfile::tempdir().unwrap();
        let declared: BTreeSet<String> = ["b".into(), "a".into()].into();
        let mut t = Tables::default();
        t.upsert(&[row("b", 0.5), row("a", 0.25)], &declared);
        t.write(dir.path()).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("t.csv")).unwrap();
        assert_eq!(csv, "stage,model,acc\na,max,0.2500\nb,max,0.5000\n");
        assert!(dir.path().join("t.parquet").exists());
        let old = Tables::load(dir.path()).unwrap();
        let mut new = old.clone();
        new.upsert(&[row("a", 0.3)], &declared);
        let d = TableDiff::compute(&old, &new);
        assert_eq!(d.deltas.len(), 1);
        assert!((d.max_abs_delta() - 0.05).abs() < 1e-12);
        assert!(d.render().contains("+0.0500"), "{}", d.render());
        // a stage no longer declared loses its rows
        let mut gone = new.clone();
        gone.upsert(&[], &["a".to_string()].into());
        assert_eq!(TableDiff::compute(&new, &gone).removed.len(), 1);
    }
}

//! Stage kinds: typed params, a version string and a `run` function, registered by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BoxError;
use crate::progress::Progress;

/// One result row: `keys` identify it, `metrics` are compared by `diff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub table: String,
    pub keys: BTreeMap<String, Value>,
    pub metrics: BTreeMap<String, Value>,
}

/// A row type with a fixed schema: one struct per result table, written with
/// [`StageContext::emit_row`] and read with [`DepOutput::rows_of`], so the stage that writes a
/// table and the stages that read it share one definition instead of spelling field names.
///
/// The struct serialises to a JSON object; the fields named in [`KEYS`](Self::KEYS) become the
/// row's keys and the others its metrics. An `Option` field that is `None` is stored as `null`
/// unless the field skips it (`skip_serializing_if`), so a typed row can reproduce any
/// untyped one exactly.
pub trait TableRow: Serialize + DeserializeOwned {
    /// The result table the rows belong to.
    const TABLE: &'static str;
    /// The fields that identify a row (the others are metrics).
    const KEYS: &'static [&'static str];
}

/// A row that does not fit its [`TableRow`] type.
#[derive(Debug, thiserror::Error)]
#[error("a `{table}` row{}: {message}", stage.as_ref().map(|s| format!(" of stage `{s}`")).unwrap_or_default())]
pub struct RowError {
    pub table: String,
    /// The stage the row came from, when known.
    pub stage: Option<String>,
    pub message: String,
}

impl Row {
    /// The untyped form of `row`.
    pub fn of<T: TableRow>(row: &T) -> Result<Row, RowError> {
        let err = |message: String| RowError {
            table: T::TABLE.to_string(),
            stage: None,
            message,
        };
        let fields = match serde_json::to_value(row) {
            Ok(Value::Object(f)) => f,
            Ok(v) => return Err(err(format!("serialises to {v}, not an object"))),
            Err(e) => return Err(err(e.to_string())),
        };
        let (mut keys, mut metrics) = (BTreeMap::new(), BTreeMap::new());
        for (k, v) in fields {
            if T::KEYS.contains(&k.as_str()) {
                keys.insert(k, v);
            } else {
                metrics.insert(k, v);
            }
        }
        Ok(Row {
            table: T::TABLE.to_string(),
            keys,
            metrics,
        })
    }

    /// This row as a `T`: its keys and metrics together must deserialise into `T`.
    pub fn parse<T: TableRow>(&self) -> Result<T, RowError> {
        let err = |message: String| RowError {
            table: self.table.clone(),
            stage: None,
            message,
        };
        if self.table != T::TABLE {
            return Err(err(format!("read as a `{}` row", T::TABLE)));
        }
        let mut all = serde_json::Map::new();
        for (k, v) in self.keys.iter().chain(&self.metrics) {
            if all.insert(k.clone(), v.clone()).is_some() {
                return Err(err(format!("`{k}` is both a key and a metric")));
            }
        }
        serde_json::from_value(Value::Object(all)).map_err(|e| err(e.to_string()))
    }
}

/// What a stage sees of one of its dependencies.
#[derive(Debug, Clone)]
pub struct DepOutput {
    pub id: String,
    pub kind: String,
    /// Directory holding the dependency's output files (read-only).
    pub dir: PathBuf,
    pub rows: Vec<Row>,
}

/// Everything a stage needs while running.
pub struct StageContext {
    pub id: String,
    /// Write outputs here; they are published atomically when `run` returns `Ok`.
    pub out_dir: PathBuf,
    /// Persistent scratch space of this stage's cache key (`<cache>/scratch/<key>`), not
    /// created in advance. It survives a failed or killed run, so a long stage can keep
    /// checkpoints here and resume; it is removed once the entry is committed, and by
    /// `--force`.
    pub scratch_dir: PathBuf,
    /// Files shared by every stage of every run on this cache (`<cache>/shared`), not created
    /// in advance: derived data a stage can rebuild from its params alone (a decoded data
    /// set), named by the content of what it is derived from. Writers must create each file
    /// atomically (write beside it, rename); `clean --all` removes the directory.
    pub shared_dir: PathBuf,
    /// Dependencies by stage id.
    pub deps: BTreeMap<String, DepOutput>,
    pub progress: Progress,
    /// Threads this stage may use (it already runs inside a rayon pool of this size).
    pub threads: usize,
    /// Seed derived from the pipeline seed and the stage id.
    pub seed: u64,
    /// The profile being run.
    pub profile: String,
    /// Where to compute: `cpu`, `cuda` or `cuda:N` (the profile's `device`, or `--device`).
    pub device: String,
    /// `HEAD` of the git work tree holding the pipeline file, if it is one (the commit the
    /// run's manifests record), for provenance in reports.
    pub git_commit: Option<String>,
    pub(crate) rows: Vec<Row>,
}

impl DepOutput {
    /// The dependency's rows of `T`'s table, typed; an error names the stage and the field.
    pub fn rows_of<T: TableRow>(&self) -> Result<Vec<T>, RowError> {
        self.rows
            .iter()
            .filter(|r| r.table == T::TABLE)
            .map(|r| {
                r.parse().map_err(|e| RowError {
                    stage: Some(self.id.clone()),
                    ..e
                })
            })
            .collect()
    }
}

impl std::fmt::Debug for StageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageContext")
            .field("id", &self.id)
            .field("out_dir", &self.out_dir)
            .finish_non_exhaustive()
    }
}

impl StageContext {
    /// Records a result row for `table`.
    pub fn emit(
        &mut self,
        table: &str,
        keys: BTreeMap<String, Value>,
        metrics: BTreeMap<String, Value>,
    ) {
        self.rows.push(Row {
            table: table.to_string(),
            keys,
            metrics,
        });
    }

    /// Records a typed result row (see [`TableRow`]).
    pub fn emit_row<T: TableRow>(&mut self, row: &T) -> Result<(), RowError> {
        self.rows.push(Row::of(row)?);
        Ok(())
    }

    /// The dependencies of stage kind `K`, in id order.
    pub fn deps_of<K: StageKind>(&self) -> impl Iterator<Item = &DepOutput> {
        self.deps.values().filter(|d| d.kind == K::NAME)
    }

    /// A path inside the output directory.
    pub fn out(&self, name: impl AsRef<Path>) -> PathBuf {
        self.out_dir.join(name)
    }
}

/// A stage kind as written by its author.
pub trait StageKind: Send + Sync + 'static {
    /// Typed params; unknown fields are rejected.
    type Params: DeserializeOwned + Serialize + Send + Sync;
    /// The name used in `pipeline.toml`.
    const NAME: &'static str;
    /// Bump when the outputs change for the same params: cached entries become stale.
    const VERSION: &'static str;
    /// Produces outputs in `ctx.out_dir` and rows via `ctx.emit`.
    fn run(&self, params: &Self::Params, ctx: &mut StageContext) -> Result<(), BoxError>;
}

/// Object-safe form of [`StageKind`].
pub trait DynKind: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    /// Checks params and returns them in canonical form (defaults filled in).
    fn canonical(&self, params: &Value) -> Result<Value, String>;
    fn run(&self, params: &Value, ctx: &mut StageContext) -> Result<(), BoxError>;
}

struct Erased<K>(K);

/// Reports the first key present in `input` but absent from `canon`.
fn unknown_key(input: &Value, canon: &Value, prefix: &str) -> Option<String> {
    match (input, canon) {
        (Value::Object(i), Value::Object(c)) => i.iter().find_map(|(k, v)| {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match c.get(k) {
                None => Some(path),
                Some(cv) => unknown_key(v, cv, &path),
            }
        }),
        _ => None,
    }
}

impl<K: StageKind> DynKind for Erased<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn version(&self) -> &'static str {
        K::VERSION
    }
    fn canonical(&self, params: &Value) -> Result<Value, String> {
        let typed: K::Params = serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        let canon = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
        if let Some(k) = unknown_key(params, &canon, "") {
            return Err(format!("unknown field `{k}`"));
        }
        Ok(canon)
    }
    fn run(&self, params: &Value, ctx: &mut StageContext) -> Result<(), BoxError> {
        let typed: K::Params = serde_json::from_value(params.clone())?;
        self.0.run(&typed, ctx)
    }
}

/// The stage kinds a runner knows.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn DynKind>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// A registry with the built-in utility kinds (`noop`, `echo`, `sleep`, `fail`).
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        r.register(Noop);
        r.register(Echo);
        r.register(Sleep);
        r.register(Fail);
        r
    }

    /// Adds a kind; a later registration under the same name replaces the earlier.
    pub fn register<K: StageKind>(&mut self, kind: K) {
        self.kinds.insert(K::NAME, Arc::new(Erased(kind)));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &&'static str> {
        self.kinds.keys()
    }
}

/// Does nothing; `value` only feeds the cache key.
#[derive(Debug)]
pub struct Noop;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {
    #[serde(default)]
    pub value: Value,
}

impl StageKind for Noop {
    type Params = NoopParams;
    const NAME: &'static str = "noop";
    const VERSION: &'static str = "1";
    fn run(&self, _: &NoopParams, _: &mut StageContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Writes `text` plus its dependencies' `out.txt` into `out.txt`, and one row.
#[derive(Debug)]
pub struct Echo;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoParams {
    pub text: String,
    #[serde(default)]
    pub score: f64,
}

impl StageKind for Echo {
    type Params = EchoParams;
    const NAME: &'static str = "echo";
    const VERSION: &'static str = "1";
    fn run(&self, p: &EchoParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let mut text = p.text.clone();
        for dep in ctx.deps.values() {
            let s = fs_err::read_to_string(dep.dir.join("out.txt"))?;
            text.push('\n');
            text.push_str(&s);
        }
        fs_err::write(ctx.out("out.txt"), &text)?;
        let keys = BTreeMap::from([("text".to_string(), Value::from(p.text.clone()))]);
        let metrics = BTreeMap::from([
            ("len".to_string(), Value::from(text.len())),
            ("score".to_string(), Value::from(p.score)),
        ]);
        ctx.emit("echo", keys, metrics);
        Ok(())
    }
}

/// Sleeps `ms` milliseconds in `steps` steps, reporting progress; writes `out.txt`.
#[derive(Debug)]
pub struct Sleep;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepParams {
    pub ms: u64,
    #[serde(default = "ten")]
    pub steps: u64,
}

fn ten() -> u64 {
    10
}

impl StageKind for Sleep {
    type Params = SleepParams;
    const NAME: &'static str = "sleep";
    const VERSION: &'static str = "1";
    fn run(&self, p: &SleepParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let steps = p.steps.max(1);
        ctx.progress.set_total(steps, "steps");
        for _ in 0..steps {
            std::thread::sleep(std::time::Duration::from_millis(p.ms / steps));
            ctx.progress.inc(1);
        }
        fs_err::write(ctx.out("out.txt"), format!("slept {} ms", p.ms))?;
        Ok(())
    }
}

/// Always fails with `message`.
#[derive(Debug)]
pub struct Fail;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailParams {
    pub message: String,
}

impl StageKind for Fail {
    type Params = FailParams;
    const NAME: &'static str = "fail";
    const VERSION: &'static str = "1";
    fn run(&self, p: &FailParams, _: &mut StageContext) -> Result<(), BoxError> {
        Err(p.message.clone().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Score {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        score: f64,
        note: Option<String>,
    }

    impl TableRow for Score {
        const TABLE: &'static str = "scores";
        const KEYS: &'static [&'static str] = &["name", "tag"];
    }

    #[test]
    fn typed_rows_split_into_keys_and_metrics_and_read_back() {
        let s = Score {
            name: "a".into(),
            tag: None,
            score: 1.5,
            note: None,
        };
        let row = Row::of(&s).unwrap();
        assert_eq!(row.table, "scores");
        assert_eq!(
            serde_json::to_value(&row.keys).unwrap(),
            serde_json::json!({"name": "a"})
        );
        assert_eq!(
            serde_json::to_value(&row.metrics).unwrap(),
            serde_json::json!({"score": 1.5, "note": null})
        );
        assert_eq!(row.parse::<Score>().unwrap(), s);
        let dep = DepOutput {
            id: "stage-x".into(),
            kind: "k".into(),
            dir: PathBuf::new(),
            rows: vec![
                row.clone(),
                Row {
                    table: "other".into(),
                    keys: BTreeMap::new(),
                    metrics: BTreeMap::new(),
                },
            ],
        };
        assert_eq!(dep.rows_of::<Score>().unwrap(), vec![s]);
        let mut bad = row;
        bad.metrics.remove("score");
        let dep = DepOutput {
            rows: vec![bad.clone()],
            ..dep
        };
        let e = dep.rows_of::<Score>().unwrap_err().to_string();
        assert!(
            e.contains("`scores` row of stage `stage-x`") && e.contains("missing field `score`"),
            "{e}"
        );
        bad.table = "other".into();
        let e = bad.parse::<Score>().unwrap_err().to_string();
        assert!(e.contains("read as a `scores` row"), "{e}");
    }

    #[test]
    fn canonical_fills_defaults_and_rejects_unknown() {
        let r = Registry::with_builtins();
        let k = r.get("sleep").unwrap();
        let c = k.canonical(&serde_json::json!({"ms": 5})).unwrap();
        assert_eq!(c, serde_json::json!({"ms": 5, "steps": 10}));
        let e = k
            .canonical(&serde_json::json!({"ms": 5, "msx": 1}))
            .unwrap_err();
        assert!(e.contains("msx"), "{e}");
        let e = k.canonical(&serde_json::json!({"ms": "x"})).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
    }
}

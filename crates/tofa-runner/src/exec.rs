//! Executes a plan: keys computed as dependencies finish, cache hits reused, misses run
//! concurrently up to `jobs`, each inside a rayon pool of its thread budget.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::cache::{Cache, Entry, FORMAT, KeyInput, Lookup, Manifest, Pointer};
use crate::error::{BoxError, Error, Result, chain};
use crate::kind::{DepOutput, DynKind, Registry, StageContext};
use crate::progress::Display;
use crate::scheduler::{Decision, Scheduler};
use crate::spec::Plan;

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages run at once.
    pub jobs: usize,
    /// Threads shared by running stages.
    pub threads: usize,
    /// Stage ids or globs to rebuild even when cached.
    pub force: Vec<String>,
    pub display: Display,
}

impl Default for RunOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        RunOptions {
            jobs: 1,
            threads,
            force: Vec::new(),
            display: Display::Hidden,
        }
    }
}

/// What happened to a stage in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Cached,
    Ran { wall_s: f64, reason: String },
    Failed { error: String },
    Skipped { because: String },
}

/// One stage's line in a run record.
#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    pub id: String,
    pub key: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunReport {
    pub records: Vec<StageRecord>,
    /// Entries of stages that completed, by plan index.
    pub entries: BTreeMap<usize, Entry>,
    pub wall_s: f64,
}

impl RunReport {
    pub fn executed(&self) -> Vec<&str> {
        self.records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ran { .. }))
            .map(|r| r.id.as_str())
            .collect()
    }

    /// An error listing every failed stage with its chain, if any failed.
    pub fn failure(&self) -> Option<Error> {
        let failed: Vec<String> = self
            .records
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed { error } => Some(format!("stage `{}` failed: {error}", r.id)),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            None
        } else {
            let skipped = self
                .records
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Skipped { .. }))
                .count();
            Some(Error::StagesFailed(format!(
                "{}{}",
                failed.join("\n"),
                if skipped > 0 {
                    format!("\n{skipped} dependent stage(s) skipped")
                } else {
                    String::new()
                }
            )))
        }
    }
}

/// A stage's state without running anything.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Cached { key: String },
    Missing { reason: String },
    Stale { reason: String },
}

/// A ready stage, resolved against the cache.
#[derive(Debug)]
pub(crate) enum Resolved {
    Cached(Box<Entry>, String),
    Build(Build),
}

/// A stage to build: its key input and key, whether forced, and why it runs.
#[derive(Debug)]
pub(crate) struct Build {
    pub(crate) input: KeyInput,
    pub(crate) key: String,
    pub(crate) forced: bool,
    pub(crate) reason: String,
}

/// A finished build, sent back by the thread that ran it.
struct Completion {
    stage: usize,
    slot: usize,
    build: Build,
    result: std::result::Result<(Entry, bool, f64), String>,
}

/// Binds a plan to kinds and a cache.
pub struct Runner<'a> {
    pub plan: &'a Plan,
    pub cache: Cache,
    kinds: Vec<Arc<dyn DynKind>>,
    params: Vec<Value>,
    git_commit: Option<String>,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("profile", &self.plan.profile)
            .finish_non_exhaustive()
    }
}

/// RFC 3339 UTC time of a `SystemTime`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        d.subsec_millis()
    )
}

fn git_commit(dir: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn diff_reason(old: &KeyInput, new: &KeyInput) -> String {
    if old.kind != new.kind || old.kind_version != new.kind_version {
        return format!(
            "kind changed: {} v{} -> {} v{}",
            old.kind, old.kind_version, new.kind, new.kind_version
        );
    }
    if old.params != new.params {
        let (Value::Object(a), Value::Object(b)) = (&old.params, &new.params) else {
            return "params changed".into();
        };
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let changed: Vec<String> = keys
            .into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                format!(
                    "{k}: {} -> {}",
                    a.get(k).map_or("-".into(), Value::to_string),
                    b.get(k).map_or("-".into(), Value::to_string)
                )
            })
            .collect();
        return format!("params changed ({})", changed.join(", "));
    }
    if old.seed != new.seed {
        return format!("seed changed: {} -> {}", old.seed, new.seed);
    }
    if old.deps != new.deps {
        let changed: Vec<&String> = new
            .deps
            .iter()
            .filter(|(k, v)| old.deps.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(old.deps.keys().filter(|k| !new.deps.contains_key(*k)))
            .collect();
        return format!(
            "dependency output changed: {}",
            changed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    "entry missing or corrupt".into()
}

impl<'a> Runner<'a> {
    /// Records that stage `id` of this profile resolved to `key`.
    pub(crate) fn point(&self, id: &str, key: &str, input: KeyInput) -> Result<()> {
        let p = Pointer {
            key: key.to_owned(),
            input,
        };
        self.cache.write_pointer(&self.plan.profile, id, &p)
    }

    /// Checks every stage's kind and params; errors name the file, line, stage and field.
    pub fn new(plan: &'a Plan, registry: &Registry, cache: Cache) -> Result<Self> {
        let mut kinds = Vec::with_capacity(plan.stages.len());
        let mut params = Vec::with_capacity(plan.stages.len());
        for s in &plan.stages {
            let spec_err = |message: String| Error::Spec {
                path: s.file.clone(),
                line: s.line,
                message,
            };
            let kind = registry.get(&s.kind).ok_or_else(|| {
                spec_err(format!(
                    "stage `{}`: unknown kind `{}` (known: {})",
                    s.id,
                    s.kind,
                    registry.names().copied().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let canon = kind.canonical(&s.params).map_err(|m| {
                spec_err(format!(
                    "stage `{}` (kind `{}`, profile `{}`): invalid params: {m}",
                    s.id, s.kind, plan.profile
                ))
            })?;
            kinds.push(kind.clone());
            params.push(canon);
        }
        let dir = plan.path.parent().unwrap_or(std::path::Path::new("."));
        Ok(Runner {
            plan,
            kinds,
            params,
            git_commit: git_commit(dir),
            cache,
        })
    }

    /// Canonical params of stage `i`.
    pub fn params(&self, i: usize) -> &Value {
        &self.params[i]
    }

    pub(crate) fn key_input(&self, i: usize, entries: &BTreeMap<usize, Entry>) -> Option<KeyInput> {
        let s = &self.plan.stages[i];
        let mut deps = BTreeMap::new();
        for &d in &s.deps {
            deps.insert(
                self.plan.stages[d].id.clone(),
                entries.get(&d)?.manifest.output_digest.clone(),
            );
        }
        Some(KeyInput {
            format: FORMAT,
            kind: s.kind.clone(),
            kind_version: self.kinds[i].version().to_string(),
            params: self.params[i].clone(),
            seed: s.seed,
            deps,
            device: self.plan.device.clone().filter(|d| d != "cpu"),
            numerics: self.plan.numerics.clone(),
        })
    }

    pub(crate) fn forced(&self, id: &str, force: &[String]) -> bool {
        force.iter().any(|f| {
            f == id
                || glob::Pattern::new(f).is_ok_and(|p| {
                    p.matches_with(
                        id,
                        glob::MatchOptions {
                            require_literal_separator: true,
                            ..Default::default()
                        },
                    )
                })
        })
    }

    /// Resolves a ready stage's key and looks it up: a cache hit (pointer recorded), or what
    /// to build and why. A corrupt entry is reported through `display` and rebuilt.
    pub(crate) fn resolve(
        &self,
        i: usize,
        entries: &BTreeMap<usize, Entry>,
        force: &[String],
        display: &Display,
    ) -> Result<Resolved> {
        let s = &self.plan.stages[i];
        let input = self
            .key_input(i, entries)
            .expect("a ready stage's dependencies have entries");
        let key = input.key();
        let forced = self.forced(&s.id, force);
        if forced {
            return Ok(Resolved::Build(Build {
                input,
                key,
                forced,
                reason: "forced".into(),
            }));
        }
        let reason = match self.cache.lookup(&key)? {
            Lookup::Hit(e) => {
                self.point(&s.id, &key, input)?;
                return Ok(Resolved::Cached(e, key));
            }
            Lookup::Corrupt(why) => {
                display.alert(&format!(
                    "warn  {}: cache entry {key} is corrupt ({why}); rebuilding",
                    s.id
                ));
                format!("corrupt entry rebuilt: {why}")
            }
            Lookup::Miss => match self.cache.read_pointer(&self.plan.profile, &s.id) {
                Some(p) => diff_reason(&p.input, &input),
                None => "never built".into(),
            },
        };
        Ok(Resolved::Build(Build {
            input,
            key,
            forced,
            reason,
        }))
    }

    /// Takes the scheduler's decisions until none come (a cache hit releases its users at
    /// once): skips are reported, cache hits completed, each stage to build is handed to
    /// `build`. `tick` is called for every stage settled here. Both executors share it.
    pub(crate) fn drain_decisions(
        &self,
        sched: &mut Scheduler<'_>,
        entries: &mut BTreeMap<usize, Entry>,
        opts: &RunOptions,
        tick: &dyn Fn(),
        mut build: impl FnMut(usize, Build) -> Result<()>,
    ) -> Result<()> {
        loop {
            let decisions = sched.decisions();
            if decisions.is_empty() {
                return Ok(());
            }
            for d in decisions {
                match d {
                    Decision::Skip { stage, because } => {
                        opts.display
                            .alert(&format!("skip  {} ({because})", self.plan.stages[stage].id));
                        tick();
                    }
                    Decision::Start(i) => {
                        match self.resolve(i, entries, &opts.force, &opts.display)? {
                            Resolved::Cached(e, key) => {
                                entries.insert(i, *e);
                                sched.complete(i, Some(key), Outcome::Cached);
                                tick();
                            }
                            Resolved::Build(b) => build(i, b)?,
                        }
                    }
                }
            }
        }
    }

    /// Reports each selected stage's state without running or changing anything.
    pub fn status(&self, selection: &[usize]) -> Result<Vec<(usize, State)>> {
        let mut entries = BTreeMap::new();
        let mut out = Vec::new();
        for &i in selection {
            let s = &self.plan.stages[i];
            let state = match self.key_input(i, &entries) {
                None => {
                    let dep = s
                        .deps
                        .iter()
                        .find(|d| !entries.contains_key(*d))
                        .map_or("?", |d| self.plan.stages[*d].id.as_str());
                    State::Stale {
                        reason: format!("dependency `{dep}` will run"),
                    }
                }
                Some(input) => {
                    let key = input.key();
                    let dir = self.cache.entry_dir(&key);
                    let ptr = self.cache.read_pointer(&self.plan.profile, &s.id);
                    if dir.join("manifest.json").exists() {
                        match self.cache.peek(&key) {
                            Lookup::Hit(e) => {
                                entries.insert(i, *e);
                                State::Cached { key }
                            }
                            _ => State::Stale {
                                reason: "cache entry is corrupt".into(),
                            },
                        }
                    } else {
                        match ptr {
                            None => State::Missing {
                                reason: "never built".into(),
                            },
                            Some(p) => State::Stale {
                                reason: diff_reason(&p.input, &input),
                            },
                        }
                    }
                }
            };
            out.push((i, state));
        }
        Ok(out)
    }

    /// Runs the selected stages (indices in topological order).
    pub fn run(&self, selection: &[usize], opts: &RunOptions) -> Result<RunReport> {
        let _cache_lock = self.cache.lock_cache(false)?;
        let swept = self.cache.sweep_tmp();
        if swept > 0 {
            opts.display.detail(&format!(
                "swept {swept} temp builds of dead processes on host {}",
                self.cache.host()
            ));
        }
        let start = Instant::now();
        let jobs = opts.jobs.max(1);
        let threads_per = (opts.threads / jobs).max(1);
        let display = &opts.display;
        let overall = display.overall(selection.len() as u64);
        let tick = || {
            if let Some(b) = &overall {
                b.inc(1);
            }
        };
        let mut sched = Scheduler::new(self.plan, selection);
        let mut entries: BTreeMap<usize, Entry> = BTreeMap::new();
        // Ready stages that must be built, resolved once, waiting for a free job slot (looking
        // them up again after every completion made a wide DAG quadratic in cache look-ups).
        let mut pending: BTreeMap<usize, Build> = BTreeMap::new();

        // One pool per job slot, reused by the stages that take the slot.
        let mut pools = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads_per)
                .build()
                .map_err(|e| Error::StagesFailed(format!("cannot start a thread pool: {e}")))?;
            pools.push(Arc::new(pool));
        }
        let mut free_slots: Vec<usize> = (0..jobs).rev().collect();
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::channel::<Completion>();
            loop {
                self.drain_decisions(&mut sched, &mut entries, opts, &tick, |i, b| {
                    pending.insert(i, b);
                    Ok(())
                })?;
                while !free_slots.is_empty() {
                    let Some((i, b)) = pending.pop_first() else {
                        break;
                    };
                    let slot = free_slots.pop().expect("a free slot");
                    let s = &self.plan.stages[i];
                    display.line(&format!("run   {} ({})", s.id, b.reason));
                    display.detail(&format!("      {} key {}", s.id, b.key));
                    let deps = self.dep_outputs(i, &entries);
                    let tx = tx.clone();
                    let pool = Arc::clone(&pools[slot]);
                    scope.spawn(move || {
                        let result = self.build(i, &b, deps, &pool, display);
                        let _ = tx.send(Completion {
                            stage: i,
                            slot,
                            build: b,
                            result,
                        });
                    });
                }
                if free_slots.len() == jobs {
                    // nothing running, nothing ready
                    break;
                }
                let Ok(c) = rx.recv() else {
                    break;
                };
                free_slots.push(c.slot);
                tick();
                let (i, s) = (c.stage, &self.plan.stages[c.stage]);
                match c.result {
                    Ok((entry, built, wall_s)) => {
                        let key = entry.manifest.key.clone();
                        self.point(&s.id, &key, c.build.input)?;
                        let outcome = if built {
                            display.line(&format!("done  {} in {wall_s:.2}s", s.id));
                            Outcome::Ran {
                                wall_s,
                                reason: c.build.reason,
                            }
                        } else {
                            Outcome::Cached
                        };
                        entries.insert(i, entry);
                        sched.complete(i, Some(key), outcome);
                    }
                    Err(error) => {
                        display.alert(&format!("FAIL  {}: {error}", s.id));
                        sched.complete(i, Some(c.build.key), Outcome::Failed { error });
                    }
                }
            }
            Ok(())
        })?;
        if let Some(b) = overall {
            b.finish_and_clear();
        }
        Ok(RunReport {
            records: sched.into_records(),
            entries,
            wall_s: start.elapsed().as_secs_f64(),
        })
    }

    /// The outputs of stage `i`'s dependencies, by id, for its [`StageContext`].
    fn dep_outputs(
        &self,
        i: usize,
        entries: &BTreeMap<usize, Entry>,
    ) -> BTreeMap<String, DepOutput> {
        self.plan.stages[i]
            .deps
            .iter()
            .filter_map(|d| {
                let e = entries.get(d)?;
                let ds = &self.plan.stages[*d];
                Some((
                    ds.id.clone(),
                    DepOutput {
                        id: ds.id.clone(),
                        kind: ds.kind.clone(),
                        dir: e.out_dir(),
                        rows: e.rows.clone(),
                    },
                ))
            })
            .collect()
    }

    /// Builds stage `i` as `b` says, on `pool`, with its dependencies' outputs `deps`.
    fn build(
        &self,
        i: usize,
        b: &Build,
        deps: BTreeMap<String, DepOutput>,
        pool: &rayon::ThreadPool,
        display: &Display,
    ) -> std::result::Result<(Entry, bool, f64), String> {
        let (key, input, forced) = (b.key.as_str(), &b.input, b.forced);
        let s = &self.plan.stages[i];
        let building = self
            .cache
            .begin(key, || {
                display.line(&format!("wait  {}: another runner is building it", s.id))
            })
            .map_err(|e| chain(&e))?;
        if forced {
            let dir = self.cache.entry_dir(key);
            if dir.exists() {
                let trash = building.dir.with_extension("old");
                if std::fs::rename(&dir, &trash).is_ok() {
                    let _ = std::fs::remove_dir_all(&trash);
                }
            }
        } else if let Ok(Lookup::Hit(e)) = self.cache.lookup(key) {
            // Another runner built it while we waited for the lock.
            self.cache.abort(building);
            return Ok((*e, false, 0.0));
        }
        let progress = display.stage(&s.id);
        let scratch_dir = self.cache.scratch_dir(key);
        if forced {
            let _ = std::fs::remove_dir_all(&scratch_dir);
        }
        let mut ctx = StageContext {
            id: s.id.clone(),
            out_dir: building.out_dir.clone(),
            scratch_dir: scratch_dir.clone(),
            shared_dir: self.cache.shared_dir(),
            deps,
            progress: progress.clone(),
            threads: pool.current_num_threads(),
            seed: s.seed,
            profile: self.plan.profile.clone(),
            device: self.plan.device.clone().unwrap_or_else(|| "cpu".into()),
            git_commit: self.git_commit.clone(),
            rows: Vec::new(),
        };
        let started = SystemTime::now();
        let t0 = Instant::now();
        let kind = &self.kinds[i];
        let params = &self.params[i];
        let result: std::result::Result<(), BoxError> = pool.install(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.run(params, &mut ctx)))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    Err(format!("panicked: {msg}").into())
                })
        });
        progress.finish();
        let wall_s = t0.elapsed().as_secs_f64();
        if let Err(e) = result {
            self.cache.abort(building);
            return Err(chain(&*e));
        }
        let manifest = Manifest {
            key: key.to_string(),
            stage: s.id.clone(),
            input: input.clone(),
            outputs: Vec::new(),
            rows_blake3: String::new(),
            output_digest: String::new(),
            started: rfc3339(started),
            ended: rfc3339(SystemTime::now()),
            wall_s,
            host: self.cache.host().to_string(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: self.git_commit.clone(),
        };
        let rows = std::mem::take(&mut ctx.rows);
        let entry = self
            .cache
            .commit(building, manifest, &rows)
            .map_err(|e| chain(&e))?;
        // The entry is in place: resume state is no longer needed.
        let _ = std::fs::remove_dir_all(&scratch_dir);
        Ok((entry, true, wall_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instant() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000Z");
    }
}

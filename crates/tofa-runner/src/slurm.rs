//! The Slurm executor: each stage that must run becomes an `sbatch` job running
//! `tofa-pipeline exec-stage ID` against the shared cache.
//!
//! The coordinator (this process) walks the DAG as the in-process runner does: a stage is
//! submitted once its dependencies are cached, so its key (which hashes their output
//! digests) is known, and a stage whose key is cached is never submitted. A job's success is
//! its cache entry: when the job leaves the queue, the entry is there or the stage failed
//! (the error is the tail of the job's log). Job ids and states are written to
//! `runs/slurm-<profile>.json` under the cache for `tofa-pipeline status`; an interrupt
//! (Ctrl-C) cancels every job this run submitted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::Lookup;
use crate::error::{Error, Result};
use crate::exec::{Build, Outcome, RunOptions, RunReport, Runner};
use crate::scheduler::Scheduler;
use crate::spec::Resources;

/// How stages are submitted.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The command a job runs, up to the subcommand: the executable and its global options
    /// (`-f FILE -p PROFILE --cache-dir DIR --set ...`, absolute paths).
    pub command: Vec<String>,
    /// The job's working directory.
    pub workdir: PathBuf,
    /// Resources of stages whose profile names none.
    pub defaults: Resources,
    /// How often the queue is polled.
    pub poll: Duration,
}

/// One submitted job, as `status` reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: String,
    pub key: String,
    /// The last state seen: `PENDING`, `RUNNING`, ... or `DONE` / `FAILED` once it left the
    /// queue (with or without its cache entry), `CANCELLED` after an interrupt.
    pub state: String,
    pub log: PathBuf,
}

/// A job in the queue, and the build it stands for.
struct Active {
    job: String,
    build: Build,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Quotes one word for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn slurm_err(message: impl Into<String>) -> Error {
    Error::Slurm(message.into())
}

fn run_tool(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| slurm_err(format!("running {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(slurm_err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Job states of the given ids still in the queue (`squeue`).
fn queue_states(ids: &[&str]) -> Result<BTreeMap<String, String>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let text = run_tool(
        Command::new("squeue")
            .args(["-h", "-o", "%i %T", "-j"])
            .arg(ids.join(",")),
    )
    .or_else(|e| {
        // squeue exits non-zero when every id has left the queue (and is forgotten)
        if e.to_string().contains("Invalid job id") {
            Ok(String::new())
        } else {
            Err(e)
        }
    })?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (id, st) = l.split_once(' ')?;
            Some((id.to_string(), st.to_string()))
        })
        .collect())
}

/// The job table of the last Slurm run of `profile` (for `status`).
pub fn read_jobs(cache_root: &Path, profile: &str) -> BTreeMap<String, JobRecord> {
    std::fs::read(jobs_path(cache_root, profile))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Refreshes the states of jobs still in the queue.
pub fn refresh_states(jobs: &mut BTreeMap<String, JobRecord>) {
    let ids: Vec<&str> = jobs.values().map(|j| j.job.as_str()).collect();
    if let Ok(states) = queue_states(&ids) {
        for j in jobs.values_mut() {
            if let Some(st) = states.get(&j.job) {
                j.state = st.clone();
            }
        }
    }
}

fn jobs_path(cache_root: &Path, profile: &str) -> PathBuf {
    cache_root
        .join("runs")
        .join(format!("slurm-{profile}.json"))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Runner<'_> {
    /// Runs `selection` as Slurm jobs (see the module docs). The report is the in-process
    /// run's: records per stage, entries of those that completed.
    pub fn run_slurm(
        &self,
        selection: &[usize],
        opts: &RunOptions,
        slurm: &SlurmOptions,
    ) -> Result<RunReport> {
        // shared, as an in-process run holds it: `clean` waits for us
        let _cache_lock = self.cache.lock_cache(false)?;
        let start = Instant::now();
        let display = &opts.display;
        let logs = self.cache.root.join("slurm");
        std::fs::create_dir_all(&logs).map_err(|e| Error::io("create", &logs, e))?;
        // absolute: a job's log path must not depend on its working directory
        let logs = std::path::absolute(&logs).map_err(|e| Error::io("resolve", &logs, e))?;
        INTERRUPTED.store(false, Ordering::SeqCst);
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous = unsafe {
            libc::signal(
                libc::SIGINT,
                on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
        let overall = display.overall(selection.len() as u64);
        let tick = || {
            if let Some(b) = &overall {
                b.inc(1);
            }
        };
        let mut sched = Scheduler::new(self.plan, selection);
        let mut entries = BTreeMap::new();
        let mut jobs: BTreeMap<String, JobRecord> = BTreeMap::new();
        // Jobs in the queue, by plan index.
        let mut active: BTreeMap<usize, Active> = BTreeMap::new();
        let result = (|| -> Result<()> {
            loop {
                self.drain_decisions(&mut sched, &mut entries, opts, &tick, |i, b| {
                    let s = &self.plan.stages[i];
                    let res = slurm.defaults.overlay(&s.resources);
                    let log = logs.join(format!("{}.log", b.key));
                    let job = self.submit(i, b.forced, &res, &log, slurm)?;
                    display.line(&format!("run   {} ({}) as Slurm job {job}", s.id, b.reason));
                    display.detail(&format!("      {} key {}", s.id, b.key));
                    jobs.insert(
                        s.id.clone(),
                        JobRecord {
                            job: job.clone(),
                            key: b.key.clone(),
                            state: "PENDING".into(),
                            log,
                        },
                    );
                    active.insert(i, Active { job, build: b });
                    Ok(())
                })?;
                self.write_jobs(&jobs)?;
                if active.is_empty() {
                    break;
                }
                std::thread::sleep(slurm.poll);
                if INTERRUPTED.load(Ordering::SeqCst) {
                    let ids: Vec<String> = active.values().map(|a| a.job.clone()).collect();
                    let _ = Command::new("scancel").args(&ids).status();
                    for r in jobs.values_mut() {
                        if ids.contains(&r.job) {
                            r.state = "CANCELLED".into();
                        }
                    }
                    self.write_jobs(&jobs)?;
                    return Err(slurm_err(format!(
                        "interrupted: cancelled Slurm jobs {}",
                        ids.join(", ")
                    )));
                }
                let ids: Vec<&str> = active.values().map(|a| a.job.as_str()).collect();
                let states = queue_states(&ids)?;
                let left: Vec<usize> = active
                    .iter()
                    .filter(|(_, a)| !states.contains_key(&a.job))
                    .map(|(i, _)| *i)
                    .collect();
                for (i, a) in &active {
                    if let Some(st) = states.get(&a.job) {
                        jobs.get_mut(&self.plan.stages[*i].id)
                            .expect("recorded")
                            .state = st.clone();
                    }
                }
                for i in left {
                    let Active { job, build } = active.remove(&i).expect("active");
                    tick();
                    let Build {
                        key, input, reason, ..
                    } = build;
                    let id = &self.plan.stages[i].id;
                    let rec = jobs.get_mut(id).expect("recorded");
                    match self.cache.lookup(&key)? {
                        Lookup::Hit(e) => {
                            self.point(id, &key, input)?;
                            let wall_s = e.manifest.wall_s;
                            display.line(&format!("done  {id} in {wall_s:.2}s (Slurm job {job})"));
                            rec.state = "DONE".into();
                            entries.insert(i, *e);
                            sched.complete(i, Some(key), Outcome::Ran { wall_s, reason });
                        }
                        _ => {
                            rec.state = "FAILED".into();
                            let error = format!(
                                "Slurm job {job} ended without a cache entry; the end of {}:\n{}",
                                rec.log.display(),
                                tail(&rec.log, 8)
                            );
                            display.alert(&format!("FAIL  {id}: {error}"));
                            sched.complete(i, Some(key), Outcome::Failed { error });
                        }
                    }
                }
            }
            Ok(())
        })();
        // SAFETY: restores the handler found on entry.
        unsafe {
            libc::signal(libc::SIGINT, previous);
        }
        if let Some(b) = overall {
            b.finish_and_clear();
        }
        result?;
        debug_assert!(sched.finished());
        Ok(RunReport {
            records: sched.into_records(),
            entries,
            wall_s: start.elapsed().as_secs_f64(),
        })
    }

    fn submit(
        &self,
        i: usize,
        forced: bool,
        res: &Resources,
        log: &Path,
        slurm: &SlurmOptions,
    ) -> Result<String> {
        let s = &self.plan.stages[i];
        let cpus = res.cpus.unwrap_or(1);
        let mut words: Vec<String> = slurm.command.clone();
        words.extend([
            "exec-stage".to_string(),
            s.id.clone(),
            "--threads".into(),
            cpus.to_string(),
        ]);
        if forced {
            words.push("--force".into());
        }
        let wrap: Vec<String> = words.iter().map(|w| sh_quote(w)).collect();
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--job-name=tofa:{}", s.id))
            .arg(format!("--output={}", log.display()))
            .arg(format!("--chdir={}", slurm.workdir.display()))
            .arg(format!("--cpus-per-task={cpus}"));
        if let Some(m) = &res.mem {
            cmd.arg(format!("--mem={m}"));
        }
        if let Some(t) = &res.time {
            cmd.arg(format!("--time={t}"));
        }
        if let Some(p) = &res.partition {
            cmd.arg(format!("--partition={p}"));
        }
        cmd.arg(format!("--wrap={}", wrap.join(" ")));
        let out = run_tool(&mut cmd)?;
        // `--parsable` prints `id` or `id;cluster`
        let id = out.split(';').next().unwrap_or("").trim().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(slurm_err(format!(
                "sbatch printed `{out}` for stage `{}`, not a job id",
                s.id
            )));
        }
        Ok(id)
    }

    fn write_jobs(&self, jobs: &BTreeMap<String, JobRecord>) -> Result<()> {
        let path = jobs_path(&self.cache.root, &self.plan.profile);
        let bytes = serde_json::to_vec_pretty(jobs).map_err(|e| Error::Json {
            path: path.clone(),
            source: e,
        })?;
        crate::cache::write_atomic(&path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}

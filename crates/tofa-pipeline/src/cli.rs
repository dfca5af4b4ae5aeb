//! The command line: clap types, one function per subcommand.
//!
//! Exit status: 0 when everything asked for succeeded; 1 when a run, a stage or a comparison
//! failed (`run`, `exec-stage`, `diff --fail-above`); 2 for usage and input errors (unknown
//! flags, a malformed `pipeline.toml`, an unknown stage, a bad `--set`), found before any
//! work starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tofa_runner::cache::Cache;
use tofa_runner::exec::{Outcome, RunOptions, Runner, State};
use tofa_runner::kind::Registry;
use tofa_runner::progress::Display;
use tofa_runner::results::{TableDiff, Tables};
use tofa_runner::slurm::{JobRecord, SlurmOptions};
use tofa_runner::spec::{Override, Pipeline, Plan, Resources};
use tofa_select::device::DeviceBenchArgs;

/// Runs the TOFA paper's pipeline: a DAG of cached stages declared in pipeline.toml.
#[derive(Debug, Parser)]
#[command(name = "tofa-pipeline", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Global {
    /// The pipeline file.
    #[arg(long, short = 'f', global = true, default_value = "pipeline.toml")]
    file: PathBuf,
    /// Profile whose overrides apply (default: the file's default_profile).
    #[arg(long, short = 'p', global = true)]
    profile: Option<String>,
    /// Cache directory (default: the file's cache_dir, `.tofa-cache` beside it).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// Set a param, after the profile's: `[SCOPE:]PATH=VALUE`, SCOPE a stage kind, stage id
    /// or glob (none: every stage that has PATH), VALUE a TOML value. Part of the cache key
    /// like any param. Repeatable.
    #[arg(long = "set", global = true, value_name = "[SCOPE:]PATH=VALUE")]
    set: Vec<Override>,
    /// Where the stages compute: `cpu`, `cuda` or `cuda:N` (default: the profile's `device`,
    /// else the CPU). A device other than the CPU is part of every cache key.
    #[arg(long, global = true, value_name = "DEVICE")]
    device: Option<String>,
    /// Say more: plain log lines instead of bars, each stage's cache key.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Say less: warnings, failures and errors only.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
}

impl Global {
    fn display(&self) -> Display {
        Display::for_verbosity(if self.quiet {
            -1
        } else {
            self.verbose.min(1) as i8
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run targets, stages or globs (and what they depend on); nothing given runs everything.
    Run(RunArgs),
    /// Show each stage as cached, stale (and why) or missing.
    Status(StatusArgs),
    /// List profiles, targets and stages.
    List(ListArgs),
    /// Show a stage's resolved params, key and outputs.
    Show(ShowArgs),
    /// Compare result tables of two directories, or of a git revision against the working tree.
    Diff(DiffArgs),
    /// Remove cache entries no stage points to (all entries with --all).
    Clean(CleanArgs),
    /// Run one stage whose dependencies are cached, as a separate process (executor seam).
    ExecStage(ExecStageArgs),
    /// Measure one exported model in this (fresh) process and print JSON; the
    /// `device_bench` stage runs it.
    #[command(hide = true)]
    DeviceBench(DeviceBenchArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    selectors: Vec<String>,
    /// Stages to run at once (default: one per core; each gets threads / jobs threads).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Threads shared by running stages (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Rebuild these stages (ids or globs) even when cached.
    #[arg(long)]
    force: Vec<String>,
    /// Say what would run and why, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Results directory (default: the file's results_dir/<profile>).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Reports directory (default: the file's reports_dir/<profile>).
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Where stages run: in this process, or as Slurm jobs (`sbatch`) against the shared
    /// cache, each running `tofa-pipeline exec-stage ID`.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    executor: Executor,
    /// Slurm: partition of stages whose profile names none (`resources`).
    #[arg(long)]
    partition: Option<String>,
    /// Slurm: time limit of stages whose profile names none (e.g. `01:00:00`).
    #[arg(long)]
    time: Option<String>,
    /// Slurm: CPUs per stage (and its threads) where the profile names none [default: 1].
    #[arg(long)]
    cpus: Option<usize>,
    /// Slurm: memory per stage where the profile names none (e.g. `4G`).
    #[arg(long)]
    mem: Option<String>,
    /// Slurm: how often the queue is polled, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

#[derive(Debug, Args)]
struct StatusArgs {
    selectors: Vec<String>,
    /// One JSON array on stdout: `{id, kind, state, key?, reason?}` per stage.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// One JSON object on stdout: profile, profiles, targets and stages with their deps.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    stage: String,
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// Old and new results directories (or one, the new, with --against).
    dirs: Vec<PathBuf>,
    /// Git revision whose committed results are the old side.
    #[arg(long)]
    against: Option<String>,
    /// Exit 1 if any metric moved by more than this, or rows were added or removed.
    #[arg(long)]
    fail_above: Option<f64>,
}

#[derive(Debug, Args)]
struct CleanArgs {
    /// Remove every entry, the pointers, the checkpoints (scratch) and the shared decoded
    /// data sets, not only the entries no stage points to
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
struct ExecStageArgs {
    stage: String,
    /// Threads of the stage (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Rebuild it even when cached.
    #[arg(long)]
    force: bool,
}

/// Marks an error as a failed run (exit 1) rather than bad input (exit 2).
#[derive(Debug)]
struct RunFailed;

impl std::fmt::Display for RunFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run failed")
    }
}

impl std::error::Error for RunFailed {}

/// The exit status of an error `main` reports: 1 for a failed run, 2 for anything else.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<RunFailed>().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

struct Ctx {
    pipeline: Pipeline,
    plan: Plan,
    cache: Cache,
}

fn load(g: &Global) -> Result<Ctx> {
    let pipeline =
        Pipeline::load(&g.file).with_context(|| format!("loading {}", g.file.display()))?;
    let profile = g
        .profile
        .clone()
        .unwrap_or_else(|| pipeline.default_profile.clone());
    let mut plan = pipeline.plan(&profile)?;
    for o in &g.set {
        plan.apply_override(o)?;
    }
    if let Some(d) = &g.device {
        plan.device = Some(d.clone());
    }
    plan.numerics = tofa_nn::runtime::numerics_tag();
    if let Some(d) = &plan.device {
        // opened once here so that a bad or unavailable device fails before any stage runs
        tofa_nn::parse_device(d)
            .with_context(|| format!("the device of profile `{}` or --device", plan.profile))?;
    }
    let cache = Cache::new(
        g.cache_dir
            .clone()
            .unwrap_or_else(|| pipeline.cache_dir.clone()),
    );
    Ok(Ctx {
        pipeline,
        plan,
        cache,
    })
}

pub fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let registry = tofa_stages::registry();
    let g = &cli.global;
    match &cli.command {
        Command::Run(a) => run(g, &registry, a),
        Command::Status(a) => status(g, &registry, a),
        Command::List(a) => list(g, a),
        Command::Show(a) => show(g, &registry, a),
        Command::Diff(a) => diff(g, a),
        Command::Clean(a) => clean(g, a),
        Command::ExecStage(a) => exec_stage(g, &registry, a),
        Command::DeviceBench(a) => {
            tofa_select::device::device_bench_main(a)
                .context("device-bench")
                .context(RunFailed)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(g: &Global, registry: &Registry, a: &RunArgs) -> Result<ExitCode> {
    let c = load(g)?;
    let runner = Runner::new(&c.plan, registry, c.cache.clone())?;
    let sel = c.plan.select(&a.selectors)?;
    for f in &a.force {
        c.plan
            .select(std::slice::from_ref(f))
            .with_context(|| format!("--force {f}"))?;
    }
    if a.dry_run {
        return print_status(&runner, &sel, true, &BTreeMap::new());
    }
    let display = g.display();
    let opts = RunOptions {
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        threads: a.threads.unwrap_or_else(|| RunOptions::default().threads),
        force: a.force.clone(),
        display: display.clone(),
    };
    let slurm = match a.executor {
        Executor::Local => {
            if a.partition.is_some() || a.time.is_some() || a.cpus.is_some() || a.mem.is_some() {
                bail!("--partition, --time, --cpus and --mem need --executor slurm");
            }
            None
        }
        Executor::Slurm => Some(slurm_options(g, &c, a)?),
    };
    // From here on the work has started: whatever fails is a failed run.
    let report = match &slurm {
        None => runner.run(&sel, &opts),
        Some(so) => runner.run_slurm(&sel, &opts, so),
    }
    .context(RunFailed)?;
    publish_run(&c, a, &report, &display).context(RunFailed)?;
    if let Some(err) = report.failure() {
        return Err(anyhow::Error::new(err).context(RunFailed));
    }
    Ok(ExitCode::SUCCESS)
}

/// What a Slurm job runs: this executable with the run's file, profile, cache and `--set`s,
/// all absolute, so that the job finds them from any node that shares the paths.
fn slurm_options(g: &Global, c: &Ctx, a: &RunArgs) -> Result<SlurmOptions> {
    let abs =
        |p: &Path| std::path::absolute(p).with_context(|| format!("resolving {}", p.display()));
    let exe = std::env::current_exe().context("finding this executable")?;
    let file = abs(&g.file)?;
    let mut command = vec![
        exe.to_string_lossy().into_owned(),
        "-f".into(),
        file.to_string_lossy().into_owned(),
        "-p".into(),
        c.plan.profile.clone(),
        "--cache-dir".into(),
        abs(&c.cache.root)?.to_string_lossy().into_owned(),
    ];
    for o in &g.set {
        command.extend(["--set".into(), o.spec.clone()]);
    }
    if let Some(d) = &g.device {
        command.extend(["--device".into(), d.clone()]);
    }
    Ok(SlurmOptions {
        command,
        workdir: file
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        defaults: Resources {
            cpus: a.cpus,
            mem: a.mem.clone(),
            time: a.time.clone(),
            partition: a.partition.clone(),
        },
        poll: std::time::Duration::from_millis(a.poll_ms.max(10)),
    })
}

/// Writes result tables and reports of what completed (even when something failed), and the
/// run record.
fn publish_run(
    c: &Ctx,
    a: &RunArgs,
    report: &tofa_runner::exec::RunReport,
    display: &Display,
) -> Result<()> {
    let dir = a
        .results
        .clone()
        .unwrap_or_else(|| c.pipeline.results_dir.join(&c.plan.profile));
    let declared: BTreeSet<String> = c.plan.stages.iter().map(|s| s.id.clone()).collect();
    let mut tables = Tables::load(&dir)?;
    let ran: Vec<(String, Vec<_>)> = report
        .entries
        .iter()
        .map(|(i, e)| (c.plan.stages[*i].id.clone(), e.rows.clone()))
        .collect();
    let before = tables.clone();
    tables.upsert(&ran, &declared);
    if tables != before || !dir.join("tables.json").exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        tables
            .write(&dir)
            .with_context(|| format!("writing tables to {}", dir.display()))?;
    }
    // What completed stages wrote under `publish/` (reports, figures).
    let reports = a
        .reports
        .clone()
        .unwrap_or_else(|| c.pipeline.reports_dir.join(&c.plan.profile));
    let mut published = 0;
    for e in report.entries.values() {
        published += publish(&e.out_dir().join("publish"), &reports)
            .with_context(|| format!("publishing into {}", reports.display()))?;
    }
    if published > 0 {
        display.line(&format!(
            "updated {published} report files in {}",
            reports.display()
        ));
    }
    let record = serde_json::json!({
        "profile": c.plan.profile,
        "selectors": a.selectors,
        "wall_s": report.wall_s,
        "stages": report.records,
    });
    let runs = c.cache.root.join("runs");
    std::fs::create_dir_all(&runs).ok();
    std::fs::write(
        runs.join(format!("{}-last.json", c.plan.profile)),
        serde_json::to_vec_pretty(&record)?,
    )
    .context("writing run record")?;
    let count = |f: fn(&Outcome) -> bool| report.records.iter().filter(|r| f(&r.outcome)).count();
    let ran_n = count(|o| matches!(o, Outcome::Ran { .. }));
    let cached_n = count(|o| *o == Outcome::Cached);
    if display.shows_lines() {
        eprintln!(
            "{} stages: {ran_n} ran, {cached_n} cached in {:.2}s; results in {}",
            report.records.len(),
            report.wall_s,
            dir.display()
        );
    }
    Ok(())
}

fn status(g: &Global, registry: &Registry, a: &StatusArgs) -> Result<ExitCode> {
    let c = load(g)?;
    let runner = Runner::new(&c.plan, registry, c.cache.clone())?;
    let sel = c.plan.select(&a.selectors)?;
    let jobs = slurm_jobs(&c);
    if !a.json {
        return print_status(&runner, &sel, false, &jobs);
    }
    let rows: Vec<serde_json::Value> = runner
        .status(&sel)?
        .into_iter()
        .map(|(i, st)| {
            let s = &c.plan.stages[i];
            let mut v = serde_json::json!({ "id": s.id, "kind": s.kind });
            let (state, key, reason) = match st {
                State::Cached { key } => ("cached", Some(key), None),
                State::Missing { reason } => ("missing", None, Some(reason)),
                State::Stale { reason } => ("stale", None, Some(reason)),
            };
            v["state"] = state.into();
            if let Some(k) = key {
                v["key"] = k.into();
            }
            if let Some(r) = reason {
                v["reason"] = r.into();
            }
            if let Some(j) = jobs.get(&s.id) {
                v["slurm"] = serde_json::json!({ "job": j.job, "state": j.state, "log": j.log });
            }
            v
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(ExitCode::SUCCESS)
}

/// The jobs of the profile's last Slurm run, with the states of those still queued.
fn slurm_jobs(c: &Ctx) -> BTreeMap<String, JobRecord> {
    let mut jobs = tofa_runner::slurm::read_jobs(&c.cache.root, &c.plan.profile);
    if jobs
        .values()
        .any(|j| !matches!(j.state.as_str(), "DONE" | "FAILED" | "CANCELLED"))
    {
        tofa_runner::slurm::refresh_states(&mut jobs);
    }
    jobs
}

fn list(g: &Global, a: &ListArgs) -> Result<ExitCode> {
    let c = load(g)?;
    let deps_of = |s: &tofa_runner::spec::Stage| -> Vec<&str> {
        s.deps
            .iter()
            .map(|d| c.plan.stages[*d].id.as_str())
            .collect()
    };
    if a.json {
        let targets: serde_json::Map<String, serde_json::Value> = c
            .plan
            .targets()
            .map(|(name, entries)| (name.clone(), serde_json::json!(entries)))
            .collect();
        let stages: Vec<serde_json::Value> = c
            .plan
            .stages
            .iter()
            .map(|s| serde_json::json!({ "id": s.id, "kind": s.kind, "deps": deps_of(s) }))
            .collect();
        let v = serde_json::json!({
            "profile": c.plan.profile,
            "profiles": c.pipeline.profile_names(),
            "targets": targets,
            "stages": stages,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("profiles: {}", c.pipeline.profile_names().join(", "));
    println!("targets:");
    for (name, entries) in c.plan.targets() {
        println!("  {name}: {}", entries.join(" "));
    }
    println!(
        "stages ({}, profile {}):",
        c.plan.stages.len(),
        c.plan.profile
    );
    for s in &c.plan.stages {
        let deps = deps_of(s);
        println!(
            "  {} [{}]{}",
            s.id,
            s.kind,
            if deps.is_empty() {
                String::new()
            } else {
                format!(" <- {}", deps.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan index of stage `id`, or an error naming the profile.
fn stage_index(c: &Ctx, id: &str) -> Result<usize> {
    c.plan
        .index
        .get(id)
        .copied()
        .with_context(|| format!("no stage `{id}` in profile `{}`", c.plan.profile))
}

fn show(g: &Global, registry: &Registry, a: &ShowArgs) -> Result<ExitCode> {
    let stage = &a.stage;
    let c = load(g)?;
    let runner = Runner::new(&c.plan, registry, c.cache.clone())?;
    let i = stage_index(&c, stage)?;
    let s = &c.plan.stages[i];
    println!(
        "stage: {}\nkind: {}\ndeclared: {}:{}\nseed: {}",
        s.id,
        s.kind,
        s.file.display(),
        s.line,
        s.seed
    );
    println!(
        "params: {}",
        serde_json::to_string_pretty(runner.params(i))?
    );
    let sel = c.plan.select(std::slice::from_ref(stage))?;
    let states = runner.status(&sel)?;
    if let Some((_, st)) = states.iter().find(|(j, _)| *j == i) {
        match st {
            State::Cached { key } => {
                println!("state: cached\nkey: {key}");
                let m = std::fs::read_to_string(c.cache.entry_dir(key).join("manifest.json"))?;
                println!("manifest: {m}");
            }
            State::Missing { reason } => println!("state: missing ({reason})"),
            State::Stale { reason } => println!("state: stale ({reason})"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(g: &Global, a: &DiffArgs) -> Result<ExitCode> {
    let (old, new) = match (&a.against, a.dirs.as_slice()) {
        (Some(rev), []) => {
            let c = load(g)?;
            let dir = c.pipeline.results_dir.join(&c.plan.profile);
            (tables_at(rev, &dir)?, Tables::load(&dir)?)
        }
        (Some(rev), [dir]) => (tables_at(rev, dir)?, Tables::load(dir)?),
        (None, [a, b]) => (Tables::load(a)?, Tables::load(b)?),
        _ => bail!("diff takes OLD NEW directories, or --against REV [DIR]"),
    };
    let d = TableDiff::compute(&old, &new);
    print!("{}", d.render());
    if let Some(tol) = a.fail_above
        && (d.max_abs_delta() > tol || !d.added.is_empty() || !d.removed.is_empty())
    {
        eprintln!("differences above {tol}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn clean(g: &Global, a: &CleanArgs) -> Result<ExitCode> {
    let c = load(g)?;
    let _lock = c.cache.lock_cache(true)?;
    let keep: BTreeSet<String> = if a.all {
        BTreeSet::new()
    } else {
        c.cache.pointer_keys().into_iter().collect()
    };
    let mut removed = 0;
    for k in c.cache.keys() {
        if !keep.contains(&k) {
            std::fs::remove_dir_all(c.cache.entry_dir(&k))
                .with_context(|| format!("removing entry {k}"))?;
            removed += 1;
        }
    }
    let _ = std::fs::remove_dir_all(c.cache.root.join("tmp"));
    if a.all {
        let _ = std::fs::remove_dir_all(c.cache.root.join("pointers"));
        let _ = std::fs::remove_dir_all(c.cache.root.join("scratch"));
        let _ = std::fs::remove_dir_all(c.cache.shared_dir());
    }
    if !g.quiet {
        eprintln!("removed {removed} cache entries");
    }
    Ok(ExitCode::SUCCESS)
}

fn exec_stage(g: &Global, registry: &Registry, a: &ExecStageArgs) -> Result<ExitCode> {
    let stage = &a.stage;
    let c = load(g)?;
    let runner = Runner::new(&c.plan, registry, c.cache.clone())?;
    let i = stage_index(&c, stage)?;
    let sel = c.plan.select(std::slice::from_ref(stage))?;
    for (j, st) in runner.status(&sel)? {
        if j != i && !matches!(st, State::Cached { .. }) {
            bail!(
                "dependency `{}` of `{stage}` is not cached; run it first",
                c.plan.stages[j].id
            );
        }
    }
    let report = runner
        .run(
            &sel,
            &RunOptions {
                display: g.display(),
                threads: a.threads.unwrap_or_else(|| RunOptions::default().threads),
                force: if a.force {
                    vec![stage.clone()]
                } else {
                    Vec::new()
                },
                ..RunOptions::default()
            },
        )
        .context(RunFailed)?;
    if let Some(err) = report.failure() {
        return Err(anyhow::Error::new(err).context(RunFailed));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(
    runner: &Runner,
    sel: &[usize],
    dry_run: bool,
    jobs: &BTreeMap<String, JobRecord>,
) -> Result<ExitCode> {
    for (i, st) in runner.status(sel)? {
        let id = &runner.plan.stages[i].id;
        let job = match jobs.get(id) {
            Some(j) if !matches!(st, State::Cached { .. }) => {
                format!(" [Slurm job {} {}]", j.job, j.state)
            }
            _ => String::new(),
        };
        match st {
            State::Cached { .. } if dry_run => println!("fresh  {id}"),
            State::Cached { .. } => println!("cached {id}"),
            State::Missing { reason } => println!(
                "{}  {id}: {reason}{job}",
                if dry_run { "run" } else { "missing" }
            ),
            State::Stale { reason } => {
                println!(
                    "{}  {id}: {reason}{job}",
                    if dry_run { "run" } else { "stale" }
                )
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies every file under `src` to the same relative path under `dest`, skipping files whose
/// content is already there; returns how many it wrote. Each file is written atomically.
fn publish(src: &Path, dest: &Path) -> Result<usize> {
    if !src.is_dir() {
        return Ok(0);
    }
    let mut n = 0;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            n += publish(&from, &to)?;
            continue;
        }
        let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if std::fs::read(&to).ok().as_deref() == Some(&bytes[..]) {
            continue;
        }
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        tofa_runner::cache::write_atomic(&to, &bytes)
            .with_context(|| format!("writing {}", to.display()))?;
        n += 1;
    }
    Ok(n)
}

/// Result tables as committed at a git revision.
fn tables_at(rev: &str, dir: &Path) -> Result<Tables> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let top = std::process::Command::new("git")
        .arg("-C")
        .arg(&dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .context("running git")?;
    if !top.status.success() {
        bail!("{} is not inside a git repository", dir.display());
    }
    let top = PathBuf::from(String::from_utf8_lossy(&top.stdout).trim());
    let rel = dir.strip_prefix(&top).unwrap_or(&dir).join("tables.json");
    let spec = format!("{rev}:{}", rel.display());
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&top)
        .args(["show", &spec])
        .output()
        .context("running git show")?;
    if !out.status.success() {
        bail!(
            "git show {spec}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Tables::from_slice(&out.stdout, Path::new(&spec))?)
}

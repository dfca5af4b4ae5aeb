//! The command line: clap types, resolved into settings before any work starts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tofa_runner::cache::Cache;
use tofa_runner::exec::{Outcome, RunOptions, Runner, State};
use tofa_runner::progress::Display;
use tofa_runner::results::{TableDiff, Tables};
use tofa_runner::spec::{Pipeline, Plan};

/// Runs the TOFA paper's pipeline: a DAG of cached stages declared in pipeline.toml.
#[derive(Debug, Parser)]
#[command(name = "tofa-pipeline", version)]
struct Cli {
    /// The pipeline file.
    #[arg(long, short = 'f', global = true, default_value = "pipeline.toml")]
    file: PathBuf,
    /// Profile whose overrides apply (default: the file's default_profile).
    #[arg(long, short = 'p', global = true)]
    profile: Option<String>,
    /// Cache directory (default: the file's cache_dir, `.tofa-cache` beside it).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run targets, stages or globs (and what they depend on); nothing given runs everything.
    Run {
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
    },
    /// Show each stage as cached, stale (and why) or missing.
    Status { selectors: Vec<String> },
    /// List targets and stages.
    List,
    /// Show a stage's resolved params, key and outputs.
    Show { stage: String },
    /// Compare result tables of two directories, or of a git revision against the working tree.
    Diff {
        /// Old and new results directories (or one, the new, with --against).
        dirs: Vec<PathBuf>,
        /// Git revision whose committed results are the old side.
        #[arg(long)]
        against: Option<String>,
        /// Exit 1 if any metric moved by more than this, or rows were added or removed.
        #[arg(long)]
        fail_above: Option<f64>,
    },
    /// Remove cache entries no stage points to (all entries with --all).
    Clean {
        #[arg(long)]
        all: bool,
    },
    /// Run one stage whose dependencies are cached, as a separate process (executor seam).
    ExecStage { stage: String },
    /// Measure one exported model in this (fresh) process and print JSON; the
    /// `device_bench` stage runs it (`MODEL_DIR [--json] [--batch N] [--warmup W]
    /// [--repeats R] [--seed S]`).
    #[command(hide = true)]
    DeviceBench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

struct Ctx {
    pipeline: Pipeline,
    plan: Plan,
    cache: Cache,
}

fn load(cli: &Cli) -> Result<Ctx> {
    let pipeline =
        Pipeline::load(&cli.file).with_context(|| format!("loading {}", cli.file.display()))?;
    let profile = cli
        .profile
        .clone()
        .unwrap_or_else(|| pipeline.default_profile.clone());
    let plan = pipeline.plan(&profile)?;
    let cache = Cache::new(
        cli.cache_dir
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
    match &cli.command {
        Command::Run {
            selectors,
            jobs,
            threads,
            force,
            dry_run,
            results,
            reports,
        } => {
            let c = load(&cli)?;
            let runner = Runner::new(&c.plan, &registry, c.cache.clone())?;
            let sel = c.plan.select(selectors)?;
            for f in force {
                c.plan
                    .select(std::slice::from_ref(f))
                    .with_context(|| format!("--force {f}"))?;
            }
            if *dry_run {
                return print_status(&runner, &sel, true);
            }
            let opts = RunOptions {
                jobs: jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                threads: threads.unwrap_or_else(|| RunOptions::default().threads),
                force: force.clone(),
                display: Display::auto(),
            };
            let report = runner.run(&sel, &opts)?;
            // Publish result tables of what completed, even when something failed.
            let dir = results
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
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                tables
                    .write(&dir)
                    .with_context(|| format!("writing tables to {}", dir.display()))?;
            }
            // Publish what completed stages wrote under `publish/` (reports, figures).
            let reports = reports
                .clone()
                .unwrap_or_else(|| c.pipeline.reports_dir.join(&c.plan.profile));
            let mut published = 0;
            for e in report.entries.values() {
                published += publish(&e.out_dir().join("publish"), &reports)
                    .with_context(|| format!("publishing into {}", reports.display()))?;
            }
            if published > 0 {
                eprintln!("updated {published} report files in {}", reports.display());
            }
            let record = serde_json::json!({
                "profile": c.plan.profile,
                "selectors": selectors,
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
            let ran_n = report
                .records
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Ran { .. }))
                .count();
            let cached_n = report
                .records
                .iter()
                .filter(|r| r.outcome == Outcome::Cached)
                .count();
            eprintln!(
                "{} stages: {ran_n} ran, {cached_n} cached in {:.2}s; results in {}",
                report.records.len(),
                report.wall_s,
                dir.display()
            );
            if let Some(err) = report.failure() {
                return Err(err.into());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { selectors } => {
            let c = load(&cli)?;
            let runner = Runner::new(&c.plan, &registry, c.cache.clone())?;
            let sel = c.plan.select(selectors)?;
            print_status(&runner, &sel, false)
        }
        Command::List => {
            let c = load(&cli)?;
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
                let deps: Vec<&str> = s
                    .deps
                    .iter()
                    .map(|d| c.plan.stages[*d].id.as_str())
                    .collect();
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
        Command::Show { stage } => {
            let c = load(&cli)?;
            let runner = Runner::new(&c.plan, &registry, c.cache.clone())?;
            let i =
                *c.plan.index.get(stage).with_context(|| {
                    format!("no stage `{stage}` in profile `{}`", c.plan.profile)
                })?;
            let s = &c.plan.stages[i];
            println!(
                "stage: {}\nkind: {}\nline: {}\nseed: {}",
                s.id, s.kind, s.line, s.seed
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
                        let m =
                            std::fs::read_to_string(c.cache.entry_dir(key).join("manifest.json"))?;
                        println!("manifest: {m}");
                    }
                    State::Missing { reason } => println!("state: missing ({reason})"),
                    State::Stale { reason } => println!("state: stale ({reason})"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff {
            dirs,
            against,
            fail_above,
        } => {
            let (old, new) = match (against, dirs.as_slice()) {
                (Some(rev), []) => {
                    let c = load(&cli)?;
                    let dir = c.pipeline.results_dir.join(&c.plan.profile);
                    (tables_at(rev, &dir)?, Tables::load(&dir)?)
                }
                (Some(rev), [dir]) => (tables_at(rev, dir)?, Tables::load(dir)?),
                (None, [a, b]) => (Tables::load(a)?, Tables::load(b)?),
                _ => bail!("diff takes OLD NEW directories, or --against REV [DIR]"),
            };
            let d = TableDiff::compute(&old, &new);
            print!("{}", d.render());
            if let Some(tol) = fail_above
                && (d.max_abs_delta() > *tol || !d.added.is_empty() || !d.removed.is_empty())
            {
                eprintln!("differences above {tol}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean { all } => {
            let c = load(&cli)?;
            let _lock = c.cache.lock_cache(true)?;
            let keep: BTreeSet<String> = if *all {
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
            if *all {
                let _ = std::fs::remove_dir_all(c.cache.root.join("pointers"));
                let _ = std::fs::remove_dir_all(c.cache.root.join("scratch"));
            }
            eprintln!("removed {removed} cache entries");
            Ok(ExitCode::SUCCESS)
        }
        Command::DeviceBench { args } => {
            tofa_select::device_bench_main(args.iter().cloned()).context("device-bench")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ExecStage { stage } => {
            let c = load(&cli)?;
            let runner = Runner::new(&c.plan, &registry, c.cache.clone())?;
            let i = *c
                .plan
                .index
                .get(stage)
                .with_context(|| format!("no stage `{stage}`"))?;
            let sel = c.plan.select(std::slice::from_ref(stage))?;
            for (j, st) in runner.status(&sel)? {
                if j != i && !matches!(st, State::Cached { .. }) {
                    bail!(
                        "dependency `{}` of `{stage}` is not cached; run it first",
                        c.plan.stages[j].id
                    );
                }
            }
            let report = runner.run(
                &sel,
                &RunOptions {
                    display: Display::auto(),
                    ..RunOptions::default()
                },
            )?;
            if let Some(err) = report.failure() {
                return Err(err.into());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(runner: &Runner, sel: &[usize], dry_run: bool) -> Result<ExitCode> {
    for (i, st) in runner.status(sel)? {
        let id = &runner.plan.stages[i].id;
        match st {
            State::Cached { .. } if dry_run => println!("fresh  {id}"),
            State::Cached { .. } => println!("cached {id}"),
            State::Missing { reason } => println!(
                "{}  {id}: {reason}",
                if dry_run { "run" } else { "missing" }
            ),
            State::Stale { reason } => {
                println!("{}  {id}: {reason}", if dry_run { "run" } else { "stale" })
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Result tables as committed at a git revision.
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

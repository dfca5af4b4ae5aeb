//! The repository's own `pipeline.toml` under the `smoke` profile: the whole paper target,
//! its caching, and errors on bad data and diverging training.

use std::path::Path;

use super::{ok, ran, tofa};

pub(crate) fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A temp dir holding the repository's `pipeline.toml` (with `edit` applied to its text) and
/// the experiment files it includes.
fn repo_pipeline(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let src = std::fs::read_to_string(repo_root().join("pipeline.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), edit(src)).unwrap();
    if let Ok(rd) = std::fs::read_dir(repo_root().join("experiments")) {
        std::fs::create_dir_all(dir.path().join("experiments")).unwrap();
        for e in rd {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join("experiments").join(e.file_name())).unwrap();
        }
    }
    dir
}

/// Everything a stage's cache key is made of but its dependencies' output digests (kind and
/// version, canonical params, seed, dependency ids), one line a stage, sorted by id.
fn plan_fingerprint(profile: &str) -> String {
    let pipeline = tofa_runner::spec::Pipeline::load(&repo_root().join("pipeline.toml")).unwrap();
    let plan = pipeline.plan(profile).unwrap();
    let registry = tofa_stages::registry();
    let cache = tofa_runner::cache::Cache::new(std::env::temp_dir().join("unused"));
    let runner = tofa_runner::exec::Runner::new(&plan, &registry, cache).unwrap();
    let mut lines: Vec<String> = plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let input = tofa_runner::cache::KeyInput {
                format: tofa_runner::cache::FORMAT,
                kind: s.kind.clone(),
                kind_version: registry.get(&s.kind).unwrap().version().to_string(),
                params: runner.params(i).clone(),
                seed: s.seed,
                deps: s
                    .deps
                    .iter()
                    .map(|&d| (plan.stages[d].id.clone(), String::new()))
                    .collect(),
                device: plan.device.clone(),
                numerics: plan.numerics.clone(),
            };
            format!("{} {}", s.id, input.key())
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

/// The keys of `smoke` and `quick` do not move when the pipeline's files are reorganised
/// (issue 14's `experiments/`, issue 16's refactors): the plans are compared with
/// fingerprints committed in `tests/fixtures/plan/`. A change that should move keys (a kind's
/// `VERSION`, a param) re-blesses them: `TOFA_BLESS=1 cargo test -p tofa-pipeline --test it
/// plan_fingerprints`.
#[test]
fn plan_fingerprints_match_the_committed_ones() {
    for profile in ["smoke", "quick"] {
        let got = plan_fingerprint(profile);
        let path = repo_root().join(format!("tests/fixtures/plan/{profile}.txt"));
        if std::env::var_os("TOFA_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (bless with TOFA_BLESS=1)", path.display()));
        if got != want {
            let moved: Vec<&str> = got
                .lines()
                .filter(|l| !want.lines().any(|w| w == *l))
                .collect();
            panic!(
                "profile {profile}: {} of {} stages have another plan than {}: {moved:?}",
                moved.len(),
                got.lines().count(),
                path.display()
            );
        }
    }
}

fn tables(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("results/smoke/tables.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rows_of<'a>(t: &'a serde_json::Value, table: &str) -> Vec<&'a serde_json::Value> {
    t["tables"][table]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

#[test]
fn smoke_paper_target_end_to_end_then_cached() {
    let d = repo_pipeline(|s| s);
    let out = tofa(d.path(), &["-p", "smoke", "run", "paper", "-j", "2"]);
    ok(&out);
    let n = ran(&out).len();
    assert!(n > 70, "only {n} stages ran");

    // Tables: Table 4 has every (data set, variant); Table 3's baselines are there.
    let t = tables(d.path());
    assert_eq!(
        rows_of(&t, "tofa").len(),
        6 * 4 + 2,
        "24 TOFA runs + 2 from scratch"
    );
    assert_eq!(
        rows_of(&t, "baseline").len(),
        6 * 2 + 3 * 5 + 3,
        "Table 3 baselines, same-architecture fine-tuning, the reference model"
    );
    for r in rows_of(&t, "tofa") {
        let acc = r["metrics"]["maxnet_acc"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{r}");
    }
    // Selection compares four methods per budget and the fixed rule (both readings)
    // evaluates nothing.
    let sel = rows_of(&t, "selection");
    assert!(!sel.is_empty());
    for r in &sel {
        if r["keys"]["method"].as_str().unwrap().starts_with("fixed") {
            assert_eq!(r["metrics"]["evaluations"].as_f64(), Some(0.0), "{r}");
        } else {
            assert!(r["metrics"]["evaluations"].as_f64().unwrap() >= 1.0, "{r}");
        }
    }
    // Latency rows come from fresh processes and are positive.
    let lat = rows_of(&t, "latency");
    assert!(lat.iter().any(|r| r["keys"]["model"] == "maxnet"));
    assert!(
        lat.iter()
            .all(|r| r["metrics"]["median_ms"].as_f64().unwrap() > 0.0)
    );

    // Report, tables and figures are published.
    let rep = d.path().join("reports/smoke");
    let report = std::fs::read_to_string(rep.join("REPORT.md")).unwrap();
    for s in [
        "## Claims",
        "## Table 4",
        "## Table 3",
        "Figures 8-11",
        "Figure 7",
        "profile | `smoke`",
    ] {
        assert!(report.contains(s), "REPORT.md lacks {s}");
    }
    let t4 = std::fs::read_to_string(rep.join("table4.csv")).unwrap();
    assert!(
        t4.starts_with("data set,model,lab,fm,dist,full,paper: lab"),
        "{t4}"
    );
    assert!(
        t4.contains("synth-aircraft,maxnet,") && t4.contains(",69.0,71.5,73.8,75.2"),
        "{t4}"
    );
    for t in ["table2", "table3", "table4", "transfer"] {
        for ext in ["md", "csv"] {
            assert!(
                rep.join(format!("{t}.{ext}")).is_file(),
                "{t}.{ext} not published"
            );
        }
    }
    // Every figure: SVG + PNG + CSV + section, each series named in the SVG's legend.
    let mut figures: Vec<(String, Vec<&str>)> = Vec::new();
    for d in ["synth-cars", "synth-aircraft", "synth-pets"] {
        figures.push((
            format!("fig2-4_accuracy_flops_{d}"),
            vec![
                "TOFA palette (lab, one training)",
                "same architecture fine-tuned individually",
                "maxnet fine-tuned alone",
                "small maxnet, fine-tuned alone",
            ],
        ));
    }
    for d in [
        "synth-cifar100",
        "synth-cifar10",
        "synth-cars",
        "synth-aircraft",
    ] {
        figures.push((
            format!("fig8-11_selection_{d}"),
            vec![
                "fixed rule, size ranges",
                "fixed rule, literal",
                "random search",
                "evolutionary search",
            ],
        ));
    }
    figures.push((
        "fig5_latency_flops_synth-cars".into(),
        vec!["TOFA palette, synth-cars"],
    ));
    figures.push((
        "fig6_latency_accuracy_synth-cifar100".into(),
        vec!["TOFA palette"],
    ));
    figures.push(("fig7_device_synth-cars".into(), vec!["maxnet", "minnet"]));
    figures.push((
        "cost_synth-cars".into(),
        vec!["TOFA: one supernet training", "fine-tuning one model"],
    ));
    for (f, series) in &figures {
        for ext in ["svg", "png", "csv", "md"] {
            assert!(
                rep.join(format!("{f}.{ext}")).is_file(),
                "{f}.{ext} not published"
            );
        }
        let svg = std::fs::read_to_string(rep.join(format!("{f}.svg"))).unwrap();
        for s in series {
            assert!(svg.contains(s), "{f}.svg lacks series {s}");
        }
        assert!(
            report.contains(&format!("]({f}.svg)")),
            "REPORT.md does not show {f}"
        );
    }
    // Rows behind the figures: 5 palette budgets x the 4 data sets the figures draw (cars,
    // aircraft, pets, cifar100); 2 budgets x 4 methods x 4 data sets; latency at batch 1 and 2
    // for every distinct exported model.
    assert_eq!(rows_of(&t, "palette").len(), 4 * 5);
    // Algorithm 2 over size ranges: each pick lies in its budget's range (t_{i-1}, t_i],
    // unless the range held no sampled subnet and the row says it fell back to `<= t_i`.
    let palette = rows_of(&t, "palette");
    for r in &palette {
        let (stage, b) = (&r["stage"], r["keys"]["budget"].as_u64().unwrap());
        let m = r["metrics"]["mflops"].as_f64().unwrap();
        let limit = r["metrics"]["budget_mflops"].as_f64().unwrap();
        assert!(m <= limit + 1e-9, "{r}");
        let lower = palette
            .iter()
            .find(|p| {
                &p["stage"] == stage && p["keys"]["budget"].as_u64() == Some(b.wrapping_sub(1))
            })
            .map(|p| p["metrics"]["budget_mflops"].as_f64().unwrap());
        if let Some(lo) = lower
            && r["metrics"]["fallback"] == false
        {
            assert!(m > lo, "pick below its range: {r}");
        }
    }
    assert_eq!(sel.len(), 4 * 2 * 4);
    assert_eq!(rows_of(&t, "predictor").len(), 4);
    assert!(lat.iter().any(|r| r["keys"]["batch"] == 2));

    // Nothing changed: nothing runs.
    let out = tofa(d.path(), &["-p", "smoke", "run", "paper"]);
    ok(&out);
    assert!(ran(&out).is_empty(), "warm run executed {:?}", ran(&out));

    // One selection param changes: exactly the selection stages and what reads them (the
    // selection figures, the Claims, the report) rerun.
    std::fs::write(
        d.path().join("pipeline.toml"),
        std::fs::read_to_string(d.path().join("pipeline.toml"))
            .unwrap()
            .replace("random = { k = 2 }", "random = { k = 3 }"),
    )
    .unwrap();
    let out = tofa(d.path(), &["-p", "smoke", "run", "paper"]);
    ok(&out);
    let again = ran(&out);
    assert!(
        again.iter().all(|s| s.starts_with("selection/")
            || s.starts_with("art/selection/")
            || s == "art/claims"
            || s == "report"),
        "{again:?}"
    );
    assert_eq!(
        again.iter().filter(|s| s.starts_with("selection/")).count(),
        4
    );
}

#[test]
fn corrupt_idx_file_is_named() {
    let data = tempfile::tempdir().unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        // a wrong magic number in every file
        std::fs::write(data.path().join(f), [0u8, 0, 9, 9, 0, 0, 0, 1, 7]).unwrap();
    }
    let dir = data.path().display().to_string();
    let d = repo_pipeline(|s| s.replace("/usr/share/datasets/fashion-mnist", &dir));
    let out = tofa(d.path(), &["-p", "fashion", "run", "split/*"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("split/fashion-mnist"), "{err}");
    assert!(err.contains(&dir) && err.contains("idx"), "{err}");
}

#[test]
fn diverging_training_stops_with_the_iteration_and_keeps_other_results() {
    let d = repo_pipeline(|s| {
        s + "\n[profile.boom]\nextends = \"smoke\"\n[profile.boom.stage.\"tofa/synth-pets/full/s0\"]\ntrain = { lr = 1e30, iterations = 3 }\n"
    });
    let out = tofa(
        d.path(),
        &[
            "-p",
            "boom",
            "run",
            "tofa/synth-pets/full/s0",
            "tofa/synth-pets/lab/s0",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tofa/synth-pets/full/s0"), "{err}");
    assert!(err.contains("not finite"), "{err}");
    // The unrelated stage still ran and published its row.
    let t = std::fs::read_to_string(d.path().join("results/boom/tables.json")).unwrap();
    assert!(t.contains("tofa/synth-pets/lab/s0"), "{t}");
}

/// Every profile of the repository's `pipeline.toml` resolves, and in none does the
/// no-transfer control `pretrain-none` start from anything but our seeded initialisation
/// (the `paper` profile once gave it the ImageNet weights, through a kind-wide override).
#[test]
fn every_profile_resolves_and_pretrain_none_has_no_init() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipeline.toml");
    let pipeline = tofa_runner::spec::Pipeline::load(&path).unwrap();
    let names = pipeline.profile_names();
    for p in ["quick", "smoke", "fashion", "lite0", "paper"] {
        assert!(
            names.iter().any(|n| n == p),
            "profile {p} missing: {names:?}"
        );
    }
    for name in &names {
        let plan = pipeline.plan(name).unwrap();
        let stage = |id: &str| {
            plan.stages
                .iter()
                .find(|s| s.id == id)
                .unwrap_or_else(|| panic!("{name}: no stage {id}"))
        };
        let none = stage("pretrain-none");
        let init = none.params.get("init");
        assert!(
            init.is_none() || init.and_then(|i| i.get("from")) == Some(&"scratch".into()),
            "{name}: pretrain-none has init {init:?}"
        );
        // and the real-weights profiles do give `pretrain` its weights
        if name == "paper" || name == "lite0" {
            assert!(stage("pretrain").params.get("init").is_some(), "{name}");
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Metrics that measure this machine's time or memory, not the computation.
fn is_measured(metric: &str) -> bool {
    metric.ends_with("_s")
        || metric.ends_with("_ms")
        || metric.contains("rss")
        || metric.contains("peak_over")
}

/// Every row of every table, with the measured metrics left out.
fn computed_rows(dir: &Path) -> Vec<(String, String, String)> {
    let t = tables(dir);
    let mut out = Vec::new();
    for (name, rows) in t["tables"].as_object().unwrap() {
        for r in rows.as_array().unwrap() {
            let mut r = r.clone();
            if let Some(m) = r.get_mut("metrics").and_then(|m| m.as_object_mut()) {
                m.retain(|k, _| !is_measured(k));
            }
            let id = format!("{}", r.get("stage").unwrap_or(&serde_json::Value::Null));
            out.push((name.clone(), id, r.to_string()));
        }
    }
    out.sort();
    out
}

/// The `smoke` profile's `paper` target through a real Slurm cluster (one node on
/// localhost: Debian's slurm-wlm and munge, started by `scripts/slurm-local.sh`) gives the
/// same results as a local run, and `status` shows the jobs.
#[test]
fn smoke_paper_through_slurm_equals_a_local_run() {
    if !(on_path("sbatch") && on_path("slurmctld") && on_path("munged")) {
        eprintln!(
            "note: skipping the Slurm test: slurm-wlm and munge are not installed \
             (bash scripts/slurm-local.sh install)"
        );
        return;
    }
    let script = repo_root().join("scripts/slurm-local.sh");
    let start = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .unwrap();
    ok(&start);
    let conf = String::from_utf8_lossy(&start.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("SLURM_CONF=").map(str::to_string))
        .expect("slurm-local.sh prints SLURM_CONF");

    let local = repo_pipeline(|s| s);
    ok(&tofa(local.path(), &["-p", "smoke", "run", "paper"]));

    let cluster = repo_pipeline(|s| s);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tofa-pipeline"))
            .current_dir(cluster.path())
            .env("SLURM_CONF", &conf)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "-p",
        "smoke",
        "run",
        "paper",
        "--executor",
        "slurm",
        "--poll-ms",
        "200",
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(") as Slurm job "), "{err}");
    assert_eq!(computed_rows(cluster.path()), computed_rows(local.path()));

    let st = run(&["-p", "smoke", "status", "--json", "paper"]);
    ok(&st);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert!(rows.iter().all(|r| r["state"] == "cached"), "{v}");
    let tofa_row = rows
        .iter()
        .find(|r| r["id"] == "tofa/synth-pets/full/s0")
        .unwrap();
    assert_eq!(tofa_row["slurm"]["state"], "DONE", "{tofa_row}");
    assert!(
        tofa_row["slurm"]["job"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    // a second run submits nothing
    let again = run(&["-p", "smoke", "run", "paper", "--executor", "slurm"]);
    ok(&again);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("as Slurm job"));
}

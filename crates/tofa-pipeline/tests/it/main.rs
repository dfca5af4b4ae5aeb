//! Drives the real `tofa-pipeline` binary on test pipelines built from the utility kinds.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tofa-pipeline");

const PIPELINE: &str = r#"
[pipeline]
default_profile = "base"

[profile.base]
[profile.fast]
extends = "base"
[profile.fast.kind.sleep]
ms = 1

[[stage]]
id = "src/{name}"
kind = "echo"
matrix = { name = ["a", "b"] }
params = { text = "source {name}" }

[[stage]]
id = "mid/{name}"
kind = "echo"
matrix = { name = ["a", "b"] }
deps = ["src/{name}"]
params = { text = "mid {name}", score = 1.5 }

[[stage]]
id = "slow"
kind = "sleep"
deps = ["mid/a"]
params = { ms = 50 }

[[stage]]
id = "top"
kind = "echo"
deps = ["mid/*", "slow"]
params = { text = "top" }

[targets]
all = ["top"]
just_b = ["mid/b"]
"#;

fn tofa(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("spawn tofa-pipeline")
}

fn ran(out: &Output) -> Vec<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let mut v: Vec<String> = err
        .lines()
        .filter_map(|l| l.strip_prefix("run   "))
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setup(src: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), src).unwrap();
    dir
}

#[test]
fn cold_warm_param_change_and_force() {
    let d = setup(PIPELINE);
    let out = tofa(d.path(), &["run", "all"]);
    ok(&out);
    assert_eq!(
        ran(&out),
        ["mid/a", "mid/b", "slow", "src/a", "src/b", "top"]
    );
    let csv = std::fs::read_to_string(d.path().join("results/base/echo.csv")).unwrap();
    assert!(
        csv.starts_with("stage,stage,len,score") || csv.contains("mid/a"),
        "{csv}"
    );

    let out = tofa(d.path(), &["run", "all"]);
    ok(&out);
    assert!(ran(&out).is_empty(), "warm run executed {:?}", ran(&out));

    // change one param of src/b: exactly src/b, mid/b, top rerun
    std::fs::write(
        d.path().join("pipeline.toml"),
        PIPELINE.replace("text = \"source {name}\"", "text = \"src {name}\""),
    )
    .unwrap();
    let dry = tofa(d.path(), &["run", "all", "--dry-run"]);
    ok(&dry);
    let plan = String::from_utf8_lossy(&dry.stdout);
    assert!(
        plan.contains("run  src/a: params changed (text: \"source a\" -> \"src a\")"),
        "{plan}"
    );
    assert!(
        plan.contains("run  mid/a: dependency `src/a` will run"),
        "{plan}"
    );
    let out = tofa(d.path(), &["run", "all"]);
    ok(&out);
    // src/a and src/b both changed text; their outputs changed, so mid/* and top rerun,
    // while `slow` sees the same output of mid/a? No: mid/a's output includes src/a's text.
    assert_eq!(
        ran(&out),
        ["mid/a", "mid/b", "slow", "src/a", "src/b", "top"]
    );

    // a change that leaves the output equal cuts off downstream: score only affects rows,
    // so change `slow` (no rows, same file content for same ms) via steps
    std::fs::write(
        d.path().join("pipeline.toml"),
        PIPELINE
            .replace("text = \"source {name}\"", "text = \"src {name}\"")
            .replace("params = { ms = 50 }", "params = { ms = 50, steps = 5 }"),
    )
    .unwrap();
    let out = tofa(d.path(), &["run", "all"]);
    ok(&out);
    assert_eq!(ran(&out), ["slow"], "equal output must cut off downstream");

    let out = tofa(d.path(), &["run", "all", "--force", "mid/b"]);
    ok(&out);
    assert_eq!(ran(&out), ["mid/b"]);

    let st = tofa(d.path(), &["status", "all"]);
    ok(&st);
    let s = String::from_utf8_lossy(&st.stdout);
    assert_eq!(
        s.lines().filter(|l| l.starts_with("cached ")).count(),
        6,
        "{s}"
    );
}

#[test]
fn profile_override_changes_key() {
    let d = setup(PIPELINE);
    ok(&tofa(d.path(), &["run", "slow"]));
    let out = tofa(d.path(), &["--profile", "fast", "run", "slow"]);
    ok(&out);
    // the cache is shared across profiles: unchanged upstream stages are reused
    assert_eq!(ran(&out), ["slow"]);
    let show = tofa(d.path(), &["--profile", "fast", "show", "slow"]);
    ok(&show);
    assert!(String::from_utf8_lossy(&show.stdout).contains("\"ms\": 1"));
}

#[test]
fn failure_stops_dependents_only() {
    let src = PIPELINE.replace(
        "[[stage]]\nid = \"slow\"\nkind = \"sleep\"\ndeps = [\"mid/a\"]\nparams = { ms = 50 }",
        "[[stage]]\nid = \"slow\"\nkind = \"fail\"\ndeps = [\"mid/a\"]\nparams = { message = \"boom: out of cheese\" }",
    );
    let d = setup(&src);
    let out = tofa(d.path(), &["run", "all", "just_b"]);
    assert_eq!(out.status.code(), Some(1), "a failed run exits 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: the run failed: stage `slow` failed: boom: out of cheese"),
        "{err}"
    );
    assert!(err.contains("1 dependent stage(s) skipped"), "{err}");
    // unrelated stages completed and are cached
    let st = String::from_utf8_lossy(&tofa(d.path(), &["status", "just_b"]).stdout).to_string();
    assert!(st.contains("cached mid/b"), "{st}");
    assert!(
        !d.path()
            .join(".tofa-cache/tmp")
            .read_dir()
            .map(|mut r| r.next().is_some())
            .unwrap_or(false)
    );
}

#[test]
fn corrupt_entry_is_rebuilt() {
    let d = setup(PIPELINE);
    ok(&tofa(d.path(), &["run", "just_b"]));
    let entries = d.path().join(".tofa-cache/entries");
    // truncate every out.txt
    for e in std::fs::read_dir(&entries).unwrap() {
        let f = e.unwrap().path().join("out/out.txt");
        if f.exists() {
            std::fs::write(&f, "x").unwrap();
        }
    }
    let out = tofa(d.path(), &["run", "just_b"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is corrupt (output `out.txt` has 1 bytes"),
        "{err}"
    );
    assert_eq!(ran(&out), ["mid/b", "src/b"]);
    assert!(ran(&tofa(d.path(), &["run", "just_b"])).is_empty());
}

#[test]
fn kill_during_stage_then_rerun_redoes_only_it() {
    let src = PIPELINE.replace(
        "params = { ms = 50 }",
        "params = { ms = 3000, steps = 300 }",
    );
    let d = setup(&src);
    ok(&tofa(d.path(), &["run", "mid/a"]));
    let mut child = Command::new(BIN)
        .current_dir(d.path())
        .args(["run", "slow"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait until the stage's temp dir exists, then kill -9
    let tmp = d.path().join(".tofa-cache/tmp");
    for _ in 0..200 {
        if tmp
            .read_dir()
            .map(|mut r| r.next().is_some())
            .unwrap_or(false)
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read_dir(d.path().join(".tofa-cache/entries"))
        .unwrap()
        .count();
    assert_eq!(before, 2, "no entry for the killed stage");
    let st = String::from_utf8_lossy(&tofa(d.path(), &["status", "slow"]).stdout).to_string();
    assert!(
        st.contains("cached src/a") && st.contains("cached mid/a") && st.contains("missing  slow"),
        "{st}"
    );
    let out = tofa(d.path(), &["run", "slow"]);
    ok(&out);
    assert_eq!(ran(&out), ["slow"]);
}

/// Two nodes share one cache (`TOFA_HOST_ID` poses as the node): a build node-a left
/// behind looks, from node-b, exactly like a build in flight there (its pid means nothing
/// here), so node-b must leave it; node-a itself knows the pid is dead and sweeps it.
#[test]
fn a_shared_cache_keeps_another_nodes_builds() {
    let src = PIPELINE.replace(
        "params = { ms = 50 }",
        "params = { ms = 3000, steps = 300 }",
    );
    let d = setup(&src);
    let on = |host: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .current_dir(d.path())
            .env("TOFA_HOST_ID", host)
            .args(args)
            .output()
            .unwrap();
        ok(&out);
        out
    };
    on("node-a", &["run", "mid/a"]);
    let mut child = Command::new(BIN)
        .current_dir(d.path())
        .env("TOFA_HOST_ID", "node-a")
        .args(["run", "slow"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = d.path().join(".tofa-cache/tmp");
    let names = || -> Vec<String> {
        tmp.read_dir()
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    for _ in 0..200 {
        if !names().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = names();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains(".node-a."),
        "temp names carry the host: {left:?}"
    );
    // node-b runs (and sweeps) while node-a's build is, for all it can tell, in flight
    on("node-b", &["run", "mid/b"]);
    assert_eq!(names(), left, "node-b removed node-a's build");
    // node-a's next run knows its own pid is gone
    on("node-a", &["run", "mid/b"]);
    assert!(names().is_empty(), "{:?}", names());
}

#[test]
fn concurrent_runners_leave_consistent_cache() {
    let src = PIPELINE.replace("params = { ms = 50 }", "params = { ms = 400 }");
    let d = setup(&src);
    let a = Command::new(BIN)
        .current_dir(d.path())
        .args(["run", "all", "-j", "2"])
        .output();
    let b = Command::new(BIN)
        .current_dir(d.path())
        .args(["run", "all"])
        .output();
    ok(&a.unwrap());
    ok(&b.unwrap());
    let c = tofa(d.path(), &["run", "all"]);
    ok(&c);
    assert!(ran(&c).is_empty());
    assert_eq!(
        std::fs::read_dir(d.path().join(".tofa-cache/entries"))
            .unwrap()
            .count(),
        6
    );
}

#[test]
fn two_runners_at_once() {
    let src = PIPELINE.replace("params = { ms = 50 }", "params = { ms = 600 }");
    let d = setup(&src);
    let spawn = || {
        Command::new(BIN)
            .current_dir(d.path())
            .args(["run", "all"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    // each stage was built once in total
    let total = ran(&a).len() + ran(&b).len();
    let err_a = String::from_utf8_lossy(&a.stderr);
    let err_b = String::from_utf8_lossy(&b.stderr);
    assert!(total >= 6, "{err_a}\n{err_b}");
    assert_eq!(
        std::fs::read_dir(d.path().join(".tofa-cache/entries"))
            .unwrap()
            .count(),
        6
    );
}

#[test]
fn errors_name_file_line_and_stage() {
    let d = setup(
        "[[stage]]\nid = \"a\"\nkind = \"echo\"\ndeps = [\"b\"]\nparams = { text = \"x\" }\n\n[[stage]]\nid = \"b\"\nkind = \"echo\"\ndeps = [\"a\"]\nparams = { text = \"y\" }\n",
    );
    let out = tofa(d.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipeline.toml:") && err.contains("dependency cycle: "),
        "{err}"
    );

    let d = setup(
        "[[stage]]\nid = \"a\"\nkind = \"echo\"\nparams = { text = \"x\" }\n\n[[stage]]\nid = \"b\"\nkind = \"trian\"\n",
    );
    let err = String::from_utf8_lossy(&tofa(d.path(), &["run"]).stderr).to_string();
    assert!(
        err.contains("pipeline.toml:6: stage `b`: unknown kind `trian`"),
        "{err}"
    );

    let d = setup("[[stage]]\nid = \"a\"\nkind = \"sleep\"\nparams = { ms = 1, stpes = 2 }\n");
    let err = String::from_utf8_lossy(&tofa(d.path(), &["run"]).stderr).to_string();
    assert!(err.contains("pipeline.toml:1: stage `a` (kind `sleep`, profile `default`): invalid params: unknown field `stpes`"), "{err}");

    // a misspelt architecture fails when the pipeline loads, before any stage runs
    let d = setup(
        "[[stage]]\nid = \"a\"\nkind = \"baseline_train\"\nparams = { mode = \"labelled\", arch = \"maxnett\" }\n",
    );
    let out = tofa(d.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("stage `a` (kind `baseline_train`, profile `default`): invalid params: arch `maxnett`: not maxnet, minnet"),
        "{err}"
    );

    let d = setup("[[stage]]\nid = \"a\"\nkind = \"sleep\"\nparams = { ms = 1 \n");
    let err = String::from_utf8_lossy(&tofa(d.path(), &["run"]).stderr).to_string();
    assert!(err.contains("line 4"), "{err}");

    let d = setup(PIPELINE);
    let err = String::from_utf8_lossy(&tofa(d.path(), &["run", "nope"]).stderr).to_string();
    assert!(err.contains("target or stage `nope` not found"), "{err}");
    let err =
        String::from_utf8_lossy(&tofa(d.path(), &["--profile", "gpu", "run"]).stderr).to_string();
    assert!(err.contains("profile `gpu` not found"), "{err}");
}

/// Exit status 2 for usage and input errors, `--json` for `status` and `list`, `--set`
/// as part of the key, `-q` and `-v`.
#[test]
fn cli_conventions() {
    let d = setup(PIPELINE);
    // usage and input errors: 2, before anything runs
    for args in [
        &["run", "--bogus"][..],
        &["run", "nope"],
        &["--set", "nope.x=1", "run"],
        &["--set", "sleep:mss=1", "run", "slow"],
        &["-q", "-v", "run"],
        &["--device", "gpu", "run"],
    ] {
        let out = tofa(d.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let err =
        String::from_utf8_lossy(&tofa(d.path(), &["--set", "sleep:mss=1", "run", "slow"]).stderr)
            .to_string();
    assert!(err.contains("unknown field `mss`"), "{err}");
    let err =
        String::from_utf8_lossy(&tofa(d.path(), &["--device", "gpu", "run"]).stderr).to_string();
    assert!(
        err.contains("device `gpu`: expected `cpu`, `cuda` or `cuda:N`"),
        "{err}"
    );
    if !cfg!(feature = "cuda") {
        let out = tofa(d.path(), &["--device", "cuda", "run"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("build with `--features cuda`"), "{err}");
    }
    assert!(
        !d.path().join(".tofa-cache/entries").exists(),
        "nothing ran"
    );

    // -q: no stage lines; -v: the key of each stage it runs
    let out = tofa(d.path(), &["-q", "run", "mid/a"]);
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let out = tofa(d.path(), &["-v", "run", "mid/b"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("mid/b key ")),
        "{err}"
    );

    // status --json: one object a stage
    let out = tofa(d.path(), &["status", "--json", "all"]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_id = |id: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("mid/a")["state"], "cached");
    assert_eq!(by_id("mid/a")["key"].as_str().unwrap().len(), 64);
    assert_eq!(by_id("slow")["state"], "missing");
    assert_eq!(by_id("slow")["reason"], "never built");
    assert!(by_id("slow").get("key").is_none());

    // list --json
    let out = tofa(d.path(), &["list", "--json"]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["profile"], "base");
    assert_eq!(v["targets"]["just_b"], serde_json::json!(["mid/b"]));
    let top = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "top")
        .unwrap();
    let mut deps: Vec<&str> = top["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    deps.sort();
    assert_eq!(deps, ["mid/a", "mid/b", "slow"]);

    // --set changes the param, hence the key, and only for its scope
    let out = tofa(d.path(), &["--set", "mid/b:score=2.5", "run", "just_b"]);
    ok(&out);
    assert_eq!(ran(&out), ["mid/b"]);
    let show = tofa(d.path(), &["--set", "mid/b:score=2.5", "show", "mid/b"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("\"score\": 2.5"));
    let out = tofa(d.path(), &["run", "just_b"]);
    ok(&out);
    assert!(
        ran(&out).is_empty(),
        "without --set the old key, and its entry, come back"
    );
}

#[test]
fn diff_gates_on_tolerance() {
    let d = setup(PIPELINE);
    ok(&tofa(d.path(), &["run", "just_b", "--results", "old"]));
    std::fs::write(
        d.path().join("pipeline.toml"),
        PIPELINE.replace("score = 1.5", "score = 1.75"),
    )
    .unwrap();
    ok(&tofa(d.path(), &["run", "just_b", "--results", "new"]));
    let out = tofa(d.path(), &["diff", "old", "new"]);
    ok(&out);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("echo / mid/b [] / score") || s.contains("score"),
        "{s}"
    );
    assert!(s.contains("+0.2500"), "{s}");
    assert_eq!(
        tofa(d.path(), &["diff", "old", "new", "--fail-above", "0.1"])
            .status
            .code(),
        Some(1)
    );
    ok(&tofa(
        d.path(),
        &["diff", "old", "new", "--fail-above", "0.5"],
    ));
}

#[test]
fn diff_against_a_git_revision() {
    let d = setup(PIPELINE);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(d.path())
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    ok(&tofa(d.path(), &["run", "just_b"]));
    git(&["add", "pipeline.toml", "results"]);
    git(&["commit", "-qm", "results"]);
    // unchanged: no delta, the gate passes
    let out = tofa(
        d.path(),
        &["diff", "--against", "HEAD", "--fail-above", "0"],
    );
    ok(&out);
    std::fs::write(
        d.path().join("pipeline.toml"),
        PIPELINE.replace("score = 1.5", "score = 2.5"),
    )
    .unwrap();
    ok(&tofa(d.path(), &["run", "just_b"]));
    let out = tofa(d.path(), &["diff", "--against", "HEAD"]);
    ok(&out);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("score") && s.contains("+1.0000"), "{s}");
    let out = tofa(
        d.path(),
        &["diff", "--against", "HEAD", "--fail-above", "0.5"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // an unknown revision is an error naming it
    let out = tofa(d.path(), &["diff", "--against", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

mod committed;
mod paper;

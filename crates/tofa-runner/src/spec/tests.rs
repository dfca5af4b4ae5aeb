//! Loading, expansion, errors and overrides of pipeline files.

use super::*;

fn parse(src: &str) -> Result<Pipeline> {
    Pipeline::parse(Path::new("pipeline.toml"), src)
}

#[test]
fn matrix_globs_and_profiles() {
    let p = parse(
        r#"
[pipeline]
default_profile = "quick"
[profile.quick]
[profile.smoke]
extends = "quick"
matrix = { ds = ["a"] }
[profile.smoke.kind.train]
iters = 2
[[stage]]
id = "split/{ds}"
kind = "split"
matrix = { ds = ["a", "b"] }
params = { ds = "{ds}" }
[[stage]]
id = "train/{ds}/{loss}"
kind = "train"
matrix = { ds = ["a", "b"], loss = ["lab", "full"] }
deps = ["split/{ds}"]
params = { iters = 100, loss = "{loss}" }
[[stage]]
id = "table"
kind = "table"
deps = ["train/*/full"]
[targets]
t = ["table"]
"#,
    )
    .unwrap();
    let quick = p.plan("quick").unwrap();
    assert_eq!(quick.stages.len(), 7);
    let t = &quick.stages[quick.index["table"]];
    assert_eq!(t.deps.len(), 2);
    assert_eq!(
        quick.stages[quick.index["train/a/lab"]].params["iters"],
        100
    );
    let smoke = p.plan("smoke").unwrap();
    assert_eq!(smoke.stages.len(), 4);
    assert_eq!(smoke.stages[smoke.index["train/a/full"]].params["iters"], 2);
    let sel = quick.select(&["t".into()]).unwrap();
    assert_eq!(sel.len(), 5);
}

#[test]
fn cycle_is_named_with_line() {
    let err = parse(
        "[[stage]]\nid = \"a\"\nkind = \"k\"\ndeps = [\"b\"]\n\n[[stage]]\nid = \"b\"\nkind = \"k\"\ndeps = [\"a\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("dependency cycle"), "{err}");
    assert!(err.contains("a -> b") || err.contains("b -> a"), "{err}");
    assert!(err.starts_with("pipeline.toml:"), "{err}");
}

#[test]
fn duplicate_and_missing_deps() {
    let err = parse("[[stage]]\nid = \"a\"\nkind = \"k\"\n[[stage]]\nid = \"a\"\nkind = \"k\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pipeline.toml:4: duplicate stage id `a`"),
        "{err}"
    );
    let err = parse("[[stage]]\nid = \"a\"\nkind = \"k\"\ndeps = [\"zz\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("depends on `zz`, which matches no stage"),
        "{err}"
    );
}

#[test]
fn unknown_field_has_line() {
    let err = parse("[[stage]]\nid = \"a\"\nkind = \"k\"\ndpes = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("dpes"), "{err}");
}

#[test]
fn overrides_parse_and_reach_their_scope() {
    let p = parse(
        r#"
[[stage]]
id = "a/{x}"
kind = "echo"
matrix = { x = ["1", "2"] }
params = { text = "t", train = { lr = 0.1 } }

[[stage]]
id = "b"
kind = "sleep"
params = { ms = 5 }
"#,
    )
    .unwrap();
    let mut plan = p.plan("default").unwrap();
    let o: Override = "train.lr=0.02".parse().unwrap();
    assert_eq!(
        (o.scope.as_deref(), o.value.clone()),
        (None, serde_json::json!(0.02))
    );
    assert_eq!(plan.apply_override(&o).unwrap(), 2);
    assert_eq!(plan.stages[plan.index["a/1"]].params["train"]["lr"], 0.02);
    let o: Override = "sleep:ms=7".parse().unwrap();
    assert_eq!(plan.apply_override(&o).unwrap(), 1);
    assert_eq!(plan.stages[plan.index["b"]].params["ms"], 7);
    let o: Override = "a/2:text=hello world".parse().unwrap();
    assert_eq!(plan.apply_override(&o).unwrap(), 1);
    assert_eq!(plan.stages[plan.index["a/2"]].params["text"], "hello world");
    assert_eq!(plan.stages[plan.index["a/1"]].params["text"], "t");
    let o: Override = "echo:list=[1, 2]".parse().unwrap();
    plan.apply_override(&o).unwrap();
    assert_eq!(
        plan.stages[plan.index["a/1"]].params["list"],
        serde_json::json!([1, 2])
    );
    let e = plan
        .apply_override(&"nope.x=1".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set nope.x=1: no stage of profile `default` has the param `nope.x`"),
        "{e}"
    );
    let e = plan
        .apply_override(&"zzz/*:x=1".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`zzz/*` is no stage kind, stage or glob"), "{e}");
    let e = "x".parse::<Override>().unwrap_err().to_string();
    assert_eq!(e, "--set x: expected [SCOPE:]PATH=VALUE");
}

fn write_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    d
}

/// The error of loading the pipeline made of `files`.
fn load_err(files: &[(&str, &str)]) -> String {
    let d = write_files(files);
    Pipeline::load(&d.path().join("pipeline.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn included_files_join_the_pipeline() {
    let d = write_files(&[
        (
            "pipeline.toml",
            "[pipeline]\ninclude = [\"experiments/*.toml\"]\n[profile.small]\nmatrix = { d = [\"x\"] }\n",
        ),
        (
            "experiments/a-data.toml",
            "[matrix]\nd = [\"x\", \"y\"]\n\n[[stage]]\nid = \"split/{d}\"\nkind = \"echo\"\nparams = { text = \"{d}\" }\n",
        ),
        (
            "experiments/b-train.toml",
            "[[stage]]\nid = \"train/{d}\"\nkind = \"echo\"\ndeps = [\"split/{d}\"]\nparams = { text = \"t\" }\n\n[targets]\ntrain = [\"train/*\"]\n\n[profile.small.kind.echo]\ntext = \"small\"\n",
        ),
    ]);
    let p = Pipeline::load(&d.path().join("pipeline.toml")).unwrap();
    let all = p.plan("small").unwrap();
    let ids: Vec<&str> = all.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["split/x", "train/x"],
        "the profile's matrix replaces [matrix]"
    );
    assert_eq!(all.stages[1].params["text"], "small");
    assert!(all.stages[1].file.ends_with("experiments/b-train.toml"));
    assert_eq!(all.select(&["train".into()]).unwrap().len(), 2);
}

#[test]
fn included_files_name_themselves_in_errors() {
    let e = load_err(&[
        ("pipeline.toml", "[pipeline]\ninclude = [\"e/*.toml\"]\n"),
        (
            "e/x.toml",
            "\n\n[[stage]]\nid = \"a\"\nkind = \"echo\"\ndeps = [\"nope\"]\n",
        ),
    ]);
    assert!(e.contains("e/x.toml:3: stage `a` depends on `nope`"), "{e}");
    let e = load_err(&[
        (
            "pipeline.toml",
            "[pipeline]\ninclude = [\"e/*.toml\"]\n[targets]\nt = []\n",
        ),
        ("e/x.toml", "[targets]\nt = []\n"),
    ]);
    assert!(
        e.contains("e/x.toml:2: target `t` is also declared in"),
        "{e}"
    );
    let e = load_err(&[
        (
            "pipeline.toml",
            "[pipeline]\ninclude = [\"e/*.toml\"]\n[profile.p.kind.echo]\ntext = \"a\"\n",
        ),
        ("e/x.toml", "[profile.p.kind.echo]\ntext = \"b\"\n"),
    ]);
    assert!(
        e.contains("profile `p`: `kind.echo` is set here and in"),
        "{e}"
    );
    let e = load_err(&[
        ("pipeline.toml", "[pipeline]\ninclude = [\"e/*.toml\"]\n"),
        ("e/x.toml", "[pipeline]\nseed = 1\n"),
    ]);
    assert!(
        e.contains("e/x.toml") && e.contains("unknown field `pipeline`"),
        "{e}"
    );
    let e = load_err(&[("pipeline.toml", "[pipeline]\ninclude = [\"e/*.toml\"]\n")]);
    assert!(e.contains("include `e/*.toml` matches no file"), "{e}");
}

#[test]
fn resources_come_from_the_profile_by_kind_then_glob_and_stay_out_of_params() {
    let p = parse(
        r#"
[profile.c.resources.echo]
cpus = 4
mem = "8G"
[profile.c.resources."a/2"]
cpus = 8
time = "01:00:00"

[[stage]]
id = "a/{x}"
kind = "echo"
matrix = { x = ["1", "2"] }
params = { text = "t" }
"#,
    )
    .unwrap();
    let plan = p.plan("c").unwrap();
    let r = |id: &str| plan.stages[plan.index[id]].resources.clone();
    assert_eq!(
        r("a/1"),
        Resources {
            cpus: Some(4),
            mem: Some("8G".into()),
            time: None,
            partition: None
        }
    );
    assert_eq!(
        (
            r("a/2").cpus,
            r("a/2").mem.as_deref(),
            r("a/2").time.as_deref()
        ),
        (Some(8), Some("8G"), Some("01:00:00"))
    );
    assert_eq!(
        plan.stages[plan.index["a/1"]].params,
        serde_json::json!({ "text": "t" })
    );
}

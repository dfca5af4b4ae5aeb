//! A generated DAG of 1,000 no-op stages: cold run, fully cached run, and status.
//! Each measurement includes parsing `pipeline.toml`, planning and checking params, as the
//! CLI does. Goals on a 2-core machine: cached run and status < 300 ms, cold < 2 s.

use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group};
use tofa_runner::cache::Cache;
use tofa_runner::exec::{RunOptions, Runner};
use tofa_runner::kind::Registry;
use tofa_runner::spec::Pipeline;

const N: usize = 1000;

/// Stage i depends on stages i/2 and i/3 (a wide, deep DAG).
fn pipeline_text() -> String {
    let mut s = String::from("[pipeline]\ncache_dir = \"cache\"\n");
    for i in 0..N {
        s.push_str(&format!(
            "[[stage]]\nid = \"s/{i}\"\nkind = \"noop\"\nparams = {{ value = {i} }}\n"
        ));
        if i > 0 {
            let (a, b) = (i / 2, i / 3);
            if a == b {
                s.push_str(&format!("deps = [\"s/{a}\"]\n"));
            } else {
                s.push_str(&format!("deps = [\"s/{a}\", \"s/{b}\"]\n"));
            }
        }
    }
    s
}

fn run_all(path: &Path, src: &str, registry: &Registry) {
    let p = Pipeline::parse(path, src).expect("parse");
    let plan = p.plan(&p.default_profile).expect("plan");
    let runner = Runner::new(&plan, registry, Cache::new(p.cache_dir.clone())).expect("runner");
    let sel = plan.select(&[]).expect("select");
    let report = runner.run(&sel, &RunOptions::default()).expect("run");
    assert!(report.failure().is_none());
}

fn status_all(path: &Path, src: &str, registry: &Registry) {
    let p = Pipeline::parse(path, src).expect("parse");
    let plan = p.plan(&p.default_profile).expect("plan");
    let runner = Runner::new(&plan, registry, Cache::new(p.cache_dir.clone())).expect("runner");
    let sel = plan.select(&[]).expect("select");
    let st = runner.status(&sel).expect("status");
    assert_eq!(st.len(), N);
}

fn bench(c: &mut Criterion) {
    let src = pipeline_text();
    let registry = Registry::with_builtins();
    let mut g = c.benchmark_group("runner_1000_noop");
    g.sample_size(10);
    g.bench_function("cold_run", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            // The temp dir is returned so that criterion drops (deletes) it outside the timed
            // section: removing the cache is not part of a cold run.
            |dir| {
                run_all(&dir.path().join("pipeline.toml"), &src, &registry);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    let warm = tempfile::tempdir().expect("tempdir");
    let path = warm.path().join("pipeline.toml");
    run_all(&path, &src, &registry);
    g.bench_function("cached_run", |b| b.iter(|| run_all(&path, &src, &registry)));
    g.bench_function("status", |b| b.iter(|| status_all(&path, &src, &registry)));
    g.finish();
}

criterion_group!(benches, bench);

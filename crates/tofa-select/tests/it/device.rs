//! Device benchmarks on an exported tiny subnet.

use std::path::{Path, PathBuf};

use tofa_nn::{SubnetConfig, Supernet, export_subnet};
use tofa_select::device::{BenchOpts, BenchResult, bench_in_fresh_process, bench_in_process};
use tofa_select::{Metric, MetricProvider, Metrics};

use crate::tiny;

fn export(dir: &Path) -> PathBuf {
    let s = tiny();
    let net = Supernet::new(&s, 1).unwrap();
    let out = dir.join("minnet");
    export_subnet(&net, &SubnetConfig::minnet(&s), None, &out).unwrap();
    out
}

fn sane(r: &BenchResult, opts: &BenchOpts) {
    assert_eq!(r.latency.len(), 2);
    assert_eq!((r.latency[0].batch, r.latency[1].batch), (1, opts.batch));
    for l in &r.latency {
        assert_eq!(l.repeats, opts.repeats);
        assert!(
            l.min_ms > 0.0
                && l.min_ms <= l.median_ms
                && l.median_ms <= l.p90_ms
                && l.p90_ms <= l.max_ms,
            "{l:?}"
        );
    }
    assert!(r.memory.peak_rss_bytes > 0 && r.memory.peak_rss_bytes >= r.memory.baseline_rss_bytes);
    assert!(r.memory.param_bytes == r.params * 4 && r.memory.weights_file_bytes > 0);
    assert!(
        r.memory.activation_peak_bytes > 0
            && r.memory.activation_total_bytes >= r.memory.activation_peak_bytes
    );
    assert_eq!(r.machine.backend, "cpu");
    // the GPU fields are for CUDA runs only, and absent from the JSON of a CPU one
    assert!(r.gpu_memory.is_none() && r.gpu_memory_error.is_none() && r.machine.gpus.is_empty());
    let json = serde_json::to_string(r).unwrap();
    assert!(!json.contains("gpu"), "{json}");
    assert!(r.machine.threads >= 1 && !r.machine.cpu_model.is_empty());
    let s = tiny();
    assert_eq!(r.source_id, SubnetConfig::minnet(&s).id());
    assert_eq!(
        r.macs,
        tofa_nn::cost(&s, &SubnetConfig::minnet(&s)).unwrap().macs
    );
}

#[test]
fn bench_in_process_and_fresh_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = export(tmp.path());
    let opts = BenchOpts {
        batch: 4,
        warmup: 1,
        repeats: 5,
        seed: 0,
    };
    let r = bench_in_process(&dir, &opts).unwrap();
    sane(&r, &opts);
    assert!(!r.fresh_process);

    let exe = Path::new(env!("CARGO_BIN_EXE_tofa-device-bench"));
    let f = bench_in_fresh_process(exe, &[], &dir, &opts, "cpu").unwrap();
    sane(&f, &opts);
    assert!(f.fresh_process);
    assert!(f.memory.peak_minus_baseline_bytes > 0, "{:?}", f.memory);

    // measured values feed Algorithm 2's metric table
    let s = tiny();
    let mut m = Metrics::new(&s);
    m.insert_bench(&f, 1).unwrap();
    let v = m
        .value(Metric::LatencyMs, &SubnetConfig::minnet(&s))
        .unwrap();
    assert_eq!(v, f.latency[0].median_ms);
    assert!(
        m.insert_bench(&f, 3)
            .unwrap_err()
            .to_string()
            .contains("batch 3")
    );
}

#[test]
fn child_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let exe = Path::new(env!("CARGO_BIN_EXE_tofa-device-bench"));
    let err = bench_in_fresh_process(exe, &[], &missing, &BenchOpts::default(), "cpu")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("model.json"), "{err}");
    let child = |args: &[&str]| {
        let out = std::process::Command::new(exe).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = child(&["--bogus"]);
    assert_eq!(code, Some(2), "usage errors exit 2: {err}");
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
    let (code, err) = child(&["d", "--batch", "x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("invalid value 'x' for '--batch <BATCH>'"),
        "{err}"
    );
    let (code, err) = child(&["d", "--device", "gpu"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("device `gpu`: expected `cpu`, `cuda` or `cuda:N`"),
        "{err}"
    );
    if !cfg!(feature = "cuda") {
        let dir = export(tmp.path());
        let (code, err) = child(&[dir.to_str().unwrap(), "--device", "cuda"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("build with `--features cuda`"), "{err}");
    }
    let (code, err) = child(&[missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "a failed benchmark exits 1: {err}");
}

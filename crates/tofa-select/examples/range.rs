//! Latency and peak memory of the maxnet and minnet of a built-in space (Figure 7's range),
//! each measured in a fresh process (this example re-executes itself as the child).
//!
//! `cargo run --release -p tofa-select --example range -- [SPACE] [BATCH] [REPEATS]`
//! (defaults: `small 8 20`). Prints a Markdown table; the weights are random, which does not
//! change latency or memory.

use clap::Parser;
use tofa_nn::{SearchSpace, SubnetConfig, Supernet, export_subnet};
use tofa_select::device::{BenchOpts, DeviceBenchArgs, bench_in_fresh_process, device_bench_main};

/// The child's command line: `range device-bench MODEL_DIR ...`.
#[derive(Parser)]
struct Child {
    #[command(flatten)]
    args: DeviceBenchArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("device-bench") {
        let child =
            Child::parse_from(std::iter::once("range".to_string()).chain(args.into_iter().skip(1)));
        return Ok(device_bench_main(&child.args)?);
    }
    let space = SearchSpace::builtin(args.first().map_or("small", String::as_str))?;
    let opts = BenchOpts {
        batch: args.get(1).map_or(Ok(8), |s| s.parse())?,
        repeats: args.get(2).map_or(Ok(20), |s| s.parse())?,
        ..BenchOpts::default()
    };
    let net = Supernet::new(&space, 0)?;
    let tmp = std::env::temp_dir().join(format!("tofa-select-range-{}", std::process::id()));
    let exe = std::env::current_exe()?;
    println!(
        "| subnet | MMACs | params | batch 1 median / p90 ms | batch {} median / p90 ms | peak RSS - baseline MiB | weights MiB | activations peak / total MiB |",
        opts.batch
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut machine = None;
    for (name, cfg) in [
        ("maxnet", SubnetConfig::maxnet(&space)),
        ("minnet", SubnetConfig::minnet(&space)),
    ] {
        let dir = tmp.join(name);
        export_subnet(&net, &cfg, None, &dir)?;
        let r = bench_in_fresh_process(&exe, &["device-bench".into()], &dir, &opts, "cpu")?;
        let (b1, bn) = (&r.latency[0], r.latency.last().unwrap_or(&r.latency[0]));
        println!(
            "| {name} `{}` | {:.2} | {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.1} | {:.2} | {:.2} / {:.2} |",
            r.source_id,
            r.macs as f64 / 1e6,
            r.params,
            b1.median_ms,
            b1.p90_ms,
            bn.median_ms,
            bn.p90_ms,
            r.memory.peak_minus_baseline_bytes as f64 / (1 << 20) as f64,
            r.memory.weights_file_bytes as f64 / (1 << 20) as f64,
            r.memory.activation_peak_bytes as f64 / (1 << 20) as f64,
            r.memory.activation_total_bytes as f64 / (1 << 20) as f64,
        );
        machine = Some(r.machine);
    }
    if let Some(m) = machine {
        println!(
            "\nmachine: {} ({} logical cpus, {} threads, backend {}, avx {})",
            m.cpu_model, m.logical_cpus, m.threads, m.backend, m.avx
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

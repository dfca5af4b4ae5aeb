//! Benchmarks one exported model: `tofa-device-bench MODEL_DIR [--json] [--batch N] ...`
//! (see `tofa_select::device`). The pipeline exposes the same command line as a hidden
//! subcommand; this binary lets the crate's tests run the fresh-process path.

use clap::Parser;
use tofa_select::device::{DeviceBenchArgs, device_bench_main};

/// Measures one exported model's latency and memory in this process.
#[derive(Debug, Parser)]
#[command(name = "tofa-device-bench")]
struct Cli {
    #[command(flatten)]
    args: DeviceBenchArgs,
}

fn main() {
    // SAFETY: first thing in `main`, before any thread is spawned.
    unsafe { tofa_nn::runtime::tune_process() };
    let cli = Cli::parse();
    if let Err(e) = device_bench_main(&cli.args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

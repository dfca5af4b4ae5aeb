//! Benchmarks one exported model: `tofa-device-bench MODEL_DIR [--json] [--batch N] ...`
//! (see `tofa_select::device`). The pipeline exposes the same command line as a hidden
//! subcommand; this binary lets the crate's tests run the fresh-process path.

fn main() {
    tofa_nn::runtime::tune_allocator();
    if let Err(e) = tofa_select::device::device_bench_main(std::env::args().skip(1)) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

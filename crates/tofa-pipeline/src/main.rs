//! `tofa-pipeline`: run the declared DAG of `pipeline.toml` with caching.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // SAFETY: first thing in `main`, before any thread is spawned.
    unsafe { tofa_nn::runtime::tune_process() };
    // One thread pool per stage, sized by the runner; keep candle/gemm from oversubscribing.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: called before any thread is spawned.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code(&e)
        }
    }
}

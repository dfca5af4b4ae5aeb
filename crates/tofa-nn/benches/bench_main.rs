//! Criterion benches: `cargo bench -p tofa-nn` (set `RAYON_NUM_THREADS` to compare with the
//! PyTorch script `scripts/torch_timing.py` on the same number of threads).

mod benchmarks;

fn main() {
    // as every binary of the workspace does (see `tofa_nn::runtime`)
    // SAFETY: first thing in `main`, before any thread is spawned.
    unsafe { tofa_nn::runtime::tune_process() };
    benchmarks::dwconv::benches();
    benchmarks::block::benches();
    benchmarks::train_step::benches();
    benchmarks::lite0::benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

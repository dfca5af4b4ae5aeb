//! Criterion benches: `cargo bench -p tofa-nn` (set `RAYON_NUM_THREADS` to compare with the
//! PyTorch script `scripts/torch_timing.py` on the same number of threads).

mod benchmarks;

criterion::criterion_main! {
    benchmarks::dwconv::benches,
    benchmarks::block::benches,
    benchmarks::train_step::benches,
}

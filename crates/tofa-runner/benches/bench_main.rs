//! Runner overhead benchmarks: `cargo bench -p tofa-runner`.

mod benchmarks;

criterion::criterion_main!(benchmarks::runner::benches);

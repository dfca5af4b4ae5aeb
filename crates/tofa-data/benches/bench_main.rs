mod benchmarks;

criterion::criterion_main!(benchmarks::batch_assembly::benches);

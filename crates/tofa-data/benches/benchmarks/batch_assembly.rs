//! Batch assembly throughput (images/s) on a 2-thread rayon pool: weak views, and weak+strong
//! views of the same images (what an unlabelled batch costs), at 32, 64 and 224 pixels.
//!
//! `cargo bench -p tofa-data --bench bench_main`

use std::time::Duration;

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput};
use tofa_data::batch::assemble;
use tofa_data::dataset::numbered_classes;
use tofa_data::{BatchConfig, Dataset, View};

const BATCH: usize = 32;

fn dataset(side: usize) -> Dataset {
    let n = 64;
    let pixels = (0..n * side * side * 3)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let labels = (0..n as u32).map(|i| i % 10).collect();
    Dataset::new(
        "bench",
        (side, side, 3),
        pixels,
        labels,
        numbered_classes(10),
    )
    .expect("valid bench dataset")
}

fn batch_assembly(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a 2-thread pool");
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("batch_assembly_2_threads");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    for side in [32usize, 64, 224] {
        let ds = dataset(side);
        let cfg = BatchConfig::new((side, side));
        let idx: Vec<u32> = (0..BATCH as u32).collect();
        let mut step = 0u64;
        group.bench_with_input(BenchmarkId::new("weak", side), &side, |b, _| {
            b.iter(|| {
                step += 1;
                pool.install(|| assemble(&ds, &idx, &cfg, View::Weak, (0, 2, step), &dev))
                    .expect("weak batch")
            });
        });
        group.bench_with_input(BenchmarkId::new("weak+strong", side), &side, |b, _| {
            b.iter(|| {
                step += 1;
                pool.install(|| {
                    let w = assemble(&ds, &idx, &cfg, View::Weak, (0, 2, step), &dev)?;
                    let s = assemble(&ds, &idx, &cfg, View::Strong, (0, 3, step), &dev)?;
                    Ok::<_, tofa_data::DataError>((w, s))
                })
                .expect("weak and strong batches")
            });
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, batch_assembly);

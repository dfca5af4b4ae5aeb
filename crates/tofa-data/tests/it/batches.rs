use candle_core::{DType, Device};
use tofa_data::batch::{all_indices, assemble, eval_batches};
use tofa_data::{BatchConfig, Normalize, ShuffleSampler, TrainLoader, View};

use crate::toy;

fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn batches_have_shape_range_and_are_thread_count_independent() {
    let ds = toy(16, 4, (12, 12));
    let mut cfg = BatchConfig::new((8, 8));
    cfg.normalize = Normalize::IDENTITY;
    let idx: Vec<u32> = (0..16).collect();
    let dev = Device::Cpu;
    for view in [View::Plain, View::Weak, View::Strong] {
        let one = with_threads(1, || {
            assemble(&ds, &idx, &cfg, view, (5, 1, 2), &dev).unwrap()
        });
        let two = with_threads(2, || {
            assemble(&ds, &idx, &cfg, view, (5, 1, 2), &dev).unwrap()
        });
        assert_eq!(one.dims(), &[16, 3, 8, 8]);
        assert_eq!(one.dtype(), DType::F32);
        let a: Vec<f32> = one.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = two.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{view:?} depends on the thread count");
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    let weak = assemble(&ds, &idx, &cfg, View::Weak, (5, 1, 2), &dev).unwrap();
    let other = assemble(&ds, &idx, &cfg, View::Weak, (6, 1, 2), &dev).unwrap();
    let diff: f32 = (weak - other)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff > 0.0);
}

#[test]
fn normalisation_uses_mean_and_std() {
    let ds = toy(1, 1, (4, 4));
    let cfg = BatchConfig::new((4, 4));
    let t = assemble(&ds, &[0], &cfg, View::Plain, (0, 0, 0), &Device::Cpu).unwrap();
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let raw = f32::from(ds.image(0)[0]);
    let want = (raw / 255.0 - 0.485) / 0.229;
    assert!((v[0] - want).abs() < 1e-5, "{} vs {want}", v[0]);
}

#[test]
fn sampler_covers_each_epoch_once() {
    let mut s = ShuffleSampler::new((0..10).collect(), 3).unwrap();
    let mut first: Vec<u32> = s.next_batch(4);
    first.extend(s.next_batch(4));
    let spill = s.next_batch(4); // 2 from epoch 0, 2 from epoch 1
    first.extend(&spill[..2]);
    first.sort_unstable();
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    assert_eq!(s.epoch(), 1);
    let mut a = ShuffleSampler::new((0..10).collect(), 3).unwrap();
    let mut b = ShuffleSampler::new((0..10).collect(), 3).unwrap();
    let mut c = ShuffleSampler::new((0..10).collect(), 4).unwrap();
    let first = a.next_batch(12);
    assert_eq!(first, b.next_batch(12));
    assert_ne!(first, c.next_batch(12));
}

#[test]
fn train_loader_gives_weak_and_strong_views_of_the_same_images() {
    let ds = toy(40, 4, (10, 10));
    let labelled: Vec<u32> = (0..8).collect();
    let unlabelled: Vec<u32> = (8..40).collect();
    let cfg = BatchConfig::new((8, 8));
    let mut loader =
        TrainLoader::new(&ds, &labelled, &unlabelled, (4, 6), cfg, 11, Device::Cpu).unwrap();
    let b = loader.next().unwrap().unwrap();
    assert_eq!(b.step, 0);
    assert_eq!(b.labelled.images.dims(), &[4, 3, 8, 8]);
    assert!(b.labelled.indices.iter().all(|i| *i < 8));
    let u = b.unlabelled.unwrap();
    assert_eq!(u.weak.dims(), &[6, 3, 8, 8]);
    assert_eq!(u.strong.dims(), &[6, 3, 8, 8]);
    assert!(u.indices.iter().all(|i| *i >= 8));
    let labels: Vec<u32> = u.labels.to_vec1().unwrap();
    assert_eq!(
        labels,
        u.indices
            .iter()
            .map(|&i| ds.label(i as usize))
            .collect::<Vec<_>>()
    );
    // same seed, same stream of batches
    let mut again =
        TrainLoader::new(&ds, &labelled, &unlabelled, (4, 6), cfg, 11, Device::Cpu).unwrap();
    let b2 = again.next().unwrap().unwrap();
    let s1: Vec<f32> = u.strong.flatten_all().unwrap().to_vec1().unwrap();
    let s2: Vec<f32> = b2
        .unlabelled
        .unwrap()
        .strong
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(s1, s2);
    assert_eq!(loader.next().unwrap().unwrap().step, 1);
}

#[test]
fn eval_batches_are_sequential_and_unaugmented() {
    let ds = toy(10, 2, (6, 6));
    let idx = all_indices(&ds);
    let dev = Device::Cpu;
    let mut cfg = BatchConfig::new((6, 6));
    cfg.normalize = Normalize::IDENTITY;
    let batches: Vec<_> = eval_batches(&ds, &idx, 4, cfg, &dev)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    let v: Vec<f32> = batches[2].images.flatten_all().unwrap().to_vec1().unwrap();
    // image 8, channel 0, pixel 0
    assert!((v[0] - f32::from(ds.image(8)[0]) / 255.0).abs() < 1e-6);
}

#[test]
fn bad_augmentation_settings_are_errors_not_panics() {
    let ds = toy(2, 2, (4, 4));
    let mut cfg = BatchConfig::new((4, 4));
    cfg.weak.scale = (0.9, 0.2);
    let err = assemble(&ds, &[0], &cfg, View::Weak, (0, 0, 0), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weak.scale"), "{err}");
    let mut cfg = BatchConfig::new((4, 4));
    cfg.strong = tofa_data::augment::StrongAug::RandAugment {
        num_ops: 2,
        magnitude: 31,
        num_bins: 31,
    };
    let err = assemble(&ds, &[0], &cfg, View::Strong, (0, 0, 0), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("strong.magnitude"), "{err}");
    let err = assemble(
        &ds,
        &[5],
        &BatchConfig::new((4, 4)),
        View::Plain,
        (0, 0, 0),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("index 5 out of range"), "{err}");
}

#[test]
fn train_loader_skip_to_gives_the_batches_of_an_uninterrupted_loader() {
    let ds = toy(40, 4, (10, 10));
    let labelled: Vec<u32> = (0..8).collect();
    let unlabelled: Vec<u32> = (8..40).collect();
    let cfg = BatchConfig::new((8, 8));
    let mut full =
        TrainLoader::new(&ds, &labelled, &unlabelled, (3, 5), cfg, 7, Device::Cpu).unwrap();
    for _ in 0..5 {
        full.next_batch().unwrap();
    }
    let want = full.next_batch().unwrap();
    let mut skipped =
        TrainLoader::new(&ds, &labelled, &unlabelled, (3, 5), cfg, 7, Device::Cpu).unwrap();
    skipped.skip_to(5);
    assert_eq!(skipped.step(), 5);
    let got = skipped.next_batch().unwrap();
    assert_eq!(got.step, want.step);
    assert_eq!(got.labelled.indices, want.labelled.indices);
    let a: Vec<f32> = got
        .labelled
        .images
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = want
        .labelled
        .images
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        got.unlabelled.unwrap().indices,
        want.unlabelled.unwrap().indices
    );
}

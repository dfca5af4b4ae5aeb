use tofa_data::Dataset;
use tofa_data::synthetic::{SyntheticConfig, TaskSpec, generate_task};

/// Accuracy of a nearest-class-mean classifier on raw pixels.
fn nearest_mean_accuracy(train: &Dataset, test: &Dataset) -> f64 {
    let k = train.num_classes();
    let n = train.image_len();
    let mut means = vec![vec![0f64; n]; k];
    for i in 0..train.len() {
        let c = train.label(i) as usize;
        for (m, &v) in means[c].iter_mut().zip(train.image(i)) {
            *m += f64::from(v);
        }
    }
    for (c, count) in train.class_counts().into_iter().enumerate() {
        means[c].iter_mut().for_each(|m| *m /= count as f64);
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let img = test.image(i);
            let best = (0..k)
                .min_by(|&a, &b| {
                    let d = |c: usize| {
                        means[c]
                            .iter()
                            .zip(img)
                            .map(|(m, &v)| (m - f64::from(v)).powi(2))
                            .sum::<f64>()
                    };
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            best == test.label(i) as usize
        })
        .count();
    correct as f64 / test.len() as f64
}

#[test]
fn tasks_are_deterministic_per_seed() {
    let spec = TaskSpec::new("t", 4, (3, 2), 0.5, 0.5);
    let a = generate_task(1, &spec, (16, 16)).unwrap();
    let b = generate_task(1, &spec, (16, 16)).unwrap();
    let c = generate_task(2, &spec, (16, 16)).unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
    assert_ne!(a.train.digest(), c.train.digest());
    assert_eq!(a.train.len(), 12);
    assert_eq!(a.train.class_counts(), vec![3; 4]);
    assert_eq!(
        (a.train.height(), a.train.width(), a.train.channels()),
        (16, 16, 3)
    );
    assert_ne!(a.train.image(0), a.test.image(0));
}

#[test]
fn default_suite_shape() {
    let cfg = SyntheticConfig::default();
    assert_eq!(cfg.size, (32, 32));
    assert!(cfg.source.classes >= 100);
    assert_eq!(cfg.targets.len(), 6);
    assert!(cfg.targets.iter().all(|t| t.classes < cfg.source.classes));
}

#[test]
fn tasks_are_learnable_but_far_from_trivial() {
    let spec = TaskSpec::new("probe", 10, (30, 20), 0.6, 0.3);
    let tt = generate_task(0, &spec, (32, 32)).unwrap();
    let acc = nearest_mean_accuracy(&tt.train, &tt.test);
    eprintln!("nearest-class-mean pixel accuracy: {acc:.3} (chance 0.100)");
    assert!(acc > 0.15, "no signal: {acc}");
    assert!(acc < 0.7, "too easy: {acc}");
}

/// Prints a nearest-class-mean pixel baseline for every task of the default suite:
/// `cargo test -p tofa-data --test it -- --ignored --nocapture default_suite_baselines`.
#[test]
#[ignore = "prints a report; about a second in release, several in debug"]
fn default_suite_baselines() {
    let cfg = SyntheticConfig::default();
    for spec in std::iter::once(&cfg.source).chain(&cfg.targets) {
        let tt = generate_task(cfg.world_seed, spec, cfg.size).unwrap();
        let acc = nearest_mean_accuracy(&tt.train, &tt.test);
        eprintln!(
            "{:16} classes {:3} train {:6} test {:5} nearest-mean {:.3} (chance {:.3})",
            spec.name,
            spec.classes,
            tt.train.len(),
            tt.test.len(),
            acc,
            1.0 / spec.classes as f64
        );
    }
}

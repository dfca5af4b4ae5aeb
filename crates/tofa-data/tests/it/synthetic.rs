use tofa_data::Dataset;
use tofa_data::synthetic::{SyntheticConfig, TaskSpec, generate_task};

/// One feature vector per image.
type Features = fn(&Dataset, usize) -> Vec<f64>;

/// Each image's colour histogram (4 levels a channel, 64 bins): what a class told apart by
/// its parts' colours would show, blind to where and what shape they are.
fn colours(d: &Dataset, i: usize) -> Vec<f64> {
    let mut hist = vec![0f64; 64];
    for px in d.image(i).chunks_exact(3) {
        let bin = |v: u8| usize::from(v >> 6);
        hist[bin(px[0]) * 16 + bin(px[1]) * 4 + bin(px[2])] += 1.0;
    }
    let n = (d.image_len() / 3) as f64;
    hist.iter().map(|a| a / n).collect()
}

/// Each image's edge map: `|dx| + |dy|` of its grey level, blind to which colour a shape has.
fn edges(d: &Dataset, i: usize) -> Vec<f64> {
    let (h, w) = (d.height(), d.width());
    let img = d.image(i);
    let grey = |y: usize, x: usize| {
        let o = (y * w + x) * 3;
        img[o..o + 3].iter().map(|&v| f64::from(v)).sum::<f64>() / 3.0
    };
    let mut out = Vec::with_capacity((h - 1) * (w - 1));
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            out.push((grey(y, x + 1) - grey(y, x)).abs() + (grey(y + 1, x) - grey(y, x)).abs());
        }
    }
    out
}

/// Accuracy of a nearest-class-mean classifier on `features`.
fn nearest_mean_accuracy(train: &Dataset, test: &Dataset, features: Features) -> f64 {
    let k = train.num_classes();
    let mut means: Vec<Vec<f64>> = vec![Vec::new(); k];
    for i in 0..train.len() {
        let f = features(train, i);
        let m = &mut means[train.label(i) as usize];
        if m.is_empty() {
            *m = vec![0.0; f.len()];
        }
        m.iter_mut().zip(&f).for_each(|(a, v)| *a += v);
    }
    for (c, count) in train.class_counts().into_iter().enumerate() {
        means[c].iter_mut().for_each(|m| *m /= count as f64);
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let f = features(test, i);
            let d = |c: usize| {
                means[c]
                    .iter()
                    .zip(&f)
                    .map(|(m, v)| (m - v).powi(2))
                    .sum::<f64>()
            };
            let best = (0..k).min_by(|&a, &b| d(a).total_cmp(&d(b))).unwrap();
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

/// Classes are shapes, not colours: the paper's augmentations (colour jitter, AutoAugment's
/// Invert, Solarize, Equalize, ...) rewrite colours, so a class must survive them.
#[test]
fn classes_are_told_by_shape_not_colour() {
    let spec = TaskSpec::new("probe", 10, (60, 40), 0.6, 0.3);
    let tt = generate_task(0, &spec, (32, 32)).unwrap();
    let by_colour = nearest_mean_accuracy(&tt.train, &tt.test, colours);
    let by_shape = nearest_mean_accuracy(&tt.train, &tt.test, edges);
    eprintln!(
        "nearest-class-mean accuracy: colour histogram {by_colour:.3}, edges {by_shape:.3} (chance 0.100)"
    );
    // 400 test images: chance is 0.10 +- 0.015
    assert!(by_colour < 0.16, "colour tells the class: {by_colour}");
    assert!(by_shape > 0.25, "shape does not: {by_shape}");
    assert!(by_shape < 0.8, "too easy: {by_shape}");
}

/// Prints nearest-class-mean baselines (colour histograms, edge maps) for every task of the default suite:
/// `cargo test -p tofa-data --test it -- --ignored --nocapture default_suite_baselines`.
#[test]
#[ignore = "prints a report; about a second in release, several in debug"]
fn default_suite_baselines() {
    let cfg = SyntheticConfig::default();
    for spec in std::iter::once(&cfg.source).chain(&cfg.targets) {
        let tt = generate_task(cfg.world_seed, spec, cfg.size).unwrap();
        let colour = nearest_mean_accuracy(&tt.train, &tt.test, colours);
        let shape = nearest_mean_accuracy(&tt.train, &tt.test, edges);
        eprintln!(
            "{:16} classes {:3} train {:6} test {:5} nearest-mean: colour {colour:.3} edges {shape:.3} (chance {:.3})",
            spec.name,
            spec.classes,
            tt.train.len(),
            tt.test.len(),
            1.0 / spec.classes as f64
        );
    }
}

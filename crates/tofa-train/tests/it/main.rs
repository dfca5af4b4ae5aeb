//! Integration tests of tofa-train: the `tiny` space on small synthetic tasks, a few
//! iterations each (fast in the dev profile).

use std::panic::{AssertUnwindSafe, catch_unwind};

use tofa_data::synthetic::{TaskSpec, generate_task};
use tofa_data::{BatchConfig, TrainTest};
use tofa_nn::{SearchSpace, SubnetConfig, Supernet};
use tofa_train::checkpoint;
use tofa_train::{
    PretrainMode, SingleMode, Stage, TrainConfig, TrainData, TrainError, Variant,
    calibration_batches, evaluate, evaluate_raw, pretrain, train_single, train_tofa,
};

/// A 4-class task, 32x32; the first 16 training images labelled, the rest unlabelled.
struct Task {
    tt: TrainTest,
    labelled: Vec<u32>,
    unlabelled: Vec<u32>,
}

fn task(train_per_class: usize, difficulty: f32) -> Task {
    let tt = generate_task(
        3,
        &TaskSpec::new("t", 4, (train_per_class, 16), difficulty, 0.0),
        (32, 32),
    )
    .unwrap();
    let n = tt.train.len() as u32;
    Task {
        tt,
        labelled: (0..16).collect(),
        unlabelled: (16..n).collect(),
    }
}

impl Task {
    fn data(&self) -> TrainData<'_> {
        TrainData {
            dataset: &self.tt.train,
            labelled: &self.labelled,
            unlabelled: &self.unlabelled,
            batch: BatchConfig::new((32, 32)),
        }
    }
}

fn space() -> SearchSpace {
    SearchSpace::builtin("tiny")
        .unwrap()
        .with_num_classes(4)
        .unwrap()
}

fn small_cfg(iterations: u64, variant: Variant) -> TrainConfig {
    TrainConfig {
        iterations,
        batch_labelled: 8,
        batch_unlabelled: 8,
        warmup_epochs: 1.0,
        // warm-up in epochs as written, not scaled to the paper's 10,000 iterations
        warmup_reference_iterations: iterations,
        variant,
        seed: 5,
        ..TrainConfig::default()
    }
}

/// Every saved tensor of `net` as bits, by name.
fn weights(net: &Supernet) -> Vec<(String, Vec<u32>)> {
    net.tensors()
        .into_iter()
        .map(|(k, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            (k, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

#[test]
fn each_variant_has_its_loss_terms_and_records_omega() {
    let t = task(12, 0.3);
    let space = space();
    let min = SubnetConfig::minnet(&space);
    for v in Variant::ALL {
        let mut net = Supernet::new(&space, 1).unwrap();
        let mut seen = 0;
        let out = train_tofa(&mut net, &t.data(), &small_cfg(2, v), None, &mut |p| {
            assert_eq!((p.stage, p.iterations), (Stage::Tofa, 2));
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 2);
        assert_eq!(out.curve.len(), 2);
        for r in &out.curve {
            assert!(r.lab.is_finite() && r.lab > 0.0);
            // eq. (3): the sandwich subnets are distilled on the labelled batch in every variant
            assert!(
                r.dist_lab.is_some_and(|d| d.is_finite() && d >= 0.0),
                "{v:?}"
            );
            assert_eq!(r.fm.is_some(), v.fixmatch(), "{v:?}");
            assert_eq!(r.mask_rate.is_some(), v.fixmatch(), "{v:?}");
            assert_eq!(r.dist_unlab.is_some(), v.distil_unlabelled(), "{v:?}");
            let sum =
                r.lab + r.fm.unwrap_or(0.0) + r.dist_lab.unwrap() + r.dist_unlab.unwrap_or(0.0);
            assert!(
                (sum - r.total).abs() < 1e-4 * (1.0 + sum.abs()),
                "{v:?}: {r:?}"
            );
        }
        // Omega: A_sample = 2 random + minnet per iteration (Algorithm 1, lines 13, 18-19),
        // no longer the maxnet too (that made 8)
        let o = &out.omega;
        assert_eq!(o.entries().iter().map(|e| e.count).sum::<u64>(), 6);
        let emin = o.get(&min.id()).expect("minnet in omega");
        assert_eq!(emin.last_iter, 2);
        assert!(emin.cumulative >= 3);
        // cost: (8 + 8) images per iteration for the variants reading unlabelled data
        let per = if v == Variant::Lab { 8 } else { 16 };
        assert_eq!(out.cost.images_processed, 2 * per);
        assert_eq!(out.cost.iterations, 2);
        assert!(out.cost.train_macs > 0 && out.cost.wall_s > 0.0);
        assert!(out.curve_csv().lines().count() == 3);
    }
}

#[test]
fn lr_follows_warmup_then_cosine_to_zero() {
    let t = task(12, 0.3);
    // 16 labelled / batch 8 -> 2 iterations per epoch; 1 warm-up epoch -> W = 2; T = 6
    let cfg = TrainConfig {
        lr: 0.04,
        ..small_cfg(6, Variant::Lab)
    };
    let mut net = Supernet::new(&space(), 1).unwrap();
    let max = SubnetConfig::maxnet(net.space());
    let out = train_single(
        &mut net,
        &max,
        SingleMode::Labelled,
        &t.data(),
        &cfg,
        None,
        &mut |_| {},
    )
    .unwrap();
    let lrs: Vec<f64> = out.curve.iter().map(|r| r.lr).collect();
    let pi = std::f64::consts::PI;
    let want = [
        0.02,
        0.04,
        0.02 * (1.0 + (pi / 4.0).cos()),
        0.02,
        0.02 * (1.0 + (3.0 * pi / 4.0).cos()),
        0.0,
    ];
    for (g, w) in lrs.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{lrs:?}");
    }
}

#[test]
fn weight_decay_is_not_applied_to_biases_or_bn() {
    let t = task(12, 0.3);
    let space = space();
    let max = SubnetConfig::maxnet(&space);
    let run = |wd: f64| {
        let mut net = Supernet::new(&space, 1).unwrap();
        let cfg = TrainConfig {
            weight_decay: wd,
            dropout: 0.0,
            drop_connect: 0.0,
            ..small_cfg(1, Variant::Lab)
        };
        train_single(
            &mut net,
            &max,
            SingleMode::Labelled,
            &t.data(),
            &cfg,
            None,
            &mut |_| {},
        )
        .unwrap();
        net
    };
    let (a, b) = (run(0.0), run(0.5));
    let (mut decayed, mut kept) = (0, 0);
    for p in a.params() {
        let wa: Vec<f32> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let wb: Vec<f32> = b
            .var(&p.name)
            .unwrap()
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let is_bias_or_bn = p.name.contains("bn") || p.name.ends_with("bias");
        assert_eq!(p.decay, !is_bias_or_bn, "{}", p.name);
        if p.decay {
            decayed += usize::from(wa != wb);
        } else {
            assert_eq!(wa, wb, "{} was decayed", p.name);
            kept += 1;
        }
    }
    assert!(decayed > 0 && kept > 0, "{decayed} {kept}");
}

#[test]
fn same_seed_same_weights_and_another_seed_differs() {
    let t = task(12, 0.3);
    let space = space();
    let run = |seed| {
        let mut net = Supernet::new(&space, 1).unwrap();
        let cfg = TrainConfig {
            seed,
            ..small_cfg(2, Variant::Full)
        };
        let out = train_tofa(&mut net, &t.data(), &cfg, None, &mut |_| {}).unwrap();
        (weights(&net), out.curve)
    };
    let (a, ca) = run(5);
    let (b, cb) = run(5);
    assert!(a == b && ca == cb);
    let (c, _) = run(6);
    assert!(a != c);
}

#[test]
fn resume_after_a_kill_ends_bit_identical() {
    let t = task(12, 0.3);
    let space = space();
    let cfg = TrainConfig {
        checkpoint_every: 2,
        ..small_cfg(5, Variant::Full)
    };
    let mut straight = Supernet::new(&space, 1).unwrap();
    let want = train_tofa(&mut straight, &t.data(), &cfg, None, &mut |_| {}).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut net = Supernet::new(&space, 1).unwrap();
    // "kill" the run during iteration 3's report: checkpoint 2 is on disk
    let killed = catch_unwind(AssertUnwindSafe(|| {
        train_tofa(&mut net, &t.data(), &cfg, Some(dir.path()), &mut |p| {
            if p.iter == 3 {
                panic!("killed");
            }
        })
    }));
    assert!(killed.is_err());
    let (it, _) = checkpoint::latest(dir.path()).unwrap().unwrap();
    assert_eq!(it, 2);
    // a fresh process: new network from the same init, resumed from the directory
    let mut net = Supernet::new(&space, 1).unwrap();
    let got = train_tofa(&mut net, &t.data(), &cfg, Some(dir.path()), &mut |_| {}).unwrap();
    assert_eq!(got.resumed_from, Some(2));
    assert!(
        weights(&net) == weights(&straight),
        "resumed weights differ"
    );
    assert_eq!(got.curve, want.curve);
    assert_eq!(got.omega, want.omega);
    assert_eq!(got.cost.images_processed, want.cost.images_processed);
    assert_eq!(got.cost.train_macs, want.cost.train_macs);
    // the final checkpoint is the only one left
    assert_eq!(checkpoint::latest(dir.path()).unwrap().unwrap().0, 5);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // another config refuses the checkpoint
    let other = TrainConfig { lr: 0.02, ..cfg };
    let err = train_tofa(&mut net, &t.data(), &other, Some(dir.path()), &mut |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
}

#[test]
fn non_finite_loss_stops_naming_iteration_and_term_and_keeps_the_checkpoint() {
    let t = task(12, 0.3);
    let space = space();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        lr: 1e30,
        warmup_epochs: 0.0,
        checkpoint_every: 1,
        ..small_cfg(20, Variant::Lab)
    };
    let mut net = Supernet::new(&space, 1).unwrap();
    let err = train_tofa(&mut net, &t.data(), &cfg, Some(dir.path()), &mut |_| {}).unwrap_err();
    if let TrainError::NonFiniteWeights { iter, .. } = &err {
        // the update of `iter` broke the weights before any loss did: same guarantees
        let (last, _) = checkpoint::latest(dir.path()).unwrap().unwrap();
        assert_eq!(last, iter - 1, "{err}");
        return;
    }
    let TrainError::NonFinite {
        stage, iter, term, ..
    } = err
    else {
        panic!("expected a non-finite loss, got {err}");
    };
    assert_eq!(stage, Stage::Tofa);
    assert!(iter >= 2, "{iter}");
    let msg = err_msg(stage, iter, term);
    assert!(
        msg.contains(&format!("iteration {iter}")) && msg.contains(term),
        "{msg}"
    );
    let (last, path) = checkpoint::latest(dir.path()).unwrap().unwrap();
    assert_eq!(last, iter - 1);
    let state = checkpoint::read_state(&path).unwrap();
    assert_eq!(state.iteration, iter - 1);
    assert!(state.curve.iter().all(|r| r.total.is_finite()));
    let mut back = Supernet::new(&space, 9).unwrap();
    back.load(&path.join("weights.safetensors")).unwrap();
    assert!(
        weights(&back)
            .iter()
            .all(|(_, v)| v.iter().all(|b| f32::from_bits(*b).is_finite())),
        "the kept checkpoint holds non-finite weights"
    );
}

fn err_msg(stage: Stage, iter: u64, term: &'static str) -> String {
    TrainError::NonFinite {
        stage,
        iter,
        term,
        value: f64::NAN,
    }
    .to_string()
}

#[test]
fn training_lifts_accuracy_well_above_chance() {
    let t = task(40, 0.1);
    let space = space();
    let mut net = Supernet::new(&space, 1).unwrap();
    let all: Vec<u32> = (0..t.tt.train.len() as u32).collect();
    let data = TrainData {
        labelled: &all,
        unlabelled: &[],
        ..t.data()
    };
    let cfg = TrainConfig {
        lr: 0.1,
        batch_labelled: 16,
        warmup_epochs: 0.5,
        dropout: 0.0,
        // from scratch, classes told by shape alone need more steps than the colour-cued
        // ones of the old generator did (60): 62.5% here at 200
        ..small_cfg(200, Variant::Lab)
    };
    let out = train_tofa(&mut net, &data, &cfg, None, &mut |_| {}).unwrap();
    let first = out.curve_averaged(10);
    assert!(first.last().unwrap().lab < first[0].lab, "{first:?}");
    let test = &t.tt.test;
    let idx: Vec<u32> = (0..test.len() as u32).collect();
    let bc = BatchConfig::new((32, 32));
    let calib = calibration_batches(&t.tt.train, &all, 4, 32, bc, 0).unwrap();
    let max = SubnetConfig::maxnet(&space);
    let acc = evaluate(&net, &max, &calib, test, &idx, bc, 32).unwrap();
    assert_eq!(acc.images, 64);
    assert!(acc.accuracy >= 0.5, "maxnet accuracy {acc:?} (chance 0.25)");
    let min = SubnetConfig::minnet(&space);
    let acc_min = evaluate(&net, &min, &calib, test, &idx, bc, 32).unwrap();
    assert!(acc_min.accuracy > 0.3, "minnet accuracy {acc_min:?}");
    let raw = evaluate_raw(&net, &max, test, &idx, bc, 32).unwrap();
    assert_eq!(raw.images, 64);
}

#[test]
fn single_fixmatch_and_pretrain_run() {
    let t = task(12, 0.3);
    let space = space();
    let mut net = Supernet::new(&space, 1).unwrap();
    let min = SubnetConfig::minnet(&space);
    let out = train_single(
        &mut net,
        &min,
        SingleMode::FixMatch,
        &t.data(),
        &small_cfg(2, Variant::Lab),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        out.curve
            .iter()
            .all(|r| r.fm.is_some() && r.dist_lab.is_none())
    );
    assert_eq!(out.omega.len(), 1);
    assert_eq!(out.omega.get(&min.id()).unwrap().last_iter, 2);

    for mode in [PretrainMode::Maxnet, PretrainMode::Sandwich] {
        let mut net = Supernet::new(&space, 1).unwrap();
        let out = pretrain(
            &mut net,
            &t.tt.train,
            BatchConfig::new((32, 32)),
            mode,
            &small_cfg(2, Variant::Full),
            None,
            &mut |p| assert_eq!(p.stage, Stage::Pretrain),
        )
        .unwrap();
        assert_eq!(out.cost.images_processed, 16);
        assert_eq!(
            out.curve[0].dist_lab.is_some(),
            mode == PretrainMode::Sandwich
        );
        net.reset_classifier(7, 0).unwrap();
    }

    // fixmatch without unlabelled images is a config error naming the field
    let data = TrainData {
        unlabelled: &[],
        ..t.data()
    };
    let err = train_tofa(
        &mut net,
        &data,
        &small_cfg(1, Variant::Fm),
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unlabelled"), "{err}");
}

#[test]
fn single_training_resumes_and_a_finished_run_is_not_repeated() {
    let t = task(12, 0.3);
    let space = space();
    let max = SubnetConfig::maxnet(&space);
    let cfg = TrainConfig {
        checkpoint_every: 1,
        ..small_cfg(3, Variant::Lab)
    };
    let mode = SingleMode::FixMatch;
    let mut straight = Supernet::new(&space, 1).unwrap();
    train_single(
        &mut straight,
        &max,
        mode,
        &t.data(),
        &cfg,
        None,
        &mut |_| {},
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut net = Supernet::new(&space, 1).unwrap();
    let killed = catch_unwind(AssertUnwindSafe(|| {
        train_single(
            &mut net,
            &max,
            mode,
            &t.data(),
            &cfg,
            Some(dir.path()),
            &mut |p| {
                assert!(p.iter < 2, "killed");
            },
        )
    }));
    assert!(killed.is_err());
    let mut net = Supernet::new(&space, 1).unwrap();
    let out = train_single(
        &mut net,
        &max,
        mode,
        &t.data(),
        &cfg,
        Some(dir.path()),
        &mut |_| {},
    )
    .unwrap();
    // iteration 2 was checkpointed before its report "killed" the run
    assert_eq!(out.resumed_from, Some(2));
    assert!(weights(&net) == weights(&straight));

    // finished: nothing runs, the outcome and weights come from the last checkpoint
    let mut again = Supernet::new(&space, 2).unwrap();
    let mut calls = 0;
    let back = train_single(
        &mut again,
        &max,
        mode,
        &t.data(),
        &cfg,
        Some(dir.path()),
        &mut |_| calls += 1,
    )
    .unwrap();
    assert_eq!((calls, back.resumed_from), (0, Some(3)));
    assert_eq!(back.curve, out.curve);
    assert!(weights(&again) == weights(&straight));

    // a TOFA run refuses the single run's checkpoint
    let err = train_tofa(&mut again, &t.data(), &cfg, Some(dir.path()), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("another run"), "{err}");
}

#[test]
fn curve_is_written_as_csv_and_averaged_in_windows() {
    let t = task(12, 0.3);
    let mut net = Supernet::new(&space(), 1).unwrap();
    let out = train_tofa(
        &mut net,
        &t.data(),
        &small_cfg(3, Variant::Fm),
        None,
        &mut |_| {},
    )
    .unwrap();
    let csv = out.curve_csv();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), tofa_train::IterRecord::CSV_HEADER);
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row.len(), 9);
    assert_eq!(row[0], "1");
    assert!(
        row[4].parse::<f64>().is_ok() && row[7].is_empty(),
        "{row:?}"
    );
    let avg = out.curve_averaged(2);
    assert_eq!(avg.iter().map(|r| r.iter).collect::<Vec<_>>(), [2, 3]);
    let want = (out.curve[0].lab + out.curve[1].lab) / 2.0;
    assert!((avg[0].lab - want).abs() < 1e-12);
    assert_eq!(avg[1].lab, out.curve[2].lab);
    assert!(avg[0].dist_unlab.is_none() && avg[0].fm.is_some());
    assert!(out.cost.images_per_s() > 0.0);
}

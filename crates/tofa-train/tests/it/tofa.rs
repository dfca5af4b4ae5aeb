//! TOFA training (Algorithm 1): each loss variant's terms and Omega, determinism, accuracy
//! well above chance, the training curve.

use tofa_data::BatchConfig;
use tofa_nn::{SubnetConfig, Supernet};
use tofa_train::{
    Stage, TrainConfig, TrainData, Variant, calibration_batches, evaluate, evaluate_raw, train_tofa,
};

use super::{small_cfg, space, task, weights};

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

/// `precision = "bf16"` trains on the portable backend with bf16 products: the same run as in
/// f32 to bf16's precision, other bits, a deterministic one, and the net handed back on its
/// own backend in f32. An f32 config serialises without the key.
#[test]
fn a_bf16_run_trains_on_the_portable_backend_and_hands_the_net_back_in_f32() {
    use tofa_nn::{Backend, Precision};
    let t = task(12, 0.3);
    let space = space();
    let cfg = small_cfg(3, Variant::Full);
    let bf16 = TrainConfig {
        precision: Precision::Bf16,
        ..cfg.clone()
    };
    let run = |cfg: &TrainConfig| {
        let mut net = Supernet::new(&space, 1).unwrap();
        let out = train_tofa(&mut net, &t.data(), cfg, None, &mut |_| {}).unwrap();
        assert_eq!(net.backend(), Backend::Fused);
        assert_eq!(net.precision(), Precision::F32);
        (weights(&net), out)
    };
    let (w32, o32) = run(&cfg);
    let (w16, o16) = run(&bf16);
    assert_eq!(run(&bf16).0, w16, "a bf16 run is deterministic");
    assert_ne!(w16, w32, "bf16 rounds");
    for (a, b) in o16.curve.iter().zip(&o32.curve) {
        assert!(
            (a.total - b.total).abs() < 0.05 * b.total.abs(),
            "iteration {}: bf16 loss {} against f32 {}",
            b.iter,
            a.total,
            b.total
        );
    }
    let json = serde_json::to_value(&cfg).unwrap();
    assert!(json.get("precision").is_none(), "{json}");
    assert_eq!(
        serde_json::to_value(&bf16).unwrap()["precision"],
        serde_json::json!("bf16")
    );
}

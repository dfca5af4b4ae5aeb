//! The single-model baselines (Table 3) and pre-training: they run, resume, and a finished
//! run is not repeated.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tofa_data::BatchConfig;
use tofa_nn::{SubnetConfig, Supernet};
use tofa_train::{
    PretrainMode, SingleMode, Stage, TrainConfig, TrainData, Variant, pretrain, train_single,
    train_tofa,
};

use super::{small_cfg, space, task, weights};

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

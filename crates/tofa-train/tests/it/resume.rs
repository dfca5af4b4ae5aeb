//! Checkpoints and failures: a killed run resumes to the same bits; a non-finite loss stops
//! naming the iteration and the term and keeps the last checkpoint.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tofa_nn::Supernet;
use tofa_train::checkpoint;
use tofa_train::{Stage, TrainConfig, TrainError, Variant, train_tofa};

use super::{small_cfg, space, task, weights};

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

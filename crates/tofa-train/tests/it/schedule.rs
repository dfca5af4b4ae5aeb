//! The optimiser's settings: warm-up then cosine learning rate, weight decay only on
//! convolution and linear weights.

use tofa_nn::{SubnetConfig, Supernet};
use tofa_train::{SingleMode, TrainConfig, Variant, train_single};

use super::{small_cfg, space, task};

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

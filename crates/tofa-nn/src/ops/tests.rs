//! The fused ops against the NCHW reference ops and finite differences.

use super::act::apply;
use super::reference::bn::{batch_norm_train, batch_stats};
use super::reference::dwconv::depthwise_conv2d_padded;
use super::*;
use crate::testutil::{max_diff, uniform};
use candle_core::{Device, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rand_var(shape: &[usize], rng: &mut ChaCha8Rng) -> Var {
    Var::from_tensor(&uniform(shape, 1.5, rng)).unwrap()
}

fn spec(stride: usize, pads: (usize, usize), act: Option<Fn1>) -> FusedSpec {
    FusedSpec {
        stride,
        pads,
        eps: 1e-3,
        act,
        norm: Norm::Batch,
    }
}

/// NCHW reference: BN (our tested op) then the activation (our tested op).
fn bn_act_ref(y: &Tensor, g: &Tensor, b: &Tensor, act: Option<Fn1>) -> Tensor {
    let z = batch_norm_train(y, g, b, 1e-3).unwrap();
    match act {
        Some(f) => apply(&z, f).unwrap(),
        None => z,
    }
}

/// Compares outputs and the gradients of `vars` under a random linear probe.
fn compare(ours: &Tensor, want: &Tensor, vars: &[&Var], rng: &mut ChaCha8Rng, what: &str) {
    assert_eq!(ours.dims(), want.dims(), "{what}");
    let d = max_diff(ours, want);
    assert!(d < 1e-4, "{what}: forward differs by {d}");
    let probe = rand_var(ours.dims(), rng);
    let g1 = (ours * probe.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (want * probe.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let a = g1.get(v).expect("our gradient");
        let b = g2.get(v).expect("reference gradient");
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = max_diff(a, b);
        assert!(
            d < 2e-4 * scale.max(1.0),
            "{what}: gradient {i} differs by {d}"
        );
    }
}

#[test]
fn pointwise_conv_bn_act_matches_nchw_reference_on_weight_views() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for act in [None, Some(Fn1::Relu), Some(Fn1::Hswish)] {
        let x = rand_var(&[3, 5, 4, 6], &mut rng); // NHWC, cin 6
        let wfull = rand_var(&[9, 8, 1, 1], &mut rng); // maxnet-sized weight
        let gfull = rand_var(&[9], &mut rng);
        let bfull = rand_var(&[9], &mut rng);
        let w = wfull.narrow(0, 0, 7).unwrap().narrow(1, 0, 6).unwrap();
        let (g, b) = (
            gfull.narrow(0, 0, 7).unwrap(),
            bfull.narrow(0, 0, 7).unwrap(),
        );
        let (ours, st) = conv_bn_act(&x, &w, &g, &b, Layout4::Nhwc, spec(1, (0, 0), act)).unwrap();
        let xn = x.permute((0, 3, 1, 2)).unwrap();
        let y = w
            .reshape((7, 6))
            .unwrap()
            .broadcast_matmul(&xn.reshape((3, 6, 20)).unwrap())
            .unwrap()
            .reshape((3, 7, 5, 4))
            .unwrap();
        let (m, v) = batch_stats(&y).unwrap();
        let st = st.expect("batch statistics");
        let m2 = Tensor::new(st.mean.as_slice(), &Device::Cpu).unwrap();
        let v2 = Tensor::new(st.var.as_slice(), &Device::Cpu).unwrap();
        assert!(max_diff(&m, &m2) < 1e-5 && max_diff(&v, &v2) < 1e-4);
        let want = bn_act_ref(&y, &g, &b, act).permute((0, 2, 3, 1)).unwrap();
        compare(&ours, &want, &[&x, &wfull, &gfull, &bfull], &mut rng, "1x1");
    }
}

#[test]
fn strided_kxk_conv_from_nchw_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (k, s, pads, h) in [
        (3, 2, (1, 1), 8),
        (3, 1, (1, 1), 5),
        (3, 2, (0, 1), 7),
        (5, 2, (2, 2), 6),
    ] {
        let x = rand_var(&[2, 3, h, h], &mut rng);
        let w = rand_var(&[4, 3, k, k], &mut rng);
        let g = rand_var(&[4], &mut rng);
        let b = rand_var(&[4], &mut rng);
        let (ours, _) = conv_bn_act(
            &x,
            &w,
            &g,
            &b,
            Layout4::Nchw,
            spec(s, pads, Some(Fn1::Hswish)),
        )
        .unwrap();
        let xp = x
            .pad_with_zeros(2, pads.0, pads.1)
            .unwrap()
            .pad_with_zeros(3, pads.0, pads.1)
            .unwrap();
        let y = xp.conv2d(&w, 0, s, 1, 1).unwrap();
        let want = bn_act_ref(&y, &g, &b, Some(Fn1::Hswish))
            .permute((0, 2, 3, 1))
            .unwrap();
        compare(
            &ours,
            &want,
            &[&x, &w, &g, &b],
            &mut rng,
            &format!("k{k} s{s} {pads:?}"),
        );
    }
}

#[test]
fn depthwise_bn_act_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (k, s, pads, h, c) in [
        (3, 1, (1, 1), 6, 5),
        (3, 2, (1, 1), 7, 9),
        (5, 1, (2, 2), 5, 17),
        (5, 2, (1, 2), 8, 3),
        (3, 2, (0, 1), 6, 4),
    ] {
        let x = rand_var(&[2, h, h, c], &mut rng);
        let wfull = rand_var(&[c + 2, 1, 7, 7], &mut rng);
        let off = (7 - k) / 2;
        let w = wfull
            .narrow(0, 0, c)
            .unwrap()
            .narrow(2, off, k)
            .unwrap()
            .narrow(3, off, k)
            .unwrap();
        let g = rand_var(&[c], &mut rng);
        let b = rand_var(&[c], &mut rng);
        let (ours, _) = dw_bn_act(&x, &w, &g, &b, spec(s, pads, Some(Fn1::Relu6))).unwrap();
        let xn = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let y = depthwise_conv2d_padded(&xn, &w, s, pads).unwrap();
        let want = bn_act_ref(&y, &g, &b, Some(Fn1::Relu6))
            .permute((0, 2, 3, 1))
            .unwrap();
        compare(
            &ours,
            &want,
            &[&x, &wfull, &g, &b],
            &mut rng,
            &format!("dw k{k} s{s} {pads:?}"),
        );
    }
}

#[test]
fn fixed_statistics_normalise_with_the_given_mean_and_variance() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = rand_var(&[2, 3, 3, 4], &mut rng);
    let w = rand_var(&[4, 1, 3, 3], &mut rng);
    let g = rand_var(&[4], &mut rng);
    let b = rand_var(&[4], &mut rng);
    let (mean, var) = (vec![0.1f32, -0.2, 0.3, 0.0], vec![1.0f32, 2.0, 0.5, 4.0]);
    let mut sp = spec(1, (1, 1), None);
    sp.norm = Norm::Fixed {
        mean: mean.clone(),
        var: var.clone(),
    };
    let (ours, st) = dw_bn_act(&x, &w, &g, &b, sp).unwrap();
    assert!(st.is_none());
    let y = depthwise_conv2d_padded(&x.permute((0, 3, 1, 2)).unwrap(), &w, 1, (1, 1))
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    let m = Tensor::new(mean.as_slice(), &Device::Cpu).unwrap();
    let v = Tensor::new(var.as_slice(), &Device::Cpu).unwrap();
    let want = y
        .broadcast_sub(&m)
        .unwrap()
        .broadcast_div(&(v + 1e-3).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&g)
        .unwrap()
        .broadcast_add(&b)
        .unwrap();
    compare(&ours, &want, &[&x, &w, &g, &b], &mut rng, "fixed");
}

/// With no input tracking a gradient the fused ops normalise in place and keep nothing (an
/// inference pass); that path gives the same bits and the same batch statistics as the one
/// that keeps the convolution output for a backward pass.
#[test]
fn inference_in_place_gives_the_bits_of_the_tracked_forward() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x = rand_var(&[3, 9, 9, 16], &mut rng);
    let wd = rand_var(&[16, 1, 5, 5], &mut rng);
    let wp = rand_var(&[24, 16, 1, 1], &mut rng);
    let g = rand_var(&[24], &mut rng);
    let b = rand_var(&[24], &mut rng);
    let fixed = Norm::Fixed {
        mean: (0..24).map(|i| i as f32 * 0.01 - 0.1).collect(),
        var: (0..24).map(|i| 0.5 + i as f32 * 0.05).collect(),
    };
    for norm in [Norm::Batch, fixed] {
        for act in [None, Some(Fn1::Hswish), Some(Fn1::Relu6)] {
            let mut sp = spec(2, (2, 2), act);
            sp.norm = norm.clone();
            let gd = g.narrow(0, 0, 16).unwrap();
            let bd = b.narrow(0, 0, 16).unwrap();
            let run = |detach: bool| {
                let t = |v: &Tensor| if detach { v.detach() } else { v.clone() };
                let (h, s1) = dw_bn_act(&t(&x), &t(&wd), &t(&gd), &t(&bd), sp.clone()).unwrap();
                let mut pw = sp.clone();
                pw.stride = 1;
                pw.pads = (0, 0);
                let (y, s2) = conv_bn_act(&h, &t(&wp), &t(&g), &t(&b), Layout4::Nhwc, pw).unwrap();
                assert_eq!(h.track_op(), !detach);
                let stats = [s1, s2].map(|s| s.map(|s| (s.mean, s.var)));
                (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), stats)
            };
            let (kept, ks) = run(false);
            let (in_place, is) = run(true);
            let same = kept
                .iter()
                .zip(&in_place)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{norm:?} {act:?}: in-place output differs");
            assert_eq!(ks, is, "{norm:?} {act:?}: batch statistics differ");
        }
    }
}

/// Central differences in f64 of a scalar loss through both fused ops in sequence.
#[test]
fn gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = rand_var(&[2, 3, 5, 5], &mut rng); // NCHW image
    let w1 = rand_var(&[4, 3, 3, 3], &mut rng);
    let w2 = rand_var(&[4, 1, 3, 3], &mut rng);
    let g = rand_var(&[4], &mut rng);
    let b = rand_var(&[4], &mut rng);
    let probe = rand_var(&[2, 3, 3, 4], &mut rng);
    let loss = || -> f64 {
        let (h, _) = conv_bn_act(
            &x,
            &w1,
            &g,
            &b,
            Layout4::Nchw,
            spec(2, (1, 1), Some(Fn1::Hswish)),
        )
        .unwrap();
        let (y, _) = dw_bn_act(&h, &w2, &g, &b, spec(1, (1, 1), Some(Fn1::Hswish))).unwrap();
        (y * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let (h, _) = conv_bn_act(
        &x,
        &w1,
        &g,
        &b,
        Layout4::Nchw,
        spec(2, (1, 1), Some(Fn1::Hswish)),
    )
    .unwrap();
    let (y, _) = dw_bn_act(&h, &w2, &g, &b, spec(1, (1, 1), Some(Fn1::Hswish))).unwrap();
    let grads = (y * probe.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in [&x, &w1, &w2, &g, &b] {
        let an: Vec<f32> = grads
            .get(v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
        for i in (0..base.len()).step_by(base.len().div_ceil(6)) {
            let eps = 1e-2f32;
            let mut p = base.clone();
            p[i] += eps;
            v.set(&Tensor::from_vec(p.clone(), v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let lp = loss();
            p[i] -= 2.0 * eps;
            v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let lm = loss();
            v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let fd = (lp - lm) / (2.0 * eps as f64);
            let d = (fd - an[i] as f64).abs();
            assert!(
                d < 2e-2 * fd.abs().max(1.0),
                "element {i}: fd {fd} vs {}",
                an[i]
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_op() {
    let x = Tensor::zeros((1, 4, 4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((5, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let g = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = dw_bn_act(&x, &w, &g, &g, spec(1, (1, 1), None)).unwrap_err();
    assert!(e.to_string().contains("fused depthwise conv"), "{e}");
    let w = Tensor::zeros((3, 1, 9, 9), candle_core::DType::F32, &Device::Cpu).unwrap();
    let g = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = dw_bn_act(&x, &w, &g, &g, spec(1, (0, 0), None)).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
}

#[test]
fn spatial_mean_and_channel_scale_match_candle_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = rand_var(&[3, 4, 5, 6], &mut rng);
    let s = rand_var(&[3, 6], &mut rng);
    let want = x.reshape((3, 20, 6)).unwrap().mean(1).unwrap();
    compare(&spatial_mean(&x).unwrap(), &want, &[&x], &mut rng, "mean");
    let want = x.broadcast_mul(&s.reshape((3, 1, 1, 6)).unwrap()).unwrap();
    compare(
        &channel_scale(&x, &s).unwrap(),
        &want,
        &[&x, &s],
        &mut rng,
        "scale",
    );
    assert!(channel_scale(&x, &s.narrow(1, 0, 5).unwrap()).is_err());
}

/// Shapes large enough for several reduction chunks and the parallel GEMM path.
#[test]
fn large_shapes_match_the_references() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = rand_var(&[4, 12, 12, 24], &mut rng);
    let wfull = rand_var(&[112, 32, 1, 1], &mut rng);
    let g = rand_var(&[96], &mut rng);
    let b = rand_var(&[96], &mut rng);
    let w = wfull.narrow(0, 0, 96).unwrap().narrow(1, 0, 24).unwrap();
    let (ours, _) = conv_bn_act(
        &x,
        &w,
        &g,
        &b,
        Layout4::Nhwc,
        spec(1, (0, 0), Some(Fn1::Hswish)),
    )
    .unwrap();
    let xn = x.permute((0, 3, 1, 2)).unwrap();
    let y = w
        .reshape((96, 24))
        .unwrap()
        .broadcast_matmul(&xn.reshape((4, 24, 144)).unwrap())
        .unwrap()
        .reshape((4, 96, 12, 12))
        .unwrap();
    let want = bn_act_ref(&y, &g, &b, Some(Fn1::Hswish))
        .permute((0, 2, 3, 1))
        .unwrap();
    compare(&ours, &want, &[&x, &wfull, &g, &b], &mut rng, "large 1x1");
    let wd = rand_var(&[96, 1, 5, 5], &mut rng);
    let h = ours.detach();
    let hv = Var::from_tensor(&h).unwrap();
    let (ours, _) = dw_bn_act(&hv, &wd, &g, &b, spec(2, (2, 2), Some(Fn1::Relu))).unwrap();
    let hn = hv.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let y = depthwise_conv2d_padded(&hn, &wd, 2, (2, 2)).unwrap();
    let want = bn_act_ref(&y, &g, &b, Some(Fn1::Relu))
        .permute((0, 2, 3, 1))
        .unwrap();
    compare(&ours, &want, &[&hv, &wd, &g, &b], &mut rng, "large dw");
}

/// The fused residual against `h * m + x` composed of candle ops: the same bits forward and
/// in both gradients (as candle accumulates them), with dropped images and signed zeros.
#[test]
fn residual_gives_the_composed_ops_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (b, h, w, c) = (4, 3, 5, 6);
    let with_zeros = |t: Tensor| {
        let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        for i in (0..v.len()).step_by(7) {
            v[i] = if i % 2 == 0 { 0.0 } else { -0.0 };
        }
        Var::from_tensor(&Tensor::from_vec(v, (b, h, w, c), &Device::Cpu).unwrap()).unwrap()
    };
    let hv = with_zeros(uniform(&[b, h, w, c], 1.5, &mut rng));
    let xv = with_zeros(uniform(&[b, h, w, c], 1.5, &mut rng));
    let probe = with_zeros(uniform(&[b, h, w, c], 1.5, &mut rng));
    let mask = vec![1.25f32, 0.0, 1.25, 1.25];
    let ours = residual(&hv, &xv, mask.clone()).unwrap();
    let m = Tensor::from_vec(mask, (b, 1, 1, 1), &Device::Cpu).unwrap();
    let want = (hv.broadcast_mul(&m).unwrap() + xv.as_tensor()).unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    };
    assert_eq!(bits(&ours), bits(&want), "forward");
    let grads = |y: &Tensor| {
        (y * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    };
    let (g1, g2) = (grads(&ours), grads(&want));
    for (v, what) in [(&hv, "branch"), (&xv, "input")] {
        assert_eq!(
            bits(g1.get(v).unwrap()),
            bits(g2.get(v).unwrap()),
            "{what} gradient"
        );
    }
    assert!(residual(&hv, &xv, vec![1.0; 3]).is_err());
}

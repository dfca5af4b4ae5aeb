//! Depthwise 3x3 conv, 96 channels, batch 32: forward, and forward + backward (input and
//! weight gradients), ours (NCHW) against candle's grouped conv2d; and the fused NHWC
//! depthwise + training BN + ReLU op that the supernet runs.

use candle_core::Var;
use criterion::{Criterion, criterion_group};
use tofa_nn::ops::act::Fn1;
use tofa_nn::ops::reference::dwconv::depthwise_conv2d;
use tofa_nn::ops::{FusedSpec, Norm, dw_bn_act};

use super::rand_t;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dwconv");
    g.sample_size(10);
    for hw in [32usize, 64] {
        let x = Var::from_tensor(&rand_t(&[32, 96, hw, hw], 0)).unwrap();
        let w = Var::from_tensor(&rand_t(&[96, 1, 3, 3], 1)).unwrap();
        g.bench_function(format!("ours_fwd_b32_c96_{hw}x{hw}"), |b| {
            b.iter(|| depthwise_conv2d(x.as_tensor(), w.as_tensor(), 1).unwrap())
        });
        g.bench_function(format!("ours_fwd_bwd_b32_c96_{hw}x{hw}"), |b| {
            b.iter(|| {
                depthwise_conv2d(&x, &w, 1)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
        let xn = Var::from_tensor(&rand_t(&[32, hw, hw, 96], 0)).unwrap();
        let gamma = Var::from_tensor(&rand_t(&[96], 2)).unwrap();
        let beta = Var::from_tensor(&rand_t(&[96], 3)).unwrap();
        let spec = || FusedSpec {
            stride: 1,
            pads: (1, 1),
            eps: 1e-5,
            act: Some(Fn1::Relu),
            norm: Norm::Batch,
        };
        g.bench_function(format!("nhwc_bn_relu_fwd_b32_c96_{hw}x{hw}"), |b| {
            b.iter(|| dw_bn_act(&xn, &w, &gamma, &beta, spec()).unwrap())
        });
        g.bench_function(format!("nhwc_bn_relu_fwd_bwd_b32_c96_{hw}x{hw}"), |b| {
            b.iter(|| {
                dw_bn_act(&xn, &w, &gamma, &beta, spec())
                    .unwrap()
                    .0
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
        g.bench_function(format!("candle_fwd_b32_c96_{hw}x{hw}"), |b| {
            b.iter(|| x.as_tensor().conv2d(w.as_tensor(), 1, 1, 1, 96).unwrap())
        });
        if hw == 32 {
            g.bench_function(format!("candle_fwd_bwd_b32_c96_{hw}x{hw}"), |b| {
                b.iter(|| {
                    x.conv2d(&w, 1, 1, 1, 96)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);

//! A maxnet training step (forward, cross-entropy, backward, SGD) of the `small` space at
//! batch 32, 32x32 and 64x64.

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, Sgd, SgdConfig, SubnetConfig, Supernet, TrainOpts};

use super::rand_t;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    for hw in [32usize, 64] {
        let text = include_str!("../../spaces/small.toml").replace(
            "resolutions = [32, 40, 48]",
            &format!("resolutions = [{hw}]"),
        );
        let s = SearchSpace::from_toml(&text).unwrap();
        let net = Supernet::new(&s, 0).unwrap();
        let cfg = SubnetConfig::maxnet(&s);
        let x = rand_t(&[32, 3, hw, hw], 0);
        let y = Tensor::from_vec(
            (0..32u32).map(|i| i % 10).collect::<Vec<_>>(),
            32,
            &Device::Cpu,
        )
        .unwrap();
        let mut sgd = Sgd::new(
            net.params().to_vec(),
            SgdConfig {
                lr: 0.01,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 4e-5,
            },
        );
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        g.bench_function(format!("small_maxnet_b32_{hw}x{hw}"), |b| {
            b.iter(|| {
                let mode = Mode::Train(TrainOpts {
                    rng: &mut rng,
                    dropout: 0.1,
                    drop_connect: 0.1,
                    update_bn_stats: true,
                });
                let logits = net.forward_t(&x, &cfg, mode).unwrap();
                let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
                sgd.backward_step(&loss).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

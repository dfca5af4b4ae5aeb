//! The networks the real-transfer profile trains: the `lite0` space's maxnet (EfficientNet-
//! Lite0) and its mid-size subnet (`SubnetConfig::uniform(0.5)`), at 64x64 and 96x96.
//! - `lite0_train_step`: forward, cross-entropy, backward, SGD at batch 32 (dropout 0.2 and
//!   drop-connect 0.2, running statistics updated: a baseline's iteration).
//! - `lite0_eval`: an eval-mode forward (running statistics) at batch 1 and 8, what the device
//!   benchmarks and selection time.
//!
//! PyTorch, same shapes: `scripts/torch_timing.py --lite0` (NCHW, channels-last, compiled).

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, Sgd, SgdConfig, SubnetConfig, Supernet, TrainOpts};

use super::rand_t;

fn space(r: usize) -> SearchSpace {
    SearchSpace::builtin("lite0")
        .unwrap()
        .with_num_classes(10)
        .unwrap()
        .with_resolutions(vec![r])
        .unwrap()
}

fn nets(s: &SearchSpace) -> [(&'static str, SubnetConfig); 2] {
    [
        ("maxnet", SubnetConfig::maxnet(s)),
        ("mid", SubnetConfig::uniform(s, 0.5)),
    ]
}

fn train_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("lite0_train_step");
    g.sample_size(10);
    for r in [64usize, 96] {
        let s = space(r);
        let net = Supernet::new(&s, 0).unwrap();
        let x = rand_t(&[32, 3, r, r], 0);
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
                weight_decay: 1e-5,
            },
        );
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (name, cfg) in nets(&s) {
            g.bench_function(format!("{name}_b32_{r}x{r}"), |b| {
                b.iter(|| {
                    let mode = Mode::Train(TrainOpts {
                        rng: &mut rng,
                        dropout: 0.2,
                        drop_connect: 0.2,
                        update_bn_stats: true,
                    });
                    let logits = net.forward_t(&x, &cfg, mode).unwrap();
                    let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
                    sgd.backward_step(&loss).unwrap();
                })
            });
        }
    }
    g.finish();
}

fn eval(c: &mut Criterion) {
    let mut g = c.benchmark_group("lite0_eval");
    g.sample_size(20);
    for r in [64usize, 96] {
        let s = space(r);
        let net = Supernet::new(&s, 0).unwrap();
        for batch in [1usize, 8] {
            let x = rand_t(&[batch, 3, r, r], 1);
            for (name, cfg) in nets(&s) {
                g.bench_function(format!("{name}_b{batch}_{r}x{r}"), |b| {
                    b.iter(|| net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap())
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, train_step, eval);

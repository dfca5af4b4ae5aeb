//! The networks the real-transfer profile trains: the `lite0` space's maxnet (EfficientNet-
//! Lite0) and its mid-size subnet (`SubnetConfig::uniform(0.5)`), at 64x64 and 96x96.
//! - `lite0_train_step`: forward, cross-entropy, backward, SGD at batch 32 (dropout 0.2 and
//!   drop-connect 0.2, running statistics updated: a baseline's iteration).
//! - `lite0_eval`: an eval-mode forward (running statistics) at batch 1 and 8, what the device
//!   benchmarks and selection time.
//!
//! PyTorch, same shapes: `scripts/torch_timing.py --lite0` (NCHW, channels-last, compiled).

use criterion::{Criterion, criterion_group};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, SubnetConfig, Supernet};

use super::{labels, rand_t, sgd, train_step};

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

fn train_steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("lite0_train_step");
    g.sample_size(10);
    for r in [64usize, 96] {
        let s = space(r);
        let net = Supernet::new(&s, 0).unwrap();
        let x = rand_t(&[32, 3, r, r], 0);
        let y = labels(32, 10);
        let mut sgd = sgd(&net, 1e-5);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (name, cfg) in nets(&s) {
            g.bench_function(format!("{name}_b32_{r}x{r}"), |b| {
                b.iter(|| train_step(&net, &cfg, (&x, &y), &mut sgd, &mut rng, 0.2))
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

criterion_group!(benches, train_steps, eval);

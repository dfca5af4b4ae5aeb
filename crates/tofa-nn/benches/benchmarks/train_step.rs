//! A maxnet training step (forward, cross-entropy, backward, SGD) of the `small` space at
//! batch 32, 32x32 and 64x64.

use criterion::{Criterion, criterion_group};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{SearchSpace, SubnetConfig, Supernet};

use super::{labels, rand_t, sgd, train_step};

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
        let y = labels(32, 10);
        let mut sgd = sgd(&net, 4e-5);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        g.bench_function(format!("small_maxnet_b32_{hw}x{hw}"), |b| {
            b.iter(|| train_step(&net, &cfg, (&x, &y), &mut sgd, &mut rng, 0.1))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

//! One MBConv block (16 -> 16 channels, expand 6, kernel 5, SE off), batch 32, training
//! forward + backward, through the supernet of a one-stage space.

use criterion::{Criterion, criterion_group};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, SubnetConfig, Supernet, TrainOpts};

use super::rand_t;

fn space(res: usize) -> SearchSpace {
    SearchSpace::from_toml(&format!(
        r#"
name = "one-block"
num_classes = 10
resolutions = [{res}]
[stem]
widths = [16]
stride = 1
act = "relu"
[[stages]]
widths = [16]
depths = [1]
kernels = [5]
expands = [6]
se = false
stride = 1
act = "hswish"
[head]
widths = [16]
act = "relu"
"#
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mbconv_block");
    g.sample_size(10);
    for hw in [32usize, 64] {
        let s = space(hw);
        let net = Supernet::new(&s, 0).unwrap();
        let cfg = SubnetConfig::maxnet(&s);
        let x = rand_t(&[32, 3, hw, hw], 0);
        g.bench_function(format!("stem_block_head_fwd_bwd_b32_{hw}x{hw}"), |b| {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            b.iter(|| {
                let mode = Mode::Train(TrainOpts {
                    rng: &mut rng,
                    dropout: 0.0,
                    drop_connect: 0.0,
                    update_bn_stats: false,
                });
                net.forward_t(&x, &cfg, mode)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

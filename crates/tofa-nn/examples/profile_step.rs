//! Times the pieces of a `small` maxnet training step (batch 32): forward, backward, SGD.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p tofa-nn --example profile_step -- 32 [steps]`

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, Sgd, SgdConfig, SubnetConfig, Supernet, TrainOpts};

fn main() -> tofa_nn::Result<()> {
    tofa_nn::runtime::tune_allocator();
    let hw: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(32);
    let text = include_str!("../spaces/small.toml").replace(
        "resolutions = [32, 40, 48]",
        &format!("resolutions = [{hw}]"),
    );
    let s = SearchSpace::from_toml(&text)?;
    let net = Supernet::new(&s, 0)?;
    let cfg = SubnetConfig::maxnet(&s);
    let x = Tensor::ones((32, 3, hw, hw), candle_core::DType::F32, &Device::Cpu)?;
    let y = Tensor::from_vec(
        (0..32u32).map(|i| i % 10).collect::<Vec<_>>(),
        32,
        &Device::Cpu,
    )?;
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
    let steps: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let mut totals = Vec::new();
    for i in 0..steps {
        let t0 = Instant::now();
        let mode = Mode::Train(TrainOpts {
            rng: &mut rng,
            dropout: 0.1,
            drop_connect: 0.1,
            update_bn_stats: true,
        });
        let logits = net.forward_t(&x, &cfg, mode)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        sgd.step(&grads)?;
        let t3 = Instant::now();
        eprintln!(
            "step {i}: fwd {:.0} ms, bwd {:.0} ms, sgd {:.0} ms, total {:.0} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3,
            (t3 - t0).as_secs_f64() * 1e3
        );
        if i > 0 {
            totals.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    totals.sort_by(f64::total_cmp);
    if let Some(m) = totals.get(totals.len() / 2) {
        eprintln!("median step (first excluded): {m:.0} ms");
    }
    Ok(())
}

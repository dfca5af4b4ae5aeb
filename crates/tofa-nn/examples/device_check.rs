//! The supernet on a device (the portable backend: candle's CUDA ops and our CUDA depthwise
//! kernels) against the fused CPU ops on the same weights: the test
//! `portable_and_fused_backends_are_the_same_network`, run where CI cannot, on a GPU.
//!
//! ```sh
//! cargo run --release -p tofa-nn --features cuda --example device_check -- cuda tiny@32 paper@64
//! ```
//!
//! For the maxnet, the minnet and three sampled subnets of each space: training logits (batch
//! statistics, running statistics updated), every parameter's gradient of a cross-entropy
//! loss, the updated running statistics and the evaluation logits. It prints the largest
//! relative difference of each (gradients relative to at least 1e-3 of the largest gradient,
//! as in the test) and exits non-zero if one is above 1e-3 (f32 on both sides; the GPU's
//! fused multiply-adds and cuBLAS's summation order differ in the last bits).

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, SubnetConfig, Supernet, TrainOpts};

const TOL: f32 = 1e-3;

fn max_abs(t: &Tensor) -> Result<f32> {
    Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar()?)
}

/// `max |a - b| / max(max |b|, floor)`, `a` on any device, `b` on the CPU.
fn rel(a: &Tensor, b: &Tensor, floor: f32) -> Result<f32> {
    let a = a.to_device(&Device::Cpu)?;
    Ok(max_abs(&(a - b)?)? / max_abs(b)?.max(floor))
}

fn train_mode(rng: &mut ChaCha8Rng) -> Mode<'_> {
    Mode::Train(TrainOpts {
        rng,
        dropout: 0.0,
        drop_connect: 0.0,
        update_bn_stats: true,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = tofa_nn::parse_device(args.first().map_or("cuda", String::as_str))?;
    let spaces: Vec<String> = match args.get(1..) {
        Some(s) if !s.is_empty() => s.to_vec(),
        _ => vec!["tiny@32".into(), "paper@64".into()],
    };
    let mut worst = 0f32;
    for spec in &spaces {
        let (name, res) = spec.split_once('@').unwrap_or((spec, "32"));
        let res: usize = res.parse()?;
        let space = SearchSpace::builtin(name)?;
        let cpu = Supernet::new(&space, 7)?;
        let dev = Supernet::new_on(&space, 7, &device)?;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut cfgs = vec![SubnetConfig::maxnet(&space), SubnetConfig::minnet(&space)];
        cfgs.extend((0..3).map(|_| SubnetConfig::sample(&space, &mut rng)));
        let b = 4;
        let v: Vec<f32> = (0..b * 3 * res * res)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x = Tensor::from_vec(v, (b, 3, res, res), &Device::Cpu)?;
        let y = Tensor::new(&[1u32, 3, 5, 7], &Device::Cpu)?;
        let (xd, yd) = (x.to_device(&device)?, y.to_device(&device)?);
        for cfg in &cfgs {
            let run = |net: &Supernet, x: &Tensor, y: &Tensor| -> Result<_> {
                let mut r = ChaCha8Rng::seed_from_u64(5);
                let logits = net.forward_t(x, cfg, train_mode(&mut r))?;
                let grads = candle_nn::loss::cross_entropy(&logits, y)?.backward()?;
                Ok((logits, grads))
            };
            let (lc, gc) = run(&cpu, &x, &y)?;
            let (ld, gd) = run(&dev, &xd, &yd)?;
            let logits = rel(&ld, &lc, 1e-6)?;
            let largest = cpu
                .params()
                .iter()
                .filter_map(|p| gc.get(&p.var).map(max_abs))
                .try_fold(0f32, |m, g| g.map(|g| m.max(g)))?;
            let mut grads = 0f32;
            for (pc, pd) in cpu.params().iter().zip(dev.params()) {
                match (gc.get(&pc.var), gd.get(&pd.var)) {
                    (Some(a), Some(d)) => grads = grads.max(rel(d, a, 1e-3 * largest)?),
                    (None, None) => {}
                    _ => bail!("{}: {}: a gradient on one side only", cfg.id(), pc.name),
                }
            }
            let mut stats = 0f32;
            let dev_tensors = dev.tensors();
            for (name, t) in cpu.tensors() {
                stats = stats.max(rel(&dev_tensors[&name], &t, 1e-6)?);
            }
            let eval = rel(
                &dev.forward_t(&xd, cfg, Mode::Eval(None))?,
                &cpu.forward_t(&x, cfg, Mode::Eval(None))?,
                1e-6,
            )?;
            let m = logits.max(grads).max(stats).max(eval);
            worst = worst.max(m);
            println!(
                "{spec} {}: logits {logits:.1e} grads {grads:.1e} tensors {stats:.1e} eval {eval:.1e}{}",
                cfg.id(),
                if m > TOL { "  FAIL" } else { "" }
            );
        }
    }
    println!(
        "device_check on {device:?}: largest relative difference {worst:.1e} (tolerance {TOL:.0e})"
    );
    if worst > TOL {
        bail!("the device's network differs from the CPU's");
    }
    Ok(())
}

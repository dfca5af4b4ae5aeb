//! Times the pieces of a training step (batch 32): forward, backward, SGD, per step and as
//! medians, for a built-in space's maxnet or mid-size subnet (`SubnetConfig::uniform(0.5)`).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p tofa-nn --example profile_step -- [SPACE@RES] [maxnet|mid] [steps]`
//!
//! Defaults: `small@32 maxnet 8`. `lite0@96 mid` is the bench `lite0_train_step/mid_b32_96x96`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, Sgd, SgdConfig, SubnetConfig, Supernet, TrainOpts};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: first thing in `main`, before any thread is spawned.
    unsafe { tofa_nn::runtime::tune_process() };
    // on a pool worker, as a pipeline stage runs
    tofa_nn::runtime::on_worker(|| run().map_err(|e| e.to_string()))?;
    Ok(())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec = args.first().map_or("small@32", String::as_str);
    let (name, hw) = spec.split_once('@').ok_or("SPACE@RES, e.g. lite0@96")?;
    let hw: usize = hw.parse()?;
    let s = SearchSpace::builtin(name)?
        .with_num_classes(10)?
        .with_resolutions(vec![hw])?;
    let cfg = match args.get(1).map_or("maxnet", String::as_str) {
        "maxnet" => SubnetConfig::maxnet(&s),
        "mid" => SubnetConfig::uniform(&s, 0.5),
        other => return Err(format!("subnet `{other}`: maxnet or mid").into()),
    };
    let steps: usize = args.get(2).map_or(Ok(8), |a| a.parse())?;
    let net = Supernet::new(&s, 0)?;
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
    let mut parts: [Vec<f64>; 4] = Default::default();
    for i in 0..steps {
        let t0 = Instant::now();
        let mode = Mode::Train(TrainOpts {
            rng: &mut rng,
            dropout: 0.2,
            drop_connect: 0.2,
            update_bn_stats: true,
        });
        let logits = net.forward_t(&x, &cfg, mode)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        sgd.step(&grads)?;
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let step = [ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t0, t3)];
        eprintln!(
            "step {i}: fwd {:.1} ms, bwd {:.1} ms, sgd {:.1} ms, total {:.1} ms",
            step[0], step[1], step[2], step[3]
        );
        if i > 0 {
            for (p, v) in parts.iter_mut().zip(step) {
                p.push(v);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let [f, b, o, t] = &mut parts;
    eprintln!(
        "medians (first step excluded): fwd {:.1} ms, bwd {:.1} ms, sgd {:.1} ms, total {:.1} ms",
        median(f),
        median(b),
        median(o),
        median(t)
    );
    Ok(())
}

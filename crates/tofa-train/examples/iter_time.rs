//! Seconds per TOFA iteration for each loss variant, and per single-network baseline
//! iteration on the maxnet, with batches of 32 labelled + 32 unlabelled synthetic images.
//! Spaces (default `tiny small@32 small`): `NAME@R` restricts a space to `R x R` inputs; plain
//! `NAME` feeds batches at the space's largest resolution (`small`: 48x48).
//! `TOFA_DEVICE` (`cpu`, `cuda`, `cuda:N`; default `cpu`) picks the device, and with it the
//! backend (fused on the CPU, portable elsewhere); `TOFA_RUNS` (e.g. `tofa/full`) keeps only
//! the runs whose name starts with one of its comma-separated prefixes; `TOFA_PRECISION=bf16`
//! trains with bf16 products (`tofa_nn::precision`: on the portable backend, emulated on the
//! CPU) and `TOFA_BACKEND=portable` runs f32 on the portable backend on the CPU too.
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release -p tofa-train --example iter_time -- [ITERS] [SPACE...]
//! TOFA_DEVICE=cuda TOFA_RUNS=tofa/full cargo run --release -p tofa-train --features cuda \
//!     --example iter_time -- 5 paper@224     # scripts/gpu-check.sh
//! ```
//! Prints one line per (space, variant): mean seconds per iteration over `ITERS` (default 5)
//! after one warm-up iteration, with the multiply-adds per iteration.

use std::time::Instant;

use tofa_data::BatchConfig;
use tofa_data::synthetic::{TaskSpec, generate_task};
use tofa_nn::{SearchSpace, SubnetConfig, Supernet};
use tofa_train::{SingleMode, TrainConfig, TrainData, Variant, train_single, train_tofa};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: first thing in `main`, before any thread is spawned.
    unsafe { tofa_nn::runtime::tune_process() };
    // on a pool worker, as a pipeline stage runs
    tofa_nn::runtime::on_worker(|| run().map_err(|e| e.to_string()))?;
    Ok(())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iters: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let spaces: Vec<String> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec!["tiny".into(), "small@32".into(), "small".into()]
    };
    let device =
        tofa_nn::parse_device(&std::env::var("TOFA_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    let runs: Vec<String> = std::env::var("TOFA_RUNS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let precision: tofa_nn::Precision = match std::env::var("TOFA_PRECISION") {
        Ok(p) => serde_json::from_value(serde_json::Value::String(p))?,
        Err(_) => tofa_nn::Precision::F32,
    };
    let portable = std::env::var("TOFA_BACKEND").is_ok_and(|b| b == "portable");
    let wanted = |run: &str| runs.is_empty() || runs.iter().any(|p| run.starts_with(p.as_str()));
    let task = generate_task(0, &TaskSpec::new("bench", 10, (40, 1), 0.5, 0.0), (32, 32))?;
    let ds = &task.train;
    let labelled: Vec<u32> = (0..100).collect();
    let unlabelled: Vec<u32> = (100..ds.len() as u32).collect();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!(
        "RAYON_NUM_THREADS={threads}, device {device:?}, precision {precision:?}, {iters} timed iterations after 1 warm-up, 32 + 32 images"
    );
    println!("space\trun\ts/iter\tGMACs/iter");
    // `NAME@R` restricts the space to R x R inputs; plain `NAME` feeds batches at the space's
    // largest resolution (subnets at smaller ones get them resized).
    for arg in &spaces {
        let (name, at) = match arg.split_once('@') {
            Some((n, r)) => (n, Some(r.parse::<usize>()?)),
            None => (arg.as_str(), None),
        };
        let mut space = SearchSpace::builtin(name)?.with_num_classes(ds.num_classes())?;
        if let Some(r) = at {
            space.resolutions = vec![r];
        }
        let r = *space.resolutions.last().unwrap_or(&32);
        let data = TrainData {
            dataset: ds,
            labelled: &labelled,
            unlabelled: &unlabelled,
            batch: BatchConfig::new((r, r)),
        };
        let name = arg;
        let time = |run: &dyn Fn(
            &mut Supernet,
            &TrainConfig,
        ) -> tofa_train::Result<tofa_train::TrainOutcome>|
         -> Result<(f64, f64), Box<dyn std::error::Error>> {
            let mut net = Supernet::new_on(&space, 0, &device)?;
            if portable {
                net.set_backend(tofa_nn::Backend::Portable)?;
            }
            let warm = TrainConfig {
                iterations: 1,
                precision,
                ..TrainConfig::default()
            };
            run(&mut net, &warm)?;
            let cfg = TrainConfig {
                iterations: iters,
                ..warm
            };
            let t0 = Instant::now();
            let out = run(&mut net, &cfg)?;
            let s = t0.elapsed().as_secs_f64() / iters as f64;
            Ok((s, out.cost.train_macs as f64 / iters as f64 / 1e9))
        };
        for v in Variant::ALL {
            if !wanted(&format!("tofa/{}", v.name())) {
                continue;
            }
            let (s, g) = time(&|net, cfg| {
                let cfg = TrainConfig {
                    variant: v,
                    ..cfg.clone()
                };
                train_tofa(net, &data, &cfg, None, &mut |_| {})
            })?;
            println!("{name}\ttofa/{}\t{s:.3}\t{g:.3}", v.name());
        }
        let max = SubnetConfig::maxnet(&space);
        for mode in [SingleMode::Labelled, SingleMode::FixMatch] {
            if !wanted(&format!("single/{mode:?}")) {
                continue;
            }
            let (s, g) =
                time(&|net, cfg| train_single(net, &max, mode, &data, cfg, None, &mut |_| {}))?;
            println!("{name}\tsingle/{mode:?}\t{s:.3}\t{g:.3}");
        }
    }
    Ok(())
}

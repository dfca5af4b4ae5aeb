//! Seconds per TOFA iteration for each loss variant, and per single-network baseline
//! iteration on the maxnet, with batches of 32 labelled + 32 unlabelled synthetic images.
//! Spaces (default `tiny small@32 small`): `NAME@32` restricts a space to 32x32 inputs; plain
//! `NAME` feeds batches at the space's largest resolution (`small`: 48x48).
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release -p tofa-train --example iter_time -- [ITERS] [SPACE...]
//! ```
//! Prints one line per (space, variant): mean seconds per iteration over `ITERS` (default 5)
//! after one warm-up iteration, with the multiply-adds per iteration.

use std::time::Instant;

use tofa_data::BatchConfig;
use tofa_data::synthetic::{TaskSpec, generate_task};
use tofa_nn::{SearchSpace, SubnetConfig, Supernet};
use tofa_train::{SingleMode, TrainConfig, TrainData, Variant, train_single, train_tofa};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tofa_nn::runtime::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iters: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let spaces: Vec<String> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec!["tiny".into(), "small@32".into(), "small".into()]
    };
    let task = generate_task(0, &TaskSpec::new("bench", 10, (40, 1), 0.5, 0.0), (32, 32))?;
    let ds = &task.train;
    let labelled: Vec<u32> = (0..100).collect();
    let unlabelled: Vec<u32> = (100..ds.len() as u32).collect();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!(
        "RAYON_NUM_THREADS={threads}, {iters} timed iterations after 1 warm-up, 32 + 32 images"
    );
    println!("space\trun\ts/iter\tGMACs/iter");
    // `NAME@32` restricts the space to 32x32 inputs; plain `NAME` feeds batches at the space's
    // largest resolution (subnets at smaller ones get them resized).
    for arg in &spaces {
        let (name, at32) = match arg.strip_suffix("@32") {
            Some(n) => (n, true),
            None => (arg.as_str(), false),
        };
        let mut space = SearchSpace::builtin(name)?.with_num_classes(ds.num_classes())?;
        if at32 {
            space.resolutions = vec![32];
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
            let mut net = Supernet::new(&space, 0)?;
            let warm = TrainConfig {
                iterations: 1,
                ..TrainConfig::default()
            };
            run(&mut net, &warm)?;
            let cfg = TrainConfig {
                iterations: iters,
                ..TrainConfig::default()
            };
            let t0 = Instant::now();
            let out = run(&mut net, &cfg)?;
            let s = t0.elapsed().as_secs_f64() / iters as f64;
            Ok((s, out.cost.train_macs as f64 / iters as f64 / 1e9))
        };
        for v in Variant::ALL {
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
            let (s, g) =
                time(&|net, cfg| train_single(net, &max, mode, &data, cfg, None, &mut |_| {}))?;
            println!("{name}\tsingle/{mode:?}\t{s:.3}\t{g:.3}");
        }
    }
    Ok(())
}

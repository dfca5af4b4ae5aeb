//! Integration tests of tofa-nn, one module per topic; the helpers they share are here.

mod backends;
mod costs;
mod export;
mod lite0_reference;
mod pretrained;
mod supernet;
mod threads;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, TrainOpts};

fn tiny() -> SearchSpace {
    SearchSpace::builtin("tiny").unwrap()
}

fn input(b: usize, r: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..b * 3 * r * r)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(v, (b, 3, r, r), &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

fn train<'a>(rng: &'a mut ChaCha8Rng, dropout: f32, drop_connect: f32) -> Mode<'a> {
    train_with(rng, dropout, drop_connect, false)
}

/// As [`train`], updating the running statistics.
fn train_updating<'a>(rng: &'a mut ChaCha8Rng, dropout: f32, drop_connect: f32) -> Mode<'a> {
    train_with(rng, dropout, drop_connect, true)
}

fn train_with(
    rng: &mut ChaCha8Rng,
    dropout: f32,
    drop_connect: f32,
    update_bn_stats: bool,
) -> Mode<'_> {
    Mode::Train(TrainOpts {
        rng,
        dropout,
        drop_connect,
        update_bn_stats,
    })
}

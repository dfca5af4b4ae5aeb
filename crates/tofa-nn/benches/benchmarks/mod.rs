pub mod block;
pub mod dwconv;
pub mod lite0;
pub mod train_step;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, Sgd, SgdConfig, SubnetConfig, Supernet, TrainOpts};

pub fn rand_t(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Labels `i % classes` for a batch of `n`.
pub fn labels(n: u32, classes: u32) -> Tensor {
    Tensor::from_vec(
        (0..n).map(|i| i % classes).collect::<Vec<_>>(),
        n as usize,
        &Device::Cpu,
    )
    .unwrap()
}

/// SGD over `net`'s parameters: lr 0.01, Nesterov momentum 0.9, weight decay `weight_decay`.
pub fn sgd(net: &Supernet, weight_decay: f64) -> Sgd {
    Sgd::new(
        net.params().to_vec(),
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            nesterov: true,
            weight_decay,
        },
    )
}

/// One training step of `cfg` on `(x, y)`: dropout and drop-connect `p`, running statistics
/// updated, cross-entropy, backward, SGD.
pub fn train_step(
    net: &Supernet,
    cfg: &SubnetConfig,
    (x, y): (&Tensor, &Tensor),
    sgd: &mut Sgd,
    rng: &mut ChaCha8Rng,
    p: f32,
) {
    let mode = Mode::Train(TrainOpts {
        rng,
        dropout: p,
        drop_connect: p,
        update_bn_stats: true,
    });
    let logits = net.forward_t(x, cfg, mode).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, y).unwrap();
    sgd.backward_step(&loss).unwrap();
}

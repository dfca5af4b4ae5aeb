//! The fused ops split their reductions into chunks that depend on the shapes only (the
//! per-channel statistics, the depthwise weight gradient per image), and gemm's own threads
//! split only its output, so a training step gives the same bits on any number of threads.
//! (`tofa-pipeline` runs stages with as many threads as it has to spare; a cache key holds
//! no thread count.)

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{SearchSpace, SubnetConfig, Supernet};

use super::{input, train_updating};

/// Logits, loss and every parameter's gradient of one training step (dropout and
/// drop-connect on, statistics updated) of `space`'s maxnet, in a pool of `threads`.
fn step(space: &SearchSpace, threads: usize) -> Vec<(String, Vec<f32>)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let net = Supernet::new(space, 3).unwrap();
        let cfg = SubnetConfig::maxnet(space);
        let x = input(8, cfg.resolution, 4);
        let y =
            Tensor::from_vec((0..8u32).map(|i| i % 10).collect::<Vec<_>>(), 8, x.device()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let logits = net
            .forward_t(&x, &cfg, train_updating(&mut rng, 0.2, 0.2))
            .unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        let grads = loss.backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![("logits".to_string(), flat(&logits))];
        for p in net.params() {
            if let Some(g) = grads.get(&p.var) {
                out.push((p.name.clone(), flat(g)));
            }
        }
        out
    })
}

#[test]
fn a_training_step_gives_the_same_bits_on_one_and_two_threads() {
    // `small` at 48 px, batch 8: products with thousands of rows (gemm on two threads) and
    // small ones (one thread), reductions over many chunks
    let space = SearchSpace::builtin("small")
        .unwrap()
        .with_num_classes(10)
        .unwrap()
        .with_resolutions(vec![48])
        .unwrap();
    let one = step(&space, 1);
    let two = step(&space, 2);
    assert!(one.len() > 20, "{} tensors compared", one.len());
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name}: one thread and two threads differ");
    }
}

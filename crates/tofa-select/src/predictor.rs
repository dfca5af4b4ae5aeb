//! The accuracy predictor: an MLP on the architecture encoding, as in OFA.
//!
//! Plain Rust (f64, sequential), so training is deterministic for a seed on every machine.
//! Targets are standardised (mean and standard deviation of the training accuracies) and the
//! network predicts the standardised accuracy; ReLU hidden layers, a linear output, He-uniform
//! initialisation from a seeded ChaCha RNG, mean-squared error, Adam with decoupled weight
//! decay, mini-batches in a seeded shuffled order.
//!
//! [`train_predictor`] holds out a seeded random fraction of the samples, trains on the rest,
//! and reports the held-out Kendall tau (tau-b), RMSE, and the RMSE of predicting the training
//! mean (the baseline the predictor has to beat).

use std::collections::BTreeSet;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tofa_nn::{SearchSpace, SubnetConfig};

use crate::encode::{Encoder, Encoding};
use crate::error::{Result, input_err};
use crate::eval::{Evaluator, Meter, SearchCost};

/// One evaluated subnet (the predictor's data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: String,
    pub config: SubnetConfig,
    pub accuracy: f64,
}

/// Evaluates `m` distinct uniformly random subnets of `space` (fewer if the space is smaller
/// or distinct draws run out after `50 * m` draws). Returns the samples and their cost.
pub fn collect_samples(
    space: &SearchSpace,
    m: usize,
    seed: u64,
    evaluator: &mut dyn Evaluator,
) -> Result<(Vec<Sample>, SearchCost)> {
    let mut meter = Meter::new(evaluator);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(m);
    let mut draws = 0usize;
    while out.len() < m && draws < m.saturating_mul(50) {
        draws += 1;
        let c = SubnetConfig::sample(space, &mut rng);
        if !seen.insert(c.id()) {
            continue;
        }
        let acc = meter.evaluate(&c)?.accuracy;
        out.push(Sample {
            id: c.id(),
            config: c,
            accuracy: acc,
        });
    }
    Ok((out, meter.take()))
}

/// Options of [`train_predictor`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictorOpts {
    pub encoding: Encoding,
    /// Hidden layer widths (OFA: three of 400; CPU default: two of 64).
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of samples held out for Kendall tau and RMSE.
    pub holdout: f64,
    pub seed: u64,
}

impl Default for PredictorOpts {
    fn default() -> Self {
        PredictorOpts {
            encoding: Encoding::OneHot,
            hidden: vec![64, 64],
            epochs: 200,
            batch_size: 32,
            lr: 3e-3,
            weight_decay: 1e-4,
            holdout: 0.2,
            seed: 0,
        }
    }
}

/// Held-out quality and cost of a trained predictor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictorReport {
    pub encoding: Encoding,
    pub input_dim: usize,
    pub train_n: usize,
    pub test_n: usize,
    /// Kendall tau-b between predicted and true held-out accuracies.
    pub kendall_tau: f64,
    /// Held-out RMSE of the predictor.
    pub rmse: f64,
    /// Held-out RMSE of predicting the training mean.
    pub rmse_mean_baseline: f64,
    /// Final training MSE (standardised units).
    pub train_mse: f64,
    pub train_s: f64,
}

#[derive(Clone, Debug)]
struct Dense {
    w: Vec<f64>, // out x in, row-major
    b: Vec<f64>,
    n_in: usize,
}

/// A trained accuracy predictor.
#[derive(Clone, Debug)]
pub struct Predictor {
    encoder: Encoder,
    layers: Vec<Dense>,
    y_mean: f64,
    y_std: f64,
}

impl Predictor {
    fn forward(&self, x: &[f64], acts: Option<&mut Vec<Vec<f64>>>) -> f64 {
        let mut cur = x.to_vec();
        let mut store = acts;
        if let Some(a) = store.as_deref_mut() {
            a.clear();
            a.push(cur.clone());
        }
        let last = self.layers.len() - 1;
        for (li, l) in self.layers.iter().enumerate() {
            let mut next = l.b.clone();
            for (o, n) in next.iter_mut().enumerate() {
                let row = &l.w[o * l.n_in..(o + 1) * l.n_in];
                *n += row.iter().zip(&cur).map(|(w, x)| w * x).sum::<f64>();
                if li != last {
                    *n = n.max(0.0);
                }
            }
            cur = next;
            if let Some(a) = store.as_deref_mut() {
                a.push(cur.clone());
            }
        }
        cur[0]
    }

    /// Predicted accuracy of `cfg`.
    pub fn predict(&self, cfg: &SubnetConfig) -> Result<f64> {
        let x = self.encoder.encode(cfg)?;
        Ok(self.y_mean + self.y_std * self.forward(&x, None))
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
}

/// Kendall's tau-b of two equally long sequences (0 when either is constant).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (mut conc, mut disc, mut ta, mut tb, mut pairs) = (0i64, 0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            pairs += 1;
            let da = (a[i] - a[j]).partial_cmp(&0.0).map_or(0, |o| o as i64);
            let db = (b[i] - b[j]).partial_cmp(&0.0).map_or(0, |o| o as i64);
            if da == 0 {
                ta += 1;
            }
            if db == 0 {
                tb += 1;
            }
            match da * db {
                1 => conc += 1,
                -1 => disc += 1,
                _ => {}
            }
        }
    }
    let den = (((pairs - ta) as f64) * ((pairs - tb) as f64)).sqrt();
    if den == 0.0 {
        0.0
    } else {
        (conc - disc) as f64 / den
    }
}

/// Root mean squared error (0 for empty input).
pub fn rmse(pred: &[f64], truth: &[f64]) -> f64 {
    let n = pred.len().min(truth.len());
    if n == 0 {
        return 0.0;
    }
    let s: f64 = pred.iter().zip(truth).map(|(p, t)| (p - t) * (p - t)).sum();
    (s / n as f64).sqrt()
}

/// Trains a predictor on `samples` (held-out split described in the module docs).
pub fn train_predictor(
    space: &SearchSpace,
    samples: &[Sample],
    opts: &PredictorOpts,
) -> Result<(Predictor, PredictorReport)> {
    let t = Instant::now();
    if !(0.0..1.0).contains(&opts.holdout) {
        return Err(input_err(format!(
            "predictor: holdout {} is not in [0, 1)",
            opts.holdout
        )));
    }
    if opts.epochs == 0 || opts.batch_size == 0 || opts.lr <= 0.0 {
        return Err(input_err(
            "predictor: epochs, batch_size and lr must be positive",
        ));
    }
    let encoder = Encoder::new(space, opts.encoding);
    let xs = samples
        .iter()
        .map(|s| encoder.encode(&s.config))
        .collect::<Result<Vec<_>>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.shuffle(&mut rng);
    let test_n = (samples.len() as f64 * opts.holdout).round() as usize;
    let (test, train) = order.split_at(test_n);
    if train.len() < 2 || (opts.holdout > 0.0 && test.is_empty()) {
        return Err(input_err(format!(
            "predictor: {} samples are too few for holdout {} (need at least 2 to train and 1 to test)",
            samples.len(),
            opts.holdout
        )));
    }
    let ys: Vec<f64> = samples.iter().map(|s| s.accuracy).collect();
    let y_mean = train.iter().map(|&i| ys[i]).sum::<f64>() / train.len() as f64;
    let var = train.iter().map(|&i| (ys[i] - y_mean).powi(2)).sum::<f64>() / train.len() as f64;
    let y_std = var.sqrt().max(1e-6);

    // layers
    let mut sizes = vec![encoder.dim()];
    sizes.extend(opts.hidden.iter().copied());
    sizes.push(1);
    let layers = sizes
        .windows(2)
        .map(|w| {
            let (n_in, n_out) = (w[0].max(1), w[1]);
            let a = (6.0 / n_in as f64).sqrt();
            Dense {
                w: (0..n_in * n_out).map(|_| rng.random_range(-a..a)).collect(),
                b: vec![0.0; n_out],
                n_in,
            }
        })
        .collect::<Vec<_>>();
    let mut p = Predictor {
        encoder,
        layers,
        y_mean,
        y_std,
    };
    if p.encoder.dim() == 0 {
        return Err(input_err(
            "predictor: the space has no elastic dimension to encode",
        ));
    }

    // Adam state
    let mut m: Vec<(Vec<f64>, Vec<f64>)> = p
        .layers
        .iter()
        .map(|l| (vec![0.0; l.w.len()], vec![0.0; l.b.len()]))
        .collect();
    let mut v = m.clone();
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut step = 0i32;
    let mut train_order = train.to_vec();
    let mut acts = Vec::new();
    let mut train_mse = 0.0;
    for _ in 0..opts.epochs {
        train_order.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        for batch in train_order.chunks(opts.batch_size) {
            let mut gw: Vec<(Vec<f64>, Vec<f64>)> = p
                .layers
                .iter()
                .map(|l| (vec![0.0; l.w.len()], vec![0.0; l.b.len()]))
                .collect();
            for &i in batch {
                let z = (ys[i] - y_mean) / y_std;
                let out = p.forward(&xs[i], Some(&mut acts));
                let err = out - z;
                epoch_loss += err * err;
                // backward: d loss / d out = 2 err / |batch|
                let mut delta = vec![2.0 * err / batch.len() as f64];
                for li in (0..p.layers.len()).rev() {
                    let l = &p.layers[li];
                    let input = &acts[li];
                    let (gwl, gbl) = &mut gw[li];
                    for (o, d) in delta.iter().enumerate() {
                        gbl[o] += d;
                        let g = &mut gwl[o * l.n_in..(o + 1) * l.n_in];
                        for (gi, xi) in g.iter_mut().zip(input) {
                            *gi += d * xi;
                        }
                    }
                    if li > 0 {
                        let mut prev = vec![0.0; l.n_in];
                        for (o, d) in delta.iter().enumerate() {
                            let row = &l.w[o * l.n_in..(o + 1) * l.n_in];
                            for (pj, w) in prev.iter_mut().zip(row) {
                                *pj += d * w;
                            }
                        }
                        // ReLU derivative of the layer below's output
                        for (pj, a) in prev.iter_mut().zip(input) {
                            if *a <= 0.0 {
                                *pj = 0.0;
                            }
                        }
                        delta = prev;
                    }
                }
            }
            step += 1;
            let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
            for (li, l) in p.layers.iter_mut().enumerate() {
                let upd =
                    |params: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], decay: bool| {
                        for k in 0..params.len() {
                            m[k] = b1 * m[k] + (1.0 - b1) * g[k];
                            v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
                            let mut d = (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
                            if decay {
                                d += opts.weight_decay * params[k];
                            }
                            params[k] -= opts.lr * d;
                        }
                    };
                upd(&mut l.w, &gw[li].0, &mut m[li].0, &mut v[li].0, true);
                upd(&mut l.b, &gw[li].1, &mut m[li].1, &mut v[li].1, false);
            }
        }
        train_mse = epoch_loss / train_order.len() as f64;
    }

    let truth: Vec<f64> = test.iter().map(|&i| ys[i]).collect();
    let pred: Vec<f64> = test
        .iter()
        .map(|&i| y_mean + y_std * p.forward(&xs[i], None))
        .collect();
    let report = PredictorReport {
        encoding: opts.encoding,
        input_dim: p.encoder.dim(),
        train_n: train.len(),
        test_n: test.len(),
        kendall_tau: kendall_tau(&pred, &truth),
        rmse: rmse(&pred, &truth),
        rmse_mean_baseline: rmse(&vec![y_mean; truth.len()], &truth),
        train_mse,
        train_s: t.elapsed().as_secs_f64(),
    };
    Ok((p, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_tau_and_rmse_by_hand() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(kendall_tau(&a, &[10.0, 20.0, 30.0, 40.0]), 1.0);
        assert_eq!(kendall_tau(&a, &[4.0, 3.0, 2.0, 1.0]), -1.0);
        // one swapped pair of six: (5 - 1) / 6
        assert!((kendall_tau(&a, &[1.0, 3.0, 2.0, 4.0]) - 4.0 / 6.0).abs() < 1e-12);
        // tau-b with a tie in b: C=5, D=0, tb=1 -> 5 / sqrt(6 * 5)
        let t = kendall_tau(&a, &[1.0, 1.0, 2.0, 3.0]);
        assert!((t - 5.0 / 30f64.sqrt()).abs() < 1e-12, "{t}");
        assert_eq!(kendall_tau(&a, &[1.0; 4]), 0.0);
        assert!((rmse(&[1.0, 3.0], &[0.0, 0.0]) - 5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn too_few_samples_is_an_error() {
        let s = SearchSpace::builtin("tiny").unwrap();
        let c = SubnetConfig::maxnet(&s);
        let one = vec![Sample {
            id: c.id(),
            config: c,
            accuracy: 0.5,
        }];
        let e = train_predictor(&s, &one, &PredictorOpts::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 samples are too few for holdout 0.2"), "{e}");
    }
}

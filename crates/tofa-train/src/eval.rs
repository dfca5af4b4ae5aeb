//! Test accuracy of a subnet: BN recalibrated on training images first (a subnet's shared
//! running statistics are not its own), or the raw network on its running statistics.

use candle_core::{D, Device, Tensor};
use serde::{Deserialize, Serialize};
use tofa_data::batch::{View, assemble, eval_batches};
use tofa_data::{BatchConfig, Dataset};
use tofa_nn::{BnStats, Mode, SubnetConfig, Supernet};

use crate::error::{Result, config_err};

/// Accuracy on a test set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalResult {
    /// `correct / images`.
    pub accuracy: f64,
    /// Top-1 correct predictions.
    pub correct: u64,
    /// Images evaluated.
    pub images: u64,
}

/// `n` batches of `batch_size` weak views of training images for BN recalibration, drawn by
/// `seed` from `indices` (with wrap-around when there are fewer images). OFA recalibrates on
/// training images with the training augmentation; so do we.
pub fn calibration_batches(
    ds: &Dataset,
    indices: &[u32],
    n: usize,
    batch_size: usize,
    batch: BatchConfig,
    seed: u64,
) -> Result<Vec<Tensor>> {
    if indices.is_empty() || n == 0 || batch_size == 0 {
        return Err(config_err(
            "calibration",
            "needs images, at least one batch and a batch size of at least 1",
        ));
    }
    let mut sampler = tofa_data::ShuffleSampler::new(indices.to_vec(), seed)?;
    (0..n)
        .map(|i| {
            let idx = sampler.next_batch(batch_size);
            Ok(assemble(
                ds,
                &idx,
                &batch,
                View::Weak,
                (seed, 0xca1, i as u64),
                &Device::Cpu,
            )?)
        })
        .collect()
}

/// `x` (`[B, C, h, w]`) resized to `r x r` (bilinear); unchanged when it already is.
pub fn resize(x: &Tensor, r: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    Ok(if (h, w) == (r, r) {
        x.clone()
    } else {
        x.upsample_bilinear2d(r, r, false)?
    })
}

fn accuracy(
    net: &Supernet,
    cfg: &SubnetConfig,
    stats: Option<&BnStats>,
    test: &Dataset,
    indices: &[u32],
    batch: BatchConfig,
    batch_size: usize,
) -> Result<EvalResult> {
    let mut bc = batch;
    bc.out_size = (cfg.resolution, cfg.resolution);
    let (mut correct, mut images) = (0u64, 0u64);
    for b in eval_batches(test, indices, batch_size, bc, net.device()) {
        let b = b?;
        let logits = net.forward_t(&b.images, cfg, Mode::Eval(stats))?;
        let pred = logits.argmax(D::Minus1)?;
        let hits = pred.eq(&b.labels)?.to_dtype(candle_core::DType::U32)?;
        correct += u64::from(hits.sum_all()?.to_scalar::<u32>()?);
        images += b.indices.len() as u64;
    }
    if images == 0 {
        return Err(config_err("test indices", "nothing to evaluate"));
    }
    Ok(EvalResult {
        accuracy: correct as f64 / images as f64,
        correct,
        images,
    })
}

/// Top-1 accuracy of subnet `cfg` on `test[indices]` after recalibrating its BN statistics on
/// `calib` (e.g. [`calibration_batches`]; resized to the subnet's resolution when needed).
/// Test images are unaugmented, resized to `cfg.resolution`, normalised as `batch` says.
pub fn evaluate(
    net: &Supernet,
    cfg: &SubnetConfig,
    calib: &[Tensor],
    test: &Dataset,
    indices: &[u32],
    batch: BatchConfig,
    batch_size: usize,
) -> Result<EvalResult> {
    let calib: Vec<Tensor> = calib
        .iter()
        .map(|x| Ok(resize(x, cfg.resolution)?.to_device(net.device())?))
        .collect::<Result<_>>()?;
    let stats = net.recalibrate_bn(cfg, &calib)?;
    accuracy(net, cfg, Some(&stats), test, indices, batch, batch_size)
}

/// Top-1 accuracy of `cfg` on the shared running statistics, no recalibration (meaningful for
/// the network whose statistics training updated: the maxnet, or a single network).
pub fn evaluate_raw(
    net: &Supernet,
    cfg: &SubnetConfig,
    test: &Dataset,
    indices: &[u32],
    batch: BatchConfig,
    batch_size: usize,
) -> Result<EvalResult> {
    accuracy(net, cfg, None, test, indices, batch, batch_size)
}

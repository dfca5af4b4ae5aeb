//! Batches as candle tensors, samplers for the training loop, sequential evaluation batches.
//!
//! Images come out NCHW `f32`, scaled to `[0, 1]` then normalised per channel; labels as a `u32`
//! tensor of shape `(N,)`. Batches are assembled in parallel with rayon; image `k` of a batch
//! draws from a ChaCha8 stream keyed by `(seed, stream, step, k, index)`, so the result does
//! not depend on the number of threads.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::augment::{Img, StrongAug, WeakAug, resized_crop, strong_view, weak_view};
use crate::dataset::Dataset;
use crate::error::{Result, config};
use crate::rng::rng_for;

/// Per-channel normalisation `(x / 255 - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// torchvision's ImageNet statistics.
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// Leaves values in `[0, 1]`.
    pub const IDENTITY: Self = Self {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
}

impl Default for Normalize {
    fn default() -> Self {
        Self::IMAGENET
    }
}

/// Everything that shapes a batch besides its indices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchConfig {
    /// Output `(height, width)`.
    pub out_size: (usize, usize),
    pub weak: WeakAug,
    pub strong: StrongAug,
    pub normalize: Normalize,
}

impl BatchConfig {
    pub fn new(out_size: (usize, usize)) -> Self {
        Self {
            out_size,
            weak: WeakAug::default(),
            strong: StrongAug::default(),
            normalize: Normalize::default(),
        }
    }
}

impl BatchConfig {
    /// Checks every range a random draw or a division relies on.
    pub fn validate(&self) -> Result<()> {
        let w = &self.weak;
        let ordered = |(a, b): (f32, f32)| a.is_finite() && b.is_finite() && a <= b;
        if !(ordered(w.scale) && w.scale.0 > 0.0 && w.scale.1 <= 1.0) {
            return Err(config(
                "weak.scale",
                format!("{:?} is not an interval within (0, 1]", w.scale),
            ));
        }
        if !(ordered(w.ratio) && w.ratio.0 > 0.0) {
            return Err(config(
                "weak.ratio",
                format!("{:?} is not a positive interval", w.ratio),
            ));
        }
        if !(0.0..=1.0).contains(&w.flip_p) {
            return Err(config(
                "weak.flip_p",
                format!("{} is not a probability", w.flip_p),
            ));
        }
        for (field, v) in [
            ("weak.brightness", w.brightness),
            ("weak.contrast", w.contrast),
            ("weak.saturation", w.saturation),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(config(field, format!("{v} is not a non-negative strength")));
            }
        }
        if !(0.0..=0.5).contains(&w.hue) {
            return Err(config("weak.hue", format!("{} is not in [0, 0.5]", w.hue)));
        }
        if let StrongAug::RandAugment {
            magnitude,
            num_bins,
            ..
        } = self.strong
            && (num_bins < 2 || magnitude >= num_bins)
        {
            return Err(config(
                "strong.magnitude",
                format!(
                    "magnitude {magnitude} needs at least 2 bins and fewer than num_bins ({num_bins})"
                ),
            ));
        }
        if self
            .normalize
            .std
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(config(
                "normalize.std",
                format!("{:?} must be positive", self.normalize.std),
            ));
        }
        Ok(())
    }
}

/// Which view of an image a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// No augmentation; resized to the output size if it differs.
    Plain,
    Weak,
    Strong,
}

/// Images and labels.
#[derive(Debug)]
pub struct Batch {
    /// `(N, C, H, W)` f32.
    pub images: Tensor,
    /// `(N,)` u32.
    pub labels: Tensor,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<u32>,
}

/// Weak and strong views of the same unlabelled images.
#[derive(Debug)]
pub struct UnlabelledBatch {
    pub weak: Tensor,
    pub strong: Tensor,
    /// True labels, for diagnostics only (pseudo-label accuracy); training must not use them.
    pub labels: Tensor,
    pub indices: Vec<u32>,
}

/// What one training iteration consumes.
#[derive(Debug)]
pub struct TrainBatch {
    pub step: u64,
    /// Weak views of labelled images.
    pub labelled: Batch,
    pub unlabelled: Option<UnlabelledBatch>,
}

/// Stream tags keep the draws of different batch kinds apart.
const STREAM_LABELLED: u64 = 1;
const STREAM_WEAK: u64 = 2;
const STREAM_STRONG: u64 = 3;

/// Assembles the views of `indices` into an `(N, C, H, W)` tensor.
///
/// `keys` are `(seed, stream, step)`; image `k` uses the generator keyed by
/// `(seed, stream, step, k, indices[k])`.
pub fn assemble(
    ds: &Dataset,
    indices: &[u32],
    cfg: &BatchConfig,
    view: View,
    (seed, stream, step): (u64, u64, u64),
    device: &Device,
) -> Result<Tensor> {
    cfg.validate()?;
    let (oh, ow) = cfg.out_size;
    if oh == 0 || ow == 0 {
        return Err(config("out_size", format!("{oh}x{ow} is empty")));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i as usize >= ds.len()) {
        return Err(config(
            "indices",
            format!(
                "index {bad} out of range for dataset {} of {}",
                ds.name(),
                ds.len()
            ),
        ));
    }
    let c = ds.channels();
    let plane = oh * ow;
    let mut out = vec![0f32; indices.len() * c * plane];
    let scale: Vec<(f32, f32)> = (0..c)
        .map(|k| {
            (
                1.0 / (255.0 * cfg.normalize.std[k]),
                cfg.normalize.mean[k] / cfg.normalize.std[k],
            )
        })
        .collect();
    out.par_chunks_mut(c * plane)
        .zip(indices.par_iter())
        .enumerate()
        .for_each(|(k, (dst, &index))| {
            let src = Img::new(
                ds.height(),
                ds.width(),
                c,
                ds.image(index as usize).to_vec(),
            );
            let mut rng = rng_for(&[seed, stream, step, k as u64, u64::from(index)]);
            let v = match view {
                View::Plain if (src.h, src.w) == (oh, ow) => src,
                View::Plain => resized_crop(&src, (0, 0, src.h, src.w), (oh, ow)),
                View::Weak => weak_view(&src, (oh, ow), &cfg.weak, &mut rng),
                View::Strong => strong_view(&src, (oh, ow), &cfg.weak, cfg.strong, &mut rng),
            };
            for (p, px) in v.data.chunks_exact(c).enumerate() {
                for (ch, &val) in px.iter().enumerate() {
                    let (a, b) = scale[ch];
                    dst[ch * plane + p] = f32::from(val) * a - b;
                }
            }
        });
    Ok(Tensor::from_vec(out, (indices.len(), c, oh, ow), device)?)
}

fn labels_of(ds: &Dataset, indices: &[u32], device: &Device) -> Result<Tensor> {
    let labels: Vec<u32> = indices.iter().map(|&i| ds.label(i as usize)).collect();
    Ok(Tensor::from_vec(labels, indices.len(), device)?)
}

/// An endless shuffled walk over a set of indices: each epoch a fresh permutation keyed by
/// `(seed, epoch)`; a batch that runs past an epoch's end continues into the next.
#[derive(Clone, Debug)]
pub struct ShuffleSampler {
    indices: Vec<u32>,
    seed: u64,
    epoch: u64,
    pos: usize,
    order: Vec<u32>,
}

impl ShuffleSampler {
    pub fn new(indices: Vec<u32>, seed: u64) -> Result<Self> {
        if indices.is_empty() {
            return Err(config("indices", "a sampler needs at least one index"));
        }
        let mut s = Self {
            indices,
            seed,
            epoch: 0,
            pos: 0,
            order: Vec::new(),
        };
        s.reshuffle();
        Ok(s)
    }

    fn reshuffle(&mut self) {
        self.order.clone_from(&self.indices);
        self.order
            .shuffle(&mut rng_for(&[self.seed, 0x5a3, self.epoch]));
        self.pos = 0;
    }

    /// Completed epochs so far.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next `n` indices.
    pub fn next_batch(&mut self, n: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pos == self.order.len() {
                self.epoch += 1;
                self.reshuffle();
            }
            let take = (n - out.len()).min(self.order.len() - self.pos);
            out.extend_from_slice(&self.order[self.pos..self.pos + take]);
            self.pos += take;
        }
        out
    }
}

/// The training loop's endless source: per step a batch of labelled images (weak views) and,
/// when there are unlabelled images, a batch of unlabelled images with weak and strong views
/// of the same images.
#[derive(Debug)]
pub struct TrainLoader<'a> {
    ds: &'a Dataset,
    cfg: BatchConfig,
    labelled: ShuffleSampler,
    unlabelled: Option<ShuffleSampler>,
    batch_labelled: usize,
    batch_unlabelled: usize,
    seed: u64,
    step: u64,
    device: Device,
}

impl<'a> TrainLoader<'a> {
    /// `labelled` and `unlabelled` index `ds`; the paper uses 32 and 32.
    pub fn new(
        ds: &'a Dataset,
        labelled: &[u32],
        unlabelled: &[u32],
        (batch_labelled, batch_unlabelled): (usize, usize),
        cfg: BatchConfig,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        if batch_labelled == 0 {
            return Err(config("batch_labelled", "must be at least 1"));
        }
        let unlabelled = if unlabelled.is_empty() || batch_unlabelled == 0 {
            None
        } else {
            Some(ShuffleSampler::new(unlabelled.to_vec(), seed ^ 0x00a1)?)
        };
        Ok(Self {
            ds,
            cfg,
            labelled: ShuffleSampler::new(labelled.to_vec(), seed)?,
            unlabelled,
            batch_labelled,
            batch_unlabelled,
            seed,
            step: 0,
            device,
        })
    }

    /// The step the next batch will carry.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Fast-forwards to `step` (for resuming a training run): draws the indices of the skipped
    /// steps without assembling images, so the batches from `step` on are exactly those an
    /// uninterrupted loader gives. Does nothing when already at or past `step`.
    pub fn skip_to(&mut self, step: u64) {
        while self.step < step {
            self.labelled.next_batch(self.batch_labelled);
            if let Some(s) = self.unlabelled.as_mut() {
                s.next_batch(self.batch_unlabelled);
            }
            self.step += 1;
        }
    }

    /// The next step's batches (never `None`).
    pub fn next_batch(&mut self) -> Result<TrainBatch> {
        let step = self.step;
        self.step += 1;
        let idx = self.labelled.next_batch(self.batch_labelled);
        let labelled = Batch {
            images: assemble(
                self.ds,
                &idx,
                &self.cfg,
                View::Weak,
                (self.seed, STREAM_LABELLED, step),
                &self.device,
            )?,
            labels: labels_of(self.ds, &idx, &self.device)?,
            indices: idx,
        };
        let unlabelled = match self.unlabelled.as_mut() {
            None => None,
            Some(s) => {
                let idx = s.next_batch(self.batch_unlabelled);
                let key = |stream| (self.seed, stream, step);
                Some(UnlabelledBatch {
                    weak: assemble(
                        self.ds,
                        &idx,
                        &self.cfg,
                        View::Weak,
                        key(STREAM_WEAK),
                        &self.device,
                    )?,
                    strong: assemble(
                        self.ds,
                        &idx,
                        &self.cfg,
                        View::Strong,
                        key(STREAM_STRONG),
                        &self.device,
                    )?,
                    labels: labels_of(self.ds, &idx, &self.device)?,
                    indices: idx,
                })
            }
        };
        Ok(TrainBatch {
            step,
            labelled,
            unlabelled,
        })
    }
}

impl Iterator for TrainLoader<'_> {
    type Item = Result<TrainBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_batch())
    }
}

/// Sequential, unaugmented batches over `indices` (the last one may be short).
pub fn eval_batches<'a>(
    ds: &'a Dataset,
    indices: &'a [u32],
    batch_size: usize,
    cfg: BatchConfig,
    device: &'a Device,
) -> impl Iterator<Item = Result<Batch>> + 'a {
    indices.chunks(batch_size.max(1)).map(move |chunk| {
        Ok(Batch {
            images: assemble(ds, chunk, &cfg, View::Plain, (0, 0, 0), device)?,
            labels: labels_of(ds, chunk, device)?,
            indices: chunk.to_vec(),
        })
    })
}

/// All indices `0..ds.len()`, for evaluating a whole test set.
pub fn all_indices(ds: &Dataset) -> Vec<u32> {
    (0..ds.len() as u32).collect()
}

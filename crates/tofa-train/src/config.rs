//! Training hyper-parameters (a wire type: stage params deserialise into it) and the learning
//! rate schedule.

use serde::{Deserialize, Serialize};
use tofa_nn::Precision;

use crate::error::{Result, config_err};

/// The TOFA loss of eq. (4). Every variant trains the maxnet on the labelled batch and
/// distils the sandwich subnets towards it on the labelled batch (eq. (3), `L^lab`); they
/// differ in what they do with the unlabelled batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `L^lab_TOFA`: labelled data only.
    Lab,
    /// `L^FM_TOFA`: `L^lab` + FixMatch on the maxnet.
    Fm,
    /// `L^dist_TOFA`: `L^lab` + distillation of the subnets on the unlabelled batch.
    Dist,
    /// `L_TOFA` (Algorithm 1): all three terms.
    #[default]
    Full,
}

impl Variant {
    /// All four, in the order of Table 4.
    pub const ALL: [Variant; 4] = [Variant::Lab, Variant::Fm, Variant::Dist, Variant::Full];

    /// The serde name (`lab`, `fm`, `dist`, `full`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Lab => "lab",
            Variant::Fm => "fm",
            Variant::Dist => "dist",
            Variant::Full => "full",
        }
    }

    /// Whether the FixMatch term `L^FM` is on.
    pub fn fixmatch(self) -> bool {
        matches!(self, Variant::Fm | Variant::Full)
    }

    /// Whether the unlabelled distillation term `L^dist` is on.
    pub fn distil_unlabelled(self) -> bool {
        matches!(self, Variant::Dist | Variant::Full)
    }

    /// Whether the variant reads the unlabelled batch at all.
    pub fn uses_unlabelled(self) -> bool {
        self != Variant::Lab
    }
}

/// Every hyper-parameter of a training run, each defaulting to the paper's value (Section
/// 4.2). Profiles scale `iterations`, not the method.
///
/// # Epochs
/// Training is iteration-based; an *epoch* is `ceil(labelled images / batch_labelled)`
/// iterations (one pass over the labelled set, the smaller and the one every variant reads).
/// The warm-up lasts `warmup_epochs` such epochs, capped at `iterations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps `T` (paper: 10,000).
    pub iterations: u64,
    /// Labelled images per iteration (32).
    pub batch_labelled: usize,
    /// Unlabelled images per iteration (32); unused by `lab`.
    pub batch_unlabelled: usize,
    /// Peak learning rate (0.01).
    pub lr: f64,
    /// SGD momentum (0.9; the paper says "standard SGD", we keep the usual momentum).
    pub momentum: f64,
    /// Nesterov momentum (true).
    pub nesterov: bool,
    /// L2 weight decay on weights, not on biases or BN parameters (1e-5).
    pub weight_decay: f64,
    /// Linear warm-up length in epochs (5; see "Epochs" above); then cosine decay to 0.
    pub warmup_epochs: f64,
    /// The run length the warm-up epochs were set for (the paper's 10,000 iterations). A run
    /// shortened to `iterations < warmup_reference_iterations` shortens its warm-up in the
    /// same ratio, so the warm-up keeps the share of the run it has in the paper (5 epochs of
    /// CIFAR-100's labelled set are 3% of 10,000 iterations; unscaled they would be 40% of a
    /// 400-iteration run). 0 turns the scaling off.
    pub warmup_reference_iterations: u64,
    /// Dropout before the classifier (0.3).
    pub dropout: f32,
    /// Drop-connect on residual branches (0.2).
    pub drop_connect: f32,
    /// Whether the sandwich subnets get dropout and drop-connect too (false). BigNAS and
    /// AttentiveNAS, whose sandwich rule TOFA uses, regularise only the largest child: the
    /// smaller ones underfit rather than overfit, and they are distilled towards the maxnet.
    pub regularise_subnets: bool,
    /// Label smoothing of every one-hot cross-entropy (0.1).
    pub label_smoothing: f64,
    /// FixMatch confidence threshold (0.95): an unlabelled image counts when the maxnet's
    /// largest probability on its weak view is strictly above it (times the smoothing cap,
    /// see `fixmatch_threshold_scaled`).
    pub fixmatch_threshold: f64,
    /// Whether the threshold is read relative to the largest probability a model trained with
    /// label smoothing `alpha` aims at, `1 - alpha + alpha / C` (true). FixMatch uses no
    /// smoothing, so its 0.95 is relative to 1; with the paper's smoothing 0.1 the cap is
    /// 0.90-0.91 for 10-50 classes, a trained maxnet's confidence sits near it, and an
    /// absolute 0.95 masks out almost every image (mask rates of 0-1% measured on `quick`),
    /// turning `fm` into `lab`. Scaled, the test is `p_max > 0.95 * cap`; with no smoothing it
    /// is FixMatch's. A documented deviation from the paper's text.
    pub fixmatch_threshold_scaled: bool,
    /// Random subnets per iteration besides maxnet and minnet (2, the sandwich rule).
    pub random_subnets: usize,
    /// The loss of eq. (4).
    pub variant: Variant,
    /// Write a checkpoint every this many iterations (0: never). The final iteration is always
    /// checkpointed when a checkpoint directory is given.
    pub checkpoint_every: u64,
    /// Seed of every random draw of the run (subnet sampling, dropout, batches).
    pub seed: u64,
    /// The precision of the products while training (`tofa_nn::precision`): `bf16` trains on
    /// the portable backend (on the CPU with bf16 rounding emulated in f32), with f32 master
    /// weights; evaluation and export stay f32 on the net's own backend. Off by default, and
    /// not serialised when `f32`, so configs written before it existed keep their keys.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            iterations: 10_000,
            batch_labelled: 32,
            batch_unlabelled: 32,
            lr: 0.01,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-5,
            warmup_epochs: 5.0,
            warmup_reference_iterations: 10_000,
            dropout: 0.3,
            drop_connect: 0.2,
            regularise_subnets: false,
            label_smoothing: 0.1,
            fixmatch_threshold: 0.95,
            fixmatch_threshold_scaled: true,
            random_subnets: 2,
            variant: Variant::Full,
            checkpoint_every: 1000,
            seed: 0,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if self.iterations == 0 {
            return Err(config_err("iterations", "must be at least 1"));
        }
        if self.batch_labelled == 0 {
            return Err(config_err("batch_labelled", "must be at least 1"));
        }
        if self.variant.uses_unlabelled() && self.batch_unlabelled == 0 {
            return Err(config_err(
                "batch_unlabelled",
                format!("must be at least 1 for variant {}", self.variant.name()),
            ));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(config_err(
                "lr",
                format!("{} is not a finite rate >= 0", self.lr),
            ));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(config_err(
                "momentum",
                format!("{} is not in [0, 1)", self.momentum),
            ));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(config_err("nesterov", "needs momentum > 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(config_err(
                "weight_decay",
                format!("{} is not a finite value >= 0", self.weight_decay),
            ));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(config_err(
                "warmup_epochs",
                format!("{} is not a finite value >= 0", self.warmup_epochs),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(config_err(
                "dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        if !(0.0..1.0).contains(&self.drop_connect) {
            return Err(config_err(
                "drop_connect",
                format!("{} is not in [0, 1)", self.drop_connect),
            ));
        }
        if !(unit(self.label_smoothing) && self.label_smoothing < 1.0) {
            return Err(config_err(
                "label_smoothing",
                format!("{} is not in [0, 1)", self.label_smoothing),
            ));
        }
        if !unit(self.fixmatch_threshold) {
            return Err(config_err(
                "fixmatch_threshold",
                format!("{} is not in [0, 1]", self.fixmatch_threshold),
            ));
        }
        Ok(())
    }

    /// The confidence a weak view's largest probability must exceed for its pseudo-label to
    /// count, for a task of `classes` classes (see `fixmatch_threshold_scaled`).
    pub fn fixmatch_cutoff(&self, classes: usize) -> f64 {
        if !self.fixmatch_threshold_scaled {
            return self.fixmatch_threshold;
        }
        let a = self.label_smoothing;
        self.fixmatch_threshold * (1.0 - a + a / classes.max(1) as f64)
    }

    /// The schedule of a run whose labelled set has `labelled` images.
    pub fn schedule(&self, labelled: usize) -> LrSchedule {
        let per_epoch = labelled.div_ceil(self.batch_labelled.max(1)).max(1) as f64;
        let r = self.warmup_reference_iterations;
        let share = if r > 0 && self.iterations < r {
            self.iterations as f64 / r as f64
        } else {
            1.0
        };
        let warmup = (self.warmup_epochs * per_epoch * share).round() as u64;
        LrSchedule {
            base: self.lr,
            warmup_iters: warmup.min(self.iterations),
            total: self.iterations,
        }
    }
}

/// Linear warm-up then cosine decay to 0, as a function of the 1-based iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// Peak rate.
    pub base: f64,
    /// Iterations of linear warm-up `W`.
    pub warmup_iters: u64,
    /// All iterations `T`.
    pub total: u64,
}

impl LrSchedule {
    /// The rate of iteration `t` (1-based): `base * t / W` for `t <= W`, then
    /// `base * (1 + cos(pi * (t - W) / (T - W))) / 2`, which is 0 at `t = T`.
    pub fn lr_at(&self, t: u64) -> f64 {
        let (w, n) = (self.warmup_iters, self.total);
        if t <= w {
            return self.base * t as f64 / w as f64;
        }
        let progress = (t - w) as f64 / (n - w).max(1) as f64;
        self.base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let c = TrainConfig::default();
        assert_eq!(
            (c.iterations, c.batch_labelled, c.batch_unlabelled),
            (10_000, 32, 32)
        );
        assert_eq!((c.lr, c.weight_decay, c.warmup_epochs), (0.01, 1e-5, 5.0));
        assert_eq!((c.dropout, c.drop_connect), (0.3, 0.2));
        assert_eq!((c.label_smoothing, c.fixmatch_threshold), (0.1, 0.95));
        assert_eq!(c.warmup_reference_iterations, 10_000);
        assert!(c.fixmatch_threshold_scaled && !c.regularise_subnets);
        assert_eq!((c.random_subnets, c.variant), (2, Variant::Full));
        c.validate().unwrap();
    }

    #[test]
    fn variants_use_lowercase_names_and_unknown_fields_are_rejected() {
        let c: TrainConfig =
            serde_json::from_str(r#"{"variant": "dist", "iterations": 7}"#).unwrap();
        assert_eq!((c.variant, c.iterations, c.lr), (Variant::Dist, 7, 0.01));
        for v in Variant::ALL {
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                format!("\"{}\"", v.name())
            );
        }
        let err = serde_json::from_str::<TrainConfig>(r#"{"iters": 7}"#).unwrap_err();
        assert!(err.to_string().contains("iters"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_field() {
        for (c, field) in [
            (
                TrainConfig {
                    iterations: 0,
                    ..Default::default()
                },
                "iterations",
            ),
            (
                TrainConfig {
                    lr: f64::NAN,
                    ..Default::default()
                },
                "lr",
            ),
            (
                TrainConfig {
                    dropout: 1.0,
                    ..Default::default()
                },
                "dropout",
            ),
            (
                TrainConfig {
                    fixmatch_threshold: 1.5,
                    ..Default::default()
                },
                "fixmatch_threshold",
            ),
            (
                TrainConfig {
                    batch_unlabelled: 0,
                    ..Default::default()
                },
                "batch_unlabelled",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let lab = TrainConfig {
            batch_unlabelled: 0,
            variant: Variant::Lab,
            ..Default::default()
        };
        lab.validate().unwrap();
    }

    #[test]
    fn schedule_warms_up_linearly_and_ends_at_zero() {
        // 100 labelled images, batch 32 -> 4 iterations per epoch; 2 epochs -> W = 8; T = 20.
        let c = TrainConfig {
            iterations: 20,
            warmup_epochs: 2.0,
            warmup_reference_iterations: 0,
            lr: 0.1,
            ..Default::default()
        };
        let s = c.schedule(100);
        assert_eq!(s.warmup_iters, 8);
        assert!((s.lr_at(1) - 0.1 / 8.0).abs() < 1e-12);
        assert!((s.lr_at(4) - 0.05).abs() < 1e-12);
        assert!((s.lr_at(8) - 0.1).abs() < 1e-12);
        // halfway through the cosine part: t - W = 6 of 12 -> base / 2
        assert!((s.lr_at(14) - 0.05).abs() < 1e-12);
        assert!(s.lr_at(20).abs() < 1e-12);
        // strictly decreasing after the warm-up
        assert!((9..20).all(|t| s.lr_at(t + 1) < s.lr_at(t)));
        // no warm-up: cosine from the first iteration
        let s0 = TrainConfig {
            iterations: 10,
            warmup_epochs: 0.0,
            ..c
        }
        .schedule(100);
        assert!(s0.lr_at(10).abs() < 1e-12 && s0.lr_at(1) < 0.1 && s0.lr_at(1) > 0.09);
    }

    #[test]
    fn warmup_shrinks_with_a_run_shorter_than_the_reference() {
        // 1,000 labelled images: 32 iterations per epoch, 5 epochs = 160 iterations.
        let full = TrainConfig::default();
        assert_eq!(full.schedule(1000).warmup_iters, 160);
        // 400 of 10,000 iterations: 160 * 0.04 = 6.4 -> 6
        let short = TrainConfig {
            iterations: 400,
            ..Default::default()
        };
        assert_eq!(short.schedule(1000).warmup_iters, 6);
        // a run longer than the reference keeps its epochs
        let long = TrainConfig {
            iterations: 20_000,
            ..Default::default()
        };
        assert_eq!(long.schedule(1000).warmup_iters, 160);
        let off = TrainConfig {
            warmup_reference_iterations: 0,
            ..short
        };
        assert_eq!(off.schedule(1000).warmup_iters, 160);
    }

    #[test]
    fn fixmatch_cutoff_is_relative_to_the_smoothing_cap() {
        let c = TrainConfig::default();
        // 10 classes, alpha 0.1: cap 0.91, cutoff 0.8645
        assert!((c.fixmatch_cutoff(10) - 0.95 * 0.91).abs() < 1e-12);
        // a model that reaches the cap passes; the absolute 0.95 would reject it
        assert!(0.91 > c.fixmatch_cutoff(10) && 0.91 < 0.95);
        let unsmoothed = TrainConfig {
            label_smoothing: 0.0,
            ..Default::default()
        };
        assert_eq!(unsmoothed.fixmatch_cutoff(10), 0.95);
        let absolute = TrainConfig {
            fixmatch_threshold_scaled: false,
            ..Default::default()
        };
        assert_eq!(absolute.fixmatch_cutoff(100), 0.95);
    }
}

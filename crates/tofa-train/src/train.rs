//! The training loops: TOFA supernet training (Algorithm 1), single networks (the Table 3
//! baselines and per-budget fine-tuning), and pre-training on a source task. One loop drives
//! them all: schedule, checkpoints, resume, NaN checks, loss curve and cost.

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tofa_data::{BatchConfig, Dataset, TrainBatch, TrainLoader};
use tofa_nn::{
    Backend, Mode, Omega, SearchSpace, Sgd, SgdConfig, SubnetConfig, Supernet, TrainOpts,
};

use crate::checkpoint::{self, CheckpointState, STATE_VERSION};
use crate::config::{TrainConfig, Variant};
use crate::error::{Result, Stage, TrainError, config_err};
use crate::loss::{TofaLogits, tofa_loss};

/// Stream tags of [`tofa_data::rng::rng_for`] keys, keeping draws of different kinds apart.
const STREAM_ITER: u64 = 0x7f_a1;
const STREAM_DATA: u64 = 0xda_7a;

/// Where a run's images come from.
#[derive(Clone, Copy, Debug)]
pub struct TrainData<'a> {
    /// The training set (labelled and unlabelled images index it).
    pub dataset: &'a Dataset,
    /// Labelled indices (weak views, true labels).
    pub labelled: &'a [u32],
    /// Unlabelled indices (weak + strong views, labels never read); may be empty for
    /// `lab`, labelled-only single training and pre-training.
    pub unlabelled: &'a [u32],
    /// Augmentation and normalisation. `out_size` should be the largest resolution of the
    /// space: a subnet at a smaller resolution gets the batch resized (bilinear).
    pub batch: BatchConfig,
}

/// The losses of one iteration (batch means; see [`crate::loss`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterRecord {
    /// 1-based iteration.
    pub iter: u64,
    /// Learning rate of the step.
    pub lr: f64,
    /// The optimised sum.
    pub total: f64,
    /// `L^lab_max`: label-smoothed CE of the maxnet (or the single network) on the labelled
    /// weak view.
    pub lab: f64,
    /// `L^FM`: FixMatch on the maxnet (or the single network); `None` when off.
    pub fm: Option<f64>,
    /// FixMatch mask rate (fraction of unlabelled images above the threshold).
    pub mask_rate: Option<f64>,
    /// `L^dist_sub` on the labelled batch, summed over the sandwich subnets.
    pub dist_lab: Option<f64>,
    /// `L^dist_sub` on the unlabelled batch, summed over the sandwich subnets.
    pub dist_unlab: Option<f64>,
    /// Diagnostics, never trained on: accuracy of the confident pseudo-labels against the
    /// unlabelled images' true labels (`None` when no image was confident or FixMatch is off).
    #[serde(default)]
    pub pl_acc: Option<f64>,
}

impl IterRecord {
    /// CSV header of [`IterRecord::csv_row`].
    pub const CSV_HEADER: &'static str =
        "iter,lr,total,lab,fm,mask_rate,dist_lab,dist_unlab,pl_acc";

    /// One CSV line (empty cells for terms that are off).
    pub fn csv_row(&self) -> String {
        let o = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        format!(
            "{},{:.6e},{:.6},{:.6},{},{},{},{},{}",
            self.iter,
            self.lr,
            self.total,
            self.lab,
            o(self.fm),
            o(self.mask_rate),
            o(self.dist_lab),
            o(self.dist_unlab),
            o(self.pl_acc)
        )
    }
}

/// The compute a run spent, for Section 3.5's "constant versus linear cost".
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainCost {
    /// Wall-clock seconds of training (across resumes: the sum of the sessions).
    pub wall_s: f64,
    /// Iterations run.
    pub iterations: u64,
    /// Images drawn from the data (labelled + unlabelled per iteration; the weak and strong
    /// views of one unlabelled image count once).
    pub images_processed: u64,
    /// Image forward passes over all sampled networks and views.
    pub image_forwards: u64,
    /// Multiply-adds spent: for each forward pass, the network's analytic multiply-adds per
    /// image ([`tofa_nn::cost()`]) times its images, times 3 when gradients flow through it
    /// (forward + backward ~ 3 forwards) and times 1 for the detached teacher pass on the
    /// weak unlabelled view.
    pub train_macs: u64,
}

impl TrainCost {
    /// Images drawn per second of wall time.
    pub fn images_per_s(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.images_processed as f64 / self.wall_s
        } else {
            0.0
        }
    }

    /// Multiply-adds spent, in units of 10^15 (PFLOPs in the paper's "FLOPs = MACs" sense).
    pub fn train_pmacs(&self) -> f64 {
        self.train_macs as f64 / 1e15
    }
}

/// Progress of a run, reported after every iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainProgress {
    pub stage: Stage,
    /// Iterations completed.
    pub iter: u64,
    /// Iterations in the run.
    pub iterations: u64,
    /// The iteration's losses.
    pub record: IterRecord,
    /// Seconds since this session started.
    pub elapsed_s: f64,
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// Every sampled subnet with its iterations (for single networks: the one config).
    pub omega: Omega,
    /// Per-iteration losses.
    pub curve: Vec<IterRecord>,
    /// Compute spent.
    pub cost: TrainCost,
    /// The checkpoint iteration this run resumed from, if it did.
    pub resumed_from: Option<u64>,
}

impl TrainOutcome {
    /// The loss curve as CSV (header + one line per iteration).
    pub fn curve_csv(&self) -> String {
        let mut s = String::from(IterRecord::CSV_HEADER);
        s.push('\n');
        for r in &self.curve {
            s.push_str(&r.csv_row());
            s.push('\n');
        }
        s
    }

    /// The curve averaged over consecutive windows of `n` iterations (the last may be
    /// shorter); each window is labelled with its last iteration and learning rate.
    pub fn curve_averaged(&self, n: usize) -> Vec<IterRecord> {
        let avg = |v: &[Option<f64>]| -> Option<f64> {
            let s: Vec<f64> = v.iter().flatten().copied().collect();
            (!s.is_empty()).then(|| s.iter().sum::<f64>() / s.len() as f64)
        };
        self.curve
            .chunks(n.max(1))
            .map(|w| {
                let last = &w[w.len() - 1];
                let k = w.len() as f64;
                IterRecord {
                    iter: last.iter,
                    lr: last.lr,
                    total: w.iter().map(|r| r.total).sum::<f64>() / k,
                    lab: w.iter().map(|r| r.lab).sum::<f64>() / k,
                    fm: avg(&w.iter().map(|r| r.fm).collect::<Vec<_>>()),
                    mask_rate: avg(&w.iter().map(|r| r.mask_rate).collect::<Vec<_>>()),
                    dist_lab: avg(&w.iter().map(|r| r.dist_lab).collect::<Vec<_>>()),
                    dist_unlab: avg(&w.iter().map(|r| r.dist_unlab).collect::<Vec<_>>()),
                    pl_acc: avg(&w.iter().map(|r| r.pl_acc).collect::<Vec<_>>()),
                }
            })
            .collect()
    }
}

/// How a single network uses the data ([`train_single`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SingleMode {
    /// Label-smoothed CE on the labelled weak view ("Baseline labelled", fine-tuning).
    Labelled,
    /// The same plus FixMatch on the unlabelled batch ("Baseline lab+unlab").
    FixMatch,
}

/// What [`pretrain`] trains on the source task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PretrainMode {
    /// The maxnet alone (labelled CE).
    #[default]
    Maxnet,
    /// The whole supernet with the sandwich rule and labelled-only loss (eq. (3)).
    Sandwich,
}

/// One iteration's result before the optimiser step.
struct StepOut {
    total: Tensor,
    record: IterRecord,
    image_forwards: u64,
    macs: u64,
}

/// Everything a step function may read.
struct StepCtx<'a> {
    net: &'a Supernet,
    cfg: &'a TrainConfig,
    batch: &'a TrainBatch,
    rng: &'a mut ChaCha8Rng,
    iter: u64,
    omega: &'a mut Omega,
}

/// `x` at `r x r` (bilinear, as `F.interpolate(align_corners=False)`), or `x` itself.
fn fit(x: &Tensor, r: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (r, r) {
        Ok(x.clone())
    } else {
        Ok(x.upsample_bilinear2d(r, r, false)?)
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.to_scalar::<f32>()?))
}

/// Which regularisation a training-mode pass gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// `cfg.dropout` and `cfg.drop_connect`.
    On,
    /// None: BN still on batch statistics.
    Off,
}

fn train_mode<'r>(
    rng: &'r mut ChaCha8Rng,
    cfg: &TrainConfig,
    update_bn: bool,
    reg: Reg,
) -> Mode<'r> {
    let on = reg == Reg::On;
    Mode::Train(TrainOpts {
        rng,
        dropout: if on { cfg.dropout } else { 0.0 },
        drop_connect: if on { cfg.drop_connect } else { 0.0 },
        update_bn_stats: update_bn,
    })
}

/// Accuracy of the pseudo-labels of `weak_logits` whose confidence exceeds `cutoff`, against
/// the true labels (diagnostics only); `None` when no image is confident.
fn pseudo_label_accuracy(weak_logits: &Tensor, truth: &Tensor, cutoff: f64) -> Result<Option<f64>> {
    let (pl, mask) = crate::loss::pseudo_labels(weak_logits, cutoff)?;
    let confident = f64::from(mask.sum_all()?.to_scalar::<f32>()?);
    if confident == 0.0 {
        return Ok(None);
    }
    let hit = pl
        .eq(&truth.to_dtype(candle_core::DType::U32)?)?
        .to_dtype(candle_core::DType::F32)?;
    let right = f64::from((hit * mask)?.sum_all()?.to_scalar::<f32>()?);
    Ok(Some(right / confident))
}

/// Running totals of one iteration's compute.
#[derive(Default)]
struct Spend {
    forwards: u64,
    macs: u64,
}

impl Spend {
    fn add(
        &mut self,
        space: &SearchSpace,
        a: &SubnetConfig,
        images: usize,
        grad: bool,
    ) -> Result<()> {
        let m = tofa_nn::cost(space, a)?.macs;
        self.forwards += images as u64;
        self.macs += m * images as u64 * if grad { 3 } else { 1 };
        Ok(())
    }
}

/// Algorithm 1, one iteration, for `variant` (see [`train_tofa`]); with `single`, that
/// network alone (see [`train_single`]).
fn step(c: StepCtx<'_>, variant: Variant, single: Option<&SubnetConfig>) -> Result<StepOut> {
    let space = c.net.space();
    let cfg = c.cfg;
    let max = single
        .cloned()
        .unwrap_or_else(|| SubnetConfig::maxnet(space));
    // Draw the random subnets first, so the draws do not depend on what the forwards consume.
    let mut subnets: Vec<SubnetConfig> = Vec::new();
    if single.is_none() {
        for _ in 0..cfg.random_subnets {
            subnets.push(SubnetConfig::sample(space, &mut *c.rng));
        }
        subnets.push(SubnetConfig::minnet(space));
    }
    let mut spend = Spend::default();
    let cutoff = cfg.fixmatch_cutoff(c.net.num_classes());
    let lab_b = &c.batch.labelled;
    let bl = lab_b.indices.len();

    // lines 5-7: maxnet on the weak labelled view (updates its BN running statistics). A
    // single network is its own Omega; in TOFA, Omega holds A_sample only (lines 13, 18-19).
    if single.is_some() {
        c.omega.record(c.iter, &max);
    }
    let max_lab = c.net.forward_t(
        &fit(&lab_b.images, max.resolution)?,
        &max,
        train_mode(c.rng, cfg, true, Reg::On),
    )?;
    spend.add(space, &max, bl, true)?;

    // lines 8-11: maxnet on the weak unlabelled view (teacher, detached) and the strong view
    let unl = if variant.uses_unlabelled() {
        Some(c.batch.unlabelled.as_ref().ok_or_else(|| {
            config_err(
                "unlabelled",
                format!("variant {} needs unlabelled images", variant.name()),
            )
        })?)
    } else {
        None
    };
    // The teacher pass has no dropout or drop-connect: it only makes targets, and the masks
    // would lower its confidence and add noise to the soft targets.
    let (mut max_weak, mut max_strong) = (None, None);
    if let Some(u) = unl {
        let bu = u.indices.len();
        let xw = fit(&u.weak, max.resolution)?;
        max_weak = Some(
            c.net
                .forward_t(&xw, &max, train_mode(c.rng, cfg, false, Reg::Off))?
                .detach(),
        );
        spend.add(space, &max, bu, false)?;
        if variant.fixmatch() {
            let xs = fit(&u.strong, max.resolution)?;
            max_strong = Some(c.net.forward_t(
                &xs,
                &max,
                train_mode(c.rng, cfg, false, Reg::On),
            )?);
            spend.add(space, &max, bu, true)?;
        }
    }

    // lines 12-15: sandwich subnets on the labelled (and unlabelled) weak views
    let sub_reg = if cfg.regularise_subnets {
        Reg::On
    } else {
        Reg::Off
    };
    let (mut sub_lab, mut sub_unlab) = (Vec::new(), Vec::new());
    for a in &subnets {
        c.omega.record(c.iter, a);
        let x = fit(&lab_b.images, a.resolution)?;
        sub_lab.push(
            c.net
                .forward_t(&x, a, train_mode(c.rng, cfg, false, sub_reg))?,
        );
        spend.add(space, a, bl, true)?;
        if variant.distil_unlabelled()
            && let Some(u) = unl
        {
            let x = fit(&u.weak, a.resolution)?;
            sub_unlab.push(
                c.net
                    .forward_t(&x, a, train_mode(c.rng, cfg, false, sub_reg))?,
            );
            spend.add(space, a, u.indices.len(), true)?;
        }
    }
    let terms = tofa_loss(
        variant,
        &TofaLogits {
            max_lab: &max_lab,
            labels: &lab_b.labels,
            max_weak: max_weak.as_ref(),
            max_strong: max_strong.as_ref(),
            sub_lab: &sub_lab,
            sub_unlab: &sub_unlab,
        },
        cutoff,
        cfg.label_smoothing,
    )?;
    let pl_acc = match (variant.fixmatch(), &max_weak, unl) {
        (true, Some(w), Some(u)) => pseudo_label_accuracy(w, &u.labels, cutoff)?,
        _ => None,
    };
    let record = IterRecord {
        iter: c.iter,
        lr: 0.0,
        total: scalar(&terms.total)?,
        lab: terms.lab,
        fm: terms.fm,
        mask_rate: terms.mask_rate,
        dist_lab: terms.dist_lab,
        dist_unlab: terms.dist_unlab,
        pl_acc,
    };
    Ok(StepOut {
        total: terms.total,
        record,
        image_forwards: spend.forwards,
        macs: spend.macs,
    })
}

/// The variant a single network trains with: `lab` or `fm`, without subnets.
fn single_variant(mode: SingleMode) -> Variant {
    match mode {
        SingleMode::Labelled => Variant::Lab,
        SingleMode::FixMatch => Variant::Fm,
    }
}

fn check_finite(stage: Stage, r: &IterRecord) -> Result<()> {
    let terms = [
        ("lab", Some(r.lab)),
        ("fm", r.fm),
        ("dist_lab", r.dist_lab),
        ("dist_unlab", r.dist_unlab),
        ("total", Some(r.total)),
    ];
    for (term, v) in terms {
        if let Some(v) = v
            && !v.is_finite()
        {
            return Err(TrainError::NonFinite {
                stage,
                iter: r.iter,
                term,
                value: v,
            });
        }
    }
    Ok(())
}

/// The first saved tensor of `net` holding a NaN or infinity, if any (checked before a
/// checkpoint is written, so the kept checkpoint is always a good one).
fn non_finite_tensor(net: &Supernet) -> Result<Option<String>> {
    for (name, t) in net.tensors() {
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Which training a [`run_loop`] is: recorded in checkpoints, named in errors and progress.
struct RunId {
    stage: Stage,
    /// `tofa/full`, `single/...`, `pretrain/maxnet`, ...
    name: String,
    /// Whether every iteration draws an unlabelled batch.
    needs_unlabelled: bool,
}

/// The shared loop: schedule, resume, step, NaN check, optimiser, checkpoints, progress.
/// [`run_loop_in`] at `cfg.precision`: a bf16 run trains on the portable backend; the net's
/// backend and precision are put back afterwards (on error too), so that evaluation and
/// export run as they would after an f32 run.
fn run_loop(
    id: RunId,
    net: &mut Supernet,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    ckpt_dir: Option<&Path>,
    progress: &mut dyn FnMut(TrainProgress),
    step: &mut dyn FnMut(StepCtx<'_>) -> Result<StepOut>,
) -> Result<TrainOutcome> {
    let (backend, precision) = (net.backend(), net.precision());
    if !cfg.precision.is_f32() {
        net.set_backend(Backend::Portable)?;
    }
    net.set_precision(cfg.precision)?;
    let out = run_loop_in(id, net, data, cfg, ckpt_dir, progress, step);
    net.set_precision(precision)?;
    net.set_backend(backend)?;
    out
}

fn run_loop_in(
    id: RunId,
    net: &mut Supernet,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    ckpt_dir: Option<&Path>,
    progress: &mut dyn FnMut(TrainProgress),
    step: &mut dyn FnMut(StepCtx<'_>) -> Result<StepOut>,
) -> Result<TrainOutcome> {
    let RunId {
        stage,
        name: run,
        needs_unlabelled,
    } = id;
    cfg.validate()?;
    if data.labelled.is_empty() {
        return Err(config_err("labelled", "no labelled images"));
    }
    if needs_unlabelled && data.unlabelled.is_empty() {
        return Err(config_err(
            "unlabelled",
            format!("{run} needs unlabelled images"),
        ));
    }
    let started = Instant::now();
    let schedule = cfg.schedule(data.labelled.len());
    let mut sgd = Sgd::new(
        net.params().to_vec(),
        SgdConfig {
            lr: 0.0,
            momentum: cfg.momentum,
            nesterov: cfg.nesterov,
            weight_decay: cfg.weight_decay,
        },
    );
    let mut omega = Omega::new();
    let mut curve: Vec<IterRecord> = Vec::new();
    let mut cost = TrainCost::default();
    let mut start = 0u64;
    let mut resumed_from = None;
    if let Some(dir) = ckpt_dir
        && let Some((_, path)) = checkpoint::latest(dir)?
    {
        let state = checkpoint::read_state(&path)?;
        let same = |a: &TrainConfig| TrainConfig {
            checkpoint_every: 0,
            ..a.clone()
        };
        if state.stage != stage || state.run != run || same(&state.config) != same(cfg) {
            return Err(TrainError::Checkpoint {
                path,
                msg: format!(
                    "belongs to another run ({} {}, not {stage} {run}, or another config)",
                    state.stage, state.run
                ),
            });
        }
        checkpoint::restore(&path, net, &mut sgd)?;
        start = state.iteration;
        omega = state.omega;
        curve = state.curve;
        cost = state.cost;
        resumed_from = Some(start);
    }
    let prior_wall = cost.wall_s;
    let unlabelled: &[u32] = if needs_unlabelled {
        data.unlabelled
    } else {
        &[]
    };
    let mut loader = TrainLoader::new(
        data.dataset,
        data.labelled,
        unlabelled,
        (cfg.batch_labelled, cfg.batch_unlabelled),
        data.batch,
        tofa_data::rng::mix(&[cfg.seed, STREAM_DATA]),
        net.device().clone(),
    )?;
    loader.skip_to(start);
    let save =
        |net: &Supernet, sgd: &Sgd, omega: &Omega, curve: &[IterRecord], cost: TrainCost, t| {
            let Some(dir) = ckpt_dir else { return Ok(()) };
            let state = CheckpointState {
                version: STATE_VERSION,
                stage,
                run: run.clone(),
                iteration: t,
                config: cfg.clone(),
                omega: omega.clone(),
                curve: curve.to_vec(),
                cost,
            };
            checkpoint::save(dir, net, sgd, &state).map(|_| ())
        };
    for t in start + 1..=cfg.iterations {
        let at = |e: TrainError| match e {
            e @ (TrainError::NonFinite { .. } | TrainError::NonFiniteWeights { .. }) => e,
            e => TrainError::At {
                stage,
                iter: t,
                source: Box::new(e),
            },
        };
        let batch = loader.next_batch().map_err(|e| at(e.into()))?;
        let mut rng = tofa_data::rng::rng_for(&[cfg.seed, STREAM_ITER, t]);
        let lr = schedule.lr_at(t);
        sgd.set_lr(lr);
        let out = step(StepCtx {
            net,
            cfg,
            batch: &batch,
            rng: &mut rng,
            iter: t,
            omega: &mut omega,
        })
        .map_err(at)?;
        let mut record = out.record;
        record.lr = lr;
        check_finite(stage, &record)?;
        sgd.backward_step(&out.total).map_err(|e| at(e.into()))?;
        cost.iterations += 1;
        cost.images_processed += batch.labelled.indices.len() as u64
            + batch
                .unlabelled
                .as_ref()
                .map_or(0, |u| u.indices.len() as u64);
        cost.image_forwards += out.image_forwards;
        cost.train_macs += out.macs;
        cost.wall_s = prior_wall + started.elapsed().as_secs_f64();
        curve.push(record.clone());
        let every = cfg.checkpoint_every;
        if (every > 0 && t % every == 0) || t == cfg.iterations {
            if ckpt_dir.is_some()
                && let Some(name) = non_finite_tensor(net).map_err(at)?
            {
                return Err(TrainError::NonFiniteWeights {
                    stage,
                    iter: t,
                    tensor: name,
                });
            }
            save(net, &sgd, &omega, &curve, cost, t)?;
        }
        progress(TrainProgress {
            stage,
            iter: t,
            iterations: cfg.iterations,
            record,
            elapsed_s: started.elapsed().as_secs_f64(),
        });
    }
    cost.wall_s = prior_wall + started.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        omega,
        curve,
        cost,
        resumed_from,
    })
}

/// TOFA supernet training (Algorithm 1) with the loss `cfg.variant` of eq. (4).
///
/// Per iteration `t` (1-based), from one generator keyed by `(cfg.seed, t)`:
/// 1. draw `cfg.random_subnets` random subnets (the sandwich rule adds the minnet);
/// 2. maxnet on the labelled weak view: `L^lab_max`, label-smoothed CE (BN running statistics
///    of the maxnet are updated here only);
/// 3. unless `lab`: maxnet on the unlabelled weak view, detached (pseudo-labels and soft
///    targets); for `fm`/`full`, the maxnet on the strong view against the confident
///    pseudo-labels (`L^FM`);
/// 4. every sandwich subnet on the labelled weak view, distilled towards the maxnet's detached
///    predictions of step 2 (`L^dist_sub(x_l)`, part of eq. (3)'s `L^lab` and so of every
///    variant, `lab` and `fm` included); for `dist`/`full` also on the unlabelled weak view
///    towards those of step 3 (`L^dist`);
/// 5. one backward pass of the sum and one SGD step: the gradients of all sampled networks
///    accumulate into one update.
///
/// Forward passes run in training mode (BN on batch statistics). Dropout and drop-connect are
/// on for the maxnet's passes with gradient only: not for the detached teacher pass on the
/// weak unlabelled view, and not for the sandwich subnets unless `cfg.regularise_subnets`
/// (BigNAS regularises only the largest child). The FixMatch mask uses
/// [`TrainConfig::fixmatch_cutoff`]. Omega records `A_sample` = the random subnets and the
/// minnet with `t` (Algorithm 1, lines 13 and 18-19), not the maxnet. A subnet at a
/// resolution below the batch's is fed the batch resized.
///
/// With `ckpt_dir`, a checkpoint is written every `cfg.checkpoint_every` iterations and at
/// the end, and a run finding a checkpoint there resumes from it (same config required),
/// ending bit-identical to an uninterrupted run. A NaN or infinite loss term stops the run
/// with [`TrainError::NonFinite`] before the optimiser step, leaving the last checkpoint.
pub fn train_tofa(
    net: &mut Supernet,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    ckpt_dir: Option<&Path>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<TrainOutcome> {
    let variant = cfg.variant;
    let id = RunId {
        stage: Stage::Tofa,
        name: format!("tofa/{}", variant.name()),
        needs_unlabelled: variant.uses_unlabelled(),
    };
    run_loop(id, net, data, cfg, ckpt_dir, progress, &mut |c| {
        step(c, variant, None)
    })
}

/// Trains the fixed network `a` alone, with the optimiser, schedule, augmentation and cost
/// record of [`train_tofa`] (`cfg.variant` and `cfg.random_subnets` are not read): the
/// Table 3 baselines on the maxnet, and per-budget fine-tuning of one subnet.
pub fn train_single(
    net: &mut Supernet,
    a: &SubnetConfig,
    mode: SingleMode,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    ckpt_dir: Option<&Path>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<TrainOutcome> {
    a.validate(net.space())?;
    let run = format!(
        "single/{}/{}",
        match mode {
            SingleMode::Labelled => "labelled",
            SingleMode::FixMatch => "fixmatch",
        },
        a.id()
    );
    let a = a.clone();
    let id = RunId {
        stage: Stage::Single,
        name: run,
        needs_unlabelled: mode == SingleMode::FixMatch,
    };
    run_loop(id, net, data, cfg, ckpt_dir, progress, &mut |c| {
        step(c, single_variant(mode), Some(&a))
    })
}

/// Supervised training on a source task (every image of `source` labelled) to produce the
/// starting weights: the maxnet alone, or the sandwich supernet with the labelled-only loss of
/// eq. (3). Setting the target's classifier ([`Supernet::reset_classifier`]) is the caller's
/// job.
pub fn pretrain(
    net: &mut Supernet,
    source: &Dataset,
    batch: BatchConfig,
    mode: PretrainMode,
    cfg: &TrainConfig,
    ckpt_dir: Option<&Path>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<TrainOutcome> {
    let all: Vec<u32> = (0..source.len() as u32).collect();
    let data = TrainData {
        dataset: source,
        labelled: &all,
        unlabelled: &[],
        batch,
    };
    let max = SubnetConfig::maxnet(net.space());
    let id = RunId {
        stage: Stage::Pretrain,
        name: format!(
            "pretrain/{}",
            match mode {
                PretrainMode::Maxnet => "maxnet",
                PretrainMode::Sandwich => "sandwich",
            }
        ),
        needs_unlabelled: false,
    };
    run_loop(
        id,
        net,
        &data,
        cfg,
        ckpt_dir,
        progress,
        &mut |c| match mode {
            PretrainMode::Maxnet => step(c, Variant::Lab, Some(&max)),
            PretrainMode::Sandwich => step(c, Variant::Lab, None),
        },
    )
}

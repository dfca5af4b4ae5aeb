//! Training stages: `pretrain`, `tofa_train`, `baseline_train`.
//!
//! Model files a training stage leaves in its output directory (read by later stages through
//! [`Model::from_dir`]): `space.toml` (the search space with the task's class count) and
//! `supernet.safetensors`; plus `curve.csv` (losses per iteration) and `cost.json`.
//! Checkpoints go to the stage's scratch directory, so a killed run resumes where it stopped.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use tofa_nn::{Naming, SearchSpace, SubnetConfig, Supernet};
use tofa_runner::BoxError;
use tofa_runner::kind::{StageContext, StageKind};
use tofa_train::train::{PretrainMode, SingleMode, TrainData, TrainOutcome, TrainProgress};
use tofa_train::{EvalResult, TrainConfig, Variant, calibration_batches};

use crate::data::{DataSpec, Prepared};
use crate::rows::{BaselineRow, PretrainRow, TofaRow};
use crate::{StageError, one_dep};

/// The file a `tofa_train` stage writes Omega to (read by the selection stages).
pub(crate) const OMEGA_FILE: &str = "omega.json";

/// A supernet and its space, as a training stage wrote them.
pub struct Model {
    pub space: SearchSpace,
    pub net: Supernet,
}

impl Model {
    /// Reads `space.toml` and `supernet.safetensors` from `dir`, onto `device`.
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self, StageError> {
        let path = dir.join("space.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| StageError::Io {
            path: path.clone(),
            source: e,
        })?;
        let space = SearchSpace::from_toml(&text)?;
        let mut net = Supernet::new_on(&space, 0, device)?;
        net.load(&dir.join("supernet.safetensors"))?;
        Ok(Self { space, net })
    }

    /// Writes what [`Model::from_dir`] reads.
    pub fn save(&self, dir: &Path) -> Result<(), StageError> {
        crate::write(&dir.join("space.toml"), self.space.to_toml()?)?;
        self.net.save(&dir.join("supernet.safetensors"))?;
        Ok(())
    }

    /// The model of a new task: same weights, a fresh (seeded) classifier for `classes`
    /// classes, even when the count is the source's: the source's classes are not the task's.
    pub fn for_task(mut self, classes: usize, seed: u64) -> Result<Self, StageError> {
        self.net.reset_classifier(classes, seed)?;
        self.space = self.space.with_num_classes(classes)?;
        Ok(self)
    }
}

/// A fixed architecture named in params (`arch`), parsed when the pipeline loads, so a
/// misspelt one fails before any stage runs.
///
/// Written `maxnet`, `minnet`, `uniform:Q` (every elastic dimension at the choice
/// `round(Q * (n-1))` of its `n` choices, `0 <= Q <= 1`: a family of uniformly scaled models,
/// our stand-in for a model zoo), `palette:I` (the pick of the stage's `palette` dependency
/// for its `I`-th budget) or a canonical subnet id. It serialises back to the same text (the
/// cache key and the `arch` column of the `baseline` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Arch {
    Maxnet,
    Minnet,
    Uniform(f64),
    Palette(usize),
    Subnet(SubnetConfig),
}

impl std::str::FromStr for Arch {
    type Err = StageError;

    fn from_str(a: &str) -> Result<Self, StageError> {
        Ok(match a {
            "maxnet" => Arch::Maxnet,
            "minnet" => Arch::Minnet,
            _ if a.starts_with("uniform:") => {
                let q: f64 = a["uniform:".len()..].parse().map_err(|_| {
                    StageError::Param(format!("arch `{a}`: expected uniform:<number in [0, 1]>"))
                })?;
                if !(0.0..=1.0).contains(&q) {
                    return Err(StageError::Param(format!(
                        "arch `{a}`: {q} is not in [0, 1]"
                    )));
                }
                Arch::Uniform(q)
            }
            _ if a.starts_with("palette:") => {
                Arch::Palette(a["palette:".len()..].parse().map_err(|_| {
                    StageError::Param(format!("arch `{a}`: expected palette:<budget index>"))
                })?)
            }
            id => Arch::Subnet(SubnetConfig::from_id(id).map_err(|e| {
                StageError::Param(format!(
                    "arch `{id}`: not maxnet, minnet, uniform:Q, palette:I or a subnet id: {e}"
                ))
            })?),
        })
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arch::Maxnet => f.write_str("maxnet"),
            Arch::Minnet => f.write_str("minnet"),
            Arch::Uniform(q) => write!(f, "uniform:{q}"),
            Arch::Palette(i) => write!(f, "palette:{i}"),
            Arch::Subnet(c) => f.write_str(&c.id()),
        }
    }
}

impl TryFrom<String> for Arch {
    type Error = StageError;
    fn try_from(s: String) -> Result<Self, StageError> {
        s.parse()
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.to_string()
    }
}

impl Arch {
    /// The architecture in `space`; `palette:I` needs the `palette` dependency (see
    /// [`BaselineTrain`]) and is an error here.
    pub fn config(&self, space: &SearchSpace) -> Result<SubnetConfig, StageError> {
        let cfg = match self {
            Arch::Maxnet => SubnetConfig::maxnet(space),
            Arch::Minnet => SubnetConfig::minnet(space),
            Arch::Uniform(q) => SubnetConfig::uniform(space, *q),
            Arch::Palette(_) => {
                return Err(StageError::Param(format!(
                    "arch `{self}` is resolved through a `palette` dependency"
                )));
            }
            Arch::Subnet(c) => c.clone(),
        };
        cfg.validate(space)?;
        Ok(cfg)
    }
}

/// How evaluation after training is done.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// Batches of training images (weak views) to recalibrate BN on per subnet.
    #[serde(default = "calib_batches")]
    pub calib_batches: usize,
    #[serde(default = "batch")]
    pub calib_batch: usize,
    #[serde(default = "eval_batch")]
    pub batch: usize,
}

fn calib_batches() -> usize {
    16
}
fn batch() -> usize {
    32
}
fn eval_batch() -> usize {
    100
}

impl Default for EvalParams {
    fn default() -> Self {
        Self {
            calib_batches: calib_batches(),
            calib_batch: batch(),
            batch: eval_batch(),
        }
    }
}

/// Tests subnets of one trained supernet on a data set, BN recalibrated per subnet on
/// training images (labelled and unlabelled: no labels are read).
pub struct Tester<'a> {
    pub model: &'a Model,
    pub data: &'a Prepared,
    pub calib: Vec<candle_core::Tensor>,
    pub params: EvalParams,
}

impl<'a> Tester<'a> {
    pub fn new(
        model: &'a Model,
        data: &'a Prepared,
        params: &EvalParams,
        seed: u64,
    ) -> Result<Self, StageError> {
        let s = &data.split.split;
        let pool: Vec<u32> = s.labelled.iter().chain(&s.unlabelled).copied().collect();
        let calib = calibration_batches(
            &data.data.train,
            &pool,
            params.calib_batches,
            params.calib_batch,
            data.batch_config(),
            seed,
        )?;
        Ok(Self {
            model,
            data,
            calib,
            params: params.clone(),
        })
    }

    /// Accuracy of `cfg` on the test set.
    pub fn test(&self, cfg: &SubnetConfig) -> Result<EvalResult, StageError> {
        let idx = tofa_data::batch::all_indices(&self.data.data.test);
        self.on(cfg, &self.data.data.test, &idx)
    }

    /// Accuracy of `cfg` on the validation split (carved from training).
    pub fn validate(&self, cfg: &SubnetConfig) -> Result<EvalResult, StageError> {
        let v = &self.data.split.split.validation;
        if v.is_empty() {
            return Err(StageError::Param(format!(
                "data set `{}` has no validation split (set validation_fraction on its split stage)",
                self.data.spec.name
            )));
        }
        self.on(cfg, &self.data.data.train, v)
    }

    fn on(
        &self,
        cfg: &SubnetConfig,
        ds: &tofa_data::Dataset,
        idx: &[u32],
    ) -> Result<EvalResult, StageError> {
        Ok(tofa_train::evaluate(
            &self.model.net,
            cfg,
            &self.calib,
            ds,
            idx,
            self.data.batch_config(),
            self.params.batch,
        )?)
    }
}

fn progress_fn(ctx: &StageContext) -> impl FnMut(TrainProgress) + '_ {
    let mut set = false;
    move |p: TrainProgress| {
        if !set {
            ctx.progress.set_total(p.iterations, "it");
            set = true;
        }
        ctx.progress.inc(1);
        if p.iter.is_multiple_of(10) || p.iter == p.iterations {
            ctx.progress.message(&format!(
                "loss {:.3} lr {:.2e}",
                p.record.total, p.record.lr
            ));
        }
    }
}

fn write_outcome(ctx: &StageContext, o: &TrainOutcome) -> Result<(), StageError> {
    crate::write(&ctx.out("curve.csv"), o.curve_csv())?;
    crate::write_json(&ctx.out("cost.json"), &o.cost)?;
    Ok(())
}

fn mflops(space: &SearchSpace, cfg: &SubnetConfig) -> Result<f64, StageError> {
    Ok(tofa_nn::cost(space, cfg)?.macs as f64 / 1e6)
}

/// Where the starting weights of `pretrain` come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum Init {
    /// Our seeded initialisation.
    #[default]
    Scratch,
    /// A `.pth` (zip or legacy) or `.safetensors` file: `$env` when that variable is set,
    /// else `path` (relative to the working directory).
    File {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        naming: NamingParam,
    },
    /// A file of a Hugging Face Hub model repo (e.g. `timm/mobilenetv3_large_100.ra_in1k`,
    /// `model.safetensors`), through hf-hub's cache; `$HF_ENDPOINT` is honoured.
    Hub {
        repo: String,
        file: String,
        #[serde(default = "main_rev")]
        revision: String,
        naming: NamingParam,
    },
}

fn main_rev() -> String {
    "main".into()
}

/// [`Naming`] as a param.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamingParam {
    Timm,
    EfficientnetPytorch,
}

impl From<NamingParam> for Naming {
    fn from(n: NamingParam) -> Self {
        match n {
            NamingParam::Timm => Naming::Timm,
            NamingParam::EfficientnetPytorch => Naming::EfficientNetPytorch,
        }
    }
}

/// Downloads (or finds in hf-hub's cache) one file of a hub model repo. `endpoint` defaults to
/// `$HF_ENDPOINT`, else the public hub; `cache` to hf-hub's (`$HF_HOME/hub`); `$HF_TOKEN` is
/// sent when set.
pub fn hub_file(
    repo: &str,
    revision: &str,
    file: &str,
    endpoint: Option<&str>,
    cache: Option<&Path>,
) -> Result<PathBuf, StageError> {
    let mut b = match cache {
        Some(dir) => hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(dir.into())),
        None => hf_hub::api::sync::ApiBuilder::from_env(),
    }
    .with_progress(false)
    .with_token(std::env::var("HF_TOKEN").ok());
    if let Some(e) = endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var("HF_ENDPOINT").ok())
    {
        b = b.with_endpoint(e.trim_end_matches('/').to_owned());
    }
    let api = b
        .build()
        .map_err(|e| StageError::Param(format!("hub {repo}: client: {e}")))?;
    let r = api.repo(hf_hub::Repo::with_revision(
        repo.to_owned(),
        hf_hub::RepoType::Model,
        revision.to_owned(),
    ));
    r.get(file)
        .map_err(|e| StageError::Param(format!("hub {repo}@{revision}: downloading {file}: {e}")))
}

/// `pretrain`: the starting weights every target task shares.
#[derive(Debug)]
pub struct Pretrain;

/// Params of [`Pretrain`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainParams {
    /// The source task (ignored apart from its class count when `train.iterations` is 0).
    pub data: DataSpec,
    /// A built-in search space name (`tiny`, `small`, `lite0`, `lite2`, `paper`).
    pub space: String,
    /// Input resolutions replacing the space's (a profile training at the resolution its
    /// data and CPU afford, e.g. Lite0 at 56-64 px instead of 224).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolutions: Option<Vec<usize>>,
    #[serde(default)]
    pub init: Init,
    #[serde(default)]
    pub mode: PretrainMode,
    /// Source-task training; `iterations = 0` keeps the initial weights.
    #[serde(default)]
    pub train: TrainConfig,
    /// Test images of the source task to report the maxnet's accuracy on (0: skip).
    #[serde(default = "eval_images")]
    pub eval_images: usize,
}

fn eval_images() -> usize {
    1000
}

impl StageKind for Pretrain {
    type Params = PretrainParams;
    const NAME: &'static str = "pretrain";
    // 2: the supernet runs on the NHWC fused ops (other float rounding, other weights)
    // 3: the synthetic source's classes are shapes, not colours (see `Split::VERSION`)
    // 4: the row records the mode and the minnet's source accuracy (`source_min_acc`)
    const VERSION: &'static str = "4";

    fn run(&self, p: &PretrainParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let mut space = SearchSpace::builtin(&p.space)?;
        if let Some(r) = &p.resolutions {
            space = space.with_resolutions(r.clone())?;
        }
        let net = Supernet::new_on(&space, ctx.seed, &crate::device(ctx)?)?;
        let mut row = PretrainRow::from_scratch(&p.data.name, p.train.iterations);
        match &p.init {
            Init::Scratch => {}
            Init::File { path, env, naming } => load_weights(
                &net,
                &weights_path(path, env.as_deref())?,
                *naming,
                &mut row,
            )?,
            Init::Hub {
                repo,
                file,
                revision,
                naming,
            } => {
                ctx.progress.message(&format!("fetching {repo}/{file}"));
                let path = hub_file(repo, revision, file, None, None)?;
                load_weights(&net, &path, *naming, &mut row)?
            }
        }
        let mut model = Model { space, net };
        if p.train.iterations > 0 {
            let source = p.data.load_shared(&ctx.shared_dir)?;
            model = model.for_task(source.train.num_classes(), ctx.seed)?;
            let r = model.space.resolutions.iter().copied().max().unwrap_or(32);
            let batch = tofa_data::BatchConfig::new((r, r));
            let mut cfg = p.train.clone();
            cfg.seed = ctx.seed;
            std::fs::create_dir_all(&ctx.scratch_dir)?;
            let outcome = tofa_train::train::pretrain(
                &mut model.net,
                &source.train,
                batch,
                p.mode,
                &cfg,
                Some(&ctx.scratch_dir),
                &mut progress_fn(ctx),
            )?;
            write_outcome(ctx, &outcome)?;
            row.wall_s = Some(outcome.cost.wall_s);
            row.train_gmacs = Some(outcome.cost.train_macs as f64 / 1e9);
            row.mode = Some(p.mode);
            if p.eval_images > 0 {
                let n = p.eval_images.min(source.test.len()) as u32;
                let idx: Vec<u32> = (0..n).collect();
                let max = SubnetConfig::maxnet(&model.space);
                let acc =
                    tofa_train::evaluate_raw(&model.net, &max, &source.test, &idx, batch, 100)?;
                row.source_acc = Some(acc.accuracy * 100.0);
                // The minnet after BN recalibration on source images: how far the pre-trained
                // weights already serve the smallest subnet (the sandwich mode trains it, the
                // maxnet mode only shares the maxnet's leading channels with it).
                let all: Vec<u32> = (0..source.train.len() as u32).collect();
                let e = EvalParams::default();
                let calib = calibration_batches(
                    &source.train,
                    &all,
                    e.calib_batches,
                    e.calib_batch,
                    batch,
                    ctx.seed,
                )?;
                let min = SubnetConfig::minnet(&model.space);
                let acc = tofa_train::evaluate(
                    &model.net,
                    &min,
                    &calib,
                    &source.test,
                    &idx,
                    batch,
                    e.batch,
                )?;
                row.source_min_acc = Some(acc.accuracy * 100.0);
            }
        }
        model.save(&ctx.out_dir)?;
        ctx.emit_row(&row)?;
        Ok(())
    }
}

/// The weights file of [`Init::File`]: `$env` when set, else `path`; a missing file is an
/// error naming both, and how to get the weights the built-in profiles use.
fn weights_path(path: &Path, env: Option<&str>) -> Result<PathBuf, StageError> {
    let from_env = env.and_then(|v| std::env::var_os(v).map(|p| (v, PathBuf::from(p))));
    let (chosen, via) = match &from_env {
        Some((v, p)) => (p.clone(), format!("${v}")),
        None => (path.to_path_buf(), "param `init.path`".to_string()),
    };
    if chosen.is_file() {
        return Ok(chosen);
    }
    let env_hint = match env {
        Some(v) if from_env.is_none() => {
            format!(" (${v} is not set; set it to the file to override)")
        }
        _ => String::new(),
    };
    Err(StageError::Param(format!(
        "init: weights file `{}` from {via} not found{env_hint}; the profiles' ImageNet weights \
         come from `bash scripts/fetch-weights.sh` (README, \"Real ImageNet weights\")",
        chosen.display()
    )))
}

/// Loads a weights file into `net` and records what was mapped in `row`.
fn load_weights(
    net: &Supernet,
    path: &Path,
    naming: NamingParam,
    row: &mut PretrainRow,
) -> Result<(), StageError> {
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    let tensors = if is_st {
        tofa_nn::read_safetensors(path)?
    } else {
        tofa_nn::read_pth(path)?
    };
    let r = tofa_nn::load_pretrained(net, &tensors, naming.into())?;
    row.init = path.display().to_string();
    row.mapped = Some(r.mapped.len());
    row.adapted = Some(r.adapted.len());
    row.missing = Some(r.missing.len());
    row.unmapped = Some(r.unmapped.len());
    Ok(())
}

/// The model a target-task training starts from: the `pretrain` dependency's weights with a
/// classifier for the task.
fn start_model(ctx: &StageContext, data: &Prepared) -> Result<Model, StageError> {
    let dep = one_dep::<Pretrain>(ctx)?;
    Model::from_dir(&dep.dir, &crate::device(ctx)?)?
        .for_task(data.data.train.num_classes(), ctx.seed ^ 0xc1a55)
}

/// `tofa_train`: Algorithm 1 on one data set with one loss variant.
#[derive(Debug)]
pub struct TofaTrain;

/// Params of [`TofaTrain`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TofaTrainParams {
    /// The loss of eq. (4): `lab`, `fm`, `dist` or `full`.
    pub variant: Variant,
    /// The replicate's label (`seed` key of the rows). The random draws come from the stage
    /// seed, which the runner derives from the stage id (that names the replicate).
    #[serde(default = "seed0")]
    pub seed: String,
    /// Everything else of Section 4.2 (paper defaults; `variant` and `seed` here are ignored).
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalParams,
}

impl StageKind for TofaTrain {
    type Params = TofaTrainParams;
    const NAME: &'static str = "tofa_train";
    // 2: the supernet runs on the NHWC fused ops (other float rounding, other weights)
    // 3: FixMatch cutoff scaled to the smoothing cap, teacher pass and subnets without
    //    dropout, warm-up scaled to the run, Omega without the maxnet; seed key, diagnostics
    const VERSION: &'static str = "3";

    fn run(&self, p: &TofaTrainParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let data = Prepared::of(ctx)?;
        let start = one_dep::<Pretrain>(ctx)?.id.clone();
        let mut model = start_model(ctx, &data)?;
        let mut cfg = p.train.clone();
        cfg.variant = p.variant;
        cfg.seed = ctx.seed;
        let s = &data.split.split;
        let td = TrainData {
            dataset: &data.data.train,
            labelled: &s.labelled,
            unlabelled: &s.unlabelled,
            batch: data.batch_config(),
        };
        std::fs::create_dir_all(&ctx.scratch_dir)?;
        let outcome = tofa_train::train::train_tofa(
            &mut model.net,
            &td,
            &cfg,
            Some(&ctx.scratch_dir),
            &mut progress_fn(ctx),
        )?;
        model.save(&ctx.out_dir)?;
        outcome.omega.save(&ctx.out(OMEGA_FILE))?;
        write_outcome(ctx, &outcome)?;
        ctx.progress.message("testing maxnet and minnet");
        let tester = Tester::new(&model, &data, &p.eval, ctx.seed)?;
        let max = SubnetConfig::maxnet(&model.space);
        let min = SubnetConfig::minnet(&model.space);
        let (amax, amin) = (tester.test(&max)?, tester.test(&min)?);
        let (mask_rate, pl_acc) = fixmatch_diagnostics(&outcome);
        ctx.emit_row(&TofaRow {
            dataset: data.spec.name.clone(),
            variant: p.variant,
            start,
            seed: p.seed.clone(),
            mask_rate,
            pl_acc,
            maxnet_acc: amax.accuracy * 100.0,
            minnet_acc: amin.accuracy * 100.0,
            maxnet_mflops: mflops(&model.space, &max)?,
            minnet_mflops: mflops(&model.space, &min)?,
            subnets_sampled: outcome.omega.len(),
            iterations: outcome.cost.iterations,
            images: outcome.cost.images_processed,
            train_gmacs: outcome.cost.train_macs as f64 / 1e9,
            wall_s: outcome.cost.wall_s,
        })?;
        Ok(())
    }
}

/// The `i`-th budget's pick of the `palette` dependency: the architecture TOFA chose for that
/// budget, to be trained alone (Figures 2-4: one training per deployment scenario).
fn palette_pick(
    ctx: &StageContext,
    k: usize,
    space: &SearchSpace,
) -> Result<SubnetConfig, StageError> {
    let dep = one_dep::<crate::select::Palette>(ctx)?;
    let entries = crate::select::PaletteEntry::read(dep)?;
    let budgets: Vec<&crate::select::PaletteEntry> = entries
        .iter()
        .filter(|e| e.role == crate::select::Role::Budget)
        .collect();
    let e = budgets.get(k).ok_or_else(|| {
        StageError::Param(format!(
            "arch `palette:{k}`: `{}` has {} budgets",
            dep.id,
            budgets.len()
        ))
    })?;
    let cfg = SubnetConfig::from_id(&e.id)?;
    cfg.validate(space)?;
    Ok(cfg)
}

/// `baseline_train`: one fixed network trained alone from the same starting weights.
#[derive(Debug)]
pub struct BaselineTrain;

/// Params of [`BaselineTrain`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineParams {
    /// `labelled` ("Baseline labelled") or `fixmatch` ("Baseline lab+unlab").
    pub mode: SingleMode,
    /// The architecture (see [`Arch`]).
    #[serde(default = "maxnet")]
    pub arch: Arch,
    /// The replicate's label, as in [`TofaTrainParams::seed`].
    #[serde(default = "seed0")]
    pub seed: String,
    /// A name for a model that is not of the TOFA space (e.g. `EfficientNet-Lite2`, a
    /// reference network fine-tuned alone in Figures 2-4): emitted as the row key `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalParams,
}

fn maxnet() -> Arch {
    Arch::Maxnet
}

fn seed0() -> String {
    "0".into()
}

/// Mean FixMatch mask rate and pseudo-label accuracy over the last quarter of a run (when the
/// maxnet is most confident); `None` when FixMatch was off or nothing was confident.
fn fixmatch_diagnostics(o: &tofa_train::TrainOutcome) -> (Option<f64>, Option<f64>) {
    let tail = &o.curve[o.curve.len() - o.curve.len().div_ceil(4)..];
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    (
        mean(tail.iter().filter_map(|r| r.mask_rate).collect()),
        mean(tail.iter().filter_map(|r| r.pl_acc).collect()),
    )
}

impl StageKind for BaselineTrain {
    type Params = BaselineParams;
    const NAME: &'static str = "baseline_train";
    // 2: the supernet runs on the NHWC fused ops (other float rounding, other weights)
    // 3: as tofa_train 3 (FixMatch cutoff, teacher pass, warm-up); seed key, diagnostics
    const VERSION: &'static str = "3";

    fn run(&self, p: &BaselineParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let data = Prepared::of(ctx)?;
        let mut model = start_model(ctx, &data)?;
        let arch = match p.arch {
            Arch::Palette(k) => palette_pick(ctx, k, &model.space)?,
            ref a => a.config(&model.space)?,
        };
        let mut cfg = p.train.clone();
        cfg.seed = ctx.seed;
        let s = &data.split.split;
        let td = TrainData {
            dataset: &data.data.train,
            labelled: &s.labelled,
            unlabelled: if p.mode == SingleMode::FixMatch {
                &s.unlabelled
            } else {
                &[]
            },
            batch: data.batch_config(),
        };
        std::fs::create_dir_all(&ctx.scratch_dir)?;
        let outcome = tofa_train::train::train_single(
            &mut model.net,
            &arch,
            p.mode,
            &td,
            &cfg,
            Some(&ctx.scratch_dir),
            &mut progress_fn(ctx),
        )?;
        write_outcome(ctx, &outcome)?;
        // A single network's running statistics are its own: no recalibration needed, but
        // recalibrating is harmless and keeps every accuracy in the tables measured alike.
        let tester = Tester::new(&model, &data, &p.eval, ctx.seed)?;
        let acc = tester.test(&arch)?;
        let (mask_rate, pl_acc) = fixmatch_diagnostics(&outcome);
        ctx.emit_row(&BaselineRow {
            dataset: data.spec.name.clone(),
            mode: p.mode,
            arch: p.arch.clone(),
            seed: p.seed.clone(),
            model: p.model.clone(),
            mask_rate,
            pl_acc,
            acc: acc.accuracy * 100.0,
            subnet: arch.id(),
            mflops: mflops(&model.space, &arch)?,
            iterations: outcome.cost.iterations,
            images: outcome.cost.images_processed,
            train_gmacs: outcome.cost.train_macs as f64 / 1e9,
            wall_s: outcome.cost.wall_s,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_weights_name_the_param_the_variable_and_the_install_step() {
        let var = "TOFA_TEST_WEIGHTS_NEVER_SET";
        let e = weights_path(Path::new("weights/none.pth"), Some(var))
            .unwrap_err()
            .to_string();
        for part in [
            "weights/none.pth",
            "param `init.path`",
            "$TOFA_TEST_WEIGHTS_NEVER_SET is not set",
            "scripts/fetch-weights.sh",
        ] {
            assert!(e.contains(part), "{e}");
        }
        // a file that is there is returned as given
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.pth");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(weights_path(&f, None).unwrap(), f);
    }

    #[test]
    fn arch_names_parse_to_configs_of_the_space_and_back_to_their_text() {
        let space = SearchSpace::builtin("tiny").unwrap();
        let cfg = |a: &str| a.parse::<Arch>().unwrap().config(&space).unwrap();
        assert_eq!(cfg("maxnet"), SubnetConfig::maxnet(&space));
        assert_eq!(cfg("minnet"), SubnetConfig::minnet(&space));
        assert_eq!(cfg("uniform:1"), SubnetConfig::maxnet(&space));
        assert_eq!(cfg("uniform:0"), SubnetConfig::minnet(&space));
        let mid = cfg("uniform:0.5");
        // tiny has two choices per elastic dimension: 0.5 rounds to the larger
        assert_eq!(mid.stages[1].width, 16);
        let id = mid.id();
        assert_eq!(cfg(&id), mid);
        // the text comes back unchanged: it is the cache key and the `arch` column
        for a in [
            "maxnet",
            "minnet",
            "uniform:0.5",
            "uniform:1",
            "palette:3",
            id.as_str(),
        ] {
            assert_eq!(a.parse::<Arch>().unwrap().to_string(), a);
            let v = serde_json::to_value(a.parse::<Arch>().unwrap()).unwrap();
            assert_eq!(v, serde_json::Value::from(a));
        }
        let e = "uniform:2".parse::<Arch>().unwrap_err().to_string();
        assert_eq!(e, "arch `uniform:2`: 2 is not in [0, 1]");
        let e = "palette:x".parse::<Arch>().unwrap_err().to_string();
        assert_eq!(e, "arch `palette:x`: expected palette:<budget index>");
        let e = "r999-bogus".parse::<Arch>().unwrap_err().to_string();
        assert!(
            e.starts_with("arch `r999-bogus`: not maxnet, minnet"),
            "{e}"
        );
        let e = "palette:0"
            .parse::<Arch>()
            .unwrap()
            .config(&space)
            .unwrap_err();
        assert!(e.to_string().contains("palette"), "{e}");
        // a bad arch fails when params are read (the pipeline's load), naming it
        let e = serde_json::from_value::<BaselineParams>(serde_json::json!({
            "mode": "labelled", "arch": "maxnett"
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("arch `maxnett`"), "{e}");
    }
}

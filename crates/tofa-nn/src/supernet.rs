//! The weight-sharing supernet: maxnet weights allocated once, every subnet runs on views.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{StageConfig, SubnetConfig};
use crate::error::{NnError, Result};
use crate::ops::act::Fn1;
use crate::ops::{self, BatchStats, FusedSpec, Layout4, Norm};
use crate::portable::{self, PortableNorm};
use crate::precision::Precision;
use crate::space::{Activation, Padding, SearchSpace, max_of, se_channels};

const BN_MOMENTUM: f64 = 0.1;

/// A trainable tensor with its stable name and whether weight decay applies (not to biases or
/// BN parameters).
#[derive(Clone, Debug)]
pub struct Param {
    /// Stable dotted name, also the safetensors key.
    pub name: String,
    /// The maxnet-sized variable.
    pub var: Var,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// Options for a training forward pass. Dropout and drop-connect masks are drawn from `rng`,
/// so the same seed gives the same result.
pub struct TrainOpts<'a> {
    /// Source of dropout and drop-connect masks.
    pub rng: &'a mut (dyn RngCore + Send),
    /// Dropout probability before the classifier.
    pub dropout: f32,
    /// Drop-connect (stochastic depth) probability on residual branches.
    pub drop_connect: f32,
    /// Whether to update the shared BN running statistics (momentum 0.1) on the active channels.
    pub update_bn_stats: bool,
}

/// How a forward pass runs.
pub enum Mode<'a> {
    /// BN on batch statistics, dropout and drop-connect on.
    Train(TrainOpts<'a>),
    /// BN on running statistics: the recalibrated ones for this config when given (see
    /// [`Supernet::recalibrate_bn`]), else the shared running statistics sliced. An inference
    /// pass: the output tracks no gradient to the parameters, so the fused ops keep nothing
    /// for a backward pass and normalise in place.
    Eval(Option<&'a BnStats>),
}

/// BN statistics recalibrated for one subnet, keyed by BN name (`stem.bn`, ...), each
/// `(mean, var)` sized to the subnet's active channels.
#[derive(Clone, Debug)]
pub struct BnStats {
    /// Id of the config these statistics belong to.
    pub config_id: String,
    /// `name -> (mean, var)`.
    pub stats: BTreeMap<String, (Tensor, Tensor)>,
}

enum Run<'a, 'b> {
    Train(&'b mut TrainOpts<'a>),
    Eval(Option<&'a BnStats>),
    Calibrate(&'b mut BTreeMap<String, (Tensor, Tensor)>),
}

/// Per-forward context: the mode, the backend, and multiply-add and parameter counters.
struct Ctx<'a, 'b> {
    run: Run<'a, 'b>,
    backend: Backend,
    precision: Precision,
    eps: f64,
    padding: Padding,
    macs: u64,
    params: u64,
}

struct Bn {
    name: String,
    gamma: Var,
    beta: Var,
    mean: Var,
    var: Var,
}

/// What a convolution layer convolves: it picks the fused op and the MAC count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ConvKind {
    /// A full `k x k` convolution of the NCHW input image.
    Stem,
    /// A 1x1 convolution of the activations.
    Pointwise,
    /// A depthwise `k x k` convolution of the activations.
    Depthwise,
}

/// A convolution followed by batch norm (and an activation, given at run time): the unit
/// every layer of the supernet but SE and the classifier is made of.
struct ConvBn {
    w: Var,
    bn: Bn,
}

impl ConvBn {
    /// Weight `{p}.conv.weight` `[out, in, k, k]` and BN `{p}.bn`.
    fn new(b: &mut Builder, p: &str, out: usize, inp: usize, k: usize, dw: bool) -> Result<Self> {
        Ok(ConvBn {
            w: b.conv(&format!("{p}.conv"), out, inp, k, dw)?,
            bn: b.bn(&format!("{p}.bn"), out)?,
        })
    }

    /// The stem or a 1x1 convolution with the leading `out x in` block of the weight, at
    /// `stride`, then BN on the `out` leading channels and `a` (`None`: linear).
    fn forward(
        &self,
        ctx: &mut Ctx,
        x: &Tensor,
        kind: ConvKind,
        out: usize,
        stride: usize,
        a: Option<Activation>,
    ) -> Result<Tensor> {
        let inp = match kind {
            ConvKind::Stem => x.dim(1)?,
            _ => ctx.dims(x)?.3,
        };
        let w = self.w.narrow(0, 0, out)?.narrow(1, 0, inp)?;
        ctx.conv_bn_act(kind, x, &w, &self.bn, stride, a)
    }
}

/// Squeeze-excitation: reduce 1x1 + ReLU, expand 1x1 + hard sigmoid, channel scaling.
struct Se {
    reduce: (Var, Var),
    expand: (Var, Var),
}

impl Se {
    fn new(b: &mut Builder, p: &str, mid: usize) -> Result<Self> {
        let r = se_channels(mid);
        Ok(Se {
            reduce: b.linear(&format!("{p}.se.reduce"), r, mid, (2.0 / r as f64).sqrt())?,
            expand: b.linear(&format!("{p}.se.expand"), mid, r, (2.0 / mid as f64).sqrt())?,
        })
    }

    /// SE of activations with `mid` active channels.
    fn forward(&self, ctx: &mut Ctx, h: &Tensor, mid: usize) -> Result<Tensor> {
        let s = ctx.spatial_mean(h)?;
        let s = ctx.linear(&s, &self.reduce, se_channels(mid))?.relu()?;
        let s = ctx.linear(&s, &self.expand, mid)?;
        let s = ctx.act(&s, Fn1::Hsigmoid)?;
        ctx.channel_scale(h, &s)
    }
}

/// One MBConv block (MobileNetV3 / EfficientNet inverted residual) at maxnet size.
struct MbBlock {
    expand: Option<ConvBn>,
    dw: ConvBn,
    /// `(k, matrix)` for each kernel choice below the largest, descending (kernel transform).
    transforms: Vec<(usize, Var)>,
    se: Option<Se>,
    project: ConvBn,
}

impl MbBlock {
    /// Block `j` of stage `i`: weights under `stages.{i}.blocks.{j}`.
    fn new(b: &mut Builder, s: &SearchSpace, i: usize, j: usize) -> Result<Self> {
        let st = &s.stages[i];
        let out = max_of(&st.widths);
        let kmax = max_of(&st.kernels);
        let emax = max_of(&st.expands);
        let inp = if j == 0 { s.max_in_channels(i) } else { out };
        let mid = inp * emax;
        let p = format!("stages.{i}.blocks.{j}");
        let expand = match emax > 1 {
            true => Some(ConvBn::new(b, &format!("{p}.expand"), mid, inp, 1, false)?),
            false => None,
        };
        let dw = ConvBn::new(b, &format!("{p}.dw"), mid, 1, kmax, true)?;
        let se = match st.se {
            true => Some(Se::new(b, &p, mid)?),
            false => None,
        };
        let project = ConvBn::new(b, &format!("{p}.project"), out, mid, 1, false)?;
        let mut transforms = Vec::new();
        if s.kernel_transform {
            let mut from = kmax;
            for &k in st.kernels.iter().rev().skip(1) {
                let eye = Tensor::eye(k * k, DType::F32, &Device::Cpu)?;
                let name = format!("{p}.dw.transform_{from}to{k}");
                transforms.push((k, b.param(name, eye, false)?));
                from = k;
            }
        }
        Ok(MbBlock {
            expand,
            dw,
            transforms,
            se,
            project,
        })
    }

    /// The block with the stage choices `sc` at `stride`, activation `a`: expansion (absent
    /// when the chosen expansion is 1), depthwise, SE, projection, residual (with
    /// drop-connect) when stride is 1 and widths match.
    fn forward(
        &self,
        ctx: &mut Ctx,
        x: &Tensor,
        sc: &StageConfig,
        stride: usize,
        a: Activation,
    ) -> Result<Tensor> {
        let inp = ctx.dims(x)?.3;
        let mut h = x.clone();
        let mut mid = inp;
        if sc.expand > 1 {
            let expand = self
                .expand
                .as_ref()
                .ok_or_else(|| NnError::Input("expansion conv missing".into()))?;
            mid = inp * sc.expand;
            h = expand.forward(ctx, &h, ConvKind::Pointwise, mid, 1, Some(a))?;
        }
        let w = self.dw_kernel(mid, sc.kernel)?;
        h = ctx.conv_bn_act(ConvKind::Depthwise, &h, &w, &self.dw.bn, stride, Some(a))?;
        if let Some(se) = &self.se {
            h = se.forward(ctx, &h, mid)?;
        }
        h = self
            .project
            .forward(ctx, &h, ConvKind::Pointwise, sc.width, 1, None)?;
        if stride == 1 && inp == sc.width {
            let mask = match &mut ctx.run {
                Run::Train(o) if o.drop_connect > 0.0 => {
                    Some(keep_mask(x.dim(0)?, o.drop_connect, o.rng))
                }
                _ => None,
            };
            h = ctx.residual(&h, x, mask)?;
        }
        Ok(h)
    }

    /// The depthwise kernel of `mid` channels and size `k`: the centre of the largest kernel,
    /// or with kernel transforms, centre-crop then transform step by step down to `k` (OFA).
    fn dw_kernel(&self, mid: usize, k: usize) -> Result<Tensor> {
        let mut w = self.dw.w.narrow(0, 0, mid)?;
        let mut cur = w.dim(2)?;
        for (ks, t) in self.transforms.iter().filter(|(ks, _)| *ks >= k) {
            let off = (cur - ks) / 2;
            w = w.narrow(2, off, *ks)?.narrow(3, off, *ks)?;
            w = w
                .reshape((mid, ks * ks))?
                .matmul(&t.t()?)?
                .reshape((mid, 1, *ks, *ks))?;
            cur = *ks;
        }
        let off = (cur - k) / 2;
        Ok(w.narrow(2, off, k)?.narrow(3, off, k)?)
    }
}

/// The head: 1x1 conv + BN + act, global average pooling, the optional mixing layer
/// (MobileNetV3's 1x1 after pooling), dropout, the classifier.
struct Head {
    conv: ConvBn,
    mix: Option<(Var, Var)>,
    classifier: (Var, Var),
}

impl Head {
    fn new(b: &mut Builder, s: &SearchSpace) -> Result<Self> {
        let last = max_of(&s.stages[s.stages.len() - 1].widths);
        let hw = max_of(&s.head.widths);
        let (conv_out, feat) = match s.head.expand {
            Some(e) => (last * e, hw),
            None => (hw, hw),
        };
        let conv = ConvBn::new(b, "head", conv_out, last, 1, false)?;
        let mix = match s.head.expand {
            Some(_) => Some(b.linear("head.mix", hw, conv_out, (1.0 / conv_out as f64).sqrt())?),
            None => None,
        };
        let classifier = b.linear("classifier", s.num_classes, feat, 0.01)?;
        Ok(Head {
            conv,
            mix,
            classifier,
        })
    }

    fn forward(
        &self,
        ctx: &mut Ctx,
        x: &Tensor,
        cfg: &SubnetConfig,
        s: &SearchSpace,
    ) -> Result<Tensor> {
        let conv_out = match s.head.expand {
            Some(e) => cfg.stages[cfg.stages.len() - 1].width * e,
            None => cfg.head_width,
        };
        let x = self
            .conv
            .forward(ctx, x, ConvKind::Pointwise, conv_out, 1, Some(s.head.act))?;
        let mut f = ctx.spatial_mean(&x)?;
        if let Some(mix) = &self.mix {
            f = ctx.linear(&f, mix, cfg.head_width)?;
            f = ctx.act(&f, s.head.act.into())?;
        }
        if let Run::Train(o) = &mut ctx.run
            && o.dropout > 0.0
        {
            f = dropout(&f, o.dropout, o.rng)?;
        }
        ctx.linear(&f, &self.classifier, s.num_classes)
    }
}

/// Builds parameters under nested names (like candle's `vb.pp`) from our seeded RNG.
/// Values are drawn on the host and moved to `device`.
struct Builder {
    rng: ChaCha8Rng,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
    device: Device,
}

impl Builder {
    fn normal(&mut self, shape: &[usize], std: f64) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            // Box-Muller
            let u1: f64 = self.rng.random::<f64>().max(1e-12);
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            v.push((r * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32);
            if v.len() < n {
                v.push((r * (2.0 * std::f64::consts::PI * u2).sin() * std) as f32);
            }
        }
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }

    fn param(&mut self, name: String, t: Tensor, decay: bool) -> Result<Var> {
        let var = Var::from_tensor(&t.to_device(&self.device)?)?;
        self.params.push(Param {
            name,
            var: var.clone(),
            decay,
        });
        Ok(var)
    }

    /// Conv weight `[out, in, k, k]`, Kaiming normal on fan-out (OFA/timm).
    fn conv(
        &mut self,
        p: &str,
        out: usize,
        inp: usize,
        k: usize,
        groups_eq_out: bool,
    ) -> Result<Var> {
        let fan_out = if groups_eq_out { k * k } else { out * k * k };
        let t = self.normal(&[out, inp, k, k], (2.0 / fan_out as f64).sqrt())?;
        self.param(format!("{p}.weight"), t, true)
    }

    fn bn(&mut self, p: &str, c: usize) -> Result<Bn> {
        let dev = &self.device.clone();
        let gamma = self.param(
            format!("{p}.weight"),
            Tensor::ones(c, DType::F32, dev)?,
            false,
        )?;
        let beta = self.param(
            format!("{p}.bias"),
            Tensor::zeros(c, DType::F32, dev)?,
            false,
        )?;
        let mean = Var::zeros(c, DType::F32, dev)?;
        let var = Var::ones(c, DType::F32, dev)?;
        self.buffers
            .push((format!("{p}.running_mean"), mean.clone()));
        self.buffers.push((format!("{p}.running_var"), var.clone()));
        Ok(Bn {
            name: p.to_string(),
            gamma,
            beta,
            mean,
            var,
        })
    }

    fn linear(&mut self, p: &str, out: usize, inp: usize, std: f64) -> Result<(Var, Var)> {
        let w = self.normal(&[out, inp], std)?;
        let w = self.param(format!("{p}.weight"), w, true)?;
        let b = self.param(
            format!("{p}.bias"),
            Tensor::zeros(out, DType::F32, &Device::Cpu)?,
            false,
        )?;
        Ok((w, b))
    }
}

/// Which implementation the supernet's layers run on. Both compute the same network (test
/// `portable_and_fused_backends_are_the_same_network`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Our fused channels-last CPU ops ([`crate::ops`]): the fast path on the CPU.
    #[default]
    Fused,
    /// candle's own ops in NCHW ([`crate::portable`]): runs on every device candle supports,
    /// CUDA included.
    Portable,
}

impl Backend {
    /// The backend for `device`: fused on the CPU, portable elsewhere.
    pub fn for_device(device: &Device) -> Self {
        match device {
            Device::Cpu => Backend::Fused,
            _ => Backend::Portable,
        }
    }
}

/// The elastic MBConv supernet.
///
/// Layout of a block: see `MbBlock::forward`; weights are allocated at maxnet size, and a
/// subnet runs on their leading channels (views).
pub struct Supernet {
    space: SearchSpace,
    stem: ConvBn,
    stages: Vec<Vec<MbBlock>>,
    head: Head,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
    head_seed: u64,
    device: Device,
    backend: Backend,
    precision: Precision,
}

impl Supernet {
    /// Allocates the maxnet on the CPU and initialises it from `seed` (Kaiming normal convs,
    /// BN 1/0, classifier normal(0, 0.01)).
    pub fn new(space: &SearchSpace, seed: u64) -> Result<Self> {
        Self::new_on(space, seed, &Device::Cpu)
    }

    /// As [`Supernet::new`], on `device`, with [`Backend::for_device`]. The weights are drawn
    /// on the host from the same seeded stream, so every device starts from the same bits.
    pub fn new_on(space: &SearchSpace, seed: u64, device: &Device) -> Result<Self> {
        let mut b = Builder {
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: vec![],
            buffers: vec![],
            device: device.clone(),
        };
        let s = space;
        let stem_w = max_of(&s.stem.widths);
        let stem = ConvBn::new(&mut b, "stem", stem_w, s.in_channels, s.stem.kernel, false)?;
        let mut stages = Vec::new();
        for (i, st) in s.stages.iter().enumerate() {
            let blocks = (0..max_of(&st.depths))
                .map(|j| MbBlock::new(&mut b, s, i, j))
                .collect::<Result<_>>()?;
            stages.push(blocks);
        }
        let head = Head::new(&mut b, s)?;
        let head_seed = b.rng.random();
        Ok(Supernet {
            space: space.clone(),
            stem,
            stages,
            head,
            params: b.params,
            buffers: b.buffers,
            head_seed,
            device: device.clone(),
            backend: Backend::for_device(device),
            precision: Precision::F32,
        })
    }

    /// The device the weights live on; inputs must be there too.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The backend the layers run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs the layers on `backend` from now on. The fused ops have CPU kernels only.
    pub fn set_backend(&mut self, backend: Backend) -> Result<()> {
        if backend == Backend::Fused && !self.device.is_cpu() {
            return Err(NnError::Input(format!(
                "the fused backend runs on the CPU only, the supernet is on {:?}: use the portable backend",
                self.device
            )));
        }
        if backend == Backend::Fused && !self.precision.is_f32() {
            return Err(NnError::Input(format!(
                "the fused backend runs in f32 only, the supernet is set to {:?}: set f32 first",
                self.precision
            )));
        }
        self.backend = backend;
        Ok(())
    }

    /// The precision of the products ([`crate::precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Runs the convolutions and linear layers in `precision` from now on. bf16 needs the
    /// portable backend ([`Supernet::set_backend`]); the weights stay f32 either way.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision != Precision::F32 && self.backend == Backend::Fused {
            return Err(NnError::Input(format!(
                "{precision:?} runs on the portable backend only, the supernet runs on the fused one: set the portable backend first"
            )));
        }
        self.precision = precision;
        Ok(())
    }

    /// The search space.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// Classifier outputs.
    pub fn num_classes(&self) -> usize {
        self.space.num_classes
    }

    /// Replaces the classifier with a freshly initialised one for `num_classes` (a new task);
    /// every other weight is kept.
    pub fn reset_classifier(&mut self, num_classes: usize, seed: u64) -> Result<()> {
        self.space = self.space.clone().with_num_classes(num_classes)?;
        let feat = self.head.classifier.0.dim(1)?;
        let mut b = Builder {
            rng: ChaCha8Rng::seed_from_u64(seed ^ self.head_seed),
            params: vec![],
            buffers: vec![],
            device: self.device.clone(),
        };
        let cls = b.linear("classifier", num_classes, feat, 0.01)?;
        self.params.retain(|p| !p.name.starts_with("classifier."));
        self.params.extend(b.params);
        self.head.classifier = cls;
        Ok(())
    }

    /// The variable (parameter or BN buffer) named `name`.
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.var)
            .or_else(|| self.buffers.iter().find(|(n, _)| n == name).map(|(_, v)| v))
    }

    /// Trainable parameters (maxnet-sized), in a stable order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Every tensor to save: parameters then BN running statistics, by name.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        for p in &self.params {
            m.insert(p.name.clone(), p.var.as_tensor().clone());
        }
        for (n, v) in &self.buffers {
            m.insert(n.clone(), v.as_tensor().clone());
        }
        m
    }

    /// Saves all weights and BN statistics as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let m: HashMap<String, Tensor> = self.tensors().into_iter().collect();
        candle_core::safetensors::save(&m, path).map_err(|e| NnError::File {
            path: path.into(),
            msg: e.to_string(),
        })
    }

    /// Loads weights saved by [`Supernet::save`] for the same space. Every tensor must be
    /// present with the maxnet's shape; the error names the first that is not.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let m = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| NnError::File {
            path: path.into(),
            msg: e.to_string(),
        })?;
        self.load_tensors(&m)
    }

    /// Loads tensors by name (see [`Supernet::load`]).
    pub fn load_tensors(&mut self, m: &HashMap<String, Tensor>) -> Result<()> {
        let vars: Vec<(String, Var)> = self
            .params
            .iter()
            .map(|p| (p.name.clone(), p.var.clone()))
            .chain(self.buffers.iter().cloned())
            .collect();
        for (name, var) in &vars {
            let t = m.get(name).ok_or_else(|| NnError::Weights {
                name: name.clone(),
                msg: "missing".into(),
            })?;
            if t.dims() != var.dims() {
                return Err(NnError::Weights {
                    name: name.clone(),
                    msg: format!("shape {:?} but the supernet has {:?}", t.dims(), var.dims()),
                });
            }
        }
        for (name, var) in &vars {
            var.set(&m[name].to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// The depthwise kernel that block `block` of stage `stage` runs with `mid` channels and
    /// kernel `k` (for export).
    pub(crate) fn dw_kernel(
        &self,
        stage: usize,
        block: usize,
        mid: usize,
        k: usize,
    ) -> Result<Tensor> {
        let b = self
            .stages
            .get(stage)
            .and_then(|s| s.get(block))
            .ok_or_else(|| NnError::Input(format!("no block {block} in stage {stage}")))?;
        b.dw_kernel(mid, k)
    }

    /// Runs `cfg` on `x`.
    ///
    /// # Shapes
    /// - `x`: `[B, in_channels, r, r]` f32 NCHW, `r == cfg.resolution`
    /// - returns logits `[B, num_classes]`
    pub fn forward_t(&self, x: &Tensor, cfg: &SubnetConfig, mode: Mode<'_>) -> Result<Tensor> {
        match mode {
            Mode::Train(mut o) => self.run(x, cfg, Run::Train(&mut o)).map(|(y, _, _)| y),
            Mode::Eval(s) => {
                if let Some(s) = s
                    && s.config_id != cfg.id()
                {
                    return Err(NnError::Input(format!(
                        "bn statistics are for {} but the config is {}",
                        s.config_id,
                        cfg.id()
                    )));
                }
                self.run(x, cfg, Run::Eval(s)).map(|(y, _, _)| y)
            }
        }
    }

    /// Runs `cfg` in eval mode and also returns the multiply-adds and parameters it used,
    /// counted while running (compare with [`crate::cost::cost`]).
    pub fn forward_counted(&self, x: &Tensor, cfg: &SubnetConfig) -> Result<(Tensor, u64, u64)> {
        self.run(x, cfg, Run::Eval(None))
    }

    /// Recomputes BN statistics for `cfg` over `batches` (each `[B, C, r, r]`): every BN uses
    /// batch statistics and the per-batch means and variances are averaged (OFA's
    /// `set_running_statistics`). Pass the result to [`Mode::Eval`].
    pub fn recalibrate_bn<'t>(
        &self,
        cfg: &SubnetConfig,
        batches: impl IntoIterator<Item = &'t Tensor>,
    ) -> Result<BnStats> {
        let mut acc = BTreeMap::new();
        let mut n = 0usize;
        for x in batches {
            self.run(x, cfg, Run::Calibrate(&mut acc))?;
            n += 1;
        }
        if n == 0 {
            return Err(NnError::Input(
                "recalibration needs at least one batch".into(),
            ));
        }
        let stats = acc
            .into_iter()
            .map(|(k, (m, v))| Ok((k, ((m / n as f64)?, (v / n as f64)?))))
            .collect::<Result<_>>()?;
        Ok(BnStats {
            config_id: cfg.id(),
            stats,
        })
    }

    /// Every forward pass (train, eval, recalibration) goes through here, on a rayon worker
    /// (see [`crate::runtime::on_worker`]).
    fn run(&self, x: &Tensor, cfg: &SubnetConfig, run: Run<'_, '_>) -> Result<(Tensor, u64, u64)> {
        crate::runtime::on_worker(|| self.run_here(x, cfg, run))
    }

    fn run_here(
        &self,
        x: &Tensor,
        cfg: &SubnetConfig,
        run: Run<'_, '_>,
    ) -> Result<(Tensor, u64, u64)> {
        cfg.validate(&self.space)?;
        let (_, c, h, w) = x.dims4().map_err(|_| {
            NnError::Input(format!("input shape {:?} is not [B, C, H, W]", x.dims()))
        })?;
        if c != self.space.in_channels || h != cfg.resolution || w != cfg.resolution {
            return Err(NnError::Input(format!(
                "input shape {:?} but the config wants [B, {}, {}, {}]",
                x.dims(),
                self.space.in_channels,
                cfg.resolution,
                cfg.resolution
            )));
        }
        if !x.device().same_device(&self.device) {
            return Err(NnError::Input(format!(
                "input on {:?} but the supernet on {:?}",
                x.device(),
                self.device
            )));
        }
        let mut ctx = Ctx {
            run,
            backend: self.backend,
            precision: self.precision,
            eps: self.space.bn_eps,
            padding: self.space.padding,
            macs: 0,
            params: 0,
        };
        let s = &self.space;
        // fused: activations are channels-last from the stem on (see `crate::ops`)
        let mut x = self.stem.forward(
            &mut ctx,
            x,
            ConvKind::Stem,
            cfg.stem_width,
            s.stem.stride,
            Some(s.stem.act),
        )?;
        for (blocks, (st, sc)) in self.stages.iter().zip(s.stages.iter().zip(&cfg.stages)) {
            for (j, blk) in blocks.iter().take(sc.depth).enumerate() {
                let stride = if j == 0 { st.stride } else { 1 };
                x = blk.forward(&mut ctx, &x, sc, stride, st.act)?;
            }
        }
        let y = self.head.forward(&mut ctx, &x, cfg, s)?;
        Ok((y, ctx.macs, ctx.params))
    }
}

/// `n` keep-or-drop multipliers drawn from `rng`: `1 / (1 - p)` with probability `1 - p`,
/// else 0 (dropout and drop-connect).
fn keep_mask(n: usize, p: f32, rng: &mut dyn RngCore) -> Vec<f32> {
    let keep = 1.0 - p;
    (0..n)
        .map(|_| match rng.random::<f32>() < keep {
            true => 1.0 / keep,
            false => 0.0,
        })
        .collect()
}

fn dropout(x: &Tensor, p: f32, rng: &mut dyn RngCore) -> Result<Tensor> {
    let mask = keep_mask(x.elem_count(), p, rng);
    Ok((x * Tensor::from_vec(mask, x.dims(), x.device())?)?)
}

/// Measured batch statistics of one BN layer: on the host from a fused op, as tensors on the
/// device from the portable path.
enum Measured {
    Host(BatchStats),
    Device(Tensor, Tensor),
}

impl Ctx<'_, '_> {
    /// `(B, H, W, C)` of activations in this backend's layout (NHWC fused, NCHW portable).
    fn dims(&self, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let (b, d1, d2, d3) = x.dims4()?;
        Ok(match self.backend {
            Backend::Fused => (b, d1, d2, d3),
            Backend::Portable => (b, d2, d3, d1),
        })
    }

    /// A convolution of kind `kind` with weight `w` (`[out, in, k, k]`, `[mid, 1, k, k]` for
    /// depthwise) at `stride`, then BN layer `l` on its `out` leading channels, then `a`;
    /// books the BN statistics and the multiply-adds and parameters.
    fn conv_bn_act(
        &mut self,
        kind: ConvKind,
        x: &Tensor,
        w: &Tensor,
        l: &Bn,
        stride: usize,
        a: Option<Activation>,
    ) -> Result<Tensor> {
        let (out, inp, k, _) = w.dims4()?;
        let pads = match kind {
            ConvKind::Stem => self.padding.pads(x.dim(2)?, k, stride),
            ConvKind::Pointwise => (0, 0),
            ConvKind::Depthwise => self.padding.pads(self.dims(x)?.1, k, stride),
        };
        let fixed = self.fixed_stats(l, out)?;
        let w = &self.param(w.clone());
        let gamma = self.param(l.gamma.narrow(0, 0, out)?);
        let beta = self.param(l.beta.narrow(0, 0, out)?);
        let (y, measured) = match self.backend {
            Backend::Fused => {
                let norm = match fixed {
                    Some((mean, var)) => Norm::Fixed {
                        mean: mean.to_vec1()?,
                        var: var.to_vec1()?,
                    },
                    None => Norm::Batch,
                };
                let spec = FusedSpec {
                    stride,
                    pads,
                    eps: self.eps,
                    act: a.map(Into::into),
                    norm,
                };
                let (y, stats) = match kind {
                    ConvKind::Stem => ops::conv_bn_act(x, w, &gamma, &beta, Layout4::Nchw, spec)?,
                    ConvKind::Pointwise => {
                        ops::conv_bn_act(x, w, &gamma, &beta, Layout4::Nhwc, spec)?
                    }
                    ConvKind::Depthwise => ops::dw_bn_act(x, w, &gamma, &beta, spec)?,
                };
                (y, stats.map(Measured::Host))
            }
            Backend::Portable => {
                let p = self.precision;
                let z = match kind {
                    ConvKind::Depthwise => {
                        let (x, w) = (p.rounded(x)?, p.rounded(w)?);
                        p.result(&portable::depthwise(&x, &w, stride, pads)?)?
                    }
                    _ => {
                        let (x, w) = (p.operand(x)?, p.operand(w)?);
                        p.result(&portable::conv(&x, &w, stride, pads)?)?
                    }
                };
                let norm = match fixed {
                    Some((mean, var)) => PortableNorm::Fixed(mean, var),
                    None => PortableNorm::Batch,
                };
                let (y, stats) = portable::batch_norm(&z, &gamma, &beta, norm, self.eps)?;
                let y = match a {
                    Some(a) => portable::act(&y, a.into())?,
                    None => y,
                };
                (y, stats.map(|(m, v)| Measured::Device(m, v)))
            }
        };
        let (_, ho, wo, _) = self.dims(&y)?;
        let taps = match kind {
            ConvKind::Depthwise => out * k * k,
            _ => out * inp * k * k,
        };
        self.macs += (taps * ho * wo) as u64;
        self.params += taps as u64 + 2 * out as u64;
        self.after_bn(l, measured, y.elem_count() / out)?;
        Ok(y)
    }

    /// `x [B, in] -> [B, out]` with the leading `out x in` block of `w` and `out` of `b`.
    fn linear(&mut self, x: &Tensor, (w, b): &(Var, Var), out: usize) -> Result<Tensor> {
        let inp = x.dim(1)?;
        let w = self.param(w.narrow(0, 0, out)?.narrow(1, 0, inp)?);
        let b = self.param(b.narrow(0, 0, out)?);
        self.macs += (out * inp) as u64;
        self.params += (out * inp + out) as u64;
        let p = self.precision;
        // contiguous before the transpose: a narrowed weight's rows are strided, which
        // candle's CPU matmul takes and cuBLAS does not ("matmul is only supported for
        // contiguous tensors", seen on CUDA)
        let xw = p.operand(x)?.matmul(&p.operand(&w.contiguous()?)?.t()?)?;
        Ok(p.result(&xw)?.broadcast_add(&b)?)
    }

    /// A parameter as this pass uses it: detached when no backward pass can follow
    /// (evaluation, BN recalibration), so that no op on it records a graph and the fused ops
    /// keep nothing for a backward pass. Same values, same bits.
    fn param(&self, t: Tensor) -> Tensor {
        match self.run {
            Run::Train(_) => t,
            Run::Eval(_) | Run::Calibrate(_) => t.detach(),
        }
    }

    /// An activation of any tensor.
    fn act(&self, x: &Tensor, f: Fn1) -> Result<Tensor> {
        match self.backend {
            Backend::Fused => crate::ops::act::apply(x, f),
            Backend::Portable => portable::act(x, f),
        }
    }

    /// A block's residual connection `h + x`, with drop-connect when `mask` (one scale per
    /// image: whole branches dropped) is given.
    fn residual(&self, h: &Tensor, x: &Tensor, mask: Option<Vec<f32>>) -> Result<Tensor> {
        match (mask, self.backend) {
            (None, _) => Ok((h + x)?),
            (Some(m), Backend::Fused) => ops::residual(h, x, m),
            (Some(m), Backend::Portable) => {
                let m = Tensor::from_vec(m, (h.dim(0)?, 1, 1, 1), h.device())?;
                Ok((h.broadcast_mul(&m)? + x)?)
            }
        }
    }

    /// Global average pooling: `[B, C]`.
    fn spatial_mean(&self, x: &Tensor) -> Result<Tensor> {
        match self.backend {
            Backend::Fused => ops::spatial_mean(x),
            Backend::Portable => Ok(x.mean((2, 3))?),
        }
    }

    /// Scales each image's channels by `s [B, C]` (SE's excitation).
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        match self.backend {
            Backend::Fused => ops::channel_scale(x, s),
            Backend::Portable => {
                let (b, c) = s.dims2()?;
                Ok(x.broadcast_mul(&s.reshape((b, c, 1, 1))?)?)
            }
        }
    }

    /// The fixed statistics BN layer `l` normalises `c` channels with in evaluation (the
    /// recalibrated ones when given, else the shared running statistics sliced); `None` when
    /// training or re-calibrating (batch statistics).
    fn fixed_stats(&self, l: &Bn, c: usize) -> Result<Option<(Tensor, Tensor)>> {
        Ok(match &self.run {
            Run::Eval(stats) => Some(match stats.and_then(|s| s.stats.get(&l.name)) {
                Some((m, v)) => (m.clone(), v.clone()),
                None => (l.mean.narrow(0, 0, c)?, l.var.narrow(0, 0, c)?),
            }),
            Run::Calibrate(_) | Run::Train(_) => None,
        })
    }

    /// Books the batch statistics a BN layer measured over `n` values per channel: into the
    /// running statistics (momentum 0.1, unbiased variance) when training with updates, into
    /// the re-calibration sums when re-calibrating.
    fn after_bn(&mut self, l: &Bn, stats: Option<Measured>, n: usize) -> Result<()> {
        let Some(st) = stats else {
            return Ok(());
        };
        let unbias = n as f64 / (n as f64 - 1.0).max(1.0);
        match &mut self.run {
            Run::Eval(_) => {}
            Run::Calibrate(acc) => {
                let (md, vd) = match st {
                    Measured::Host(st) => {
                        let c = st.mean.len();
                        (
                            Tensor::from_vec(st.mean, c, &Device::Cpu)?,
                            Tensor::from_vec(st.var, c, &Device::Cpu)?,
                        )
                    }
                    Measured::Device(m, v) => (m, v),
                };
                let sum = match acc.remove(&l.name) {
                    Some((m, v)) => ((m + &md)?, (v + &vd)?),
                    None => (md, vd),
                };
                acc.insert(l.name.clone(), sum);
            }
            Run::Train(o) if o.update_bn_stats => match st {
                // on the host in f64, as it always was (the committed results depend on it)
                Measured::Host(st) => {
                    let upd = |buf: &Var, new: &[f32], k: f64| -> Result<()> {
                        let mut all: Vec<f32> = buf.as_tensor().to_vec1()?;
                        for (old, v) in all.iter_mut().zip(new) {
                            *old = ((*old as f64) * (1.0 - BN_MOMENTUM)
                                + (*v as f64) * k * BN_MOMENTUM)
                                as f32;
                        }
                        let len = all.len();
                        buf.set(&Tensor::from_vec(all, len, &Device::Cpu)?)?;
                        Ok(())
                    };
                    upd(&l.mean, &st.mean, 1.0)?;
                    upd(&l.var, &st.var, unbias)?;
                }
                // on the device: the leading channels updated, the rest kept
                Measured::Device(m, v) => {
                    let upd = |buf: &Var, new: &Tensor, k: f64| -> Result<()> {
                        let c = new.dim(0)?;
                        let all = buf.as_tensor();
                        let head = ((all.narrow(0, 0, c)? * (1.0 - BN_MOMENTUM))?
                            + (new * (k * BN_MOMENTUM))?)?;
                        let merged = match all.dim(0)? - c {
                            0 => head,
                            rest => Tensor::cat(&[&head, &all.narrow(0, c, rest)?], 0)?,
                        };
                        buf.set(&merged.detach())?;
                        Ok(())
                    };
                    upd(&l.mean, &m, 1.0)?;
                    upd(&l.var, &v, unbias)?;
                }
            },
            Run::Train(_) => {}
        }
        Ok(())
    }
}

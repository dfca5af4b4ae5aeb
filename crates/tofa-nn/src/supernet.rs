//! The weight-sharing supernet: maxnet weights allocated once, every subnet runs on views.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::SubnetConfig;
use crate::error::{NnError, Result};
use crate::nhwc::{self, BatchStats, FusedSpec, Layout4, Norm};
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
    pub rng: &'a mut dyn RngCore,
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
    /// [`Supernet::recalibrate_bn`]), else the shared running statistics sliced.
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

/// Per-forward context: the mode plus multiply-add and parameter counters.
struct Ctx<'a, 'b> {
    run: Run<'a, 'b>,
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

struct Conv {
    w: Var,
}

struct Se {
    reduce_w: Var,
    reduce_b: Var,
    expand_w: Var,
    expand_b: Var,
}

struct Block {
    expand: Option<(Conv, Bn)>,
    dw: (Conv, Bn),
    /// `(k, matrix)` for each kernel choice below the largest, descending (kernel transform).
    transforms: Vec<(usize, Var)>,
    se: Option<Se>,
    project: (Conv, Bn),
}

struct Head {
    conv: Conv,
    bn: Bn,
    mix: Option<(Var, Var)>,
    classifier: (Var, Var),
}

/// Builds parameters under nested names (like candle's `vb.pp`) from our seeded RNG.
struct Builder {
    rng: ChaCha8Rng,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
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
        let var = Var::from_tensor(&t)?;
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
    ) -> Result<Conv> {
        let fan_out = if groups_eq_out { k * k } else { out * k * k };
        let t = self.normal(&[out, inp, k, k], (2.0 / fan_out as f64).sqrt())?;
        Ok(Conv {
            w: self.param(format!("{p}.weight"), t, true)?,
        })
    }

    fn bn(&mut self, p: &str, c: usize) -> Result<Bn> {
        let dev = &Device::Cpu;
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

/// The elastic MBConv supernet.
///
/// Layout of a block (MobileNetV3 / EfficientNet inverted residual): optional 1x1 expansion
/// conv + BN + act (absent when the chosen expansion is 1), depthwise `k x k` conv + BN + act,
/// optional squeeze-excitation (reduce 1x1 + ReLU, expand 1x1 + hard sigmoid), 1x1 projection +
/// BN, residual (with drop-connect) when stride is 1 and widths match.
pub struct Supernet {
    space: SearchSpace,
    stem: (Conv, Bn),
    stages: Vec<Vec<Block>>,
    head: Head,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
    head_seed: u64,
}

fn act(x: &Tensor, a: Activation) -> Result<Tensor> {
    crate::act::apply(x, a.into())
}

fn hsigmoid(x: &Tensor) -> Result<Tensor> {
    crate::act::apply(x, crate::act::Fn1::Hsigmoid)
}

impl Supernet {
    /// Allocates the maxnet and initialises it from `seed` (Kaiming normal convs, BN 1/0,
    /// classifier normal(0, 0.01)).
    pub fn new(space: &SearchSpace, seed: u64) -> Result<Self> {
        let mut b = Builder {
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: vec![],
            buffers: vec![],
        };
        let s = space;
        let stem_w = max_of(&s.stem.widths);
        let stem = (
            b.conv("stem.conv", stem_w, s.in_channels, s.stem.kernel, false)?,
            b.bn("stem.bn", stem_w)?,
        );
        let mut stages = Vec::new();
        for (i, st) in s.stages.iter().enumerate() {
            let out = max_of(&st.widths);
            let kmax = max_of(&st.kernels);
            let emax = max_of(&st.expands);
            let mut blocks = Vec::new();
            for j in 0..max_of(&st.depths) {
                let inp = if j == 0 { s.max_in_channels(i) } else { out };
                let mid = inp * emax;
                let p = format!("stages.{i}.blocks.{j}");
                let expand = if emax > 1 {
                    Some((
                        b.conv(&format!("{p}.expand.conv"), mid, inp, 1, false)?,
                        b.bn(&format!("{p}.expand.bn"), mid)?,
                    ))
                } else {
                    None
                };
                let dw = (
                    b.conv(&format!("{p}.dw.conv"), mid, 1, kmax, true)?,
                    b.bn(&format!("{p}.dw.bn"), mid)?,
                );
                let se = if st.se {
                    let r = se_channels(mid);
                    let (rw, rb) =
                        b.linear(&format!("{p}.se.reduce"), r, mid, (2.0 / r as f64).sqrt())?;
                    let (ew, eb) =
                        b.linear(&format!("{p}.se.expand"), mid, r, (2.0 / mid as f64).sqrt())?;
                    Some(Se {
                        reduce_w: rw,
                        reduce_b: rb,
                        expand_w: ew,
                        expand_b: eb,
                    })
                } else {
                    None
                };
                let project = (
                    b.conv(&format!("{p}.project.conv"), out, mid, 1, false)?,
                    b.bn(&format!("{p}.project.bn"), out)?,
                );
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
                blocks.push(Block {
                    expand,
                    dw,
                    transforms,
                    se,
                    project,
                });
            }
            stages.push(blocks);
        }
        let last = max_of(&s.stages[s.stages.len() - 1].widths);
        let hw = max_of(&s.head.widths);
        let (conv_out, feat) = match s.head.expand {
            Some(e) => (last * e, hw),
            None => (hw, hw),
        };
        let conv = b.conv("head.conv", conv_out, last, 1, false)?;
        let bn = b.bn("head.bn", conv_out)?;
        let mix = match s.head.expand {
            Some(_) => Some(b.linear("head.mix", hw, conv_out, (1.0 / conv_out as f64).sqrt())?),
            None => None,
        };
        let classifier = b.linear("classifier", s.num_classes, feat, 0.01)?;
        let head_seed = b.rng.random();
        Ok(Supernet {
            space: space.clone(),
            stem,
            stages,
            head: Head {
                conv,
                bn,
                mix,
                classifier,
            },
            params: b.params,
            buffers: b.buffers,
            head_seed,
        })
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
            var.set(&m[name].to_dtype(DType::F32)?)?;
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
        dw_kernel(b, mid, k)
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

    fn run(&self, x: &Tensor, cfg: &SubnetConfig, run: Run<'_, '_>) -> Result<(Tensor, u64, u64)> {
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
        let mut ctx = Ctx {
            run,
            eps: self.space.bn_eps,
            padding: self.space.padding,
            macs: 0,
            params: 0,
        };
        let s = &self.space;
        // activations are channels-last from the stem on (see `crate::nhwc`)
        let mut x = stem(&mut ctx, x, &self.stem, cfg.stem_width, s)?;
        for (blocks, (st, sc)) in self.stages.iter().zip(s.stages.iter().zip(&cfg.stages)) {
            for (j, blk) in blocks.iter().take(sc.depth).enumerate() {
                let stride = if j == 0 { st.stride } else { 1 };
                x = block(
                    &mut ctx, &x, blk, sc.width, sc.kernel, sc.expand, stride, st.act,
                )?;
            }
        }
        let last = cfg.stages[cfg.stages.len() - 1].width;
        let conv_out = match s.head.expand {
            Some(e) => last * e,
            None => cfg.head_width,
        };
        x = pointwise(
            &mut ctx,
            &x,
            &self.head.conv,
            &self.head.bn,
            conv_out,
            Some(s.head.act),
        )?;
        let mut f = nhwc::spatial_mean(&x)?;
        if let Some((mw, mb)) = &self.head.mix {
            f = act(&linear(&mut ctx, &f, mw, mb, cfg.head_width)?, s.head.act)?;
        }
        if let Run::Train(o) = &mut ctx.run
            && o.dropout > 0.0
        {
            f = dropout(&f, o.dropout, o.rng)?;
        }
        let (cw, cb) = &self.head.classifier;
        let y = linear(&mut ctx, &f, cw, cb, s.num_classes)?;
        Ok((y, ctx.macs, ctx.params))
    }
}

fn dropout(x: &Tensor, p: f32, rng: &mut dyn RngCore) -> Result<Tensor> {
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f32>() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    Ok((x * Tensor::from_vec(mask, x.dims(), x.device())?)?)
}

fn drop_connect(x: &Tensor, p: f32, rng: &mut dyn RngCore) -> Result<Tensor> {
    let keep = 1.0 - p;
    let b = x.dim(0)?;
    let mask: Vec<f32> = (0..b)
        .map(|_| {
            if rng.random::<f32>() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    Ok(x.broadcast_mul(&Tensor::from_vec(mask, (b, 1, 1, 1), x.device())?)?)
}

/// One MBConv block on NHWC activations `[B, H, W, C]`.
#[allow(clippy::too_many_arguments)]
fn block(
    ctx: &mut Ctx,
    x: &Tensor,
    b: &Block,
    out: usize,
    k: usize,
    e: usize,
    stride: usize,
    a: Activation,
) -> Result<Tensor> {
    let inp = x.dim(3)?;
    let mut h = x.clone();
    let mut mid = inp;
    if e > 1 {
        let (conv, bnl) = b
            .expand
            .as_ref()
            .ok_or_else(|| NnError::Input("expansion conv missing".into()))?;
        mid = inp * e;
        h = pointwise(ctx, &h, conv, bnl, mid, Some(a))?;
    }
    let w = dw_kernel(b, mid, k)?;
    let pads = ctx.padding.pads(h.dim(1)?, k, stride);
    h = ctx.fused(&b.dw.1, mid, stride, pads, Some(a), |g, bt, spec| {
        nhwc::dw_bn_act(&h, &w, g, bt, spec)
    })?;
    let (_, ho, wo, _) = h.dims4()?;
    ctx.macs += (mid * k * k * ho * wo) as u64;
    ctx.params += (mid * k * k) as u64;
    if let Some(se) = &b.se {
        let r = se_channels(mid);
        let s = nhwc::spatial_mean(&h)?;
        let s = linear(ctx, &s, &se.reduce_w, &se.reduce_b, r)?.relu()?;
        let s = hsigmoid(&linear(ctx, &s, &se.expand_w, &se.expand_b, mid)?)?;
        h = nhwc::channel_scale(&h, &s)?;
    }
    h = pointwise(ctx, &h, &b.project.0, &b.project.1, out, None)?;
    if stride == 1 && inp == out {
        if let Run::Train(o) = &mut ctx.run
            && o.drop_connect > 0.0
        {
            h = drop_connect(&h, o.drop_connect, o.rng)?;
        }
        h = (h + x)?;
    }
    Ok(h)
}

/// The depthwise kernel of `mid` channels and size `k`: the centre of the largest kernel, or
/// with kernel transforms, centre-crop then transform step by step down to `k` (OFA).
fn dw_kernel(b: &Block, mid: usize, k: usize) -> Result<Tensor> {
    let mut w = b.dw.0.w.narrow(0, 0, mid)?;
    let mut cur = w.dim(2)?;
    for (ks, t) in b.transforms.iter().filter(|(ks, _)| *ks >= k) {
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

/// The stem: a full `k x k` convolution of the NCHW image + BN + activation, output NHWC.
fn stem(
    ctx: &mut Ctx,
    x: &Tensor,
    (conv, bnl): &(Conv, Bn),
    out: usize,
    s: &SearchSpace,
) -> Result<Tensor> {
    let (_, inp, k, _) = conv.w.dims4()?;
    let w = conv.w.narrow(0, 0, out)?;
    let pads = ctx.padding.pads(x.dim(2)?, k, s.stem.stride);
    let y = ctx.fused(
        bnl,
        out,
        s.stem.stride,
        pads,
        Some(s.stem.act),
        |g, b, spec| nhwc::conv_bn_act(x, &w, g, b, Layout4::Nchw, spec),
    )?;
    let (_, ho, wo, _) = y.dims4()?;
    ctx.macs += (out * inp * k * k * ho * wo) as u64;
    ctx.params += (out * inp * k * k) as u64;
    Ok(y)
}

/// 1x1 conv with the leading `out x in` block of the weight + BN + activation (`None`: linear),
/// on NHWC activations: one GEMM over all pixels.
fn pointwise(
    ctx: &mut Ctx,
    x: &Tensor,
    c: &Conv,
    bnl: &Bn,
    out: usize,
    a: Option<Activation>,
) -> Result<Tensor> {
    let (_, h, w, inp) = x.dims4()?;
    let wt = c.w.narrow(0, 0, out)?.narrow(1, 0, inp)?;
    let y = ctx.fused(bnl, out, 1, (0, 0), a, |g, b, spec| {
        nhwc::conv_bn_act(x, &wt, g, b, Layout4::Nhwc, spec)
    })?;
    ctx.macs += (out * inp * h * w) as u64;
    ctx.params += (out * inp) as u64;
    Ok(y)
}

/// `x [B, in] -> [B, out]` with the leading `out x in` block of `w` and `out` of `b`.
fn linear(ctx: &mut Ctx, x: &Tensor, w: &Var, b: &Var, out: usize) -> Result<Tensor> {
    let inp = x.dim(1)?;
    let w = w.narrow(0, 0, out)?.narrow(1, 0, inp)?;
    let b = b.narrow(0, 0, out)?;
    ctx.macs += (out * inp) as u64;
    ctx.params += (out * inp + out) as u64;
    Ok(x.matmul(&w.t()?)?.broadcast_add(&b)?)
}

impl Ctx<'_, '_> {
    /// Runs one fused layer, `op(gamma, beta, spec)`, with BN layer `l` on its `c` leading
    /// channels, and books the batch statistics the op measured.
    fn fused(
        &mut self,
        l: &Bn,
        c: usize,
        stride: usize,
        pads: (usize, usize),
        a: Option<Activation>,
        op: impl FnOnce(&Tensor, &Tensor, FusedSpec) -> Result<(Tensor, Option<BatchStats>)>,
    ) -> Result<Tensor> {
        let spec = self.spec(l, c, stride, pads, a)?;
        let (y, stats) = op(&l.gamma.narrow(0, 0, c)?, &l.beta.narrow(0, 0, c)?, spec)?;
        self.after_bn(l, stats, y.elem_count() / c)?;
        Ok(y)
    }

    /// The fused op's options for BN layer `l` on `c` channels: batch statistics when training
    /// or re-calibrating; in evaluation the recalibrated statistics when given, else the
    /// shared running statistics sliced.
    fn spec(
        &mut self,
        l: &Bn,
        c: usize,
        stride: usize,
        pads: (usize, usize),
        a: Option<Activation>,
    ) -> Result<FusedSpec> {
        self.params += 2 * c as u64;
        let norm = match &self.run {
            Run::Eval(stats) => {
                let (m, v) = match stats.and_then(|s| s.stats.get(&l.name)) {
                    Some((m, v)) => (m.clone(), v.clone()),
                    None => (l.mean.narrow(0, 0, c)?, l.var.narrow(0, 0, c)?),
                };
                Norm::Fixed {
                    mean: m.to_vec1()?,
                    var: v.to_vec1()?,
                }
            }
            Run::Calibrate(_) | Run::Train(_) => Norm::Batch,
        };
        Ok(FusedSpec {
            stride,
            pads,
            eps: self.eps,
            act: a.map(Into::into),
            norm,
        })
    }

    /// Books the batch statistics a fused op measured over `n` values per channel: into the
    /// running statistics (momentum 0.1, unbiased variance) when training with updates, into
    /// the re-calibration sums when re-calibrating.
    fn after_bn(&mut self, l: &Bn, stats: Option<BatchStats>, n: usize) -> Result<()> {
        let Some(st) = stats else {
            return Ok(());
        };
        let c = st.mean.len();
        match &mut self.run {
            Run::Eval(_) => {}
            Run::Calibrate(acc) => {
                let md = Tensor::from_vec(st.mean, c, &Device::Cpu)?;
                let vd = Tensor::from_vec(st.var, c, &Device::Cpu)?;
                let sum = match acc.remove(&l.name) {
                    Some((m, v)) => ((m + &md)?, (v + &vd)?),
                    None => (md, vd),
                };
                acc.insert(l.name.clone(), sum);
            }
            Run::Train(o) => {
                if o.update_bn_stats {
                    let unbias = n as f64 / (n as f64 - 1.0).max(1.0);
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
            }
        }
        Ok(())
    }
}

//! SGD with momentum, Nesterov and decoupled-from-BN weight decay over [`Param`]s.
//!
//! On the CPU a step with momentum is two in-place passes per parameter (the momentum buffer,
//! then the weights) instead of about eight candle elementwise ops, each allocating its
//! output. The arithmetic is the ops' own, in their order (candle computes `x * a` as
//! `x * a + 0.0`), so both paths give the same bits: test
//! `fused_update_gives_the_ops_bits`. Other devices, a first step (no buffer yet) and
//! `momentum = 0` take the ops.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::supernet::Param;

/// SGD hyper-parameters (PyTorch semantics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 for none).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, applied only to params with `decay == true`.
    pub weight_decay: f64,
}

/// Stochastic gradient descent as PyTorch's `torch.optim.SGD` (dampening 0): a parameter with
/// no gradient (a block the subnet did not run) is left untouched, momentum included.
pub struct Sgd {
    params: Vec<Param>,
    bufs: Vec<Option<Tensor>>,
    cfg: SgdConfig,
}

impl Sgd {
    /// An optimiser over `params`.
    pub fn new(params: Vec<Param>, cfg: SgdConfig) -> Self {
        let bufs = vec![None; params.len()];
        Sgd { params, bufs, cfg }
    }

    /// Sets the learning rate (schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// The parameters, in the order of [`Sgd::momentum_buffers`].
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The momentum buffer of each parameter (`None` before its first gradient), for
    /// checkpoints.
    pub fn momentum_buffers(&self) -> &[Option<Tensor>] {
        &self.bufs
    }

    /// Restores momentum buffers saved from [`Sgd::momentum_buffers`] (same order and length;
    /// each buffer shaped like its parameter).
    pub fn set_momentum_buffers(&mut self, bufs: Vec<Option<Tensor>>) -> Result<()> {
        if bufs.len() != self.params.len() {
            return Err(crate::error::NnError::Input(format!(
                "{} momentum buffers for {} parameters",
                bufs.len(),
                self.params.len()
            )));
        }
        for (p, b) in self.params.iter().zip(&bufs) {
            if let Some(b) = b
                && b.dims() != p.var.as_tensor().dims()
            {
                return Err(crate::error::NnError::Weights {
                    name: p.name.clone(),
                    msg: format!(
                        "momentum shape {:?}, parameter shape {:?}",
                        b.dims(),
                        p.var.as_tensor().dims()
                    ),
                });
            }
        }
        // on the parameters' device (a checkpoint is read on the host)
        self.bufs = bufs
            .into_iter()
            .zip(&self.params)
            .map(|(b, p)| b.map(|b| b.to_device(p.var.device())).transpose())
            .collect::<candle_core::Result<_>>()?;
        Ok(())
    }

    /// One update from `grads`.
    ///
    /// The arithmetic runs on detached tensors: `w * weight_decay` on the variable itself
    /// would record an op, the momentum buffer built from it would record one on the previous
    /// buffer, and every iteration's buffers would stay alive through that chain (about 4x
    /// the parameters' size per iteration: 60 MB per iteration of the Lite0 space).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.cfg;
        for (p, buf) in self.params.iter().zip(self.bufs.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let decay = p.decay && c.weight_decay != 0.0;
            let w = p.var.as_tensor();
            match buf {
                Some(b) if c.momentum != 0.0 && fusable(&[w, g, b]) => {
                    let op = Update { cfg: c, decay };
                    b.inplace_op3(w, g, &Momentum(op))?;
                    w.inplace_op3(g, b, &op)?;
                }
                _ => step_ops(p, g, buf, decay, c)?,
            }
        }
        Ok(())
    }

    /// One update from `loss.backward()`, run on a rayon worker (see
    /// [`crate::runtime::on_worker`]).
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        crate::runtime::on_worker(|| {
            let grads = loss.backward()?;
            self.step(&grads)
        })
    }
}

/// One parameter's update with candle ops: `g += wd * w`; `b = m * b + g` (`b = g` at first);
/// `g += m * b` (Nesterov) or `g = b`; `w -= lr * g`.
fn step_ops(
    p: &Param,
    g: &Tensor,
    buf: &mut Option<Tensor>,
    decay: bool,
    c: SgdConfig,
) -> Result<()> {
    let w = p.var.as_tensor().detach();
    let mut g = g.detach();
    if decay {
        g = (g + (&w * c.weight_decay)?)?;
    }
    if c.momentum != 0.0 {
        let b = match buf.take() {
            Some(b) => ((b * c.momentum)? + &g)?,
            // a copy: the fused path updates the buffer in place, and `g` is the caller's
            None => g.copy()?,
        };
        g = if c.nesterov {
            (g + (&b * c.momentum)?)?
        } else {
            b.clone()
        };
        *buf = Some(b);
    }
    p.var.set(&(&w - (g * c.lr)?)?)?;
    Ok(())
}

/// Whether the fused update applies: contiguous f32 tensors on the CPU.
fn fusable(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && t.is_contiguous())
}

/// Elements per rayon task of the fused update (fixed: the result does not depend on it).
const CHUNK: usize = 1 << 14;

/// The contiguous f32 data of an in-place op's destination and its two sources, all of one
/// length.
fn operands<'a>(
    (s1, l1): (&'a mut CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> candle_core::Result<(&'a mut [f32], &'a [f32], &'a [f32])> {
    let range = |l: &Layout| match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => candle_core::bail!("sgd: tensors must be contiguous"),
    };
    let (r1, r2, r3) = (range(l1)?, range(l2)?, range(l3)?);
    let dst = match s1 {
        CpuStorage::F32(v) => &mut v[r1],
        _ => candle_core::bail!("sgd: f32 tensors only"),
    };
    let (a, b) = (&s2.as_slice::<f32>()?[r2], &s3.as_slice::<f32>()?[r3]);
    if dst.len() != a.len() || dst.len() != b.len() {
        candle_core::bail!(
            "sgd: operands of {}, {} and {} elements",
            dst.len(),
            a.len(),
            b.len()
        )
    }
    Ok((dst, a, b))
}

/// The weight update, in place on the weights `w` from the gradient `g` and the momentum
/// buffer `b` already updated by [`Momentum`]: `w -= lr * (gd + m * b)` (Nesterov) or
/// `w -= lr * b`, with `gd = g + wd * w` where the parameter decays.
#[derive(Clone, Copy)]
struct Update {
    cfg: SgdConfig,
    decay: bool,
}

impl Update {
    /// The weight decay factor where the parameter decays.
    fn wd(&self) -> Option<f32> {
        self.decay.then_some(self.cfg.weight_decay as f32)
    }
}

// The two loops below spell each case out, so every copy is branch-free and vectorises.
// `g + (w * wd + 0.0)` is candle's affine `w * wd`, then its add.

/// `b = (b * m + 0.0) + gd` over one chunk.
fn momentum_chunk(b: &mut [f32], w: &[f32], g: &[f32], m: f32, wd: Option<f32>) {
    let it = b.iter_mut().zip(w).zip(g);
    match wd {
        Some(wd) => it.for_each(|((b, &w), &g)| *b = (*b * m + 0.0) + (g + (w * wd + 0.0))),
        None => it.for_each(|((b, _), &g)| *b = (*b * m + 0.0) + g),
    }
}

/// `w -= step * lr + 0.0` over one chunk, `step = gd + (b * m + 0.0)` (Nesterov) or `b`.
fn update_chunk(
    w: &mut [f32],
    g: &[f32],
    b: &[f32],
    m: f32,
    lr: f32,
    wd: Option<f32>,
    nesterov: bool,
) {
    let it = w.iter_mut().zip(g).zip(b);
    match (nesterov, wd) {
        (true, Some(wd)) => {
            it.for_each(|((w, &g), &b)| *w -= ((g + (*w * wd + 0.0)) + (b * m + 0.0)) * lr + 0.0)
        }
        (true, None) => it.for_each(|((w, &g), &b)| *w -= (g + (b * m + 0.0)) * lr + 0.0),
        (false, _) => it.for_each(|((w, _), &b)| *w -= b * lr + 0.0),
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "tofa-sgd-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (w, g, b) = operands((s1, l1), (s2, l2), (s3, l3))?;
        let (m, lr) = (self.cfg.momentum as f32, self.cfg.lr as f32);
        w.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((w, g), b)| update_chunk(w, g, b, m, lr, self.wd(), self.cfg.nesterov));
        Ok(())
    }
}

/// The momentum update, in place on the buffer `b` from the weights `w` (before their update)
/// and the gradient `g`: `b = m * b + gd`.
struct Momentum(Update);

impl InplaceOp3 for Momentum {
    fn name(&self) -> &'static str {
        "tofa-sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (b, w, g) = operands((s1, l1), (s2, l2), (s3, l3))?;
        let m = self.0.cfg.momentum as f32;
        b.par_chunks_mut(CHUNK)
            .zip(w.par_chunks(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((b, w), g)| momentum_chunk(b, w, g, m, self.0.wd()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// `w0 = [1, 1]` with `loss = sum(w * x)`, `x = [1, 2]`, under SGD with lr 0.1, momentum
    /// 0.9, Nesterov and weight decay 0.1.
    fn one_param() -> (Var, Tensor, Sgd) {
        let var = Var::new(&[1f32, 1.0], &Device::Cpu).unwrap();
        let x = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let p = Param {
            name: "w".into(),
            var: var.clone(),
            decay: true,
        };
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.1,
        };
        (var, x, Sgd::new(vec![p], cfg))
    }

    #[test]
    fn matches_pytorch_sgd_by_hand() {
        // loss = sum(w * x), grad = x = [1, 2]; w0 = [1, 1], lr 0.1, momentum 0.9, wd 0.1, nesterov.
        // step 1: g = x + 0.1 w = [1.1, 2.1]; buf = g; g' = g + 0.9 buf = [2.09, 3.99];
        //         w = [1 - 0.209, 1 - 0.399] = [0.791, 0.601]
        // step 2: g = [1 + 0.0791, 2 + 0.0601] = [1.0791, 2.0601];
        //         buf = 0.9 [1.1, 2.1] + g = [2.0691, 3.9501]; g' = g + 0.9 buf = [2.94129, 5.61519];
        //         w = [0.791 - 0.294129, 0.601 - 0.561519] = [0.496871, 0.039481]
        let (var, x, mut sgd) = one_param();
        for _ in 0..2 {
            sgd.backward_step(&(var.as_tensor() * &x).unwrap().sum_all().unwrap())
                .unwrap();
        }
        let w: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (w[0] - 0.496871).abs() < 1e-5 && (w[1] - 0.039481).abs() < 1e-5,
            "{w:?}"
        );
    }

    /// The fused in-place update against the candle ops it replaces, bit for bit, over
    /// several steps, with and without decay and Nesterov, on values that test the rounding
    /// and the sign of zero.
    #[test]
    fn fused_update_gives_the_ops_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 3 * CHUNK + 17; // several rayon tasks and a ragged end
        let special = [0.0f32, -0.0, 1e-30, -1e-30, 3.0e38, f32::MIN_POSITIVE];
        let data = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            (0..n)
                .map(|i| match i % 97 {
                    k if k < special.len() => special[k],
                    _ => rng.random_range(-2.0f32..2.0),
                })
                .collect()
        };
        for (decay, nesterov) in [(true, true), (false, true), (true, false), (false, false)] {
            let w0 = data(&mut rng);
            let grads: Vec<Vec<f32>> = (0..3).map(|_| data(&mut rng)).collect();
            let cfg = SgdConfig {
                lr: 0.0123,
                momentum: 0.9,
                nesterov,
                weight_decay: 4e-5,
            };
            let run = |fused: bool| -> (Vec<u32>, Vec<u32>) {
                let var = Var::new(w0.as_slice(), &Device::Cpu).unwrap();
                let p = Param {
                    name: "w".into(),
                    var: var.clone(),
                    decay,
                };
                let mut sgd = Sgd::new(vec![p.clone()], cfg);
                for g in &grads {
                    let g = Tensor::new(g.as_slice(), &Device::Cpu).unwrap();
                    if fused {
                        if let Some(b) = &sgd.bufs[0] {
                            // the steps after the first take the fused path
                            assert!(fusable(&[var.as_tensor(), &g, b]));
                        }
                        let mut store = var.as_tensor().zeros_like().unwrap().backward().unwrap();
                        store.insert(var.as_tensor(), g);
                        sgd.step(&store).unwrap();
                    } else {
                        step_ops(&p, &g, &mut sgd.bufs[0], decay, cfg).unwrap();
                    }
                }
                let bits = |t: &Tensor| -> Vec<u32> {
                    t.to_vec1::<f32>()
                        .unwrap()
                        .into_iter()
                        .map(f32::to_bits)
                        .collect()
                };
                (bits(var.as_tensor()), bits(sgd.bufs[0].as_ref().unwrap()))
            };
            let (ops, fused) = (run(false), run(true));
            assert!(
                ops == fused,
                "decay {decay}, nesterov {nesterov}: the paths differ"
            );
        }
    }

    /// The momentum buffers are plain tensors: no op links one iteration's buffer to the
    /// previous one's (such a chain kept every buffer alive, memory growing per iteration).
    #[test]
    fn momentum_buffers_hold_no_graph() {
        let (var, x, mut sgd) = one_param();
        for _ in 0..3 {
            sgd.backward_step(&(var.as_tensor() * &x).unwrap().sum_all().unwrap())
                .unwrap();
            let b = sgd.momentum_buffers()[0].as_ref().unwrap();
            assert!(!b.track_op(), "the momentum buffer records an op");
        }
        assert!(var.as_tensor().is_variable());
    }
}

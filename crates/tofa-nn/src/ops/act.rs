//! Activations as fused candle custom ops (one pass forward, one pass backward).
//!
//! Why: candle builds `clamp` from `maximum`/`minimum` against broadcast scalars, and its
//! backward from comparisons, masks and selects: ~120 ms forward + backward for a
//! `[32, 96, 32, 32]` ReLU6 and ~170 ms for h-swish on 2 threads, against ~2 ms here.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::space::Activation;

/// The functions we fuse: the stage activations and SE's hard sigmoid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fn1 {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x * relu6(x + 3) / 6`.
    Hswish,
    /// `relu6(x + 3) / 6`.
    Hsigmoid,
}

impl From<Activation> for Fn1 {
    fn from(a: Activation) -> Self {
        match a {
            Activation::Relu => Fn1::Relu,
            Activation::Relu6 => Fn1::Relu6,
            Activation::Hswish => Fn1::Hswish,
        }
    }
}

impl Fn1 {
    #[inline]
    pub(crate) fn f(self, x: f32) -> f32 {
        match self {
            Fn1::Relu => x.max(0.0),
            Fn1::Relu6 => x.clamp(0.0, 6.0),
            Fn1::Hswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Fn1::Hsigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    /// Derivative (PyTorch's choice at the kinks: 0 at relu's 0, 0 at relu6's ends).
    #[inline]
    pub(crate) fn df(self, x: f32) -> f32 {
        match self {
            Fn1::Relu => (x > 0.0) as u8 as f32,
            // `&` rather than `&&` and selects rather than branches: the loops that call these
            // vectorise
            Fn1::Relu6 => ((x > 0.0) & (x < 6.0)) as u8 as f32,
            Fn1::Hswish => {
                let mid = (2.0 * x + 3.0) / 6.0;
                let hi = if x > 3.0 { 1.0 } else { mid };
                if x < -3.0 { 0.0 } else { hi }
            }
            Fn1::Hsigmoid => ((x > -3.0) & (x < 3.0)) as u8 as f32 / 6.0,
        }
    }
}

const CHUNK: usize = 1 << 14;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("activation: input must be contiguous"),
    }
}

struct ActOp(Fn1);
struct ActGrad(Fn1);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "tofa-act"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut out = vec![0f32; x.len()];
        let f = self.0;
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| {
                for (o, x) in o.iter_mut().zip(x) {
                    *o = f.f(*x);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &ActGrad(self.0))?,
        ))
    }
}

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "tofa-act-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1)?;
        let g = slice(s2, l2)?;
        let mut out = vec![0f32; x.len()];
        let f = self.0;
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (x, g))| {
                for ((o, x), g) in o.iter_mut().zip(x).zip(g) {
                    *o = g * f.df(*x);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Applies `f` elementwise (any shape, f32), with its gradient.
pub fn apply(x: &Tensor, f: Fn1) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(ActOp(f))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_ops_and_derivatives() {
        let v: Vec<f32> = (0..64).map(|i| -8.0 + i as f32 * 0.25 + 0.01).collect();
        let x = Var::from_tensor(&Tensor::from_vec(v, (4, 16), &Device::Cpu).unwrap()).unwrap();
        let t = x.as_tensor();
        let refs: [(Fn1, Tensor); 4] = [
            (Fn1::Relu, t.relu().unwrap()),
            (Fn1::Relu6, t.clamp(0f32, 6f32).unwrap()),
            (
                Fn1::Hswish,
                (t * ((t + 3.0).unwrap().clamp(0f32, 6f32).unwrap() / 6.0).unwrap()).unwrap(),
            ),
            (
                Fn1::Hsigmoid,
                ((t + 3.0).unwrap().clamp(0f32, 6f32).unwrap() / 6.0).unwrap(),
            ),
        ];
        for (f, want) in refs {
            let ours = apply(t, f).unwrap();
            let d = (&ours - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-6, "{f:?}: {d}");
            // derivative against central differences (no sample sits on a kink)
            let g = apply(&x, f).unwrap().sum_all().unwrap().backward().unwrap();
            let g: Vec<f32> = g.get(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let xs: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            for (xv, gv) in xs.iter().zip(&g) {
                let fd = (f.f(xv + 1e-3) - f.f(xv - 1e-3)) / 2e-3;
                assert!((fd - gv).abs() < 1e-2, "{f:?} at {xv}: {fd} vs {gv}");
            }
        }
    }
}

//! Squeeze-excitation and pooling pieces on NHWC activations: the mean over space and the
//! per-(image, channel) scaling, each with its backward.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, par_write, with_data};
use crate::error::Result;

simd_fn!(
    /// Adds the rows `[C]` of `img` into `acc`.
    fn row_sum(img: &[f32], acc: &mut [f32]) {
        let c = acc.len();
        for row in img.chunks_exact(c) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
);

struct SpatialMean;

impl candle_core::CustomOp1 for SpatialMean {
    fn name(&self) -> &'static str {
        "tofa-spatial-mean"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = l.shape().dims4()?;
        let x = cpu_slice(s, l, "spatial mean input")?;
        let n = (h * w) as f32;
        let mut out = vec![0f32; b * c];
        out.par_chunks_mut(c).enumerate().for_each(|(bi, o)| {
            row_sum(&x[bi * h * w * c..(bi + 1) * h * w * c], o);
            for v in o.iter_mut() {
                *v /= n;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, h, w, c) = arg.dims4()?;
        let n = (h * w) as f32;
        let dx = with_data(grad, "spatial mean gradient", |g| {
            // SAFETY: the rows of `c` cover each chunk of `h * w * c`, and all are written.
            let (dx, _) = unsafe {
                par_write(b * h * w * c, h * w * c, |bi, d| {
                    let gr: Vec<f32> = g[bi * c..(bi + 1) * c].iter().map(|v| v / n).collect();
                    for row in d.chunks_exact_mut(c) {
                        for (o, &v) in row.iter_mut().zip(&gr) {
                            o.write(v);
                        }
                    }
                })
            };
            dx
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Mean over the spatial dims of NHWC activations (global average pooling, SE's squeeze).
///
/// # Shapes
/// - `x`: `[B, H, W, C]`; returns `[B, C]`
pub fn spatial_mean(x: &Tensor) -> Result<Tensor> {
    x.dims4()?;
    Ok(x.contiguous()?.apply_op1(SpatialMean)?)
}

simd_fn!(
    /// `out[p] = x[p] * s` for every row `p` of one image (every element of `out` when
    /// `x` and `out` have the same length, a multiple of `s`'s).
    fn scale_rows(x: &[f32], s: &[f32], out: &mut [MaybeUninit<f32>]) {
        let c = s.len();
        for (xr, or) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
            for ((o, a), b) in or.iter_mut().zip(xr).zip(s) {
                o.write(a * b);
            }
        }
    }
);

simd_fn!(
    /// `acc += sum_p g[p] * x[p]` over the rows of one image.
    fn dot_rows(g: &[f32], x: &[f32], acc: &mut [f32]) {
        let c = acc.len();
        for (gr, xr) in g.chunks_exact(c).zip(x.chunks_exact(c)) {
            for ((a, u), v) in acc.iter_mut().zip(gr).zip(xr) {
                *a += u * v;
            }
        }
    }
);

struct ChannelScale;

impl candle_core::CustomOp2 for ChannelScale {
    fn name(&self) -> &'static str {
        "tofa-channel-scale"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = l1.shape().dims4()?;
        if l2.shape().dims() != [b, c] {
            candle_core::bail!(
                "channel scale: scale {:?} for input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let x = cpu_slice(s1, l1, "channel scale input")?;
        let sc = cpu_slice(s2, l2, "channel scale")?;
        let per = h * w * c;
        // SAFETY: `scale_rows` writes all `per` elements of each chunk (`per = h * w * c`).
        let (out, _) = unsafe {
            par_write(b * per, per, |bi, o| {
                scale_rows(&x[bi * per..(bi + 1) * per], &sc[bi * c..(bi + 1) * c], o)
            })
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, h, w, c) = x.dims4()?;
        let per = h * w * c;
        let sv = with_data(s, "channel scale", |d| d.to_vec())?;
        let (dx, ds) = with_data(grad, "channel scale gradient", |g| {
            with_data(x, "channel scale input", |xd| {
                // SAFETY: as in the forward pass.
                let (dx, _) = unsafe {
                    par_write(b * per, per, |bi, d| {
                        scale_rows(&g[bi * per..(bi + 1) * per], &sv[bi * c..(bi + 1) * c], d)
                    })
                };
                let mut ds = vec![0f32; b * c];
                ds.par_chunks_mut(c).enumerate().for_each(|(bi, a)| {
                    dot_rows(
                        &g[bi * per..(bi + 1) * per],
                        &xd[bi * per..(bi + 1) * per],
                        a,
                    )
                });
                (dx, ds)
            })
        })??;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(ds, s.shape(), s.device())?),
        ))
    }
}

/// Scales every channel of every image: `out[b, y, x, c] = x[b, y, x, c] * s[b, c]` (SE's
/// excitation), with gradients for both.
///
/// # Shapes
/// - `x`: `[B, H, W, C]`, `s`: `[B, C]`; returns `[B, H, W, C]`
pub fn channel_scale(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op2(&s.contiguous()?, ChannelScale)?)
}

//! Depthwise convolution + BN + activation on NHWC activations, vectorised over channels.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::epilogue::{Epilogue, apply_fused};
use super::{BatchStats, FusedSpec, Geom, check_geom, cpu_slice, par_build, with_data};
use crate::error::{NnError, Result};

struct DwOp {
    g: Geom,
    epi: Epilogue,
}

/// `[C, 1, k, k]` -> `[k*k, C]`.
fn taps_major(w: &[f32], c: usize, kk: usize) -> Vec<f32> {
    let mut t = vec![0f32; c * kk];
    for ch in 0..c {
        for j in 0..kk {
            t[j * c + ch] = w[ch * kk + j];
        }
    }
    t
}

simd_fn!(
    /// One output row `[Wo, C]` of a depthwise convolution of one image `[H, W, C]`.
    fn dw_fwd_row(out: &mut [f32], x: &[f32], wt: &[f32], g: Geom, oy: usize) {
        let c = g.cin;
        for ky in 0..g.k {
            let Some(iy) = g.src(oy, ky, g.h) else {
                continue;
            };
            let xrow = &x[iy * g.w * c..(iy + 1) * g.w * c];
            for (ox, o) in out.chunks_exact_mut(c).enumerate() {
                let (k0, k1) = g.taps(ox, g.w);
                for kx in k0..k1 {
                    let ix = ox * g.stride + kx - g.lo;
                    let xr = &xrow[ix * c..(ix + 1) * c];
                    let wr = &wt[(ky * g.k + kx) * c..(ky * g.k + kx + 1) * c];
                    for ((o, a), b) in o.iter_mut().zip(wr).zip(xr) {
                        *o += a * b;
                    }
                }
            }
        }
    }
);

simd_fn!(
    /// Backward of one image: weight-gradient partial `dwt` `[k*k, C]` and, when asked, the
    /// input gradient `dx` `[H, W, C]` of output gradient `gy` `[Ho, Wo, C]`.
    fn dw_bwd_image(
        gy: &[f32],
        x: &[f32],
        wt: &[f32],
        dwt: &mut [f32],
        dx: Option<&mut [f32]>,
        g: Geom,
    ) {
        let c = g.cin;
        let wo = g.wo();
        let mut dx = dx;
        for oy in 0..g.ho() {
            for ky in 0..g.k {
                let Some(iy) = g.src(oy, ky, g.h) else {
                    continue;
                };
                for ox in 0..wo {
                    let gr = &gy[(oy * wo + ox) * c..(oy * wo + ox + 1) * c];
                    let (k0, k1) = g.taps(ox, g.w);
                    for kx in k0..k1 {
                        let ix = ox * g.stride + kx - g.lo;
                        let at = (iy * g.w + ix) * c;
                        let tap = (ky * g.k + kx) * c;
                        let xr = &x[at..at + c];
                        for ((d, a), b) in dwt[tap..tap + c].iter_mut().zip(gr).zip(xr) {
                            *d += a * b;
                        }
                        if let Some(dx) = dx.as_deref_mut() {
                            let wr = &wt[tap..tap + c];
                            for ((d, a), b) in dx[at..at + c].iter_mut().zip(wr).zip(gr) {
                                *d += a * b;
                            }
                        }
                    }
                }
            }
        }
    }
);

impl CustomOp3 for DwOp {
    fn name(&self) -> &'static str {
        "tofa-dwconv-bn-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "depthwise input")?;
        let w = cpu_slice(s2, l2, "depthwise weight")?;
        let gb = cpu_slice(s3, l3, "depthwise BN parameters")?;
        let g = self.g;
        let (c, kk) = (g.cin, g.k * g.k);
        let wt = taps_major(w, c, kk);
        let (ho, wo) = (g.ho(), g.wo());
        let per_image = g.h * g.w * c;
        let (y, _) = par_build(g.b * ho * wo * c, wo * c, |r, out| {
            let (b, oy) = (r / ho, r % ho);
            dw_fwd_row(out, &x[b * per_image..(b + 1) * per_image], &wt, g, oy);
        });
        let out = self.epi.forward(y, gb);
        Ok((CpuStorage::F32(out), Shape::from((g.b, ho, wo, c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gy, dgb) = self.epi.backward("fused depthwise conv", gb, grad)?;
        let g = self.g;
        let (c, kk) = (g.cin, g.k * g.k);
        let wt = with_data(w, "depthwise weight", |d| taps_major(d, c, kk))?;
        let need_dx = x.track_op();
        let (per_in, per_out) = (g.h * g.w * c, g.ho() * g.wo() * c);
        let (dx, dwt) = with_data(x, "depthwise input", |xd| {
            let image = |b: usize, dx: Option<&mut [f32]>| {
                let mut p = vec![0f32; kk * c];
                let gyb = &gy[b * per_out..(b + 1) * per_out];
                let xb = &xd[b * per_in..(b + 1) * per_in];
                dw_bwd_image(gyb, xb, &wt, &mut p, dx, g);
                p
            };
            let (dx, parts): (Vec<f32>, Vec<Vec<f32>>) = if need_dx {
                par_build(g.b * per_in, per_in, |b, d| image(b, Some(d)))
            } else {
                (
                    vec![],
                    (0..g.b).into_par_iter().map(|b| image(b, None)).collect(),
                )
            };
            // per-image partials summed in image order: deterministic
            let mut dwt = vec![0f32; kk * c];
            for p in &parts {
                for (a, b) in dwt.iter_mut().zip(p) {
                    *a += b;
                }
            }
            (need_dx.then_some(dx), dwt)
        })?;
        // [k*k, C] -> [C, 1, k, k]
        let mut dw = vec![0f32; c * kk];
        for j in 0..kk {
            for ch in 0..c {
                dw[ch * kk + j] = dwt[j * c + ch];
            }
        }
        Ok((
            dx.map(|d| Tensor::from_vec(d, x.shape(), x.device()))
                .transpose()?,
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(dgb, gb.shape(), gb.device())?),
        ))
    }
}

/// Depthwise convolution + batch norm + activation on NHWC activations.
///
/// Returns the output and, with [`Norm::Batch`](super::Norm::Batch), the batch statistics of the convolution's
/// output.
///
/// # Shapes
/// - `x`: `[B, H, W, C]`
/// - `w`: `[C, 1, k, k]` (any layout; copied contiguous, it is small)
/// - `gamma`, `beta`: `[C]`
/// - returns `[B, Ho, Wo, C]` with `Ho = (H + lo + hi - k) / stride + 1`
pub fn dw_bn_act(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    spec: FusedSpec,
) -> Result<(Tensor, Option<BatchStats>)> {
    let (b, h, wd, c) = x.dims4()?;
    let (wc, one, k, k2) = w.dims4()?;
    if wc != c || one != 1 || k != k2 || gamma.dims() != [c] || beta.dims() != [c] {
        return Err(NnError::Input(format!(
            "fused depthwise conv: weight {:?}, BN {:?}/{:?} do not fit input {:?}",
            w.dims(),
            gamma.dims(),
            beta.dims(),
            x.dims()
        )));
    }
    let g = check_geom("fused depthwise conv", (b, c, h, wd), k, &spec)?;
    apply_fused(x, &w.contiguous()?, gamma, beta, spec, |epi| DwOp {
        g,
        epi,
    })
}

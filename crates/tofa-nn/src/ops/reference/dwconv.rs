//! Depthwise convolution as a candle custom op, with input and weight gradients.
//!
//! Why our own kernel: candle lowers `conv2d(groups = C)` to `C` separate convolutions (one
//! im2col + GEMM per channel, each a `1 x k*k` by `k*k x HW` product), which is dominated by
//! per-group overhead and copies, and its backward pass does the same through transposed
//! convolutions. A depthwise conv is `k*k` multiply-adds per output: a direct loop over each
//! `(batch, channel)` plane, parallel over planes with rayon, is both simpler and far faster.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{NnError, Result};

/// Geometry of one depthwise convolution: square kernel, stride, symmetric zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geom {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Output positions `[lo, hi)` whose input `o * stride + tap - pad` lies in `[0, len)`.
    fn valid(&self, tap: usize, len: usize, out: usize) -> (usize, usize) {
        let lo = if tap >= self.pad {
            0
        } else {
            (self.pad - tap).div_ceil(self.stride)
        };
        let hi = if len + self.pad > tap {
            ((len - 1 + self.pad - tap) / self.stride + 1).min(out)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// Calls `f(ky, kx, rows, cols)` for every kernel tap with the output rows and columns
    /// that tap reaches without padding: the inner loops then run branch-free over contiguous
    /// rows, which the compiler vectorises for stride 1.
    fn for_taps(&self, mut f: impl FnMut(usize, usize, (usize, usize), (usize, usize))) {
        for ky in 0..self.k {
            let rows = self.valid(ky, self.h, self.ho());
            for kx in 0..self.k {
                f(ky, kx, rows, self.valid(kx, self.w, self.wo()));
            }
        }
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("depthwise conv: {what} must be contiguous"),
    }
}

/// Forward: `(x [B,C,H,W], w [C,1,k,k]) -> [B,C,Ho,Wo]`.
struct DwFwd {
    stride: usize,
    pad: usize,
}

/// Input gradient: `(grad_out [B,C,Ho,Wo], w) -> [B,C,H,W]`.
struct DwGradInput {
    g: Geom,
}

/// Weight gradient: `(x, grad_out) -> [C,1,k,k]`.
struct DwGradWeight {
    g: Geom,
}

fn geom(lx: &Layout, lw: &Layout, stride: usize, pad: usize) -> candle_core::Result<Geom> {
    let (b, c, h, w) = lx.shape().dims4()?;
    let (cw, one, k, k2) = lw.shape().dims4()?;
    if cw != c || one != 1 || k != k2 {
        candle_core::bail!(
            "depthwise conv: weight {:?} does not fit input {:?}",
            lw.shape(),
            lx.shape()
        );
    }
    if h + 2 * pad < k || w + 2 * pad < k {
        candle_core::bail!("depthwise conv: input {h}x{w} smaller than kernel {k}");
    }
    Ok(Geom {
        b,
        c,
        h,
        w,
        k,
        stride,
        pad,
    })
}

impl CustomOp2 for DwFwd {
    fn name(&self) -> &'static str {
        "tofa-dwconv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom(l1, l2, self.stride, self.pad)?;
        let x = slice(s1, l1, "input")?;
        let wt = slice(s2, l2, "weight")?;
        let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
        let mut out = vec![0f32; g.b * g.c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(plane, o)| {
                let c = plane % g.c;
                let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
                let kw = &wt[c * kk..(c + 1) * kk];
                g.for_taps(|ky, kx, (oy0, oy1), (ox0, ox1)| {
                    let wv = kw[ky * g.k + kx];
                    for oy in oy0..oy1 {
                        let iy = oy * g.stride + ky - g.pad;
                        let orow = &mut o[oy * wo + ox0..oy * wo + ox1];
                        let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                        if g.stride == 1 {
                            let ix0 = ox0 + kx - g.pad;
                            for (ov, xv) in orow.iter_mut().zip(&xrow[ix0..ix0 + (ox1 - ox0)]) {
                                *ov += wv * xv;
                            }
                        } else {
                            for (i, ov) in orow.iter_mut().enumerate() {
                                *ov += wv * xrow[(ox0 + i) * g.stride + kx - g.pad];
                            }
                        }
                    }
                });
            });
        Ok((CpuStorage::F32(out), Shape::from((g.b, g.c, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = geom(x.layout(), w.layout(), self.stride, self.pad)?;
        let grad = grad.contiguous()?;
        let gx = grad.apply_op2_no_bwd(w, &DwGradInput { g })?;
        let gw = x.apply_op2_no_bwd(&grad, &DwGradWeight { g })?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp2 for DwGradInput {
    fn name(&self) -> &'static str {
        "tofa-dwconv-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.g;
        let go = slice(s1, l1, "output gradient")?;
        let wt = slice(s2, l2, "weight")?;
        let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
        let mut gx = vec![0f32; g.b * g.c * g.h * g.w];
        gx.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(plane, gi)| {
                let c = plane % g.c;
                let gp = &go[plane * ho * wo..(plane + 1) * ho * wo];
                let kw = &wt[c * kk..(c + 1) * kk];
                g.for_taps(|ky, kx, (oy0, oy1), (ox0, ox1)| {
                    let wv = kw[ky * g.k + kx];
                    for oy in oy0..oy1 {
                        let iy = oy * g.stride + ky - g.pad;
                        let grow = &gp[oy * wo + ox0..oy * wo + ox1];
                        let irow = &mut gi[iy * g.w..(iy + 1) * g.w];
                        if g.stride == 1 {
                            let ix0 = ox0 + kx - g.pad;
                            for (iv, gv) in irow[ix0..ix0 + (ox1 - ox0)].iter_mut().zip(grow) {
                                *iv += wv * gv;
                            }
                        } else {
                            for (i, gv) in grow.iter().enumerate() {
                                irow[(ox0 + i) * g.stride + kx - g.pad] += wv * gv;
                            }
                        }
                    }
                });
            });
        Ok((CpuStorage::F32(gx), Shape::from((g.b, g.c, g.h, g.w))))
    }
}

impl CustomOp2 for DwGradWeight {
    fn name(&self) -> &'static str {
        "tofa-dwconv-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.g;
        let x = slice(s1, l1, "input")?;
        let go = slice(s2, l2, "output gradient")?;
        let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
        let mut gw = vec![0f32; g.c * kk];
        gw.par_chunks_mut(kk).enumerate().for_each(|(c, gk)| {
            for b in 0..g.b {
                let plane = b * g.c + c;
                let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
                let gp = &go[plane * ho * wo..(plane + 1) * ho * wo];
                g.for_taps(|ky, kx, (oy0, oy1), (ox0, ox1)| {
                    let mut acc = 0f32;
                    for oy in oy0..oy1 {
                        let iy = oy * g.stride + ky - g.pad;
                        let grow = &gp[oy * wo + ox0..oy * wo + ox1];
                        let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                        if g.stride == 1 {
                            let ix0 = ox0 + kx - g.pad;
                            let xs = &xrow[ix0..ix0 + (ox1 - ox0)];
                            acc += grow.iter().zip(xs).map(|(a, b)| a * b).sum::<f32>();
                        } else {
                            for (i, gv) in grow.iter().enumerate() {
                                acc += gv * xrow[(ox0 + i) * g.stride + kx - g.pad];
                            }
                        }
                    }
                    gk[ky * g.k + kx] += acc;
                });
            }
        });
        Ok((CpuStorage::F32(gw), Shape::from((g.c, 1, g.k, g.k))))
    }
}

/// Depthwise convolution with "same"-style padding `k / 2`.
///
/// # Shapes
/// - `x`: `[B, C, H, W]` f32
/// - `w`: `[C, 1, k, k]` f32, `k` odd
/// - returns `[B, C, (H - 1) / stride + 1, (W - 1) / stride + 1]`
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let k = w.dim(3)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, DwFwd { stride, pad: k / 2 })?)
}

/// Depthwise convolution with zero padding `lo` before and `hi >= lo` after the rows and the
/// columns (TensorFlow `SAME` padding, see [`crate::space::Padding`]): the input is padded by
/// `hi - lo` at the end, then convolved with symmetric padding `lo`.
///
/// # Shapes
/// - `x`: `[B, C, H, W]` f32
/// - `w`: `[C, 1, k, k]` f32
/// - returns `[B, C, (H + lo + hi - k) / stride + 1, (W + lo + hi - k) / stride + 1]`
pub fn depthwise_conv2d_padded(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    (lo, hi): (usize, usize),
) -> Result<Tensor> {
    if hi < lo {
        return Err(NnError::Input(format!(
            "padding ({lo}, {hi}): the end must be at least the start"
        )));
    }
    let x = if hi > lo {
        x.pad_with_zeros(2, 0, hi - lo)?
            .pad_with_zeros(3, 0, hi - lo)?
    } else {
        x.contiguous()?
    };
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, DwFwd { stride, pad: lo })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{max_diff, uniform};
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rand_t(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
        uniform(shape, 1.0, rng)
    }

    #[test]
    fn matches_candle_grouped_conv() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (k, stride, h) in [
            (3, 1, 7),
            (3, 2, 8),
            (5, 1, 6),
            (5, 2, 9),
            (3, 2, 1),
            (5, 2, 2),
            (3, 1, 1),
            (7, 1, 4),
        ] {
            let x = rand_t(&[2, 3, h, h], &mut rng);
            let w = rand_t(&[3, 1, k, k], &mut rng);
            let ours = depthwise_conv2d(&x, &w, stride).unwrap();
            let want = x.conv2d(&w, k / 2, stride, 1, 3).unwrap();
            assert_eq!(ours.dims(), want.dims());
            assert!(max_diff(&ours, &want) < 1e-5);
            // gradients against candle's own conv backward
            let xv = Var::from_tensor(&x).unwrap();
            let wv = Var::from_tensor(&w).unwrap();
            let probe = rand_t(want.dims(), &mut rng);
            let g1 = (depthwise_conv2d(&xv, &wv, stride).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (xv.conv2d(&wv, k / 2, stride, 1, 3).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(max_diff(g1.get(&xv).unwrap(), g2.get(&xv).unwrap()) < 1e-4);
            assert!(max_diff(g1.get(&wv).unwrap(), g2.get(&wv).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn asymmetric_padding_matches_prepadded_candle_conv() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (k, stride, h, lo, hi) in [(3, 2, 8, 0, 1), (5, 2, 8, 1, 2), (3, 1, 5, 1, 1)] {
            let x = Var::from_tensor(&rand_t(&[2, 3, h, h], &mut rng)).unwrap();
            let w = rand_t(&[3, 1, k, k], &mut rng);
            let ours = depthwise_conv2d_padded(&x, &w, stride, (lo, hi)).unwrap();
            let xp = x
                .pad_with_zeros(2, lo, hi)
                .unwrap()
                .pad_with_zeros(3, lo, hi)
                .unwrap();
            let want = xp.conv2d(&w, 0, stride, 1, 3).unwrap();
            assert_eq!(ours.dims(), want.dims());
            assert!(max_diff(&ours, &want) < 1e-5);
            let probe = rand_t(want.dims(), &mut rng);
            let g1 = (ours * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (want * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-4);
        }
        assert!(
            depthwise_conv2d_padded(
                &rand_t(&[1, 3, 4, 4], &mut rng),
                &rand_t(&[3, 1, 3, 3], &mut rng),
                1,
                (1, 0)
            )
            .is_err()
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = rand_t(&[1, 2, 5, 5], &mut rng)
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let w = rand_t(&[2, 1, 3, 3], &mut rng);
        let probe = rand_t(&[1, 2, 3, 3], &mut rng);
        let loss = |x: &Tensor, w: &Tensor| -> f64 {
            let y = depthwise_conv2d(x, w, 2).unwrap();
            (y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let xv = Var::from_tensor(&x).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let grads = (depthwise_conv2d(&xv, &wv, 2).unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let eps = 1e-2f32;
        for (t, var) in [(&x, &xv), (&w, &wv)] {
            let g: Vec<f32> = grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..base.len() {
                let mut p = base.clone();
                p[i] += eps;
                let mut m = base.clone();
                m[i] -= eps;
                let tp = Tensor::from_vec(p, t.dims(), &Device::Cpu).unwrap();
                let tm = Tensor::from_vec(m, t.dims(), &Device::Cpu).unwrap();
                let (lp, lm) = if std::ptr::eq(t, &x) {
                    (loss(&tp, &w), loss(&tm, &w))
                } else {
                    (loss(&x, &tp), loss(&x, &tm))
                };
                let fd = (lp - lm) / (2.0 * eps as f64);
                assert!(
                    (fd - g[i] as f64).abs() < 1e-3,
                    "index {i}: fd {fd} vs {}",
                    g[i]
                );
            }
        }
    }
}

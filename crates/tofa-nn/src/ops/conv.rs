//! Full convolution (groups 1) + BN + activation: 1x1 as one GEMM over all `B*H*W` pixels,
//! k x k (the stem) through im2col.

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};

use super::epilogue::{Epilogue, apply_fused};
use super::gemm::{Mat, matmul};
use super::{BatchStats, FusedSpec, Geom, Layout4, check_geom, cpu_slice, par_build, with_data};
use crate::error::{NnError, Result};

struct ConvOp {
    g: Geom,
    input: Layout4,
    cout: usize,
    epi: Epilogue,
}

impl ConvOp {
    /// Whether the input is already the `[rows, cin]` column matrix (1x1, stride 1, NHWC).
    fn direct(&self) -> bool {
        self.g.k == 1
            && self.g.stride == 1
            && self.g.lo == 0
            && self.g.hi == 0
            && self.input == Layout4::Nhwc
    }

    fn kdim(&self) -> usize {
        self.g.cin * self.g.k * self.g.k
    }

    /// Index of input element `(b, c, y, x)`.
    #[inline(always)]
    fn idx(&self, b: usize, c: usize, y: usize, x: usize) -> usize {
        let g = &self.g;
        match self.input {
            Layout4::Nchw => ((b * g.cin + c) * g.h + y) * g.w + x,
            Layout4::Nhwc => ((b * g.h + y) * g.w + x) * g.cin + c,
        }
    }

    /// `[rows, cin * k * k]`, column `(c * k + ky) * k + kx` (the weight's own order).
    fn im2col(&self, x: &[f32]) -> Vec<f32> {
        let g = self.g;
        let (ho, wo, kd) = (g.ho(), g.wo(), self.kdim());
        let (cols, _) = par_build(g.b * ho * wo * kd, wo * kd, |r, rowblk| {
            let (b, oy) = (r / ho, r % ho);
            for (ox, row) in rowblk.chunks_exact_mut(kd).enumerate() {
                for c in 0..g.cin {
                    for ky in 0..g.k {
                        let Some(iy) = g.src(oy, ky, g.h) else {
                            continue;
                        };
                        for kx in 0..g.k {
                            if let Some(ix) = g.src(ox, kx, g.w) {
                                row[(c * g.k + ky) * g.k + kx] = x[self.idx(b, c, iy, ix)];
                            }
                        }
                    }
                }
            }
        });
        cols
    }

    /// Adds the column gradients back onto the input positions they were gathered from.
    fn col2im(&self, dcols: &[f32]) -> Vec<f32> {
        let g = self.g;
        let (ho, wo, kd) = (g.ho(), g.wo(), self.kdim());
        let per_image = g.cin * g.h * g.w;
        let (dx, _) = par_build(g.b * per_image, per_image, |b, dxb| {
            for oy in 0..ho {
                for ox in 0..wo {
                    let row = &dcols[((b * ho + oy) * wo + ox) * kd..][..kd];
                    for c in 0..g.cin {
                        for ky in 0..g.k {
                            let Some(iy) = g.src(oy, ky, g.h) else {
                                continue;
                            };
                            for kx in 0..g.k {
                                if let Some(ix) = g.src(ox, kx, g.w) {
                                    dxb[self.idx(0, c, iy, ix)] += row[(c * g.k + ky) * g.k + kx];
                                }
                            }
                        }
                    }
                }
            }
        });
        dx
    }

    /// The weight as a `[cout, cin * k * k]` matrix view.
    fn wmat<'a>(&self, data: &'a [f32], l: &Layout) -> candle_core::Result<Mat<'a>> {
        let st = l.stride();
        let k = self.g.k;
        let Some(cs) = weight_col_stride(st, k) else {
            candle_core::bail!("fused conv: the weight's k x k taps must be contiguous")
        };
        Ok(Mat {
            data,
            off: l.start_offset(),
            rs: st[0],
            cs,
        })
    }
}

/// Column stride of a `[cout, cin, k, k]` weight viewed as a `[cout, cin * k * k]` matrix, if
/// its strides `st` allow that view (any view for 1x1; contiguous taps and channels for k x k).
fn weight_col_stride(st: &[usize], k: usize) -> Option<usize> {
    if k == 1 {
        Some(st[1])
    } else {
        (st[1] == k * k && st[2] == k && st[3] == 1).then_some(1)
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "tofa-conv-bn-act"
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
        let x = cpu_slice(s1, l1, "fused conv input")?;
        let w = self.wmat(s2.as_slice::<f32>()?, l2)?;
        let gb = cpu_slice(s3, l3, "fused conv BN parameters")?;
        let g = self.g;
        let (ho, wo, kd) = (g.ho(), g.wo(), self.kdim());
        let rows = g.b * ho * wo;
        let cols: Cow<[f32]> = if self.direct() {
            Cow::Borrowed(x)
        } else {
            Cow::Owned(self.im2col(x))
        };
        let a = Mat {
            data: &cols,
            off: 0,
            rs: kd,
            cs: 1,
        };
        let wt = Mat {
            rs: w.cs,
            cs: w.rs,
            ..w
        };
        let y = matmul(rows, self.cout, kd, a, wt);
        let out = self.epi.forward(y, gb);
        Ok((CpuStorage::F32(out), Shape::from((g.b, ho, wo, self.cout))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gy, dgb) = self.epi.backward("fused conv", gb, grad)?;
        let g = self.g;
        let rows = g.b * g.ho() * g.wo();
        let kd = self.kdim();
        let gyt = Mat {
            data: &gy,
            off: 0,
            rs: 1,
            cs: self.cout,
        };
        // dW = gy^T * cols (the stem's im2col is rebuilt here rather than kept from the forward
        // pass: it is a few MB and cheap to gather, the direct 1x1 case uses `x` itself)
        let dw = with_data(x, "fused conv input", |xd| {
            let cols: Cow<[f32]> = if self.direct() {
                Cow::Borrowed(xd)
            } else {
                Cow::Owned(self.im2col(xd))
            };
            let c = Mat {
                data: &cols,
                off: 0,
                rs: kd,
                cs: 1,
            };
            matmul(self.cout, kd, rows, gyt, c)
        })?;
        // dcols = gy * W
        let dx = if x.track_op() {
            let (st, l) = w.storage_and_layout();
            let Storage::Cpu(ws) = &*st else {
                candle_core::bail!("fused conv: CPU only")
            };
            let wm = self.wmat(ws.as_slice::<f32>()?, l)?;
            let gym = Mat {
                data: &gy,
                off: 0,
                rs: self.cout,
                cs: 1,
            };
            let dcols = matmul(rows, kd, self.cout, gym, wm);
            let dx = if self.direct() {
                dcols
            } else {
                self.col2im(&dcols)
            };
            Some(Tensor::from_vec(dx, x.shape(), x.device())?)
        } else {
            None
        };
        Ok((
            dx,
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(dgb, gb.shape(), gb.device())?),
        ))
    }
}

/// Convolution (groups 1) + batch norm + activation, output NHWC.
///
/// Returns the output and, with [`Norm::Batch`](super::Norm::Batch), the batch statistics of the convolution's
/// output (for running statistics or BN re-calibration).
///
/// # Shapes
/// - `x`: `[B, Cin, H, W]` (`input = Nchw`) or `[B, H, W, Cin]` (`Nhwc`), contiguous or not
/// - `w`: `[Cout, Cin, k, k]`, may be a `narrow`ed view of a larger weight
/// - `gamma`, `beta`: `[Cout]`
/// - returns `[B, Ho, Wo, Cout]` with `Ho = (H + lo + hi - k) / stride + 1`
pub fn conv_bn_act(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    input: Layout4,
    spec: FusedSpec,
) -> Result<(Tensor, Option<BatchStats>)> {
    let (b, cin, h, wd) = match input {
        Layout4::Nchw => x.dims4()?,
        Layout4::Nhwc => {
            let (b, h, w, c) = x.dims4()?;
            (b, c, h, w)
        }
    };
    let (cout, wcin, k, k2) = w.dims4()?;
    if wcin != cin || k != k2 || gamma.dims() != [cout] || beta.dims() != [cout] {
        return Err(NnError::Input(format!(
            "fused conv: weight {:?}, BN {:?}/{:?} do not fit input {:?}",
            w.dims(),
            gamma.dims(),
            beta.dims(),
            x.dims()
        )));
    }
    let g = check_geom("fused conv", (b, cin, h, wd), k, &spec)?;
    let w = match weight_col_stride(w.stride(), k) {
        Some(_) => w.clone(),
        None => w.contiguous()?,
    };
    apply_fused(x, &w, gamma, beta, spec, |epi| ConvOp {
        g,
        input,
        cout,
        epi,
    })
}

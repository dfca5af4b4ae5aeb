//! The batch norm + activation half of every fused op, over a `[rows, c]` matrix: batch
//! statistics, normalisation and activation forward; the two-pass backward.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{CustomOp3, Tensor};
use rayon::prelude::*;

use super::act::Fn1;
use super::{BatchStats, FusedSpec, Norm, par_write, with_data};
use crate::error::Result;

/// Rows per chunk of the per-channel reductions (fixed, so results do not depend on threads).
const ROWS_PER_CHUNK: usize = 64;

simd_fn!(
    /// Column sums and sums of squares of `blk` (rows of `s.len()`).
    fn col_sums(blk: &[f32], s: &mut [f32], s2: &mut [f32]) {
        let c = s.len();
        for row in blk.chunks_exact(c) {
            for ((a, a2), v) in s.iter_mut().zip(s2.iter_mut()).zip(row) {
                *a += v;
                *a2 += v * v;
            }
        }
    }
);

/// Adds per-chunk pairs of column partial sums in chunk order, in f64.
fn sum_parts(parts: &[(Vec<f32>, Vec<f32>)], c: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (vec![0f64; c], vec![0f64; c]);
    for (pa, pb) in parts {
        for i in 0..c {
            a[i] += pa[i] as f64;
            b[i] += pb[i] as f64;
        }
    }
    (a, b)
}

/// Per-channel mean and biased variance of `y` `[rows, c]`.
fn channel_stats(y: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    let parts: Vec<(Vec<f32>, Vec<f32>)> = y
        .par_chunks(ROWS_PER_CHUNK * c)
        .map(|blk| {
            let (mut s, mut s2) = (vec![0f32; c], vec![0f32; c]);
            col_sums(blk, &mut s, &mut s2);
            (s, s2)
        })
        .collect();
    let n = (y.len() / c).max(1) as f64;
    let (mut m, mut v) = sum_parts(&parts, c);
    for i in 0..c {
        m[i] /= n;
        v[i] = (v[i] / n - m[i] * m[i]).max(0.0);
    }
    (m, v)
}

simd_fn!(
    /// `out = act(y * scale + shift)` row by row (every element of `out` when `y` and `out`
    /// have the same length, a multiple of `scale`'s).
    fn scale_shift_act(
        y: &[f32],
        out: &mut [MaybeUninit<f32>],
        scale: &[f32],
        shift: &[f32],
        a: Option<Fn1>,
    ) {
        let c = scale.len();
        with_act!(a, |f, _df| {
            for (yr, or) in y.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
                for (((o, v), sc), sh) in or.iter_mut().zip(yr).zip(scale).zip(shift) {
                    o.write(f(v * sc + sh));
                }
            }
        })
    }
);

simd_fn!(
    /// [`scale_shift_act`] in place, for a forward pass that keeps nothing for a backward.
    fn scale_shift_act_in_place(y: &mut [f32], scale: &[f32], shift: &[f32], a: Option<Fn1>) {
        let c = scale.len();
        with_act!(a, |f, _df| {
            for yr in y.chunks_exact_mut(c) {
                for ((v, sc), sh) in yr.iter_mut().zip(scale).zip(shift) {
                    *v = f(*v * sc + sh);
                }
            }
        })
    }
);

/// What the backward pass of the epilogue needs: the pre-BN output and the per-channel
/// normalisation.
struct Saved {
    y: Vec<f32>,
    mean: Vec<f32>,
    inv: Vec<f32>,
}

/// The per-channel normalisation of `y` `[rows, c]`: what the forward applies and the
/// backward needs.
struct Affine {
    /// `gamma / sqrt(var + eps)` and `beta - mean * scale`: `yhat * gamma + beta` as one FMA.
    scale: Vec<f32>,
    shift: Vec<f32>,
    mean: Vec<f32>,
    /// `1 / sqrt(var + eps)`
    inv: Vec<f32>,
    /// The batch statistics when `norm` is [`Norm::Batch`].
    stats: Option<BatchStats>,
}

fn affine(y: &[f32], gb: &[f32], spec: &FusedSpec) -> Affine {
    let c = gb.len() / 2;
    let (gamma, beta) = gb.split_at(c);
    let (mean, var, stats) = match &spec.norm {
        Norm::Batch => {
            let (m, v) = channel_stats(y, c);
            let st = BatchStats {
                mean: m.iter().map(|&x| x as f32).collect(),
                var: v.iter().map(|&x| x as f32).collect(),
            };
            (m, v, Some(st))
        }
        Norm::Fixed { mean, var } => (
            mean.iter().map(|&x| x as f64).collect(),
            var.iter().map(|&x| x as f64).collect(),
            None,
        ),
    };
    let inv: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (v + spec.eps).sqrt()) as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let scale: Vec<f32> = gamma.iter().zip(&inv).map(|(g, i)| g * i).collect();
    let shift: Vec<f32> = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Affine {
        scale,
        shift,
        mean,
        inv,
        stats,
    }
}

/// Normalises `y` `[rows, c]` per channel with `n` and applies the activation, into a new
/// buffer (`y` is kept for the backward pass).
fn epilogue_fwd(y: &[f32], n: &Affine, act: Option<Fn1>) -> Vec<f32> {
    let step = ROWS_PER_CHUNK * n.scale.len();
    // SAFETY: every chunk is a whole number of rows of `c` and `scale_shift_act` writes them
    // all.
    let (out, _) = unsafe {
        par_write(y.len(), step, |i, o| {
            scale_shift_act(&y[i * step..i * step + o.len()], o, &n.scale, &n.shift, act)
        })
    };
    out
}

simd_fn!(
    /// Pass 1 of the epilogue's backward: `gz = gout * act'(z)` into `gz`, and per channel
    /// `sum gz` and `sum gz * yhat`.
    fn bwd_pass1(
        y: &[f32],
        gout: &[f32],
        gz: &mut [MaybeUninit<f32>],
        mean: &[f32],
        inv: &[f32],
        scale: &[f32],
        shift: &[f32],
        a: Option<Fn1>,
        sg: &mut [f32],
        sgx: &mut [f32],
    ) {
        let c = mean.len();
        let (sg, sgx) = (&mut sg[..c], &mut sgx[..c]);
        let (scale, shift, inv) = (&scale[..c], &shift[..c], &inv[..c]);
        with_act!(a, |_f, df| {
            for ((yr, gr), zr) in y
                .chunks_exact(c)
                .zip(gout.chunks_exact(c))
                .zip(gz.chunks_exact_mut(c))
            {
                for i in 0..c {
                    let v = yr[i];
                    let g = gr[i] * df(v * scale[i] + shift[i]);
                    zr[i].write(g);
                    sg[i] += g;
                    sgx[i] += g * ((v - mean[i]) * inv[i]);
                }
            }
        })
    }
);

simd_fn!(
    /// Pass 2 (batch statistics): `gy = k * (n * gz - sum gz - yhat * sum gz yhat)`, in place.
    fn bwd_pass2(
        y: &[f32],
        gz: &mut [f32],
        mean: &[f32],
        inv: &[f32],
        k: &[f32],
        sg: &[f32],
        sgx: &[f32],
        n: f32,
    ) {
        let c = mean.len();
        for (yr, zr) in y.chunks_exact(c).zip(gz.chunks_exact_mut(c)) {
            for i in 0..c {
                let yhat = (yr[i] - mean[i]) * inv[i];
                zr[i] = k[i] * (n * zr[i] - sg[i] - yhat * sgx[i]);
            }
        }
    }
);

simd_fn!(
    /// Pass 2 (fixed statistics): `gy = gz * gamma * inv`, in place.
    fn bwd_pass2_fixed(gz: &mut [f32], scale: &[f32]) {
        let c = scale.len();
        for zr in gz.chunks_exact_mut(c) {
            for (z, s) in zr.iter_mut().zip(scale) {
                *z *= s;
            }
        }
    }
);

/// Backward of [`epilogue_fwd`]: the gradient of the pre-BN output `y`, and of `[gamma, beta]`.
fn epilogue_bwd(s: &Saved, gb: &[f32], gout: &[f32], spec: &FusedSpec) -> (Vec<f32>, Vec<f32>) {
    let c = gb.len() / 2;
    let (gamma, beta) = gb.split_at(c);
    let scale: Vec<f32> = gamma.iter().zip(&s.inv).map(|(g, i)| g * i).collect();
    let shift: Vec<f32> = beta
        .iter()
        .zip(&s.mean)
        .zip(&scale)
        .map(|((b, m), sc)| b - m * sc)
        .collect();
    let step = ROWS_PER_CHUNK * c;
    // SAFETY: every chunk is a whole number of rows of `c`, and `bwd_pass1` writes them all.
    let (mut gy, parts) = unsafe {
        par_write(s.y.len(), step, |i, gz| {
            let r = i * step..i * step + gz.len();
            let (y, g) = (&s.y[r.clone()], &gout[r]);
            let (mut sg, mut sgx) = (vec![0f32; c], vec![0f32; c]);
            bwd_pass1(
                y, g, gz, &s.mean, &s.inv, &scale, &shift, spec.act, &mut sg, &mut sgx,
            );
            (sg, sgx)
        })
    };
    let (sg, sgx) = sum_parts(&parts, c);
    let sg: Vec<f32> = sg.iter().map(|&v| v as f32).collect();
    let sgx: Vec<f32> = sgx.iter().map(|&v| v as f32).collect();
    match spec.norm {
        Norm::Batch => {
            let n = (s.y.len() / c) as f32;
            let k: Vec<f32> = scale.iter().map(|sc| sc / n).collect();
            gy.par_chunks_mut(ROWS_PER_CHUNK * c)
                .zip(s.y.par_chunks(ROWS_PER_CHUNK * c))
                .for_each(|(gz, y)| bwd_pass2(y, gz, &s.mean, &s.inv, &k, &sg, &sgx, n));
        }
        Norm::Fixed { .. } => gy
            .par_chunks_mut(ROWS_PER_CHUNK * c)
            .for_each(|gz| bwd_pass2_fixed(gz, &scale)),
    }
    let mut dgb = sgx;
    dgb.extend_from_slice(&sg);
    (gy, dgb)
}

/// The BN + activation half of a fused op: its options, what the backward pass needs, and the
/// batch statistics it reports to the caller.
pub(super) struct Epilogue {
    spec: FusedSpec,
    /// Whether a backward pass can follow (an input of the op tracks a gradient): the forward
    /// then keeps the convolution output, else it normalises in place and keeps nothing.
    keep: bool,
    saved: Mutex<Option<Saved>>,
    stats: Arc<Mutex<Option<BatchStats>>>,
}

impl Epilogue {
    /// Normalises and activates the convolution output `y`: into a new buffer, keeping `y`
    /// for the backward pass, when one can follow (`keep`), else in place.
    pub(super) fn forward(&self, mut y: Vec<f32>, gb: &[f32]) -> Vec<f32> {
        let mut n = affine(&y, gb, &self.spec);
        *self.stats.lock().expect("stats lock") = n.stats.take();
        if !self.keep {
            let (sc, sh) = (&n.scale, &n.shift);
            y.par_chunks_mut(ROWS_PER_CHUNK * sc.len())
                .for_each(|blk| scale_shift_act_in_place(blk, sc, sh, self.spec.act));
            return y;
        }
        let out = epilogue_fwd(&y, &n, self.spec.act);
        *self.saved.lock().expect("saved lock") = Some(Saved {
            y,
            mean: n.mean,
            inv: n.inv,
        });
        out
    }

    /// The gradient of the convolution output and of `[gamma, beta]`.
    pub(super) fn backward(
        &self,
        op: &str,
        gb: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let saved = self.saved.lock().expect("saved lock");
        let Some(s) = saved.as_ref() else {
            candle_core::bail!("{op}: backward without a forward pass")
        };
        let gbv = with_data(gb, "BN parameters", |d| d.to_vec())?;
        with_data(grad, "output gradient", |g| {
            epilogue_bwd(s, &gbv, g, &self.spec)
        })
    }
}

/// Runs a fused op built by `make` on `(x, w, [gamma, beta])` and returns its output and the
/// batch statistics it measured.
pub(super) fn apply_fused<Op: CustomOp3 + Send + Sync + 'static>(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    spec: FusedSpec,
    make: impl FnOnce(Epilogue) -> Op,
) -> Result<(Tensor, Option<BatchStats>)> {
    let gb = Tensor::cat(&[gamma, beta], 0)?;
    let stats = Arc::new(Mutex::new(None));
    let op = make(Epilogue {
        spec,
        keep: x.track_op() || w.track_op() || gb.track_op(),
        saved: Mutex::new(None),
        stats: stats.clone(),
    });
    let y = x.contiguous()?.apply_op3(w, &gb, op)?;
    let s = stats.lock().expect("stats lock").take();
    Ok((y, s))
}

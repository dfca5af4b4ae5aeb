//! Channels-last (NHWC) fused training ops: convolution + batch norm + activation, and
//! depthwise convolution + batch norm + activation, each one candle custom op with its own
//! backward pass.
//!
//! Why: composed from candle ops in NCHW, one MBConv block is ~15 graph nodes, and candle's
//! backward pays for every node (a zero-filled gradient buffer and an add per node), while a
//! 1x1 convolution in NCHW is one small GEMM per image (32 per batch, some of them 16 pixels
//! wide) whose weight gradient candle builds as a `[B, out, in]` tensor and then sums. In NHWC
//! a 1x1 convolution is one GEMM over all `B*H*W` pixels (the `gemm` crate, which candle uses
//! internally), batch statistics are column sums over contiguous rows, and a depthwise kernel
//! vectorises over channels. Fusing BN and the activation into the convolution means one graph
//! node per layer, one pass over the output for the statistics and one for the normalisation;
//! the backward pass recomputes the normalised values from the saved convolution output.
//!
//! Every reduction runs over fixed-size chunks whose partial sums are added in order, so the
//! results do not depend on how rayon schedules work: the same inputs give the same bits.
//!
//! The inner loops are compiled twice, plain and with AVX2 + FMA enabled, and picked at run
//! time ([`simd_fn`]): the crate is built for baseline x86-64 and still uses 8-wide vectors.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::act::Fn1;
use crate::error::{NnError, Result};

/// Defines `fn $name(args)` whose body is compiled twice, for baseline x86-64 and with
/// AVX2 + FMA, and dispatches at run time. The body must not call `mul_add` (without FMA it is
/// a libm call); plain `a * b + c` keeps both versions bit-identical.
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Rows per chunk of the per-channel reductions (fixed, so results do not depend on threads).
const ROWS_PER_CHUNK: usize = 64;

/// How the batch norm inside a fused op normalises.
#[derive(Clone, Debug)]
pub enum Norm {
    /// Batch statistics (training, and BN re-calibration); the op reports them.
    Batch,
    /// Fixed statistics (evaluation): per-channel mean and variance.
    Fixed {
        /// Running or recalibrated mean, one per output channel.
        mean: Vec<f32>,
        /// Running or recalibrated variance, one per output channel.
        var: Vec<f32>,
    },
}

/// Per-channel batch mean and biased variance measured by a fused op with [`Norm::Batch`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Mean per output channel.
    pub mean: Vec<f32>,
    /// Biased variance per output channel.
    pub var: Vec<f32>,
}

/// Memory layout of a 4-d activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout4 {
    /// `[B, C, H, W]` (images as they come from the data loader).
    Nchw,
    /// `[B, H, W, C]` (every activation inside the supernet).
    Nhwc,
}

/// Options of a fused op.
#[derive(Clone, Debug)]
pub struct FusedSpec {
    /// Convolution stride.
    pub stride: usize,
    /// Zero padding before and after, rows and columns alike (`hi >= lo`; TensorFlow `SAME`
    /// padding can put one more row after than before).
    pub pads: (usize, usize),
    /// BN epsilon.
    pub eps: f64,
    /// Activation after BN, `None` for a linear output (the projection of a block).
    pub act: Option<Fn1>,
    /// Batch or fixed statistics.
    pub norm: Norm,
}

/// Geometry of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geom {
    b: usize,
    cin: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    lo: usize,
    hi: usize,
}

impl Geom {
    fn ho(&self) -> usize {
        (self.h + self.lo + self.hi - self.k) / self.stride + 1
    }
    fn wo(&self) -> usize {
        (self.w + self.lo + self.hi - self.k) / self.stride + 1
    }
    /// Input coordinate of output `o` at tap `t`, if inside the image of extent `len`.
    #[inline(always)]
    fn src(&self, o: usize, t: usize, len: usize) -> Option<usize> {
        let i = o * self.stride + t;
        (i >= self.lo && i - self.lo < len).then(|| i - self.lo)
    }
    /// Taps `[t0, t1)` that land inside an image of extent `len` for output `o`.
    #[inline(always)]
    fn taps(&self, o: usize, len: usize) -> (usize, usize) {
        let base = o * self.stride;
        let t0 = self.lo.saturating_sub(base);
        let t1 = (len + self.lo).saturating_sub(base).min(self.k);
        (t0, t1.max(t0))
    }
}

fn check_geom(
    what: &str,
    (b, cin, h, w): (usize, usize, usize, usize),
    k: usize,
    spec: &FusedSpec,
) -> Result<Geom> {
    let (lo, hi) = spec.pads;
    if spec.stride == 0 || k == 0 || hi < lo || h + lo + hi < k || w + lo + hi < k {
        return Err(NnError::Input(format!(
            "{what}: input {h}x{w}, kernel {k}, stride {}, padding {:?} do not fit",
            spec.stride, spec.pads
        )));
    }
    Ok(Geom {
        b,
        cin,
        h,
        w,
        k,
        stride: spec.stride,
        lo,
        hi,
    })
}

// ---------------------------------------------------------------------------------------------
// storage access

fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of `t` (CPU only).
fn with_data<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(c) => Ok(f(cpu_slice(c, l, what)?)),
        _ => candle_core::bail!("{what}: the fused ops run on the CPU only"),
    }
}

/// A matrix view into a slice: element `(r, c)` at `off + r * rs + c * cs`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    off: usize,
    rs: usize,
    cs: usize,
}

impl Mat<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.off + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `n` floats built in parallel, `chunk` at a time: each chunk is zeroed by the thread that
/// then fills it (`fill(chunk index, chunk)`), and `fill`'s results come back in chunk order.
///
/// Why not `vec![0.0; n]`: that zeroes the whole buffer on one thread before any work, out of
/// cache for activation-sized buffers (~10% of a training step); zeroing chunk by chunk runs
/// in parallel and leaves the chunk in cache for its kernel.
fn par_build<R: Send>(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32]) -> R + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    let mut v: Vec<MaybeUninit<f32>> = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` elements need no initialisation.
    unsafe { v.set_len(n) };
    let results = v
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, c)| {
            for e in c.iter_mut() {
                e.write(0.0);
            }
            // SAFETY: every element of `c` was initialised just above, and `f32` and
            // `MaybeUninit<f32>` have the same layout.
            let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
            fill(i, c)
        })
        .collect();
    // SAFETY: `par_chunks_mut` hands out every element exactly once and each chunk was fully
    // initialised above (a panic in `fill` propagates before this point).
    (unsafe { assume_init(v) }, results)
}

/// # Safety
/// Every element of `v` must be initialised.
unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, length and capacity, and the same layout; the caller guarantees
    // initialisation.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// `a (m x k) * b (k x n)` as a new row-major `m x n` matrix, with the `gemm` crate on rayon's
/// threads.
fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f32> {
    assert!(a.fits(m, k) && b.fits(k, n), "matmul shapes");
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 1 << 15 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut dst: Vec<MaybeUninit<f32>> = Vec::with_capacity(m * n);
    // SAFETY: every element the product reads lies inside `a` or `b` (checked by `fits`
    // above); `dst` has room for `m * n` elements and, with `read_dst` false, gemm writes each
    // of them without reading it (candle calls gemm the same way on uninitialised buffers).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr() as *mut f32,
            1,
            n as isize,
            false,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
        dst.set_len(m * n);
        assume_init(dst)
    }
}

// ---------------------------------------------------------------------------------------------
// batch norm + activation epilogue over `[rows, c]`

/// Expands `$body` once per activation with `$f` (the function) and `$df` (its derivative)
/// bound to closures of that activation alone, so each copy of the loop is branch-free and
/// vectorises (a run-time `match` inside the loop does not).
macro_rules! with_act {
    ($a:expr, |$f:ident, $df:ident| $body:expr) => {
        match $a {
            None => {
                let $f = |x: f32| x;
                let $df = |_: f32| 1.0f32;
                $body
            }
            Some(Fn1::Relu) => {
                let $f = |x: f32| Fn1::Relu.f(x);
                let $df = |x: f32| Fn1::Relu.df(x);
                $body
            }
            Some(Fn1::Relu6) => {
                let $f = |x: f32| Fn1::Relu6.f(x);
                let $df = |x: f32| Fn1::Relu6.df(x);
                $body
            }
            Some(Fn1::Hswish) => {
                let $f = |x: f32| Fn1::Hswish.f(x);
                let $df = |x: f32| Fn1::Hswish.df(x);
                $body
            }
            Some(Fn1::Hsigmoid) => {
                let $f = |x: f32| Fn1::Hsigmoid.f(x);
                let $df = |x: f32| Fn1::Hsigmoid.df(x);
                $body
            }
        }
    };
}

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
    /// `out = act(y * scale + shift)` row by row.
    fn scale_shift_act(y: &[f32], out: &mut [f32], scale: &[f32], shift: &[f32], a: Option<Fn1>) {
        let c = scale.len();
        with_act!(a, |f, _df| {
            for (yr, or) in y.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
                for (((o, v), sc), sh) in or.iter_mut().zip(yr).zip(scale).zip(shift) {
                    *o = f(v * sc + sh);
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

/// Normalises `y` `[rows, c]` per channel and applies the activation. Returns the output, the
/// per-channel mean and `1/sqrt(var + eps)` used, and the batch statistics when `norm` is
/// [`Norm::Batch`].
fn epilogue_fwd(
    y: &[f32],
    gb: &[f32],
    spec: &FusedSpec,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<BatchStats>) {
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
    let step = ROWS_PER_CHUNK * c;
    let (out, _) = par_build(y.len(), step, |i, o| {
        scale_shift_act(
            &y[i * step..i * step + o.len()],
            o,
            &scale,
            &shift,
            spec.act,
        )
    });
    (out, mean, inv, stats)
}

simd_fn!(
    /// Pass 1 of the epilogue's backward: `gz = gout * act'(z)` into `gz`, and per channel
    /// `sum gz` and `sum gz * yhat`.
    fn bwd_pass1(
        y: &[f32],
        gout: &[f32],
        gz: &mut [f32],
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
                    zr[i] = g;
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
    let (mut gy, parts) = par_build(s.y.len(), step, |i, gz| {
        let r = i * step..i * step + gz.len();
        let (y, g) = (&s.y[r.clone()], &gout[r]);
        let (mut sg, mut sgx) = (vec![0f32; c], vec![0f32; c]);
        bwd_pass1(
            y, g, gz, &s.mean, &s.inv, &scale, &shift, spec.act, &mut sg, &mut sgx,
        );
        (sg, sgx)
    });
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
struct Epilogue {
    spec: FusedSpec,
    saved: Mutex<Option<Saved>>,
    stats: Arc<Mutex<Option<BatchStats>>>,
}

impl Epilogue {
    /// Normalises and activates the convolution output `y`, keeping it for the backward pass.
    fn forward(&self, y: Vec<f32>, gb: &[f32]) -> Vec<f32> {
        let (out, mean, inv, stats) = epilogue_fwd(&y, gb, &self.spec);
        *self.stats.lock().expect("stats lock") = stats;
        *self.saved.lock().expect("saved lock") = Some(Saved { y, mean, inv });
        out
    }

    /// The gradient of the convolution output and of `[gamma, beta]`.
    fn backward(
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
fn apply_fused<Op: CustomOp3 + Send + Sync + 'static>(
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
        saved: Mutex::new(None),
        stats: stats.clone(),
    });
    let y = x.contiguous()?.apply_op3(w, &gb, op)?;
    let s = stats.lock().expect("stats lock").take();
    Ok((y, s))
}

// ---------------------------------------------------------------------------------------------
// full convolution (1x1 as a plain GEMM, k x k through im2col) + BN + activation

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
/// Returns the output and, with [`Norm::Batch`], the batch statistics of the convolution's
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

// ---------------------------------------------------------------------------------------------
// depthwise convolution + BN + activation

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
/// Returns the output and, with [`Norm::Batch`], the batch statistics of the convolution's
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

// ---------------------------------------------------------------------------------------------
// squeeze-excitation and pooling pieces: mean over space, per-(image, channel) scaling

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
            let (dx, _) = par_build(b * h * w * c, h * w * c, |bi, d| {
                let gr: Vec<f32> = g[bi * c..(bi + 1) * c].iter().map(|v| v / n).collect();
                for row in d.chunks_exact_mut(c) {
                    row.copy_from_slice(&gr);
                }
            });
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
    /// `out[p] = x[p] * s` for every row `p` of one image.
    fn scale_rows(x: &[f32], s: &[f32], out: &mut [f32]) {
        let c = s.len();
        for (xr, or) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
            for ((o, a), b) in or.iter_mut().zip(xr).zip(s) {
                *o = a * b;
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
        let (out, _) = par_build(b * per, per, |bi, o| {
            scale_rows(&x[bi * per..(bi + 1) * per], &sc[bi * c..(bi + 1) * c], o)
        });
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
                let (dx, _) = par_build(b * per, per, |bi, d| {
                    scale_rows(&g[bi * per..(bi + 1) * per], &sv[bi * c..(bi + 1) * c], d)
                });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::apply;
    use crate::bn::{batch_norm_train, batch_stats};
    use crate::dwconv::depthwise_conv2d_padded;
    use crate::testutil::{max_diff, uniform};
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rand_var(shape: &[usize], rng: &mut ChaCha8Rng) -> Var {
        Var::from_tensor(&uniform(shape, 1.5, rng)).unwrap()
    }

    fn spec(stride: usize, pads: (usize, usize), act: Option<Fn1>) -> FusedSpec {
        FusedSpec {
            stride,
            pads,
            eps: 1e-3,
            act,
            norm: Norm::Batch,
        }
    }

    /// NCHW reference: BN (our tested op) then the activation (our tested op).
    fn bn_act_ref(y: &Tensor, g: &Tensor, b: &Tensor, act: Option<Fn1>) -> Tensor {
        let z = batch_norm_train(y, g, b, 1e-3).unwrap();
        match act {
            Some(f) => apply(&z, f).unwrap(),
            None => z,
        }
    }

    /// Compares outputs and the gradients of `vars` under a random linear probe.
    fn compare(ours: &Tensor, want: &Tensor, vars: &[&Var], rng: &mut ChaCha8Rng, what: &str) {
        assert_eq!(ours.dims(), want.dims(), "{what}");
        let d = max_diff(ours, want);
        assert!(d < 1e-4, "{what}: forward differs by {d}");
        let probe = rand_var(ours.dims(), rng);
        let g1 = (ours * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (want * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, v) in vars.iter().enumerate() {
            let a = g1.get(v).expect("our gradient");
            let b = g2.get(v).expect("reference gradient");
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = max_diff(a, b);
            assert!(
                d < 2e-4 * scale.max(1.0),
                "{what}: gradient {i} differs by {d}"
            );
        }
    }

    #[test]
    fn pointwise_conv_bn_act_matches_nchw_reference_on_weight_views() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for act in [None, Some(Fn1::Relu), Some(Fn1::Hswish)] {
            let x = rand_var(&[3, 5, 4, 6], &mut rng); // NHWC, cin 6
            let wfull = rand_var(&[9, 8, 1, 1], &mut rng); // maxnet-sized weight
            let gfull = rand_var(&[9], &mut rng);
            let bfull = rand_var(&[9], &mut rng);
            let w = wfull.narrow(0, 0, 7).unwrap().narrow(1, 0, 6).unwrap();
            let (g, b) = (
                gfull.narrow(0, 0, 7).unwrap(),
                bfull.narrow(0, 0, 7).unwrap(),
            );
            let (ours, st) =
                conv_bn_act(&x, &w, &g, &b, Layout4::Nhwc, spec(1, (0, 0), act)).unwrap();
            let xn = x.permute((0, 3, 1, 2)).unwrap();
            let y = w
                .reshape((7, 6))
                .unwrap()
                .broadcast_matmul(&xn.reshape((3, 6, 20)).unwrap())
                .unwrap()
                .reshape((3, 7, 5, 4))
                .unwrap();
            let (m, v) = batch_stats(&y).unwrap();
            let st = st.expect("batch statistics");
            let m2 = Tensor::new(st.mean.as_slice(), &Device::Cpu).unwrap();
            let v2 = Tensor::new(st.var.as_slice(), &Device::Cpu).unwrap();
            assert!(max_diff(&m, &m2) < 1e-5 && max_diff(&v, &v2) < 1e-4);
            let want = bn_act_ref(&y, &g, &b, act).permute((0, 2, 3, 1)).unwrap();
            compare(&ours, &want, &[&x, &wfull, &gfull, &bfull], &mut rng, "1x1");
        }
    }

    #[test]
    fn strided_kxk_conv_from_nchw_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (k, s, pads, h) in [
            (3, 2, (1, 1), 8),
            (3, 1, (1, 1), 5),
            (3, 2, (0, 1), 7),
            (5, 2, (2, 2), 6),
        ] {
            let x = rand_var(&[2, 3, h, h], &mut rng);
            let w = rand_var(&[4, 3, k, k], &mut rng);
            let g = rand_var(&[4], &mut rng);
            let b = rand_var(&[4], &mut rng);
            let (ours, _) = conv_bn_act(
                &x,
                &w,
                &g,
                &b,
                Layout4::Nchw,
                spec(s, pads, Some(Fn1::Hswish)),
            )
            .unwrap();
            let xp = x
                .pad_with_zeros(2, pads.0, pads.1)
                .unwrap()
                .pad_with_zeros(3, pads.0, pads.1)
                .unwrap();
            let y = xp.conv2d(&w, 0, s, 1, 1).unwrap();
            let want = bn_act_ref(&y, &g, &b, Some(Fn1::Hswish))
                .permute((0, 2, 3, 1))
                .unwrap();
            compare(
                &ours,
                &want,
                &[&x, &w, &g, &b],
                &mut rng,
                &format!("k{k} s{s} {pads:?}"),
            );
        }
    }

    #[test]
    fn depthwise_bn_act_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (k, s, pads, h, c) in [
            (3, 1, (1, 1), 6, 5),
            (3, 2, (1, 1), 7, 9),
            (5, 1, (2, 2), 5, 17),
            (5, 2, (1, 2), 8, 3),
            (3, 2, (0, 1), 6, 4),
        ] {
            let x = rand_var(&[2, h, h, c], &mut rng);
            let wfull = rand_var(&[c + 2, 1, 7, 7], &mut rng);
            let off = (7 - k) / 2;
            let w = wfull
                .narrow(0, 0, c)
                .unwrap()
                .narrow(2, off, k)
                .unwrap()
                .narrow(3, off, k)
                .unwrap();
            let g = rand_var(&[c], &mut rng);
            let b = rand_var(&[c], &mut rng);
            let (ours, _) = dw_bn_act(&x, &w, &g, &b, spec(s, pads, Some(Fn1::Relu6))).unwrap();
            let xn = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
            let y = depthwise_conv2d_padded(&xn, &w, s, pads).unwrap();
            let want = bn_act_ref(&y, &g, &b, Some(Fn1::Relu6))
                .permute((0, 2, 3, 1))
                .unwrap();
            compare(
                &ours,
                &want,
                &[&x, &wfull, &g, &b],
                &mut rng,
                &format!("dw k{k} s{s} {pads:?}"),
            );
        }
    }

    #[test]
    fn fixed_statistics_normalise_with_the_given_mean_and_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let x = rand_var(&[2, 3, 3, 4], &mut rng);
        let w = rand_var(&[4, 1, 3, 3], &mut rng);
        let g = rand_var(&[4], &mut rng);
        let b = rand_var(&[4], &mut rng);
        let (mean, var) = (vec![0.1f32, -0.2, 0.3, 0.0], vec![1.0f32, 2.0, 0.5, 4.0]);
        let mut sp = spec(1, (1, 1), None);
        sp.norm = Norm::Fixed {
            mean: mean.clone(),
            var: var.clone(),
        };
        let (ours, st) = dw_bn_act(&x, &w, &g, &b, sp).unwrap();
        assert!(st.is_none());
        let y = depthwise_conv2d_padded(&x.permute((0, 3, 1, 2)).unwrap(), &w, 1, (1, 1))
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        let m = Tensor::new(mean.as_slice(), &Device::Cpu).unwrap();
        let v = Tensor::new(var.as_slice(), &Device::Cpu).unwrap();
        let want = y
            .broadcast_sub(&m)
            .unwrap()
            .broadcast_div(&(v + 1e-3).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&g)
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        compare(&ours, &want, &[&x, &w, &g, &b], &mut rng, "fixed");
    }

    /// Central differences in f64 of a scalar loss through both fused ops in sequence.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x = rand_var(&[2, 3, 5, 5], &mut rng); // NCHW image
        let w1 = rand_var(&[4, 3, 3, 3], &mut rng);
        let w2 = rand_var(&[4, 1, 3, 3], &mut rng);
        let g = rand_var(&[4], &mut rng);
        let b = rand_var(&[4], &mut rng);
        let probe = rand_var(&[2, 3, 3, 4], &mut rng);
        let loss = || -> f64 {
            let (h, _) = conv_bn_act(
                &x,
                &w1,
                &g,
                &b,
                Layout4::Nchw,
                spec(2, (1, 1), Some(Fn1::Hswish)),
            )
            .unwrap();
            let (y, _) = dw_bn_act(&h, &w2, &g, &b, spec(1, (1, 1), Some(Fn1::Hswish))).unwrap();
            (y * probe.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let (h, _) = conv_bn_act(
            &x,
            &w1,
            &g,
            &b,
            Layout4::Nchw,
            spec(2, (1, 1), Some(Fn1::Hswish)),
        )
        .unwrap();
        let (y, _) = dw_bn_act(&h, &w2, &g, &b, spec(1, (1, 1), Some(Fn1::Hswish))).unwrap();
        let grads = (y * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w1, &w2, &g, &b] {
            let an: Vec<f32> = grads
                .get(v)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            for i in (0..base.len()).step_by(base.len().div_ceil(6)) {
                let eps = 1e-2f32;
                let mut p = base.clone();
                p[i] += eps;
                v.set(&Tensor::from_vec(p.clone(), v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let lp = loss();
                p[i] -= 2.0 * eps;
                v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let lm = loss();
                v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let fd = (lp - lm) / (2.0 * eps as f64);
                let d = (fd - an[i] as f64).abs();
                assert!(
                    d < 2e-2 * fd.abs().max(1.0),
                    "element {i}: fd {fd} vs {}",
                    an[i]
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_op() {
        let x = Tensor::zeros((1, 4, 4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((5, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let g = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = dw_bn_act(&x, &w, &g, &g, spec(1, (1, 1), None)).unwrap_err();
        assert!(e.to_string().contains("fused depthwise conv"), "{e}");
        let w = Tensor::zeros((3, 1, 9, 9), candle_core::DType::F32, &Device::Cpu).unwrap();
        let g = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = dw_bn_act(&x, &w, &g, &g, spec(1, (0, 0), None)).unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
    }

    #[test]
    fn spatial_mean_and_channel_scale_match_candle_ops() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let x = rand_var(&[3, 4, 5, 6], &mut rng);
        let s = rand_var(&[3, 6], &mut rng);
        let want = x.reshape((3, 20, 6)).unwrap().mean(1).unwrap();
        compare(&spatial_mean(&x).unwrap(), &want, &[&x], &mut rng, "mean");
        let want = x.broadcast_mul(&s.reshape((3, 1, 1, 6)).unwrap()).unwrap();
        compare(
            &channel_scale(&x, &s).unwrap(),
            &want,
            &[&x, &s],
            &mut rng,
            "scale",
        );
        assert!(channel_scale(&x, &s.narrow(1, 0, 5).unwrap()).is_err());
    }

    /// Shapes large enough for several reduction chunks and the parallel GEMM path.
    #[test]
    fn large_shapes_match_the_references() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = rand_var(&[4, 12, 12, 24], &mut rng);
        let wfull = rand_var(&[112, 32, 1, 1], &mut rng);
        let g = rand_var(&[96], &mut rng);
        let b = rand_var(&[96], &mut rng);
        let w = wfull.narrow(0, 0, 96).unwrap().narrow(1, 0, 24).unwrap();
        let (ours, _) = conv_bn_act(
            &x,
            &w,
            &g,
            &b,
            Layout4::Nhwc,
            spec(1, (0, 0), Some(Fn1::Hswish)),
        )
        .unwrap();
        let xn = x.permute((0, 3, 1, 2)).unwrap();
        let y = w
            .reshape((96, 24))
            .unwrap()
            .broadcast_matmul(&xn.reshape((4, 24, 144)).unwrap())
            .unwrap()
            .reshape((4, 96, 12, 12))
            .unwrap();
        let want = bn_act_ref(&y, &g, &b, Some(Fn1::Hswish))
            .permute((0, 2, 3, 1))
            .unwrap();
        compare(&ours, &want, &[&x, &wfull, &g, &b], &mut rng, "large 1x1");
        let wd = rand_var(&[96, 1, 5, 5], &mut rng);
        let h = ours.detach();
        let hv = Var::from_tensor(&h).unwrap();
        let (ours, _) = dw_bn_act(&hv, &wd, &g, &b, spec(2, (2, 2), Some(Fn1::Relu))).unwrap();
        let hn = hv.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let y = depthwise_conv2d_padded(&hn, &wd, 2, (2, 2)).unwrap();
        let want = bn_act_ref(&y, &g, &b, Some(Fn1::Relu))
            .permute((0, 2, 3, 1))
            .unwrap();
        compare(&ours, &want, &[&hv, &wd, &g, &b], &mut rng, "large dw");
    }
}

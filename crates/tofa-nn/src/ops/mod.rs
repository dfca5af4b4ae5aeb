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
//! time (`simd_fn!` in `simd`): the crate is built for baseline x86-64 and still uses 8-wide vectors.
//!
//! # Modules
//! - [`act`]: the activations (scalar functions and derivatives) and [`act::apply`], the
//!   elementwise activation op the fused backend uses outside the fused layers.
//! - `conv`, `depthwise`, `se`, `residual` (private): one candle custom op each, forward and
//!   backward; their entry points are re-exported here ([`conv_bn_act`], [`dw_bn_act`],
//!   [`spatial_mean`], [`channel_scale`], [`residual`]).
//! - `epilogue`: the BN + activation half shared by the two convolutions; `gemm`: the dense
//!   product; `simd`: the kernel macros. Shared here: the op options, the convolution
//!   geometry, and storage access.
//! - [`reference`](mod@reference): plain NCHW ops composed for clarity, not speed; the fused ops are tested
//!   against them.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{NnError, Result};

#[macro_use]
mod simd;

pub mod act;
mod conv;
mod depthwise;
mod epilogue;
mod gemm;
pub mod reference;
mod residual;
mod se;
#[cfg(test)]
mod tests;

pub use conv::conv_bn_act;
pub use depthwise::dw_bn_act;
pub use residual::residual;
pub use se::{channel_scale, spatial_mean};

use act::Fn1;

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
    let zero_then_fill = |i: usize, c: &mut [MaybeUninit<f32>]| {
        for e in c.iter_mut() {
            e.write(0.0);
        }
        // SAFETY: every element of `c` was initialised just above, and `f32` and
        // `MaybeUninit<f32>` have the same layout.
        let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
        fill(i, c)
    };
    // SAFETY: `zero_then_fill` initialises every element of its chunk.
    unsafe { par_write(n, chunk, zero_then_fill) }
}

/// `n` floats written in parallel, `chunk` at a time, by a `fill` that writes every element of
/// its chunk (`fill(chunk index, chunk)`); `fill`'s results come back in chunk order.
///
/// Why beside [`par_build`]: an op whose kernel overwrites its whole output (the BN +
/// activation epilogue, the residual, SE's scale) would pay for zeroes it never reads: a
/// second write pass over an activation-sized buffer, about a tenth of an eval forward.
///
/// # Safety
/// `fill` must initialise every element of the chunk it is given (a kernel that writes
/// `o.write(..)` for every `o` of `chunks_exact_mut(c)` over a chunk whose length is a
/// multiple of `c`). A panic in `fill` propagates before the buffer is read.
unsafe fn par_write<R: Send>(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) -> R + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    let mut v: Vec<MaybeUninit<f32>> = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` elements need no initialisation.
    unsafe { v.set_len(n) };
    let results = v
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, c)| fill(i, c))
        .collect();
    // SAFETY: `par_chunks_mut` hands out every element exactly once and the caller guarantees
    // that `fill` initialised each chunk.
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

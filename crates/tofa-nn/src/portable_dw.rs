//! The portable backend's depthwise convolution (NCHW): one op with its own backward, on the
//! CPU and, with the `cuda` feature, on CUDA (kernels below, compiled at first use by NVRTC).
//!
//! Why not candle's tensor ops: candle has no depthwise convolution. `conv2d(groups = C)`
//! runs one convolution per channel (`Tensor::conv2d` chunks input and kernel: up to 1,152
//! launches per layer of the paper's space), and the earlier sum of `k * k` shifted windows
//! keeps every product and partial sum alive in the autograd graph, about `2 k^2` copies of
//! the layer's output: on an H200 one TOFA iteration of the `paper` space at 224 px (32 + 32
//! images) ran out of its 141 GB there, where PyTorch needs 25 GB (`scripts/gpu-check.sh`,
//! README: GPU). This op keeps only its inputs for the backward, as a convolution kernel does.
//!
//! The three kernels are direct: forward, one thread per output; input gradient, one thread
//! per input, gathering the taps that reach it (no atomics, so deterministic); weight
//! gradient, one block per (channel, image) reducing over the image's outputs, then a sum over
//! images in image order. The CPU code is the same arithmetic in the same tap order (it runs
//! the portable backend's tests and the bf16 emulation, not the CPU's fast path, which is
//! [`crate::ops::depthwise`]).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{NnError, Result};

/// The geometry of one depthwise convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    /// Zero padding before, on both spatial dims (the padding after is implied by `ho`, `wo`).
    pb: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    fn x_shape(&self) -> Shape {
        Shape::from((self.b, self.c, self.h, self.w))
    }
    fn y_shape(&self) -> Shape {
        Shape::from((self.b, self.c, self.ho, self.wo))
    }
    /// Input row (or column) of output `o` and tap `i`, `None` in the padding.
    fn src(&self, o: usize, i: usize, len: usize) -> Option<usize> {
        (o * self.s + i).checked_sub(self.pb).filter(|&v| v < len)
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("portable depthwise conv: {what} must be contiguous"),
    }
}

/// Forward: `(x [B, C, H, W], w [C, 1, k, k]) -> y [B, C, Ho, Wo]`.
struct Fwd(Geom);
/// Input gradient: `(gy [B, C, Ho, Wo], w [C, 1, k, k]) -> gx [B, C, H, W]`.
struct GradInput(Geom);
/// Weight gradient, per image: `(x [B, C, H, W], gy [B, C, Ho, Wo]) -> [B, C, k, k]`, summed
/// over images (candle's sum, in image order) by [`Fwd`]'s backward.
struct GradWeight(Geom);

impl CustomOp2 for Fwd {
    fn name(&self) -> &'static str {
        "tofa-portable-dwconv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, w) = (contiguous(s1, l1, "input")?, contiguous(s2, l2, "weight")?);
        let (plane_in, plane_out, kk) = (g.h * g.w, g.ho * g.wo, g.k * g.k);
        let mut y = vec![0f32; g.b * g.c * plane_out];
        y.par_chunks_mut(plane_out)
            .enumerate()
            .for_each(|(bc, yp)| {
                let xp = &x[bc * plane_in..(bc + 1) * plane_in];
                let wp = &w[(bc % g.c) * kk..(bc % g.c + 1) * kk];
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        let mut acc = 0f32;
                        for i in 0..g.k {
                            let Some(ih) = g.src(oh, i, g.h) else {
                                continue;
                            };
                            for j in 0..g.k {
                                let Some(iw) = g.src(ow, j, g.w) else {
                                    continue;
                                };
                                acc += wp[i * g.k + j] * xp[ih * g.w + iw];
                            }
                        }
                        yp[oh * g.wo + ow] = acc;
                    }
                }
            });
        Ok((CpuStorage::F32(y), g.y_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = self.0;
        let out = cuda::launch_elementwise("dw_fwd", g, s1, l1, s2, l2, g.b * g.c * g.ho * g.wo)?;
        Ok((out, g.y_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let gy = gy.contiguous()?;
        let gx = x
            .track_op()
            .then(|| gy.apply_op2_no_bwd(w, &GradInput(g)))
            .transpose()?;
        let gw = x
            .apply_op2_no_bwd(&gy, &GradWeight(g))?
            .sum(0)?
            .reshape(w.shape())?;
        Ok((gx, Some(gw)))
    }
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "tofa-portable-dwconv-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (gy, w) = (
            contiguous(s1, l1, "output gradient")?,
            contiguous(s2, l2, "weight")?,
        );
        let (plane_in, plane_out, kk) = (g.h * g.w, g.ho * g.wo, g.k * g.k);
        let mut gx = vec![0f32; g.b * g.c * plane_in];
        gx.par_chunks_mut(plane_in)
            .enumerate()
            .for_each(|(bc, gxp)| {
                let gyp = &gy[bc * plane_out..(bc + 1) * plane_out];
                let wp = &w[(bc % g.c) * kk..(bc % g.c + 1) * kk];
                for ih in 0..g.h {
                    for iw in 0..g.w {
                        let mut acc = 0f32;
                        for i in 0..g.k {
                            let Some(oh) = tap_output(ih, i, g.pb, g.s, g.ho) else {
                                continue;
                            };
                            for j in 0..g.k {
                                let Some(ow) = tap_output(iw, j, g.pb, g.s, g.wo) else {
                                    continue;
                                };
                                acc += wp[i * g.k + j] * gyp[oh * g.wo + ow];
                            }
                        }
                        gxp[ih * g.w + iw] = acc;
                    }
                }
            });
        Ok((CpuStorage::F32(gx), g.x_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = self.0;
        let out =
            cuda::launch_elementwise("dw_grad_input", g, s1, l1, s2, l2, g.b * g.c * g.h * g.w)?;
        Ok((out, g.x_shape()))
    }
}

/// The output that input position `p` reaches through tap `i`, if any: `o * s + i - pb = p`.
fn tap_output(p: usize, i: usize, pb: usize, s: usize, len: usize) -> Option<usize> {
    (p + pb)
        .checked_sub(i)
        .filter(|t| t % s == 0)
        .map(|t| t / s)
        .filter(|&o| o < len)
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "tofa-portable-dwconv-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, gy) = (
            contiguous(s1, l1, "input")?,
            contiguous(s2, l2, "output gradient")?,
        );
        let (plane_in, plane_out, kk) = (g.h * g.w, g.ho * g.wo, g.k * g.k);
        let mut parts = vec![0f32; g.b * g.c * kk];
        parts.par_chunks_mut(kk).enumerate().for_each(|(bc, p)| {
            let xp = &x[bc * plane_in..(bc + 1) * plane_in];
            let gyp = &gy[bc * plane_out..(bc + 1) * plane_out];
            for i in 0..g.k {
                for j in 0..g.k {
                    let mut acc = 0f32;
                    for oh in 0..g.ho {
                        let Some(ih) = g.src(oh, i, g.h) else {
                            continue;
                        };
                        for ow in 0..g.wo {
                            let Some(iw) = g.src(ow, j, g.w) else {
                                continue;
                            };
                            acc += gyp[oh * g.wo + ow] * xp[ih * g.w + iw];
                        }
                    }
                    p[i * g.k + j] = acc;
                }
            }
        });
        Ok((CpuStorage::F32(parts), Shape::from((g.b, g.c, g.k, g.k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = self.0;
        let out = cuda::launch_grad_weight(g, s1, l1, s2, l2)?;
        Ok((out, Shape::from((g.b, g.c, g.k, g.k))))
    }
}

/// A depthwise convolution of `x [B, C, H, W]` with `w [C, 1, k, k]`, zero padding `pads`
/// `(before, after)` on both spatial dims, stride `s`: `[B, C, Ho, Wo]`,
/// `Ho = (H + before + after - k) / s + 1`.
pub(crate) fn depthwise(x: &Tensor, w: &Tensor, s: usize, pads: (usize, usize)) -> Result<Tensor> {
    let (b, c, h, wd) = x.dims4()?;
    let (wc, one, k, k2) = w.dims4()?;
    let (hp, wp) = (h + pads.0 + pads.1, wd + pads.0 + pads.1);
    if wc != c || one != 1 || k != k2 || s == 0 || hp < k || wp < k {
        return Err(NnError::Input(format!(
            "portable depthwise conv: weight {:?} does not fit input {:?} (stride {s}, padding {pads:?})",
            w.dims(),
            x.dims()
        )));
    }
    let g = Geom {
        b,
        c,
        h,
        w: wd,
        k,
        s,
        pb: pads.0,
        ho: (hp - k) / s + 1,
        wo: (wp - k) / s + 1,
    };
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, Fwd(g))?)
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The CUDA kernels, compiled once per process by NVRTC (no CUDA toolkit needed at build
    //! time beyond candle's own), loaded per device by candle's module cache.

    use std::sync::OnceLock;

    use candle_core::cuda_backend::WrapErr;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, Layout};

    use super::Geom;

    const MODULE: &str = "tofa_portable_dw";

    /// `K` is a template parameter so that the tap loops unroll and the weight gradient's
    /// `K * K` accumulators stay in registers; one entry point per kernel size.
    const SRC: &str = r#"
template <int K>
__device__ void dw_fwd(const float* x, const float* w, float* y, int B, int C, int H, int W,
                       int Ho, int Wo, int s, int pb) {
    long n = (long)B * C * Ho * Wo;
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < n;
         idx += (long)gridDim.x * blockDim.x) {
        int ow = idx % Wo;
        long t = idx / Wo;
        int oh = t % Ho;
        long bc = t / Ho;
        const float* xp = x + bc * H * W;
        const float* wp = w + (bc % C) * K * K;
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < K; i++) {
            int ih = oh * s + i - pb;
            if (ih < 0 || ih >= H) continue;
#pragma unroll
            for (int j = 0; j < K; j++) {
                int iw = ow * s + j - pb;
                if (iw < 0 || iw >= W) continue;
                acc += wp[i * K + j] * xp[ih * W + iw];
            }
        }
        y[idx] = acc;
    }
}

template <int K>
__device__ void dw_grad_input(const float* gy, const float* w, float* gx, int B, int C, int H,
                              int W, int Ho, int Wo, int s, int pb) {
    long n = (long)B * C * H * W;
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < n;
         idx += (long)gridDim.x * blockDim.x) {
        int iw = idx % W;
        long t = idx / W;
        int ih = t % H;
        long bc = t / H;
        const float* gyp = gy + bc * Ho * Wo;
        const float* wp = w + (bc % C) * K * K;
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < K; i++) {
            int th = ih + pb - i;
            if (th < 0 || th % s != 0 || th / s >= Ho) continue;
            int oh = th / s;
#pragma unroll
            for (int j = 0; j < K; j++) {
                int tw = iw + pb - j;
                if (tw < 0 || tw % s != 0 || tw / s >= Wo) continue;
                acc += wp[i * K + j] * gyp[oh * Wo + tw / s];
            }
        }
        gx[idx] = acc;
    }
}

// block (c, b): the K*K weight-gradient partials of channel c over image b's outputs
template <int K>
__device__ void dw_grad_weight(const float* x, const float* gy, float* part, int B, int C, int H,
                               int W, int Ho, int Wo, int s, int pb) {
    int c = blockIdx.x, b = blockIdx.y;
    long bc = (long)b * C + c;
    const float* xp = x + bc * H * W;
    const float* gyp = gy + bc * Ho * Wo;
    float acc[K * K];
#pragma unroll
    for (int q = 0; q < K * K; q++) acc[q] = 0.f;
    for (int p = threadIdx.x; p < Ho * Wo; p += blockDim.x) {
        int oh = p / Wo, ow = p % Wo;
        float g = gyp[p];
#pragma unroll
        for (int i = 0; i < K; i++) {
            int ih = oh * s + i - pb;
            bool in_h = ih >= 0 && ih < H;
#pragma unroll
            for (int j = 0; j < K; j++) {
                int iw = ow * s + j - pb;
                if (in_h && iw >= 0 && iw < W) acc[i * K + j] += g * xp[ih * W + iw];
            }
        }
    }
    __shared__ float warp_sums[32][K * K];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
#pragma unroll
    for (int q = 0; q < K * K; q++) {
        float v = acc[q];
        for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffff, v, o);
        if (lane == 0) warp_sums[warp][q] = v;
    }
    __syncthreads();
    if (threadIdx.x < K * K) {
        float v = 0.f;
        for (int u = 0; u < warps; u++) v += warp_sums[u][threadIdx.x];
        part[bc * K * K + threadIdx.x] = v;
    }
}

#define ENTRY(NAME, K) \
    extern "C" __global__ void NAME##_k##K(const float* a, const float* b, float* out, int B, \
        int C, int H, int W, int Ho, int Wo, int s, int pb) { \
        NAME<K>(a, b, out, B, C, H, W, Ho, Wo, s, pb); \
    }
#define ALL_K(NAME) ENTRY(NAME, 1) ENTRY(NAME, 3) ENTRY(NAME, 5) ENTRY(NAME, 7)
ALL_K(dw_fwd)
ALL_K(dw_grad_input)
ALL_K(dw_grad_weight)
"#;

    /// The kernels' PTX, compiled on first use.
    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SRC)
                .map(|p| p.to_src())
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(format!("portable depthwise conv: NVRTC: {e}")))
    }

    fn entry(name: &str, k: usize) -> candle_core::Result<String> {
        match k {
            1 | 3 | 5 | 7 => Ok(format!("{name}_k{k}")),
            _ => candle_core::bail!(
                "portable depthwise conv on CUDA: kernel size {k} (1, 3, 5 or 7)"
            ),
        }
    }

    fn view<'a>(
        s: &'a CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
        let slice = s.as_cuda_slice::<f32>()?;
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(slice.slice(a..b)),
            None => candle_core::bail!("portable depthwise conv: operands must be contiguous"),
        }
    }

    /// The geometry as the kernels' trailing `int` arguments.
    fn dims(g: Geom) -> candle_core::Result<[i32; 9]> {
        let v = [g.b, g.c, g.h, g.w, g.ho, g.wo, g.s, g.pb, 0];
        let mut out = [0i32; 9];
        for (o, x) in out.iter_mut().zip(v) {
            *o = i32::try_from(x).map_err(|_| {
                candle_core::Error::Msg(format!("portable depthwise conv: {g:?} too large"))
            })?;
        }
        Ok(out)
    }

    /// `dw_fwd` or `dw_grad_input`: one thread per element of an `n`-element output.
    pub(super) fn launch_elementwise(
        name: &str,
        g: Geom,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        n: usize,
    ) -> candle_core::Result<CudaStorage> {
        let dev = s1.device.clone();
        let func = dev.get_or_load_custom_func(&entry(name, g.k)?, MODULE, ptx()?)?;
        let (a, b) = (view(s1, l1)?, view(s2, l2)?);
        let out = dev.alloc_zeros::<f32>(n)?;
        let d = dims(g)?;
        let threads = 256u32;
        let blocks = n.div_ceil(threads as usize).clamp(1, 1 << 22) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut builder = func.builder();
        builder.arg(&a).arg(&b).arg(&out);
        for v in &d[..8] {
            builder.arg(v);
        }
        // SAFETY: the kernel reads `n`-bounded ranges of `a` and `b` that their shapes
        // (checked in `depthwise`) hold, and writes `out`, `n` floats.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }

    /// `dw_grad_weight`: the per-(image, channel) partials, `[B, C, k, k]`.
    pub(super) fn launch_grad_weight(
        g: Geom,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let dev = s1.device.clone();
        let func = dev.get_or_load_custom_func(&entry("dw_grad_weight", g.k)?, MODULE, ptx()?)?;
        let (a, b) = (view(s1, l1)?, view(s2, l2)?);
        let kk = g.k * g.k;
        let part = dev.alloc_zeros::<f32>(g.b * g.c * kk)?;
        let d = dims(g)?;
        let cfg = LaunchConfig {
            grid_dim: (d[1] as u32, d[0] as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut builder = func.builder();
        builder.arg(&a).arg(&b).arg(&part);
        for v in &d[..8] {
            builder.arg(v);
        }
        // SAFETY: block (c, b) reads plane (b, c) of `a` and `b` and writes its `k * k`
        // partials of `part` (`B * C * k * k` floats).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(part, dev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{max_diff, uniform};
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    /// The earlier composition: a sum of `k * k` shifted windows, with candle's autograd.
    fn shifted_windows(x: &Tensor, w: &Tensor, s: usize, pads: (usize, usize)) -> Tensor {
        let c = x.dim(1).unwrap();
        let k = w.dim(2).unwrap();
        let xp = x
            .pad_with_zeros(2, pads.0, pads.1)
            .unwrap()
            .pad_with_zeros(3, pads.0, pads.1)
            .unwrap();
        let (_, _, hp, wp) = xp.dims4().unwrap();
        let (h1, w1) = (hp + 1 - k, wp + 1 - k);
        let mut y = None::<Tensor>;
        for i in 0..k {
            for j in 0..k {
                let tap = w.narrow(2, i, 1).unwrap().narrow(3, j, 1).unwrap();
                let tap = tap.reshape((1, c, 1, 1)).unwrap();
                let win = xp.narrow(2, i, h1).unwrap().narrow(3, j, w1).unwrap();
                let win = win.broadcast_mul(&tap).unwrap();
                y = Some(match y {
                    Some(acc) => (acc + win).unwrap(),
                    None => win,
                });
            }
        }
        let y = y.unwrap();
        let (ho, wo) = ((hp - k) / s + 1, (wp - k) / s + 1);
        let idx = |n: usize| {
            let v: Vec<u32> = (0..n).map(|i| (i * s) as u32).collect();
            Tensor::new(v, &Device::Cpu).unwrap()
        };
        y.index_select(&idx(ho), 2)
            .unwrap()
            .index_select(&idx(wo), 3)
            .unwrap()
    }

    #[test]
    fn forward_and_both_gradients_match_the_shifted_window_sum() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // (B, C, H, W, k, stride, pads): odd sizes, both strides, TF-SAME asymmetric padding
        for &(b, c, h, wd, k, s, pads) in &[
            (2, 3, 7, 6, 3, 1, (1, 1)),
            (2, 4, 9, 8, 5, 2, (1, 2)),
            (1, 2, 8, 8, 3, 2, (0, 1)),
            (3, 5, 6, 7, 5, 1, (2, 2)),
            (1, 3, 5, 5, 7, 1, (3, 3)),
            (2, 2, 4, 4, 1, 1, (0, 0)),
        ] {
            let x = Var::from_tensor(&uniform(&[b, c, h, wd], 1.0, &mut rng)).unwrap();
            let w = Var::from_tensor(&uniform(&[c, 1, k, k], 1.0, &mut rng)).unwrap();
            // a random cotangent, so that every output's gradient path is weighted differently
            let (ho, wo) = (
                (h + pads.0 + pads.1 - k) / s + 1,
                (wd + pads.0 + pads.1 - k) / s + 1,
            );
            let r = uniform(&[b, c, ho, wo], 1.0, &mut rng);
            let ours = depthwise(&x, &w, s, pads).unwrap();
            let reference = shifted_windows(&x, &w, s, pads);
            assert_eq!(ours.dims(), reference.dims());
            assert!(
                max_diff(&ours, &reference) < 1e-5,
                "forward {b}x{c}x{h}x{wd} k{k} s{s}"
            );
            let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (reference * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (v, what) in [(&x, "input"), (&w, "weight")] {
                let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(
                    max_diff(a, e) < 1e-4,
                    "{what} gradient {b}x{c}x{h}x{wd} k{k} s{s}: {}",
                    max_diff(a, e)
                );
            }
        }
    }

    #[test]
    fn a_weight_that_does_not_fit_is_an_input_error() {
        let x = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = depthwise(&x, &w, 1, (1, 1)).unwrap_err().to_string();
        assert!(
            e.contains("portable depthwise conv") && e.contains("[4, 1, 3, 3]"),
            "{e}"
        );
    }
}

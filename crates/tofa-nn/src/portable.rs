//! The supernet's layers on candle's own tensor ops, in NCHW: the [`Backend::Portable`] path.
//!
//! Our fused ops ([`crate::ops`]) have CPU kernels only. Everything here is a
//! composition of candle ops with candle's autograd, so it runs on every device candle runs
//! on (CUDA included) and computes the same network: test
//! `portable_and_fused_backends_are_the_same_network` (logits, every gradient, BN statistics).
//!
//! The depthwise convolution is the one op here that is not a composition: candle has no
//! depthwise convolution (its `conv2d(groups = C)` runs one convolution per channel), and a
//! composition of shifted windows keeps `2 k^2` copies of the layer's output in the graph,
//! which does not fit a GPU at the paper's scale. It is [`crate::portable_dw`]'s op, with
//! CPU and CUDA kernels and its own backward.
//!
//! [`Backend::Portable`]: crate::supernet::Backend::Portable

use candle_core::Tensor;

use crate::error::Result;
use crate::ops::act::Fn1;

/// How a BN layer normalises.
pub(crate) enum PortableNorm {
    /// Batch statistics (biased variance), gradients through them; the op reports them.
    Batch,
    /// Fixed per-channel mean and variance, each `[C]`.
    Fixed(Tensor, Tensor),
}

/// Zero padding `(before, after)` on both spatial dims of an NCHW tensor.
fn pad(x: &Tensor, (before, after): (usize, usize)) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    Ok(x.pad_with_zeros(2, before, after)?
        .pad_with_zeros(3, before, after)?)
}

/// A full convolution: `x [B, Cin, H, W]`, `w [Cout, Cin, k, k]`, zero padding `pads` on each
/// side (possibly asymmetric, TensorFlow `SAME`), stride `s`.
pub(crate) fn conv(x: &Tensor, w: &Tensor, s: usize, pads: (usize, usize)) -> Result<Tensor> {
    Ok(pad(x, pads)?.conv2d(&w.contiguous()?, 0, s, 1, 1)?)
}

/// A depthwise convolution: `x [B, C, H, W]`, `w [C, 1, k, k]`, as [`conv`] otherwise; an op
/// of its own with CPU and CUDA kernels ([`crate::portable_dw`]).
pub(crate) fn depthwise(x: &Tensor, w: &Tensor, s: usize, pads: (usize, usize)) -> Result<Tensor> {
    crate::portable_dw::depthwise(x, w, s, pads)
}

/// Batch norm of `z [B, C, H, W]` with `gamma`, `beta` (`[C]`); returns the normalised
/// tensor and, for [`PortableNorm::Batch`], the batch mean and biased variance (detached).
pub(crate) fn batch_norm(
    z: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    norm: PortableNorm,
    eps: f64,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let c = z.dim(1)?;
    let per_channel = |t: &Tensor| t.reshape((1, c, 1, 1));
    let (centred, var, stats) = match norm {
        PortableNorm::Batch => {
            let mean = z.mean_keepdim((0, 2, 3))?;
            let centred = z.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
            let stats = (mean.flatten_all()?.detach(), var.flatten_all()?.detach());
            (centred, var, Some(stats))
        }
        PortableNorm::Fixed(mean, var) => {
            let centred = z.broadcast_sub(&per_channel(&mean)?)?;
            (centred, per_channel(&var)?, None)
        }
    };
    let y = centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&per_channel(gamma)?)?
        .broadcast_add(&per_channel(beta)?)?;
    Ok((y, stats))
}

/// `f(x)` from candle ops (the same functions as [`crate::ops::act::apply`]).
pub(crate) fn act(x: &Tensor, f: Fn1) -> Result<Tensor> {
    let relu6 = |t: &Tensor| t.clamp(0f32, 6f32);
    Ok(match f {
        Fn1::Relu => x.relu()?,
        Fn1::Relu6 => relu6(x)?,
        Fn1::Hswish => (x * (relu6(&(x + 3.0)?)? / 6.0)?)?,
        Fn1::Hsigmoid => (relu6(&(x + 3.0)?)? / 6.0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reference::dwconv::depthwise_conv2d_padded;
    use crate::testutil::{max_diff, uniform};
    use rand::SeedableRng;

    #[test]
    fn depthwise_matches_the_reference_op_at_both_strides_and_asymmetric_padding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let x = uniform(&[2, 5, 9, 9], 1.0, &mut rng);
        for (k, s, pads) in [
            (3, 1, (1, 1)),
            (5, 2, (2, 2)),
            (3, 2, (0, 1)),
            (5, 2, (1, 2)),
        ] {
            let w = uniform(&[5, 1, k, k], 1.0, &mut rng);
            let ours = depthwise(&x, &w, s, pads).unwrap();
            let reference = depthwise_conv2d_padded(&x, &w, s, pads).unwrap();
            assert_eq!(ours.dims(), reference.dims(), "k {k} s {s} pads {pads:?}");
            assert!(
                max_diff(&ours, &reference) < 1e-5,
                "k {k} s {s} pads {pads:?}"
            );
        }
    }
}

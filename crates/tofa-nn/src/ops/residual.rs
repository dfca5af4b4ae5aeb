//! The residual connection of a block with drop-connect: `out = h * m[b] + x`, one graph
//! node.
//!
//! Why: composed, it is `broadcast_mul` then `add`, and candle's backward of the multiply also
//! computes the gradient of the constant mask (an activation-sized product, a zero-filled
//! buffer and an add, then thrown away) and pays a zero-filled buffer and an add on the edge
//! between the two nodes. Here the backward is one scaled copy (`dh = g * m[b]`) and the
//! output gradient itself (`dx = g`). The arithmetic is the composition's own (a product,
//! then a sum, per element), so the outputs and gradients have the same bits.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use super::{cpu_slice, par_write, with_data};
use crate::error::{NnError, Result};

struct Residual {
    /// Per-image scale of `h` (`0` or `1 / keep`).
    mask: Vec<f32>,
}

impl candle_core::CustomOp2 for Residual {
    fn name(&self) -> &'static str {
        "tofa-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = cpu_slice(s1, l1, "residual branch")?;
        let x = cpu_slice(s2, l2, "residual input")?;
        let per = h.len() / self.mask.len().max(1);
        // SAFETY: the loop writes every element of its chunk.
        let (out, _) = unsafe {
            par_write(h.len(), per, |b, o| {
                let m = self.mask[b];
                let (hb, xb) = (&h[b * per..][..o.len()], &x[b * per..][..o.len()]);
                for ((o, &hv), &xv) in o.iter_mut().zip(hb).zip(xb) {
                    o.write(hv * m + xv);
                }
            })
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let per = h.elem_count() / self.mask.len().max(1);
        let dh = with_data(grad, "residual gradient", |g| {
            // SAFETY: the loop writes every element of its chunk.
            let (dh, _) = unsafe {
                par_write(g.len(), per, |b, d| {
                    let m = self.mask[b];
                    let gb = &g[b * per..][..d.len()];
                    for (d, &gv) in d.iter_mut().zip(gb) {
                        d.write(gv * m);
                    }
                })
            };
            dh
        })?;
        let dx = x.track_op().then(|| grad.clone());
        Ok((Some(Tensor::from_vec(dh, h.shape(), h.device())?), dx))
    }
}

/// `h * mask[b] + x` per image `b` (a block's residual connection with drop-connect), with
/// gradients for `h` and `x`.
///
/// # Shapes
/// - `h`, `x`: the same shape, batch first (`[B, ...]`); `mask`: `B` values. Returns `h`'s
///   shape.
pub fn residual(h: &Tensor, x: &Tensor, mask: Vec<f32>) -> Result<Tensor> {
    if h.dims() != x.dims() || h.dims().first() != Some(&mask.len()) {
        return Err(NnError::Input(format!(
            "residual: branch {:?}, input {:?}, {} mask values do not fit",
            h.dims(),
            x.dims(),
            mask.len()
        )));
    }
    Ok(h.contiguous()?
        .apply_op2(&x.contiguous()?, Residual { mask })?)
}

//! Mixed precision on the portable backend: the products in bf16, everything else in f32.
//!
//! With [`Precision::Bf16`] the full and 1x1 convolutions and the linear layers (SE and the
//! classifier) take bf16 operands and give a bf16 result, with f32 accumulation, as cuBLAS
//! and cuDNN bf16 kernels do; batch norm, activations, pooling, the residual sums, the
//! depthwise convolution's sum and every loss stay in f32, and so do the weights the
//! optimiser updates (the master copy) and their gradients. This is PyTorch autocast's split,
//! less the depthwise convolution: on the portable backend it is `k * k` elementwise
//! multiply-adds (see [`crate::portable`]), which would each round to bf16 if run in it, so it
//! runs in f32 on bf16-rounded operands and rounds its result once, like a bf16 kernel with
//! f32 accumulation.
//!
//! On CUDA the products run in bf16 tensors. candle's CPU backend has no bf16 matrix product,
//! so on the CPU the same rounding points are emulated: operands and results are rounded to
//! bf16 and kept in f32 (`to_dtype(BF16)` then `to_dtype(F32)`), and the products run in f32
//! on the rounded values. A product of two bf16 values is exact in f32, so the emulation
//! differs from the GPU kernels only in the order of the f32 accumulation: running the same
//! training on the CPU measures the accuracy effect of bf16 (test
//! `bf16_rounds_at_the_products_and_nowhere_else`). The backward pass rounds at the same
//! points, through candle's gradient of `to_dtype`.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The precision of a supernet's products (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// Convolutions and linear layers in bf16, the rest in f32; the portable backend only.
    Bf16,
}

impl Precision {
    /// Whether this is the default, [`Precision::F32`] (for `skip_serializing_if`, so that a
    /// config that does not set it serialises, and keys, as before the field existed).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// `t` as an operand of a product: unchanged in f32; in bf16, converted on a GPU and
    /// rounded (kept f32) on the CPU.
    pub(crate) fn operand(self, t: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Precision::F32 => t.clone(),
            Precision::Bf16 if t.device().is_cpu() => round_bf16(t)?,
            Precision::Bf16 => t.to_dtype(DType::BF16)?,
        })
    }

    /// A product's result back in f32: unchanged in f32; rounded to bf16 first when it was
    /// computed in f32 on rounded operands (the CPU's emulation, the depthwise sum).
    pub(crate) fn result(self, t: &Tensor) -> Result<Tensor> {
        Ok(match (self, t.dtype()) {
            (Precision::F32, _) => t.clone(),
            (Precision::Bf16, DType::BF16) => t.to_dtype(DType::F32)?,
            (Precision::Bf16, _) => round_bf16(t)?,
        })
    }

    /// `t` rounded to what bf16 holds, kept in its dtype (f32): for operands of a product
    /// that runs in f32 on every device (the depthwise sum).
    pub(crate) fn rounded(self, t: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Precision::F32 => t.clone(),
            Precision::Bf16 => round_bf16(t)?,
        })
    }
}

/// Rounds an f32 tensor to the nearest bf16 value (ties to even), keeping it f32.
fn round_bf16(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::BF16)?.to_dtype(t.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rounding_is_bf16_round_to_nearest_even_and_f32_is_untouched() {
        // 1 + 2^-8 is halfway between two bf16 values (8 bits of mantissa): ties to even, 1.0;
        // 1 + 3 * 2^-8 is halfway too and rounds up to 1 + 2^-6 (the even neighbour)
        let v = [
            1.0f32,
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            -0.0,
            3.0e-3,
        ];
        let t = Tensor::new(&v, &Device::Cpu).unwrap();
        let r: Vec<f32> = Precision::Bf16.rounded(&t).unwrap().to_vec1().unwrap();
        assert_eq!(&r[..4], &[1.0, 1.0, 1.0 + 2f32.powi(-6), -0.0]);
        assert!(r[4].to_bits() & 0xffff == 0 && (r[4] - 3.0e-3).abs() < 3.0e-3 / 128.0);
        assert!(r[3].is_sign_negative());
        let p = Precision::F32;
        let same: Vec<f32> = p.operand(&t).unwrap().to_vec1().unwrap();
        assert_eq!(same, v.to_vec());
        let same: Vec<f32> = p.result(&t).unwrap().to_vec1().unwrap();
        assert_eq!(same, v.to_vec());
        // on the CPU an operand stays f32 (candle's CPU backend has no bf16 matmul)
        assert_eq!(Precision::Bf16.operand(&t).unwrap().dtype(), DType::F32);
    }

    #[test]
    fn serde_names_and_the_default() {
        assert_eq!(serde_json::to_string(&Precision::Bf16).unwrap(), "\"bf16\"");
        assert_eq!(
            serde_json::from_str::<Precision>("\"f32\"").unwrap(),
            Precision::F32
        );
        assert!(Precision::default().is_f32());
        assert!(serde_json::from_str::<Precision>("\"fp16\"").is_err());
    }
}

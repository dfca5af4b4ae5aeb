//! The loss terms of Section 3.2, batch-averaged.
//!
//! The paper writes sums over a mini-batch; we average over the batch (PyTorch's default and
//! FixMatch's `1 / (mu B)`), which only rescales the learning rate. FixMatch divides by the
//! whole unlabelled batch, not by the number of confident images.

use candle_core::{D, DType, Tensor};
use candle_nn::ops::{log_softmax, softmax_last_dim};

use crate::error::Result;

/// Cross-entropy against label-smoothed one-hot targets `LS_alpha(y) = (1 - alpha) onehot(y) +
/// alpha / C`, per sample.
///
/// # Shapes
/// - `logits`: `[B, C]`, `labels`: `[B]` u32; returns `[B]`
pub fn smoothed_ce_per_sample(logits: &Tensor, labels: &Tensor, alpha: f64) -> Result<Tensor> {
    let c = logits.dim(D::Minus1)?;
    let logp = log_softmax(logits, D::Minus1)?;
    let nll = logp
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?;
    if alpha == 0.0 {
        return Ok(nll);
    }
    let uniform = (logp.sum(D::Minus1)?.neg()? / c as f64)?;
    Ok(((nll * (1.0 - alpha))? + (uniform * alpha)?)?)
}

/// Batch mean of [`smoothed_ce_per_sample`]: `L^lab_max` of a batch.
pub fn smoothed_ce(logits: &Tensor, labels: &Tensor, alpha: f64) -> Result<Tensor> {
    Ok(smoothed_ce_per_sample(logits, labels, alpha)?.mean_all()?)
}

/// Distillation of `student` towards the detached soft predictions of `teacher`, batch mean
/// of `KL(p_teacher || p_student)`.
///
/// The paper's `CE(theta_A(x), theta_max(x))` is the soft cross-entropy
/// `-sum p_t log p_s`; it differs from this KL by the teacher's entropy, a constant with no
/// gradient (the teacher is detached), so the update is the same and the value reads 0 when
/// the student matches the teacher.
///
/// # Shapes
/// - `student`, `teacher`: `[B, C]` logits; returns a scalar
pub fn distillation(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let t = teacher.detach();
    let log_pt = log_softmax(&t, D::Minus1)?;
    let pt = log_pt.exp()?;
    let log_ps = log_softmax(student, D::Minus1)?;
    let kl = (pt * (log_pt - log_ps)?)?.sum(D::Minus1)?;
    Ok(kl.mean_all()?)
}

/// FixMatch's pseudo-labels and mask from the teacher's logits on the weak view (detached):
/// `(argmax, mask)` where `mask[i] = 1` when the largest probability is strictly above
/// `threshold`.
///
/// # Shapes
/// - `weak_logits`: `[B, C]`; returns `[B]` u32 and `[B]` f32
pub fn pseudo_labels(weak_logits: &Tensor, threshold: f64) -> Result<(Tensor, Tensor)> {
    let p = softmax_last_dim(&weak_logits.detach())?;
    let labels = p.argmax(D::Minus1)?;
    let mask = p.max(D::Minus1)?.gt(threshold)?.to_dtype(DType::F32)?;
    Ok((labels, mask))
}

/// The FixMatch term `L^FM` on one batch: label-smoothed CE of the strong-view logits against
/// the pseudo-labels of the weak view, masked, averaged over the whole batch. Returns the loss
/// and the mask rate (fraction of confident images).
///
/// # Shapes
/// - `weak_logits`, `strong_logits`: `[B, C]`
pub fn fixmatch(
    weak_logits: &Tensor,
    strong_logits: &Tensor,
    threshold: f64,
    alpha: f64,
) -> Result<(Tensor, f64)> {
    let (labels, mask) = pseudo_labels(weak_logits, threshold)?;
    let ce = smoothed_ce_per_sample(strong_logits, &labels, alpha)?;
    let rate = f64::from(mask.mean_all()?.to_scalar::<f32>()?);
    Ok(((ce * mask)?.mean_all()?, rate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t2(v: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (v.len(), 3), &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    fn log_softmax_ref(z: &[f32]) -> Vec<f64> {
        let m = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        z.iter().map(|&v| v as f64 - lse).collect()
    }

    #[test]
    fn smoothed_ce_matches_a_hand_computation() {
        // logits [2, 0, -1], label 0, alpha 0.1:
        // logp = z - lse, lse = ln(e^2 + 1 + e^-1) = 2.1698...
        // loss = 0.9 * -logp[0] + 0.1 * mean_c(-logp[c])
        let z = [[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]];
        let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let got = smoothed_ce_per_sample(&t2(&z), &y, 0.1).unwrap();
        let got: Vec<f32> = got.to_vec1().unwrap();
        for (i, (row, &label)) in z.iter().zip(&[0usize, 1]).enumerate() {
            let lp = log_softmax_ref(row);
            let want = 0.9 * -lp[label] + 0.1 * -lp.iter().sum::<f64>() / 3.0;
            assert!(
                (f64::from(got[i]) - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                got[i]
            );
        }
        // alpha 0 is plain cross-entropy
        let plain = scalar(&smoothed_ce(&t2(&z), &y, 0.0).unwrap());
        let want = scalar(&candle_nn::loss::cross_entropy(&t2(&z), &y).unwrap());
        assert!((plain - want).abs() < 1e-6);
    }

    #[test]
    fn distillation_is_zero_for_equal_logits_and_kl_otherwise() {
        let s = t2(&[[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]);
        assert!(scalar(&distillation(&s, &s).unwrap()).abs() < 1e-6);
        let t = t2(&[[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]);
        let got = scalar(&distillation(&s, &t).unwrap());
        let rows = [
            ([1.0f32, 2.0, 3.0], [3.0f32, 2.0, 1.0]),
            ([0.0, -1.0, 4.0], [0.0, 0.0, 0.0]),
        ];
        let want: f64 = rows
            .iter()
            .map(|(s, t)| {
                let (ls, lt) = (log_softmax_ref(s), log_softmax_ref(t));
                (0..3).map(|c| lt[c].exp() * (lt[c] - ls[c])).sum::<f64>()
            })
            .sum::<f64>()
            / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn fixmatch_mask_obeys_the_threshold() {
        // softmax of [ln 96, ln 4, -inf-ish]: max prob ~0.96 > 0.95 -> kept;
        // [ln 95, ln 5, ...]: max prob 0.95 exactly is not strictly above -> dropped;
        // uniform: dropped.
        let big = -30.0f32;
        let weak = t2(&[
            [96f32.ln(), 4f32.ln(), big],
            [95f32.ln(), 5f32.ln(), big],
            [0.0, 0.0, 0.0],
        ]);
        let (labels, mask) = pseudo_labels(&weak, 0.95).unwrap();
        assert_eq!(labels.to_vec1::<u32>().unwrap()[0], 0);
        assert_eq!(mask.to_vec1::<f32>().unwrap(), [1.0, 0.0, 0.0]);
        let strong = t2(&[[0.0, 1.0, 2.0], [5.0, 5.0, 5.0], [1.0, 1.0, 1.0]]);
        let (loss, rate) = fixmatch(&weak, &strong, 0.95, 0.1).unwrap();
        assert!((rate - 1.0 / 3.0).abs() < 1e-6);
        // only row 0 counts, divided by the batch of 3
        let lp = log_softmax_ref(&[0.0, 1.0, 2.0]);
        let want = (0.9 * -lp[0] + 0.1 * -lp.iter().sum::<f64>() / 3.0) / 3.0;
        assert!((scalar(&loss) - want).abs() < 1e-5);
        // threshold 1: nothing passes, loss 0
        let (loss, rate) = fixmatch(&weak, &strong, 1.0, 0.1).unwrap();
        assert_eq!((scalar(&loss), rate), (0.0, 0.0));
    }
}

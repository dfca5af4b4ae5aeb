//! The loss terms of Section 3.2, batch-averaged.
//!
//! The paper writes sums over a mini-batch; we average over the batch (PyTorch's default and
//! FixMatch's `1 / (mu B)`), which only rescales the learning rate. FixMatch divides by the
//! whole unlabelled batch, not by the number of confident images.

use candle_core::{D, DType, Tensor};
use candle_nn::ops::{log_softmax, softmax_last_dim};

use crate::config::Variant;
use crate::error::{Result, config_err};

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

/// The logits of one iteration's forward passes (Algorithm 1, lines 7-15).
#[derive(Clone, Copy, Debug)]
pub struct TofaLogits<'a> {
    /// Maxnet on the labelled weak view `[Bl, C]` (with gradient).
    pub max_lab: &'a Tensor,
    /// True labels of the labelled batch `[Bl]`.
    pub labels: &'a Tensor,
    /// Maxnet on the unlabelled weak view `[Bu, C]` (teacher; detached here). Needed by every
    /// variant but `lab`.
    pub max_weak: Option<&'a Tensor>,
    /// Maxnet on the unlabelled strong view `[Bu, C]`. Needed by `fm` and `full`.
    pub max_strong: Option<&'a Tensor>,
    /// Each sandwich subnet on the labelled weak view (empty for a single network).
    pub sub_lab: &'a [Tensor],
    /// Each sandwich subnet on the unlabelled weak view. Needed by `dist` and `full`.
    pub sub_unlab: &'a [Tensor],
}

/// The terms of one iteration and their sum.
#[derive(Clone, Debug)]
pub struct LossTerms {
    /// What is optimised: `lab + fm + dist_lab + dist_unlab` (terms that are on).
    pub total: Tensor,
    /// `L^lab_max`.
    pub lab: f64,
    /// `L^FM`.
    pub fm: Option<f64>,
    /// FixMatch mask rate.
    pub mask_rate: Option<f64>,
    /// `sum over subnets of L^dist_sub(x_l)`, part of eq. (3)'s `L^lab`.
    pub dist_lab: Option<f64>,
    /// `sum over subnets of L^dist_sub(x_u)`, the `L^dist` of eq. (4).
    pub dist_unlab: Option<f64>,
}

fn value(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.to_scalar::<f32>()?))
}

/// The loss of `variant` (eq. (4)) from one iteration's logits: `L^lab_max` always, the
/// labelled distillation of every subnet in `sub_lab` always (eq. (3)), `L^FM` for `fm` and
/// `full`, the unlabelled distillation for `dist` and `full`. With no subnets this is the
/// single-network loss (labelled CE, plus FixMatch for `fm`).
pub fn tofa_loss(
    variant: Variant,
    l: &TofaLogits<'_>,
    threshold: f64,
    alpha: f64,
) -> Result<LossTerms> {
    let lab = smoothed_ce(l.max_lab, l.labels, alpha)?;
    let mut terms = LossTerms {
        total: lab.clone(),
        lab: value(&lab)?,
        fm: None,
        mask_rate: None,
        dist_lab: None,
        dist_unlab: None,
    };
    let missing = |what: &str| {
        config_err(
            "logits",
            format!("variant {} needs the {what} logits", variant.name()),
        )
    };
    if variant.fixmatch() {
        let weak = l
            .max_weak
            .ok_or_else(|| missing("maxnet weak unlabelled"))?;
        let strong = l
            .max_strong
            .ok_or_else(|| missing("maxnet strong unlabelled"))?;
        let (fm, rate) = fixmatch(weak, strong, threshold, alpha)?;
        terms.fm = Some(value(&fm)?);
        terms.mask_rate = Some(rate);
        terms.total = (terms.total + fm)?;
    }
    let teacher_l = l.max_lab.detach();
    let mut dl: Option<Tensor> = None;
    for s in l.sub_lab {
        let d = distillation(s, &teacher_l)?;
        dl = Some(match dl {
            None => d,
            Some(a) => (a + d)?,
        });
    }
    if let Some(d) = dl {
        terms.dist_lab = Some(value(&d)?);
        terms.total = (terms.total + d)?;
    }
    if variant.distil_unlabelled() && !l.sub_lab.is_empty() {
        let teacher_u = l
            .max_weak
            .ok_or_else(|| missing("maxnet weak unlabelled"))?
            .detach();
        if l.sub_unlab.len() != l.sub_lab.len() {
            return Err(missing("subnet unlabelled"));
        }
        let mut du: Option<Tensor> = None;
        for s in l.sub_unlab {
            let d = distillation(s, &teacher_u)?;
            du = Some(match du {
                None => d,
                Some(a) => (a + d)?,
            });
        }
        if let Some(d) = du {
            terms.dist_unlab = Some(value(&d)?);
            terms.total = (terms.total + d)?;
        }
    }
    Ok(terms)
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

    /// Reference values in f64: label-smoothed CE and KL of one row.
    fn ls_ce_ref(z: &[f32], y: usize, alpha: f64) -> f64 {
        let lp = log_softmax_ref(z);
        (1.0 - alpha) * -lp[y] + alpha * -lp.iter().sum::<f64>() / lp.len() as f64
    }

    fn kl_ref(s: &[f32], t: &[f32]) -> f64 {
        let (ls, lt) = (log_softmax_ref(s), log_softmax_ref(t));
        (0..s.len()).map(|c| lt[c].exp() * (lt[c] - ls[c])).sum()
    }

    #[test]
    fn each_variant_equals_a_hand_computed_value_on_fixed_logits() {
        // labelled batch of 2, unlabelled batch of 2, 3 classes, two subnets
        let max_lab = [[2.0f32, 0.5, -1.0], [0.0, 1.0, 0.5]];
        let labels = [0usize, 2];
        // row 0 confident (p ~ 0.997 for class 1), row 1 not
        let max_weak = [[-2.0f32, 4.0, -2.0], [0.2, 0.1, 0.0]];
        let max_strong = [[0.5f32, 1.5, 0.0], [1.0, 0.0, 0.0]];
        let sub_lab = [
            [[1.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]],
            [[2.0, 0.5, -1.0], [0.3, 0.2, 0.1]],
        ];
        let sub_unlab = [
            [[0.0f32, 1.0, 0.0], [0.5, 0.5, 0.5]],
            [[-1.0, 2.0, 0.0], [0.0, 0.1, 0.2]],
        ];
        let (thr, alpha) = (0.95, 0.1);

        let lab = (0..2)
            .map(|i| ls_ce_ref(&max_lab[i], labels[i], alpha))
            .sum::<f64>()
            / 2.0;
        // FixMatch: only row 0 passes, pseudo-label 1, divided by the batch of 2
        let fm = ls_ce_ref(&max_strong[0], 1, alpha) / 2.0;
        let dist = |subs: &[[[f32; 3]; 2]; 2], teacher: &[[f32; 3]; 2]| -> f64 {
            subs.iter()
                .map(|s| (0..2).map(|i| kl_ref(&s[i], &teacher[i])).sum::<f64>() / 2.0)
                .sum()
        };
        let dl = dist(&sub_lab, &max_lab);
        let du = dist(&sub_unlab, &max_weak);

        let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let (ml, mw, ms) = (t2(&max_lab), t2(&max_weak), t2(&max_strong));
        let sl: Vec<Tensor> = sub_lab.iter().map(|s| t2(s)).collect();
        let su: Vec<Tensor> = sub_unlab.iter().map(|s| t2(s)).collect();
        let logits = TofaLogits {
            max_lab: &ml,
            labels: &y,
            max_weak: Some(&mw),
            max_strong: Some(&ms),
            sub_lab: &sl,
            sub_unlab: &su,
        };
        for (v, want) in [
            (Variant::Lab, lab + dl),
            (Variant::Fm, lab + dl + fm),
            (Variant::Dist, lab + dl + du),
            (Variant::Full, lab + dl + fm + du),
        ] {
            let t = tofa_loss(v, &logits, thr, alpha).unwrap();
            let got = scalar(&t.total);
            assert!((got - want).abs() < 1e-5, "{v:?}: {got} vs {want}");
            assert!((t.lab - lab).abs() < 1e-5);
            assert!((t.dist_lab.unwrap() - dl).abs() < 1e-5);
            assert_eq!(t.fm.is_some(), v.fixmatch());
            assert_eq!(t.dist_unlab.is_some(), v.distil_unlabelled());
            if let Some(r) = t.mask_rate {
                assert_eq!(r, 0.5);
            }
        }
        // fm without the strong logits is an error naming what is missing
        let err = tofa_loss(
            Variant::Fm,
            &TofaLogits {
                max_strong: None,
                ..logits
            },
            thr,
            alpha,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("strong"), "{err}");
    }
}

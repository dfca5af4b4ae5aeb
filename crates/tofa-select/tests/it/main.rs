//! Integration tests of tofa-select on the `tiny` space with synthetic evaluators.

mod device;
mod search;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tofa_nn::{SearchSpace, SubnetConfig, cost};
use tofa_select::{BoxError, Evaluation, Evaluator};

pub fn tiny() -> SearchSpace {
    SearchSpace::builtin("tiny").unwrap()
}

pub fn macs(space: &SearchSpace, c: &SubnetConfig) -> f64 {
    cost(space, c).unwrap().macs as f64
}

/// Accuracy a known function of the architecture plus seeded per-subnet noise: more
/// multiply-adds help, kernel 5 in the last stage helps, the narrow head hurts.
pub struct Synthetic {
    pub space: SearchSpace,
    pub noise: f64,
    pub images: u64,
    pub calls: u64,
}

impl Synthetic {
    pub fn new(noise: f64) -> Self {
        Synthetic {
            space: tiny(),
            noise,
            images: 100,
            calls: 0,
        }
    }

    pub fn truth(&self, c: &SubnetConfig) -> f64 {
        let lo = macs(&self.space, &SubnetConfig::minnet(&self.space));
        let hi = macs(&self.space, &SubnetConfig::maxnet(&self.space));
        let m = (macs(&self.space, c) - lo) / (hi - lo);
        0.4 + 0.3 * m
            + if c.stages[2].kernel == 5 { 0.04 } else { 0.0 }
            + if c.head_width == 48 { -0.03 } else { 0.0 }
    }

    fn noise_of(&self, c: &SubnetConfig) -> f64 {
        let h = c.id().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let mut rng = ChaCha8Rng::seed_from_u64(h);
        rng.random_range(-self.noise..=self.noise)
    }
}

impl Evaluator for Synthetic {
    fn evaluate(&mut self, c: &SubnetConfig) -> Result<Evaluation, BoxError> {
        self.calls += 1;
        Ok(Evaluation {
            accuracy: (self.truth(c) + self.noise_of(c)).clamp(0.0, 1.0),
            images: self.images,
        })
    }
}

//! Subnet configurations: one choice per elastic dimension of a [`SearchSpace`].
//!
//! # Canonical id
//!
//! A config has a short id, stable across runs and machines, that [`SubnetConfig::from_id`]
//! parses back:
//!
//! ```text
//! id     = "r" RES "-s" STEM "-w" LIST "-d" LIST "-k" LIST "-e" LIST "-h" HEAD
//! LIST   = INT ("." INT)*        one entry per stage, in stage order
//! ```
//!
//! e.g. `r32-s8-w8.16.24-d1.2.2-k3.5.5-e1.3.3-h64`: resolution 32, stem width 8, stage widths
//! 8/16/24, depths 1/2/2, kernels 3/5/5, expansion ratios 1/3/3, head width 64.

use std::fmt;

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result, config_err};
use crate::space::SearchSpace;

/// The choices of one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Output channels.
    pub width: usize,
    /// Number of blocks run (the first `depth`).
    pub depth: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Expansion ratio.
    pub expand: usize,
}

/// One subnet of a search space.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    /// Input resolution (square).
    pub resolution: usize,
    /// Stem output channels.
    pub stem_width: usize,
    /// Per-stage choices.
    pub stages: Vec<StageConfig>,
    /// Head feature width.
    pub head_width: usize,
}

fn pick(rng: &mut (impl RngCore + ?Sized), v: &[usize]) -> usize {
    v[rng.random_range(0..v.len())]
}

fn last(v: &[usize]) -> usize {
    v[v.len() - 1]
}

impl SubnetConfig {
    /// The largest subnet (every choice at its maximum).
    pub fn maxnet(space: &SearchSpace) -> Self {
        Self::extreme(space, last)
    }

    /// The smallest subnet (every choice at its minimum).
    pub fn minnet(space: &SearchSpace) -> Self {
        Self::extreme(space, |v| v[0])
    }

    /// Every elastic dimension at the choice `round(q * (n - 1))` of its `n` choices
    /// (`0 <= q <= 1`; halves round up): a family of uniformly scaled networks, the maxnet at 1,
    /// the minnet at 0.
    pub fn uniform(space: &SearchSpace, q: f64) -> Self {
        Self::extreme(space, |v| v[((v.len() - 1) as f64 * q).round() as usize])
    }

    fn extreme(space: &SearchSpace, f: impl Fn(&[usize]) -> usize) -> Self {
        SubnetConfig {
            resolution: f(&space.resolutions),
            stem_width: f(&space.stem.widths),
            stages: space
                .stages
                .iter()
                .map(|s| StageConfig {
                    width: f(&s.widths),
                    depth: f(&s.depths),
                    kernel: f(&s.kernels),
                    expand: f(&s.expands),
                })
                .collect(),
            head_width: f(&space.head.widths),
        }
    }

    /// A uniformly random subnet (each choice independently uniform, so uniform over the space),
    /// drawn from the caller's RNG.
    pub fn sample(space: &SearchSpace, rng: &mut (impl RngCore + ?Sized)) -> Self {
        let resolution = pick(rng, &space.resolutions);
        let stem_width = pick(rng, &space.stem.widths);
        let stages = space
            .stages
            .iter()
            .map(|s| StageConfig {
                width: pick(rng, &s.widths),
                depth: pick(rng, &s.depths),
                kernel: pick(rng, &s.kernels),
                expand: pick(rng, &s.expands),
            })
            .collect();
        let head_width = pick(rng, &space.head.widths);
        SubnetConfig {
            resolution,
            stem_width,
            stages,
            head_width,
        }
    }

    /// Each choice is redrawn uniformly with probability `prob` (evolutionary search).
    pub fn mutate(
        &self,
        space: &SearchSpace,
        prob: f64,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Self {
        let mut out = self.clone();
        let mut m = |cur: &mut usize, v: &[usize]| {
            if rng.random_bool(prob.clamp(0.0, 1.0)) {
                *cur = pick(rng, v);
            }
        };
        m(&mut out.resolution, &space.resolutions);
        m(&mut out.stem_width, &space.stem.widths);
        for (c, s) in out.stages.iter_mut().zip(&space.stages) {
            m(&mut c.width, &s.widths);
            m(&mut c.depth, &s.depths);
            m(&mut c.kernel, &s.kernels);
            m(&mut c.expand, &s.expands);
        }
        m(&mut out.head_width, &space.head.widths);
        out
    }

    /// Each choice taken from `self` or `other` with probability 1/2 (uniform crossover).
    /// Both parents must have the same number of stages.
    pub fn crossover(&self, other: &Self, rng: &mut (impl RngCore + ?Sized)) -> Self {
        let mut c = |a: usize, b: usize| if rng.random_bool(0.5) { a } else { b };
        SubnetConfig {
            resolution: c(self.resolution, other.resolution),
            stem_width: c(self.stem_width, other.stem_width),
            stages: self
                .stages
                .iter()
                .zip(&other.stages)
                .map(|(a, b)| StageConfig {
                    width: c(a.width, b.width),
                    depth: c(a.depth, b.depth),
                    kernel: c(a.kernel, b.kernel),
                    expand: c(a.expand, b.expand),
                })
                .collect(),
            head_width: c(self.head_width, other.head_width),
        }
    }

    /// Checks that every choice belongs to `space`; the error names the field.
    pub fn validate(&self, space: &SearchSpace) -> Result<()> {
        let chk = |field: String, v: usize, choices: &[usize]| {
            if choices.contains(&v) {
                Ok(())
            } else {
                Err(config_err(field, format!("{v} is not one of {choices:?}")))
            }
        };
        chk("resolution".into(), self.resolution, &space.resolutions)?;
        chk("stem_width".into(), self.stem_width, &space.stem.widths)?;
        if self.stages.len() != space.stages.len() {
            return Err(config_err(
                "stages",
                format!(
                    "{} stages but the space has {}",
                    self.stages.len(),
                    space.stages.len()
                ),
            ));
        }
        for (i, (c, s)) in self.stages.iter().zip(&space.stages).enumerate() {
            chk(format!("stages[{i}].width"), c.width, &s.widths)?;
            chk(format!("stages[{i}].depth"), c.depth, &s.depths)?;
            chk(format!("stages[{i}].kernel"), c.kernel, &s.kernels)?;
            chk(format!("stages[{i}].expand"), c.expand, &s.expands)?;
        }
        chk("head_width".into(), self.head_width, &space.head.widths)
    }

    /// The canonical id (see the module docs for the grammar).
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// Parses a canonical id.
    pub fn from_id(id: &str) -> Result<Self> {
        let err = |msg: String| NnError::ConfigId {
            id: id.to_string(),
            msg,
        };
        let parts: Vec<&str> = id.split('-').collect();
        let tags = ["r", "s", "w", "d", "k", "e", "h"];
        if parts.len() != tags.len() {
            return Err(err(format!("expected {} dash-separated parts", tags.len())));
        }
        let mut lists = Vec::with_capacity(tags.len());
        for (p, tag) in parts.iter().zip(tags) {
            let body = p
                .strip_prefix(tag)
                .ok_or_else(|| err(format!("part `{p}` should start with `{tag}`")))?;
            let nums = body
                .split('.')
                .map(|n| {
                    n.parse::<usize>()
                        .map_err(|_| err(format!("`{n}` in part `{p}` is not a number")))
                })
                .collect::<Result<Vec<_>>>()?;
            lists.push(nums);
        }
        let n = lists[2].len();
        if lists[3..6].iter().any(|l| l.len() != n) {
            return Err(err("w, d, k and e lists differ in length".into()));
        }
        for (i, tag) in [(0, "r"), (1, "s"), (6, "h")] {
            if lists[i].len() != 1 {
                return Err(err(format!("part `{tag}` takes one number")));
            }
        }
        Ok(SubnetConfig {
            resolution: lists[0][0],
            stem_width: lists[1][0],
            stages: (0..n)
                .map(|i| StageConfig {
                    width: lists[2][i],
                    depth: lists[3][i],
                    kernel: lists[4][i],
                    expand: lists[5][i],
                })
                .collect(),
            head_width: lists[6][0],
        })
    }
}

impl fmt::Display for SubnetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |g: fn(&StageConfig) -> usize| {
            self.stages
                .iter()
                .map(|s| g(s).to_string())
                .collect::<Vec<_>>()
                .join(".")
        };
        write!(
            f,
            "r{}-s{}-w{}-d{}-k{}-e{}-h{}",
            self.resolution,
            self.stem_width,
            list(|s| s.width),
            list(|s| s.depth),
            list(|s| s.kernel),
            list(|s| s.expand),
            self.head_width
        )
    }
}

impl SearchSpace {
    /// Number of distinct subnets (resolution included).
    pub fn size(&self) -> u128 {
        let mut n =
            (self.resolutions.len() * self.stem.widths.len() * self.head.widths.len()) as u128;
        for s in &self.stages {
            n *= (s.widths.len() * s.depths.len() * s.kernels.len() * s.expands.len()) as u128;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn tiny() -> SearchSpace {
        SearchSpace::builtin("tiny").unwrap()
    }

    #[test]
    fn id_round_trips_and_is_pinned() {
        let s = tiny();
        assert_eq!(
            SubnetConfig::maxnet(&s).id(),
            "r32-s8-w8.16.24-d1.2.2-k3.5.5-e1.3.3-h64"
        );
        assert_eq!(
            SubnetConfig::minnet(&s).id(),
            "r32-s8-w8.12.16-d1.1.1-k3.3.3-e1.2.2-h48"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let c = SubnetConfig::sample(&s, &mut rng);
            assert_eq!(SubnetConfig::from_id(&c.id()).unwrap(), c);
        }
    }

    #[test]
    fn bad_ids_are_rejected() {
        for (id, want) in [
            ("r32-s8", "expected 7"),
            ("r32-s8-w8.16.24-d1.2-k3.5.5-e1.3.3-h64", "differ in length"),
            ("r32-s8-w8.x.24-d1.2.2-k3.5.5-e1.3.3-h64", "`x` in part"),
            (
                "q32-s8-w8.16.24-d1.2.2-k3.5.5-e1.3.3-h64",
                "should start with `r`",
            ),
        ] {
            let e = SubnetConfig::from_id(id).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn sampling_is_seeded_and_in_space() {
        let s = SearchSpace::builtin("paper").unwrap();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| SubnetConfig::sample(&s, &mut rng).id())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            let c = SubnetConfig::sample(&s, &mut rng);
            c.validate(&s).unwrap();
            let m = c.mutate(&s, 0.3, &mut rng);
            m.validate(&s).unwrap();
            let x = c.crossover(&m, &mut rng);
            x.validate(&s).unwrap();
            for (i, st) in x.stages.iter().enumerate() {
                assert!(st.width == c.stages[i].width || st.width == m.stages[i].width);
            }
        }
        assert!(c_mutate_identity(&s));
    }

    fn c_mutate_identity(s: &SearchSpace) -> bool {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let c = SubnetConfig::sample(s, &mut rng);
        c.mutate(s, 0.0, &mut rng) == c
    }

    #[test]
    fn sampling_covers_every_choice() {
        let s = tiny();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let c = SubnetConfig::sample(&s, &mut rng);
            seen.insert((c.stages[1].kernel, c.stages[2].depth, c.head_width));
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn validate_names_the_field() {
        let s = tiny();
        let mut c = SubnetConfig::maxnet(&s);
        c.stages[2].kernel = 7;
        let e = c.validate(&s).unwrap_err().to_string();
        assert!(
            e.contains("stages[2].kernel: 7 is not one of [3, 5]"),
            "{e}"
        );
    }

    #[test]
    fn space_sizes() {
        // tiny: 1 res * 1 stem * 2 head * (1) * (2*2*2*2) * (2*2*2*2)
        assert_eq!(tiny().size(), 2 * 16 * 16);
        let p = SearchSpace::builtin("paper").unwrap().size();
        let stage = |w: u128, d: u128, e: u128| w * d * 2 * e;
        let want = 5
            * 2
            * 2
            * stage(2, 2, 1)
            * stage(2, 3, 3)
            * stage(2, 4, 3)
            * stage(2, 4, 3)
            * stage(2, 6, 3)
            * stage(2, 6, 3)
            * stage(2, 2, 3);
        assert_eq!(p, want);
    }
}

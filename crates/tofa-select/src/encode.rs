//! Architecture encodings for the accuracy predictor.
//!
//! The dimensions of a subnet, in this order: resolution, stem width, then per stage width,
//! depth, kernel and expansion ratio, then head width. A dimension with a single choice in
//! the space carries no information and is left out.
//!
//! - [`Encoding::OneHot`] (OFA's encoding): per dimension, one feature per choice of the
//!   space, 1 at the chosen one and 0 elsewhere. OFA encodes kernel and expansion per block,
//!   with zeros for blocks beyond the depth; our configs choose kernel and expansion per stage
//!   (every active block of a stage shares them), so a per-stage one-hot carries the same
//!   information.
//! - [`Encoding::Ordinal`]: per dimension, one feature, the index of the choice divided by
//!   (number of choices - 1), in `[0, 1]`.

use serde::{Deserialize, Serialize};
use tofa_nn::{SearchSpace, SubnetConfig};

use crate::error::Result;

/// How a subnet becomes a feature vector (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One feature per choice of every dimension.
    #[default]
    OneHot,
    /// One feature per dimension: normalised choice index.
    Ordinal,
}

/// Encodes subnets of one space.
#[derive(Clone, Debug)]
pub struct Encoder {
    kind: Encoding,
    /// (name, choices) of every dimension with more than one choice.
    dims: Vec<(String, Vec<usize>)>,
}

fn values(cfg: &SubnetConfig) -> Vec<usize> {
    let mut v = vec![cfg.resolution, cfg.stem_width];
    for s in &cfg.stages {
        v.extend([s.width, s.depth, s.kernel, s.expand]);
    }
    v.push(cfg.head_width);
    v
}

impl Encoder {
    /// The encoder of `space`.
    pub fn new(space: &SearchSpace, kind: Encoding) -> Self {
        let mut all = vec![
            ("resolution".to_string(), space.resolutions.clone()),
            ("stem_width".to_string(), space.stem.widths.clone()),
        ];
        for (i, s) in space.stages.iter().enumerate() {
            all.push((format!("stages[{i}].width"), s.widths.clone()));
            all.push((format!("stages[{i}].depth"), s.depths.clone()));
            all.push((format!("stages[{i}].kernel"), s.kernels.clone()));
            all.push((format!("stages[{i}].expand"), s.expands.clone()));
        }
        all.push(("head_width".to_string(), space.head.widths.clone()));
        Encoder { kind, dims: all }
    }

    fn informative(&self) -> impl Iterator<Item = (usize, &(String, Vec<usize>))> {
        self.dims.iter().enumerate().filter(|(_, d)| d.1.len() > 1)
    }

    /// Length of an encoded vector.
    pub fn dim(&self) -> usize {
        self.informative()
            .map(|(_, (_, c))| match self.kind {
                Encoding::OneHot => c.len(),
                Encoding::Ordinal => 1,
            })
            .sum()
    }

    /// The encoding kind.
    pub fn kind(&self) -> Encoding {
        self.kind
    }

    /// Feature names, one per entry of an encoded vector (`stages[1].kernel=5` for one-hot).
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, (name, choices)) in self.informative() {
            match self.kind {
                Encoding::OneHot => out.extend(choices.iter().map(|c| format!("{name}={c}"))),
                Encoding::Ordinal => out.push(name.clone()),
            }
        }
        out
    }

    /// The encoded vector of `cfg` (which must belong to the space).
    pub fn encode(&self, cfg: &SubnetConfig) -> Result<Vec<f64>> {
        let v = values(cfg);
        if v.len() != self.dims.len() {
            return Err(crate::error::input_err(format!(
                "encoding: subnet {} has {} stages, the space {}",
                cfg.id(),
                cfg.stages.len(),
                (self.dims.len() - 3) / 4
            )));
        }
        let mut out = Vec::with_capacity(self.dim());
        for (i, (name, choices)) in self.informative() {
            let idx = choices.iter().position(|&c| c == v[i]).ok_or_else(|| {
                crate::error::input_err(format!(
                    "encoding: subnet {}: {name} = {} is not one of {choices:?}",
                    cfg.id(),
                    v[i]
                ))
            })?;
            match self.kind {
                Encoding::OneHot => {
                    out.extend((0..choices.len()).map(|j| if j == idx { 1.0 } else { 0.0 }))
                }
                Encoding::Ordinal => out.push(idx as f64 / (choices.len() - 1) as f64),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_encodings() {
        let s = SearchSpace::builtin("tiny").unwrap();
        // tiny: stages 1 and 2 have 2 choices in each of 4 dims, the head has 2; the rest 1
        let oh = Encoder::new(&s, Encoding::OneHot);
        assert_eq!(oh.dim(), 2 * 4 * 2 + 2);
        let max = oh.encode(&SubnetConfig::maxnet(&s)).unwrap();
        assert_eq!(max.iter().sum::<f64>(), 9.0);
        assert_eq!(&max[..2], &[0.0, 1.0]);
        assert_eq!(oh.feature_names()[0], "stages[1].width=12");
        let ord = Encoder::new(&s, Encoding::Ordinal);
        assert_eq!(ord.dim(), 9);
        assert_eq!(ord.encode(&SubnetConfig::minnet(&s)).unwrap(), vec![0.0; 9]);
        assert_eq!(ord.encode(&SubnetConfig::maxnet(&s)).unwrap(), vec![1.0; 9]);
        let mut bad = SubnetConfig::maxnet(&s);
        bad.stages[2].kernel = 7;
        let e = oh.encode(&bad).unwrap_err().to_string();
        assert!(e.contains("stages[2].kernel = 7"), "{e}");
    }
}

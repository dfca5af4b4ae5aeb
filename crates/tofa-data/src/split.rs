//! Labelled / unlabelled / validation splits of a training set (paper Table 2, Section 4.6),
//! saved as JSON manifests.
//!
//! Per class, in class order: the class's indices are shuffled with a ChaCha8 stream seeded by
//! `(seed, class)`; the first `round(validation_fraction * n)` go to validation, the next
//! `labelled_per_class` are labelled, the rest unlabelled. The test set is never touched.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::rng::mix;

/// What to carve out of a training set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Labelled images per class (e.g. 20 for CIFAR-100, 3 for Flowers).
    pub labelled_per_class: usize,
    /// Fraction of every class held out for validation (0.3 in the selection ablation).
    pub validation_fraction: f64,
    pub seed: u64,
}

/// Indices into the training set: three disjoint sets, each ascending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub labelled: Vec<u32>,
    pub unlabelled: Vec<u32>,
    pub validation: Vec<u32>,
}

/// A split as written to disk: the spec, what it was cut from, the indices, and a blake3
/// digest over all of that (canonical JSON of the other fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitManifest {
    pub dataset: String,
    pub dataset_digest: String,
    pub spec: SplitSpec,
    pub split: Split,
    pub digest: String,
}

/// Labelled images per class in the paper's semi-supervised experiments (Table 2: labelled
/// samples / classes, rounded), by data set.
pub const PAPER_LABELLED_PER_CLASS: [(&str, usize); 6] = [
    ("aircraft", 13),
    ("cars", 11),
    ("flowers", 3),
    ("pets", 7),
    ("cifar10", 20),
    ("cifar100", 20),
];

/// The paper's labelled-per-class count for a data set whose name contains one of
/// [`PAPER_LABELLED_PER_CLASS`]'s keys (`synth-cifar100` -> 20, `flowers102` -> 3).
pub fn paper_labelled_per_class(name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase().replace(['-', '_'], "");
    // longest key first, so "cifar100" wins over "cifar10"
    let mut keys = PAPER_LABELLED_PER_CLASS;
    keys.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    keys.iter().find(|(k, _)| name.contains(k)).map(|&(_, n)| n)
}

/// Cuts `train` into labelled, unlabelled and validation indices.
pub fn make_split(train: &Dataset, spec: &SplitSpec) -> Result<Split> {
    if !(0.0..1.0).contains(&spec.validation_fraction) {
        return Err(crate::error::config(
            "validation_fraction",
            format!("{} is not in [0, 1)", spec.validation_fraction),
        ));
    }
    let mut split = Split {
        labelled: Vec::new(),
        unlabelled: Vec::new(),
        validation: Vec::new(),
    };
    for (class, mut idx) in train.indices_by_class().into_iter().enumerate() {
        let n_val = (spec.validation_fraction * idx.len() as f64).round() as usize;
        let available = idx.len() - n_val;
        if available < spec.labelled_per_class {
            return Err(DataError::ClassTooSmall {
                class: train.class_names()[class].clone(),
                available,
                requested: spec.labelled_per_class,
            });
        }
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(mix(&[spec.seed, 0x5b17, class as u64]));
        idx.shuffle(&mut rng);
        split.validation.extend_from_slice(&idx[..n_val]);
        split
            .labelled
            .extend_from_slice(&idx[n_val..n_val + spec.labelled_per_class]);
        split
            .unlabelled
            .extend_from_slice(&idx[n_val + spec.labelled_per_class..]);
    }
    split.labelled.sort_unstable();
    split.unlabelled.sort_unstable();
    split.validation.sort_unstable();
    Ok(split)
}

#[derive(Serialize)]
struct DigestInput<'a> {
    dataset: &'a str,
    dataset_digest: &'a str,
    spec: &'a SplitSpec,
    split: &'a Split,
}

fn digest_of(dataset: &str, dataset_digest: &str, spec: &SplitSpec, split: &Split) -> String {
    let json = serde_json::to_vec(&DigestInput {
        dataset,
        dataset_digest,
        spec,
        split,
    })
    .unwrap_or_default();
    blake3::hash(&json).to_hex().to_string()
}

impl SplitManifest {
    /// Makes the split of `train` and records it.
    pub fn new(train: &Dataset, spec: &SplitSpec) -> Result<Self> {
        let split = make_split(train, spec)?;
        let dataset_digest = train.digest();
        let digest = digest_of(train.name(), &dataset_digest, spec, &split);
        Ok(Self {
            dataset: train.name().to_owned(),
            dataset_digest,
            spec: *spec,
            split,
            digest,
        })
    }

    /// Writes pretty JSON, atomically ([`crate::write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| DataError::Manifest {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        crate::write_atomic(path, |f| f.write_all((json + "\n").as_bytes()))
    }

    /// Reads a manifest and checks its digest.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path)?;
        let m: Self = serde_json::from_str(&text).map_err(|e| DataError::Manifest {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let expected = digest_of(&m.dataset, &m.dataset_digest, &m.spec, &m.split);
        if expected != m.digest {
            return Err(DataError::Manifest {
                path: path.to_owned(),
                reason: format!(
                    "digest {} does not match its contents ({expected})",
                    m.digest
                ),
            });
        }
        Ok(m)
    }

    /// Checks that this manifest was cut from `train` (same data digest).
    pub fn check_against(&self, train: &Dataset, path: &Path) -> Result<()> {
        let d = train.digest();
        if d != self.dataset_digest {
            return Err(DataError::Manifest {
                path: path.to_owned(),
                reason: format!(
                    "made for data digest {} of {}, but {} has digest {d}",
                    self.dataset_digest,
                    self.dataset,
                    train.name()
                ),
            });
        }
        Ok(())
    }
}

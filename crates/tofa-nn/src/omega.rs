//! Omega: the subnets sampled during supernet training, with when they were sampled.
//!
//! Algorithm 1 (line 19) adds every sampled subnet to Omega; Algorithm 2 selects, within a
//! budget, the subnet sampled at the latest iteration ("last sampled"). Section 3.4's prose
//! describes a variant: each time a subnet is sampled at iteration `k`, its index grows by
//! `k` (the cumulative index). Omega keeps both, plus the first iteration and the count, so
//! either rule can be applied later without retraining.
//!
//! Omega is a wire type: it is saved as JSON next to a training checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::SubnetConfig;
use crate::error::{NnError, Result};

/// One subnet of Omega.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OmegaEntry {
    /// The subnet.
    pub config: SubnetConfig,
    /// Canonical id of `config` (kept for readability of the JSON).
    pub id: String,
    /// First iteration (1-based) at which it was sampled.
    pub first_iter: u64,
    /// Last iteration (1-based) at which it was sampled: Algorithm 2's `Iteration(A)`.
    pub last_iter: u64,
    /// Sum of the iterations at which it was sampled: Section 3.4's index `s(a)`.
    pub cumulative: u64,
    /// Number of times it was sampled.
    pub count: u64,
}

/// The list of sampled subnets, ordered by first sampling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Omega {
    entries: Vec<OmegaEntry>,
    #[serde(skip)]
    index: BTreeMap<String, usize>,
}

impl Omega {
    /// An empty Omega.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `cfg` was sampled at iteration `iter` (1-based).
    pub fn record(&mut self, iter: u64, cfg: &SubnetConfig) {
        let id = cfg.id();
        if let Some(&i) = self.index.get(&id) {
            let e = &mut self.entries[i];
            e.last_iter = e.last_iter.max(iter);
            e.first_iter = e.first_iter.min(iter);
            e.cumulative += iter;
            e.count += 1;
        } else {
            self.index.insert(id.clone(), self.entries.len());
            self.entries.push(OmegaEntry {
                config: cfg.clone(),
                id,
                first_iter: iter,
                last_iter: iter,
                cumulative: iter,
                count: 1,
            });
        }
    }

    /// The entries, in order of first sampling.
    pub fn entries(&self) -> &[OmegaEntry] {
        &self.entries
    }

    /// Number of distinct subnets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was sampled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a config id.
    pub fn get(&self, id: &str) -> Option<&OmegaEntry> {
        self.index.get(id).map(|&i| &self.entries[i])
    }

    /// Writes Omega as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| NnError::Input(format!("serialising omega: {e}")))?;
        std::fs::write(path, text).map_err(|e| NnError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    }

    /// Reads Omega written by [`Omega::save`], checking that ids match configs.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| NnError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut o: Omega = serde_json::from_str(&text)
            .map_err(|e| NnError::Input(format!("{}: {e}", path.display())))?;
        o.rebuild_index(path)?;
        Ok(o)
    }

    fn rebuild_index(&mut self, path: &Path) -> Result<()> {
        self.index.clear();
        for (i, e) in self.entries.iter().enumerate() {
            if e.config.id() != e.id {
                return Err(NnError::Input(format!(
                    "{}: entry {i} has id {} but its config is {}",
                    path.display(),
                    e.id,
                    e.config.id()
                )));
            }
            if self.index.insert(e.id.clone(), i).is_some() {
                return Err(NnError::Input(format!(
                    "{}: subnet {} appears twice",
                    path.display(),
                    e.id
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SearchSpace;

    #[test]
    fn records_last_and_cumulative_iterations() {
        let space = SearchSpace::builtin("tiny").unwrap();
        let a = SubnetConfig::maxnet(&space);
        let b = SubnetConfig::minnet(&space);
        let mut o = Omega::new();
        o.record(1, &a);
        o.record(1, &b);
        o.record(2, &b);
        o.record(5, &a);
        assert_eq!(o.len(), 2);
        let ea = o.get(&a.id()).unwrap();
        assert_eq!(
            (ea.first_iter, ea.last_iter, ea.cumulative, ea.count),
            (1, 5, 6, 2)
        );
        let eb = o.get(&b.id()).unwrap();
        assert_eq!(
            (eb.first_iter, eb.last_iter, eb.cumulative, eb.count),
            (1, 2, 3, 2)
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("omega.json");
        o.save(&p).unwrap();
        let back = Omega::load(&p).unwrap();
        assert_eq!(back.entries(), o.entries());
        assert_eq!(back.get(&b.id()).unwrap().last_iter, 2);
    }

    #[test]
    fn load_rejects_mismatched_id() {
        let space = SearchSpace::builtin("tiny").unwrap();
        let mut o = Omega::new();
        o.record(3, &SubnetConfig::maxnet(&space));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("omega.json");
        let text = serde_json::to_string(&o)
            .unwrap()
            .replace("\"id\":\"r32", "\"id\":\"r99");
        std::fs::write(&p, text).unwrap();
        let err = Omega::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("omega.json") && err.contains("entry 0"),
            "{err}"
        );
    }
}

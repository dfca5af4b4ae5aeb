//! `pipeline.toml`: wire types, validation, matrix expansion, profiles and the DAG.
//!
//! ```toml
//! [pipeline]
//! default_profile = "quick"
//! seed = 0
//!
//! [[stage]]
//! id = "train/{dataset}/{loss}"
//! kind = "tofa_train"
//! matrix = { dataset = ["a", "b"], loss = ["lab", "full"] }
//! deps = ["split/{dataset}"]
//! params = { dataset = "{dataset}", loss = "{loss}", iterations = 10000 }
//!
//! [profile.smoke.kind.tofa_train]
//! iterations = 20
//!
//! [targets]
//! ablation_losses = ["train/*/*", "table4"]
//! ```
//!
//! | file | does |
//! |---|---|
//! | `mod.rs` | the model ([`Pipeline`], [`Profile`], [`Stage`], [`Plan`], [`Resources`]) and loading |
//! | `wire.rs` | the TOML as written (serde wire types) into the model, with file and line for every error |
//! | `template.rs` | `{var}` substitution, matrix products, param merging, stage seeds, glob options |
//! | `plan.rs` | a profile applied: matrix expansion, dependencies, topological order, targets and selectors, `--set` overrides |

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

mod plan;
mod template;
#[cfg(test)]
mod tests;
mod wire;

pub use plan::Override;
pub use template::{derive_seed, merge};
use wire::{IncludeWire, Parts, PipelineWire};

/// What a stage asks of a cluster scheduler (the Slurm executor); unset fields take the
/// command line's defaults.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs per task (`--cpus-per-task`); also the stage's thread count.
    pub cpus: Option<usize>,
    /// Memory (`--mem`, e.g. `"4G"`).
    pub mem: Option<String>,
    /// Time limit (`--time`, e.g. `"01:00:00"`).
    pub time: Option<String>,
    /// Partition (`--partition`).
    pub partition: Option<String>,
}

impl Resources {
    /// `self`'s fields, with `over`'s where set.
    pub fn overlay(&self, over: &Resources) -> Resources {
        Resources {
            cpus: over.cpus.or(self.cpus),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            time: over.time.clone().or_else(|| self.time.clone()),
            partition: over.partition.clone().or_else(|| self.partition.clone()),
        }
    }
}

/// A profile: parameter overrides applied on top of the declared params.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub extends: Option<String>,
    pub seed: Option<u64>,
    /// Where the stages compute (`cpu`, `cuda`, `cuda:N`; the stages parse it).
    pub device: Option<String>,
    pub matrix: BTreeMap<String, Vec<Value>>,
    pub kind: BTreeMap<String, Value>,
    pub stage: BTreeMap<String, Value>,
    /// Cluster resources by stage kind or glob.
    pub resources: BTreeMap<String, Resources>,
    /// Where the profile is first declared.
    pub file: PathBuf,
    pub line: usize,
}

/// A declared stage before matrix expansion.
#[derive(Debug, Clone)]
struct StageTemplate {
    id: String,
    kind: String,
    description: String,
    params: Value,
    deps: Vec<String>,
    matrix: BTreeMap<String, Vec<Value>>,
    file: PathBuf,
    line: usize,
}

/// A parsed and validated `pipeline.toml`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it was read from.
    pub path: PathBuf,
    pub description: String,
    pub default_profile: String,
    pub seed: u64,
    pub cache_dir: PathBuf,
    pub results_dir: PathBuf,
    /// Where files a stage writes under `publish/` are copied, per profile.
    pub reports_dir: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
    /// Matrix variables declared once (`[matrix]`), for every stage whose id uses them.
    matrix: BTreeMap<String, Vec<Value>>,
    templates: Vec<StageTemplate>,
    targets: BTreeMap<String, Target>,
}

/// A named target: stage ids, globs or other targets, and where it is declared.
#[derive(Debug, Clone)]
struct Target {
    entries: Vec<String>,
    file: PathBuf,
    line: usize,
}

/// One stage after matrix expansion and profile overrides.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: String,
    pub kind: String,
    pub description: String,
    /// Params with the profile applied (not yet checked against the kind).
    pub params: Value,
    /// Indices into [`Plan::stages`].
    pub deps: Vec<usize>,
    /// The file of its `[[stage]]` table (the pipeline file or one it includes) and its line.
    pub file: PathBuf,
    pub line: usize,
    /// The stage's seed, derived from the pipeline seed and its id.
    pub seed: u64,
    /// What it asks of a cluster (profiles' `resources`, by kind, then by glob).
    pub resources: Resources,
}

/// The DAG of a pipeline under one profile, in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub path: PathBuf,
    pub profile: String,
    /// The profile's `device` (or the command line's `--device`); `None` is the CPU.
    pub device: Option<String>,
    /// A tag of the binary's arithmetic, part of every key when set (see
    /// [`crate::cache::KeyInput::numerics`]); set by the binary, not by `pipeline.toml`.
    pub numerics: Option<String>,
    pub stages: Vec<Stage>,
    pub index: BTreeMap<String, usize>,
    targets: BTreeMap<String, Target>,
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Self> {
        let src = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::parse(path, &src)
    }

    /// Parses pipeline text; `path` is used for messages, to resolve relative dirs and to find
    /// the files it includes (read from disk).
    pub fn parse(path: &Path, src: &str) -> Result<Self> {
        let wire: PipelineWire = toml::from_str(src).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let header = wire.pipeline;
        let mut parts = Parts::default();
        parts.add(
            path,
            src,
            IncludeWire {
                matrix: wire.matrix,
                profile: wire.profile,
                stage: wire.stage,
                targets: wire.targets,
            },
        )?;
        for pattern_text in &header.include {
            let full = base.join(pattern_text);
            let spec_err = |message: String| Error::Spec {
                path: path.to_path_buf(),
                line: 1,
                message,
            };
            let paths = glob::glob(&full.to_string_lossy())
                .map_err(|e| spec_err(format!("include `{pattern_text}`: {e}")))?;
            let mut files: Vec<PathBuf> = paths.filter_map(|p| p.ok()).collect();
            files.sort();
            if files.is_empty() {
                return Err(spec_err(format!(
                    "include `{pattern_text}` matches no file"
                )));
            }
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|e| Error::io("read", &f, e))?;
                let inc: IncludeWire = toml::from_str(&text).map_err(|e| Error::Parse {
                    path: f.clone(),
                    message: e.to_string().trim_end().to_string(),
                })?;
                parts.add(&f, &text, inc)?;
            }
        }
        let Parts {
            matrix,
            profiles,
            templates,
            targets,
        } = parts;
        let spec_err = |file: &Path, line: usize, message: String| Error::Spec {
            path: file.to_path_buf(),
            line,
            message,
        };
        for p in profiles.values() {
            if let Some(parent) = &p.extends
                && !profiles.contains_key(parent)
            {
                return Err(spec_err(
                    &p.file,
                    p.line,
                    format!("profile `{}` extends unknown profile `{parent}`", p.name),
                ));
            }
        }
        let default_profile = header
            .default_profile
            .or_else(|| profiles.keys().next().cloned())
            .unwrap_or_else(|| "default".to_string());
        if !profiles.is_empty() && !profiles.contains_key(&default_profile) {
            return Err(spec_err(
                path,
                1,
                format!("default_profile `{default_profile}` is not a declared profile"),
            ));
        }
        let pipeline = Pipeline {
            path: path.to_path_buf(),
            description: header.description.unwrap_or_default(),
            default_profile,
            seed: header.seed.unwrap_or(0),
            cache_dir: base.join(header.cache_dir.as_deref().unwrap_or(".tofa-cache")),
            results_dir: base.join(header.results_dir.as_deref().unwrap_or("results")),
            reports_dir: base.join(header.reports_dir.as_deref().unwrap_or("reports")),
            profiles,
            matrix,
            templates,
            targets,
        };
        // Every profile must expand to a valid DAG: catch errors at load time.
        for name in pipeline.profile_names() {
            pipeline.plan(&name)?;
        }
        Ok(pipeline)
    }

    /// Declared profile names (or the implicit `default` when none is declared).
    pub fn profile_names(&self) -> Vec<String> {
        if self.profiles.is_empty() {
            vec![self.default_profile.clone()]
        } else {
            self.profiles.keys().cloned().collect()
        }
    }

    /// The profile chain, root first.
    fn chain(&self, name: &str) -> Result<Vec<&Profile>> {
        if self.profiles.is_empty() && name == self.default_profile {
            return Ok(Vec::new());
        }
        let mut chain = Vec::new();
        let mut cur = Some(name.to_string());
        let mut seen = BTreeSet::new();
        while let Some(n) = cur {
            let p = self.profiles.get(&n).ok_or_else(|| Error::NotFound {
                what: "profile",
                name: n.clone(),
                hint: format!(
                    " (declared: {})",
                    self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            if !seen.insert(n.clone()) {
                return Err(Error::Spec {
                    path: self.path.clone(),
                    line: p.line,
                    message: format!("profile `{n}` extends itself through a cycle"),
                });
            }
            chain.push(p);
            cur = p.extends.clone();
        }
        chain.reverse();
        Ok(chain)
    }
}

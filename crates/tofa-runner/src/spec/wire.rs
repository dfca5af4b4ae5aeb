//! The TOML as written: serde wire types, and how one file's declarations join the model
//! ([`Parts::add`]), with the file and line of every error.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{Profile, Resources, StageTemplate, Target};
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineWire {
    #[serde(default)]
    pub(super) pipeline: HeaderWire,
    #[serde(default)]
    pub(super) matrix: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    pub(super) profile: BTreeMap<String, toml::Spanned<ProfileWire>>,
    #[serde(default)]
    pub(super) stage: Vec<toml::Spanned<StageWire>>,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, toml::Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderWire {
    pub(super) default_profile: Option<String>,
    pub(super) seed: Option<u64>,
    pub(super) cache_dir: Option<String>,
    pub(super) results_dir: Option<String>,
    pub(super) reports_dir: Option<String>,
    pub(super) description: Option<String>,
    /// Files (globs, relative to this file) whose stages, targets, matrices and profile
    /// sections join this file's, in sorted order.
    #[serde(default)]
    pub(super) include: Vec<String>,
}

/// An included file: everything but the `[pipeline]` header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IncludeWire {
    #[serde(default)]
    pub(super) matrix: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    pub(super) profile: BTreeMap<String, toml::Spanned<ProfileWire>>,
    #[serde(default)]
    pub(super) stage: Vec<toml::Spanned<StageWire>>,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, toml::Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileWire {
    pub(super) description: Option<String>,
    pub(super) extends: Option<String>,
    pub(super) seed: Option<u64>,
    pub(super) device: Option<String>,
    #[serde(default)]
    pub(super) matrix: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    pub(super) kind: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub(super) stage: BTreeMap<String, toml::Table>,
    /// Cluster resources by stage kind or stage glob (not params: no part of any key).
    #[serde(default)]
    pub(super) resources: BTreeMap<String, Resources>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageWire {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) params: toml::Table,
    #[serde(default)]
    pub(super) deps: Vec<String>,
    #[serde(default)]
    pub(super) matrix: BTreeMap<String, Vec<toml::Value>>,
}

pub(super) fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

pub(super) fn to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        toml::Value::Table(t) => table_to_json(t),
    }
}

pub(super) fn table_to_json(t: toml::Table) -> Value {
    Value::Object(t.into_iter().map(|(k, v)| (k, to_json(v))).collect())
}

/// What the pipeline file and the files it includes declare, gathered file by file.
#[derive(Default)]
pub(super) struct Parts {
    pub(super) matrix: BTreeMap<String, Vec<Value>>,
    pub(super) profiles: BTreeMap<String, Profile>,
    pub(super) templates: Vec<StageTemplate>,
    pub(super) targets: BTreeMap<String, Target>,
}

impl Parts {
    /// Adds one file's declarations. A matrix variable or target declared in two files, or a
    /// profile field, kind or stage override set in two, is an error naming both: the files'
    /// order must not decide what a stage's params are.
    pub(super) fn add(&mut self, file: &Path, src: &str, w: IncludeWire) -> Result<()> {
        let spec_err = |line: usize, message: String| Error::Spec {
            path: file.to_path_buf(),
            line,
            message,
        };
        for (var, values) in w.matrix {
            if values.is_empty() {
                return Err(spec_err(
                    1,
                    format!("matrix variable `{var}` has no values"),
                ));
            }
            if self.matrix.contains_key(&var) {
                return Err(spec_err(
                    1,
                    format!("matrix variable `{var}` is declared twice"),
                ));
            }
            self.matrix
                .insert(var, values.into_iter().map(to_json).collect());
        }
        for (name, p) in w.profile {
            let line = line_of(src, p.span().start);
            let p = p.into_inner();
            for (var, values) in &p.matrix {
                if values.is_empty() {
                    return Err(spec_err(
                        line,
                        format!("profile `{name}`: matrix variable `{var}` has no values"),
                    ));
                }
            }
            let prof = self
                .profiles
                .entry(name.clone())
                .or_insert_with(|| Profile {
                    name: name.clone(),
                    description: String::new(),
                    extends: None,
                    seed: None,
                    device: None,
                    matrix: BTreeMap::new(),
                    kind: BTreeMap::new(),
                    stage: BTreeMap::new(),
                    resources: BTreeMap::new(),
                    file: file.to_path_buf(),
                    line,
                });
            let twice = |what: &str| {
                spec_err(
                    line,
                    format!(
                        "profile `{name}`: {what} is set here and in {}:{}",
                        prof.file.display(),
                        prof.line
                    ),
                )
            };
            if let Some(d) = p.description {
                if !prof.description.is_empty() {
                    return Err(twice("`description`"));
                }
                prof.description = d;
            }
            if let Some(e) = p.extends {
                if prof.extends.is_some() {
                    return Err(twice("`extends`"));
                }
                prof.extends = Some(e);
            }
            if let Some(seed) = p.seed {
                if prof.seed.is_some() {
                    return Err(twice("`seed`"));
                }
                prof.seed = Some(seed);
            }
            if let Some(device) = p.device {
                if prof.device.is_some() {
                    return Err(twice("`device`"));
                }
                prof.device = Some(device);
            }
            for (k, v) in p.matrix {
                if prof.matrix.contains_key(&k) {
                    return Err(twice(&format!("matrix variable `{k}`")));
                }
                prof.matrix.insert(k, v.into_iter().map(to_json).collect());
            }
            for (k, t) in p.kind {
                if prof.kind.contains_key(&k) {
                    return Err(twice(&format!("`kind.{k}`")));
                }
                prof.kind.insert(k, table_to_json(t));
            }
            for (k, r) in p.resources {
                if prof.resources.contains_key(&k) {
                    return Err(twice(&format!("`resources.\"{k}\"`")));
                }
                prof.resources.insert(k, r);
            }
            for (k, t) in p.stage {
                if prof.stage.contains_key(&k) {
                    return Err(twice(&format!("`stage.\"{k}\"`")));
                }
                prof.stage.insert(k, table_to_json(t));
            }
        }
        for st in w.stage {
            let line = line_of(src, st.span().start);
            let st = st.into_inner();
            if st.id.is_empty() {
                return Err(spec_err(line, "stage id is empty".into()));
            }
            for (var, values) in &st.matrix {
                if values.is_empty() {
                    return Err(spec_err(
                        line,
                        format!("stage `{}`: matrix variable `{var}` has no values", st.id),
                    ));
                }
            }
            self.templates.push(StageTemplate {
                id: st.id,
                kind: st.kind,
                description: st.description.unwrap_or_default(),
                params: table_to_json(st.params),
                deps: st.deps,
                matrix: st
                    .matrix
                    .into_iter()
                    .map(|(k, v)| (k, v.into_iter().map(to_json).collect()))
                    .collect(),
                file: file.to_path_buf(),
                line,
            });
        }
        for (name, v) in w.targets {
            let line = line_of(src, v.span().start);
            if let Some(t) = self.targets.get(&name) {
                return Err(spec_err(
                    line,
                    format!(
                        "target `{name}` is also declared in {}:{}",
                        t.file.display(),
                        t.line
                    ),
                ));
            }
            self.targets.insert(
                name,
                Target {
                    entries: v.into_inner(),
                    file: file.to_path_buf(),
                    line,
                },
            );
        }
        Ok(())
    }
}

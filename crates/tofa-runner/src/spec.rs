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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineWire {
    #[serde(default)]
    pipeline: HeaderWire,
    #[serde(default)]
    matrix: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    profile: BTreeMap<String, toml::Spanned<ProfileWire>>,
    #[serde(default)]
    stage: Vec<toml::Spanned<StageWire>>,
    #[serde(default)]
    targets: BTreeMap<String, toml::Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderWire {
    default_profile: Option<String>,
    seed: Option<u64>,
    cache_dir: Option<String>,
    results_dir: Option<String>,
    reports_dir: Option<String>,
    description: Option<String>,
    /// Files (globs, relative to this file) whose stages, targets, matrices and profile
    /// sections join this file's, in sorted order.
    #[serde(default)]
    include: Vec<String>,
}

/// An included file: everything but the `[pipeline]` header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludeWire {
    #[serde(default)]
    matrix: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    profile: BTreeMap<String, toml::Spanned<ProfileWire>>,
    #[serde(default)]
    stage: Vec<toml::Spanned<StageWire>>,
    #[serde(default)]
    targets: BTreeMap<String, toml::Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileWire {
    description: Option<String>,
    extends: Option<String>,
    seed: Option<u64>,
    device: Option<String>,
    #[serde(default)]
    matrix: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    kind: BTreeMap<String, toml::Table>,
    #[serde(default)]
    stage: BTreeMap<String, toml::Table>,
    /// Cluster resources by stage kind or stage glob (not params: no part of any key).
    #[serde(default)]
    resources: BTreeMap<String, Resources>,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageWire {
    id: String,
    kind: String,
    description: Option<String>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    deps: Vec<String>,
    #[serde(default)]
    matrix: BTreeMap<String, Vec<toml::Value>>,
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
    pub stages: Vec<Stage>,
    pub index: BTreeMap<String, usize>,
    targets: BTreeMap<String, Target>,
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn to_json(v: toml::Value) -> Value {
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

fn table_to_json(t: toml::Table) -> Value {
    Value::Object(t.into_iter().map(|(k, v)| (k, to_json(v))).collect())
}

/// Merges `over` into `base`: tables merge recursively, everything else is replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replaces `{var}` in a string; a string that is exactly `{var}` takes the value's type.
fn substitute(v: &Value, vars: &BTreeMap<String, Value>) -> std::result::Result<Value, String> {
    Ok(match v {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
                && let Some(val) = vars.get(name)
            {
                return Ok(val.clone());
            }
            Value::String(substitute_str(s, vars)?)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute(x, vars))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), substitute(x, vars)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn substitute_str(s: &str, vars: &BTreeMap<String, Value>) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{s}`"))?;
        let name = &after[..close];
        let val = vars
            .get(name)
            .ok_or_else(|| format!("unknown matrix variable `{{{name}}}` in `{s}`"))?;
        out.push_str(&display(val));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn cartesian(matrix: &BTreeMap<String, Vec<Value>>) -> Vec<BTreeMap<String, Value>> {
    let mut acc = vec![BTreeMap::new()];
    for (name, values) in matrix {
        let mut next = Vec::with_capacity(acc.len() * values.len());
        for partial in &acc {
            for v in values {
                let mut m = partial.clone();
                m.insert(name.clone(), v.clone());
                next.push(m);
            }
        }
        acc = next;
    }
    acc
}

/// A 64-bit seed derived from the pipeline seed and a stage id.
pub fn derive_seed(seed: u64, id: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(id.as_bytes());
    let b = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&b.as_bytes()[..8]);
    u64::from_le_bytes(out)
}

fn pattern(p: &str) -> std::result::Result<glob::Pattern, String> {
    glob::Pattern::new(p).map_err(|e| format!("invalid pattern `{p}`: {e}"))
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// What the pipeline file and the files it includes declare, gathered file by file.
#[derive(Default)]
struct Parts {
    matrix: BTreeMap<String, Vec<Value>>,
    profiles: BTreeMap<String, Profile>,
    templates: Vec<StageTemplate>,
    targets: BTreeMap<String, Target>,
}

impl Parts {
    /// Adds one file's declarations. A matrix variable or target declared in two files, or a
    /// profile field, kind or stage override set in two, is an error naming both: the files'
    /// order must not decide what a stage's params are.
    fn add(&mut self, file: &Path, src: &str, w: IncludeWire) -> Result<()> {
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

    /// Expands stages under a profile and builds the DAG.
    pub fn plan(&self, profile: &str) -> Result<Plan> {
        let chain = self.chain(profile)?;
        let seed = chain.iter().rev().find_map(|p| p.seed).unwrap_or(self.seed);
        let device = chain.iter().rev().find_map(|p| p.device.clone());
        let spec_err = |file: &Path, line: usize, message: String| Error::Spec {
            path: file.to_path_buf(),
            line,
            message,
        };
        let mut matrix_over: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for p in &chain {
            matrix_over.extend(p.matrix.clone());
        }
        // Expand.
        let mut stages: Vec<Stage> = Vec::new();
        let mut raw_deps: Vec<Vec<String>> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for t in &self.templates {
            let mut matrix = t.matrix.clone();
            // variables declared once in `[matrix]` that this stage's id uses
            for (var, values) in &self.matrix {
                if !matrix.contains_key(var) && t.id.contains(&format!("{{{var}}}")) {
                    matrix.insert(var.clone(), values.clone());
                }
            }
            for (k, v) in &mut matrix {
                if let Some(o) = matrix_over.get(k) {
                    *v = o.clone();
                }
            }
            for vars in cartesian(&matrix) {
                let id = substitute_str(&t.id, &vars)
                    .map_err(|m| spec_err(&t.file, t.line, format!("stage `{}`: {m}", t.id)))?;
                let mut params = substitute(&t.params, &vars)
                    .map_err(|m| spec_err(&t.file, t.line, format!("stage `{id}`: {m}")))?;
                let mut resources = Resources::default();
                for p in &chain {
                    if let Some(r) = p.resources.get(&t.kind) {
                        resources = resources.overlay(r);
                    }
                    let mut globs: Vec<(&String, &Resources)> =
                        p.resources.iter().filter(|(g, _)| **g != t.kind).collect();
                    globs.sort_by_key(|(g, _)| (g.len(), (*g).clone()));
                    for (g, r) in globs {
                        let pat = pattern(g).map_err(|m| spec_err(&p.file, p.line, m))?;
                        if pat.matches_with(&id, MATCH) {
                            resources = resources.overlay(r);
                        }
                    }
                }
                for p in &chain {
                    if let Some(o) = p.kind.get(&t.kind) {
                        merge(&mut params, o);
                    }
                    let mut globs: Vec<(&String, &Value)> = p.stage.iter().collect();
                    globs.sort_by_key(|(g, _)| (g.len(), (*g).clone()));
                    for (g, o) in globs {
                        let pat = pattern(g).map_err(|m| spec_err(&p.file, p.line, m))?;
                        if pat.matches_with(&id, MATCH) {
                            merge(&mut params, o);
                        }
                    }
                }
                let deps = t
                    .deps
                    .iter()
                    .map(|d| substitute_str(d, &vars))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|m| spec_err(&t.file, t.line, format!("stage `{id}`: {m}")))?;
                if index.insert(id.clone(), stages.len()).is_some() {
                    return Err(spec_err(
                        &t.file,
                        t.line,
                        format!("duplicate stage id `{id}`"),
                    ));
                }
                stages.push(Stage {
                    seed: derive_seed(seed, &id),
                    id,
                    kind: t.kind.clone(),
                    description: t.description.clone(),
                    params,
                    deps: Vec::new(),
                    file: t.file.clone(),
                    line: t.line,
                    resources,
                });
                raw_deps.push(deps);
            }
        }
        // Resolve deps (exact ids or globs).
        for (i, deps) in raw_deps.iter().enumerate() {
            let mut resolved = BTreeSet::new();
            for d in deps {
                let matched: Vec<usize> = if d.contains(['*', '?', '[']) {
                    let pat =
                        pattern(d).map_err(|m| spec_err(&stages[i].file, stages[i].line, m))?;
                    index
                        .iter()
                        .filter(|(id, _)| pat.matches_with(id, MATCH))
                        .map(|(_, j)| *j)
                        .collect()
                } else {
                    index.get(d).copied().into_iter().collect()
                };
                if matched.is_empty() {
                    return Err(spec_err(
                        &stages[i].file,
                        stages[i].line,
                        format!(
                            "stage `{}` depends on `{d}`, which matches no stage",
                            stages[i].id
                        ),
                    ));
                }
                resolved.extend(matched.into_iter().filter(|j| *j != i || !d.contains('*')));
            }
            stages[i].deps = resolved.into_iter().collect();
        }
        let order = topo_order(&stages).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&j| stages[j].id.as_str()).collect();
            spec_err(
                &stages[cycle[0]].file,
                stages[cycle[0]].line,
                format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
            )
        })?;
        // Reorder into topological order and remap indices.
        let mut new_pos = vec![0; stages.len()];
        for (pos, &old) in order.iter().enumerate() {
            new_pos[old] = pos;
        }
        let mut ordered: Vec<Stage> = order.iter().map(|&old| stages[old].clone()).collect();
        for s in &mut ordered {
            s.deps = s.deps.iter().map(|&d| new_pos[d]).collect();
            s.deps.sort_unstable();
        }
        let index = ordered
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let plan = Plan {
            path: self.path.clone(),
            profile: profile.to_string(),
            device,
            stages: ordered,
            index,
            targets: self.targets.clone(),
        };
        for (name, t) in &self.targets {
            plan.expand_target(name, t, &mut BTreeSet::new())?;
        }
        Ok(plan)
    }
}

/// Kahn's algorithm, ties broken by stage id (so the order does not depend on which file
/// or line declares a stage); on a cycle returns its members in order.
fn topo_order(stages: &[Stage]) -> std::result::Result<Vec<usize>, Vec<usize>> {
    let n = stages.len();
    let mut indeg = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in stages.iter().enumerate() {
        indeg[i] = s.deps.len();
        for &d in &s.deps {
            users[d].push(i);
        }
    }
    let mut ready: BTreeSet<(&str, usize)> = (0..n)
        .filter(|&i| indeg[i] == 0)
        .map(|i| (stages[i].id.as_str(), i))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some((_, i)) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert((stages[u].id.as_str(), u));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk dependencies among the remaining nodes until one repeats.
    let start = (0..n).find(|&i| indeg[i] > 0).unwrap_or(0);
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let next = stages[cur]
            .deps
            .iter()
            .copied()
            .find(|&d| indeg[d] > 0)
            .unwrap_or(start);
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.reverse();
            return Err(cycle);
        }
        path.push(next);
        cur = next;
    }
}

impl Plan {
    fn expand_target(
        &self,
        name: &str,
        t: &Target,
        visiting: &mut BTreeSet<String>,
    ) -> Result<BTreeSet<usize>> {
        let spec_err = |message: String| Error::Spec {
            path: t.file.clone(),
            line: t.line,
            message,
        };
        if !visiting.insert(name.to_string()) {
            return Err(spec_err(format!("target `{name}` includes itself")));
        }
        let mut out = BTreeSet::new();
        for e in &t.entries {
            if let Some(sub) = self.targets.get(e) {
                out.extend(self.expand_target(e, sub, visiting)?);
            } else {
                let m = self
                    .match_stages(e)
                    .map_err(|message| spec_err(format!("target `{name}`: {message}")))?;
                out.extend(m);
            }
        }
        visiting.remove(name);
        Ok(out)
    }

    fn match_stages(&self, sel: &str) -> std::result::Result<Vec<usize>, String> {
        let found: Vec<usize> = if sel.contains(['*', '?', '[']) {
            let pat = pattern(sel)?;
            self.index
                .iter()
                .filter(|(id, _)| pat.matches_with(id, MATCH))
                .map(|(_, &i)| i)
                .collect()
        } else {
            self.index.get(sel).copied().into_iter().collect()
        };
        if found.is_empty() {
            Err(format!("`{sel}` matches no stage and no target"))
        } else {
            Ok(found)
        }
    }

    /// Target names with their line.
    pub fn targets(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.targets.iter().map(|(k, t)| (k, &t.entries))
    }

    /// Resolves target names, stage ids or globs to the stages they need, deps included,
    /// in topological order. No selector means every stage.
    pub fn select(&self, selectors: &[String]) -> Result<Vec<usize>> {
        let mut roots = BTreeSet::new();
        if selectors.is_empty() {
            roots.extend(0..self.stages.len());
        }
        for s in selectors {
            if let Some(t) = self.targets.get(s) {
                roots.extend(self.expand_target(s, t, &mut BTreeSet::new())?);
            } else {
                let m = self.match_stages(s).map_err(|_| Error::NotFound {
                    what: "target or stage",
                    name: s.clone(),
                    hint: format!(
                        " (targets: {})",
                        self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })?;
                roots.extend(m);
            }
        }
        let mut all = BTreeSet::new();
        let mut stack: Vec<usize> = roots.into_iter().collect();
        while let Some(i) = stack.pop() {
            if all.insert(i) {
                stack.extend(self.stages[i].deps.iter().copied());
            }
        }
        Ok(all.into_iter().collect())
    }
}

/// A param set from the command line: `--set [SCOPE:]PATH=VALUE`.
///
/// `SCOPE` is a stage kind (`tofa_train`) or a stage id or glob (`tofa/*/full/s0`); without
/// it the override reaches every stage whose params already hold `PATH`. `PATH` is dotted
/// (`train.lr`); `VALUE` is read as a TOML value (`0.02`, `true`, `[32, 48]`, `"x"`), and
/// as a plain string when it is not one. The override is merged into the params after the
/// profile's, so it is part of the cache key like any param.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The text as given, for messages.
    pub spec: String,
    pub scope: Option<String>,
    pub path: Vec<String>,
    pub value: Value,
}

impl std::str::FromStr for Override {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = |message: &str| Error::Override {
            spec: spec.to_string(),
            message: message.to_string(),
        };
        let (lhs, raw) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected [SCOPE:]PATH=VALUE"))?;
        let (scope, path) = match lhs.rsplit_once(':') {
            Some((scope, path)) if !scope.is_empty() => (Some(scope.to_string()), path),
            Some((_, path)) => (None, path),
            None => (None, lhs),
        };
        let path: Vec<String> = path.split('.').map(str::to_string).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(bad("empty part in the param path"));
        }
        let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => to_json(t.remove("v").unwrap_or(toml::Value::String(raw.into()))),
            Err(_) => Value::String(raw.to_string()),
        };
        Ok(Override {
            spec: spec.to_string(),
            scope,
            path,
            value,
        })
    }
}

fn holds_path(v: &Value, path: &[String]) -> bool {
    match path.split_first() {
        None => true,
        Some((head, rest)) => v.get(head).is_some_and(|c| holds_path(c, rest)),
    }
}

impl Plan {
    /// Merges a `--set` override into the params of the stages it reaches; returns how many.
    /// An override that reaches no stage is an error naming it.
    pub fn apply_override(&mut self, o: &Override) -> Result<usize> {
        let err = |message: String| Error::Override {
            spec: o.spec.clone(),
            message,
        };
        let hits: Vec<usize> = match &o.scope {
            Some(scope) if self.stages.iter().any(|s| &s.kind == scope) => self
                .stages
                .iter()
                .enumerate()
                .filter(|(_, s)| &s.kind == scope)
                .map(|(i, _)| i)
                .collect(),
            Some(scope) => self.match_stages(scope).map_err(|_| {
                err(format!(
                    "`{scope}` is no stage kind, stage or glob of profile `{}`",
                    self.profile
                ))
            })?,
            None => (0..self.stages.len())
                .filter(|&i| holds_path(&self.stages[i].params, &o.path))
                .collect(),
        };
        if hits.is_empty() {
            return Err(err(format!(
                "no stage of profile `{}` has the param `{}`; give a scope (`KIND:` or `STAGE:`)",
                self.profile,
                o.path.join(".")
            )));
        }
        let mut over = o.value.clone();
        for part in o.path.iter().rev() {
            over = Value::Object([(part.clone(), over)].into_iter().collect());
        }
        for &i in &hits {
            merge(&mut self.stages[i].params, &over);
        }
        Ok(hits.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Pipeline> {
        Pipeline::parse(Path::new("pipeline.toml"), src)
    }

    #[test]
    fn matrix_globs_and_profiles() {
        let p = parse(
            r#"
[pipeline]
default_profile = "quick"
[profile.quick]
[profile.smoke]
extends = "quick"
matrix = { ds = ["a"] }
[profile.smoke.kind.train]
iters = 2
[[stage]]
id = "split/{ds}"
kind = "split"
matrix = { ds = ["a", "b"] }
params = { ds = "{ds}" }
[[stage]]
id = "train/{ds}/{loss}"
kind = "train"
matrix = { ds = ["a", "b"], loss = ["lab", "full"] }
deps = ["split/{ds}"]
params = { iters = 100, loss = "{loss}" }
[[stage]]
id = "table"
kind = "table"
deps = ["train/*/full"]
[targets]
t = ["table"]
"#,
        )
        .unwrap();
        let quick = p.plan("quick").unwrap();
        assert_eq!(quick.stages.len(), 7);
        let t = &quick.stages[quick.index["table"]];
        assert_eq!(t.deps.len(), 2);
        assert_eq!(
            quick.stages[quick.index["train/a/lab"]].params["iters"],
            100
        );
        let smoke = p.plan("smoke").unwrap();
        assert_eq!(smoke.stages.len(), 4);
        assert_eq!(smoke.stages[smoke.index["train/a/full"]].params["iters"], 2);
        let sel = quick.select(&["t".into()]).unwrap();
        assert_eq!(sel.len(), 5);
    }

    #[test]
    fn cycle_is_named_with_line() {
        let err = parse(
            "[[stage]]\nid = \"a\"\nkind = \"k\"\ndeps = [\"b\"]\n\n[[stage]]\nid = \"b\"\nkind = \"k\"\ndeps = [\"a\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dependency cycle"), "{err}");
        assert!(err.contains("a -> b") || err.contains("b -> a"), "{err}");
        assert!(err.starts_with("pipeline.toml:"), "{err}");
    }

    #[test]
    fn duplicate_and_missing_deps() {
        let err =
            parse("[[stage]]\nid = \"a\"\nkind = \"k\"\n[[stage]]\nid = \"a\"\nkind = \"k\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("pipeline.toml:4: duplicate stage id `a`"),
            "{err}"
        );
        let err = parse("[[stage]]\nid = \"a\"\nkind = \"k\"\ndeps = [\"zz\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("depends on `zz`, which matches no stage"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_has_line() {
        let err = parse("[[stage]]\nid = \"a\"\nkind = \"k\"\ndpes = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("dpes"), "{err}");
    }

    #[test]
    fn overrides_parse_and_reach_their_scope() {
        let p = parse(
            r#"
[[stage]]
id = "a/{x}"
kind = "echo"
matrix = { x = ["1", "2"] }
params = { text = "t", train = { lr = 0.1 } }

[[stage]]
id = "b"
kind = "sleep"
params = { ms = 5 }
"#,
        )
        .unwrap();
        let mut plan = p.plan("default").unwrap();
        let o: Override = "train.lr=0.02".parse().unwrap();
        assert_eq!(
            (o.scope.as_deref(), o.value.clone()),
            (None, serde_json::json!(0.02))
        );
        assert_eq!(plan.apply_override(&o).unwrap(), 2);
        assert_eq!(plan.stages[plan.index["a/1"]].params["train"]["lr"], 0.02);
        let o: Override = "sleep:ms=7".parse().unwrap();
        assert_eq!(plan.apply_override(&o).unwrap(), 1);
        assert_eq!(plan.stages[plan.index["b"]].params["ms"], 7);
        let o: Override = "a/2:text=hello world".parse().unwrap();
        assert_eq!(plan.apply_override(&o).unwrap(), 1);
        assert_eq!(plan.stages[plan.index["a/2"]].params["text"], "hello world");
        assert_eq!(plan.stages[plan.index["a/1"]].params["text"], "t");
        let o: Override = "echo:list=[1, 2]".parse().unwrap();
        plan.apply_override(&o).unwrap();
        assert_eq!(
            plan.stages[plan.index["a/1"]].params["list"],
            serde_json::json!([1, 2])
        );
        let e = plan
            .apply_override(&"nope.x=1".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--set nope.x=1: no stage of profile `default` has the param `nope.x`"),
            "{e}"
        );
        let e = plan
            .apply_override(&"zzz/*:x=1".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`zzz/*` is no stage kind, stage or glob"), "{e}");
        let e = "x".parse::<Override>().unwrap_err().to_string();
        assert_eq!(e, "--set x: expected [SCOPE:]PATH=VALUE");
    }

    fn write_files(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    /// The error of loading the pipeline made of `files`.
    fn load_err(files: &[(&str, &str)]) -> String {
        let d = write_files(files);
        Pipeline::load(&d.path().join("pipeline.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn included_files_join_the_pipeline() {
        let d = write_files(&[
            (
                "pipeline.toml",
                "[pipeline]\ninclude = [\"experiments/*.toml\"]\n[profile.small]\nmatrix = { d = [\"x\"] }\n",
            ),
            (
                "experiments/a-data.toml",
                "[matrix]\nd = [\"x\", \"y\"]\n\n[[stage]]\nid = \"split/{d}\"\nkind = \"echo\"\nparams = { text = \"{d}\" }\n",
            ),
            (
                "experiments/b-train.toml",
                "[[stage]]\nid = \"train/{d}\"\nkind = \"echo\"\ndeps = [\"split/{d}\"]\nparams = { text = \"t\" }\n\n[targets]\ntrain = [\"train/*\"]\n\n[profile.small.kind.echo]\ntext = \"small\"\n",
            ),
        ]);
        let p = Pipeline::load(&d.path().join("pipeline.toml")).unwrap();
        let all = p.plan("small").unwrap();
        let ids: Vec<&str> = all.stages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["split/x", "train/x"],
            "the profile's matrix replaces [matrix]"
        );
        assert_eq!(all.stages[1].params["text"], "small");
        assert!(all.stages[1].file.ends_with("experiments/b-train.toml"));
        assert_eq!(all.select(&["train".into()]).unwrap().len(), 2);
    }

    #[test]
    fn included_files_name_themselves_in_errors() {
        let e = load_err(&[
            ("pipeline.toml", "[pipeline]\ninclude = [\"e/*.toml\"]\n"),
            (
                "e/x.toml",
                "\n\n[[stage]]\nid = \"a\"\nkind = \"echo\"\ndeps = [\"nope\"]\n",
            ),
        ]);
        assert!(e.contains("e/x.toml:3: stage `a` depends on `nope`"), "{e}");
        let e = load_err(&[
            (
                "pipeline.toml",
                "[pipeline]\ninclude = [\"e/*.toml\"]\n[targets]\nt = []\n",
            ),
            ("e/x.toml", "[targets]\nt = []\n"),
        ]);
        assert!(
            e.contains("e/x.toml:2: target `t` is also declared in"),
            "{e}"
        );
        let e = load_err(&[
            (
                "pipeline.toml",
                "[pipeline]\ninclude = [\"e/*.toml\"]\n[profile.p.kind.echo]\ntext = \"a\"\n",
            ),
            ("e/x.toml", "[profile.p.kind.echo]\ntext = \"b\"\n"),
        ]);
        assert!(
            e.contains("profile `p`: `kind.echo` is set here and in"),
            "{e}"
        );
        let e = load_err(&[
            ("pipeline.toml", "[pipeline]\ninclude = [\"e/*.toml\"]\n"),
            ("e/x.toml", "[pipeline]\nseed = 1\n"),
        ]);
        assert!(
            e.contains("e/x.toml") && e.contains("unknown field `pipeline`"),
            "{e}"
        );
        let e = load_err(&[("pipeline.toml", "[pipeline]\ninclude = [\"e/*.toml\"]\n")]);
        assert!(e.contains("include `e/*.toml` matches no file"), "{e}");
    }

    #[test]
    fn resources_come_from_the_profile_by_kind_then_glob_and_stay_out_of_params() {
        let p = parse(
            r#"
[profile.c.resources.echo]
cpus = 4
mem = "8G"
[profile.c.resources."a/2"]
cpus = 8
time = "01:00:00"

[[stage]]
id = "a/{x}"
kind = "echo"
matrix = { x = ["1", "2"] }
params = { text = "t" }
"#,
        )
        .unwrap();
        let plan = p.plan("c").unwrap();
        let r = |id: &str| plan.stages[plan.index[id]].resources.clone();
        assert_eq!(
            r("a/1"),
            Resources {
                cpus: Some(4),
                mem: Some("8G".into()),
                time: None,
                partition: None
            }
        );
        assert_eq!(
            (
                r("a/2").cpus,
                r("a/2").mem.as_deref(),
                r("a/2").time.as_deref()
            ),
            (Some(8), Some("8G"), Some("01:00:00"))
        );
        assert_eq!(
            plan.stages[plan.index["a/1"]].params,
            serde_json::json!({ "text": "t" })
        );
    }
}

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileWire {
    description: Option<String>,
    extends: Option<String>,
    seed: Option<u64>,
    #[serde(default)]
    matrix: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    kind: BTreeMap<String, toml::Table>,
    #[serde(default)]
    stage: BTreeMap<String, toml::Table>,
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
    pub matrix: BTreeMap<String, Vec<Value>>,
    pub kind: BTreeMap<String, Value>,
    pub stage: BTreeMap<String, Value>,
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
    templates: Vec<StageTemplate>,
    targets: BTreeMap<String, (Vec<String>, usize)>,
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
    /// Line of the `[[stage]]` table in the pipeline file.
    pub line: usize,
    /// The stage's seed, derived from the pipeline seed and its id.
    pub seed: u64,
}

/// The DAG of a pipeline under one profile, in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub path: PathBuf,
    pub profile: String,
    pub stages: Vec<Stage>,
    pub index: BTreeMap<String, usize>,
    targets: BTreeMap<String, (Vec<String>, usize)>,
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

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Self> {
        let src = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::parse(path, &src)
    }

    /// Parses pipeline text; `path` is used for messages and to resolve relative dirs.
    pub fn parse(path: &Path, src: &str) -> Result<Self> {
        let wire: PipelineWire = toml::from_str(src).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let spec_err = |line: usize, message: String| Error::Spec {
            path: path.to_path_buf(),
            line,
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut profiles = BTreeMap::new();
        for (name, p) in wire.profile {
            let line = line_of(src, p.span().start);
            let p = p.into_inner();
            let to_map = |m: BTreeMap<String, toml::Table>| {
                m.into_iter()
                    .map(|(k, t)| (k, table_to_json(t)))
                    .collect::<BTreeMap<_, _>>()
            };
            for (var, values) in &p.matrix {
                if values.is_empty() {
                    return Err(spec_err(
                        line,
                        format!("profile `{name}`: matrix variable `{var}` has no values"),
                    ));
                }
            }
            profiles.insert(
                name.clone(),
                Profile {
                    name,
                    description: p.description.unwrap_or_default(),
                    extends: p.extends,
                    seed: p.seed,
                    matrix: p
                        .matrix
                        .into_iter()
                        .map(|(k, v)| (k, v.into_iter().map(to_json).collect()))
                        .collect(),
                    kind: to_map(p.kind),
                    stage: to_map(p.stage),
                    line,
                },
            );
        }
        for p in profiles.values() {
            if let Some(parent) = &p.extends
                && !profiles.contains_key(parent)
            {
                return Err(spec_err(
                    p.line,
                    format!("profile `{}` extends unknown profile `{parent}`", p.name),
                ));
            }
        }
        let default_profile = wire
            .pipeline
            .default_profile
            .or_else(|| profiles.keys().next().cloned())
            .unwrap_or_else(|| "default".to_string());
        if !profiles.is_empty() && !profiles.contains_key(&default_profile) {
            return Err(spec_err(
                1,
                format!("default_profile `{default_profile}` is not a declared profile"),
            ));
        }
        let mut templates = Vec::new();
        for s in wire.stage {
            let line = line_of(src, s.span().start);
            let s = s.into_inner();
            if s.id.is_empty() {
                return Err(spec_err(line, "stage id is empty".into()));
            }
            for (var, values) in &s.matrix {
                if values.is_empty() {
                    return Err(spec_err(
                        line,
                        format!("stage `{}`: matrix variable `{var}` has no values", s.id),
                    ));
                }
            }
            templates.push(StageTemplate {
                id: s.id,
                kind: s.kind,
                description: s.description.unwrap_or_default(),
                params: table_to_json(s.params),
                deps: s.deps,
                matrix: s
                    .matrix
                    .into_iter()
                    .map(|(k, v)| (k, v.into_iter().map(to_json).collect()))
                    .collect(),
                line,
            });
        }
        let targets = wire
            .targets
            .into_iter()
            .map(|(k, v)| {
                let line = line_of(src, v.span().start);
                (k, (v.into_inner(), line))
            })
            .collect();
        let pipeline = Pipeline {
            path: path.to_path_buf(),
            description: wire.pipeline.description.unwrap_or_default(),
            default_profile,
            seed: wire.pipeline.seed.unwrap_or(0),
            cache_dir: base.join(wire.pipeline.cache_dir.as_deref().unwrap_or(".tofa-cache")),
            results_dir: base.join(wire.pipeline.results_dir.as_deref().unwrap_or("results")),
            reports_dir: base.join(wire.pipeline.reports_dir.as_deref().unwrap_or("reports")),
            profiles,
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
        let spec_err = |line: usize, message: String| Error::Spec {
            path: self.path.clone(),
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
            for (k, v) in &mut matrix {
                if let Some(o) = matrix_over.get(k) {
                    *v = o.clone();
                }
            }
            for vars in cartesian(&matrix) {
                let id = substitute_str(&t.id, &vars)
                    .map_err(|m| spec_err(t.line, format!("stage `{}`: {m}", t.id)))?;
                let mut params = substitute(&t.params, &vars)
                    .map_err(|m| spec_err(t.line, format!("stage `{id}`: {m}")))?;
                for p in &chain {
                    if let Some(o) = p.kind.get(&t.kind) {
                        merge(&mut params, o);
                    }
                    let mut globs: Vec<(&String, &Value)> = p.stage.iter().collect();
                    globs.sort_by_key(|(g, _)| (g.len(), (*g).clone()));
                    for (g, o) in globs {
                        let pat = pattern(g).map_err(|m| spec_err(p.line, m))?;
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
                    .map_err(|m| spec_err(t.line, format!("stage `{id}`: {m}")))?;
                if index.insert(id.clone(), stages.len()).is_some() {
                    return Err(spec_err(t.line, format!("duplicate stage id `{id}`")));
                }
                stages.push(Stage {
                    seed: derive_seed(seed, &id),
                    id,
                    kind: t.kind.clone(),
                    description: t.description.clone(),
                    params,
                    deps: Vec::new(),
                    line: t.line,
                });
                raw_deps.push(deps);
            }
        }
        // Resolve deps (exact ids or globs).
        for (i, deps) in raw_deps.iter().enumerate() {
            let mut resolved = BTreeSet::new();
            for d in deps {
                let matched: Vec<usize> = if d.contains(['*', '?', '[']) {
                    let pat = pattern(d).map_err(|m| spec_err(stages[i].line, m))?;
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
            stages: ordered,
            index,
            targets: self.targets.clone(),
        };
        for (name, (entries, line)) in &self.targets {
            plan.expand_target(name, entries, *line, &mut BTreeSet::new())?;
        }
        Ok(plan)
    }
}

/// Kahn's algorithm, ties broken by declaration order; on a cycle returns its members in order.
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
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
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
        entries: &[String],
        line: usize,
        visiting: &mut BTreeSet<String>,
    ) -> Result<BTreeSet<usize>> {
        if !visiting.insert(name.to_string()) {
            return Err(Error::Spec {
                path: self.path.clone(),
                line,
                message: format!("target `{name}` includes itself"),
            });
        }
        let mut out = BTreeSet::new();
        for e in entries {
            if let Some((sub, l)) = self.targets.get(e) {
                out.extend(self.expand_target(e, sub, *l, visiting)?);
            } else {
                let m = self.match_stages(e).map_err(|message| Error::Spec {
                    path: self.path.clone(),
                    line,
                    message: format!("target `{name}`: {message}"),
                })?;
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
        self.targets.iter().map(|(k, (v, _))| (k, v))
    }

    /// Resolves target names, stage ids or globs to the stages they need, deps included,
    /// in topological order. No selector means every stage.
    pub fn select(&self, selectors: &[String]) -> Result<Vec<usize>> {
        let mut roots = BTreeSet::new();
        if selectors.is_empty() {
            roots.extend(0..self.stages.len());
        }
        for s in selectors {
            if let Some((entries, line)) = self.targets.get(s) {
                roots.extend(self.expand_target(s, entries, *line, &mut BTreeSet::new())?);
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
}

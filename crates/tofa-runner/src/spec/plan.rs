//! A pipeline under one profile: matrix expansion, profile overrides, dependencies and
//! topological order ([`Pipeline::plan`]), targets and selectors, `--set` overrides.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::template::{MATCH, cartesian, derive_seed, merge, pattern, substitute, substitute_str};
use super::wire::to_json;
use super::{Pipeline, Plan, Resources, Stage, Target};
use crate::error::{Error, Result};

impl Pipeline {
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
            numerics: None,
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

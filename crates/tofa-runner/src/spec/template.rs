//! Templates: `{var}` substitution in ids, deps and params, matrix products, param merging,
//! stage seeds and the glob options every selector uses.

use std::collections::BTreeMap;

use serde_json::Value;

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
pub(super) fn substitute(
    v: &Value,
    vars: &BTreeMap<String, Value>,
) -> std::result::Result<Value, String> {
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

pub(super) fn substitute_str(
    s: &str,
    vars: &BTreeMap<String, Value>,
) -> std::result::Result<String, String> {
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

pub(super) fn cartesian(matrix: &BTreeMap<String, Vec<Value>>) -> Vec<BTreeMap<String, Value>> {
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

pub(super) fn pattern(p: &str) -> std::result::Result<glob::Pattern, String> {
    glob::Pattern::new(p).map_err(|e| format!("invalid pattern `{p}`: {e}"))
}

pub(super) const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

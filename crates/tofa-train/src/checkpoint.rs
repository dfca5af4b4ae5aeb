//! Checkpoints: one directory per checkpoint, written whole then renamed into place.
//!
//! ```text
//! CKPT_DIR/ckpt-00000200/weights.safetensors   Supernet::save (parameters + BN statistics)
//!                        momentum.safetensors  SGD momentum by parameter name (absent = none yet)
//!                        omega.json            Omega::save (Algorithm 2's input)
//!                        state.json            CheckpointState: iteration, loss curve, cost
//! ```
//!
//! A checkpoint appears by renaming `CKPT_DIR/.tmp-ckpt-ITER` to `ckpt-ITER` after all three
//! files are written, then older checkpoints are removed: a run killed at any moment leaves a
//! complete checkpoint (the newest or the one before) and perhaps a `.tmp-*` directory, swept
//! by the next save. No random state is stored: every draw of iteration `t` comes from a
//! generator keyed by `(seed, t)` and the loader is fast-forwarded to `t`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tofa_nn::{Omega, Sgd, Supernet};

use crate::config::TrainConfig;
use crate::error::{Result, Stage, TrainError, io_err};
use crate::train::{IterRecord, TrainCost};

/// Format version of `state.json`.
pub const STATE_VERSION: u32 = 2;

/// `state.json` of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Which procedure wrote it.
    pub stage: Stage,
    /// What is trained: `tofa/<variant>` or the subnet id of a single network.
    pub run: String,
    /// Iterations completed.
    pub iteration: u64,
    /// The run's config (with `checkpoint_every` as written).
    pub config: TrainConfig,
    /// Omega so far: stored beside, as `omega.json` ([`Omega::save`], Algorithm 2's input).
    #[serde(skip)]
    pub omega: Omega,
    /// Loss curve so far, one exact text line per iteration (see [`exact_curve`]).
    #[serde(with = "exact_curve")]
    pub curve: Vec<IterRecord>,
    /// Cost so far.
    pub cost: TrainCost,
}

/// A checkpoint read back.
pub struct Loaded {
    pub dir: PathBuf,
    pub state: CheckpointState,
}

fn ckpt_name(iter: u64) -> String {
    format!("ckpt-{iter:08}")
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let Some(iter) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ckpt-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if e.path().join("state.json").is_file() && best.as_ref().is_none_or(|(b, _)| iter > *b) {
            best = Some((iter, e.path()));
        }
    }
    Ok(best)
}

/// Writes a checkpoint of `net`, `sgd` and `state` (its Omega included) into `dir`,
/// atomically, and removes older ones.
pub fn save(dir: &Path, net: &Supernet, sgd: &Sgd, state: &CheckpointState) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = ckpt_name(state.iteration);
    let tmp = dir.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    net.save(&tmp.join("weights.safetensors"))?;
    let momentum: HashMap<String, Tensor> = sgd
        .params()
        .iter()
        .zip(sgd.momentum_buffers())
        .filter_map(|(p, b)| b.as_ref().map(|b| (p.name.clone(), b.clone())))
        .collect();
    let mpath = tmp.join("momentum.safetensors");
    candle_core::safetensors::save(&momentum, &mpath).map_err(|e| TrainError::Checkpoint {
        path: mpath.clone(),
        msg: e.to_string(),
    })?;
    state.omega.save(&tmp.join("omega.json"))?;
    let spath = tmp.join("state.json");
    let text = serde_json::to_string(state).map_err(|e| TrainError::Checkpoint {
        path: spath.clone(),
        msg: e.to_string(),
    })?;
    std::fs::write(&spath, text).map_err(io_err(&spath))?;
    let dst = dir.join(&name);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
    }
    std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    // older checkpoints and debris of killed saves
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let n = e.file_name();
        let Some(n) = n.to_str() else { continue };
        let old = n
            .strip_prefix("ckpt-")
            .and_then(|i| i.parse::<u64>().ok())
            .is_some_and(|i| i < state.iteration);
        if old || (n.starts_with(".tmp-ckpt-") && e.path() != tmp) {
            std::fs::remove_dir_all(e.path()).map_err(io_err(e.path()))?;
        }
    }
    Ok(dst)
}

/// Reads the state of checkpoint directory `ckpt`, its Omega included.
pub fn read_state(ckpt: &Path) -> Result<CheckpointState> {
    let spath = ckpt.join("state.json");
    let text = std::fs::read_to_string(&spath).map_err(io_err(&spath))?;
    let mut state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            path: spath.clone(),
            msg: e.to_string(),
        })?;
    if state.version != STATE_VERSION {
        return Err(TrainError::Checkpoint {
            path: spath,
            msg: format!("state version {} (expected {STATE_VERSION})", state.version),
        });
    }
    state.omega = Omega::load(&ckpt.join("omega.json"))?;
    Ok(state)
}

/// Restores weights into `net` and momentum into `sgd` from checkpoint directory `ckpt`.
pub fn restore(ckpt: &Path, net: &mut Supernet, sgd: &mut Sgd) -> Result<()> {
    net.load(&ckpt.join("weights.safetensors"))?;
    let mpath = ckpt.join("momentum.safetensors");
    let mut m = candle_core::safetensors::load(&mpath, &Device::Cpu).map_err(|e| {
        TrainError::Checkpoint {
            path: mpath.clone(),
            msg: e.to_string(),
        }
    })?;
    let bufs: Vec<Option<Tensor>> = sgd.params().iter().map(|p| m.remove(&p.name)).collect();
    if let Some(extra) = m.keys().next() {
        return Err(TrainError::Checkpoint {
            path: mpath,
            msg: format!("momentum for unknown parameter `{extra}`"),
        });
    }
    sgd.set_momentum_buffers(bufs)?;
    Ok(())
}

/// The loss curve as lines `iter,lr,total,lab,fm,mask_rate,dist_lab,dist_unlab` of Rust's
/// shortest round-trip float formatting (empty for `None`): serde_json's default float parser
/// is not exact, and a resumed run must report the same curve as an uninterrupted one.
pub mod exact_curve {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::train::IterRecord;

    fn line(r: &IterRecord) -> String {
        let o = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{}",
            r.iter,
            r.lr,
            r.total,
            r.lab,
            o(r.fm),
            o(r.mask_rate),
            o(r.dist_lab),
            o(r.dist_unlab),
            o(r.pl_acc)
        )
    }

    fn parse(s: &str) -> Result<IterRecord, String> {
        let f: Vec<&str> = s.split(',').collect();
        if f.len() != 9 {
            return Err(format!(
                "curve line `{s}` has {} fields, expected 9",
                f.len()
            ));
        }
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|e| format!("curve line `{s}`: {e}"))
        };
        let opt = |v: &str| {
            if v.is_empty() {
                Ok(None)
            } else {
                num(v).map(Some)
            }
        };
        Ok(IterRecord {
            iter: f[0].parse().map_err(|e| format!("curve line `{s}`: {e}"))?,
            lr: num(f[1])?,
            total: num(f[2])?,
            lab: num(f[3])?,
            fm: opt(f[4])?,
            mask_rate: opt(f[5])?,
            dist_lab: opt(f[6])?,
            dist_unlab: opt(f[7])?,
            pl_acc: opt(f[8])?,
        })
    }

    pub fn serialize<S: Serializer>(curve: &[IterRecord], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(curve.iter().map(line))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IterRecord>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|l| parse(l).map_err(serde::de::Error::custom))
            .collect()
    }
}

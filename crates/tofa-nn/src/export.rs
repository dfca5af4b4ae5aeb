//! Export of one subnet as a standalone model: `model.safetensors` + `model.json`.
//!
//! The exported network is a [`StaticNet`]: its weights are the subnet's slices copied out
//! (leading channels; the centre of the depthwise kernels; the first `d` blocks), and its
//! architecture is the *singleton* space of the config (one choice per dimension), so nothing in
//! it is elastic: every tensor has exactly the shape it runs with.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::SubnetConfig;
use crate::error::{NnError, Result};
use crate::space::SearchSpace;
use crate::supernet::{BnStats, Mode, Supernet};

/// The JSON side of an export.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNetConfig {
    /// Id of the subnet in the space it came from.
    pub source_id: String,
    /// Name of the space it came from.
    pub source_space: String,
    /// The singleton space (one choice per dimension).
    pub space: SearchSpace,
    /// The only config of `space`.
    pub config: SubnetConfig,
}

/// The space whose only subnet is `cfg`.
pub fn singleton_space(space: &SearchSpace, cfg: &SubnetConfig) -> Result<SearchSpace> {
    cfg.validate(space)?;
    let mut s = space.clone();
    s.name = format!("{}-static", space.name);
    s.resolutions = vec![cfg.resolution];
    s.stem.widths = vec![cfg.stem_width];
    for (st, c) in s.stages.iter_mut().zip(&cfg.stages) {
        st.widths = vec![c.width];
        st.depths = vec![c.depth];
        st.kernels = vec![c.kernel];
        st.expands = vec![c.expand];
    }
    s.head.widths = vec![cfg.head_width];
    s.kernel_transform = false;
    Ok(s)
}

/// The subnet's tensors, sliced out of the supernet (contiguous copies), named as in the
/// supernet. BN running statistics come from `bn` where given.
pub fn subnet_tensors(
    net: &Supernet,
    cfg: &SubnetConfig,
    bn: Option<&BnStats>,
) -> Result<(StaticNetConfig, Vec<(String, Tensor)>)> {
    let single = singleton_space(net.space(), cfg)?;
    let shapes = Supernet::new(&single, 0)?.tensors();
    let all = net.tensors();
    let mut out = Vec::with_capacity(shapes.len());
    for (name, like) in shapes {
        let stat = bn.and_then(|b| {
            let (bn_name, which) = name.rsplit_once('.')?;
            let (m, v) = b.stats.get(bn_name)?;
            match which {
                "running_mean" => Some(m.clone()),
                "running_var" => Some(v.clone()),
                _ => None,
            }
        });
        let dw = name
            .strip_prefix("stages.")
            .and_then(|r| r.strip_suffix(".dw.conv.weight"))
            .and_then(|r| r.split_once(".blocks."))
            .and_then(|(i, j)| Some((i.parse::<usize>().ok()?, j.parse::<usize>().ok()?)));
        let t = match (stat, dw) {
            (Some(t), _) => t,
            (None, Some((i, j))) => net.dw_kernel(i, j, like.dim(0)?, like.dim(2)?)?,
            (None, None) => {
                let mut t = all
                    .get(&name)
                    .ok_or_else(|| NnError::Weights {
                        name: name.clone(),
                        msg: "missing in supernet".into(),
                    })?
                    .clone();
                let centre = name.ends_with(".dw.conv.weight");
                for (d, &n) in like.dims().iter().enumerate() {
                    let start = if centre && d >= 2 {
                        (t.dim(d)? - n) / 2
                    } else {
                        0
                    };
                    t = t.narrow(d, start, n)?;
                }
                t
            }
        };
        if t.dims() != like.dims() {
            return Err(NnError::Weights {
                name,
                msg: format!("sliced to {:?}, expected {:?}", t.dims(), like.dims()),
            });
        }
        out.push((name, t.contiguous()?));
    }
    let meta = StaticNetConfig {
        source_id: cfg.id(),
        source_space: net.space().name.clone(),
        config: SubnetConfig::maxnet(&single),
        space: single,
    };
    Ok((meta, out))
}

/// Writes `dir/model.safetensors` and `dir/model.json` for `cfg`.
pub fn export_subnet(
    net: &Supernet,
    cfg: &SubnetConfig,
    bn: Option<&BnStats>,
    dir: &Path,
) -> Result<()> {
    let (meta, tensors) = subnet_tensors(net, cfg, bn)?;
    std::fs::create_dir_all(dir).map_err(|source| NnError::Io {
        path: dir.into(),
        source,
    })?;
    let st = dir.join("model.safetensors");
    let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, &st).map_err(|e| NnError::File {
        path: st.clone(),
        msg: e.to_string(),
    })?;
    let js = dir.join("model.json");
    let text = serde_json::to_string_pretty(&meta).map_err(|e| NnError::File {
        path: js.clone(),
        msg: e.to_string(),
    })?;
    std::fs::write(&js, text).map_err(|source| NnError::Io { path: js, source })
}

/// A plain, non-elastic network loaded from an export.
pub struct StaticNet {
    meta: StaticNetConfig,
    net: Supernet,
}

impl StaticNet {
    /// Loads `dir/model.json` and `dir/model.safetensors` onto the CPU.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// As [`StaticNet::load`], onto `device` (the fused backend on the CPU, the portable one
    /// elsewhere: [`crate::Backend::for_device`]).
    pub fn load_on(dir: &Path, device: &Device) -> Result<Self> {
        let js = dir.join("model.json");
        let text = std::fs::read_to_string(&js).map_err(|source| NnError::Io {
            path: js.clone(),
            source,
        })?;
        let meta: StaticNetConfig = serde_json::from_str(&text).map_err(|e| NnError::File {
            path: js,
            msg: e.to_string(),
        })?;
        let mut net = Supernet::new_on(&meta.space, 0, device)?;
        net.load(&dir.join("model.safetensors"))?;
        Ok(StaticNet { meta, net })
    }

    /// The export's metadata.
    pub fn meta(&self) -> &StaticNetConfig {
        &self.meta
    }

    /// The device the weights live on; inputs must be there too.
    pub fn device(&self) -> &Device {
        self.net.device()
    }

    /// Eval-mode logits.
    ///
    /// # Shapes
    /// - `x`: `[B, C, r, r]` with `r` the exported resolution; returns `[B, num_classes]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.forward_t(x, &self.meta.config, Mode::Eval(None))
    }
}

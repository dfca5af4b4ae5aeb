//! Data sets as stage params: where a data set comes from and how it is shaped.
//!
//! A [`DataSpec`] is plain data in `pipeline.toml`; every stage that needs images loads them
//! from it, and the `split` stage pins the loaded data by digest so a changed file on disk is
//! caught rather than silently used. Stages load through [`DataSpec::load_shared`]: the first
//! decodes and writes the result to the cache's shared directory, every later stage of the
//! run (and later runs of the same binary) maps that file instead of decoding again and
//! holding its own copy in RAM.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tofa_data::synthetic::{SyntheticConfig, TaskSpec, generate_task};
use tofa_data::{BatchConfig, LoadOptions, SplitManifest, SplitSpec, TrainTest};
use tofa_runner::BoxError;
use tofa_runner::kind::{DepOutput, StageContext, StageKind};

use crate::StageError;

/// Where a data set's images come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The embedded procedural generator (`tofa_data::synthetic`).
    Synthetic,
    /// MNIST-layout IDX files (`{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`) in `dir`.
    Idx,
    /// CIFAR-10 or CIFAR-100 binary batches in `dir` (`classes` = 10 or 100).
    Cifar,
    /// An ImageFolder tree with `train/` and `test/` sub-trees in `dir`.
    Folder,
    /// A Hugging Face Hub dataset of parquet shards (`repo`, `train` and `test` splits).
    Hub,
}

/// A data set as stage params. Flat (one struct, optional fields) so that profiles can
/// override single fields by deep merge; [`DataSpec::load`] checks that the fields the
/// source needs are there and names the missing one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Name in tables and figures (for `synthetic`: the generator's task, `source` or a
    /// target such as `synth-cifar10`).
    pub name: String,
    pub source: Source,
    /// Square side every image is resized to (RGB always).
    pub resolution: usize,
    /// Directory of `idx`, `cifar` and `folder` data; relative paths are taken from
    /// `$TOFA_DATA_DIR` when it is set.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// `cifar`: 10 or 100.
    #[serde(default)]
    pub classes: Option<usize>,
    /// `hub`: `owner/name`, revision, columns, offline (cache only).
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default = "main_rev")]
    pub revision: String,
    #[serde(default)]
    pub image_column: Option<String>,
    #[serde(default)]
    pub label_column: Option<String>,
    #[serde(default)]
    pub offline: bool,
    /// `synthetic`: the generator's world seed and a multiplier of images per class.
    #[serde(default)]
    pub world_seed: u64,
    #[serde(default = "one")]
    pub scale: f64,
    /// Keep only the first `n` train (test) images of every class, in file order: a large
    /// data set cut to the size the profile's budget affords (any source; applied before
    /// resizing, so the full set is never held at `resolution`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_per_class: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_per_class: Option<usize>,
}

fn one() -> f64 {
    1.0
}

fn main_rev() -> String {
    "main".into()
}

impl DataSpec {
    fn need<'a, T>(&self, field: &str, v: &'a Option<T>) -> Result<&'a T, StageError> {
        v.as_ref().ok_or_else(|| {
            StageError::Param(format!(
                "data `{}`: source {:?} needs `{field}`",
                self.name, self.source
            ))
        })
    }

    /// [`DataSpec::load`], decoded once: the result is written to
    /// `<shared>/data/<key>.data` ([`tofa_data::decoded`]) and every call maps that file. The
    /// key ([`DataSpec::decode_key`]) covers the spec, the files a directory source reads
    /// (names, sizes, modification times) and the running binary, so an edited file or a
    /// rebuilt decoder is a new key, never a stale read. A file that does not open (truncated,
    /// foreign) is decoded again and replaced. Two stages missing the same key at once both
    /// decode; the file is replaced atomically, so either result is whole.
    ///
    /// A hub source is keyed by its `revision` as written: a moving one (`main`) is read again
    /// only under a new key (a new binary, or `tofa-pipeline clean --all`).
    pub fn load_shared(&self, shared: &Path) -> Result<TrainTest, StageError> {
        let path = shared
            .join("data")
            .join(format!("{}.data", self.decode_key()?));
        if let Ok(tt) = tofa_data::decoded::open(&path) {
            return Ok(tt);
        }
        let tt = self.load()?;
        tofa_data::decoded::write(&tt, &path)?;
        drop(tt);
        Ok(tofa_data::decoded::open(&path)?)
    }

    /// What the decoded data depends on, hashed: the spec, the resolved source directory's
    /// files (path, size, modification time) and the running binary (path, size,
    /// modification time: the decoders and the generator are its code).
    pub fn decode_key(&self) -> Result<String, StageError> {
        let mut h = blake3::Hasher::new();
        h.update(b"tofa-decoded-v1\0");
        let spec = serde_json::to_vec(self).map_err(|e| StageError::Param(e.to_string()))?;
        h.update(&spec);
        let stamp = |h: &mut blake3::Hasher, p: &Path| -> Result<(), StageError> {
            let m = std::fs::metadata(p).map_err(|e| StageError::Io {
                path: p.to_path_buf(),
                source: e,
            })?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(&m.len().to_le_bytes());
            h.update(&mtime.to_le_bytes());
            Ok(())
        };
        if let Some(dir) = &self.dir
            && matches!(self.source, Source::Idx | Source::Cifar | Source::Folder)
        {
            let dir = resolve(dir);
            for f in files_under(&dir)? {
                stamp(&mut h, &f)?;
            }
        }
        let exe = std::env::current_exe().map_err(|e| StageError::Io {
            path: "/proc/self/exe".into(),
            source: e,
        })?;
        stamp(&mut h, &exe)?;
        Ok(h.finalize().to_hex()[..32].to_string())
    }

    /// Loads train and test, RGB, resized to `resolution`.
    pub fn load(&self) -> Result<TrainTest, StageError> {
        let r = self.resolution;
        let opts = LoadOptions {
            size: Some((r, r)),
            rgb: true,
        };
        let tt = match self.source {
            Source::Synthetic => {
                let spec = synthetic_task(&self.name, self.scale)?;
                generate_task(self.world_seed, &spec, (r, r))?
            }
            Source::Idx => {
                let dir = resolve(self.need("dir", &self.dir)?);
                if self.name.to_ascii_lowercase().contains("fashion") {
                    // Same files, plus Fashion-MNIST's class names.
                    tofa_data::idx::load_fashion_mnist(&dir)?
                } else {
                    tofa_data::idx::load_idx_dir(&dir, &self.name, None)?
                }
            }
            Source::Cifar => {
                let dir = resolve(self.need("dir", &self.dir)?);
                match self.need("classes", &self.classes)? {
                    10 => tofa_data::cifar::load_cifar10_dir(&dir)?,
                    100 => tofa_data::cifar::load_cifar100_dir(&dir, false)?,
                    n => {
                        return Err(StageError::Param(format!(
                            "data `{}`: classes is {n}; cifar has 10 or 100",
                            self.name
                        )));
                    }
                }
            }
            Source::Folder => {
                let dir = resolve(self.need("dir", &self.dir)?);
                tofa_data::folder::load_image_folder_pair(&dir, &self.name, &opts)?
            }
            Source::Hub => {
                let repo = self.need("repo", &self.repo)?;
                let src = |split: &str| {
                    let mut s = tofa_data::hub::HubSource::new(repo.clone(), split);
                    s.revision = self.revision.clone();
                    s.image_column = self.image_column.clone();
                    s.label_column = self.label_column.clone();
                    s.offline = self.offline;
                    s.token = std::env::var("HF_TOKEN").ok();
                    s
                };
                TrainTest {
                    train: src("train").load(&opts)?,
                    test: src("test").load(&opts)?,
                }
            }
        };
        let cut = |d: tofa_data::Dataset, n: Option<usize>| match n {
            Some(n) => d.first_per_class(n),
            None => Ok(d),
        };
        let tt = TrainTest {
            train: cut(tt.train, self.train_per_class)?,
            test: cut(tt.test, self.test_per_class)?,
        };
        Ok(tt.conform(&opts)?)
    }
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, StageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StageError::Io { path, source }
    };
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let p = e.map_err(io(&d))?.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Relative data paths are taken from `$TOFA_DATA_DIR` when set (so a profile can name
/// `fashion-mnist` and the machine decide where it lives), else as given.
fn resolve(p: &Path) -> PathBuf {
    match std::env::var_os("TOFA_DATA_DIR") {
        Some(root) if p.is_relative() => Path::new(&root).join(p),
        _ => p.to_path_buf(),
    }
}

/// The generator's task named `task`, with images per class scaled by `scale`.
pub fn synthetic_task(task: &str, scale: f64) -> Result<TaskSpec, StageError> {
    let cfg = SyntheticConfig::default();
    let mut spec = if task == "source" || task == cfg.source.name {
        cfg.source.clone()
    } else {
        cfg.targets
            .iter()
            .find(|t| t.name == task)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
                StageError::Param(format!(
                    "unknown synthetic task `{task}` (known: source, {})",
                    names.join(", ")
                ))
            })?
    };
    if !(scale.is_finite() && scale > 0.0) {
        return Err(StageError::Param(format!(
            "synthetic.scale is {scale}; it must be positive"
        )));
    }
    let scaled = |n: usize| ((n as f64 * scale).round() as usize).max(2);
    spec.train_per_class = scaled(spec.train_per_class);
    spec.test_per_class = scaled(spec.test_per_class);
    Ok(spec)
}

/// `split`: loads a data set and cuts it (Table 2 / Section 4.6).
#[derive(Debug)]
pub struct Split;

/// Params of [`Split`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitParams {
    pub data: DataSpec,
    /// Labelled images per class; `None` takes the paper's count for the data set's name
    /// (Table 2), else 10.
    #[serde(default)]
    pub labelled_per_class: Option<usize>,
    /// Fraction of each class held out for validation (the paper's selection ablation: 0.3).
    #[serde(default)]
    pub validation_fraction: f64,
}

/// The files a `split` stage writes and [`Prepared`] reads: the data spec and the split.
const DATA_FILE: &str = "data.json";
const SPLIT_FILE: &str = "split.json";

/// A data set loaded as a `split` stage pinned it.
#[derive(Debug)]
pub struct Prepared {
    pub spec: DataSpec,
    pub data: TrainTest,
    pub split: SplitManifest,
}

impl Prepared {
    /// Reloads the data of the stage's one `split` dependency.
    pub fn of(ctx: &StageContext) -> Result<Self, StageError> {
        Self::from_dep(crate::one_dep::<Split>(ctx)?, &ctx.shared_dir)
    }

    /// Reloads the data of a `split` dependency ([`DataSpec::load_shared`] in `shared`) and
    /// checks it against the pinned digest.
    pub fn from_dep(dep: &DepOutput, shared: &Path) -> Result<Self, StageError> {
        let spec: DataSpec = crate::read_json(&dep.dir.join(DATA_FILE))?;
        let data = spec.load_shared(shared)?;
        let path = dep.dir.join(SPLIT_FILE);
        let split = SplitManifest::load(&path)?;
        split.check_against(&data.train, &path)?;
        Ok(Self { spec, data, split })
    }

    /// The images every augmentation pipeline produces for this data set.
    pub fn batch_config(&self) -> BatchConfig {
        BatchConfig::new((self.spec.resolution, self.spec.resolution))
    }
}

impl StageKind for Split {
    type Params = SplitParams;
    const NAME: &'static str = "split";
    // 2: the synthetic generator's classes are shapes, not colours (issue 12); the data
    // spec's params did not change, so the version carries the change into the key
    const VERSION: &'static str = "2";

    fn run(&self, p: &SplitParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        ctx.progress.message(&format!("loading {}", p.data.name));
        let tt = p.data.load_shared(&ctx.shared_dir)?;
        let labelled = p
            .labelled_per_class
            .or_else(|| tofa_data::split::paper_labelled_per_class(&p.data.name))
            .unwrap_or(10);
        let spec = SplitSpec {
            labelled_per_class: labelled,
            validation_fraction: p.validation_fraction,
            seed: ctx.seed,
        };
        let manifest = SplitManifest::new(&tt.train, &spec)?;
        manifest.save(&ctx.out(SPLIT_FILE))?;
        crate::write_json(&ctx.out(DATA_FILE), &p.data)?;
        let s = &manifest.split;
        ctx.emit_row(&crate::rows::DatasetRow {
            dataset: p.data.name.clone(),
            classes: tt.train.num_classes(),
            train: tt.train.len(),
            labelled: s.labelled.len(),
            unlabelled: s.unlabelled.len(),
            validation: s.validation.len(),
            test: tt.test.len(),
            resolution: p.data.resolution,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: Source) -> DataSpec {
        serde_json::from_value(serde_json::json!({
            "name": "x", "source": source, "resolution": 16
        }))
        .unwrap()
    }

    #[test]
    fn missing_field_is_named() {
        let e = spec(Source::Idx).load().unwrap_err().to_string();
        assert_eq!(e, "data `x`: source Idx needs `dir`");
        let e = spec(Source::Hub).load().unwrap_err().to_string();
        assert_eq!(e, "data `x`: source Hub needs `repo`");
    }

    #[test]
    fn synthetic_tasks_scale_and_unknown_names_list_the_known() {
        let t = synthetic_task("synth-cifar10", 0.5).unwrap();
        assert_eq!((t.train_per_class, t.test_per_class), (500, 50));
        let e = synthetic_task("nope", 1.0).unwrap_err().to_string();
        assert!(
            e.starts_with("unknown synthetic task `nope` (known: source, synth-aircraft"),
            "{e}"
        );
        let mut s = spec(Source::Synthetic);
        s.name = "synth-pets".into();
        s.scale = 0.1;
        let tt = s.load().unwrap();
        assert_eq!(tt.train.height(), 16);
        assert_eq!(tt.train.channels(), 3);
        assert_eq!(tt.train.num_classes(), 12);
    }

    /// The first call decodes and writes the shared file; later calls map it and see the
    /// same data; a corrupt file is decoded again.
    #[test]
    fn shared_loads_decode_once_and_map_the_same_data() {
        let shared = tempfile::tempdir().unwrap();
        let mut s = spec(Source::Synthetic);
        s.name = "synth-pets".into();
        s.scale = 0.05;
        let want = s.load().unwrap();
        let first = s.load_shared(shared.path()).unwrap();
        let files: Vec<_> = std::fs::read_dir(shared.path().join("data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let again = s.load_shared(shared.path()).unwrap();
        for tt in [&first, &again] {
            assert_eq!(tt.train.digest(), want.train.digest());
            assert_eq!(tt.test.digest(), want.test.digest());
            assert_eq!(tt.train.name(), want.train.name());
        }
        std::fs::write(&files[0], b"TOFADATA garbage").unwrap();
        let fixed = s.load_shared(shared.path()).unwrap();
        assert_eq!(fixed.train.digest(), want.train.digest());
        // another spec is another file
        s.scale = 0.06;
        s.load_shared(shared.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(shared.path().join("data"))
                .unwrap()
                .count(),
            2
        );
    }

    /// A directory source's key follows its files: an edited file is a new key.
    #[test]
    fn decode_keys_follow_the_source_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("train")).unwrap();
        std::fs::write(dir.path().join("train/a.png"), b"1").unwrap();
        let mut s = spec(Source::Folder);
        s.dir = Some(dir.path().to_path_buf());
        let k1 = s.decode_key().unwrap();
        assert_eq!(s.decode_key().unwrap(), k1);
        std::fs::write(dir.path().join("train/a.png"), b"22").unwrap();
        let k2 = s.decode_key().unwrap();
        assert_ne!(k1, k2);
        std::fs::write(dir.path().join("train/b.png"), b"3").unwrap();
        assert_ne!(s.decode_key().unwrap(), k2);
        s.resolution = 32;
        assert_ne!(s.decode_key().unwrap(), k2);
    }
}

//! Hugging Face Hub datasets: parquet shards whose image column holds encoded images
//! (`struct<bytes: binary, path: string>` as `datasets` writes them, or plain binary).
//!
//! Files are fetched through hf-hub's sync API into its cache (`<cache>/datasets--<owner>--<name>`),
//! so a second load needs no network: with `offline` set, or when the hub cannot be reached,
//! the cached snapshot of the revision is used.

use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use rayon::prelude::*;

use crate::dataset::{Dataset, LoadOptions, numbered_classes};
use crate::error::{DataError, Result};
use crate::folder::{assemble, decode};

const IMAGE_COLUMNS: [&str; 3] = ["image", "img", "picture"];
const LABEL_COLUMNS: [&str; 3] = ["label", "labels", "fine_label"];

/// Where a hub dataset lives and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSource {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit; `main` by default.
    pub revision: String,
    /// The split whose shards are read (`train`, `test`, ...): a path component equal to it,
    /// or a file name starting with `<split>-` or `<split>.`.
    pub split: String,
    /// The hub's base URL; `None` is `$HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// hf-hub's cache directory; `None` is `$HF_HOME/hub` or `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache, never the network.
    pub offline: bool,
    /// The image column; `None` tries `image`, `img`, `picture`.
    pub image_column: Option<String>,
    /// The label column; `None` tries `label`, `labels`, `fine_label`.
    pub label_column: Option<String>,
    /// A bearer token for gated datasets.
    pub token: Option<String>,
}

impl HubSource {
    pub fn new(repo: impl Into<String>, split: impl Into<String>) -> Self {
        Self {
            repo: repo.into(),
            revision: "main".to_owned(),
            split: split.into(),
            endpoint: None,
            cache_dir: None,
            offline: false,
            image_column: None,
            label_column: None,
            token: None,
        }
    }

    fn err(&self, reason: impl Into<String>) -> DataError {
        DataError::Hub {
            repo: self.repo.clone(),
            reason: reason.into(),
        }
    }

    fn cache(&self) -> hf_hub::Cache {
        match &self.cache_dir {
            Some(dir) => hf_hub::Cache::new(dir.clone()),
            None => hf_hub::Cache::from_env(),
        }
    }

    fn hf_repo(&self) -> hf_hub::Repo {
        hf_hub::Repo::with_revision(
            self.repo.clone(),
            hf_hub::RepoType::Dataset,
            self.revision.clone(),
        )
    }

    /// The cached snapshot directory of this revision, if there is one.
    fn cached_snapshot(&self) -> Option<PathBuf> {
        let repo_dir = self.cache().path().join(self.hf_repo().folder_name());
        let commit = std::fs::read_to_string(repo_dir.join("refs").join(&self.revision)).ok()?;
        let snap = repo_dir.join("snapshots").join(commit.trim());
        snap.is_dir().then_some(snap)
    }

    fn cached_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let snap = self.cached_snapshot().ok_or_else(|| {
            self.err(format!(
                "revision {} is not in the cache at {}",
                self.revision,
                self.cache().path().display()
            ))
        })?;
        let mut out = Vec::new();
        let mut stack = vec![snap.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs_err::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&snap) {
                    let rel = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.push((rel, path));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn is_split_shard(&self, rfilename: &str) -> bool {
        if !rfilename.ends_with(".parquet") {
            return false;
        }
        let mut parts: Vec<&str> = rfilename.split('/').collect();
        let file = parts.pop().unwrap_or_default();
        parts.contains(&self.split.as_str())
            || file.starts_with(&format!("{}-", self.split))
            || file.starts_with(&format!("{}.", self.split))
    }

    /// Local paths of this split's shards (and of `README.md` when the repo has one), downloading
    /// what the cache lacks.
    fn resolve(&self) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
        let files: Vec<(String, Option<PathBuf>)> = if self.offline {
            self.cached_files()?
                .into_iter()
                .map(|(r, p)| (r, Some(p)))
                .collect()
        } else {
            let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(self.cache())
                .with_progress(false)
                .with_token(self.token.clone());
            let endpoint = self
                .endpoint
                .clone()
                .or_else(|| std::env::var("HF_ENDPOINT").ok());
            if let Some(e) = &endpoint {
                builder = builder.with_endpoint(e.trim_end_matches('/').to_owned());
            }
            let api = builder
                .build()
                .map_err(|e| self.err(format!("client: {e}")))?;
            let repo = api.repo(self.hf_repo());
            match repo.info() {
                Ok(info) => {
                    let wanted: Vec<String> = info
                        .siblings
                        .into_iter()
                        .map(|s| s.rfilename)
                        .filter(|f| self.is_split_shard(f) || f == "README.md")
                        .collect();
                    let mut out = Vec::new();
                    for f in wanted {
                        let p = repo
                            .get(&f)
                            .map_err(|e| self.err(format!("download {f}: {e}")))?;
                        out.push((f, Some(p)));
                    }
                    out
                }
                Err(e) => match self.cached_files() {
                    Ok(files) => files.into_iter().map(|(r, p)| (r, Some(p))).collect(),
                    Err(_) => {
                        return Err(self.err(format!("listing revision {}: {e}", self.revision)));
                    }
                },
            }
        };
        let mut shards = Vec::new();
        let mut readme = None;
        for (rel, path) in files {
            let Some(path) = path else { continue };
            if rel == "README.md" {
                readme = Some(path);
            } else if self.is_split_shard(&rel) {
                shards.push(path);
            }
        }
        if shards.is_empty() {
            return Err(self.err(format!(
                "no parquet shards for split {:?} at revision {}",
                self.split, self.revision
            )));
        }
        Ok((shards, readme))
    }

    /// Loads the split as one dataset named `<repo>/<split>`.
    pub fn load(&self, opts: &LoadOptions) -> Result<Dataset> {
        let (shards, readme) = self.resolve()?;
        let mut encoded = Vec::new();
        let mut raw_labels = Vec::new();
        let mut label_col = String::new();
        for shard in &shards {
            let (imgs, labels, col) = self.read_shard(shard)?;
            encoded.extend(imgs);
            raw_labels.extend(labels);
            label_col = col;
        }
        let names = match readme {
            Some(p) => class_names_from_readme(&fs_err::read_to_string(p)?, &label_col),
            None => None,
        };
        let num_classes = names.as_ref().map_or_else(
            || {
                raw_labels
                    .iter()
                    .max()
                    .map_or(0, |&m| m.max(0) as usize + 1)
            },
            Vec::len,
        );
        let name = format!("{}/{}", self.repo, self.split);
        let mut labels = Vec::with_capacity(raw_labels.len());
        for (index, &l) in raw_labels.iter().enumerate() {
            if l < 0 || l as usize >= num_classes {
                return Err(DataError::LabelOutOfRange {
                    source_name: format!("{name} column {label_col}"),
                    index,
                    label: l,
                    num_classes,
                });
            }
            labels.push(l as u32);
        }
        let images = encoded
            .par_iter()
            .enumerate()
            .map(|(i, bytes)| decode(bytes, &format!("{name} row {i}")))
            .collect::<Result<Vec<_>>>()?;
        assemble(
            &name,
            images,
            labels,
            names.unwrap_or_else(|| numbered_classes(num_classes)),
            opts,
            None,
        )
    }

    fn pick_column(
        &self,
        available: &[String],
        configured: Option<&String>,
        defaults: &[&str],
        what: &str,
    ) -> Result<String> {
        let col_err = |reason: String| DataError::HubColumn {
            repo: self.repo.clone(),
            reason,
        };
        match configured {
            Some(c) if available.contains(c) => Ok(c.clone()),
            Some(c) => Err(col_err(format!(
                "{what} column {c:?} missing; columns are {available:?}"
            ))),
            None => defaults
                .iter()
                .find(|d| available.iter().any(|a| a == *d))
                .map(|d| (*d).to_owned())
                .ok_or_else(|| {
                    col_err(format!(
                        "no {what} column (looked for {defaults:?}); columns are {available:?}"
                    ))
                }),
        }
    }

    /// Encoded images, labels and the label column's name from one shard.
    fn read_shard(&self, path: &Path) -> Result<(Vec<Vec<u8>>, Vec<i64>, String)> {
        let pq = |reason: String| DataError::Parquet {
            path: path.to_owned(),
            reason,
        };
        let file = fs_err::File::open(path)?.into_file();
        let reader = SerializedFileReader::new(file).map_err(|e| pq(e.to_string()))?;
        let schema = reader.metadata().file_metadata().schema();
        let fields = schema.get_fields();
        let names: Vec<String> = fields.iter().map(|f| f.name().to_owned()).collect();
        let image_col =
            self.pick_column(&names, self.image_column.as_ref(), &IMAGE_COLUMNS, "image")?;
        let label_col =
            self.pick_column(&names, self.label_column.as_ref(), &LABEL_COLUMNS, "label")?;
        let projection = parquet::schema::types::Type::group_type_builder(schema.name())
            .with_fields(
                fields
                    .iter()
                    .filter(|f| f.name() == image_col || f.name() == label_col)
                    .cloned()
                    .collect(),
            )
            .build()
            .map_err(|e| pq(e.to_string()))?;
        let rows = reader
            .get_row_iter(Some(projection))
            .map_err(|e| pq(e.to_string()))?;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (i, row) in rows.enumerate() {
            let row = row.map_err(|e| pq(format!("row {i}: {e}")))?;
            let (mut img, mut label) = (None, None);
            for (name, field) in row.get_column_iter() {
                if *name == image_col {
                    img = image_bytes(field);
                } else if *name == label_col {
                    label = int_value(field);
                }
            }
            let col_err = |reason: String| DataError::HubColumn {
                repo: self.repo.clone(),
                reason: format!("{}: {reason}", path.display()),
            };
            images.push(img.ok_or_else(|| {
                col_err(format!("column {image_col:?} row {i} holds no image bytes"))
            })?);
            labels.push(label.ok_or_else(|| {
                col_err(format!(
                    "column {label_col:?} row {i} holds no integer label"
                ))
            })?);
        }
        Ok((images, labels, label_col))
    }
}

fn image_bytes(field: &Field) -> Option<Vec<u8>> {
    match field {
        Field::Bytes(b) => Some(b.data().to_vec()),
        Field::Group(row) => row.get_column_iter().find_map(|(n, f)| match f {
            Field::Bytes(b) if n == "bytes" => Some(b.data().to_vec()),
            _ => None,
        }),
        _ => None,
    }
}

fn int_value(field: &Field) -> Option<i64> {
    match *field {
        Field::Byte(v) => Some(i64::from(v)),
        Field::Short(v) => Some(i64::from(v)),
        Field::Int(v) => Some(i64::from(v)),
        Field::Long(v) => Some(v),
        Field::UByte(v) => Some(i64::from(v)),
        Field::UShort(v) => Some(i64::from(v)),
        Field::UInt(v) => Some(i64::from(v)),
        Field::ULong(v) => i64::try_from(v).ok(),
        _ => None,
    }
}

/// Class names from a dataset card's `class_label: names:` block under `- name: <label_col>`.
pub fn class_names_from_readme(readme: &str, label_col: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("- name: {label_col}"))?;
    let names_at = lines[start..]
        .iter()
        .take(8)
        .position(|l| l.trim() == "names:")?
        + start;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(lines[names_at]);
    let mut out = Vec::new();
    for l in &lines[names_at + 1..] {
        if l.trim().is_empty() || indent(l) <= base {
            break;
        }
        let (key, value) = l.trim().split_once(':')?;
        let idx: usize = key
            .trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .parse()
            .ok()?;
        if idx != out.len() {
            return None;
        }
        out.push(
            value
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_owned(),
        );
    }
    (!out.is_empty()).then_some(out)
}

/// Writes a parquet shard the way `datasets` does: an image column
/// `struct<bytes: binary, path: string>` (left out when `image_column` is `None`) and an
/// `int64` label column, snappy-compressed. For fixtures and exports.
pub fn write_parquet_shard(
    path: &Path,
    image_column: Option<&str>,
    images: &[Vec<u8>],
    label_column: &str,
    labels: &[i64],
) -> Result<()> {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    let pq = |e: parquet::errors::ParquetError| DataError::Parquet {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let image_group = image_column.map_or_else(String::new, |c| {
        format!("optional group {c} {{ optional binary bytes; optional binary path (STRING); }}")
    });
    let message = format!("message schema {{ {image_group} optional int64 {label_column}; }}");
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&message).map_err(pq)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let file = fs_err::File::create(path)?.into_file();
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(pq)?;
    let mut group = writer.next_row_group().map_err(pq)?;
    let n = labels.len();
    if image_column.is_some() {
        let bytes: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
        let paths: Vec<ByteArray> = (0..n)
            .map(|i| ByteArray::from(format!("{i}.png").as_str()))
            .collect();
        for values in [bytes, paths] {
            let mut col = group.next_column().map_err(pq)?.ok_or_else(|| {
                pq(parquet::errors::ParquetError::General(
                    "missing column".into(),
                ))
            })?;
            col.typed::<ByteArrayType>()
                .write_batch(&values, Some(&vec![2; n]), None)
                .map_err(pq)?;
            col.close().map_err(pq)?;
        }
    }
    let mut col = group.next_column().map_err(pq)?.ok_or_else(|| {
        pq(parquet::errors::ParquetError::General(
            "missing column".into(),
        ))
    })?;
    col.typed::<Int64Type>()
        .write_batch(labels, Some(&vec![1; n]), None)
        .map_err(pq)?;
    col.close().map_err(pq)?;
    group.close().map_err(pq)?;
    writer.close().map_err(pq)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_class_names_follow_the_label_column() {
        let card = "---\ndataset_info:\n  features:\n  - name: img\n    dtype: image\n  - name: label\n    dtype:\n      class_label:\n        names:\n          '0': cat\n          '1': dog\n  splits:\n  - name: train\n";
        assert_eq!(
            class_names_from_readme(card, "label"),
            Some(vec!["cat".to_owned(), "dog".to_owned()])
        );
        assert_eq!(class_names_from_readme(card, "other"), None);
    }

    #[test]
    fn split_shards_are_matched_by_component_or_prefix() {
        let s = HubSource::new("o/n", "train");
        assert!(s.is_split_shard("data/train-00000-of-00001.parquet"));
        assert!(s.is_split_shard("plain_text/train/0000.parquet"));
        assert!(!s.is_split_shard("data/test-00000-of-00001.parquet"));
        assert!(!s.is_split_shard("README.md"));
    }
}

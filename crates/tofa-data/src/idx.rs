//! IDX files, the MNIST / Fashion-MNIST layout, raw or gzipped.
//!
//! A file is a big-endian header, `0 0 0x08 ndim` then `ndim` `u32` sizes, then the `u8` data.
//! Images are `ndim = 3` (magic 2051: count, rows, cols), labels `ndim = 1` (magic 2049).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, TrainTest, numbered_classes};
use crate::error::{DataError, Result};

/// Where Debian's `dataset-fashion-mnist` package installs the gzipped IDX files.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's ten classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

fn idx_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Idx {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a whole file, inflating it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs_err::read(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::Io(std::io::Error::new(
                    e.kind(),
                    format!("gunzip {}: {e}", path.display()),
                ))
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn parse(path: &Path, bytes: &[u8], magic: u32) -> Result<(Vec<usize>, usize)> {
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < 4 {
        return Err(idx_err(
            path,
            format!("{} bytes, too short for a magic number", bytes.len()),
        ));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(idx_err(
            path,
            format!("wrong magic number {found:#010x}, expected {magic:#010x}"),
        ));
    }
    if bytes.len() < header {
        return Err(idx_err(
            path,
            format!("header truncated at {} bytes", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims.iter().product::<usize>();
    let got = bytes.len() - header;
    if got != expected {
        return Err(idx_err(
            path,
            format!("size mismatch: header {dims:?} needs {expected} data bytes, file has {got}"),
        ));
    }
    Ok((dims, header))
}

/// Images of an IDX file as `(count, rows, cols, pixels)`.
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let mut bytes = read_maybe_gz(path)?;
    let (dims, header) = parse(path, &bytes, IMAGES_MAGIC)?;
    bytes.drain(..header);
    Ok((dims[0], dims[1], dims[2], bytes))
}

/// Labels of an IDX file.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = read_maybe_gz(path)?;
    let (_, header) = parse(path, &bytes, LABELS_MAGIC)?;
    bytes.drain(..header);
    Ok(bytes)
}

/// A dataset from an image file and a label file (grayscale, one channel).
///
/// `class_names` fixes the number of classes; `None` numbers them `0..=max label`.
pub fn load_idx(
    images: &Path,
    labels: &Path,
    name: &str,
    class_names: Option<Vec<String>>,
) -> Result<Dataset> {
    let (n, h, w, pixels) = read_idx_images(images)?;
    let raw_labels = read_idx_labels(labels)?;
    if raw_labels.len() != n {
        return Err(idx_err(
            labels,
            format!(
                "{} labels for {n} images in {}",
                raw_labels.len(),
                images.display()
            ),
        ));
    }
    let class_names = class_names.unwrap_or_else(|| {
        numbered_classes(raw_labels.iter().max().map_or(0, |&m| m as usize + 1))
    });
    if let Some((index, &label)) = raw_labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= class_names.len())
    {
        return Err(DataError::LabelOutOfRange {
            source_name: labels.display().to_string(),
            index,
            label: i64::from(label),
            num_classes: class_names.len(),
        });
    }
    let labels = raw_labels.into_iter().map(u32::from).collect();
    Dataset::new(name, (h, w, 1), pixels, labels, class_names)
}

/// Finds `{stem}` or `{stem}.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for candidate in [stem.to_owned(), format!("{stem}.gz")] {
        let p = dir.join(&candidate);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(idx_err(
        &dir.join(stem),
        "missing (looked for it raw and with .gz)",
    ))
}

/// The four standard files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or `.gz`) of a directory.
pub fn load_idx_dir(dir: &Path, name: &str, class_names: Option<Vec<String>>) -> Result<TrainTest> {
    let train = load_idx(
        &find(dir, "train-images-idx3-ubyte")?,
        &find(dir, "train-labels-idx1-ubyte")?,
        &format!("{name}/train"),
        class_names.clone(),
    )?;
    let test = load_idx(
        &find(dir, "t10k-images-idx3-ubyte")?,
        &find(dir, "t10k-labels-idx1-ubyte")?,
        &format!("{name}/test"),
        Some(class_names.unwrap_or_else(|| train.class_names().to_vec())),
    )?;
    Ok(TrainTest { train, test })
}

/// Fashion-MNIST from a directory of IDX files, with its class names.
pub fn load_fashion_mnist(dir: &Path) -> Result<TrainTest> {
    let names = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    load_idx_dir(dir, "fashion-mnist", Some(names))
}

fn write_idx(path: &Path, magic: u32, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    let mut bytes = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    bytes.extend_from_slice(&magic.to_be_bytes());
    for &d in dims {
        let d =
            u32::try_from(d).map_err(|_| idx_err(path, format!("dimension {d} exceeds u32")))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes)?;
        bytes = enc.finish()?;
    }
    fs_err::write(path, bytes)?;
    Ok(())
}

/// Writes images (`count * rows * cols` bytes) as an IDX file, gzipped if asked.
pub fn write_idx_images(
    path: &Path,
    (n, h, w): (usize, usize, usize),
    pixels: &[u8],
    gzip: bool,
) -> Result<()> {
    if pixels.len() != n * h * w {
        return Err(idx_err(
            path,
            format!("{} bytes for {n} images of {h}x{w}", pixels.len()),
        ));
    }
    write_idx(path, IMAGES_MAGIC, &[n, h, w], pixels, gzip)
}

/// Writes labels as an IDX file, gzipped if asked.
pub fn write_idx_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<()> {
    write_idx(path, LABELS_MAGIC, &[labels.len()], labels, gzip)
}

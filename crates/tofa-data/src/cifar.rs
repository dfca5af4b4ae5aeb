//! CIFAR-10 and CIFAR-100 binary batches.
//!
//! A batch is a run of fixed-size records: CIFAR-10 `label, 3072 pixels`, CIFAR-100
//! `coarse label, fine label, 3072 pixels`; the pixels are 32x32 planes R, G, B (CHW).

use std::path::Path;

use crate::dataset::{Dataset, TrainTest, numbered_classes};
use crate::error::{DataError, Result};

const SIDE: usize = 32;
const PIXELS: usize = SIDE * SIDE * 3;

/// CIFAR-10's classes, in label order (as in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which record layout, and for CIFAR-100 which of its two labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    /// Fine labels (100 classes), or coarse ones (20 superclasses) when `coarse`.
    Cifar100 {
        coarse: bool,
    },
}

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100 { .. } => 2,
        }
    }

    fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100 { coarse: false } => 100,
            Self::Cifar100 { coarse: true } => 20,
        }
    }
}

/// Reads one batch file into HWC pixels and labels.
pub fn read_cifar_batch(path: &Path, kind: CifarKind) -> Result<(Vec<u8>, Vec<u32>)> {
    let bytes = fs_err::read(path)?;
    let record = kind.label_bytes() + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(DataError::Cifar {
            path: path.to_owned(),
            reason: format!(
                "truncated: {} bytes is not a whole number of {record}-byte records ({} whole, {} left over)",
                bytes.len(),
                bytes.len() / record,
                bytes.len() % record
            ),
        });
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    let plane = SIDE * SIDE;
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let label = match kind {
            CifarKind::Cifar10 | CifarKind::Cifar100 { coarse: true } => rec[0],
            CifarKind::Cifar100 { coarse: false } => rec[1],
        };
        if label as usize >= kind.num_classes() {
            return Err(DataError::LabelOutOfRange {
                source_name: path.display().to_string(),
                index,
                label: i64::from(label),
                num_classes: kind.num_classes(),
            });
        }
        labels.push(u32::from(label));
        let chw = &rec[kind.label_bytes()..];
        for p in 0..plane {
            pixels.extend_from_slice(&[chw[p], chw[plane + p], chw[2 * plane + p]]);
        }
    }
    Ok((pixels, labels))
}

/// Writes HWC 32x32x3 images and labels as one batch file. For CIFAR-100 the other label byte
/// is written as 0.
pub fn write_cifar_batch(
    path: &Path,
    kind: CifarKind,
    pixels: &[u8],
    labels: &[u32],
) -> Result<()> {
    if pixels.len() != labels.len() * PIXELS {
        return Err(DataError::Cifar {
            path: path.to_owned(),
            reason: format!("{} pixel bytes for {} images", pixels.len(), labels.len()),
        });
    }
    let mut out = Vec::with_capacity(labels.len() * (PIXELS + 2));
    let plane = SIDE * SIDE;
    for (img, &label) in pixels.chunks_exact(PIXELS).zip(labels) {
        let label = u8::try_from(label).map_err(|_| DataError::Cifar {
            path: path.to_owned(),
            reason: format!("label {label} does not fit a byte"),
        })?;
        match kind {
            CifarKind::Cifar10 => out.push(label),
            CifarKind::Cifar100 { coarse: true } => out.extend_from_slice(&[label, 0]),
            CifarKind::Cifar100 { coarse: false } => out.extend_from_slice(&[0, label]),
        }
        for c in 0..3 {
            out.extend((0..plane).map(|p| img[p * 3 + c]));
        }
    }
    fs_err::write(path, out)?;
    Ok(())
}

fn load_batches(
    dir: &Path,
    files: &[String],
    kind: CifarKind,
    name: &str,
    classes: &[String],
) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let (p, l) = read_cifar_batch(&dir.join(f), kind)?;
        pixels.extend(p);
        labels.extend(l);
    }
    Dataset::new(name, (SIDE, SIDE, 3), pixels, labels, classes.to_vec())
}

/// Class names from a text file with one name a line, if the file exists and has `n` names.
fn names_file(path: &Path, n: usize) -> Result<Option<Vec<String>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = fs_err::read_to_string(path)?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((names.len() == n).then_some(names))
}

/// CIFAR-10 from its `cifar-10-batches-bin` directory (`data_batch_1.bin` .. `_5.bin`,
/// `test_batch.bin`, optional `batches.meta.txt`).
pub fn load_cifar10_dir(dir: &Path) -> Result<TrainTest> {
    let kind = CifarKind::Cifar10;
    let classes = names_file(&dir.join("batches.meta.txt"), 10)?
        .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| (*s).to_owned()).collect());
    let train_files: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    Ok(TrainTest {
        train: load_batches(dir, &train_files, kind, "cifar10/train", &classes)?,
        test: load_batches(
            dir,
            &["test_batch.bin".to_owned()],
            kind,
            "cifar10/test",
            &classes,
        )?,
    })
}

/// CIFAR-100 from its `cifar-100-binary` directory (`train.bin`, `test.bin`, optional
/// `fine_label_names.txt` / `coarse_label_names.txt`).
pub fn load_cifar100_dir(dir: &Path, coarse: bool) -> Result<TrainTest> {
    let kind = CifarKind::Cifar100 { coarse };
    let n = kind.num_classes();
    let names = if coarse {
        "coarse_label_names.txt"
    } else {
        "fine_label_names.txt"
    };
    let classes = names_file(&dir.join(names), n)?.unwrap_or_else(|| numbered_classes(n));
    Ok(TrainTest {
        train: load_batches(
            dir,
            &["train.bin".to_owned()],
            kind,
            "cifar100/train",
            &classes,
        )?,
        test: load_batches(
            dir,
            &["test.bin".to_owned()],
            kind,
            "cifar100/test",
            &classes,
        )?,
    })
}

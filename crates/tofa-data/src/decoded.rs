//! A decoded data set (both halves) as one file, read back memory-mapped.
//!
//! Why: decoding (IDX, CIFAR batches, JPEG folders, hub parquet shards, or generating the
//! synthetic tasks) and resizing is paid by every stage that loads a data set, and each holds
//! its own copy in RAM (about 9 GB for CIFAR-100 at 224 px). Written once, the file is mapped
//! by every later stage and process: one decode per run, one copy in the page cache.
//!
//! Layout: `TOFADATA`, the header's length (u64 LE), the header (JSON: per half its name,
//! image size, channels, class names, labels and where its pixels lie), then the pixel
//! bytes. [`write`] creates the file atomically (a temporary file beside it, synced, then
//! renamed), so a reader never sees half a file; [`open`] checks every length against the
//! file before mapping, so a truncated or foreign file is an error naming it.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Pixels, TrainTest};
use crate::error::{DataError, Result};

const MAGIC: &[u8; 8] = b"TOFADATA";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    train: Half,
    test: Half,
}

#[derive(Serialize, Deserialize)]
struct Half {
    name: String,
    height: usize,
    width: usize,
    channels: usize,
    class_names: Vec<String>,
    labels: Vec<u32>,
    /// Where the pixels start, counted from the end of the header.
    offset: usize,
    len: usize,
}

impl Half {
    fn of(d: &Dataset, offset: usize) -> Half {
        Half {
            name: d.name().to_string(),
            height: d.height(),
            width: d.width(),
            channels: d.channels(),
            class_names: d.class_names().to_vec(),
            labels: d.labels().to_vec(),
            offset,
            len: d.pixels().len(),
        }
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Decoded {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes `tt` to `path` atomically ([`crate::write_atomic`]).
pub fn write(tt: &TrainTest, path: &Path) -> Result<()> {
    let header = Header {
        version: VERSION,
        train: Half::of(&tt.train, 0),
        test: Half::of(&tt.test, tt.train.pixels().len()),
    };
    let h = serde_json::to_vec(&header).map_err(|e| bad(path, e.to_string()))?;
    crate::write_atomic(path, |f| {
        f.write_all(MAGIC)?;
        f.write_all(&(h.len() as u64).to_le_bytes())?;
        f.write_all(&h)?;
        f.write_all(tt.train.pixels())?;
        f.write_all(tt.test.pixels())
    })
}

/// Maps the file [`write`] made; the data sets' pixels are views of the mapping.
pub fn open(path: &Path) -> Result<TrainTest> {
    let file = fs_err::File::open(path)?;
    // SAFETY: the file is only ever created whole by `write` (written under a temporary name,
    // then renamed) and never modified in place; a reader that outlives a replacement keeps
    // the old inode mapped.
    let map = unsafe { memmap2::Mmap::map(file.file()) }?;
    let map = Arc::new(map);
    let n = map.len();
    if n < MAGIC.len() + 8 || &map[..MAGIC.len()] != MAGIC {
        return Err(bad(path, "not a decoded data set (no TOFADATA header)"));
    }
    let hlen = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes")) as usize;
    let hend = 16usize
        .checked_add(hlen)
        .filter(|&e| e <= n)
        .ok_or_else(|| bad(path, format!("header of {hlen} bytes in a file of {n}")))?;
    let h: Header =
        serde_json::from_slice(&map[16..hend]).map_err(|e| bad(path, format!("header: {e}")))?;
    if h.version != VERSION {
        return Err(bad(
            path,
            format!("format version {}, this build reads {VERSION}", h.version),
        ));
    }
    let half = |x: Half| -> Result<Dataset> {
        let start = hend.checked_add(x.offset);
        let end = start
            .and_then(|s| s.checked_add(x.len))
            .filter(|&e| e <= n)
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "{}: pixels at {}..+{} outside the file of {n} bytes",
                        x.name, x.offset, x.len
                    ),
                )
            })?;
        Dataset::with_pixels(
            x.name,
            (x.height, x.width, x.channels),
            Pixels::Mapped {
                map: map.clone(),
                range: end - x.len..end,
            },
            x.labels,
            x.class_names,
        )
        .map_err(|e| bad(path, e.to_string()))
    };
    Ok(TrainTest {
        train: half(h.train)?,
        test: half(h.test)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::numbered_classes;

    fn tt() -> TrainTest {
        let ds = |name: &str, n: usize, seed: u8| {
            let px = (0..n * 3 * 4 * 3)
                .map(|i| (i as u8).wrapping_mul(seed))
                .collect();
            let labels = (0..n as u32).map(|i| i % 3).collect();
            Dataset::new(name, (3, 4, 3), px, labels, numbered_classes(3)).unwrap()
        };
        TrainTest {
            train: ds("a-train", 7, 3),
            test: ds("a-test", 5, 7),
        }
    }

    #[test]
    fn round_trips_mapped_and_equal_to_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.data");
        let want = tt();
        write(&want, &path).unwrap();
        let got = open(&path).unwrap();
        assert_eq!(got.train, want.train);
        assert_eq!(got.test, want.test);
        assert_eq!(got.train.name(), "a-train");
        assert_eq!(got.train.digest(), want.train.digest());
        assert_eq!(
            got.test.subset(&[4, 0]).unwrap().image(1),
            want.test.image(0)
        );
        // nothing left beside it
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn truncated_or_foreign_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.data");
        write(&tt(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let e = open(&path).unwrap_err().to_string();
        assert!(
            e.contains("a.data") && e.contains("outside the file"),
            "{e}"
        );
        std::fs::write(&path, b"PK\x03\x04 not ours").unwrap();
        let e = open(&path).unwrap_err().to_string();
        assert!(e.contains("not a decoded data set"), "{e}");
        std::fs::write(&path, &bytes[..20]).unwrap();
        let e = open(&path).unwrap_err().to_string();
        assert!(e.contains("header"), "{e}");
    }
}

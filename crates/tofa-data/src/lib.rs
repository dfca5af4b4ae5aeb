//! The data layer of the TOFA pipeline: datasets, labelled / unlabelled / validation splits,
//! weak and strong augmentation, and batches as candle tensors.
//!
//! - [`Dataset`]: one in-memory representation (u8 HWC images of one size, u32 labels, class
//!   names), produced by every loader: [`idx`] (MNIST / Fashion-MNIST), [`cifar`],
//!   [`folder`] (ImageFolder trees), [`hub`] (Hugging Face Hub parquet shards) and
//!   [`synthetic`] (the embedded procedural default).
//! - [`decoded`]: a decoded data set as one file, memory-mapped when read, so the stages of a
//!   run share one decode and one copy in the page cache.
//! - [`split`]: stratified, seeded splits saved as JSON manifests.
//! - [`augment`]: torchvision's weak pipeline and AutoAugment (ImageNet policy) / RandAugment.
//! - [`batch`]: parallel, thread-count-independent batch assembly, samplers, eval batches.
//!
//! Invariants:
//! - Every random draw is keyed by values (seed, stream, step, position, index) through
//!   [`rng`], never by thread scheduling: a batch is the same on 1 or 16 threads.
//! - Only [`hub`] touches the network, and only through hf-hub, into hf-hub's cache.
//! - Only wire types (split manifests, the decoded file's header) derive serde.
//! - One error type, [`DataError`]; messages are lowercase and name the file, column or class.

pub mod augment;
pub mod batch;
pub mod cifar;
pub mod dataset;
pub mod decoded;
pub mod error;
pub mod folder;
pub mod hub;
pub mod idx;
pub mod rng;
pub mod split;
pub mod synthetic;

pub use batch::{
    Batch, BatchConfig, Normalize, ShuffleSampler, TrainBatch, TrainLoader, UnlabelledBatch, View,
};
pub use dataset::{Dataset, LoadOptions, TrainTest};
pub use error::{DataError, Result};
pub use split::{Split, SplitManifest, SplitSpec};

/// Creates `path` whole or not at all: `write` fills a temporary file beside it (unique to
/// this process and call), which is synced and then renamed over `path`; on an error the
/// temporary file is removed. Readers never see a partial file, and a killed writer leaves
/// only a `.tmp-*` file, never a truncated `path`.
pub(crate) fn write_atomic(
    path: &std::path::Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = path.with_file_name(name);
    let result = (|| -> Result<()> {
        let mut f = std::io::BufWriter::new(fs_err::File::create(&tmp)?);
        write(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs_err::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

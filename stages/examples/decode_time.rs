//! Times a data set's decode against mapping the shared decoded file
//! (`DataSpec::load_shared`), and the split stage's digest check on the mapped data.
//!
//! ```sh
//! cargo run --release -p tofa-stages --example decode_time                 # synth-cifar100, quick scale
//! cargo run --release -p tofa-stages --example decode_time -- /usr/share/datasets/fashion-mnist
//! ```
//! With a directory, it is read as Fashion-MNIST IDX files (Debian's `dataset-fashion-mnist`).

use std::time::Instant;

use tofa_stages::data::DataSpec;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec: DataSpec = match std::env::args().nth(1) {
        Some(dir) => serde_json::from_value(serde_json::json!({
            "name": "fashion-mnist", "source": "idx", "dir": dir, "resolution": 32
        }))?,
        None => serde_json::from_value(serde_json::json!({
            "name": "synth-cifar100", "source": "synthetic", "resolution": 32, "scale": 0.3
        }))?,
    };
    let shared = tempfile::tempdir()?;
    let t = Instant::now();
    let decoded = spec.load()?;
    let decode = t.elapsed();
    let t = Instant::now();
    spec.load_shared(shared.path())?;
    let first = t.elapsed();
    let t = Instant::now();
    let mapped = spec.load_shared(shared.path())?;
    let hit = t.elapsed();
    let t = Instant::now();
    let digest = mapped.train.digest();
    let check = t.elapsed();
    assert_eq!(digest, decoded.train.digest(), "the mapped data differ");
    let mb = (decoded.train.pixels().len() + decoded.test.pixels().len()) as f64 / 1e6;
    println!(
        "{}: {} train + {} test images, {mb:.0} MB decoded; decode {:.3} s, first shared load \
         (decode + write + map) {:.3} s, later shared load (map) {:.2} ms, digest of the mapped \
         train half {:.1} ms",
        spec.name,
        decoded.train.len(),
        decoded.test.len(),
        decode.as_secs_f64(),
        first.as_secs_f64(),
        hit.as_secs_f64() * 1e3,
        check.as_secs_f64() * 1e3
    );
    Ok(())
}

//! Integration tests of tofa-data: one binary, a module per area.

mod batches;
mod formats;
mod hub;
mod splits;
mod synthetic;

use tofa_data::Dataset;
use tofa_data::dataset::numbered_classes;

/// `n` RGB images of `h x w`, image `i` of class `i % classes` filled with a class-specific
/// pattern plus its index, so images differ.
pub fn toy(n: usize, classes: usize, (h, w): (usize, usize)) -> Dataset {
    let mut pixels = Vec::with_capacity(n * h * w * 3);
    for i in 0..n {
        for p in 0..h * w {
            let c = i % classes;
            pixels.extend([(c * 40 + p) as u8, (i * 3) as u8, ((p * 7) ^ c) as u8]);
        }
    }
    let labels = (0..n).map(|i| (i % classes) as u32).collect();
    Dataset::new("toy", (h, w, 3), pixels, labels, numbered_classes(classes)).unwrap()
}

//! The one dataset type every loader produces.

use std::ops::Range;
use std::sync::Arc;

use crate::error::{DataError, Result};

/// The pixel bytes of a dataset: in memory, or a range of a memory-mapped decoded file
/// ([`crate::decoded`]), which every process reading the file shares through the page cache.
#[derive(Clone)]
pub(crate) enum Pixels {
    Owned(Vec<u8>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        range: Range<usize>,
    },
}

impl std::ops::Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Pixels::Owned(v) => v,
            Pixels::Mapped { map, range } => &map[range.clone()],
        }
    }
}

impl PartialEq for Pixels {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Pixels {}

/// An image-classification dataset.
///
/// Images are `u8`, HWC, all of one size and one channel count (1 or 3), packed back to back:
/// image `i` is `pixels[i * h * w * c..(i + 1) * h * w * c]`. Labels are class indices below
/// `class_names.len()`. The pixels are held in memory or mapped from a decoded file
/// ([`crate::decoded`]); the two behave the same.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    name: String,
    height: usize,
    width: usize,
    channels: usize,
    pixels: Pixels,
    labels: Vec<u32>,
    class_names: Vec<String>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("shape_hwc", &(self.height, self.width, self.channels))
            .field("num_classes", &self.num_classes())
            .finish()
    }
}

/// How loaders shape what they read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Resize every image to `(height, width)`; `None` keeps the source size (the first image's
    /// size where sources vary).
    pub size: Option<(usize, usize)>,
    /// Convert grayscale to RGB (three equal channels).
    pub rgb: bool,
}

/// The train and test halves of a dataset as published.
#[derive(Clone, Debug)]
pub struct TrainTest {
    pub train: Dataset,
    pub test: Dataset,
}

impl TrainTest {
    /// Applies `opts` to both halves.
    pub fn conform(self, opts: &LoadOptions) -> Result<Self> {
        Ok(Self {
            train: self.train.conform(opts)?,
            test: self.test.conform(opts)?,
        })
    }
}

impl Dataset {
    /// Builds a dataset, checking that the buffers agree and every label names a class.
    pub fn new(
        name: impl Into<String>,
        (height, width, channels): (usize, usize, usize),
        pixels: Vec<u8>,
        labels: Vec<u32>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        Self::with_pixels(
            name.into(),
            (height, width, channels),
            Pixels::Owned(pixels),
            labels,
            class_names,
        )
    }

    /// [`Dataset::new`] over pixels held either way.
    pub(crate) fn with_pixels(
        name: String,
        (height, width, channels): (usize, usize, usize),
        pixels: Pixels,
        labels: Vec<u32>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(crate::error::config(
                "channels",
                format!("dataset {name} has {channels} channels, expected 1 or 3"),
            ));
        }
        if height == 0 || width == 0 {
            return Err(crate::error::config(
                "size",
                format!("dataset {name} has an empty image size {height}x{width}"),
            ));
        }
        let per = height * width * channels;
        if pixels.len() != per * labels.len() {
            return Err(crate::error::config(
                "pixels",
                format!(
                    "dataset {name} has {} pixel bytes for {} images of {per} bytes",
                    pixels.len(),
                    labels.len()
                ),
            ));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= class_names.len())
        {
            return Err(DataError::LabelOutOfRange {
                source_name: name,
                index,
                label: i64::from(label),
                num_classes: class_names.len(),
            });
        }
        Ok(Self {
            name,
            height,
            width,
            channels,
            pixels,
            labels,
            class_names,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Bytes in one image (`h * w * c`).
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    pub fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }

    /// All pixels, image after image, HWC.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Image `index` as HWC bytes.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Renames the dataset.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Image indices of each class, in ascending order.
    pub fn indices_by_class(&self) -> Vec<Vec<u32>> {
        let mut by_class = vec![Vec::new(); self.num_classes()];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i as u32);
        }
        by_class
    }

    /// The first `n` images of every class (all of a class with fewer), in file order: a
    /// deterministic, class-balanced cut of a large data set that keeps its published order.
    pub fn first_per_class(&self, n: usize) -> Result<Self> {
        let mut taken = vec![0usize; self.num_classes()];
        let keep: Vec<u32> = (0..self.len())
            .filter(|&i| {
                let c = &mut taken[self.labels[i] as usize];
                *c += 1;
                *c <= n
            })
            .map(|i| i as u32)
            .collect();
        self.subset(&keep)
    }

    /// A new dataset holding the images at `indices`, in that order.
    pub fn subset(&self, indices: &[u32]) -> Result<Self> {
        let n = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let i = i as usize;
            if i >= self.len() {
                return Err(crate::error::config(
                    "indices",
                    format!(
                        "index {i} out of range for dataset {} of {}",
                        self.name,
                        self.len()
                    ),
                ));
            }
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Self {
            pixels: Pixels::Owned(pixels),
            labels,
            ..self.clone_meta()
        })
    }

    fn clone_meta(&self) -> Self {
        Self {
            name: self.name.clone(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            pixels: Pixels::Owned(Vec::new()),
            labels: Vec::new(),
            class_names: self.class_names.clone(),
        }
    }

    /// Grayscale becomes RGB with three equal channels; RGB stays as it is.
    pub fn into_rgb(self) -> Self {
        if self.channels == 3 {
            return self;
        }
        let pixels = self.pixels.iter().flat_map(|&p| [p, p, p]).collect();
        Self {
            pixels: Pixels::Owned(pixels),
            channels: 3,
            ..self
        }
    }

    /// Every image resized to `(height, width)` with a triangle (bilinear, antialiased) filter.
    pub fn resized(self, height: usize, width: usize) -> Result<Self> {
        if (height, width) == (self.height, self.width) {
            return Ok(self);
        }
        if height == 0 || width == 0 {
            return Err(crate::error::config(
                "size",
                format!("cannot resize dataset {} to {height}x{width}", self.name),
            ));
        }
        let n = self.image_len();
        let c = self.channels;
        let (h0, w0) = (self.height, self.width);
        let mut pixels = Vec::with_capacity(self.len() * height * width * c);
        for img in self.pixels.chunks_exact(n) {
            pixels.extend_from_slice(&resize_hwc(img, (h0, w0, c), (height, width)));
        }
        Ok(Self {
            pixels: Pixels::Owned(pixels),
            height,
            width,
            ..self
        })
    }

    /// Applies [`LoadOptions`]: RGB conversion, then resizing.
    pub fn conform(self, opts: &LoadOptions) -> Result<Self> {
        let ds = if opts.rgb { self.into_rgb() } else { self };
        match opts.size {
            Some((h, w)) => ds.resized(h, w),
            None => Ok(ds),
        }
    }

    /// A blake3 digest (hex) of everything that makes the data: size, channels, pixels, labels,
    /// class names. The name is left out, so a renamed copy has the same digest.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for v in [self.height, self.width, self.channels, self.len()] {
            h.update(&(v as u64).to_le_bytes());
        }
        h.update(&self.pixels);
        for l in &self.labels {
            h.update(&l.to_le_bytes());
        }
        for c in &self.class_names {
            h.update(&(c.len() as u64).to_le_bytes());
            h.update(c.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }
}

/// Resizes one HWC `u8` image with the `image` crate's triangle filter.
pub(crate) fn resize_hwc(
    img: &[u8],
    (h, w, c): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<u8> {
    use image::imageops::{FilterType, resize};
    let (w32, h32, ow32, oh32) = (w as u32, h as u32, ow as u32, oh as u32);
    if c == 1 {
        let buf =
            image::GrayImage::from_raw(w32, h32, img.to_vec()).expect("buffer matches its size");
        resize(&buf, ow32, oh32, FilterType::Triangle).into_raw()
    } else {
        let buf =
            image::RgbImage::from_raw(w32, h32, img.to_vec()).expect("buffer matches its size");
        resize(&buf, ow32, oh32, FilterType::Triangle).into_raw()
    }
}

/// Class names `"0"`, `"1"`, ... for sources that carry none.
pub fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let pixels = (0..4 * 2 * 2).map(|v| v as u8).collect();
        Dataset::new(
            "tiny",
            (2, 2, 1),
            pixels,
            vec![0, 1, 1, 0],
            numbered_classes(2),
        )
        .unwrap()
    }

    #[test]
    fn first_per_class_keeps_file_order_and_caps_each_class() {
        // labels 0 1 1 0: one of each class is the first and the second image
        let d = tiny().first_per_class(1).unwrap();
        assert_eq!(d.labels(), [0, 1]);
        assert_eq!(d.image(1), tiny().image(1));
        // a cap above every class keeps everything
        let all = tiny().first_per_class(9).unwrap();
        assert_eq!(all.labels(), tiny().labels());
        assert_eq!(all.pixels(), tiny().pixels());
    }

    #[test]
    fn new_rejects_label_out_of_range_naming_the_dataset() {
        let err =
            Dataset::new("d", (1, 1, 1), vec![0, 0], vec![0, 5], numbered_classes(2)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("label 5") && msg.contains(" d ") && msg.contains("record 1"),
            "{msg}"
        );
    }

    #[test]
    fn rgb_subset_resize_and_digest() {
        let d = tiny();
        assert_eq!(d.class_counts(), vec![2, 2]);
        assert_eq!(d.indices_by_class(), vec![vec![0, 3], vec![1, 2]]);
        let s = d.subset(&[2, 0]).unwrap();
        assert_eq!(s.labels(), &[1, 0]);
        assert_eq!(s.image(0), d.image(2));
        let rgb = d.clone().into_rgb();
        assert_eq!(rgb.channels(), 3);
        assert_eq!(&rgb.image(1)[..3], &[4, 4, 4]);
        let big = rgb.clone().resized(4, 6).unwrap();
        assert_eq!((big.height(), big.width(), big.image(0).len()), (4, 6, 72));
        assert_eq!(d.digest(), d.clone().with_name("other").digest());
        assert_ne!(d.digest(), s.digest());
    }
}

//! ImageFolder trees: `root/<class>/<image>.{png,jpg,jpeg}`, classes in sorted name order
//! (torchvision's `ImageFolder` convention).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::{Dataset, LoadOptions, TrainTest, resize_hwc};
use crate::error::{DataError, Result};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Decodes encoded image bytes; `what` names the file or record in the error.
pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<image::DynamicImage> {
    image::load_from_memory(bytes).map_err(|e| DataError::Image {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// True for images with one (luma) channel, with or without alpha.
pub(crate) fn is_gray(img: &image::DynamicImage) -> bool {
    !img.color().has_color()
}

/// An image as HWC bytes with `channels` (1 or 3) channels, resized to `(h, w)`.
pub(crate) fn to_fixed(
    img: &image::DynamicImage,
    channels: usize,
    (h, w): (usize, usize),
) -> Vec<u8> {
    let (raw, ih, iw) = if channels == 1 {
        let g = img.to_luma8();
        let (iw, ih) = g.dimensions();
        (g.into_raw(), ih as usize, iw as usize)
    } else {
        let c = img.to_rgb8();
        let (iw, ih) = c.dimensions();
        (c.into_raw(), ih as usize, iw as usize)
    };
    if (ih, iw) == (h, w) {
        raw
    } else {
        resize_hwc(&raw, (ih, iw, channels), (h, w))
    }
}

/// Decoded images turned into one dataset: the channel count is `channels`, else 3 with
/// `opts.rgb`, else that of the first image; the size is `opts.size`, else the first image's.
pub(crate) fn assemble(
    name: &str,
    images: Vec<image::DynamicImage>,
    labels: Vec<u32>,
    class_names: Vec<String>,
    opts: &LoadOptions,
    channels: Option<usize>,
) -> Result<Dataset> {
    let first = images.first();
    let channels = match (channels, first) {
        (Some(c), _) => c,
        (None, Some(img)) if !opts.rgb && is_gray(img) => 1,
        _ => 3,
    };
    let size = opts
        .size
        .or_else(|| first.map(|img| (img.height() as usize, img.width() as usize)))
        .unwrap_or((1, 1));
    let pixels: Vec<u8> = images
        .par_iter()
        .flat_map_iter(|img| to_fixed(img, channels, size))
        .collect();
    Dataset::new(
        name,
        (size.0, size.1, channels),
        pixels,
        labels,
        class_names,
    )
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in fs_err::read_dir(dir)? {
        entries.push(entry?.path());
    }
    entries.sort();
    Ok(entries)
}

/// Loads one ImageFolder tree. Every sub-folder is a class; files with other extensions are
/// skipped; an empty tree or an undecodable image is an error naming it.
pub fn load_image_folder(root: &Path, name: &str, opts: &LoadOptions) -> Result<Dataset> {
    load_folder(root, name, opts, None)
}

fn load_folder(
    root: &Path,
    name: &str,
    opts: &LoadOptions,
    channels: Option<usize>,
) -> Result<Dataset> {
    let folder_err = |reason: &str| DataError::Folder {
        path: root.to_owned(),
        reason: reason.to_owned(),
    };
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if class_dirs.is_empty() {
        return Err(folder_err("no class sub-folders"));
    }
    let mut class_names = Vec::new();
    let mut files = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        let class = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        class_names.push(class);
        for f in sorted_entries(dir)? {
            let ext = f
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if f.is_file() && EXTENSIONS.contains(&ext.as_str()) {
                files.push((f, label as u32));
            }
        }
    }
    if files.is_empty() {
        return Err(folder_err("no png or jpeg images in any class folder"));
    }
    let images = files
        .par_iter()
        .map(|(f, _)| {
            let bytes = fs_err::read(f)?;
            decode(&bytes, &f.display().to_string())
        })
        .collect::<Result<Vec<_>>>()?;
    let labels = files.iter().map(|(_, l)| *l).collect();
    assemble(name, images, labels, class_names, opts, channels)
}

/// Loads `root/train` and `root/test`, which must hold the same classes. The test half takes
/// the train half's size and channel count.
pub fn load_image_folder_pair(root: &Path, name: &str, opts: &LoadOptions) -> Result<TrainTest> {
    let train = load_image_folder(&root.join("train"), &format!("{name}/train"), opts)?;
    let test_opts = LoadOptions {
        size: Some((train.height(), train.width())),
        rgb: opts.rgb,
    };
    let test = load_folder(
        &root.join("test"),
        &format!("{name}/test"),
        &test_opts,
        Some(train.channels()),
    )?;
    if test.class_names() != train.class_names() {
        return Err(DataError::Folder {
            path: root.join("test"),
            reason: format!(
                "classes {:?} differ from the train folder's {:?}",
                test.class_names(),
                train.class_names()
            ),
        });
    }
    Ok(TrainTest { train, test })
}

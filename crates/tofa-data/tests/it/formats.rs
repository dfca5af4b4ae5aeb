use std::path::Path;

use tofa_data::cifar::{
    CifarKind, load_cifar10_dir, load_cifar100_dir, read_cifar_batch, write_cifar_batch,
};
use tofa_data::folder::{load_image_folder, load_image_folder_pair};
use tofa_data::idx::{self, load_idx, load_idx_dir, write_idx_images, write_idx_labels};
use tofa_data::{DataError, LoadOptions};

fn gray_pixels(n: usize, h: usize, w: usize) -> Vec<u8> {
    (0..n * h * w).map(|v| (v * 13 % 251) as u8).collect()
}

#[test]
fn idx_raw_and_gz_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let px = gray_pixels(6, 4, 5);
    let labels = [0u8, 1, 2, 0, 1, 2];
    write_idx_images(&d.join("train-images-idx3-ubyte.gz"), (6, 4, 5), &px, true).unwrap();
    write_idx_labels(&d.join("train-labels-idx1-ubyte.gz"), &labels, true).unwrap();
    write_idx_images(
        &d.join("t10k-images-idx3-ubyte"),
        (2, 4, 5),
        &px[..40],
        false,
    )
    .unwrap();
    write_idx_labels(&d.join("t10k-labels-idx1-ubyte"), &labels[..2], false).unwrap();
    let tt = load_idx_dir(d, "toy", None).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (6, 2));
    assert_eq!(
        (tt.train.height(), tt.train.width(), tt.train.channels()),
        (4, 5, 1)
    );
    assert_eq!(tt.train.pixels(), px.as_slice());
    assert_eq!(tt.train.labels(), &[0, 1, 2, 0, 1, 2]);
    assert_eq!(tt.train.num_classes(), 3);
    let rgb = tt
        .train
        .conform(&LoadOptions {
            size: Some((8, 8)),
            rgb: true,
        })
        .unwrap();
    assert_eq!((rgb.height(), rgb.width(), rgb.channels()), (8, 8, 3));
}

fn msg(e: DataError) -> String {
    e.to_string()
}

#[test]
fn idx_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("imgs");
    let lab = dir.path().join("labs");
    write_idx_images(&img, (2, 2, 2), &[0; 8], false).unwrap();
    write_idx_labels(&lab, &[0, 1], false).unwrap();
    // labels where images should be: wrong magic
    let m = msg(idx::read_idx_images(&lab).unwrap_err());
    assert!(
        m.contains("labs") && m.contains("wrong magic number 0x00000801"),
        "{m}"
    );
    // truncated data: size mismatch
    let mut bytes = std::fs::read(&img).unwrap();
    bytes.pop();
    std::fs::write(&img, &bytes).unwrap();
    let m = msg(idx::read_idx_images(&img).unwrap_err());
    assert!(
        m.contains("imgs") && m.contains("size mismatch") && m.contains("7"),
        "{m}"
    );
    // a label beyond the named classes
    write_idx_images(&img, (2, 2, 2), &[0; 8], false).unwrap();
    write_idx_labels(&lab, &[0, 12], false).unwrap();
    let m = msg(load_idx(&img, &lab, "x", Some(vec!["a".into(), "b".into()])).unwrap_err());
    assert!(
        m.contains("label 12 out of range") && m.contains("labs") && m.contains("record 1"),
        "{m}"
    );
}

#[test]
fn debian_fashion_mnist_when_installed() {
    let dir = Path::new(idx::DEBIAN_FASHION_MNIST_DIR);
    if !dir.join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!(
            "note: {} absent (apt-get install dataset-fashion-mnist); skipping",
            dir.display()
        );
        return;
    }
    let tt = idx::load_fashion_mnist(dir).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (60_000, 10_000));
    assert_eq!(
        (tt.train.height(), tt.train.width(), tt.train.channels()),
        (28, 28, 1)
    );
    assert!(
        tt.train
            .labels()
            .iter()
            .chain(tt.test.labels())
            .all(|&l| l < 10)
    );
    assert_eq!(tt.train.class_counts(), vec![6000; 10]);
    assert_eq!(tt.train.class_names()[9], "ankle boot");
}

fn rgb32(n: usize) -> Vec<u8> {
    (0..n * 32 * 32 * 3).map(|v| (v % 256) as u8).collect()
}

#[test]
fn cifar10_and_100_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 1..=5 {
        write_cifar_batch(
            &d.join(format!("data_batch_{i}.bin")),
            CifarKind::Cifar10,
            &rgb32(2),
            &[i - 1, 9],
        )
        .unwrap();
    }
    write_cifar_batch(
        &d.join("test_batch.bin"),
        CifarKind::Cifar10,
        &rgb32(3),
        &[1, 2, 3],
    )
    .unwrap();
    let tt = load_cifar10_dir(d).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (10, 3));
    assert_eq!(tt.train.labels(), &[0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
    assert_eq!(tt.train.image(0), &rgb32(1)[..]);
    assert_eq!(tt.train.class_names()[0], "airplane");

    let d100 = dir.path().join("c100");
    std::fs::create_dir(&d100).unwrap();
    let fine = CifarKind::Cifar100 { coarse: false };
    write_cifar_batch(&d100.join("train.bin"), fine, &rgb32(2), &[99, 5]).unwrap();
    write_cifar_batch(&d100.join("test.bin"), fine, &rgb32(1), &[42]).unwrap();
    let tt = load_cifar100_dir(&d100, false).unwrap();
    assert_eq!(
        (tt.train.labels(), tt.train.num_classes()),
        (&[99, 5][..], 100)
    );
    // coarse labels were written as 0
    assert_eq!(load_cifar100_dir(&d100, true).unwrap().test.labels(), &[0]);
}

#[test]
fn cifar_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_batch_1.bin");
    write_cifar_batch(&p, CifarKind::Cifar10, &rgb32(2), &[0, 1]).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&p, &bytes).unwrap();
    let m = read_cifar_batch(&p, CifarKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("data_batch_1.bin") && m.contains("truncated"),
        "{m}"
    );
    let mut bad = vec![11u8];
    bad.extend(vec![0u8; 3072]);
    std::fs::write(&p, &bad).unwrap();
    let m = read_cifar_batch(&p, CifarKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("label 11 out of range") && m.contains("data_batch_1.bin"),
        "{m}"
    );
}

fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

#[test]
fn image_folder_png_and_jpeg_with_resize() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        for (class, colour) in [("cat", [200, 10, 10]), ("dog", [10, 10, 200])] {
            let c = dir.path().join(split).join(class);
            std::fs::create_dir_all(&c).unwrap();
            write_png(&c.join("a.png"), 12, 10, colour);
            image::RgbImage::from_pixel(20, 16, image::Rgb(colour))
                .save(c.join("b.jpg"))
                .unwrap();
            std::fs::write(c.join("notes.txt"), "skipped").unwrap();
        }
    }
    let opts = LoadOptions {
        size: Some((8, 8)),
        rgb: true,
    };
    let tt = load_image_folder_pair(dir.path(), "pets", &opts).unwrap();
    assert_eq!(tt.train.len(), 4);
    assert_eq!(
        tt.train.class_names(),
        &["cat".to_owned(), "dog".to_owned()]
    );
    assert_eq!(tt.train.labels(), &[0, 0, 1, 1]);
    assert_eq!(
        (tt.test.height(), tt.test.width(), tt.test.channels()),
        (8, 8, 3)
    );
    let px = tt.train.image(0);
    assert_eq!(&px[..3], &[200, 10, 10]);
    // jpeg is lossy: close to the colour
    let jp = tt.train.image(3);
    assert!(jp[2] > 180 && jp[0] < 40, "{:?}", &jp[..3]);

    // an unreadable image is named
    std::fs::write(dir.path().join("train/dog/broken.png"), b"not a png").unwrap();
    let m = load_image_folder(&dir.path().join("train"), "x", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("unreadable image") && m.contains("broken.png"),
        "{m}"
    );
}

#[test]
fn image_folder_test_half_follows_train_channels() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        let c = dir.path().join(split).join("only");
        std::fs::create_dir_all(&c).unwrap();
        if split == "train" {
            image::GrayImage::from_pixel(5, 5, image::Luma([77]))
                .save(c.join("g.png"))
                .unwrap();
        } else {
            write_png(&c.join("c.png"), 7, 7, [90, 90, 90]);
        }
    }
    let tt = load_image_folder_pair(dir.path(), "gray", &LoadOptions::default()).unwrap();
    assert_eq!((tt.train.channels(), tt.test.channels()), (1, 1));
    assert_eq!((tt.test.height(), tt.test.width()), (5, 5));
    assert_eq!(tt.test.image(0)[0], 90);
}

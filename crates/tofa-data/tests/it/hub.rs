//! The hub loader against a local HTTP server that serves the hub's URL layout (`tofa-hubmock`):
//! `GET /api/datasets/{repo}/revision/{rev}` (file list) and
//! `GET /datasets/{repo}/resolve/{rev}/{file}` (ranged downloads with etag and commit headers).

use std::collections::BTreeMap;

use tofa_data::LoadOptions;
use tofa_data::hub::{HubSource, write_parquet_shard};
use tofa_hubmock::{HubMock, Kind};

/// Files per repo: `repo -> [(path in repo, bytes)]`.
type Repos = BTreeMap<String, Vec<(String, Vec<u8>)>>;

fn serve(repos: Repos) -> HubMock {
    HubMock::start(repos.into_iter().map(|(r, f)| (Kind::Dataset, r, f)))
}

fn png(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(6, 6, image::Rgb(rgb))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

const README: &str = "---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n  - name: label\n    dtype:\n      class_label:\n        names:\n          '0': red\n          '1': green\n          '2': blue\n---\n# toy\n";

fn toy_repos(dir: &std::path::Path) -> Repos {
    let colours = [[250, 0, 0], [0, 250, 0], [0, 0, 250]];
    let images: Vec<Vec<u8>> = (0..9).map(|i| png(colours[i % 3])).collect();
    let labels: Vec<i64> = (0..9).map(|i| (i % 3) as i64).collect();
    let shard = |name: &str, image_col: Option<&str>, n: usize| {
        let p = dir.join(name);
        write_parquet_shard(&p, image_col, &images[..n], "label", &labels[..n]).unwrap();
        std::fs::read(p).unwrap()
    };
    let mut repos = Repos::new();
    repos.insert(
        "toy/colours".into(),
        vec![
            ("README.md".into(), README.as_bytes().to_vec()),
            (
                "data/train-00000-of-00002.parquet".into(),
                shard("t0", Some("image"), 9),
            ),
            (
                "data/train-00001-of-00002.parquet".into(),
                shard("t1", Some("image"), 3),
            ),
            (
                "data/test-00000-of-00001.parquet".into(),
                shard("s0", Some("image"), 3),
            ),
        ],
    );
    let unlabelled = dir.join("u0");
    write_parquet_shard(&unlabelled, Some("image"), &images[..2], "label", &[-1, -1]).unwrap();
    repos.insert(
        "toy/unlabelled".into(),
        vec![(
            "data/test-00000-of-00001.parquet".into(),
            std::fs::read(unlabelled).unwrap(),
        )],
    );
    repos.insert(
        "toy/no-images".into(),
        vec![(
            "data/train-00000-of-00001.parquet".into(),
            shard("n0", None, 4),
        )],
    );
    repos
}

#[test]
fn hub_loader_downloads_caches_and_works_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = serve(toy_repos(tmp.path()));
    let cache = tmp.path().join("cache");
    let source = HubSource {
        endpoint: Some(server.url().to_owned()),
        cache_dir: Some(cache.clone()),
        ..HubSource::new("toy/colours", "train")
    };
    let opts = LoadOptions {
        size: Some((4, 4)),
        rgb: true,
    };
    let ds = source.load(&opts).unwrap();
    assert_eq!(ds.name(), "toy/colours/train");
    assert_eq!(ds.len(), 12);
    assert_eq!(
        ds.class_names(),
        &["red".to_owned(), "green".to_owned(), "blue".to_owned()]
    );
    assert_eq!(ds.class_counts(), vec![4, 4, 4]);
    assert_eq!((ds.height(), ds.width(), ds.channels()), (4, 4, 3));
    assert_eq!(&ds.image(1)[..3], &[0, 250, 0]);
    let test = HubSource {
        split: "test".into(),
        ..source.clone()
    }
    .load(&opts)
    .unwrap();
    assert_eq!(test.len(), 3);

    // a repo whose shards have no image column
    let err = HubSource {
        repo: "toy/no-images".into(),
        ..source.clone()
    }
    .load(&opts)
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("toy/no-images") && err.contains("no image column") && err.contains("label"),
        "{err}"
    );

    // labels outside the classes (hub test splits often hold -1)
    let err = HubSource {
        repo: "toy/unlabelled".into(),
        split: "test".into(),
        ..source.clone()
    }
    .load(&opts)
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("label -1 out of range") && err.contains("column label"),
        "{err}"
    );

    let served = server.stop();
    assert!(served >= 5, "served {served} requests");

    // offline: the cache alone
    let offline = HubSource {
        offline: true,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..source.clone()
    };
    assert_eq!(offline.load(&opts).unwrap(), ds);
    // online but unreachable: falls back to the cache
    let unreachable = HubSource {
        endpoint: Some("http://127.0.0.1:9".into()),
        ..source.clone()
    };
    assert_eq!(unreachable.load(&opts).unwrap(), ds);
    // nothing cached for another repo
    let err = HubSource {
        repo: "toy/absent".into(),
        offline: true,
        ..source
    }
    .load(&opts)
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("toy/absent") && err.contains("not in the cache"),
        "{err}"
    );
}

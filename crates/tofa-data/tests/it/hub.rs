//! The hub loader against a local HTTP server that serves the hub's URL layout:
//! `GET /api/datasets/{repo}/revision/{rev}` (file list) and
//! `GET /datasets/{repo}/resolve/{rev}/{file}` (ranged downloads with etag and commit headers).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tofa_data::LoadOptions;
use tofa_data::hub::{HubSource, write_parquet_shard};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Files per repo: `repo -> [(path in repo, bytes)]`.
type Repos = BTreeMap<String, Vec<(String, Vec<u8>)>>;

struct Server {
    url: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<usize>>,
}

impl Server {
    /// Serves `repos` on 127.0.0.1 until stopped, for at most 60 s and 500 requests.
    fn start(repos: Repos) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline && served < 500 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let _ = handle(stream, &repos);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            served
        });
        Self {
            url,
            stop,
            handle: Some(handle),
        }
    }

    fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().map_or(0, |h| h.join().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(mut stream: TcpStream, repos: &Repos) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_owned());
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, headers, body) = route(&path, range.as_deref(), repos);
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

fn route(
    path: &str,
    range: Option<&str>,
    repos: &Repos,
) -> (&'static str, Vec<(String, String)>, Vec<u8>) {
    let not_found = ("404 Not Found", vec![], b"not found".to_vec());
    if let Some(rest) = path.strip_prefix("/api/datasets/") {
        let Some((repo, _rev)) = rest.split_once("/revision/") else {
            return not_found;
        };
        let Some(files) = repos.get(repo) else {
            return not_found;
        };
        let siblings: Vec<String> = files
            .iter()
            .map(|(f, _)| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let json = format!(
            "{{\"id\":\"{repo}\",\"sha\":\"{SHA}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        return (
            "200 OK",
            vec![("Content-Type".into(), "application/json".into())],
            json.into_bytes(),
        );
    }
    let Some(rest) = path.strip_prefix("/datasets/") else {
        return not_found;
    };
    let Some((repo, rest)) = rest.split_once("/resolve/") else {
        return not_found;
    };
    let Some((_rev, file)) = rest.split_once('/') else {
        return not_found;
    };
    let Some((_, bytes)) = repos
        .get(repo)
        .and_then(|fs| fs.iter().find(|(f, _)| f == file))
    else {
        return not_found;
    };
    let size = bytes.len();
    let (start, end) = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().unwrap_or(size - 1);
            (a.min(size), b.min(size - 1))
        })
        .unwrap_or((0, size - 1));
    let body = if start <= end {
        bytes[start..=end].to_vec()
    } else {
        Vec::new()
    };
    let headers = vec![
        (
            "ETag".into(),
            format!("\"{}\"", blake3::hash(bytes).to_hex()),
        ),
        ("X-Repo-Commit".into(), SHA.into()),
        (
            "Content-Range".into(),
            format!("bytes {start}-{end}/{size}"),
        ),
    ];
    ("206 Partial Content", headers, body)
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
    let mut server = Server::start(toy_repos(tmp.path()));
    let cache = tmp.path().join("cache");
    let source = HubSource {
        endpoint: Some(server.url.clone()),
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

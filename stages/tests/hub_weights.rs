//! `hub_file` (the `pretrain` stage's `init = { from = "hub", ... }`) against a local HTTP server
//! that serves the hub's model URL layout: `GET /{repo}/resolve/{rev}/{file}`, ranged, with the
//! ETag and X-Repo-Commit headers hf-hub reads.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tofa_stages::train::hub_file;

const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";
const REPO: &str = "acme/tiny-weights";
const FILE: &str = "model.safetensors";

struct Server {
    url: String,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(body: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (stop.clone(), hits.clone());
    std::thread::spawn(move || {
        for _ in 0..20_000 {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            match listener.accept() {
                Ok((s, _)) => {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = answer(s, &body);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(3)),
            }
        }
    });
    Server { url, stop, hits }
}

fn answer(mut stream: TcpStream, bytes: &[u8]) -> std::io::Result<()> {
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
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let want = format!("/{REPO}/resolve/main/{FILE}");
    let (status, extra, body): (&str, String, Vec<u8>) = if path == want {
        let size = bytes.len();
        let (a, b) = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| {
                (
                    a.parse::<usize>().unwrap_or(0).min(size),
                    b.parse::<usize>().unwrap_or(size - 1).min(size - 1),
                )
            })
            .unwrap_or((0, size - 1));
        (
            "206 Partial Content",
            format!(
                "ETag: \"{}\"\r\nX-Repo-Commit: {SHA}\r\nContent-Range: bytes {a}-{b}/{size}\r\n",
                blake3::hash(bytes).to_hex()
            ),
            bytes[a..=b].to_vec(),
        )
    } else {
        ("404 Not Found", String::new(), b"not found".to_vec())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

#[test]
fn downloads_through_the_hub_layout_then_serves_from_cache() {
    let bytes: Vec<u8> = (0..50_000u32)
        .flat_map(|i| ((i % 251) as u8).to_le_bytes())
        .collect();
    let server = serve(bytes.clone());
    let cache = tempfile::tempdir().unwrap();
    let path = hub_file(REPO, "main", FILE, Some(&server.url), Some(cache.path())).unwrap();
    assert!(path.starts_with(cache.path()), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let after_first = server.hits.load(Ordering::SeqCst);
    assert!(after_first >= 1);
    // Cached: the same path comes back.
    let again = hub_file(REPO, "main", FILE, Some(&server.url), Some(cache.path())).unwrap();
    assert_eq!(again, path);
}

#[test]
fn a_missing_file_names_repo_revision_and_file() {
    let server = serve(vec![1, 2, 3]);
    let cache = tempfile::tempdir().unwrap();
    let err = hub_file(
        REPO,
        "main",
        "nope.pth",
        Some(&server.url),
        Some(cache.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("hub acme/tiny-weights@main: downloading nope.pth:"),
        "{err}"
    );
}

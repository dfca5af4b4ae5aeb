//! A local HTTP server that serves files at the Hugging Face Hub's URL layout, so code that
//! downloads through `hf-hub` is tested for real (HTTP, ranged requests, the headers `hf-hub`
//! reads, its cache) without the network. Test support only: dev-dependency of the crates
//! that fetch from the hub.
//!
//! Served:
//! - `GET /{repo}/resolve/{rev}/{file}` (models) and `GET /datasets/{repo}/resolve/{rev}/{file}`
//!   (datasets): the file, honouring `Range: bytes=a-b`, with `ETag` (blake3 of the file) and
//!   `X-Repo-Commit` ([`COMMIT`]);
//! - `GET /api/models/{repo}/revision/{rev}` and `GET /api/datasets/{repo}/revision/{rev}`:
//!   the repo's file list as the hub's JSON (`id`, `sha`, `siblings[].rfilename`).
//!
//! Anything else, or a repo or file not given, is a 404. Every revision serves the same files.
//!
//! ```
//! use tofa_hubmock::{HubMock, Kind};
//! let mut hub = HubMock::start([(Kind::Model, "acme/w", vec![("a.bin", vec![1u8, 2, 3])])]);
//! let url = hub.url().to_owned(); // pass as the hub endpoint
//! # let _ = url;
//! assert_eq!(hub.stop(), 0); // requests served
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The commit every revision resolves to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Model or data set repository (they live under different URL prefixes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `/{repo}/...`, `/api/models/{repo}/...`
    Model,
    /// `/datasets/{repo}/...`, `/api/datasets/{repo}/...`
    Dataset,
}

type Repos = BTreeMap<(Kind, String), Vec<(String, Vec<u8>)>>;

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct HubMock {
    url: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl HubMock {
    /// Serves `repos` (`(kind, repo id, [(path in repo, bytes)])`) on 127.0.0.1 until stopped,
    /// for at most 60 s and 1,000 requests (so a hung test cannot hang CI).
    pub fn start<R, P>(repos: impl IntoIterator<Item = (Kind, R, Vec<(P, Vec<u8>)>)>) -> Self
    where
        R: Into<String>,
        P: Into<String>,
    {
        let repos: Repos = repos
            .into_iter()
            .map(|(k, r, files)| {
                let files = files.into_iter().map(|(p, b)| (p.into(), b)).collect();
                ((k, r.into()), files)
            })
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), served.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && count.load(Ordering::SeqCst) < 1_000
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = answer(stream, &repos);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(3)),
                }
            }
        });
        Self {
            url,
            stop,
            served,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:<port>`: the endpoint to give the hub client.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Stops serving and returns the number of requests served.
    pub fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.requests()
    }
}

impl Drop for HubMock {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut stream: TcpStream, repos: &Repos) -> std::io::Result<()> {
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

type Response = (&'static str, Vec<(String, String)>, Vec<u8>);

fn route(path: &str, range: Option<&str>, repos: &Repos) -> Response {
    let not_found = || ("404 Not Found", vec![], b"not found".to_vec());
    for (prefix, kind) in [
        ("/api/datasets/", Kind::Dataset),
        ("/api/models/", Kind::Model),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let Some((repo, _rev)) = rest.split_once("/revision/") else {
                return not_found();
            };
            return match repos.get(&(kind, repo.to_owned())) {
                Some(files) => listing(repo, files),
                None => not_found(),
            };
        }
    }
    let (kind, rest) = match path.strip_prefix("/datasets/") {
        Some(rest) => (Kind::Dataset, rest),
        None => (Kind::Model, path.trim_start_matches('/')),
    };
    let Some((repo, rest)) = rest.split_once("/resolve/") else {
        return not_found();
    };
    let Some((_rev, file)) = rest.split_once('/') else {
        return not_found();
    };
    match repos
        .get(&(kind, repo.to_owned()))
        .and_then(|fs| fs.iter().find(|(f, _)| f == file))
    {
        Some((_, bytes)) => ranged(bytes, range),
        None => not_found(),
    }
}

fn listing(repo: &str, files: &[(String, Vec<u8>)]) -> Response {
    let siblings: Vec<String> = files
        .iter()
        .map(|(f, _)| format!("{{\"rfilename\":\"{f}\"}}"))
        .collect();
    let json = format!(
        "{{\"id\":\"{repo}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
        siblings.join(",")
    );
    (
        "200 OK",
        vec![("Content-Type".into(), "application/json".into())],
        json.into_bytes(),
    )
}

fn ranged(bytes: &[u8], range: Option<&str>) -> Response {
    let size = bytes.len();
    let last = size.saturating_sub(1);
    let (start, end) = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().unwrap_or(last);
            (a.min(size), b.min(last))
        })
        .unwrap_or((0, last));
    let body = if size > 0 && start <= end {
        bytes[start..=end].to_vec()
    } else {
        Vec::new()
    };
    let headers = vec![
        (
            "ETag".into(),
            format!("\"{}\"", blake3::hash(bytes).to_hex()),
        ),
        ("X-Repo-Commit".into(), COMMIT.into()),
        (
            "Content-Range".into(),
            format!("bytes {start}-{end}/{size}"),
        ),
    ];
    ("206 Partial Content", headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Repos {
        let mut r = Repos::new();
        r.insert(
            (Kind::Model, "acme/w".into()),
            vec![("m.bin".into(), (0u8..10).collect())],
        );
        r.insert(
            (Kind::Dataset, "acme/d".into()),
            vec![("data/a.parquet".into(), vec![7, 8, 9])],
        );
        r
    }

    #[test]
    fn routes_files_ranges_listings_and_misses() {
        let r = files();
        let (s, h, b) = route("/acme/w/resolve/main/m.bin", Some("bytes=2-4"), &r);
        assert_eq!((s, b), ("206 Partial Content", vec![2, 3, 4]));
        assert!(
            h.iter()
                .any(|(k, v)| k == "Content-Range" && v == "bytes 2-4/10")
        );
        assert!(h.iter().any(|(k, v)| k == "X-Repo-Commit" && v == COMMIT));
        let (_, _, b) = route("/datasets/acme/d/resolve/v1/data/a.parquet", None, &r);
        assert_eq!(b, vec![7, 8, 9]);
        let (s, _, b) = route("/api/datasets/acme/d/revision/main", None, &r);
        assert_eq!(s, "200 OK");
        assert!(
            String::from_utf8(b)
                .unwrap()
                .contains("\"rfilename\":\"data/a.parquet\"")
        );
        // a model is not a data set, and unknown paths are 404s
        for p in [
            "/datasets/acme/w/resolve/main/m.bin",
            "/acme/w/resolve/main/other.bin",
            "/api/models/acme/d/revision/main",
            "/nothing",
        ] {
            assert_eq!(route(p, None, &r).0, "404 Not Found", "{p}");
        }
    }

    #[test]
    fn serves_over_http_and_counts_requests() {
        let mut hub = HubMock::start([(Kind::Model, "acme/w", vec![("x", vec![1u8, 2])])]);
        let addr = hub.url().trim_start_matches("http://").to_owned();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /acme/w/resolve/main/x HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 206"), "{text}");
        assert!(out.ends_with(&[1, 2]));
        assert_eq!(hub.stop(), 1);
    }
}

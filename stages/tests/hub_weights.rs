//! `hub_file` (the `pretrain` stage's `init = { from = "hub", ... }`) against a local HTTP server
//! that serves the hub's model URL layout (`tofa-hubmock`): `GET /{repo}/resolve/{rev}/{file}`,
//! ranged, with the ETag and X-Repo-Commit headers hf-hub reads.

use tofa_hubmock::{HubMock, Kind};
use tofa_stages::train::hub_file;

const REPO: &str = "acme/tiny-weights";
const FILE: &str = "model.safetensors";

fn serve(body: Vec<u8>) -> HubMock {
    HubMock::start([(Kind::Model, REPO, vec![(FILE, body)])])
}

#[test]
fn downloads_through_the_hub_layout_then_serves_from_cache() {
    let bytes: Vec<u8> = (0..50_000u32)
        .flat_map(|i| ((i % 251) as u8).to_le_bytes())
        .collect();
    let server = serve(bytes.clone());
    let cache = tempfile::tempdir().unwrap();
    let path = hub_file(REPO, "main", FILE, Some(server.url()), Some(cache.path())).unwrap();
    assert!(path.starts_with(cache.path()), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let after_first = server.requests();
    assert!(after_first >= 1);
    // Cached: the same path comes back.
    let again = hub_file(REPO, "main", FILE, Some(server.url()), Some(cache.path())).unwrap();
    assert_eq!(again, path);
    assert_eq!(
        server.requests(),
        after_first,
        "a cached file must not be fetched again"
    );
}

#[test]
fn a_missing_file_names_repo_revision_and_file() {
    let server = serve(vec![1, 2, 3]);
    let cache = tempfile::tempdir().unwrap();
    let err = hub_file(
        REPO,
        "main",
        "nope.pth",
        Some(server.url()),
        Some(cache.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("hub acme/tiny-weights@main: downloading nope.pth:"),
        "{err}"
    );
}

//! Content-addressed cache of stage outputs.
//!
//! Layout under the cache root:
//! - `entries/<key>/` : `out/` (the stage's files), `rows.json`, `manifest.json` (written last);
//! - `tmp/<key>.<host>.<pid>.<n>/` : entries being built, renamed into `entries/` when
//!   complete; `host` and `pid` say whose build it is, so a runner sharing the cache from
//!   another node never takes a live build for a dead one (see [`Cache::sweep_tmp`]);
//! - `locks/<key>.lock` : held while an entry is built, so two runners never build it twice;
//! - `pointers/<profile>/<stage>.json` : the key a stage last resolved to, to explain staleness.
//!
//! A directory rename is atomic, so a killed run leaves at most a `tmp/` directory, never a
//! half-written entry. Files and directories are fsynced before the rename, so after a crash
//! of the machine (not only of the process) an entry that appeared is complete. Entries are
//! verified against their manifest before every reuse.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::kind::Row;

/// Bumped when the entry layout or key schema changes.
pub const FORMAT: u32 = 1;

/// Serialises JSON with object keys sorted, whatever serde_json's map type is.
/// Floats print in shortest round-trip form, which is one-to-one with their bits.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Everything that shapes a stage's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInput {
    pub format: u32,
    pub kind: String,
    pub kind_version: String,
    pub params: Value,
    pub seed: u64,
    /// Output digests of dependencies, by stage id.
    pub deps: BTreeMap<String, String>,
    /// The device the stage computes on when it is not the CPU (a CUDA result differs from
    /// the CPU's in its last bits). Absent for the CPU, so CPU keys are what they always were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The build's arithmetic when it differs from the default build's in its last bits (a
    /// binary built with AVX-512 GEMM kernels: `gemm-avx512`). Absent for the default build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerics: Option<String>,
}

impl KeyInput {
    /// The hex blake3 of the canonical JSON form.
    pub fn key(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        blake3::hash(canonical_json(&v).as_bytes())
            .to_hex()
            .to_string()
    }
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// Written last into an entry; its presence marks the entry complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub stage: String,
    pub input: KeyInput,
    pub outputs: Vec<FileDigest>,
    pub rows_blake3: String,
    /// Digest of outputs and rows: what downstream keys see.
    pub output_digest: String,
    pub started: String,
    pub ended: String,
    pub wall_s: f64,
    pub host: String,
    pub crate_version: String,
    pub git_commit: Option<String>,
}

/// A verified cache entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub rows: Vec<Row>,
}

impl Entry {
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }
}

/// The result of looking a key up.
#[derive(Debug)]
pub enum Lookup {
    Hit(Box<Entry>),
    Miss,
    /// The entry existed but failed verification; it has been removed.
    Corrupt(String),
}

/// What a stage's key was last time, to explain why it is stale.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    pub key: String,
    pub input: KeyInput,
}

/// A cache rooted at a directory.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
    /// Who builds through this handle: the host id and process id written into temp names.
    host: String,
    pid: u32,
}

/// This machine's id in temp names: `$TOFA_HOST_ID` when set (several runners on one
/// machine can pose as nodes, as the tests do), else the kernel's host name; characters other
/// than ASCII letters, digits, `-` and `_` become `_`, so the id never holds the `.` that
/// separates the parts of a temp name.
pub fn host_id() -> String {
    // read once per process: every pointer and table write names it
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(read_host_id).clone()
}

fn read_host_id() -> String {
    let raw = std::env::var("TOFA_HOST_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into());
    sanitize_host(&raw)
}

fn sanitize_host(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Flushes a file's data and metadata to the disk.
fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", path, e))
}

/// Flushes a directory, so that the names created or renamed in it are on the disk.
fn sync_dir(path: &Path) -> Result<()> {
    // Directories open read-only on Unix; elsewhere there is no directory fsync to do.
    if cfg!(unix) { sync_file(path) } else { Ok(()) }
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| Error::io("read", path, e))?;
    Ok((n, h.finalize().to_hex().to_string()))
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io("list", dir, e))?;
        let p = e.path();
        let ft = e.file_type().map_err(|err| Error::io("stat", &p, err))?;
        if ft.is_dir() {
            list_files(root, &p, out)?;
        } else {
            out.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
        }
    }
    Ok(())
}

/// Writes a file through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        host_id(),
        std::process::id()
    ));
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    sync_dir(dir)
}

/// Writes `bytes` to `path` and flushes them to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

fn pointer_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '~'
            }
        })
        .collect::<String>()
        + ".json"
}

/// An entry being built: the stage writes into `out_dir`.
#[derive(Debug)]
pub struct Building {
    pub dir: PathBuf,
    pub out_dir: PathBuf,
    key: String,
    _lock: File,
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Cache {
    /// A cache at `root`, building as this host ([`host_id`]) and process.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_identity(root, &host_id(), std::process::id())
    }

    /// A cache at `root` building as `host` and `pid`: how a test poses as another node.
    pub fn with_identity(root: impl Into<PathBuf>, host: &str, pid: u32) -> Self {
        Cache {
            root: root.into(),
            host: sanitize_host(host),
            pid,
        }
    }

    /// The host id this handle writes into temp names.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A fresh name under `tmp/` for `key`: `<key>.<host>.<pid>.<tag><n>`.
    fn tmp_path(&self, key: &str, tag: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{key}.{}.{}.{tag}{n}", self.host, self.pid))
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(key)
    }

    /// Looks a key up and verifies the entry; a corrupt entry is removed and reported.
    pub fn lookup(&self, key: &str) -> Result<Lookup> {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return Ok(Lookup::Miss);
        }
        match self.verify(key, &dir) {
            Ok(entry) => Ok(Lookup::Hit(Box::new(entry))),
            Err(reason) => {
                let trash = self.tmp_path(key, "corrupt");
                let _ = std::fs::create_dir_all(self.root.join("tmp"));
                if std::fs::rename(&dir, &trash).is_ok() {
                    let _ = std::fs::remove_dir_all(&trash);
                }
                Ok(Lookup::Corrupt(reason))
            }
        }
    }

    /// Looks a key up and verifies the entry without changing anything (for `status`).
    pub fn peek(&self, key: &str) -> Lookup {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return Lookup::Miss;
        }
        match self.verify(key, &dir) {
            Ok(entry) => Lookup::Hit(Box::new(entry)),
            Err(reason) => Lookup::Corrupt(reason),
        }
    }

    fn verify(&self, key: &str, dir: &Path) -> std::result::Result<Entry, String> {
        let manifest: Manifest =
            read_json(&dir.join("manifest.json")).map_err(|e| crate::error::chain(&e))?;
        if manifest.key != key {
            return Err(format!("manifest key {} does not match", manifest.key));
        }
        for f in &manifest.outputs {
            let p = dir.join("out").join(&f.path);
            let (size, digest) =
                hash_file(&p).map_err(|_| format!("output `{}` is missing", f.path))?;
            if size != f.size {
                return Err(format!(
                    "output `{}` has {size} bytes, manifest says {}",
                    f.path, f.size
                ));
            }
            if digest != f.blake3 {
                return Err(format!("output `{}` does not match its digest", f.path));
            }
        }
        let rows_path = dir.join("rows.json");
        let rows_bytes =
            std::fs::read(&rows_path).map_err(|_| "rows.json is missing".to_string())?;
        if blake3::hash(&rows_bytes).to_hex().as_str() != manifest.rows_blake3 {
            return Err("rows.json does not match its digest".into());
        }
        let rows: Vec<Row> =
            serde_json::from_slice(&rows_bytes).map_err(|e| format!("rows.json: {e}"))?;
        Ok(Entry {
            dir: dir.to_path_buf(),
            manifest,
            rows,
        })
    }

    /// Takes the build lock for `key` (waiting for another runner if needed) and creates a
    /// temporary directory. `on_wait` is called once if the lock is held elsewhere.
    pub fn begin(&self, key: &str, on_wait: impl FnOnce()) -> Result<Building> {
        let locks = self.root.join("locks");
        std::fs::create_dir_all(&locks).map_err(|e| Error::io("create", &locks, e))?;
        let lock_path = locks.join(format!("{key}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let dir = self.tmp_path(key, "");
        let out_dir = dir.join("out");
        std::fs::create_dir_all(&out_dir).map_err(|e| Error::io("create", &out_dir, e))?;
        Ok(Building {
            dir,
            out_dir,
            key: key.to_string(),
            _lock: lock,
        })
    }

    /// Hashes the outputs, writes rows and manifest, and renames the entry into place.
    pub fn commit(&self, b: Building, mut manifest: Manifest, rows: &[Row]) -> Result<Entry> {
        let mut files = Vec::new();
        list_files(&b.out_dir, &b.out_dir, &mut files)?;
        files.sort();
        let mut outputs = Vec::with_capacity(files.len());
        for rel in files {
            let (size, digest) = hash_file(&b.out_dir.join(&rel))?;
            outputs.push(FileDigest {
                path: rel.to_string_lossy().replace('\\', "/"),
                size,
                blake3: digest,
            });
        }
        let rows_json = serde_json::to_vec_pretty(rows).map_err(|e| Error::Json {
            path: b.dir.join("rows.json"),
            source: e,
        })?;
        let rows_blake3 = blake3::hash(&rows_json).to_hex().to_string();
        let mut h = blake3::Hasher::new();
        for o in &outputs {
            h.update(o.path.as_bytes());
            h.update(&[0]);
            h.update(o.blake3.as_bytes());
        }
        h.update(rows_blake3.as_bytes());
        manifest.outputs = outputs;
        manifest.rows_blake3 = rows_blake3;
        manifest.output_digest = h.finalize().to_hex().to_string();
        // Everything reaches the disk before the rename that makes the entry appear: the
        // stage's files, their directories, rows and manifest, then the entry directory.
        let mut dirs = std::collections::BTreeSet::new();
        for o in &manifest.outputs {
            let p = b.out_dir.join(&o.path);
            sync_file(&p)?;
            dirs.extend(p.parent().map(Path::to_path_buf));
        }
        dirs.insert(b.out_dir.clone());
        for d in dirs.iter().rev() {
            sync_dir(d)?;
        }
        write_synced(&b.dir.join("rows.json"), &rows_json)?;
        let mpath = b.dir.join("manifest.json");
        let mbytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Json {
            path: mpath.clone(),
            source: e,
        })?;
        write_synced(&mpath, &mbytes)?;
        sync_dir(&b.dir)?;
        let dest = self.entry_dir(&b.key);
        let entries = self.root.join("entries");
        std::fs::create_dir_all(&entries).map_err(|e| Error::io("create", &entries, e))?;
        if dest.exists() {
            // Built meanwhile by a runner that did not share our lock directory view.
            let _ = std::fs::remove_dir_all(&b.dir);
        } else {
            std::fs::rename(&b.dir, &dest).map_err(|e| Error::io("rename", &dest, e))?;
            sync_dir(&entries)?;
        }
        Ok(Entry {
            dir: dest,
            manifest,
            rows: rows.to_vec(),
        })
    }

    /// Removes a failed build.
    pub fn abort(&self, b: Building) {
        let _ = std::fs::remove_dir_all(&b.dir);
    }

    /// Files stages share across keys and runs (see `StageContext::shared_dir`).
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// Scratch directory of a key (see `StageContext::scratch_dir`).
    pub fn scratch_dir(&self, key: &str) -> PathBuf {
        self.root.join("scratch").join(key)
    }

    pub fn pointer_path(&self, profile: &str, id: &str) -> PathBuf {
        self.root
            .join("pointers")
            .join(profile)
            .join(pointer_name(id))
    }

    pub fn read_pointer(&self, profile: &str, id: &str) -> Option<Pointer> {
        read_json(&self.pointer_path(profile, id)).ok()
    }

    /// Records the key a stage resolved to; a pointer already holding it is left alone.
    pub fn write_pointer(&self, profile: &str, id: &str, p: &Pointer) -> Result<()> {
        let path = self.pointer_path(profile, id);
        if read_json::<Pointer>(&path).is_ok_and(|old| old.key == p.key) {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(p).map_err(|e| Error::Json {
            path: path.clone(),
            source: e,
        })?;
        write_atomic(&path, &bytes)
    }

    /// Removes temporary directories left by dead processes of this host (Linux only).
    ///
    /// A temp name `<key>.<host>.<pid>.<n>` is removed only when `host` is this handle's and
    /// no process `pid` runs here: a build of another node sharing the cache is never
    /// touched, whatever its pid means on this machine. Names of another shape (an older
    /// layout without the host) are left for `tofa-pipeline clean`. Returns how many
    /// directories were removed.
    pub fn sweep_tmp(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        if !Path::new("/proc/self").exists() {
            return 0;
        }
        let mut removed = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let parts: Vec<&str> = name.split('.').collect();
            let [_key, host, pid, _n] = parts[..] else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if host == self.host
                && pid != self.pid
                && !Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Every entry key present.
    pub fn keys(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root.join("entries")) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        keys.sort();
        keys
    }

    /// Every pointer, by profile and file name.
    pub fn pointer_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(profiles) = std::fs::read_dir(self.root.join("pointers")) else {
            return out;
        };
        for p in profiles.flatten() {
            if let Ok(rd) = std::fs::read_dir(p.path()) {
                for e in rd.flatten() {
                    if let Ok(ptr) = read_json::<Pointer>(&e.path()) {
                        out.push(ptr.key);
                    }
                }
            }
        }
        out
    }

    /// Takes the whole-cache lock: shared for runners, exclusive for `clean`.
    pub fn lock_cache(&self, exclusive: bool) -> Result<File> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io("create", &self.root, e))?;
        let path = self.root.join("cache.lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let r = if exclusive {
            f.try_lock()
        } else {
            f.try_lock_shared()
        };
        match r {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(format!(
                "the cache {} is in use by another tofa-pipeline process{}",
                self.root.display(),
                if exclusive {
                    "; clean needs it to itself"
                } else {
                    " running clean"
                }
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys() {
        let v = serde_json::json!({"b": 1, "a": {"d": 2.5, "c": [true, null]}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":[true,null],"d":2.5},"b":1}"#
        );
    }

    #[test]
    fn key_changes_with_each_input() {
        let base = KeyInput {
            format: FORMAT,
            kind: "k".into(),
            kind_version: "1".into(),
            params: serde_json::json!({"a": 1}),
            seed: 0,
            deps: BTreeMap::new(),
            device: None,
            numerics: None,
        };
        let k0 = base.key();
        // the CPU and the default build add nothing to a key: keys made before devices and
        // build tags existed still hit
        let v = serde_json::to_value(&base).unwrap();
        assert!(!canonical_json(&v).contains("device"), "{v}");
        assert!(!canonical_json(&v).contains("numerics"), "{v}");
        let mut g = base.clone();
        g.device = Some("cuda:0".into());
        assert_ne!(g.key(), k0);
        let mut n = base.clone();
        n.numerics = Some("gemm-avx512".into());
        assert_ne!(n.key(), k0);
        assert_ne!(n.key(), g.key());
        assert_eq!(k0, base.clone().key());
        let mut p = base.clone();
        p.params = serde_json::json!({"a": 2});
        assert_ne!(p.key(), k0);
        let mut s = base.clone();
        s.seed = 1;
        assert_ne!(s.key(), k0);
        let mut d = base.clone();
        d.deps.insert("x".into(), "abc".into());
        assert_ne!(d.key(), k0);
        let mut v = base;
        v.kind_version = "2".into();
        assert_ne!(v.key(), k0);
    }

    /// A pid no process has: above Linux's largest `pid_max` (2^22).
    const DEAD_PID: u32 = u32::MAX - 7;

    fn tmp_names(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_sweep_never_removes_another_hosts_build() {
        let dir = tempfile::tempdir().unwrap();
        // node-a builds; its pid means nothing on this machine, as on another node
        let a = Cache::with_identity(dir.path(), "node-a", DEAD_PID);
        let in_flight = a.begin("k1", || {}).unwrap();
        std::fs::write(in_flight.out_dir.join("f.txt"), b"x").unwrap();
        // node-b left a dead build of its own behind
        let b_dead = Cache::with_identity(dir.path(), "node-b", DEAD_PID);
        let dead = b_dead.begin("k2", || {}).unwrap();
        drop(dead);
        let b = Cache::with_identity(dir.path(), "node-b", std::process::id());
        assert_eq!(b.sweep_tmp(), 1, "node-b's own dead build goes");
        let left = tmp_names(dir.path());
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with("k1.node-a."), "{left:?}");
        // node-a's build completes as if nothing had happened
        let manifest = Manifest {
            key: "k1".into(),
            stage: "s".into(),
            input: KeyInput {
                format: FORMAT,
                kind: "echo".into(),
                kind_version: "1".into(),
                params: serde_json::json!({}),
                seed: 0,
                deps: BTreeMap::new(),
                device: None,
                numerics: None,
            },
            outputs: Vec::new(),
            rows_blake3: String::new(),
            output_digest: String::new(),
            started: String::new(),
            ended: String::new(),
            wall_s: 0.0,
            host: "node-a".into(),
            crate_version: String::new(),
            git_commit: None,
        };
        a.commit(in_flight, manifest, &[]).unwrap();
        assert!(matches!(b.lookup("k1").unwrap(), Lookup::Hit(_)));
        assert!(tmp_names(dir.path()).is_empty());
    }

    #[test]
    fn a_hosts_dead_builds_are_swept_by_that_host_only() {
        let dir = tempfile::tempdir().unwrap();
        let dead = Cache::with_identity(dir.path(), "node-a", DEAD_PID)
            .begin("k", || {})
            .unwrap();
        drop(dead);
        std::fs::create_dir_all(dir.path().join("tmp/k.123.0")).unwrap();
        let b = Cache::with_identity(dir.path(), "node-b", std::process::id());
        assert_eq!(b.sweep_tmp(), 0);
        let a = Cache::with_identity(dir.path(), "node-a", std::process::id());
        assert_eq!(a.sweep_tmp(), 1);
        // the old layout names no host: left for `clean`
        assert_eq!(tmp_names(dir.path()), ["k.123.0"]);
    }

    #[test]
    fn host_ids_hold_no_dots() {
        assert_eq!(sanitize_host("node1.cluster.local"), "node1_cluster_local");
        assert_eq!(
            Cache::with_identity("/x", "a.b", 1)
                .tmp_path("k", "")
                .file_name()
                .unwrap()
                .to_string_lossy()
                .split('.')
                .count(),
            4
        );
    }
}

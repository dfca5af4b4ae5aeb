//! Content-addressed cache of stage outputs.
//!
//! Layout under the cache root:
//! - `entries/<key>/` : `out/` (the stage's files), `rows.json`, `manifest.json` (written last);
//! - `tmp/<key>.<pid>.<n>/` : entries being built, renamed into `entries/` when complete;
//! - `locks/<key>.lock` : held while an entry is built, so two runners never build it twice;
//! - `pointers/<profile>/<stage>.json` : the key a stage last resolved to, to explain staleness.
//!
//! A directory rename is atomic, so a killed run leaves at most a `tmp/` directory, never a
//! half-written entry. Entries are verified against their manifest before every reuse.

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
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
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
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
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
                let trash = self
                    .root
                    .join("tmp")
                    .join(format!("{key}.corrupt.{}", std::process::id()));
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
        let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("{key}.{}.{n}", std::process::id()));
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
        // Plain writes: the directory rename below is what makes the entry appear atomically.
        let rows_path = b.dir.join("rows.json");
        std::fs::write(&rows_path, &rows_json).map_err(|e| Error::io("write", &rows_path, e))?;
        let mpath = b.dir.join("manifest.json");
        let mbytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Json {
            path: mpath.clone(),
            source: e,
        })?;
        std::fs::write(&mpath, &mbytes).map_err(|e| Error::io("write", &mpath, e))?;
        let dest = self.entry_dir(&b.key);
        let entries = self.root.join("entries");
        std::fs::create_dir_all(&entries).map_err(|e| Error::io("create", &entries, e))?;
        if dest.exists() {
            // Built meanwhile by a runner that did not share our lock directory view.
            let _ = std::fs::remove_dir_all(&b.dir);
        } else {
            std::fs::rename(&b.dir, &dest).map_err(|e| Error::io("rename", &dest, e))?;
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

    /// Removes temporary directories left by processes that no longer exist (Linux only).
    pub fn sweep_tmp(&self) {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && Path::new("/proc/self").exists()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
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
        };
        let k0 = base.key();
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
}

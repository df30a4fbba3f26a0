//! Content-addressed blob storage on the local file system.
//!
//! Layout under `data_dir`:
//!
//! ```text
//! tmp/<random>                 uploads in progress (emptied at start)
//! blobs/<2 hex>/<64 hex>       the bytes, named by their SHA-256
//! blobs/<2 hex>/<64 hex>.meta  JSON [`Meta`]: size, type, expiry, uploaders
//! ```
//!
//! An upload is written to `tmp/`, fsynced, and renamed into `blobs/` (then the
//! directory is fsynced), so a crash never leaves a partial blob under a real
//! name. The metadata file is written the same way *after* the blob; a blob
//! without metadata is invisible (a crash between the two) and is removed at
//! start. Identical bytes have one name, so they are stored once: a second
//! upload only extends the expiry and adds its uploader.
//!
//! Every blob's [`Meta`] is also kept in memory (loaded at start), so a
//! download never reads metadata from disk and the sweeper never walks the
//! tree. Changes to one blob are serialised by a lock striped over the hash.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::MediaError;
use crate::handle::{Sha, blob_path};

/// Lock stripes for per-blob changes.
const STRIPES: usize = 64;
/// Most uploaders remembered per blob; beyond, new uploaders still extend the
/// expiry but cannot delete it (the blob goes at expiry).
pub const MAX_OWNERS: usize = 64;

/// What the store knows of a blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub size: u64,
    /// The declared content type, if it was on the allow-list.
    pub mime: Option<String>,
    pub created_ms: u64,
    /// When the blob expires; 0 once it is gone.
    pub expires_ms: u64,
    /// When it expired or was deleted (tombstone: answers 410 until
    /// `gone_ms + remember_gone`); 0 while live.
    #[serde(default)]
    pub gone_ms: u64,
    /// Users who uploaded it and so may delete it.
    pub owners: Vec<String>,
}

impl Meta {
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.gone_ms == 0 && now_ms < self.expires_ms
    }
}

/// A blob's state, as a download sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Live(Meta),
    Gone,
    Missing,
}

/// An upload written and fsynced in `tmp/`, ready for [`Store::commit`].
#[derive(Debug)]
pub struct Written {
    pub tmp: PathBuf,
    pub sha: Sha,
    pub size: u64,
    pub mime: Option<String>,
}

/// The outcome of an upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub meta: Meta,
    /// The bytes were already here; nothing new was written.
    pub existed: bool,
}

pub struct Store {
    tmp: PathBuf,
    blobs: PathBuf,
    index: Mutex<HashMap<Sha, Meta>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens `data_dir`: creates the directories, deletes leftover uploads and
    /// blobs without metadata, and loads every blob's metadata.
    pub fn open(data_dir: &Path) -> Result<Store, MediaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MediaError::DataDir { path, source }
        };
        let tmp = data_dir.join("tmp");
        let blobs = data_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let mut index = HashMap::new();
        for sub in std::fs::read_dir(&blobs).map_err(io(&blobs))? {
            let sub = sub.map_err(io(&blobs))?.path();
            if !sub.is_dir() {
                continue;
            }
            let mut names = Vec::new();
            for f in std::fs::read_dir(&sub).map_err(io(&sub))? {
                names.push(f.map_err(io(&sub))?.path());
            }
            for f in &names {
                let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(hex) = name.strip_suffix(".meta") else {
                    continue;
                };
                let mut sha = [0u8; 32];
                if hex::decode_to_slice(hex, &mut sha).is_err() {
                    continue;
                }
                let text = std::fs::read(f).map_err(io(f))?;
                let meta: Meta =
                    serde_json::from_slice(&text).map_err(|e| MediaError::BadMeta {
                        path: f.clone(),
                        reason: e.to_string(),
                    })?;
                index.insert(sha, meta);
            }
            // Blobs renamed in but never described: a crash before their
            // metadata was durable, so no client was ever told of them.
            for f in &names {
                let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let mut sha = [0u8; 32];
                if name.len() == 64
                    && hex::decode_to_slice(name, &mut sha).is_ok()
                    && index.get(&sha).is_none_or(|m| m.gone_ms != 0)
                {
                    tracing::warn!(blob = name, "removing a blob without metadata");
                    std::fs::remove_file(f).map_err(io(f))?;
                }
            }
        }
        Ok(Store {
            tmp,
            blobs,
            index: Mutex::new(index),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        })
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn blob_path(&self, sha: &Sha) -> PathBuf {
        blob_path(&self.blobs, sha)
    }

    fn meta_path(&self, sha: &Sha) -> PathBuf {
        self.blob_path(sha).with_extension("meta")
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<Sha, Meta>> {
        self.index.lock().expect("the index lock is never poisoned")
    }

    fn stripe(&self, sha: &Sha) -> &tokio::sync::Mutex<()> {
        &self.stripes[sha[0] as usize % STRIPES]
    }

    pub fn lookup(&self, sha: &Sha, now_ms: u64) -> Lookup {
        match self.index().get(sha) {
            Some(m) if m.is_live(now_ms) => Lookup::Live(m.clone()),
            Some(_) => Lookup::Gone,
            None => Lookup::Missing,
        }
    }

    /// Number of live blobs and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let idx = self.index();
        idx.values()
            .filter(|m| m.gone_ms == 0)
            .fold((0, 0), |(n, b), m| (n + 1, b + m.size))
    }

    /// Moves the fsynced upload `tmp` (its bytes hash to `sha`) into place,
    /// or drops it if the blob is here already, and records `owner`.
    pub async fn commit(
        &self,
        w: Written,
        owner: &str,
        now_ms: u64,
        expires_ms: u64,
    ) -> std::io::Result<Stored> {
        let Written {
            tmp,
            sha,
            size,
            mime,
        } = w;
        let _g = self.stripe(&sha).lock().await;
        let old = self.index().get(&sha).cloned();
        let path = self.blob_path(&sha);
        let (meta, existed) = match old {
            Some(mut m) if m.gone_ms == 0 => {
                tokio::fs::remove_file(&tmp).await?;
                m.expires_ms = m.expires_ms.max(expires_ms);
                if !m.owners.iter().any(|o| o == owner) && m.owners.len() < MAX_OWNERS {
                    m.owners.push(owner.to_string());
                }
                (m, true)
            }
            _ => {
                let dir = path.parent().expect("a blob path has a parent").to_owned();
                let p = path.clone();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::rename(&tmp, &p)?;
                    std::fs::File::open(&dir)?.sync_all()
                })
                .await
                .expect("the rename task does not panic")?;
                let m = Meta {
                    size,
                    mime,
                    created_ms: now_ms,
                    expires_ms,
                    gone_ms: 0,
                    owners: vec![owner.to_string()],
                };
                (m, false)
            }
        };
        self.write_meta(&sha, &meta).await?;
        self.index().insert(sha, meta.clone());
        Ok(Stored { meta, existed })
    }

    /// Removes `owner` from the blob's uploaders; the blob goes (tombstone)
    /// when none is left. `Ok(false)` if `owner` is not an uploader.
    pub async fn delete(&self, sha: &Sha, owner: &str, now_ms: u64) -> std::io::Result<bool> {
        let _g = self.stripe(sha).lock().await;
        let Some(mut m) = self.index().get(sha).cloned() else {
            return Ok(false);
        };
        if m.gone_ms != 0 || !m.owners.iter().any(|o| o == owner) {
            return Ok(false);
        }
        m.owners.retain(|o| o != owner);
        if m.owners.is_empty() {
            self.bury(sha, m, now_ms).await?;
        } else {
            self.write_meta(sha, &m).await?;
            self.index().insert(*sha, m);
        }
        Ok(true)
    }

    /// Blobs that expired by `now_ms`, and tombstones older than `forget_before_ms`.
    pub fn due(&self, now_ms: u64, forget_before_ms: u64) -> (Vec<Sha>, Vec<Sha>) {
        let idx = self.index();
        let expired = idx
            .iter()
            .filter(|(_, m)| m.gone_ms == 0 && m.expires_ms <= now_ms)
            .map(|(s, _)| *s)
            .collect();
        let forget = idx
            .iter()
            .filter(|(_, m)| m.gone_ms != 0 && m.gone_ms < forget_before_ms)
            .map(|(s, _)| *s)
            .collect();
        (expired, forget)
    }

    /// Deletes the bytes of `sha` if it is still expired; keeps a tombstone.
    pub async fn expire(&self, sha: &Sha, now_ms: u64) -> std::io::Result<bool> {
        let _g = self.stripe(sha).lock().await;
        let Some(m) = self.index().get(sha).cloned() else {
            return Ok(false);
        };
        if m.gone_ms != 0 || m.expires_ms > now_ms {
            return Ok(false);
        }
        self.bury(sha, m, now_ms).await?;
        Ok(true)
    }

    /// Forgets the tombstone of `sha` (its handle answers 404 from now on).
    pub async fn forget(&self, sha: &Sha) -> std::io::Result<()> {
        let _g = self.stripe(sha).lock().await;
        if self.index().get(sha).is_some_and(|m| m.gone_ms != 0) {
            remove_if_exists(&self.meta_path(sha)).await?;
            self.index().remove(sha);
        }
        Ok(())
    }

    /// Tombstone first (so a crash never brings the blob back), then the bytes.
    async fn bury(&self, sha: &Sha, mut m: Meta, now_ms: u64) -> std::io::Result<()> {
        m.gone_ms = now_ms.max(1);
        m.owners.clear();
        self.write_meta(sha, &m).await?;
        self.index().insert(*sha, m);
        remove_if_exists(&self.blob_path(sha)).await
    }

    async fn write_meta(&self, sha: &Sha, m: &Meta) -> std::io::Result<()> {
        let path = self.meta_path(sha);
        let tmp = self
            .tmp
            .join(format!("{}.meta", hex::encode(rand::random::<[u8; 16]>())));
        let text = serde_json::to_vec(m).expect("metadata serialises");
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().expect("a meta path has a parent");
            std::fs::create_dir_all(dir)?;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            drop(f);
            if let Err(e) = std::fs::rename(&tmp, &path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .expect("the metadata task does not panic")
    }
}

async fn remove_if_exists(p: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(p).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn put(store: &Store, bytes: &[u8], owner: &str, now: u64, exp: u64) -> Stored {
        use sha2::Digest;
        let tmp = store.tmp_dir().join(hex::encode(rand::random::<[u8; 8]>()));
        std::fs::write(&tmp, bytes).unwrap();
        let sha: Sha = sha2::Sha256::digest(bytes).into();
        let w = Written {
            tmp,
            sha,
            size: bytes.len() as u64,
            mime: None,
        };
        store.commit(w, owner, now, exp).await.unwrap()
    }

    #[tokio::test]
    async fn dedupe_delete_expire_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = put(&store, b"hello", "alice", 10, 100).await;
        assert!(!a.existed);
        let b = put(&store, b"hello", "bob", 20, 200).await;
        assert!(b.existed);
        assert_eq!(b.meta.expires_ms, 200);
        assert_eq!(b.meta.owners, ["alice", "bob"]);
        assert_eq!(store.usage(), (1, 5));
        let sha: Sha = {
            use sha2::Digest;
            sha2::Sha256::digest(b"hello").into()
        };
        assert!(!store.delete(&sha, "carol", 30).await.unwrap());
        assert!(store.delete(&sha, "alice", 30).await.unwrap());
        assert!(matches!(store.lookup(&sha, 30), Lookup::Live(_)));

        // Reopen: the index comes back from the metadata files.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(store.lookup(&sha, 30), Lookup::Live(m) if m.owners == ["bob"]));
        assert_eq!(
            store.lookup(&sha, 200),
            Lookup::Gone,
            "expired before the sweep"
        );
        let (expired, _) = store.due(200, 0);
        assert_eq!(expired, vec![sha]);
        assert!(store.expire(&sha, 200).await.unwrap());
        assert!(!store.blob_path(&sha).exists());
        assert_eq!(store.lookup(&sha, 200), Lookup::Gone);
        let (_, forget) = store.due(300, 250);
        assert_eq!(forget, vec![sha]);
        store.forget(&sha).await.unwrap();
        assert_eq!(store.lookup(&sha, 300), Lookup::Missing);
        // Uploading it again brings it back.
        let c = put(&store, b"hello", "carol", 400, 500).await;
        assert!(!c.existed);
        assert!(store.blob_path(&sha).exists());
    }

    #[tokio::test]
    async fn open_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        std::fs::write(store.tmp_dir().join("partial"), b"half").unwrap();
        let orphan = store.blob_path(&[7; 32]);
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"no meta").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        assert!(!orphan.exists());
    }
}

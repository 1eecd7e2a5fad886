use crate::config::{ProviderConfig, ProviderKind};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt};
use osprey_core::{Error, ErrorKind, ObjectKey, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// Whether a file's base name belongs to what is being cleaned up.
type BelongsTo<'a> = dyn Fn(&str) -> bool + 'a;

const STAGING_DIR: &str = "_staging";
/// Bytes buffered before an upload switches to multipart; also the multipart part size.
const WRITE_BUFFER: usize = 8 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A named storage backend.
#[derive(Clone, Debug)]
pub struct Provider {
    name: String,
    store: Arc<dyn ObjectStore>,
    /// The store's own URL signing (S3, GCS, Azure), when it has one and it is wanted.
    signer: Option<Arc<dyn Signer>>,
    /// The directory of a local provider: its multipart temporaries are files there.
    local_root: Option<PathBuf>,
}

/// A staged upload found in the provider: what a dead process may have left.
#[derive(Debug, Clone)]
pub struct StagedLeftover {
    pub path: String,
    /// The chunk id it was staged for, when it was named after one.
    pub tag: Option<String>,
    pub age: Duration,
}

/// What was written: size and lowercase hex SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
}

/// A complete upload waiting in staging to be committed to its final key or discarded.
#[derive(Debug)]
pub struct Staged {
    path: StorePath,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

impl Provider {
    pub fn new(name: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        Provider::with_signer(name, store, None)
    }

    pub fn with_signer(name: impl Into<String>, store: Arc<dyn ObjectStore>, signer: Option<Arc<dyn Signer>>) -> Self {
        Provider { name: name.into(), store, signer, local_root: None }
    }

    /// A time-limited download link from the store itself, or `None` when the store cannot sign
    /// (local disk, memory): the vault then hands out its own signed link.
    pub async fn signed_url(&self, key: &ObjectKey, ttl: Duration) -> Result<Option<String>> {
        let Some(signer) = &self.signer else { return Ok(None) };
        let url = signer
            .signed_url(http::Method::GET, &StorePath::from(key.as_str()), ttl)
            .await
            .map_err(|e| store_error(&self.name, "cannot sign a download link", e))?;
        Ok(Some(url.to_string()))
    }

    /// A directory on local disk, created if missing. With `fsync`, a committed object and its
    /// directory are flushed to disk before `commit` returns.
    pub fn local(name: impl Into<String>, root: &Path, fsync: bool) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| {
            Error::unavailable(format!("cannot create storage directory {}", root.display())).with_source(e)
        })?;
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| Error::unavailable(format!("cannot open {}", root.display())).with_source(e))?
            // No automatic cleanup of emptied directories: with fsync on, a delete that empties
            // `_staging` races with a concurrent one syncing that directory (ENOENT); the
            // conformance suite's concurrent uploads caught it.
            .with_fsync(fsync);
        let mut provider = Provider::new(name, Arc::new(store));
        provider.local_root = Some(root.to_path_buf());
        Ok(provider)
    }

    pub fn memory(name: impl Into<String>) -> Self {
        Provider::new(name, Arc::new(InMemory::new()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Streams `body` to `key`, refusing more than `max_size` bytes. The object appears only when
    /// complete (replacing any object at `key`); on any error nothing is left at `key`.
    pub async fn put<S, E>(&self, key: &ObjectKey, body: S, max_size: u64) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.write(StorePath::from(key.as_str()), body, max_size).await
    }

    /// Streams `body` into a new staging object, refusing more than `max_size` bytes.
    /// On any error the staging object is removed and the error returned.
    pub async fn upload<S, E>(&self, body: S, max_size: u64) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.stage("", body, max_size).await
    }

    /// The same, naming the staging object after `tag` (a chunk id), so whoever finds it left
    /// behind knows which upload it belonged to.
    pub async fn stage<S, E>(&self, tag: &str, body: S, max_size: u64) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let unique = uuid::Uuid::new_v4().simple();
        let name = if tag.is_empty() { unique.to_string() } else { format!("{tag}.{unique}") };
        let path = StorePath::from(format!("{STAGING_DIR}/{name}"));
        let stored = self.write(path.clone(), body, max_size).await?;
        Ok(Staged { path, size: stored.size, sha256: stored.sha256 })
    }

    async fn write<S, E>(&self, path: StorePath, body: S, max_size: u64) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let mut writer = BufWriter::with_capacity(self.store.clone(), path.clone(), WRITE_BUFFER);
        let (size, sha256) = match write_all(&mut writer, body, max_size).await {
            Ok(written) => written,
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(provider = %self.name, error = %abort, "cannot abort staged upload");
                }
                self.remove(&path).await.ok();
                return Err(e);
            }
        };
        // A writer that failed to shut down has already given up its upload: nothing to abort.
        if let Err(e) = writer.shutdown().await {
            self.remove(&path).await.ok();
            return Err(Error::unavailable(format!("cannot finish upload to provider {:?}", self.name)).with_source(e));
        }
        Ok(Stored { size, sha256 })
    }

    /// Moves a staged upload to `key`. Fails with `Conflict` if `key` already holds an object,
    /// and leaves the staged upload in place so the caller can decide.
    pub async fn commit(&self, staged: &Staged, key: &ObjectKey) -> Result<()> {
        let to = StorePath::from(key.as_str());
        let conflict = || Error::new(ErrorKind::Conflict, format!("object {key} already exists"));
        match self.store.rename_if_not_exists(&staged.path, &to).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(conflict()),
            // Stores without an atomic create-if-absent copy (plain S3): check, then copy. Two
            // writers of one key can race here; the vault serialises uploads per key.
            Err(object_store::Error::NotSupported { .. }) => {
                if self.size(key).await?.is_some() {
                    return Err(conflict());
                }
                self.store
                    .rename(&staged.path, &to)
                    .await
                    .map_err(|e| store_error(&self.name, "cannot commit upload", e))
            }
            Err(e) => Err(store_error(&self.name, "cannot commit upload", e)),
        }
    }

    pub async fn discard(&self, staged: Staged) {
        if let Err(e) = self.remove(&staged.path).await {
            tracing::warn!(provider = %self.name, error = %e, "cannot remove staged upload");
        }
    }

    /// The object's size and its bytes as a stream.
    pub async fn get(&self, key: &ObjectKey) -> Result<(u64, impl Stream<Item = Result<Bytes>> + Send + 'static)> {
        let result = self
            .store
            .get(&StorePath::from(key.as_str()))
            .await
            .map_err(|e| store_error(&self.name, "cannot read object", e))?;
        let size = result.meta.size;
        let name = self.name.clone();
        let stream = result.into_stream().map_err(move |e| store_error(&name, "cannot read object", e));
        Ok((size, stream))
    }

    /// Bytes `range` of the object (within its size, which the caller has checked).
    pub async fn get_range(
        &self,
        key: &ObjectKey,
        range: std::ops::Range<u64>,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let options = object_store::GetOptions { range: Some(range.into()), ..Default::default() };
        let result = self
            .store
            .get_opts(&StorePath::from(key.as_str()), options)
            .await
            .map_err(|e| store_error(&self.name, "cannot read object", e))?;
        let name = self.name.clone();
        Ok(result.into_stream().map_err(move |e| store_error(&name, "cannot read object", e)))
    }

    pub async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes> {
        let result = self
            .store
            .get(&StorePath::from(key.as_str()))
            .await
            .map_err(|e| store_error(&self.name, "cannot read object", e))?;
        result.bytes().await.map_err(|e| store_error(&self.name, "cannot read object", e))
    }

    /// The object's size, or `None` if it does not exist.
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>> {
        match self.store.head(&StorePath::from(key.as_str())).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(&self.name, "cannot stat object", e)),
        }
    }

    /// Deletes an object; deleting a missing object succeeds.
    pub async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.remove(&StorePath::from(key.as_str())).await
    }

    /// Keys and sizes of every object under `prefix` (staging excluded), sorted by key.
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<(String, u64)>> {
        let prefix = prefix.map(StorePath::from);
        let mut out: Vec<(String, u64)> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_filter(|(k, _)| futures::future::ready(!k.starts_with(STAGING_DIR)))
            .try_collect()
            .await
            .map_err(|e| store_error(&self.name, "cannot list objects", e))?;
        out.sort();
        Ok(out)
    }

    /// Every staged upload, with its age.
    pub async fn staged(&self) -> Result<Vec<StagedLeftover>> {
        let now = SystemTime::now();
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&StorePath::from(STAGING_DIR)))
            .try_collect()
            .await
            .map_err(|e| store_error(&self.name, "cannot list staging", e))?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let name = m.location.filename().unwrap_or_default().to_string();
                let tag = name.split_once('.').map(|(t, _)| t.to_string()).filter(|t| !t.is_empty());
                let age = now.duration_since(SystemTime::from(m.last_modified)).unwrap_or_default();
                StagedLeftover { path: m.location.to_string(), tag, age }
            })
            .collect())
    }

    pub async fn remove_staged(&self, leftover: &StagedLeftover) -> Result<()> {
        self.remove(&StorePath::from(leftover.path.as_str())).await
    }

    /// Multipart temporaries of a local provider (`<key>#<n>` files, which listing hides): what
    /// a process killed during a large upload leaves. Each with the key it was for, and its age.
    pub fn multipart_leftovers(&self) -> Vec<(PathBuf, String, Duration)> {
        let Some(root) = &self.local_root else { return Vec::new() };
        let mut out = Vec::new();
        collect_partials(root, root, &mut out);
        out
    }

    /// Removes what an upload of `key` (chunk `tag`) that died may have left besides the object:
    /// its staging objects and multipart temporaries. Only for the holder of the chunk's claim.
    pub async fn remove_partials(&self, key: &ObjectKey, tag: &str) -> Result<usize> {
        let mut removed = 0;
        for staged in self.staged().await? {
            if staged.tag.as_deref() == Some(tag) {
                self.remove_staged(&staged).await?;
                removed += 1;
            }
        }
        let Some(root) = &self.local_root else { return Ok(removed) };
        let object = root.join(key.as_str());
        let (Some(dir), Some(name)) = (object.parent(), object.file_name().and_then(|n| n.to_str())) else {
            return Ok(removed);
        };
        // The object's own parts (`<name>#<n>`), and those of its staging objects (`<tag>.<uuid>#<n>`).
        let staging_prefix = format!("{tag}.");
        let targets: [(PathBuf, &BelongsTo); 2] = [
            (dir.to_path_buf(), &|base| base == name),
            (root.join(STAGING_DIR), &|base| base.starts_with(&staging_prefix)),
        ];
        for (dir, belongs) in targets {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                if part_of(&file).is_some_and(belongs) && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn remove(&self, path: &StorePath) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(&self.name, "cannot delete object", e)),
        }
    }
}

async fn write_all<S, E>(writer: &mut BufWriter, body: S, max_size: u64) -> Result<(u64, String)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| body_error(e.into(), size))?;
        size += piece.len() as u64;
        if size > max_size {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("upload is larger than the limit of {max_size} bytes"),
            ));
        }
        hash.update(&piece);
        writer.put(piece).await.map_err(|e| Error::unavailable("cannot write upload").with_source(e))?;
    }
    Ok((size, hex::encode(hash.finalize())))
}

/// An error from the body stream: an Osprey error (a check on the way) keeps its kind, anything
/// else (the client's connection) is bad input.
fn body_error(e: BoxError, size: u64) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => *e,
        Err(e) => Error::invalid(format!("upload body failed after {size} bytes")).with_source(e),
    }
}

fn store_error(provider: &str, what: &str, e: object_store::Error) -> Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => ErrorKind::Conflict,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("{what} in provider {provider:?}")).with_source(e)
}

fn collect_partials(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String, Duration)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            collect_partials(root, &path, out);
            continue;
        }
        let Ok(relative) = path.strip_prefix(root) else { continue };
        if let Some(key) = part_of(&relative.to_string_lossy()) {
            let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
            out.push((path.clone(), key.to_string(), age));
        }
    }
}

/// The object a local multipart temporary (`<object>#<n>`, as object_store names them) is for.
fn part_of(file: &str) -> Option<&str> {
    let (object, part) = file.rsplit_once('#')?;
    (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())).then_some(object)
}

/// Every configured provider, by name.
#[derive(Clone, Debug, Default)]
pub struct Providers(BTreeMap<String, Provider>);

impl Providers {
    /// Opens every provider of `[providers]`; local ones under `data_dir` unless they name a path,
    /// flushing each object to disk before it counts as stored when `fsync` is set.
    pub fn from_config(config: &BTreeMap<String, ProviderConfig>, data_dir: &Path, fsync: bool) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (name, p) in config {
            let provider = match p.kind {
                ProviderKind::Local => Provider::local(name, &p.local_path(name, data_dir), fsync)?,
                ProviderKind::Memory => Provider::memory(name),
                ProviderKind::S3 | ProviderKind::Gcs | ProviderKind::Azure => crate::cloud::build(name, p)?,
            };
            map.insert(name.clone(), provider);
        }
        Ok(Providers(map))
    }

    pub fn insert(&mut self, provider: Provider) {
        self.0.insert(provider.name().to_string(), provider);
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.0.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_provider_conforms() {
        crate::conformance::run(&Provider::memory("mem")).await;
    }

    #[tokio::test]
    async fn local_provider_conforms() {
        let dir = tempfile::tempdir().unwrap();
        crate::conformance::run(&Provider::local("disk", dir.path(), true).unwrap()).await;
        // Nothing but committed objects remains on disk: no staging or multipart leftovers.
        let mut files = Vec::new();
        collect_files(dir.path(), &mut files);
        assert!(files.iter().all(|f| !f.contains(STAGING_DIR) && !f.contains('#')), "{files:?}");
    }

    fn collect_files(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect_files(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
}

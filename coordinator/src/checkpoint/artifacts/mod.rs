//! Where checkpoint artifacts lie: a directory on this machine by default, or per region an
//! object store (a region-per-bucket layout keeps a region's artifacts in its own bucket),
//! all through the `object_store` crate so that publication, reads and the start-up
//! reconciliation have one code path whatever the backend.
//!
//! ```text
//! [artifacts]                                  (absent: the directory artifact_dir)
//! default = "file:///var/lib/fedra/artifacts"  regions not listed, and the coordinator's own state
//! [artifacts.regions]
//! eu = "s3://fedra-eu/checkpoints"             eu's copies: s3://fedra-eu/checkpoints/eu/<model>/<run>/round-NNNN/…
//! ```
//!
//! Durability: a `put` is atomic in every backend (S3 and the other object stores commit a
//! whole object or nothing; `LocalFileSystem` writes a staging file and renames it). A
//! directory's file and directory entry are then fsynced before the put returns, so that a
//! store record written afterwards never names a file a power cut could lose.

mod spec;

pub use spec::{OBJECT_SCHEMES, OPTION_PREFIXES, StoreOptions, StoreSpec};

use super::{ArtifactLocation, CheckpointError};
use crate::ids::RegionId;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetResultPayload, ObjectStore, PutOptions, PutPayload};
use spec::Target;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Objects larger than this go up in parts (S3 refuses single puts over 5 GiB).
const SINGLE_PUT_MAX_BYTES: usize = 1 << 30;
/// The size of each part of a multipart upload (S3 wants at least 5 MiB but the last).
const PART_BYTES: usize = 64 << 20;

/// The stores artifacts go to, opened.
#[derive(Debug)]
pub struct ArtifactStore {
    default: Opened,
    regions: BTreeMap<RegionId, Opened>,
    /// For locations outside every configured store (recorded before the configuration
    /// changed): files through a root-less `LocalFileSystem`, buckets opened on first use.
    fallback_files: Arc<dyn ObjectStore>,
    options: StoreOptions,
    buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// One opened store.
#[derive(Debug, Clone)]
pub(super) struct Opened {
    store: Arc<dyn ObjectStore>,
    naming: Naming,
}

#[derive(Debug, Clone, PartialEq)]
enum Naming {
    /// Keys are paths under this absolute directory, and so are locations.
    Dir(PathBuf),
    /// Keys start with `prefix`; locations are `<base>/<key>`.
    Url { base: String, prefix: Key },
}

impl Opened {
    fn open(spec: &StoreSpec) -> Result<Self, CheckpointError> {
        match &spec.0 {
            Target::Dir(root) => {
                std::fs::create_dir_all(root)
                    .map_err(|source| CheckpointError::Io { path: root.display().to_string(), source })?;
                let store = LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| CheckpointError::StoreUrl { url: root.display().to_string(), reason: e.to_string() })?
                    .with_automatic_cleanup(true);
                Ok(Self { store: Arc::new(store), naming: Naming::Dir(root.clone()) })
            }
            Target::Bucket { store, base, prefix } => Ok(Self {
                store: Arc::clone(store),
                naming: Naming::Url { base: base.clone(), prefix: prefix.clone() },
            }),
        }
    }

    /// The object at `parts` (relative to the store's root or prefix).
    pub(super) fn object(&self, parts: &[&str]) -> Object {
        match &self.naming {
            Naming::Dir(root) => {
                let path = parts.iter().fold(root.clone(), |p, part| p.join(part));
                Object {
                    store: Arc::clone(&self.store),
                    key: Key::from_iter(parts.iter().copied()),
                    location: ArtifactLocation::from(path.as_path()),
                    file: Some(path),
                }
            }
            Naming::Url { base, prefix } => {
                let key = parts.iter().fold(prefix.clone(), |k, part| k.join(*part));
                Object {
                    store: Arc::clone(&self.store),
                    location: ArtifactLocation::new(format!("{base}/{key}")),
                    key,
                    file: None,
                }
            }
        }
    }

    /// The directory of a directory store.
    pub(super) fn dir(&self) -> Option<&Path> {
        match &self.naming {
            Naming::Dir(root) => Some(root),
            Naming::Url { .. } => None,
        }
    }

    /// Every object under the store's root or prefix, as its parts relative to it. Objects
    /// being written (`LocalFileSystem`'s staging files) are not listed.
    ///
    /// # Errors
    /// The listing fails.
    pub(super) async fn list(&self) -> Result<Vec<Vec<String>>, CheckpointError> {
        let prefix = match &self.naming {
            Naming::Dir(_) => None,
            Naming::Url { prefix, .. } => Some(prefix.clone()).filter(|p| !p.as_ref().is_empty()),
        };
        let skip = prefix.as_ref().map_or(0, |p| p.parts().count());
        let metas: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await.map_err(|e| self.failed(e))?;
        Ok(metas.into_iter().map(|m| m.location.parts().skip(skip).map(|p| p.as_ref().to_string()).collect()).collect())
    }

    fn failed(&self, source: object_store::Error) -> CheckpointError {
        let at = match &self.naming {
            Naming::Dir(root) => root.display().to_string(),
            Naming::Url { base, prefix } => format!("{base}/{prefix}"),
        };
        CheckpointError::Store { location: at, source }
    }
}

impl ArtifactStore {
    /// Opens `default` and each region's store (creating directories).
    ///
    /// # Errors
    /// A directory cannot be created or opened.
    pub fn open(
        default: &StoreSpec,
        regions: &BTreeMap<RegionId, StoreSpec>,
        options: StoreOptions,
    ) -> Result<Self, CheckpointError> {
        let regions = regions
            .iter()
            .map(|(r, spec)| Ok((r.clone(), Opened::open(spec)?)))
            .collect::<Result<_, CheckpointError>>()?;
        Ok(Self {
            default: Opened::open(default)?,
            regions,
            fallback_files: Arc::new(LocalFileSystem::new()),
            options,
            buckets: Mutex::default(),
        })
    }

    /// Everything in the directory `root` (today's `artifact_dir` layout).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn dir(root: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        Self::open(&StoreSpec::dir(root), &BTreeMap::new(), StoreOptions::default())
    }

    /// The store a region's copies go to.
    pub(super) fn for_region(&self, region: &RegionId) -> &Opened {
        self.regions.get(region).unwrap_or(&self.default)
    }

    /// The store for regions without their own, and for the coordinator's own state.
    pub(super) fn default_store(&self) -> &Opened {
        &self.default
    }

    /// Each distinct store once (regions may share one).
    pub(super) fn distinct(&self) -> Vec<&Opened> {
        let mut out: Vec<&Opened> = vec![&self.default];
        for o in self.regions.values() {
            if !out.iter().any(|seen| seen.naming == o.naming) {
                out.push(o);
            }
        }
        out
    }

    /// The directory of the default store, when it is one (the sim's and tests' artifact
    /// directory).
    pub fn local_dir(&self) -> Option<&Path> {
        self.default.dir()
    }

    /// The object a recorded location names.
    ///
    /// # Errors
    /// [`CheckpointError::StoreUrl`]: a URL no configured store serves and that cannot be
    /// opened with the configured options.
    pub fn resolve(&self, location: &ArtifactLocation) -> Result<Object, CheckpointError> {
        let configured = std::iter::once(&self.default).chain(self.regions.values());
        if let Some(path) = location.file_path() {
            let path = std::path::absolute(&path).unwrap_or(path);
            for o in configured {
                if let Naming::Dir(root) = &o.naming
                    && let Ok(rest) = path.strip_prefix(root)
                {
                    let parts: Vec<&str> = rest.iter().filter_map(|c| c.to_str()).collect();
                    let mut obj = o.object(&parts);
                    obj.location = location.clone();
                    return Ok(obj);
                }
            }
            let key = Key::from_absolute_path(&path)
                .map_err(|e| CheckpointError::StoreUrl { url: location.to_string(), reason: e.to_string() })?;
            return Ok(Object {
                store: Arc::clone(&self.fallback_files),
                key,
                location: location.clone(),
                file: Some(path),
            });
        }
        let bad = |reason: String| CheckpointError::StoreUrl { url: location.to_string(), reason };
        let url = url::Url::parse(location.as_str()).map_err(|e| bad(e.to_string()))?;
        let key = Key::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?;
        let base = &spec::base_of(&url);
        for o in configured {
            if let Naming::Url { base: b, .. } = &o.naming
                && b == base
            {
                return Ok(Object { store: Arc::clone(&o.store), key, location: location.clone(), file: None });
            }
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = match buckets.get(base) {
            Some(s) => Arc::clone(s),
            None => {
                let StoreSpec(Target::Bucket { store, .. }) = StoreSpec::parse(base, &self.options)? else {
                    return Err(bad("names no bucket".into()));
                };
                buckets.insert(base.to_string(), Arc::clone(&store));
                store
            }
        };
        Ok(Object { store, key, location: location.clone(), file: None })
    }
}

impl ArtifactStore {
    /// The "directories" (common key prefixes) directly under the location `dir`, as
    /// locations (the rounds of a run's directory, for `fedra checkpoint verify`).
    ///
    /// # Errors
    /// The location cannot be resolved, or the listing fails.
    pub async fn list_dirs(&self, dir: &ArtifactLocation) -> Result<Vec<ArtifactLocation>, CheckpointError> {
        let object = self.resolve(dir)?;
        let listed = object.store.list_with_delimiter(Some(&object.key)).await.map_err(|e| object.failed(e))?;
        let mut out: Vec<_> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .map(|name| ArtifactLocation::new(format!("{}/{name}", dir.as_str().trim_end_matches('/'))))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// One artifact in a store: where it is, and what it is called in the records.
#[derive(Debug, Clone)]
pub struct Object {
    store: Arc<dyn ObjectStore>,
    key: Key,
    location: ArtifactLocation,
    /// The file, for a directory store (fsynced after writes).
    file: Option<PathBuf>,
}

impl Object {
    pub fn location(&self) -> &ArtifactLocation {
        &self.location
    }

    /// The artifact named `name` beside this one.
    pub fn sibling(&self, name: &str) -> Object {
        let key = match self.key.parent() {
            Some(parent) => parent.join(name),
            None => Key::from(name),
        };
        Object {
            store: Arc::clone(&self.store),
            key,
            location: self.location.with_file_name(name),
            file: self.file.as_ref().map(|f| f.with_file_name(name)),
        }
    }

    fn failed(&self, source: object_store::Error) -> CheckpointError {
        match source {
            object_store::Error::NotFound { .. } => CheckpointError::Missing { location: self.location.to_string() },
            source => CheckpointError::Store { location: self.location.to_string(), source },
        }
    }

    /// Writes `payload` (one buffer, or several written back to back) as the whole object,
    /// atomically; a file is durable when this returns.
    ///
    /// # Errors
    /// The store refuses the write, or the file cannot be synced.
    pub async fn put(&self, payload: impl Into<PutPayload>) -> Result<(), CheckpointError> {
        self.put_sized(payload.into(), SINGLE_PUT_MAX_BYTES, PART_BYTES).await
    }

    async fn put_sized(&self, payload: PutPayload, single_max: usize, part: usize) -> Result<(), CheckpointError> {
        if payload.content_length() <= single_max || self.file.is_some() {
            self.store.put_opts(&self.key, payload, PutOptions::default()).await.map_err(|e| self.failed(e))?;
        } else {
            // The object appears only when the upload completes: as atomic as a single put.
            let mut upload =
                self.store.put_multipart_opts(&self.key, Default::default()).await.map_err(|e| self.failed(e))?;
            let mut sent = Ok(());
            for chunk in parts(&payload, part) {
                sent = upload.put_part(chunk).await;
                if sent.is_err() {
                    break;
                }
            }
            let done = match sent {
                Ok(()) => upload.complete().await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                let _ = upload.abort().await;
                return Err(self.failed(e));
            }
        }
        if let Some(file) = self.file.clone() {
            tokio::task::spawn_blocking(move || sync_file_and_dir(&file))
                .await
                .map_err(|e| CheckpointError::Format(format!("syncing a written file: {e}")))??;
        }
        Ok(())
    }

    /// The whole object.
    ///
    /// # Errors
    /// [`CheckpointError::Missing`], or the store fails.
    pub async fn get(&self) -> Result<Bytes, CheckpointError> {
        let result = self.store.get_opts(&self.key, GetOptions::default()).await.map_err(|e| self.failed(e))?;
        result.bytes().await.map_err(|e| self.failed(e))
    }

    /// The whole object, or `None` when there is none.
    ///
    /// # Errors
    /// The store fails.
    pub async fn get_if_exists(&self) -> Result<Option<Bytes>, CheckpointError> {
        match self.get().await {
            Ok(b) => Ok(Some(b)),
            Err(CheckpointError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The object as a stream of chunks, read as they are consumed.
    ///
    /// # Errors
    /// [`CheckpointError::Missing`], or the store fails (then or mid-stream).
    pub async fn stream(&self) -> Result<BoxStream<'static, Result<Bytes, CheckpointError>>, CheckpointError> {
        let result = self.store.get_opts(&self.key, GetOptions::default()).await.map_err(|e| self.failed(e))?;
        let location = self.location.to_string();
        Ok(match result.payload {
            // `LocalFileSystem` would read 8 KiB per blocking task; a file is read in larger
            // pieces here (still bounded: one piece in flight).
            GetResultPayload::File(file, path) => file_stream(file, path),
            GetResultPayload::Stream(s) => {
                s.map_err(move |source| CheckpointError::Store { location: location.clone(), source }).boxed()
            }
        })
    }

    /// Removes the object (and, in a directory, directories it leaves empty).
    ///
    /// # Errors
    /// The store fails; an object already gone is not an error.
    pub async fn delete(&self) -> Result<(), CheckpointError> {
        let one = futures::stream::once(futures::future::ready(Ok(self.key.clone()))).boxed();
        let results: Vec<_> = self.store.delete_stream(one).collect().await;
        match results.into_iter().find_map(Result::err) {
            None | Some(object_store::Error::NotFound { .. }) => Ok(()),
            Some(e) => Err(self.failed(e)),
        }
    }
}

/// Bytes one blocking read of a file stream takes.
const FILE_PIECE_BYTES: u64 = 1 << 20;

/// `file` from its current position to its end, [`FILE_PIECE_BYTES`] per blocking read.
fn file_stream(file: std::fs::File, path: PathBuf) -> BoxStream<'static, Result<Bytes, CheckpointError>> {
    futures::stream::try_unfold(Some(file), move |file| {
        let path = path.clone();
        async move {
            let Some(mut file) = file else { return Ok(None) };
            let shown = path.clone();
            let read = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut piece = Vec::new();
                (&mut file).take(FILE_PIECE_BYTES).read_to_end(&mut piece).map(|_| (file, piece))
            })
            .await
            .map_err(|e| CheckpointError::Format(format!("reading {}: {e}", shown.display())))?;
            let (file, piece) =
                read.map_err(|source| CheckpointError::Io { path: path.display().to_string(), source })?;
            Ok((!piece.is_empty()).then(|| (Bytes::from(piece), Some(file))))
        }
    })
    .boxed()
}

/// Makes a renamed file durable: its data, then its directory entry.
fn sync_file_and_dir(path: &Path) -> Result<(), CheckpointError> {
    use super::io;
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
    }
    Ok(())
}

/// `payload` cut into parts of `part` bytes (the last one shorter), each made of views of
/// the payload's buffers: a part may span two buffers, so that only the last part is ever
/// below a store's minimum part size.
fn parts(payload: &PutPayload, part: usize) -> Vec<PutPayload> {
    let mut out = Vec::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut len = 0;
    for buffer in payload {
        let mut rest = buffer.clone();
        while !rest.is_empty() {
            let piece = rest.split_to((part - len).min(rest.len()));
            len += piece.len();
            current.push(piece);
            if len == part {
                out.push(current.drain(..).collect());
                len = 0;
            }
        }
    }
    if len > 0 {
        out.push(current.into_iter().collect());
    }
    out
}

#[cfg(test)]
mod tests;

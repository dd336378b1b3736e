//! The file system dav-server works on: its `LocalFs`, made safe for this server.
//!
//! - PUT is atomic: data goes to a temp file in the target's directory, is fsynced and renamed
//!   over the target only when the whole body arrived (`LocalFs` writes in place, so a reader or a
//!   crash would see a torn object). A failed or cut upload removes its temp file; a killed
//!   server's leftovers are removed at startup.
//! - PUT creates missing parent collections (nginx's `create_full_put_path`); COPY, MOVE and MKCOL
//!   keep WebDAV's 409 for a missing parent.
//! - Every path must resolve under the mount's directory, symlinks included.
//! - Temp files are invisible: left out of listings, and their names are refused by the router.

use std::fmt;
use std::fs::File;
use std::io::{self, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError, FsFuture, FsResult, FsStream,
    OpenOptions, ReadDirMeta,
};
use dav_server::localfs::LocalFs;
use futures_util::{FutureExt, StreamExt};

use super::atomic::{self, is_reserved_name};
use super::paths::resolves_under;

/// Upload data is gathered up to this size before a write to disk. The buffer grows with the
/// data, so an upload that trickles holds only what it sent.
const WRITE_CHUNK: usize = 256 * 1024;

#[derive(Clone)]
pub struct SafeFs {
    inner: Box<LocalFs>,
    base: Arc<PathBuf>,
}

impl SafeFs {
    /// `base` must be canonical (symlinks resolved), so that prefix checks are exact.
    pub fn new(base: PathBuf) -> SafeFs {
        SafeFs {
            inner: LocalFs::new(&base, true, false, false),
            base: Arc::new(base),
        }
    }

    fn fspath(&self, path: &DavPath) -> FsResult<PathBuf> {
        let rel = path.as_rel_ospath();
        if rel
            .components()
            .any(|c| is_reserved_name(c.as_os_str().as_encoded_bytes()))
        {
            return Err(FsError::NotFound);
        }
        Ok(self.base.join(rel))
    }

    /// The file system path of `path`, if it stays under the base once symlinks are followed.
    async fn checked(&self, path: &DavPath) -> FsResult<PathBuf> {
        let p = self.fspath(path)?;
        let base = self.base.clone();
        blocking(move || {
            if resolves_under(&p, &base) {
                Ok(p)
            } else {
                Err(FsError::Forbidden)
            }
        })
        .await
    }

    async fn open_for_upload(
        &self,
        path: &DavPath,
        options: OpenOptions,
    ) -> FsResult<Box<dyn DavFile>> {
        if options.append {
            // Partial writes cannot be atomic without copying the object; the router answers 501
            // to Content-Range PUTs before they get here, as nginx does.
            return Err(FsError::NotImplemented);
        }
        let target = self.checked(path).await?;
        if !options.truncate {
            // LOCK of an unmapped URL: it only creates an empty resource, and writes nothing.
            return blocking(move || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(FsError::from)?;
                Ok(Box::new(AtomicFile {
                    file: None,
                    temp: target.clone(),
                    target,
                    buf: Vec::new(),
                    written: 0,
                    expected: Some(0),
                    no_clobber: true,
                    committed: true,
                }) as Box<dyn DavFile>)
            })
            .await;
        }
        let base = self.base.clone();
        blocking(move || {
            match std::fs::metadata(&target) {
                Ok(m) if m.is_dir() => return Err(FsError::Forbidden),
                Ok(_) if options.create_new => return Err(FsError::Exists),
                Err(_) if !options.create => return Err(FsError::NotFound),
                _ => {}
            }
            if let Some(parent) = target.parent() {
                if !parent.is_dir() {
                    std::fs::create_dir_all(parent).map_err(FsError::from)?;
                    // Created folders are plain directories, but re-check in case a concurrent
                    // request raced a symlink into place.
                    if !resolves_under(parent, &base) {
                        return Err(FsError::Forbidden);
                    }
                }
            }
            let (file, temp) = atomic::create_temp_for(&target).map_err(FsError::from)?;
            Ok(Box::new(AtomicFile {
                file: Some(file),
                temp,
                target,
                buf: Vec::new(),
                written: 0,
                expected: options.size,
                no_clobber: options.create_new,
                committed: false,
            }) as Box<dyn DavFile>)
        })
        .await
    }

    async fn copy_file(&self, from: &DavPath, to: &DavPath) -> FsResult<()> {
        let src = self.checked(from).await?;
        let dst = self.checked(to).await?;
        blocking(move || {
            let mut input = File::open(&src)?;
            let (mut out, temp) = atomic::create_temp_for(&dst)?;
            let result = io::copy(&mut input, &mut out)
                .and_then(|_| atomic::commit(&out, &temp, &dst, false));
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result
        })
        .await
        .map_err(FsError::from)
    }
}

impl DavFileSystem for SafeFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write {
                return self.open_for_upload(path, options).await;
            }
            self.checked(path).await?;
            self.inner.open(path, options).await
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let dir = self.checked(path).await?;
            let base = self.base.clone();
            let entries = self.inner.read_dir(path, meta).await?;
            let visible = entries.filter(move |entry| {
                let keep = match entry {
                    Ok(e) => {
                        let name = e.name();
                        !is_reserved_name(&name) && {
                            let p = dir.join(
                                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                                    &name,
                                ),
                            );
                            // Links pointing out are left out: their metadata is not ours to show.
                            match std::fs::symlink_metadata(&p) {
                                Ok(m) if m.file_type().is_symlink() => resolves_under(&p, &base),
                                _ => true,
                            }
                        }
                    }
                    Err(_) => true,
                };
                futures_util::future::ready(keep)
            });
            Ok(Box::pin(visible) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            self.checked(path).await?;
            self.inner.metadata(path).await
        }
        .boxed()
    }

    fn symlink_metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            self.checked(path).await?;
            self.inner.symlink_metadata(path).await
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.checked(path).await?;
            self.inner.create_dir(path).await
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let p = self.checked(path).await?;
            // A directory holding only a stale temp file must still be removable.
            let _ = blocking(move || atomic::remove_leftovers(&p)).await;
            self.inner.remove_dir(path).await
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.checked(path).await?;
            self.inner.remove_file(path).await
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.checked(from).await?;
            self.checked(to).await?;
            self.inner.rename(from, to).await
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        self.copy_file(from, to).boxed()
    }

    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        self.inner.get_quota()
    }
}

/// Run blocking file system work without stalling the async workers.
pub async fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    // block_in_place keeps the data on this thread (no copy, no task hop); the server always
    // runs a multi-threaded runtime, but fall back in case a test drives it otherwise.
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        },
    }
}

/// An upload in progress: invisible until `flush` commits it.
struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    buf: Vec<u8>,
    written: u64,
    /// Content-Length of the request, when known: a shorter body is never committed.
    expected: Option<u64>,
    no_clobber: bool,
    committed: bool,
}

impl fmt::Debug for AtomicFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicFile")
            .field("target", &self.target)
            .field("written", &self.written)
            .finish()
    }
}

impl AtomicFile {
    async fn write_out(&mut self) -> FsResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut file = self.file.take().ok_or(FsError::GeneralFailure)?;
        let buf = std::mem::take(&mut self.buf);
        let (file, buf, result) = blocking(move || {
            let r = file.write_all(&buf);
            (file, buf, r)
        })
        .await;
        self.file = Some(file);
        self.written += buf.len() as u64;
        self.buf = buf;
        self.buf.clear();
        result.map_err(FsError::from)
    }

    async fn push(&mut self, data: &[u8]) -> FsResult<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_CHUNK {
            self.write_out().await?;
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl DavFile for AtomicFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let m = if self.committed {
                std::fs::metadata(&self.target)?
            } else {
                self.file
                    .as_ref()
                    .ok_or(FsError::GeneralFailure)?
                    .metadata()?
            };
            Ok(Box::new(FileMeta(m)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        async move {
            while buf.has_remaining() {
                let n = buf.chunk().len();
                let chunk = buf.chunk().to_vec();
                self.push(&chunk).await?;
                buf.advance(n);
            }
            Ok(())
        }
        .boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.push(&buf).await }.boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        futures_util::future::ready(Err(FsError::NotImplemented)).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let here = self.written + self.buf.len() as u64;
        let r = match pos {
            SeekFrom::Start(n) if n == here => Ok(here),
            SeekFrom::Current(0) => Ok(here),
            _ => Err(FsError::NotImplemented),
        };
        futures_util::future::ready(r).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            if self.committed {
                return Ok(());
            }
            self.write_out().await?;
            if self.expected.is_some_and(|n| n != self.written) {
                return Err(FsError::GeneralFailure);
            }
            let file = self.file.take().ok_or(FsError::GeneralFailure)?;
            let (temp, target, no_clobber) =
                (self.temp.clone(), self.target.clone(), self.no_clobber);
            blocking(move || atomic::commit(&file, &temp, &target, no_clobber))
                .await
                .map_err(FsError::from)?;
            self.committed = true;
            Ok(())
        }
        .boxed()
    }
}

/// Metadata of a local file, with the same ETag as dav-server's `LocalFs` (Apache's format), so
/// that the fast GET path, PUT responses and PROPFIND agree.
#[derive(Debug, Clone)]
pub struct FileMeta(pub std::fs::Metadata);

pub fn etag(m: &std::fs::Metadata) -> String {
    let t = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or(Duration::ZERO);
    let t = t.as_secs() * 1_000_000 + t.subsec_nanos() as u64 / 1000;
    if m.is_file() {
        format!("{:x}-{:x}-{:x}", m.ino(), m.len(), t)
    } else {
        format!("{:x}-{:x}", m.ino(), t)
    }
}

impl DavMetaData for FileMeta {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn modified(&self) -> FsResult<SystemTime> {
        self.0.modified().map_err(FsError::from)
    }
    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }
    fn is_file(&self) -> bool {
        self.0.is_file()
    }
    fn etag(&self) -> Option<String> {
        Some(etag(&self.0))
    }
    fn status_changed(&self) -> FsResult<SystemTime> {
        Ok(UNIX_EPOCH + Duration::new(self.0.ctime().max(0) as u64, 0))
    }
}

/// Read a whole small file (used by tests of this module).
#[cfg(test)]
fn read_all(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap()
    }

    fn put_opts(size: Option<u64>) -> OpenOptions {
        OpenOptions {
            read: false,
            write: true,
            append: false,
            truncate: true,
            create: true,
            create_new: false,
            size,
            checksum: None,
        }
    }

    #[test]
    fn upload_is_invisible_until_flush_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let fs = SafeFs::new(base.clone());
        rt().block_on(async {
            let path = DavPath::new("/a/b/c.bin").unwrap();
            let mut f = DavFileSystem::open(&fs, &path, put_opts(Some(6)))
                .await
                .unwrap();
            f.write_bytes(Bytes::from_static(b"abc")).await.unwrap();
            assert!(!base.join("a/b/c.bin").exists());
            f.write_bytes(Bytes::from_static(b"def")).await.unwrap();
            f.flush().await.unwrap();
            assert_eq!(read_all(&base.join("a/b/c.bin")), b"abcdef");
            assert_eq!(std::fs::read_dir(base.join("a/b")).unwrap().count(), 1);

            // A short body is never committed and its temp file goes away.
            let mut f = DavFileSystem::open(&fs, &path, put_opts(Some(10)))
                .await
                .unwrap();
            f.write_bytes(Bytes::from_static(b"xyz")).await.unwrap();
            assert!(f.flush().await.is_err());
            drop(f);
            assert_eq!(read_all(&base.join("a/b/c.bin")), b"abcdef");
            assert_eq!(std::fs::read_dir(base.join("a/b")).unwrap().count(), 1);
        });
    }

    #[test]
    fn symlink_out_of_base_is_forbidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let base = root.join("base");
        std::fs::create_dir(&base).unwrap();
        std::fs::write(root.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), base.join("link")).unwrap();
        std::os::unix::fs::symlink(&root, base.join("dirlink")).unwrap();
        let fs = SafeFs::new(base);
        rt().block_on(async {
            let link = DavPath::new("/link").unwrap();
            let e = DavFileSystem::open(
                &fs,
                &link,
                OpenOptions {
                    read: true,
                    write: false,
                    ..put_opts(None)
                },
            )
            .await
            .unwrap_err();
            assert_eq!(e, FsError::Forbidden);
            let into = DavPath::new("/dirlink/new").unwrap();
            let e = DavFileSystem::open(&fs, &into, put_opts(None))
                .await
                .unwrap_err();
            assert_eq!(e, FsError::Forbidden);
            assert!(!root.join("new").exists());
        });
    }
}

//! Request paths to file system paths, without ever leaving the served directory.
//!
//! Requests are refused (400) rather than normalised when they carry a dot segment or an encoded
//! separator: no honest client sends `..`, `%2e%2e` or `%2f`, and refusing them means the router
//! and dav-server can never disagree about which file a path names. Symbolic links are checked
//! after resolution (`/proc/self/fd` of the opened file, or the canonical form of the longest
//! existing ancestor), so a link pointing out of the directory is refused too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use super::atomic::is_reserved_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Dot segment, encoded `/` or `\`, NUL, bad UTF-8, not absolute.
    Invalid,
    /// A name the server keeps for itself (uploads in progress).
    Reserved,
}

/// The decoded, checked segments of a request path (query already removed). Empty segments
/// (`//`) are skipped, as nginx does.
pub fn segments(raw: &str) -> Result<Vec<String>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::Invalid);
    }
    let mut out = Vec::new();
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| PathError::Invalid)?;
        if decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '\0']) {
            return Err(PathError::Invalid);
        }
        if is_reserved_name(decoded.as_bytes()) {
            return Err(PathError::Reserved);
        }
        out.push(decoded.into_owned());
    }
    Ok(out)
}

/// `base` joined with checked segments (each is a plain name, so `join` cannot jump to `/`).
pub fn join(base: &Path, segs: &[String]) -> PathBuf {
    let mut p = base.to_path_buf();
    for s in segs {
        p.push(s);
    }
    p
}

/// Whether an opened file really lies under `base` (a canonical directory), symlinks resolved.
pub fn opened_under(file: &File, base: &Path) -> bool {
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    match std::fs::read_link(link) {
        Ok(real) => real.starts_with(base),
        Err(_) => false,
    }
}

/// Whether `path` (which may not exist yet) resolves under `base` (canonical): the longest
/// existing ancestor is canonicalised, so a symlink anywhere on the way is followed.
pub fn resolves_under(path: &Path, base: &Path) -> bool {
    let mut probe = path.to_path_buf();
    loop {
        match std::fs::canonicalize(&probe) {
            Ok(real) => return real.starts_with(base),
            Err(_) => {
                // A dangling symlink has no canonical form: refuse rather than guess where it goes.
                if std::fs::symlink_metadata(&probe).is_ok() {
                    return false;
                }
                if !probe.pop() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        assert_eq!(segments("/a/b").unwrap(), vec!["a", "b"]);
        assert_eq!(segments("/a//b/").unwrap(), vec!["a", "b"]);
        assert_eq!(segments("/a/x%20y").unwrap(), vec!["a", "x y"]);
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/%2E%2e",
            "/a/..%2fb",
            "/a/%2fetc%2fpasswd",
            "/a/%5c..",
            "/a/%00",
            "a/b",
            "/a/%ff",
        ] {
            assert_eq!(segments(bad), Err(PathError::Invalid), "{bad}");
        }
        assert_eq!(
            segments("/a/.ironic-cpi-upload.1.tmp"),
            Err(PathError::Reserved)
        );
    }

    #[test]
    fn symlinks_out_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap().join("base");
        std::fs::create_dir(&base).unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        std::fs::write(base.join("ok"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), base.join("out")).unwrap();
        std::os::unix::fs::symlink(dir.path(), base.join("outdir")).unwrap();
        std::os::unix::fs::symlink(base.join("ok"), base.join("in")).unwrap();
        assert!(opened_under(&File::open(base.join("ok")).unwrap(), &base));
        assert!(opened_under(&File::open(base.join("in")).unwrap(), &base));
        assert!(!opened_under(&File::open(base.join("out")).unwrap(), &base));
        assert!(resolves_under(&base.join("new/file"), &base));
        assert!(!resolves_under(&base.join("outdir/new"), &base));
        assert!(!resolves_under(&base.join("out"), &base));
    }
}

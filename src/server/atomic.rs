//! Atomic replacement of files: write a temp file in the same directory, fsync, rename.
//!
//! Readers see the old object or the new one, never a part. Temp files carry a reserved name
//! prefix: the WebDAV layer hides and refuses such names, and `remove_leftovers` deletes the ones a
//! killed server left behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Names starting with this are the server's own (uploads in progress); clients never see them.
pub const TEMP_PREFIX: &str = ".ironic-cpi-";

pub fn is_reserved_name(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes())
}

/// A new, exclusive temp file next to `target`.
pub fn create_temp_for(target: &Path) -> io::Result<(File, PathBuf)> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    loop {
        let name = format!(
            "{TEMP_PREFIX}upload.{}.{:016x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Make a finished temp file visible under `target`: fsync the data, rename, fsync the directory
/// so that the rename survives a crash. With `no_clobber` an existing target is an error
/// (`AlreadyExists`) instead of being replaced.
pub fn commit(file: &File, temp: &Path, target: &Path, no_clobber: bool) -> io::Result<()> {
    file.sync_all()?;
    if no_clobber {
        // link() fails if the target exists, which rename() would silently replace.
        std::fs::hard_link(temp, target)?;
        let _ = std::fs::remove_file(temp);
    } else {
        std::fs::rename(temp, target)?;
    }
    sync_dir(target)
}

fn sync_dir(target: &Path) -> io::Result<()> {
    match target.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Write `bytes` to `target` atomically (the registry's documents).
pub fn write_file(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let (mut file, temp) = create_temp_for(target)?;
    let result = file
        .write_all(bytes)
        .and_then(|_| commit(&file, &temp, target, false));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Delete temp files left by a server that was killed mid-upload. Returns how many went.
pub fn remove_leftovers(root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let reserved = is_reserved_name(entry.file_name().as_encoded_bytes());
            if kind.is_dir() {
                stack.push(entry.path());
            } else if reserved && kind.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        write_file(&target, b"one").unwrap();
        write_file(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);

        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (_f, temp) = create_temp_for(&dir.path().join("sub/x")).unwrap();
        assert!(temp.exists());
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 1);
        assert!(!temp.exists());
        assert!(target.exists());
    }

    #[test]
    fn no_clobber_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a");
        std::fs::write(&target, b"old").unwrap();
        let (mut f, temp) = create_temp_for(&target).unwrap();
        f.write_all(b"new").unwrap();
        let e = commit(&f, &temp, &target, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
    }
}

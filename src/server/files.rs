//! The fast GET/HEAD path for files, in front of dav-server, and the small-file cache.
//!
//! Plain GETs (no conditional headers, at most one range) of regular files are answered here:
//! small files from memory, large ones streamed from disk in bounded chunks. Anything else (a
//! directory, a conditional or multi-range request, a missing file) falls through to dav-server,
//! which answers it by the book.
//!
//! The cache is keyed by path and validated on every request by a stat (device, inode, size,
//! mtime, ctime): uploads replace files by rename, so a new version always has a new inode.
//! Writes through this server also drop entries explicitly.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::{Budget, FileStream, ResponseBody};
use super::davfs::etag;
use super::paths::opened_under;

/// What a cached entry holds: the file itself, or a registry answer built from it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    Raw,
    Registry,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Clone)]
pub struct Entry {
    pub stamp: Stamp,
    pub data: Bytes,
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
}

impl Entry {
    pub fn new(m: &std::fs::Metadata, data: Bytes) -> Entry {
        Entry {
            stamp: Stamp::of(m),
            data,
            etag: header_value(&format!("\"{}\"", etag(m))),
            last_modified: header_value(&http_date(m.modified().unwrap_or(UNIX_EPOCH))),
        }
    }
}

/// Entries by (path, kind), and the bytes they hold together.
type Entries = (HashMap<(PathBuf, Kind), Entry>, u64);

pub struct Cache {
    map: RwLock<Entries>,
    pub max_file: u64,
    max_total: u64,
}

impl Cache {
    pub fn new(max_file: u64, max_total: u64) -> Cache {
        Cache {
            map: RwLock::new((HashMap::new(), 0)),
            max_file,
            max_total,
        }
    }

    pub fn get(&self, path: &Path, kind: Kind, stamp: Stamp) -> Option<Entry> {
        let g = self.map.read().ok()?;
        // A tuple key needs an owned PathBuf for lookup; the borrow-free probe costs one
        // allocation, which is far below the syscalls it saves.
        let e = g.0.get(&(path.to_path_buf(), kind))?;
        (e.stamp == stamp).then(|| e.clone())
    }

    pub fn insert(&self, path: &Path, kind: Kind, entry: Entry) {
        let size = entry.data.len() as u64;
        if self.max_file == 0 || size > self.max_file {
            return;
        }
        if let Ok(mut g) = self.map.write() {
            let (map, total) = &mut *g;
            if *total + size > self.max_total {
                // Simple and bounded: start over rather than track recency.
                map.clear();
                *total = 0;
            }
            if let Some(old) = map.insert((path.to_path_buf(), kind), entry) {
                *total -= old.data.len() as u64;
            }
            *total += size;
        }
    }

    /// Forget everything at or below `dir` (after a write through WebDAV).
    pub fn invalidate_under(&self, dir: &Path) {
        if let Ok(mut g) = self.map.write() {
            let (map, total) = &mut *g;
            map.retain(|(p, _), e| {
                let keep = !p.starts_with(dir);
                if !keep {
                    *total -= e.data.len() as u64;
                }
                keep
            });
        }
    }

    pub fn invalidate(&self, path: &Path) {
        if let Ok(mut g) = self.map.write() {
            let (map, total) = &mut *g;
            for kind in [Kind::Raw, Kind::Registry] {
                if let Some(e) = map.remove(&(path.to_path_buf(), kind)) {
                    *total -= e.data.len() as u64;
                }
            }
        }
    }
}

/// Read a whole small file, refusing one that resolves outside `base`. Returns its metadata (of
/// the opened file, so it matches the bytes) and content.
pub fn read_small(path: &Path, base: &Path) -> std::io::Result<(std::fs::Metadata, Vec<u8>)> {
    let mut f = File::open(path)?;
    if !opened_under(&f, base) {
        return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    }
    let m = f.metadata()?;
    let mut data = Vec::with_capacity(m.len() as usize);
    f.read_to_end(&mut data)?;
    Ok((m, data))
}

#[derive(Debug, PartialEq, Eq)]
enum RangeReq {
    Whole,
    Part {
        start: u64,
        len: u64,
    },
    Unsatisfiable,
    /// Several ranges: left to dav-server (multipart answers).
    Multi,
}

fn parse_range(h: Option<&HeaderValue>, size: u64) -> RangeReq {
    let Some(v) = h.and_then(|v| v.to_str().ok()) else {
        return RangeReq::Whole;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        // Unknown units are ignored (RFC 9110 14.2).
        return RangeReq::Whole;
    };
    if spec.contains(',') {
        return RangeReq::Multi;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) => return RangeReq::Unsatisfiable,
            Ok(n) => {
                let n = n.min(size);
                Some((size - n, size.saturating_sub(1)))
            }
            Err(_) => None,
        }
    } else {
        match (a.parse::<u64>(), b) {
            (Ok(s), "") => Some((s, size.saturating_sub(1))),
            (Ok(s), e) => match e.parse::<u64>() {
                Ok(e) if e >= s => Some((s, e.min(size.saturating_sub(1)))),
                _ => None,
            },
            _ => None,
        }
    };
    match parsed {
        None => RangeReq::Whole,
        Some((s, _)) if s >= size => RangeReq::Unsatisfiable,
        Some((s, e)) => RangeReq::Part {
            start: s,
            len: e - s + 1,
        },
    }
}

const CONDITIONAL: [&str; 6] = [
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "if",
];

/// Answer a plain GET/HEAD of a regular file, or `None` to let dav-server do it.
pub fn serve(
    headers: &HeaderMap,
    head: bool,
    path: &Path,
    base: &Path,
    cache: &Cache,
    budget: &Budget,
) -> Option<Response<ResponseBody>> {
    if CONDITIONAL.iter().any(|h| headers.contains_key(*h)) {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let range = parse_range(headers.get(header::RANGE), meta.len());
    if range == RangeReq::Multi {
        return None;
    }
    let ctype = content_type(path);
    if meta.len() <= cache.max_file {
        let entry = match cache.get(path, Kind::Raw, Stamp::of(&meta)) {
            Some(e) => e,
            None => {
                let (m, data) = match read_small(path, base) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        return Some(status_only(StatusCode::FORBIDDEN))
                    }
                    Err(_) => return None,
                };
                let e = Entry::new(&m, Bytes::from(data));
                cache.insert(path, Kind::Raw, e.clone());
                e
            }
        };
        let size = entry.data.len() as u64;
        let range = parse_range(headers.get(header::RANGE), size);
        let (status, body, crange) = match range {
            RangeReq::Part { start, len } => (
                StatusCode::PARTIAL_CONTENT,
                entry.data.slice(start as usize..(start + len) as usize),
                Some(format!("bytes {start}-{}/{size}", start + len - 1)),
            ),
            RangeReq::Unsatisfiable => return Some(unsatisfiable(size)),
            _ => (StatusCode::OK, entry.data.clone(), None),
        };
        let len = body.len() as u64;
        let body = if head {
            ResponseBody::empty()
        } else {
            ResponseBody::full(body)
        };
        return Some(file_response(
            status,
            body,
            len,
            ctype,
            entry.etag,
            entry.last_modified,
            crange,
        ));
    }
    let file = File::open(path).ok()?;
    if !opened_under(&file, base) {
        return Some(status_only(StatusCode::FORBIDDEN));
    }
    let m = file.metadata().ok()?;
    let size = m.len();
    let (status, start, len, crange) = match parse_range(headers.get(header::RANGE), size) {
        RangeReq::Part { start, len } => (
            StatusCode::PARTIAL_CONTENT,
            start,
            len,
            Some(format!("bytes {start}-{}/{size}", start + len - 1)),
        ),
        RangeReq::Unsatisfiable => return Some(unsatisfiable(size)),
        _ => (StatusCode::OK, 0, size, None),
    };
    let body = if head {
        ResponseBody::empty()
    } else {
        ResponseBody::file(FileStream::new(file, start, len, budget.clone()))
    };
    let etag = header_value(&format!("\"{}\"", etag(&m)));
    let lm = header_value(&http_date(m.modified().unwrap_or(UNIX_EPOCH)));
    Some(file_response(status, body, len, ctype, etag, lm, crange))
}

fn file_response(
    status: StatusCode,
    body: ResponseBody,
    len: u64,
    ctype: &'static str,
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_range: Option<String>,
) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag);
    h.insert(header::LAST_MODIFIED, last_modified);
    if let Some(cr) = content_range {
        h.insert(header::CONTENT_RANGE, header_value(&cr));
    }
    r
}

fn unsatisfiable(size: u64) -> Response<ResponseBody> {
    let mut r = status_only(StatusCode::RANGE_NOT_SATISFIABLE);
    r.headers_mut().insert(
        header::CONTENT_RANGE,
        header_value(&format!("bytes */{size}")),
    );
    r
}

fn status_only(status: StatusCode) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = status;
    r
}

pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => "application/json",
        Some("txt") => "text/plain",
        Some("html") | Some("htm") => "text/html",
        Some("xml") => "text/xml",
        Some("iso") => "application/x-iso9660-image",
        Some("gz") | Some("tgz") => "application/gzip",
        Some("tar") => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// IMF-fixdate (RFC 9110 5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[(days.rem_euclid(7)) as usize],
        day,
        MON[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(http_date(t), "Thu, 29 Feb 2024 12:34:56 GMT");
    }

    #[test]
    fn ranges() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range(None, 10), RangeReq::Whole);
        assert_eq!(
            parse_range(Some(&h("bytes=0-3")), 10),
            RangeReq::Part { start: 0, len: 4 }
        );
        assert_eq!(
            parse_range(Some(&h("bytes=5-")), 10),
            RangeReq::Part { start: 5, len: 5 }
        );
        assert_eq!(
            parse_range(Some(&h("bytes=-3")), 10),
            RangeReq::Part { start: 7, len: 3 }
        );
        assert_eq!(
            parse_range(Some(&h("bytes=8-100")), 10),
            RangeReq::Part { start: 8, len: 2 }
        );
        assert_eq!(
            parse_range(Some(&h("bytes=10-")), 10),
            RangeReq::Unsatisfiable
        );
        assert_eq!(parse_range(Some(&h("bytes=0-1,4-5")), 10), RangeReq::Multi);
        assert_eq!(parse_range(Some(&h("bytes=5-2")), 10), RangeReq::Whole);
        assert_eq!(parse_range(Some(&h("items=1-2")), 10), RangeReq::Whole);
    }

    #[test]
    fn cache_is_bounded_and_invalidated() {
        let c = Cache::new(10, 15);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"12345678").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        c.insert(
            &p,
            Kind::Raw,
            Entry::new(&m, Bytes::from_static(b"12345678")),
        );
        assert!(c.get(&p, Kind::Raw, Stamp::of(&m)).is_some());
        assert!(c.get(&p, Kind::Registry, Stamp::of(&m)).is_none());
        let q = dir.path().join("b");
        c.insert(
            &q,
            Kind::Raw,
            Entry::new(&m, Bytes::from_static(b"12345678")),
        );
        // Over the total: the first one went.
        assert!(c.get(&p, Kind::Raw, Stamp::of(&m)).is_none());
        assert!(c.get(&q, Kind::Raw, Stamp::of(&m)).is_some());
        c.invalidate_under(dir.path());
        assert!(c.get(&q, Kind::Raw, Stamp::of(&m)).is_none());
    }
}

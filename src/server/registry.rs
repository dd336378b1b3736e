//! The BOSH registry API: `<prefix>/instances/<id>/settings`, GET, PUT and DELETE.
//!
//! Documents are files `<dir>/<id>.json` holding the PUT body verbatim, replaced atomically, so
//! they can also be served or edited through a WebDAV mount of the same directory.
//!
//! Each VM reads only its own settings: the CPI's PUT carries, in `X-Agent-Password-SHA256`, the
//! SHA-256 of a secret that only that VM's config drive holds, kept beside the document as
//! `<id>.agent-sha256`; the agent sends it as the password of user `<id>` (credentials in the
//! registry URL of its user data). A PUT without the header keeps the digest (the CPI's
//! read-modify-write of persistent disks); DELETE removes both.
//!
//! Deliberate difference from the Ruby registry (Sinatra): a GET of an unknown instance answers
//! 404 `{"status":"not_found"}` instead of falling into the generic 500 handler. The agent retries
//! only on transport errors and 502/503/504, so both end its attempts; 404 tells the operator what
//! happened, and lets the CPI's client tell "absent" from "broken".

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use super::atomic;
use super::body::{collect, BodyError, Limited, ResponseBody};
use super::davfs::blocking;
use super::files::{read_small, Cache, Entry, Kind, Stamp};

pub const OK: &[u8] = br#"{"status":"ok"}"#;
pub const NOT_FOUND: &[u8] = br#"{"status":"not_found"}"#;
pub const ACCESS_DENIED: &[u8] = br#"{"status":"access_denied"}"#;
pub const BAD_REQUEST: &[u8] = br#"{"status":"bad_request"}"#;
pub const TOO_LARGE: &[u8] = br#"{"status":"too_large"}"#;
pub const ERROR: &[u8] = br#"{"status":"error"}"#;
pub const BUSY: &[u8] = br#"{"status":"busy"}"#;

/// The header of the CPI's PUT that names the digest of the VM's own read secret.
pub const READER_HEADER: &str = "x-agent-password-sha256";
/// Suffix of the file beside `<id>.json` that holds that digest (hex).
const READER_SUFFIX: &str = ".agent-sha256";

/// The reader digest a PUT carries: `Ok(None)` without the header, `Err` when it is not 64 hex
/// digits.
pub fn reader_digest(h: &HeaderMap) -> Result<Option<[u8; 32]>, ()> {
    let Some(v) = h.get(READER_HEADER) else {
        return Ok(None);
    };
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.as_bytes(), &mut out).map_err(|_| ())?;
    Ok(Some(out))
}

pub struct Registry {
    /// Canonical directory of the documents.
    pub dir: PathBuf,
    pub anonymous_read: bool,
    pub max_bytes: u64,
}

/// Where a path below the registry prefix leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Settings(&'a str),
    BadId,
    NotFound,
}

pub fn route(rest: &[String]) -> Route<'_> {
    match rest {
        [instances, id, settings] if instances == "instances" && settings == "settings" => {
            if valid_id(id) {
                Route::Settings(id)
            } else {
                Route::BadId
            }
        }
        _ => Route::NotFound,
    }
}

/// Instance ids are names the director or the CPI made (UUIDs, `vm-<uuid>`, node names): letters,
/// digits, `-`, `_`, `.`, not starting with a dot. Anything else cannot name a file safely.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub fn json(status: StatusCode, body: &'static [u8]) -> Response<ResponseBody> {
    json_bytes(status, Bytes::from_static(body))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl Registry {
    fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn reader_file(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}{READER_SUFFIX}"))
    }

    /// Whether `password` is the read secret of instance `id` (blocking: reads a small file).
    pub fn agent_may_read(dir: &Path, id: &str, password: &str) -> bool {
        let Ok((_, stored)) = read_small(&Self::reader_file(dir, id), dir) else {
            return false;
        };
        let mut want = [0u8; 32];
        if hex::decode_to_slice(stored.trim_ascii(), &mut want).is_err() {
            return false;
        }
        let got: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        // Constant time, so the digest cannot be found byte by byte.
        got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// GET: the stored document wrapped as `{"status":"ok","settings":"<document>"}`.
    pub fn get(&self, id: &str, cache: &Cache) -> Response<ResponseBody> {
        let path = self.file(id);
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return json(StatusCode::NOT_FOUND, NOT_FOUND),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return json(StatusCode::NOT_FOUND, NOT_FOUND)
            }
            Err(e) => {
                log::error!("registry: cannot stat {}: {e}", path.display());
                return json(StatusCode::INTERNAL_SERVER_ERROR, ERROR);
            }
        };
        if let Some(e) = cache.get(&path, Kind::Registry, Stamp::of(&meta)) {
            return json_bytes(StatusCode::OK, e.data);
        }
        match self.load(&path) {
            Ok(Some((m, body))) => {
                cache.insert(&path, Kind::Registry, Entry::new(&m, body.clone()));
                json_bytes(StatusCode::OK, body)
            }
            Ok(None) => json(StatusCode::NOT_FOUND, NOT_FOUND),
            Err(why) => {
                log::error!("registry: {why}");
                json(StatusCode::INTERNAL_SERVER_ERROR, ERROR)
            }
        }
    }

    fn load(&self, path: &Path) -> Result<Option<(std::fs::Metadata, Bytes)>, String> {
        let (m, data) = match read_small(path, &self.dir) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let text =
            String::from_utf8(data).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        let quoted = serde_json::to_string(&text).map_err(|e| e.to_string())?;
        let mut body = BytesMut::with_capacity(quoted.len() + 32);
        body.extend_from_slice(br#"{"status":"ok","settings":"#);
        body.extend_from_slice(quoted.as_bytes());
        body.extend_from_slice(b"}");
        Ok(Some((m, body.freeze())))
    }

    /// PUT: store the body verbatim (it must be UTF-8: it is served back as a JSON string).
    pub async fn put(
        &self,
        id: &str,
        content_length: Option<u64>,
        body: Limited,
        reader: Option<[u8; 32]>,
        cache: &Cache,
    ) -> Response<ResponseBody> {
        if content_length.is_some_and(|n| n > self.max_bytes) {
            return json(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE);
        }
        let data = match collect(body).await {
            Ok(d) => d,
            Err(BodyError::TooLarge(_)) => return json(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE),
            Err(e) => {
                log::warn!("registry PUT {id}: {e}");
                return json(StatusCode::BAD_REQUEST, BAD_REQUEST);
            }
        };
        if std::str::from_utf8(&data).is_err() {
            return json(StatusCode::BAD_REQUEST, BAD_REQUEST);
        }
        let path = self.file(id);
        let target = path.clone();
        let reader_file = Self::reader_file(&self.dir, id);
        // The digest first: the document is never readable by a VM with a stale secret.
        let result = blocking(move || {
            if let Some(d) = reader {
                atomic::write_file(&reader_file, hex::encode(d).as_bytes())?;
            }
            atomic::write_file(&target, &data)
        })
        .await;
        cache.invalidate(&path);
        match result {
            Ok(()) => json(StatusCode::OK, OK),
            Err(e) => {
                log::error!("registry: cannot write {}: {e}", path.display());
                json(StatusCode::INTERNAL_SERVER_ERROR, ERROR)
            }
        }
    }

    /// DELETE: a missing instance is not an error (as in the Ruby registry).
    pub async fn delete(&self, id: &str, cache: &Cache) -> Response<ResponseBody> {
        let path = self.file(id);
        let target = path.clone();
        let reader_file = Self::reader_file(&self.dir, id);
        let result = blocking(move || {
            let r = std::fs::remove_file(&target);
            match std::fs::remove_file(&reader_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => r,
            }
        })
        .await;
        cache.invalidate(&path);
        match result {
            Ok(()) => json(StatusCode::OK, OK),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json(StatusCode::OK, OK),
            Err(e) => {
                log::error!("registry: cannot delete {}: {e}", path.display());
                json(StatusCode::INTERNAL_SERVER_ERROR, ERROR)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_ids() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            route(&s(&["instances", "vm-1", "settings"])),
            Route::Settings("vm-1")
        );
        assert_eq!(route(&s(&["instances", ".x", "settings"])), Route::BadId);
        assert_eq!(route(&s(&["instances", "a b", "settings"])), Route::BadId);
        assert_eq!(route(&s(&["instances", "vm-1"])), Route::NotFound);
        assert_eq!(route(&s(&["other"])), Route::NotFound);
        assert!(valid_id("2f0e3c1a-aaaa-bbbb-cccc-0123456789ab"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
    }
}

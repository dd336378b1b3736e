//! HTTP basic authentication against the configured read and write users.
//!
//! bcrypt is slow on purpose (tens of milliseconds), so a verified `Authorization` value is
//! remembered by its SHA-256 digest: the plain credentials are never kept, and a wrong password is
//! always checked again (caching failures would let anyone fill the memory).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::config::{Role, UserConfig};
use ironic_cpi_common::Secret;

/// Remembered successes; cleared when full rather than tracking age.
const CACHE_MAX: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: Arc<str>,
    pub role: Role,
}

enum Check {
    Bcrypt(Secret),
    /// SHA-256 of the plain password, compared in constant time.
    Plain([u8; 32]),
}

struct User {
    name: Arc<str>,
    role: Role,
    check: Check,
}

pub struct Authenticator {
    users: HashMap<String, User>,
    verified: RwLock<HashMap<[u8; 32], Principal>>,
}

/// The outcome of looking at a request's `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No `Authorization` header.
    Anonymous,
    Valid(Principal),
    /// Malformed header, unknown user or wrong password.
    Invalid,
}

impl Authenticator {
    pub fn new(users: &[UserConfig]) -> Authenticator {
        let users = users
            .iter()
            .map(|u| {
                let check = match (&u.password_bcrypt, &u.password) {
                    (Some(hash), _) => Check::Bcrypt(hash.clone()),
                    (None, Some(plain)) => Check::Plain(sha256(plain.expose().as_bytes())),
                    // validate() refuses users without a password; such a user can never log in.
                    (None, None) => Check::Bcrypt(Secret::new("")),
                };
                let user = User {
                    name: Arc::from(u.username.as_str()),
                    role: u.role,
                    check,
                };
                (u.username.clone(), user)
            })
            .collect();
        Authenticator {
            users,
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// Fast answer from the cache, without bcrypt: `None` means `verify` must run.
    pub fn cached(&self, header: Option<&[u8]>) -> Option<Outcome> {
        let Some(header) = header else {
            return Some(Outcome::Anonymous);
        };
        let key = sha256(header);
        let hit = self.verified.read().ok()?.get(&key).cloned();
        hit.map(Outcome::Valid)
    }

    /// Full check (may run bcrypt: call it off the async workers).
    pub fn verify(&self, header: &[u8]) -> Outcome {
        let Some((user, password)) = parse_basic(header) else {
            return Outcome::Invalid;
        };
        let Some(u) = self.users.get(&user) else {
            // Spend the same time as for a known user, so names cannot be probed by timing.
            let _ = bcrypt::verify(&password, DUMMY_HASH);
            return Outcome::Invalid;
        };
        let ok = match &u.check {
            Check::Bcrypt(hash) => bcrypt::verify(&password, hash.expose()).unwrap_or(false),
            Check::Plain(digest) => constant_time_eq(&sha256(password.as_bytes()), digest),
        };
        if !ok {
            return Outcome::Invalid;
        }
        let principal = Principal {
            name: u.name.clone(),
            role: u.role,
        };
        if let Ok(mut cache) = self.verified.write() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(sha256(header), principal.clone());
        }
        Outcome::Valid(principal)
    }
}

/// A valid bcrypt hash (of a random string) for timing equalisation.
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pw: &str) -> Vec<u8> {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        format!("Basic {enc}").into_bytes()
    }

    #[test]
    fn plain_and_bcrypt_users() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = vec![
            UserConfig {
                username: "r".into(),
                role: Role::Read,
                password_bcrypt: None,
                password: Some(Secret::new("rpw")),
            },
            UserConfig {
                username: "w".into(),
                role: Role::Write,
                password_bcrypt: Some(Secret::new(hash)),
                password: None,
            },
        ];
        let a = Authenticator::new(&users);
        assert_eq!(a.cached(None), Some(Outcome::Anonymous));
        let h = header("w", "s3cret");
        assert_eq!(a.cached(Some(&h)), None);
        let Outcome::Valid(p) = a.verify(&h) else {
            panic!("bcrypt user refused")
        };
        assert_eq!((&*p.name, p.role), ("w", Role::Write));
        assert_eq!(a.cached(Some(&h)), Some(Outcome::Valid(p)));
        assert!(matches!(a.verify(&header("r", "rpw")), Outcome::Valid(p) if p.role == Role::Read));
        assert_eq!(a.verify(&header("r", "wrong")), Outcome::Invalid);
        assert_eq!(a.verify(&header("w", "wrong")), Outcome::Invalid);
        assert_eq!(a.verify(&header("nobody", "x")), Outcome::Invalid);
        assert_eq!(a.verify(b"Bearer abc"), Outcome::Invalid);
        assert_eq!(a.verify(b"Basic !!!"), Outcome::Invalid);
        assert_eq!(a.cached(Some(&header("r", "wrong"))), None);
    }
}

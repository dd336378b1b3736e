//! WebDAV locks that cannot hold the server's users hostage.
//!
//! dav-server's `MemLs` keeps a lock for as long as the client asked (`Timeout: Infinite`
//! included) and lets it block every writer. Here each user has a lock table of its own: a lock
//! guards a resource against that user's other clients (two editors of one operator, litmus), but
//! never blocks another user, so no user can stop the CPI's writes. And no lock lives longer than
//! `max_lock_seconds`, whatever the client asks: expired locks are dropped before every
//! operation. Locks are served only on mounts that enable them. The root collection of a mount
//! cannot be locked (423): such a lock would cover everything, and `MemLs` cannot unlock it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use dav_server::memls::MemLs;
use futures_util::FutureExt;
use xmltree::Element;

type Owner = Option<String>;

#[derive(Debug, Default)]
struct Tables {
    by_user: HashMap<Owner, Box<MemLs>>,
    /// (user, path, token) of every lock, by the instant it expires.
    expiry: Vec<(Instant, Owner, DavPath, String)>,
}

#[derive(Debug, Clone)]
pub struct BoundedLs {
    max: Duration,
    tables: Arc<Mutex<Tables>>,
}

impl BoundedLs {
    pub fn new(max: Duration) -> Box<BoundedLs> {
        Box::new(BoundedLs {
            max,
            tables: Arc::new(Mutex::new(Tables::default())),
        })
    }

    fn cap(&self, asked: Option<Duration>) -> Duration {
        asked.map_or(self.max, |t| t.min(self.max))
    }

    /// Every user's table, after dropping expired locks. (`MemLs` answers at once: its futures
    /// are ready when made, so awaiting them under the mutex never blocks.)
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (expired, live): (Vec<_>, Vec<_>) = t.expiry.drain(..).partition(|(at, ..)| *at <= now);
        t.expiry = live;
        for (_, owner, path, token) in expired {
            if let Some(ls) = t.by_user.get(&owner) {
                let _ = ls.unlock(&path, &token).now_or_never();
            }
        }
        t
    }
}

impl DavLockSystem for BoundedLs {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let timeout = self.cap(timeout);
        let (path, principal, owner) =
            (path.clone(), principal.map(str::to_string), owner.cloned());
        async move {
            // MemLs keeps a root lock on its tree's root node, and unlocking it panics.
            if path.as_bytes().iter().all(|&b| b == b'/') {
                return Err(placeholder(&path));
            }
            let mut t = self.tables();
            let ls = t
                .by_user
                .entry(principal.clone())
                .or_insert_with(MemLs::new)
                .clone();
            let made = ls
                .lock(
                    &path,
                    principal.as_deref(),
                    owner.as_ref(),
                    Some(timeout),
                    shared,
                    deep,
                )
                .now_or_never()
                .unwrap_or_else(|| Err(placeholder(&path)));
            if let Ok(lock) = &made {
                t.expiry.push((
                    Instant::now() + timeout,
                    principal,
                    path,
                    lock.token.clone(),
                ));
            }
            made
        }
        .boxed()
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let (path, token) = (path.clone(), token.to_string());
        async move {
            let mut t = self.tables();
            let gone = t
                .by_user
                .values()
                .any(|ls| matches!(ls.unlock(&path, &token).now_or_never(), Some(Ok(()))));
            t.expiry.retain(|(.., tok)| *tok != token);
            if gone {
                Ok(())
            } else {
                Err(())
            }
        }
        .boxed()
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let timeout = self.cap(timeout);
        let (path, token) = (path.clone(), token.to_string());
        async move {
            let mut t = self.tables();
            let refreshed = t.by_user.values().find_map(|ls| {
                ls.refresh(&path, &token, Some(timeout))
                    .now_or_never()
                    .and_then(Result::ok)
            });
            if refreshed.is_some() {
                for e in t.expiry.iter_mut().filter(|e| e.3 == token) {
                    e.0 = Instant::now() + timeout;
                }
            }
            refreshed.ok_or(())
        }
        .boxed()
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let (path, principal, tokens) = (
            path.clone(),
            principal.map(str::to_string),
            submitted_tokens.to_vec(),
        );
        async move {
            let t = self.tables();
            // `ignore_principal` asks whether tokens are valid here at all (If: headers): look at
            // every table. Otherwise only the requester's own locks can stand in its way.
            let tables: Vec<&Box<MemLs>> = if ignore_principal {
                t.by_user.values().collect()
            } else {
                t.by_user.get(&principal).into_iter().collect()
            };
            for ls in tables {
                let r = ls
                    .check(&path, principal.as_deref(), ignore_principal, deep, &tokens)
                    .now_or_never()
                    .unwrap_or_else(|| Err(placeholder(&path)));
                r?;
            }
            Ok(())
        }
        .boxed()
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let path = path.clone();
        async move {
            let t = self.tables();
            t.by_user
                .values()
                .flat_map(|ls| ls.discover(&path).now_or_never().unwrap_or_default())
                .collect()
        }
        .boxed()
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        async move {
            let t = self.tables();
            for ls in t.by_user.values() {
                let _ = ls.delete(&path).now_or_never();
            }
            Ok(())
        }
        .boxed()
    }
}

/// A conflicting lock to report if `MemLs` ever stopped answering at once (it does not).
fn placeholder(path: &DavPath) -> DavLock {
    DavLock {
        token: String::new(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DavPath {
        DavPath::new(s).unwrap()
    }

    fn block<T>(f: LsFuture<'_, T>) -> T {
        f.now_or_never().expect("the lock system answers at once")
    }

    #[test]
    fn locks_bind_their_user_only_and_expire() {
        let ls = BoundedLs::new(Duration::from_millis(200));
        assert!(block(ls.lock(&p("/"), Some("op"), None, None, false, true)).is_err());
        let lock = block(ls.lock(&p("/images/"), Some("op"), None, None, false, true)).unwrap();
        assert_eq!(
            lock.timeout,
            Some(Duration::from_millis(200)),
            "Infinite is capped"
        );
        // The user who locked needs the token; another user is never blocked.
        assert!(block(ls.check(&p("/images/x"), Some("op"), false, false, &[])).is_err());
        assert!(block(ls.check(
            &p("/images/x"),
            Some("op"),
            false,
            false,
            std::slice::from_ref(&lock.token)
        ))
        .is_ok());
        assert!(block(ls.check(&p("/images/x"), Some("cpi"), false, false, &[])).is_ok());
        assert_eq!(block(ls.discover(&p("/images/x"))).len(), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert!(block(ls.check(&p("/images/x"), Some("op"), false, false, &[])).is_ok());
        assert!(block(ls.discover(&p("/images/x"))).is_empty());
        assert!(block(ls.unlock(&p("/images/"), &lock.token)).is_err());
    }
}

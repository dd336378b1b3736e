//! The composition root: what one CPI call is given. `Services` builds each dependency of a call
//! at most once, on first use, and keeps it for the rest of the call; the dispatch table
//! (`rpc::dispatch`) hands each action only the ones it uses. So `info` and `ping` build
//! nothing, a dependency an action never reaches cannot fail it, and a failed build gives the
//! error it always gave. The seams for tests are below this: the provisioner and the teardown
//! take any `ironic::Ironic` (the in-memory model in `tests/ownership_model.rs`).

use std::cell::{OnceCell, RefCell};

use crate::config::{Config, RepositoryConfig};
use crate::error::{CpiError, Result};
use crate::ironic::{Ironic, IronicClient};
use crate::pool::whoami::Process;
use crate::protocol::Request;
use crate::registry::RegistryClient;
use crate::repository::Repository;
use crate::vm_data::VmData;

/// One dependency: built on first use, then kept. A failed build is not kept: the next use
/// tries again and fails the same way.
pub struct Lazy<'a, T: ?Sized> {
    value: OnceCell<Box<T>>,
    build: Box<dyn Fn() -> Result<Box<T>> + 'a>,
}

impl<'a, T: ?Sized> Lazy<'a, T> {
    pub fn new(build: impl Fn() -> Result<Box<T>> + 'a) -> Self {
        Lazy {
            value: OnceCell::new(),
            build: Box::new(build),
        }
    }

    pub fn get(&self) -> Result<&T> {
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let v = (self.build)()?;
        Ok(self.value.get_or_init(|| v))
    }
}

/// A short record of what a call did: it becomes the response's `log`.
#[derive(Debug, Default)]
pub struct Notes(RefCell<Vec<String>>);

impl Notes {
    /// Record a step for the response's `log` and the stderr log.
    pub fn note(&self, message: impl Into<String>) {
        let message = message.into();
        log::info!("{message}");
        self.0.borrow_mut().push(message);
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

/// The registry as one call uses it.
#[derive(Clone, Copy)]
pub struct CallRegistry<'a> {
    configured: &'a Lazy<'a, Option<RegistryClient>>,
    registry_less: bool,
}

impl<'a> CallRegistry<'a> {
    /// The registry, when this call uses one (old stemcells with a registry configured).
    pub fn get(&self) -> Result<Option<&'a RegistryClient>> {
        if self.registry_less {
            return Ok(None);
        }
        self.configured()
    }

    /// The registry whenever one is configured, for cleanup that must not depend on which
    /// stemcell the director mentions.
    pub fn configured(&self) -> Result<Option<&'a RegistryClient>> {
        Ok(self.configured.get()?.as_ref())
    }
}

/// Everything a call may need, each built once.
pub struct Services<'a> {
    pub request: &'a Request,
    config: Option<&'a Config>,
    pub notes: Notes,
    pub ironic: Lazy<'a, dyn Ironic>,
    pub stemcells: Lazy<'a, Repository>,
    pub metadata: Lazy<'a, Option<Repository>>,
    registry: Lazy<'a, Option<RegistryClient>>,
}

impl<'a> Services<'a> {
    pub fn new(request: &'a Request, config: Option<&'a Config>) -> Self {
        let need = move || required(config);
        Services {
            request,
            config,
            notes: Notes::default(),
            ironic: Lazy::new(move || {
                let client = IronicClient::new(&need()?.ironic).map_err(CpiError::from)?;
                Ok(Box::new(client) as Box<dyn Ironic>)
            }),
            stemcells: Lazy::new(move || {
                repository(need()?.stemcell_repository.as_ref(), "stemcell_repository")
                    .map(Box::new)
            }),
            metadata: Lazy::new(move || {
                let cfg = need()?.metadata_repository.as_ref();
                Ok(Box::new(cfg.map(Repository::new).transpose()?))
            }),
            registry: Lazy::new(move || {
                let cfg = need()?.registry.as_ref();
                Ok(Box::new(cfg.map(RegistryClient::new).transpose()?))
            }),
        }
    }

    pub fn config(&self) -> Result<&'a Config> {
        required(self.config)
    }

    pub fn api_version(&self) -> u32 {
        self.request.api_version
    }

    /// This process, as claims and teardowns record it.
    pub fn process(&self) -> Process {
        Process::current(self.request.context.request_id.as_deref())
    }

    /// Registry-less when director and stemcell both speak v2, or when no registry is configured
    /// (then inline settings are the only way the agent can get them).
    pub fn registry(&self) -> CallRegistry<'_> {
        CallRegistry {
            configured: &self.registry,
            registry_less: self.request.registry_less()
                || self.config.is_none_or(|c| c.registry.is_none()),
        }
    }

    /// What a VM keeps outside Ironic: registry settings and published config drives.
    pub fn vm_data(&self) -> VmData<'_> {
        VmData {
            registry: self.registry(),
            metadata: &self.metadata,
            notes: &self.notes,
        }
    }

    pub fn take_notes(&self) -> Vec<String> {
        self.notes.take()
    }
}

/// The config, for everything but `info` and `ping`.
fn required(config: Option<&Config>) -> Result<&Config> {
    config.ok_or_else(|| CpiError::cpi("this method needs the CPI config file"))
}

fn repository(cfg: Option<&RepositoryConfig>, key: &str) -> Result<Repository> {
    let cfg = cfg.ok_or_else(|| {
        CpiError::cloud(format!(
            "this method needs '{key}' in the CPI config (a WebDAV URL for images)"
        ))
    })?;
    Repository::new(cfg)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(api_version: u32) -> Request {
        Request::from_value(json!({
            "method": "has_vm", "arguments": [], "context": {}, "api_version": api_version
        }))
        .unwrap()
    }

    #[test]
    fn each_dependency_is_built_once_and_kept() {
        let config = Config::from_value(json!({
            "ironic": {"url": "http://127.0.0.1:9"},
            "stemcell_repository": {"url": "http://127.0.0.1:9/images"},
            "metadata_repository": {"url": "http://127.0.0.1:9/metadata"},
            "registry": {"endpoint": "http://127.0.0.1:9/registry", "username": "u", "password": "p"},
        }))
        .unwrap();
        let request = request(1);
        let s = Services::new(&request, Some(&config));
        assert!(std::ptr::eq(
            s.stemcells.get().unwrap(),
            s.stemcells.get().unwrap()
        ));
        let metadata = s.metadata.get().unwrap().as_ref().unwrap();
        assert!(std::ptr::eq(
            metadata,
            s.vm_data().metadata.get().unwrap().as_ref().unwrap()
        ));
        let registry = s.registry().get().unwrap().unwrap();
        assert!(std::ptr::eq(
            registry,
            s.registry().configured().unwrap().unwrap()
        ));
        let ironic = s.ironic.get().unwrap() as *const dyn Ironic;
        assert!(std::ptr::addr_eq(ironic, s.ironic.get().unwrap()));
    }

    #[test]
    fn without_a_config_nothing_is_built_and_each_use_says_why() {
        let request = request(2);
        let s = Services::new(&request, None);
        for e in [
            s.ironic.get().err(),
            s.stemcells.get().err(),
            s.metadata.get().err(),
            s.registry().configured().err(),
        ] {
            let e = e.expect("no config, no dependency");
            assert!(e.message.contains("needs the CPI config file"), "{e}");
        }
        assert!(
            s.registry().get().unwrap().is_none(),
            "registry-less needs none"
        );
    }

    #[test]
    fn a_missing_stemcell_repository_fails_the_call_that_uses_it() {
        let config = Config::from_value(json!({"ironic": {"url": "http://127.0.0.1:9"}})).unwrap();
        let request = request(2);
        let s = Services::new(&request, Some(&config));
        let e = s.stemcells.get().err().expect("no stemcell_repository");
        assert!(e.message.contains("'stemcell_repository'"), "{e}");
        assert!(s.metadata.get().unwrap().is_none());
        assert!(s.registry().configured().unwrap().is_none());
    }
}

//! What one CPI call carries to its action: the request, the configuration, the clients it
//! needs (built on first use, so `info` never builds any), and a short record of what was done
//! (it becomes the response's `log`).

use std::cell::{OnceCell, RefCell};

use crate::config::{Config, RepositoryConfig};
use crate::error::{CpiError, Result};
use crate::ironic::{Ironic, IronicClient};
use crate::pool::whoami::Process;
use crate::protocol::Request;
use crate::registry::RegistryClient;
use crate::repository::Repository;

pub struct Call<'a> {
    pub request: &'a Request,
    config: Option<&'a Config>,
    notes: RefCell<Vec<String>>,
    ironic: OnceCell<Box<dyn Ironic>>,
}

impl<'a> Call<'a> {
    pub fn new(request: &'a Request, config: Option<&'a Config>) -> Self {
        Call {
            request,
            config,
            notes: RefCell::new(Vec::new()),
            ironic: OnceCell::new(),
        }
    }

    /// A call whose Ironic is given (the lab's in-memory model, in tests).
    pub fn with_ironic(
        request: &'a Request,
        config: Option<&'a Config>,
        ironic: Box<dyn Ironic>,
    ) -> Self {
        let call = Call::new(request, config);
        let _ = call.ironic.set(ironic);
        call
    }

    pub fn config(&self) -> Result<&'a Config> {
        self.config
            .ok_or_else(|| CpiError::cpi("this method needs the CPI config file"))
    }

    pub fn api_version(&self) -> u32 {
        self.request.api_version
    }

    /// Registry-less when director and stemcell both speak v2, or when no registry is configured
    /// (then inline settings are the only way the agent can get them).
    pub fn registry_less(&self) -> bool {
        self.request.registry_less() || self.config.is_none_or(|c| c.registry.is_none())
    }

    pub fn ironic(&self) -> Result<&dyn Ironic> {
        if let Some(client) = self.ironic.get() {
            return Ok(client.as_ref());
        }
        let client = IronicClient::new(&self.config()?.ironic).map_err(CpiError::from)?;
        Ok(self.ironic.get_or_init(|| Box::new(client)).as_ref())
    }

    /// This process, as claims and teardowns record it.
    pub fn process(&self) -> Process {
        Process::current(self.request.context.request_id.as_deref())
    }

    pub fn stemcell_repository(&self) -> Result<Repository> {
        repository(
            self.config()?.stemcell_repository.as_ref(),
            "stemcell_repository",
        )
    }

    pub fn metadata_repository(&self) -> Result<Option<Repository>> {
        self.config()?
            .metadata_repository
            .as_ref()
            .map(Repository::new)
            .transpose()
    }

    /// The registry, when this call uses one (old stemcells with a registry configured).
    pub fn registry(&self) -> Result<Option<RegistryClient>> {
        if self.registry_less() {
            return Ok(None);
        }
        self.config()?
            .registry
            .as_ref()
            .map(RegistryClient::new)
            .transpose()
    }

    /// The registry whenever one is configured, for cleanup that must not depend on which
    /// stemcell the director mentions.
    pub fn configured_registry(&self) -> Result<Option<RegistryClient>> {
        self.config()?
            .registry
            .as_ref()
            .map(RegistryClient::new)
            .transpose()
    }

    /// Record a step for the response's `log` and the stderr log.
    pub fn note(&self, message: impl Into<String>) {
        let message = message.into();
        log::info!("{message}");
        self.notes.borrow_mut().push(message);
    }

    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.notes.borrow_mut())
    }
}

fn repository(cfg: Option<&RepositoryConfig>, key: &str) -> Result<Repository> {
    let cfg = cfg.ok_or_else(|| {
        CpiError::cloud(format!(
            "this method needs '{key}' in the CPI config (a WebDAV URL for images)"
        ))
    })?;
    Repository::new(cfg)
}

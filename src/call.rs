//! What one CPI call carries to its action: the request, the configuration, and a short record
//! of what was done (it becomes the response's `log`).

use std::cell::RefCell;

use crate::config::Config;
use crate::error::{CpiError, Result};
use crate::rpc::Request;

pub struct Call<'a> {
    pub request: &'a Request,
    config: Option<&'a Config>,
    notes: RefCell<Vec<String>>,
}

impl<'a> Call<'a> {
    pub fn new(request: &'a Request, config: Option<&'a Config>) -> Self {
        Call {
            request,
            config,
            notes: RefCell::new(Vec::new()),
        }
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

//! The CPI's client for the legacy BOSH registry (agents older than registry-less settings),
//! as bosh-cpi-ruby's registry client behaves: Basic auth on every call, settings stored as a
//! JSON string, GET answers `{"settings": "<json>"}`.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;

use crate::config::RegistryConfig;
use crate::error::{CpiError, Result};

pub struct RegistryClient {
    http: Client,
    endpoint: String,
    cfg: RegistryConfig,
}

impl RegistryClient {
    pub fn new(cfg: &RegistryConfig) -> Result<RegistryClient> {
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(path) = &cfg.ca_cert_file {
            let pem = std::fs::read(path)
                .map_err(|e| CpiError::cpi(format!("registry ca_cert_file {path}: {e}")))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CpiError::cpi(format!("registry ca_cert_file {path}: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| CpiError::cpi(format!("registry HTTP client: {e}")))?;
        Ok(RegistryClient {
            http,
            endpoint: cfg.endpoint.trim_end_matches('/').to_string(),
            cfg: cfg.clone(),
        })
    }

    fn url(&self, id: &str) -> String {
        let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        format!("{}/instances/{id}/settings", self.endpoint)
    }

    fn request(&self, method: reqwest::Method, id: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, self.url(id))
            .header("Accept", "application/json")
            .basic_auth(&self.cfg.username, Some(self.cfg.password.expose()))
    }

    pub fn put_settings(&self, id: &str, settings: &Value) -> Result<()> {
        let resp = self
            .request(reqwest::Method::PUT, id)
            .header("Content-Type", "application/json")
            .body(settings.to_string())
            .send()
            .map_err(|e| self.transport("PUT", id, e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status("PUT", id, resp.status()))
        }
    }

    /// None when the registry has no settings for `id`.
    pub fn get_settings(&self, id: &str) -> Result<Option<Value>> {
        let resp = self
            .request(reqwest::Method::GET, id)
            .send()
            .map_err(|e| self.transport("GET", id, e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if resp.status() != StatusCode::OK {
            return Err(self.status("GET", id, resp.status()));
        }
        let body: Value = resp.json().map_err(|e| {
            CpiError::cloud(format!("registry GET {}: not JSON: {e}", self.url(id)))
        })?;
        let text = body["settings"].as_str().ok_or_else(|| {
            CpiError::cloud(format!(
                "registry GET {}: no 'settings' string",
                self.url(id)
            ))
        })?;
        let settings: Value = serde_json::from_str(text).map_err(|e| {
            CpiError::cloud(format!(
                "registry GET {}: settings are not JSON: {e}",
                self.url(id)
            ))
        })?;
        if !settings.is_object() {
            return Err(CpiError::cloud(format!(
                "registry GET {}: settings are not a JSON object",
                self.url(id)
            )));
        }
        Ok(Some(settings))
    }

    /// Deleting settings that are not there is fine.
    pub fn delete_settings(&self, id: &str) -> Result<()> {
        let resp = self
            .request(reqwest::Method::DELETE, id)
            .send()
            .map_err(|e| self.transport("DELETE", id, e))?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.status("DELETE", id, resp.status()))
        }
    }

    /// The endpoint written into user data. Credentials go in only when the operator asked:
    /// the config drive is readable on the node.
    pub fn agent_endpoint(&self) -> String {
        let base = self
            .cfg
            .agent_endpoint
            .as_deref()
            .unwrap_or(&self.cfg.endpoint)
            .trim_end_matches('/')
            .to_string();
        if !self.cfg.embed_credentials_for_agent {
            return base;
        }
        match url::Url::parse(&base) {
            Ok(mut u) => {
                let ok = u.set_username(&self.cfg.username).is_ok()
                    && u.set_password(Some(self.cfg.password.expose())).is_ok();
                if ok {
                    u.to_string().trim_end_matches('/').to_string()
                } else {
                    base
                }
            }
            Err(_) => base,
        }
    }

    fn transport(&self, method: &str, id: &str, e: reqwest::Error) -> CpiError {
        CpiError::cloud(format!(
            "registry {method} {}: {}",
            self.url(id),
            e.without_url()
        ))
    }

    fn status(&self, method: &str, id: &str, status: StatusCode) -> CpiError {
        let hint = if status == StatusCode::UNAUTHORIZED {
            " (check registry.username and registry.password)"
        } else {
            ""
        };
        CpiError::cloud(format!(
            "registry {method} {} answered {status}{hint}",
            self.url(id)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn agent_endpoint_has_credentials_only_when_asked() {
        let mut cfg = RegistryConfig {
            endpoint: "http://10.0.0.2:25777/registry".into(),
            agent_endpoint: None,
            username: "admin".into(),
            password: Secret::new("s3cret"),
            embed_credentials_for_agent: false,
            ca_cert_file: None,
        };
        assert_eq!(
            RegistryClient::new(&cfg).unwrap().agent_endpoint(),
            "http://10.0.0.2:25777/registry"
        );
        cfg.embed_credentials_for_agent = true;
        assert_eq!(
            RegistryClient::new(&cfg).unwrap().agent_endpoint(),
            "http://admin:s3cret@10.0.0.2:25777/registry"
        );
    }
}

//! The CPI's client of the legacy BOSH registry (the companion server or a bosh-registry).
//!
//! Behaves as bosh-cpi-ruby's `registry_client.rb`: `Accept: application/json` and basic auth on
//! every call; PUT with `Content-Type: application/json`, any 2xx is success; GET needs 200 and a
//! `settings` string holding a JSON object; DELETE accepts 200 and 404. One difference: a GET
//! answered 404 means "no settings" (`None`) rather than an error, so callers can tell absence
//! from failure.

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::{RegistryConfig, Secret};
use crate::error::{CpiError, Result};
use crate::repository::http;

/// Seconds for one registry request (documents are small).
const TIMEOUT_SECS: u64 = 30;

pub struct RegistryClient {
    endpoint: String,
    agent_endpoint: String,
    username: String,
    password: Secret,
    embed_credentials: bool,
    client: Client,
}

impl RegistryClient {
    pub fn new(cfg: &RegistryConfig) -> Result<RegistryClient> {
        let endpoint = with_scheme(&cfg.endpoint);
        let agent_endpoint = cfg
            .agent_endpoint
            .as_deref()
            .map(with_scheme)
            .unwrap_or_else(|| endpoint.clone());
        let client = http::client(
            &format!("registry {endpoint}"),
            cfg.ca_cert_file.as_deref(),
            std::time::Duration::from_secs(TIMEOUT_SECS),
        )?;
        Ok(RegistryClient {
            endpoint,
            agent_endpoint,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            embed_credentials: cfg.embed_credentials_for_agent,
            client,
        })
    }

    /// Store the settings of instance `id` (replaces what was there).
    pub fn put_settings(&self, id: &str, settings: &Value) -> Result<()> {
        let url = self.settings_url(id)?;
        let body = serde_json::to_vec(settings)
            .map_err(|e| CpiError::cpi(format!("cannot encode the settings of {id}: {e}")))?;
        let doing = format!("storing the agent settings of {id}");
        let resp = http::send("PUT", &url, &doing, true, || {
            self.request(Method::PUT, &url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(http::status_error("PUT", &url, &doing, resp))
        }
    }

    /// The settings of instance `id`, or `None` if the registry has none.
    pub fn get_settings(&self, id: &str) -> Result<Option<Value>> {
        let url = self.settings_url(id)?;
        let doing = format!("reading the agent settings of {id}");
        let resp = http::send("GET", &url, &doing, true, || {
            self.request(Method::GET, &url)
        })?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(http::status_error("GET", &url, &doing, resp)),
        }
        let bad = |why: String| CpiError::cloud(format!("GET {url} while {doing}: {why}"));
        let body: Value = resp
            .json()
            .map_err(|e| bad(format!("the answer is not JSON ({})", e.without_url())))?;
        let Some(text) = body.get("settings").and_then(Value::as_str) else {
            return Err(bad("the answer has no \"settings\" string".into()));
        };
        let settings: Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("\"settings\" is not JSON ({e})")))?;
        if !settings.is_object() {
            return Err(bad("\"settings\" is not a JSON object".into()));
        }
        Ok(Some(settings))
    }

    /// Delete the settings of instance `id`; deleting absent settings is fine.
    pub fn delete_settings(&self, id: &str) -> Result<()> {
        let url = self.settings_url(id)?;
        let doing = format!("deleting the agent settings of {id}");
        let resp = http::send("DELETE", &url, &doing, true, || {
            self.request(Method::DELETE, &url)
        })?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(http::status_error("DELETE", &url, &doing, resp)),
        }
    }

    /// The endpoint written into user data for the agent: `agent_endpoint` (or `endpoint`), with
    /// `user:password@` only when `embed_credentials_for_agent` is set. Contains the password
    /// then: never log it.
    pub fn agent_endpoint(&self) -> String {
        if !self.embed_credentials {
            return self.agent_endpoint.clone();
        }
        match url::Url::parse(&self.agent_endpoint) {
            Ok(mut u) => {
                let _ = u.set_username(&self.username);
                let _ = u.set_password(Some(self.password.expose()));
                let mut s = u.to_string();
                // The agent appends "/instances/…": a trailing slash would double it.
                while s.ends_with('/') {
                    s.pop();
                }
                s
            }
            Err(_) => self.agent_endpoint.clone(),
        }
    }

    fn settings_url(&self, id: &str) -> Result<String> {
        if id.is_empty() || id.contains(['/', '\\', '\0']) || id == "." || id == ".." {
            return Err(CpiError::cpi(format!(
                "'{id}' cannot be a registry instance id"
            )));
        }
        let id = percent_encoding::utf8_percent_encode(id, crate::repository::SEGMENT);
        Ok(format!("{}/instances/{id}/settings", self.endpoint))
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.client
            .request(method, url)
            .header(ACCEPT, "application/json")
            .basic_auth(&self.username, Some(self.password.expose()))
    }
}

/// As the Ruby client: `http://` when no scheme is given; no trailing slash.
fn with_scheme(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RegistryConfig {
        RegistryConfig {
            endpoint: "http://10.0.0.2:25780/registry/".into(),
            agent_endpoint: None,
            username: "admin".into(),
            password: Secret::new("p@ss w"),
            embed_credentials_for_agent: false,
            ca_cert_file: None,
        }
    }

    #[test]
    fn agent_endpoint_embeds_credentials_only_when_asked() {
        let c = RegistryClient::new(&cfg()).unwrap();
        assert_eq!(c.agent_endpoint(), "http://10.0.0.2:25780/registry");
        let mut k = cfg();
        k.embed_credentials_for_agent = true;
        k.agent_endpoint = Some("http://192.168.0.2:25780".into());
        let c = RegistryClient::new(&k).unwrap();
        assert_eq!(
            c.agent_endpoint(),
            "http://admin:p%40ss%20w@192.168.0.2:25780"
        );
        assert_eq!(
            c.settings_url("vm-1").unwrap(),
            "http://10.0.0.2:25780/registry/instances/vm-1/settings"
        );
        assert!(c.settings_url("../x").is_err());
        assert_eq!(with_scheme("r:25777"), "http://r:25777");
    }
}

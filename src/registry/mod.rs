//! The CPI's client of the legacy BOSH registry (the companion server or a bosh-registry).
//!
//! Behaves as bosh-cpi-ruby's `registry_client.rb`: `Accept: application/json` and basic auth on
//! every call; PUT with `Content-Type: application/json`, any 2xx is success; GET needs 200 and a
//! `settings` string holding a JSON object; DELETE accepts 200 and 404. One difference: a GET
//! answered 404 means "no settings" (`None`) rather than an error, so callers can tell absence
//! from failure.
//!
//! Each agent reads its settings with credentials of its own (`agent_access`): a random secret
//! that goes only into that VM's config drive, while the PUT of its settings tells the companion
//! server the secret's SHA-256 (`X-Agent-Password-SHA256`). Nothing on a node can read another
//! node's settings, and no shared credential is on any node.

use std::time::Duration;

use ironic_cpi_common::redact;
use ironic_cpi_http::{self as http, Policy, Request};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::Digest;
use url::Url;

use crate::config::{AgentCredentials, RegistryConfig, Secret};
use crate::error::{CpiError, Result};

/// For one registry request (documents are small).
const TIMEOUT: Duration = Duration::from_secs(30);
/// The header that carries the digest of a VM's read secret (the companion server's name).
pub const READER_HEADER: &str = "X-Agent-Password-SHA256";

pub struct RegistryClient {
    endpoint: Url,
    agent_endpoint: String,
    username: String,
    password: Secret,
    agent_credentials: AgentCredentials,
    client: Client,
}

/// How one VM's agent reaches and authenticates to the registry.
pub struct AgentAccess {
    /// The endpoint for its user data; with `per_vm` credentials it holds the VM's secret.
    endpoint: Secret,
    /// Hex SHA-256 of that secret, for the companion server.
    digest: Option<String>,
}

impl AgentAccess {
    /// The endpoint to write into the VM's user data (it may hold the VM's secret: never log it).
    pub fn endpoint(&self) -> &str {
        self.endpoint.expose()
    }
}

impl RegistryClient {
    pub fn new(cfg: &RegistryConfig) -> Result<RegistryClient> {
        let endpoint = with_scheme(&cfg.endpoint);
        let agent_endpoint = cfg
            .agent_endpoint
            .as_deref()
            .map(with_scheme)
            .unwrap_or_else(|| endpoint.clone());
        let shown = redact::url_text(&endpoint);
        let endpoint = Url::parse(&endpoint)
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| {
                CpiError::cpi(format!("registry.endpoint '{shown}' is not an http(s) URL"))
            })?;
        let client = http::client(&http::ClientOptions {
            ca_cert_file: cfg.ca_cert_file.as_deref(),
            connect_timeout: http::CONNECT_TIMEOUT,
            timeout: TIMEOUT,
        })
        .map_err(|e| CpiError::cpi(format!("registry {shown}: {e}")))?;
        Ok(RegistryClient {
            endpoint,
            agent_endpoint,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            agent_credentials: cfg.agent_credentials,
            client,
        })
    }

    /// Store the settings of instance `id` (replaces what was there); who may read them stays as
    /// it was.
    pub fn put_settings(&self, id: &str, settings: &Value) -> Result<()> {
        self.put(id, settings, None)
    }

    /// Store the first settings of a VM, readable by its agent with `access`.
    pub fn put_settings_for(&self, id: &str, settings: &Value, access: &AgentAccess) -> Result<()> {
        self.put(id, settings, access.digest.as_deref())
    }

    fn put(&self, id: &str, settings: &Value, reader: Option<&str>) -> Result<()> {
        let url = self.settings_url(id)?;
        let body = serde_json::to_vec(settings)
            .map_err(|e| CpiError::cpi(format!("cannot encode the settings of {id}: {e}")))?;
        let doing = format!("storing the agent settings of {id}");
        let req = request("PUT", &url, &doing);
        let resp = http::send(&Policy::default(), &req, || {
            let r = self
                .request(Method::PUT, &url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            match reader {
                Some(d) => r.header(READER_HEADER, d),
                None => r,
            }
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(req.status_error(resp).into())
        }
    }

    /// The settings of instance `id`, or `None` if the registry has none.
    pub fn get_settings(&self, id: &str) -> Result<Option<Value>> {
        let url = self.settings_url(id)?;
        let doing = format!("reading the agent settings of {id}");
        let req = request("GET", &url, &doing);
        let resp = http::send(&Policy::default(), &req, || self.request(Method::GET, &url))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(req.status_error(resp).into()),
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
        let req = request("DELETE", &url, &doing);
        let resp = http::send(&Policy::default(), &req, || {
            self.request(Method::DELETE, &url)
        })?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(req.status_error(resp).into()),
        }
    }

    /// The endpoint and credentials for the agent of VM `id`: `agent_endpoint` (or `endpoint`),
    /// with `per_vm` credentials a fresh random secret as `<id>:<secret>@` (the agent's HTTP
    /// client turns URL userinfo into basic auth).
    pub fn agent_access(&self, id: &str) -> AgentAccess {
        let plain = AgentAccess {
            endpoint: Secret::new(self.agent_endpoint.clone()),
            digest: None,
        };
        if self.agent_credentials == AgentCredentials::None {
            return plain;
        }
        let Ok(mut u) = url::Url::parse(&self.agent_endpoint) else {
            return plain;
        };
        // 256 random bits from the thread's CSPRNG, as hex: safe in a URL as it is.
        let secret = hex::encode(rand::random::<[u8; 32]>());
        if u.set_username(id).is_err() || u.set_password(Some(&secret)).is_err() {
            return plain;
        }
        let mut s = u.to_string();
        // The agent appends "/instances/…": a trailing slash would double it.
        while s.ends_with('/') {
            s.pop();
        }
        AgentAccess {
            endpoint: Secret::new(s),
            digest: Some(hex::encode(sha2::Sha256::digest(secret.as_bytes()))),
        }
    }

    fn settings_url(&self, id: &str) -> Result<Url> {
        if id.is_empty() || id.contains(['/', '\\', '\0']) || id == "." || id == ".." {
            return Err(CpiError::cpi(format!(
                "'{id}' cannot be a registry instance id"
            )));
        }
        let mut url = self.endpoint.clone();
        // `new` made sure the endpoint can have segments.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["instances", id, "settings"]);
        }
        Ok(url)
    }

    fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        self.client
            .request(method, url.clone())
            .header(ACCEPT, "application/json")
            .basic_auth(&self.username, Some(self.password.expose()))
    }
}

/// Every registry request may be repeated: PUT replaces, DELETE of nothing is fine.
fn request<'a>(method: &'a str, url: &'a Url, doing: &'a str) -> Request<'a> {
    Request {
        method,
        url,
        doing,
        idempotent: true,
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
            agent_credentials: AgentCredentials::None,
            ca_cert_file: None,
        }
    }

    #[test]
    fn each_agent_gets_a_secret_of_its_own() {
        let c = RegistryClient::new(&cfg()).unwrap();
        let plain = c.agent_access("vm-1");
        assert_eq!(plain.endpoint(), "http://10.0.0.2:25780/registry");
        assert!(plain.digest.is_none());
        let mut k = cfg();
        k.agent_credentials = AgentCredentials::PerVm;
        k.agent_endpoint = Some("http://192.168.0.2:25780/registry/".into());
        let c = RegistryClient::new(&k).unwrap();
        let (a, b) = (c.agent_access("vm-1"), c.agent_access("vm-1"));
        let u = url::Url::parse(a.endpoint()).unwrap();
        assert_eq!(u.username(), "vm-1");
        let secret = u.password().unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(
            a.digest.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(secret.as_bytes())).as_str())
        );
        assert_ne!(a.endpoint(), b.endpoint(), "a new secret for every VM");
        assert!(a.endpoint().ends_with("@192.168.0.2:25780/registry"));
        assert!(!a.endpoint().contains("admin") && !a.endpoint().contains("p%40ss"));
        assert_eq!(
            c.settings_url("vm-1").unwrap().as_str(),
            "http://10.0.0.2:25780/registry/instances/vm-1/settings"
        );
        assert_eq!(
            c.settings_url("a b?#").unwrap().as_str(),
            "http://10.0.0.2:25780/registry/instances/a%20b%3F%23/settings"
        );
        assert!(c.settings_url("../x").is_err());
        assert_eq!(with_scheme("r:25777"), "http://r:25777");
    }
}

//! The `ironic` section of the CPI's configuration file: where Ironic is, how to authenticate,
//! and how patiently to retry and wait. Its keys and defaults are documented with the CPI's
//! (`docs/configuration.md`).

use ironic_cpi_common::{Seconds, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IronicConfig {
    /// Base URL of the Ironic API, without `/v1` (e.g. `http://10.0.0.5:6385`). May be empty
    /// with Keystone auth: the `baremetal` endpoint is then taken from the service catalog.
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub auth: IronicAuth,
    /// PEM bundle of CAs to trust for `https://` (in addition to the public Mozilla roots built in).
    #[serde(default)]
    pub ca_cert_file: Option<String>,
    #[serde(default)]
    pub microversion: MicroversionPolicy,
    /// Seconds to establish a TCP/TLS connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Seconds,
    /// Seconds for one HTTP request (list pages of 1,000 nodes take about 0.5 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Seconds,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub poll: PollPolicy,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Page size for node and port lists (Ironic caps it at its `max_limit`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The largest answer body read from Ironic, in bytes: a broken or hostile server cannot
    /// make the CPI hold more than this of one answer.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Run manual cleaning with `clean_steps` when a VM is deleted.
    #[serde(default)]
    pub clean_on_delete: bool,
    /// Manual clean steps for `clean_on_delete`, as Ironic's API takes them.
    #[serde(default = "default_clean_steps")]
    pub clean_steps: Vec<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IronicAuth {
    /// Standalone Ironic with `auth_strategy = noauth`.
    #[default]
    None,
    /// Standalone Ironic with `auth_strategy = http_basic`.
    HttpBasic { username: String, password: Secret },
    /// A pre-issued token, sent as `X-Auth-Token`.
    Token { token: Secret },
    /// Keystone v3 password authentication; the token is fetched once per CPI call.
    KeystonePassword {
        auth_url: String,
        username: String,
        password: Secret,
        #[serde(default = "default_domain")]
        user_domain_name: String,
        project_name: String,
        #[serde(default = "default_domain")]
        project_domain_name: String,
        /// Region to pick the baremetal endpoint from when `ironic.url` is empty.
        #[serde(default)]
        region_name: Option<String>,
    },
    /// Keystone v3 application credential.
    KeystoneApplicationCredential {
        auth_url: String,
        application_credential_id: String,
        application_credential_secret: Secret,
        #[serde(default)]
        region_name: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicroversionPolicy {
    /// Lowest microversion this CPI accepts from the server (see `default_min_microversion`).
    #[serde(default = "default_min_microversion")]
    pub min: String,
    /// Highest microversion to use; the client uses min(server max, this).
    #[serde(default = "default_max_microversion")]
    pub max: String,
}

impl Default for MicroversionPolicy {
    fn default() -> Self {
        MicroversionPolicy {
            min: default_min_microversion(),
            max: default_max_microversion(),
        }
    }
}

/// Retries of transient API errors (409 NodeLocked, 503, connection failures).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[serde(default = "default_retry_attempts")]
    pub max_attempts: u32,
    /// Seconds before the first retry; doubles each time, with jitter.
    #[serde(default = "default_retry_initial")]
    pub initial_delay: Seconds,
    /// Upper bound of one delay, in seconds.
    #[serde(default = "default_retry_max")]
    pub max_delay: Seconds,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_retry_attempts(),
            initial_delay: default_retry_initial(),
            max_delay: default_retry_max(),
        }
    }
}

/// How state changes are polled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollPolicy {
    /// Seconds before the first poll.
    #[serde(default = "default_poll_initial")]
    pub initial_interval: Seconds,
    /// Growth factor between polls.
    #[serde(default = "default_poll_factor")]
    pub factor: f64,
    /// Upper bound of the interval, in seconds.
    #[serde(default = "default_poll_max")]
    pub max_interval: Seconds,
    /// Fraction of random jitter added to each interval (0.25 = up to +25%).
    #[serde(default = "default_poll_jitter")]
    pub jitter: f64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            initial_interval: default_poll_initial(),
            factor: default_poll_factor(),
            max_interval: default_poll_max(),
            jitter: default_poll_jitter(),
        }
    }
}

/// Deadlines, in seconds, for each kind of wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Deploy until `active` (real servers take many minutes to POST and write the image).
    #[serde(default = "default_deploy_timeout")]
    pub deploy: Seconds,
    /// `provide` (with automated cleaning) until `available`.
    #[serde(default = "default_clean_timeout")]
    pub provide: Seconds,
    /// Undeploy until `available` (includes automated cleaning).
    #[serde(default = "default_clean_timeout")]
    pub undeploy: Seconds,
    /// Manual cleaning until `manageable`.
    #[serde(default = "default_clean_timeout")]
    pub clean: Seconds,
    /// `manage` until `manageable` (the driver validates the BMC).
    #[serde(default = "default_manage_timeout")]
    pub manage: Seconds,
    /// Power on, off or reboot until the target power state.
    #[serde(default = "default_power_timeout")]
    pub power: Seconds,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            deploy: default_deploy_timeout(),
            provide: default_clean_timeout(),
            undeploy: default_clean_timeout(),
            clean: default_clean_timeout(),
            manage: default_manage_timeout(),
            power: default_power_timeout(),
        }
    }
}

/// 32 MiB: ten times a page of 1,000 nodes with every field the CPI asks for.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;
/// Below this, a page of nodes or a node with a large `extra` would not fit.
pub const MIN_MAX_RESPONSE_BYTES: u64 = 64 * 1024;

fn default_connect_timeout() -> Seconds {
    Seconds::from_secs(10)
}

fn default_request_timeout() -> Seconds {
    Seconds::from_secs(60)
}

fn default_page_size() -> u32 {
    1000
}

fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

fn default_clean_steps() -> Vec<Value> {
    vec![serde_json::json!({"interface": "deploy", "step": "erase_devices_metadata"})]
}

fn default_domain() -> String {
    "Default".into()
}

/// The node fields and filters the CPI reads need up to 1.50 (`owner`); 1.52 has been the
/// floor since the CPI's first release, and lowering it would need testing against such a server.
pub const LOWEST_MICROVERSION: &str = "1.52";

fn default_min_microversion() -> String {
    LOWEST_MICROVERSION.into()
}

fn default_max_microversion() -> String {
    "1.115".into()
}

fn default_retry_attempts() -> u32 {
    8
}

fn default_retry_initial() -> Seconds {
    Seconds::from_millis(500)
}

fn default_retry_max() -> Seconds {
    Seconds::from_secs(20)
}

fn default_poll_initial() -> Seconds {
    Seconds::from_millis(250)
}

fn default_poll_factor() -> f64 {
    1.5
}

fn default_poll_max() -> Seconds {
    Seconds::from_secs(15)
}

fn default_poll_jitter() -> f64 {
    0.2
}

fn default_deploy_timeout() -> Seconds {
    Seconds::from_secs(3600)
}

fn default_clean_timeout() -> Seconds {
    Seconds::from_secs(3600)
}

fn default_manage_timeout() -> Seconds {
    Seconds::from_secs(600)
}

fn default_power_timeout() -> Seconds {
    Seconds::from_secs(600)
}

/// Parse "1.52" into (1, 52).
pub fn parse_microversion(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

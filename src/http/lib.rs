//! The one HTTP layer under the CPI's three clients (Ironic, the WebDAV repository, the
//! registry): the blocking client builder ([`client`]), the retry policy ([`retry::Policy`], on
//! backon) and sending with retries ([`send`]). It knows nothing of BOSH or Ironic: its failures
//! are [`HttpError`]s, which each caller turns into its own errors.
//!
//! The companion server does not depend on this crate, so it does not build reqwest.

mod builder;
mod error;
pub mod retry;
mod send;

pub use builder::{client, ClientOptions, CONNECT_TIMEOUT};
pub use error::{chain, describe, HttpError};
pub use retry::{Policy, Verdict};
pub use send::{retry_after, send, send_once, Request};

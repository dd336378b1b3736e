//! What the CPI and the companion server share: credentials that never print ([`Secret`]), the
//! redaction of everything that may reach an error, a log line or a terminal ([`redact`]), and
//! the stderr log format ([`logging`]).

pub mod logging;
pub mod redact;
mod seconds;
mod secret;

pub use seconds::Seconds;
pub use secret::Secret;

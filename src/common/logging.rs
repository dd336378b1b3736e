//! stderr logging: the director appends each stderr line to the task's CPI log as it arrives, so
//! every line carries a timestamp and the director's request id.

use std::io::Write;
use std::sync::OnceLock;

static REQUEST_ID: OnceLock<String> = OnceLock::new();

/// Set once per process, when the request is parsed.
pub fn set_request_id(id: Option<&str>) {
    let _ = REQUEST_ID.set(id.unwrap_or("-").to_string());
}

/// `RUST_LOG` selects levels (default `info`); output goes to stderr only, never stdout.
/// dav-server's own debug lines name every request path, unguessable ones included: they show
/// only when `RUST_LOG` names `dav_server`.
pub fn init(program: &'static str) {
    let env = env_logger::Env::default().default_filter_or("info");
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("dav_server"));
    let mut builder = env_logger::Builder::new();
    if !named {
        builder.filter_module("dav_server", log::LevelFilter::Info);
    }
    let _ = builder
        .parse_env(env)
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            let id = REQUEST_ID.get().map(String::as_str).unwrap_or("-");
            writeln!(
                buf,
                "{ts} {:<5} {program} [{id}] {}",
                record.level(),
                record.args()
            )
        })
        .try_init();
}

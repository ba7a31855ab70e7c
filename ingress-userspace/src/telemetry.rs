//! Logging setup: tracing with text or JSON output, filtered by RUST_LOG (default `info`).
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber; safe to call more than once (later calls are ignored).
/// `kernel_log` lets the kernel programs' records (all at debug level) through the filter.
pub fn init(format: LogFormat, kernel_log: bool) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if kernel_log {
        if let Ok(d) = format!("{}=trace", crate::maps::kernel_log::TARGET).parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    JSON.store(format == LogFormat::Json, Relaxed);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON objects: records that are JSON themselves (the access log) then
/// go out as fields of the line instead of a JSON string inside its message.
pub fn json_logs() -> bool {
    JSON.load(Relaxed)
}

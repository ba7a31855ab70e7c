//! Logging setup: tracing with text or JSON output, filtered by RUST_LOG (default `info`),
//! and the controller ConfigMap's `error-log-level` over it while that key is set.
use std::sync::{
    atomic::{AtomicBool, Ordering::Relaxed},
    Mutex, OnceLock,
};

use tracing_subscriber::{
    fmt, layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Layer, Registry,
};

use crate::{cli::LogFormat, snapshot::LogLevel};

/// Installs the global subscriber; safe to call more than once (later calls are ignored).
/// `kernel_log` lets the kernel programs' records (all at debug level) through the filter.
pub fn init(format: LogFormat, kernel_log: bool) {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = with_kernel_log(EnvFilter::new(&base), kernel_log);
    JSON.store(format == LogFormat::Json, Relaxed);
    let (filter, reload) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(Filter {
            base,
            kernel_log,
            reload,
            level: Mutex::new(None),
        });
    }
}

/// The installed filter and how to replace it.
struct Filter {
    /// RUST_LOG's directives (or `info`), back in force when the key goes.
    base: String,
    kernel_log: bool,
    reload: reload::Handle<EnvFilter, Registry>,
    /// The `error-log-level` in force; `None`: `base`.
    level: Mutex<Option<LogLevel>>,
}

static FILTER: OnceLock<Filter> = OnceLock::new();

fn with_kernel_log(mut filter: EnvFilter, kernel_log: bool) -> EnvFilter {
    if kernel_log {
        if let Ok(d) = format!("{}=trace", crate::maps::kernel_log::TARGET).parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// The filter for `error-log-level`: that level for every record but the access log, which
/// `disable-access-log` switches instead.
fn directives(level: LogLevel) -> String {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    format!("{level},{}=info", crate::proxy::access_log::TARGET)
}

/// Applies the controller ConfigMap's `error-log-level` (`None`: RUST_LOG's filter again);
/// nothing to do when it is the one in force, or when this process installed no subscriber
/// (tests, the library embedded).
pub fn set_level(level: Option<LogLevel>) {
    let Some(f) = FILTER.get() else {
        return;
    };
    let mut current = f.level.lock().unwrap_or_else(|e| e.into_inner());
    if *current == level {
        return;
    }
    let filter = match level {
        Some(l) => EnvFilter::new(directives(l)),
        None => EnvFilter::new(&f.base),
    };
    match f.reload.reload(with_kernel_log(filter, f.kernel_log)) {
        Ok(()) => {
            *current = level;
            tracing::info!(?level, "log level changed");
        }
        Err(e) => tracing::warn!(error = %e, "log level not changed"),
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON objects: records that are JSON themselves (the access log) then
/// go out as fields of the line instead of a JSON string inside its message.
pub fn json_logs() -> bool {
    JSON.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_keeps_the_access_log() {
        for l in [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            let d = directives(l);
            assert!(d.ends_with(",access_log=info"), "{d}");
            assert!(EnvFilter::try_new(&d).is_ok(), "{d}");
        }
    }
}

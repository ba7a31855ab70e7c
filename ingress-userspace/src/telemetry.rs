//! Logging setup: tracing with text or JSON output on stderr, filtered by RUST_LOG (default
//! `info`), and the controller ConfigMap's `error-log-level` over it while that key is set.
//! The access log goes to stdout as bare lines, as nginx's does in ingress-nginx's image, so
//! log pipelines read its lines (JSON or `log-format-upstream`) without an envelope.
use std::{
    fmt::Write as _,
    io::Write as _,
    sync::{Mutex, OnceLock},
};

use tracing_subscriber::{
    filter::filter_fn, fmt, layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter,
    Layer, Registry,
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
    let (filter, reload) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        // Colours only for a terminal: a log collector would store the escape codes.
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output.with_filter(filter_fn(|m| !is_access_log(m))))
        .with(AccessLines.with_filter(filter_fn(is_access_log)))
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

fn is_access_log(m: &tracing::Metadata<'_>) -> bool {
    m.target() == crate::proxy::access_log::TARGET
}

/// Writes each access-log record's message to stdout as one line, nothing around it.
struct AccessLines;

impl<S: tracing::Subscriber> Layer<S> for AccessLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut line = Message(String::new());
        event.record(&mut line);
        line.0.push('\n');
        // Whole lines under the lock, so concurrent requests' lines never interleave; a
        // closed stdout loses the access log, not the request.
        let _ = std::io::stdout().lock().write_all(line.0.as_bytes());
    }
}

/// The `message` field of a record.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
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

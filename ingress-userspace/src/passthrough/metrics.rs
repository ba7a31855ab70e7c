//! Passthrough counters for `/metrics`: connections by outcome, bytes, and splices open now.
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

/// Counters of the passthrough side of the HTTPS port.
#[derive(Debug, Default)]
pub struct PassthroughMetrics {
    spliced: AtomicU64,
    copied: AtomicU64,
    failed: AtomicU64,
    terminated: AtomicU64,
    rejected_overloaded: AtomicU64,
    rejected_hello: AtomicU64,
    plain_http: AtomicU64,
    client_bytes: AtomicU64,
    backend_bytes: AtomicU64,
    active: AtomicU64,
}

/// What happened to one connection on the HTTPS port.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// Passed through, bytes moved in the kernel.
    Spliced,
    /// Passed through, bytes copied in userspace.
    Copied,
    /// A passthrough connection that could not be served (backend unreachable, ...).
    Failed,
    /// Handed to the proxy for TLS termination.
    Terminated,
    /// Closed: too many ClientHellos being read at once.
    RejectedOverloaded,
    /// Closed: ClientHello invalid, too large or too slow.
    RejectedHello,
    /// Plain HTTP sent to the HTTPS port: answered 400, closed.
    PlainHttp,
}

impl PassthroughMetrics {
    /// Counts one connection.
    pub fn count(&self, o: Outcome) {
        let c = match o {
            Outcome::Spliced => &self.spliced,
            Outcome::Copied => &self.copied,
            Outcome::Failed => &self.failed,
            Outcome::Terminated => &self.terminated,
            Outcome::RejectedOverloaded => &self.rejected_overloaded,
            Outcome::RejectedHello => &self.rejected_hello,
            Outcome::PlainHttp => &self.plain_http,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Adds the bytes of a finished connection.
    pub fn bytes(&self, client: u64, backend: u64) {
        self.client_bytes.fetch_add(client, Relaxed);
        self.backend_bytes.fetch_add(backend, Relaxed);
    }

    /// A passthrough connection started (`true`) or ended (`false`).
    pub fn active(&self, up: bool) {
        if up {
            self.active.fetch_add(1, Relaxed);
        } else {
            self.active.fetch_sub(1, Relaxed);
        }
    }

    /// Appends the Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP ingress_passthrough_connections_total Connections on the HTTPS port by outcome.");
        let _ = writeln!(out, "# TYPE ingress_passthrough_connections_total counter");
        for (label, c) in [
            ("spliced", &self.spliced),
            ("copied", &self.copied),
            ("failed", &self.failed),
            ("terminated", &self.terminated),
            ("rejected_overloaded", &self.rejected_overloaded),
            ("rejected_hello", &self.rejected_hello),
            ("plain_http", &self.plain_http),
        ] {
            let _ = writeln!(
                out,
                "ingress_passthrough_connections_total{{outcome=\"{label}\"}} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ingress_passthrough_bytes_total Bytes passed through, by direction."
        );
        let _ = writeln!(out, "# TYPE ingress_passthrough_bytes_total counter");
        let _ = writeln!(
            out,
            "ingress_passthrough_bytes_total{{from=\"client\"}} {}",
            self.client_bytes.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "ingress_passthrough_bytes_total{{from=\"backend\"}} {}",
            self.backend_bytes.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ingress_passthrough_active Passthrough connections open now."
        );
        let _ = writeln!(out, "# TYPE ingress_passthrough_active gauge");
        let _ = writeln!(
            out,
            "ingress_passthrough_active {}",
            self.active.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = PassthroughMetrics::default();
        m.count(Outcome::Spliced);
        m.count(Outcome::RejectedHello);
        m.bytes(10, 20);
        m.active(true);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("ingress_passthrough_connections_total{outcome=\"spliced\"} 1"));
        assert!(s.contains("ingress_passthrough_connections_total{outcome=\"rejected_hello\"} 1"));
        assert!(s.contains("ingress_passthrough_bytes_total{from=\"backend\"} 20"));
        assert!(s.contains("ingress_passthrough_active 1"));
    }
}

//! Passthrough counters for `/metrics`: connections by outcome and by ending, bytes, and
//! splices open now.
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use super::{splice::Ending, watch::Side};

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
    /// How served connections ended, by [`ENDINGS`].
    endings: [AtomicU64; 6],
}

/// The labels of `ingress_passthrough_endings_total`, in counter order.
const ENDINGS: [&str; 6] = [
    "graceful",
    "client_reset",
    "backend_reset",
    "client_stalled",
    "backend_stalled",
    "half_open_idle",
];

fn ending_slot(e: Ending) -> usize {
    match e {
        Ending::Graceful => 0,
        Ending::Reset(Side::Client) => 1,
        Ending::Reset(Side::Backend) => 2,
        Ending::Stalled(Side::Client) => 3,
        Ending::Stalled(Side::Backend) => 4,
        Ending::HalfOpenIdle => 5,
    }
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

    /// Counts how a served connection ended.
    pub fn ending(&self, e: Ending) {
        self.endings[ending_slot(e)].fetch_add(1, Relaxed);
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
            "# HELP ingress_passthrough_endings_total How passed-through connections ended: both FINs passed on, a reset (or socket error) on one side, or bytes towards one side stalled."
        );
        let _ = writeln!(out, "# TYPE ingress_passthrough_endings_total counter");
        for (label, c) in ENDINGS.iter().zip(&self.endings) {
            let _ = writeln!(
                out,
                "ingress_passthrough_endings_total{{ending=\"{label}\"}} {}",
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
        m.ending(Ending::Graceful);
        m.ending(Ending::Reset(Side::Backend));
        m.ending(Ending::Reset(Side::Backend));
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("ingress_passthrough_connections_total{outcome=\"spliced\"} 1"));
        assert!(s.contains("ingress_passthrough_connections_total{outcome=\"rejected_hello\"} 1"));
        assert!(s.contains("ingress_passthrough_bytes_total{from=\"backend\"} 20"));
        assert!(s.contains("ingress_passthrough_active 1"));
        assert!(s.contains("ingress_passthrough_endings_total{ending=\"graceful\"} 1\n"));
        assert!(s.contains("ingress_passthrough_endings_total{ending=\"backend_reset\"} 2\n"));
        assert!(s.contains("ingress_passthrough_endings_total{ending=\"client_stalled\"} 0\n"));
    }
}

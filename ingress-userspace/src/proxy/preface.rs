//! A deadline for a new connection to show which protocol it speaks.
//!
//! hyper's header-read timeout starts once the HTTP/1 parser runs, but the automatic
//! HTTP/1-or-HTTP/2 detection before it waits for the first bytes with no timer: a client that
//! connects and sends nothing, or stalls inside the 24-byte HTTP/2 preface, would hold a
//! connection forever. [`PrefaceWatch`] watches the bytes read until the protocol is decided (24
//! bytes seen, or bytes that cannot start the HTTP/2 preface) and signals it; the connection
//! is cut if that does not happen within the header-read timeout.
use std::time::Duration;

use tokio::sync::oneshot;

use super::watched::{ReadWatcher, Watched};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reports when a connection's first bytes have decided the protocol.
#[derive(Debug)]
pub struct PrefaceWatch {
    seen: usize,
    decided: Option<oneshot::Sender<()>>,
}

/// Resolves when the protocol is decided or the connection is gone.
pub struct Decided(oneshot::Receiver<()>);

/// Wraps a client connection in a [`PrefaceWatch`]; the [`Decided`] half goes to whoever
/// enforces the deadline.
pub fn watch_preface<S>(inner: S) -> (Watched<S, PrefaceWatch>, Decided) {
    let (watch, decided) = PrefaceWatch::new();
    (Watched::new(inner, watch), decided)
}

impl PrefaceWatch {
    fn new() -> (Self, Decided) {
        let (tx, rx) = oneshot::channel();
        let w = PrefaceWatch {
            seen: 0,
            decided: Some(tx),
        };
        (w, Decided(rx))
    }

    fn decide(&mut self) {
        if let Some(tx) = self.decided.take() {
            let _ = tx.send(());
        }
    }
}

impl ReadWatcher for PrefaceWatch {
    fn saw(&mut self, bytes: &[u8]) {
        if self.decided.is_none() {
            return;
        }
        if bytes.is_empty() {
            // EOF: nothing more will come; let the connection end on its own.
            self.decide();
            return;
        }
        let end = (self.seen + bytes.len()).min(H2_PREFACE.len());
        let diverged = bytes[..end - self.seen] != H2_PREFACE[self.seen..end];
        self.seen = end;
        if diverged || self.seen == H2_PREFACE.len() {
            self.decide();
        }
    }
}

impl Decided {
    /// Completes only if `timeout` passes before the protocol is decided; never otherwise.
    pub async fn expired(self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.0).await.is_ok() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided_after(chunks: &[&[u8]]) -> bool {
        let (mut w, mut d) = PrefaceWatch::new();
        for c in chunks {
            w.saw(c);
        }
        d.0.try_recv().is_ok()
    }

    #[test]
    fn http1_is_decided_by_its_first_byte() {
        assert!(decided_after(&[b"G"]));
        assert!(decided_after(&[b"GET / HTTP/1.1\r\n"]));
    }

    #[test]
    fn end_of_stream_decides() {
        assert!(decided_after(&[b"PRI", b""]));
    }

    #[test]
    fn h2_preface_is_decided_only_when_complete() {
        assert!(!decided_after(&[]));
        assert!(!decided_after(&[b"PRI * HT"]));
        assert!(!decided_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r"]));
        assert!(decided_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]));
        assert!(decided_after(&[H2_PREFACE, b"\x00\x00\x00\x04"]));
    }

    #[test]
    fn a_prefix_that_diverges_from_the_h2_preface_decides() {
        assert!(decided_after(&[b"PRI * HT", b"XX"]));
        assert!(decided_after(&[b"PRX"]));
    }
}

//! Accepting client connections, for every listener (HTTP, HTTPS, TLS passthrough).
//!
//! A cap on open client connections: at the cap each accept loop pauses with the connection
//! it just accepted, so further ones wait in the listen backlog (as with nginx's
//! `worker_connections`) instead of the process running out of file descriptors halfway
//! through proxying one. Accept errors back off: a
//! connection that was reset while queued is skipped at once, while running out of
//! descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) waits, doubling up to a second,
//! and is logged once per burst rather than on every try.
use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::metrics::ProxyMetrics;

/// First wait after an accept error; it doubles up to [`MAX_BACKOFF`] while errors last.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this long for the same condition.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open-connection cap and the accept backoff, shared by every listener.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    max: usize,
    /// Where pauses and errors are counted (`None`: the admin listener, not counted).
    metrics: Option<Arc<ProxyMetrics>>,
    warnings: Mutex<Warnings>,
}

/// One admitted connection's place under the cap, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _place: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct Warnings {
    /// When the cap was last reported, and pauses since that were not.
    cap: Option<Instant>,
    cap_unreported: u64,
    /// When an accept error was last reported, and errors since that were not.
    error: Option<Instant>,
    error_unreported: u64,
}

impl Admission {
    /// Admits at most `max` open connections at once (clamped to what a semaphore holds).
    pub fn new(max: usize, metrics: Arc<ProxyMetrics>) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        metrics.set_max_connections(max);
        Admission {
            permits: Arc::new(Semaphore::new(max)),
            max,
            metrics: Some(metrics),
            warnings: Mutex::default(),
        }
    }

    /// No cap and no metrics, only the backoff: for the admin listener.
    pub fn unbounded() -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            max: Semaphore::MAX_PERMITS,
            metrics: None,
            warnings: Mutex::default(),
        }
    }

    /// The next connection on `listener`, once there is room for it. At the cap the
    /// connection is accepted but waits unread (and the loop with it, so further ones stay in
    /// the listen backlog): a permit is never held by an idle listener. Dropping the future
    /// while it waits closes that one connection, which only the drain does.
    pub async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, Admitted) {
        let (stream, peer) = self.next(listener).await;
        let place = self.room().await;
        (stream, peer, Admitted { _place: place })
    }

    /// The next connection, backing off while accepting fails for the listener.
    async fn next(&self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match listener.accept().await {
                Ok(accepted) => return accepted,
                Err(e) if per_connection(&e) => {
                    tracing::debug!(error = %e, "a queued connection failed before accept");
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.accept_failed();
                    }
                    self.warn_error(&e, backoff);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// A place under the cap, waiting (and saying so) when there is none.
    async fn room(&self) -> OwnedSemaphorePermit {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return p;
        }
        if let Some(m) = &self.metrics {
            m.accept_paused();
        }
        self.warn_cap();
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the admission semaphore is never closed")
    }

    fn warn_cap(&self) {
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *w;
        if due(&mut w.cap, &mut w.cap_unreported) {
            let since = std::mem::take(&mut w.cap_unreported);
            tracing::warn!(
                max_connections = self.max,
                pauses_not_reported = since,
                "open client connections at --max-connections: new ones wait in the listen \
                 backlog until one closes"
            );
        }
    }

    fn warn_error(&self, e: &io::Error, backoff: Duration) {
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *w;
        if due(&mut w.error, &mut w.error_unreported) {
            let since = std::mem::take(&mut w.error_unreported);
            tracing::warn!(
                error = %e,
                retry_in = ?backoff,
                errors_not_reported = since,
                "accept failed (out of file descriptors? lower --max-connections or raise \
                 the open-file limit)"
            );
        }
    }
}

/// Whether a warning is due now (at most one per [`WARN_EVERY`]); if not, one more is
/// counted as unreported.
fn due(last: &mut Option<Instant>, unreported: &mut u64) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
        *unreported += 1;
        return false;
    }
    *last = Some(now);
    true
}

/// Errors about one queued connection (the listener itself is fine): try the next at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The default cap: half the open-file limit (each proxied connection needs at least two
/// descriptors, the client's and the upstream's), at least one.
pub fn default_max_connections(open_files: u64) -> usize {
    usize::try_from(open_files / 2).unwrap_or(usize::MAX).max(1)
}

/// Raises the soft open-file limit to the hard one, as servers do at start (the soft default
/// of 1024 is for interactive shells). Best effort.
pub fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise the open-file limit");
        }
    }
}

/// The soft open-file limit in force (`None`: unlimited).
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn default_cap_is_half_the_open_files() {
        assert_eq!(default_max_connections(1024), 512);
        assert_eq!(default_max_connections(1), 1);
        assert_eq!(default_max_connections(0), 1);
        assert_eq!(default_max_connections(u64::MAX), (u64::MAX / 2) as usize);
    }

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_skip() {
        let (mut last, mut unreported) = (None, 0);
        assert!(due(&mut last, &mut unreported));
        assert!(!due(&mut last, &mut unreported));
        assert!(!due(&mut last, &mut unreported));
        assert_eq!(unreported, 2);
        last = last.map(|t| t - WARN_EVERY);
        assert!(due(&mut last, &mut unreported));
    }

    /// At the cap the next connection is not admitted until an admitted one is dropped;
    /// then it is. Two listeners sharing the cap park no permit while idle.
    #[tokio::test]
    async fn at_the_cap_accepting_waits_for_a_connection_to_close() {
        let metrics = Arc::new(ProxyMetrics::default());
        let admission = Arc::new(Admission::new(2, metrics.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // An idle second listener waiting on the same cap.
        let idle = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let other = admission.clone();
        let idle_loop = tokio::spawn(async move { other.accept(&idle).await });
        tokio::task::yield_now().await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"x").await.expect("write");
            clients.push(c);
        }
        let (_a, _, first) = admission.accept(&listener).await;
        let (_b, _, _second) =
            tokio::time::timeout(Duration::from_secs(5), admission.accept(&listener))
                .await
                .expect("the second is admitted: the idle listener holds no place");
        assert_eq!(metrics.accept_pauses(), 0);
        let third = admission.accept(&listener);
        tokio::pin!(third);
        let waited = tokio::time::timeout(Duration::from_millis(200), &mut third).await;
        assert!(
            waited.is_err(),
            "a third connection was admitted over a cap of 2"
        );
        assert_eq!(metrics.accept_pauses(), 1);
        drop(first);
        let (_c, _, _) = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third connection is admitted once the first is dropped");
        idle_loop.abort();
    }
}

//! Idle client connections: one with no request in progress for the idle limit is closed
//! (HTTP/2: GOAWAY first). hyper times out the gaps between HTTP/1 requests itself, but an
//! HTTP/2 connection whose client answers pings would otherwise stay open with no stream, and
//! so would one that never starts a request: hyper-util's HTTP/1-or-2 detection waits for the
//! first bytes with no timer. The clock starts at connect, so a silent client, or one stalled
//! inside the HTTP/2 preface, is cut at the same limit (graceful shutdown cancels detection).
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Requests in progress on one connection, and since when there have been none; and how many
/// it has served, to retire it after `max_requests`.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<(usize, Instant)>,
    served: AtomicUsize,
    max_requests: usize,
    retire: Notify,
}

/// One request in progress; it ends when this is dropped (with the response body).
#[derive(Debug)]
pub struct ActiveStream(Arc<Activity>);

impl Activity {
    /// A connection with nothing in progress yet, retired after `max_requests` (0: never).
    pub fn new(max_requests: usize) -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new((0, Instant::now())),
            served: AtomicUsize::new(0),
            max_requests,
            retire: Notify::new(),
        })
    }

    /// Marks a request as started; `counted` ones count towards `max_requests`.
    pub fn start(self: &Arc<Self>, counted: bool) -> ActiveStream {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        if counted {
            let served = self.served.fetch_add(1, Relaxed) + 1;
            if self.max_requests != 0 && served == self.max_requests {
                self.retire.notify_one();
            }
        }
        ActiveStream(self.clone())
    }

    /// Completes once the connection has started `max_requests` requests.
    pub async fn retired(&self) {
        if self.max_requests == 0 {
            return std::future::pending().await;
        }
        self.retire.notified().await;
    }

    /// Requests in progress, and when the last one ended.
    fn snapshot(&self) -> (usize, Instant) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completes once no request has been in progress for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let (active, since) = self.snapshot();
            let wait = if active == 0 {
                match limit.checked_sub(since.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            } else {
                limit
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(1);
        if s.0 == 0 {
            s.1 = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends() {
        let a = Activity::new(0);
        let limit = Duration::from_secs(10);
        let first = a.start(true);
        let second = a.start(true);
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(first);
        // One request still in progress: not idle however long it runs.
        assert!(
            tokio::time::timeout(Duration::from_secs(25), a.idle_for(limit))
                .await
                .is_err()
        );
        drop(second);
        let started = tokio::time::Instant::now();
        a.idle_for(limit).await;
        assert!(started.elapsed() >= Duration::from_secs(9));
    }

    #[tokio::test]
    async fn retired_after_max_requests() {
        let a = Activity::new(3);
        let wait = tokio::time::timeout(Duration::from_millis(50), a.retired());
        assert!(wait.await.is_err(), "retired before any request");
        for _ in 0..2 {
            drop(a.start(true));
        }
        let wait = tokio::time::timeout(Duration::from_millis(50), a.retired());
        assert!(wait.await.is_err(), "retired after 2 of 3");
        drop(a.start(true));
        tokio::time::timeout(Duration::from_secs(1), a.retired())
            .await
            .expect("retired after 3");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_from_the_start() {
        let a = Activity::new(0);
        let started = tokio::time::Instant::now();
        a.idle_for(Duration::from_secs(5)).await;
        assert!(started.elapsed() >= Duration::from_secs(4));
    }
}

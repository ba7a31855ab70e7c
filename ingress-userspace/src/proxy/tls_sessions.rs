//! TLS session resumption as the `ssl-session-*` keys set it: tickets and a session cache,
//! each optional, and a timeout that rustls does not keep by itself (a ticket is otherwise
//! good until its key retires, and a cached session until the cache drops it). The timeout
//! is kept by stamping each ticket's plaintext and each cached value with its issue time.
use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::server::{NoServerSessionStorage, ProducesTickets, StoresServerSessions};

use super::TlsSetupError;
use crate::snapshot::TlsSessions;

/// The ticket maker for `s`: rustls's rotating one, stamped when there is a timeout, or one
/// that never makes tickets.
pub fn ticketer(s: &TlsSessions) -> Result<Arc<dyn ProducesTickets>, TlsSetupError> {
    if !s.tickets {
        return Ok(Arc::new(NoTickets));
    }
    let inner = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(match s.timeout {
        Some(t) => Arc::new(Stamped { inner, timeout: t }),
        None => inner,
    })
}

/// The session store for `s`: a bounded in-memory cache, stamped when there is a timeout,
/// or none.
pub fn storage(s: &TlsSessions) -> Arc<dyn StoresServerSessions> {
    if !s.cache {
        return Arc::new(NoServerSessionStorage {});
    }
    let inner = rustls::server::ServerSessionMemoryCache::new(s.cache_entries.max(1));
    match s.timeout {
        Some(t) => Arc::new(Stamped { inner, timeout: t }),
        None => inner,
    }
}

/// rustls's own "never" ticketer is private.
#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// `inner` with each value prefixed by its issue time (seconds since the epoch, 8 bytes) and
/// refused once older than `timeout`.
struct Stamped<T: ?Sized> {
    timeout: Duration,
    inner: Arc<T>,
}

impl<T: ?Sized> fmt::Debug for Stamped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stamped")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<T: ?Sized> Stamped<T> {
    fn stamp(value: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + value.len());
        v.extend_from_slice(&now_secs().to_be_bytes());
        v.extend_from_slice(value);
        v
    }

    /// The value without its stamp, if still within the timeout.
    fn unstamp(&self, stamped: Vec<u8>) -> Option<Vec<u8>> {
        let (at, _) = stamped.split_first_chunk::<8>()?;
        let age = now_secs().saturating_sub(u64::from_be_bytes(*at));
        (age <= self.timeout.as_secs()).then(|| stamped[8..].to_vec())
    }
}

impl<T: ProducesTickets + ?Sized> ProducesTickets for Stamped<T> {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
    fn lifetime(&self) -> u32 {
        let timeout = u32::try_from(self.timeout.as_secs()).unwrap_or(u32::MAX);
        timeout.min(self.inner.lifetime())
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&Self::stamp(plain))
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.unstamp(self.inner.decrypt(cipher)?)
    }
}

impl<T: StoresServerSessions + ?Sized> StoresServerSessions for Stamped<T> {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, Self::stamp(&value))
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.unstamp(self.inner.get(key)?)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.unstamp(self.inner.take(key)?)
    }
    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_values_expire_and_round_trip() {
        let s = TlsSessions {
            timeout: Some(Duration::from_secs(60)),
            ..TlsSessions::default()
        };
        let t = ticketer(&s).expect("ticketer");
        assert!(t.enabled());
        assert_eq!(t.lifetime(), 60);
        let c = t.encrypt(b"session").expect("ticket");
        assert_eq!(t.decrypt(&c).as_deref(), Some(&b"session"[..]));
        let store = storage(&s);
        assert!(store.put(b"k".to_vec(), b"v".to_vec()));
        assert_eq!(store.get(b"k").as_deref(), Some(&b"v"[..]));
        assert_eq!(store.take(b"k").as_deref(), Some(&b"v"[..]));

        // A value stamped long ago is refused.
        let old = Stamped {
            inner: Arc::new(()),
            timeout: Duration::from_secs(60),
        };
        let mut stale = (now_secs() - 61).to_be_bytes().to_vec();
        stale.extend_from_slice(b"v");
        assert_eq!(old.unstamp(stale), None);
        assert_eq!(old.unstamp(vec![1, 2]), None, "too short to hold a stamp");

        let off = TlsSessions {
            tickets: false,
            cache: false,
            ..TlsSessions::default()
        };
        assert!(!ticketer(&off).expect("none").enabled());
        assert!(!storage(&off).can_cache());
    }
}

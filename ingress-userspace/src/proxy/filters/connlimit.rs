//! `limit-connections`: requests in progress per (Ingress, client address), as nginx's
//! `limit_conn` counts them (HTTP/2 streams each count); the one over the limit gets 503. A
//! request holds its place until its response has been sent. Entries exist only while a
//! request holds them, so memory follows the open requests.
use std::{
    collections::HashMap,
    hash::BuildHasher,
    net::IpAddr,
    sync::{Arc, Mutex},
};

const SHARDS: usize = 16;

type Key = (u64, IpAddr);

/// Requests in progress by (zone, client).
#[derive(Debug)]
pub struct ConnLimiter {
    shards: Box<[Mutex<HashMap<Key, u32>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for ConnLimiter {
    fn default() -> Self {
        ConnLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }
}

/// A request's place under a limit, given back when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    key: Key,
}

impl ConnLimiter {
    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, u32>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// A place for one more request of `ip` in `zone`, or `None` when `max` are in progress.
    pub fn acquire(self: &Arc<Self>, zone: u64, ip: IpAddr, max: u32) -> Option<ConnPermit> {
        let key = (zone, ip);
        let mut map = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            limiter: self.clone(),
            key,
        })
    }

    /// Requests in progress for `ip` in `zone`.
    pub fn in_progress(&self, zone: u64, ip: IpAddr) -> u32 {
        let key = (zone, ip);
        let map = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key).copied().unwrap_or(0)
    }

    /// (zone, client) pairs with a request in progress.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no request holds a place.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut map = self
            .limiter
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_zone_and_client_and_given_back() {
        let l = Arc::new(ConnLimiter::default());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let p1 = l.acquire(1, a, 2).expect("first");
        let p2 = l.acquire(1, a, 2).expect("second");
        assert!(l.acquire(1, a, 2).is_none(), "third over the limit");
        // Another client, or another Ingress, has places of its own.
        let pb = l.acquire(1, b, 2).expect("other client");
        let pz = l.acquire(2, a, 2).expect("other zone");
        assert_eq!(l.in_progress(1, a), 2);
        drop(p1);
        let p3 = l.acquire(1, a, 2).expect("a place came back");
        drop((p2, p3, pb, pz));
        assert!(l.is_empty(), "no entry outlives its requests");
        // A limit of zero admits nobody and keeps nothing.
        assert!(l.acquire(3, a, 0).is_none());
        assert!(l.is_empty());
    }
}

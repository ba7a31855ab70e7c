//! `limit-rps` / `limit-rpm`: a token bucket per (Ingress, limit, client address), holding
//! `limit-burst-multiplier` (5 by default, as ingress-nginx) seconds' or minutes' worth plus
//! the request at hand, answered 503 when empty: nginx's `limit_req burst=n*multiplier
//! nodelay` lets a request through while its excess is at most the burst, so a fresh client
//! gets `burst + 1`. Memory is bounded: each shard holds at most `MAX_PER_SHARD`
//! buckets and drops idle (refilled) ones first. Sharded locks, taken only on routes that
//! have a limit.
use std::{collections::HashMap, hash::BuildHasher, net::IpAddr, sync::Mutex, time::Instant};

use crate::snapshot::RoutePolicy;

const SHARDS: usize = 16;
const MAX_PER_SHARD: usize = 4096;
/// Refill rate and size of a bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Tokens a bucket holds: the burst and one.
    pub burst: f64,
}

impl Limit {
    /// `n` requests per second, bursts of `n * multiplier` beyond the first.
    pub fn per_second(n: u32, multiplier: u32) -> Self {
        Limit {
            per_sec: f64::from(n),
            burst: f64::from(n) * f64::from(multiplier) + 1.0,
        }
    }

    /// `n` requests per minute, bursts of `n * multiplier` beyond the first.
    pub fn per_minute(n: u32, multiplier: u32) -> Self {
        Limit {
            per_sec: f64::from(n) / 60.0,
            burst: f64::from(n) * f64::from(multiplier) + 1.0,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets by (zone, client).
type Buckets = HashMap<(u64, IpAddr), Bucket>;

/// Token buckets for every limited Ingress.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Box<[Mutex<Buckets>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }
}

impl RateLimiter {
    /// Takes a token for `ip` in `zone` under `limit`; false when the bucket is empty.
    pub fn check(&self, zone: u64, ip: IpAddr, limit: Limit, now: Instant) -> bool {
        if limit.per_sec <= 0.0 {
            return true;
        }
        let key = (zone, ip);
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(|e| e.into_inner());
        let (rate, burst) = (limit.per_sec, limit.burst);
        if buckets.len() >= MAX_PER_SHARD && !buckets.contains_key(&key) {
            evict(&mut buckets, rate, burst, now);
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Buckets held (for tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a request from `client` passes the route's `limit-rps` and `limit-rpm` (each with
/// a bucket of its own in `zone`); clients in `limit-whitelist` are not limited.
pub fn allowed(limiter: &RateLimiter, policy: &RoutePolicy, zone: u64, client: IpAddr) -> bool {
    if policy.limit_rps.is_none() && policy.limit_rpm.is_none() {
        return true;
    }
    if exempt(policy, client) {
        return true;
    }
    let now = Instant::now();
    let m = policy.limit_burst_multiplier;
    policy
        .limit_rps
        .is_none_or(|n| limiter.check(zone, client, Limit::per_second(n, m), now))
        && policy.limit_rpm.is_none_or(|n| {
            // A zone id of its own: the per-minute bucket is not the per-second one.
            limiter.check(!zone, client, Limit::per_minute(n, m), now)
        })
}

/// Whether `client` is in `limit-whitelist` / `limit-allowlist`, which every limit skips.
pub fn exempt(policy: &RoutePolicy, client: IpAddr) -> bool {
    policy.limit_exempt.iter().any(|n| n.contains(&client))
}

/// Drops buckets that have refilled (idle clients); if none has, the half least recently used.
fn evict(buckets: &mut Buckets, rate: f64, burst: f64, now: Instant) {
    buckets.retain(|_, b| {
        b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
    });
    if buckets.len() >= MAX_PER_SHARD {
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.last).collect();
        ages.sort_unstable();
        let cutoff = ages[ages.len() / 2];
        buckets.retain(|_, b| b.last > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let two = Limit::per_second(2, 5);
        // nginx's `limit_req rate=2r/s burst=10 nodelay`: 11 at once.
        let passed = (0..20).filter(|_| rl.check(1, ip, two, t0)).count();
        assert_eq!(passed, 11);
        assert!(!rl.check(1, ip, two, t0));
        assert!(rl.check(1, ip, two, t0 + Duration::from_millis(600)));
        // Another zone or client has its own bucket.
        assert!(rl.check(2, ip, two, t0));
        // Per minute: 30 a minute, bursts of 30 (multiplier 1) and one, then one every 2 s.
        let rpm = Limit::per_minute(30, 1);
        let passed = (0..40).filter(|_| rl.check(3, ip, rpm, t0)).count();
        assert_eq!(passed, 31);
        assert!(!rl.check(3, ip, rpm, t0 + Duration::from_millis(1500)));
        assert!(rl.check(3, ip, rpm, t0 + Duration::from_millis(2100)));
    }

    #[test]
    fn memory_is_bounded() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..(SHARDS * MAX_PER_SHARD * 2) as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            rl.check(
                1,
                ip,
                Limit::per_second(1, 5),
                t0 + Duration::from_micros(u64::from(i)),
            );
        }
        assert!(rl.len() <= SHARDS * MAX_PER_SHARD, "{}", rl.len());
    }
}

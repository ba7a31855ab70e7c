//! Ports for child processes. A port picked by binding `:0` and then released can be handed
//! by the kernel to another test's `bind(:0)` before the child binds it ("address already in
//! use"). Ports from below the kernel's ephemeral range are never handed out that way, so
//! only these pickers can collide, and they remember what they gave.
use std::{
    collections::HashSet,
    net::{SocketAddr, TcpListener},
    sync::Mutex,
};

/// Ports given out by this process, and the state of the generator picking them.
static GIVEN: Mutex<Option<(HashSet<u16>, u64)>> = Mutex::new(None);

/// A loopback address whose port nothing holds now and that the kernel will not assign to a
/// `bind(:0)`: for `ingressd --http-addr` and the like.
pub fn free_loopback_addr() -> SocketAddr {
    let low = ephemeral_low();
    let (from, to) = (10_000u16, low.saturating_sub(1).max(10_001));
    let mut state = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let (given, seed) = state.get_or_insert_with(|| (HashSet::new(), seed()));
    for _ in 0..1_000 {
        // xorshift64: processes started together still draw different ports (see `seed`).
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let port = from + (*seed % u64::from(to - from)) as u16;
        if given.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            if let Ok(addr) = l.local_addr() {
                given.insert(port);
                return addr;
            }
        }
    }
    // Nothing free below the ephemeral range (never seen): fall back to the kernel's pick.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// A seed from the clock and the process id, never zero.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

/// The first port of the kernel's ephemeral range (32768 unless configured otherwise).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let low = ephemeral_low();
        let addrs: Vec<SocketAddr> = (0..50).map(|_| free_loopback_addr()).collect();
        let distinct: HashSet<u16> = addrs.iter().map(|a| a.port()).collect();
        assert_eq!(distinct.len(), addrs.len());
        for a in &addrs {
            assert!(a.port() < low, "{a}");
            assert!(TcpListener::bind(a).is_ok(), "{a}");
        }
    }
}

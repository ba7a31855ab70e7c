//! Keeps the neighbour entries of backends resolved, so `bpf_fib_lookup` finds their MAC on
//! the first packet of a flow instead of passing it to the stack.
//!
//! Uses kernel-managed neighbour entries (`ip neigh ... managed`, Linux 5.16+): the kernel
//! resolves them and refreshes them on its own, as Cilium does for its nodes.
use std::{net::IpAddr, process::Command};

use tracing::debug;

/// The next hop towards `addr`: (gateway or `addr` itself, egress device).
fn next_hop(addr: IpAddr) -> Option<(IpAddr, String)> {
    let out = Command::new("ip")
        .args(["-o", "route", "get", &addr.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
    };
    let dev = after("dev")?.to_string();
    if dev == "lo" {
        return None;
    }
    let via = after("via").and_then(|v| v.parse().ok()).unwrap_or(addr);
    Some((via, dev))
}

/// Whether the neighbour entry of `hop` on `dev` is static (`permanent` or `noarp`).
fn is_static(hop: IpAddr, dev: &str) -> bool {
    Command::new("ip")
        .args(["neigh", "show", &hop.to_string(), "dev", dev])
        .output()
        .is_ok_and(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.contains("PERMANENT") || text.contains("NOARP")
        })
}

/// Asks the kernel to resolve and keep resolved the next hop of each address. Best effort:
/// failures are logged at debug and the stack resolves on first use instead.
pub fn keep_resolved(addrs: impl IntoIterator<Item = IpAddr>) {
    let mut seen = std::collections::BTreeSet::new();
    for addr in addrs {
        let Some((hop, dev)) = next_hop(addr) else {
            continue;
        };
        if !seen.insert((hop, dev.clone())) {
            continue;
        }
        if is_static(hop, &dev) {
            // An operator's or the CNI's static entry (a fixed MAC) is theirs to keep;
            // `replace` would turn it into a managed one and forget the MAC.
            debug!(%hop, %dev, "static neighbour entry left as it is");
            continue;
        }
        let status = Command::new("ip")
            .args(["neigh", "replace", &hop.to_string(), "dev", &dev, "managed"])
            .output();
        match status {
            Ok(o) if o.status.success() => debug!(%hop, %dev, "managed neighbour entry"),
            Ok(o) => {
                debug!(%hop, %dev, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "ip neigh failed")
            }
            Err(err) => debug!(%hop, %dev, error = %err, "ip neigh failed"),
        }
    }
}

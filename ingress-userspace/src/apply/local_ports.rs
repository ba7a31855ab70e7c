//! Ports a socket of this host already serves, so an L4 entry never takes them over.
//!
//! The XDP program answers a VIP:port before the stack sees the packet. A `tcp-services`
//! entry for port 22 or 10250 on the node's address would silently cut sshd or the kubelet
//! off, and one for 80 would take the proxy's own HTTP listener, where nginx fails to bind
//! and ingress-nginx refuses its reserved ports. Such entries are left out of the kernel
//! maps with a warning.
use std::{
    borrow::Cow,
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::snapshot::{L4Protocol, L4Service};

/// An L4 entry as the check sees it.
type Entry = (IpAddr, u16, L4Protocol);

fn entry(s: &L4Service) -> Entry {
    (s.vip, s.port, s.protocol)
}

/// Leaves out of each snapshot's L4 services those whose port a socket of this host
/// serves. The socket tables are read only when the entries change (most snapshots change
/// endpoints only): on a busy node they are long.
#[derive(Debug, Default)]
pub struct LocalPortFilter {
    /// The entries as last checked, and those of them a socket serves.
    checked: Vec<Entry>,
    taken: BTreeSet<Entry>,
}

impl LocalPortFilter {
    /// `services` without the entries a local socket serves, each warned about once per
    /// change of the entries; `ours` are VIP:ports whose socket is ingressd's own
    /// (`apply::local_l4`), which never count.
    pub fn keep<'a>(
        &mut self,
        services: &'a [L4Service],
        ours: &BTreeSet<(SocketAddr, L4Protocol)>,
    ) -> Cow<'a, [L4Service]> {
        let entries: Vec<Entry> = services.iter().map(entry).collect();
        if entries != self.checked {
            let mut bound = bound();
            // Only our very sockets: a wildcard or another socket on the port still counts.
            for (addr, protocol) in ours {
                bound.remove(&Bound {
                    protocol: *protocol,
                    addr: addr.ip(),
                    port: addr.port(),
                });
            }
            self.taken.clear();
            for s in services.iter().filter(|s| taken(&bound, s)) {
                tracing::warn!(vip = %s.vip, port = s.port, protocol = ?s.protocol,
                    configmap = %format!("{}/{}", s.origin.namespace, s.origin.name),
                    "L4 service left out: a socket of this host already serves that port");
                self.taken.insert(entry(s));
            }
            self.checked = entries;
        }
        if self.taken.is_empty() {
            return Cow::Borrowed(services);
        }
        Cow::Owned(
            services
                .iter()
                .filter(|s| !self.taken.contains(&entry(s)))
                .cloned()
                .collect(),
        )
    }
}

/// A socket that takes connections (TCP `LISTEN`) or datagrams (unconnected UDP) on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bound {
    pub protocol: L4Protocol,
    pub addr: IpAddr,
    pub port: u16,
}

/// The sockets of this network namespace, from `/proc/net/{tcp,tcp6,udp,udp6}`. A table
/// that cannot be read (no IPv6) counts as empty.
pub fn bound() -> BTreeSet<Bound> {
    let mut out = BTreeSet::new();
    for (file, protocol, state) in [
        ("/proc/net/tcp", L4Protocol::Tcp, TCP_LISTEN),
        ("/proc/net/tcp6", L4Protocol::Tcp, TCP_LISTEN),
        ("/proc/net/udp", L4Protocol::Udp, UDP_UNCONNECTED),
        ("/proc/net/udp6", L4Protocol::Udp, UDP_UNCONNECTED),
    ] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(parse(&text, protocol, state));
        }
    }
    out
}

const TCP_LISTEN: &str = "0A";
/// `TCP_CLOSE`, which an unconnected UDP socket shows.
const UDP_UNCONNECTED: &str = "07";

/// The sockets of one `/proc/net` table in `state`; lines that do not parse are skipped.
fn parse(text: &str, protocol: L4Protocol, state: &str) -> Vec<Bound> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let local = fields.nth(1)?;
            let st = fields.nth(1)?;
            if st != state {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            Some(Bound {
                protocol,
                addr: proc_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
            })
        })
        .collect()
}

/// An address as the kernel prints it: 32-bit words in hex, each in host byte order.
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// Whether a socket in `bound` already serves `svc`'s VIP and port: one on that address, or
/// on the wildcard of its family (IPv6's also takes IPv4 unless it is v6-only, which the
/// tables do not say, so it counts).
pub fn taken(bound: &BTreeSet<Bound>, svc: &L4Service) -> bool {
    let on = |addr: IpAddr| {
        bound.contains(&Bound {
            protocol: svc.protocol,
            addr,
            port: svc.port,
        })
    };
    on(svc.vip)
        || on(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        || (svc.vip.is_ipv4() && on(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ObjectRef;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1076 1 0 100 0 0 10 0
   1: 0A0013C6:2A7A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1077 1 0 100 0 0 10 0
   2: 0100007F:A309 0100007F:8760 06 00000000:00000000 03:0000053B 00000000     0        0 0 3 0
   3: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
";

    fn svc(vip: &str, port: u16, protocol: L4Protocol) -> L4Service {
        L4Service {
            origin: ObjectRef::default(),
            vip: vip.parse().expect("ip"),
            port,
            protocol,
            backends: Vec::new(),
        }
    }

    #[test]
    fn listening_sockets_are_read_in_the_kernels_byte_order() {
        let tcp = parse(TCP, L4Protocol::Tcp, TCP_LISTEN);
        assert_eq!(
            tcp,
            vec![
                Bound {
                    protocol: L4Protocol::Tcp,
                    addr: "0.0.0.0".parse().expect("ip"),
                    port: 22,
                },
                Bound {
                    protocol: L4Protocol::Tcp,
                    addr: "198.19.0.10".parse().expect("ip"),
                    port: 10874,
                },
            ],
            "established sockets and bad lines are not listeners"
        );
        let tcp6 = parse(TCP6, L4Protocol::Tcp, TCP_LISTEN);
        assert_eq!(tcp6[0].addr, "::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(tcp6[0].port, 80);
    }

    #[test]
    fn a_vip_port_is_taken_by_its_address_or_a_wildcard() {
        let mut bound: BTreeSet<Bound> = parse(TCP, L4Protocol::Tcp, TCP_LISTEN)
            .into_iter()
            .collect();
        // sshd on every address: port 22 of any IPv4 VIP.
        assert!(taken(&bound, &svc("192.0.2.1", 22, L4Protocol::Tcp)));
        assert!(!taken(&bound, &svc("192.0.2.1", 22, L4Protocol::Udp)));
        assert!(!taken(&bound, &svc("2001:db8::1", 22, L4Protocol::Tcp)));
        // A listener on one address only takes that address.
        assert!(taken(&bound, &svc("198.19.0.10", 10874, L4Protocol::Tcp)));
        assert!(!taken(&bound, &svc("198.19.0.11", 10874, L4Protocol::Tcp)));
        // An IPv6 wildcard listener takes both families.
        bound.insert(Bound {
            protocol: L4Protocol::Tcp,
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 443,
        });
        assert!(taken(&bound, &svc("192.0.2.1", 443, L4Protocol::Tcp)));
        assert!(taken(&bound, &svc("2001:db8::1", 443, L4Protocol::Tcp)));
        assert!(!taken(&bound, &svc("192.0.2.1", 9000, L4Protocol::Tcp)));
    }

    #[test]
    fn the_filter_leaves_out_a_served_port_and_keeps_the_rest() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let served = l.local_addr().expect("addr").port();
        let free = {
            let f = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            f.local_addr().expect("addr").port()
        };
        let services = [
            svc("127.0.0.1", served, L4Protocol::Tcp),
            svc("127.0.0.1", free, L4Protocol::Tcp),
        ];
        let mut filter = LocalPortFilter::default();
        let none = BTreeSet::new();
        let kept = filter.keep(&services, &none);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].port, free);
        // The same entries again: the same answer, from the last check.
        assert_eq!(filter.keep(&services, &none).len(), 1);
        // Nothing taken: the snapshot's own slice.
        assert!(matches!(
            filter.keep(&services[1..], &none),
            Cow::Borrowed(_)
        ));
        // A listener of ingressd's own for local clients does not count (the entries
        // changed since the last check, so they are checked again).
        let ours = [(SocketAddr::from(([127, 0, 0, 1], served)), L4Protocol::Tcp)].into();
        assert_eq!(filter.keep(&services, &ours).len(), 2);
        drop(l);
        // Ours does not hide another socket on the port: a wildcard listener still counts.
        let wild = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = wild.local_addr().expect("addr").port();
        let ours = [(SocketAddr::from(([127, 0, 0, 1], port)), L4Protocol::Tcp)].into();
        let services = [svc("127.0.0.1", port, L4Protocol::Tcp)];
        assert!(filter.keep(&services, &ours).is_empty());
    }

    #[test]
    fn this_hosts_own_tables_parse() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert!(taken(&bound(), &svc("127.0.0.1", port, L4Protocol::Tcp)));
    }
}

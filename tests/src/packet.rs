//! Packet builder and checker for the XDP tests and benchmarks: Ethernet (+802.1Q),
//! IPv4/IPv6, TCP/UDP, with correct checksums, and a parser that verifies them again.
use std::net::IpAddr;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp { flags: u8 },
    Udp,
}

/// TCP flag bits.
pub const SYN: u8 = 0x02;
/// TCP ACK.
pub const ACK: u8 = 0x10;

/// A packet to build.
#[derive(Clone, Debug)]
pub struct Spec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    pub ttl: u8,
    pub payload: Vec<u8>,
    /// IPv4 only: leave the UDP checksum zero.
    pub udp_no_csum: bool,
    /// IPv4 only: set DF (don't fragment), as TCP stacks do.
    pub dont_fragment: bool,
}

impl Spec {
    /// A TCP packet with the given flags and a small payload.
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Spec {
        Spec {
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            vlan: None,
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
            sport,
            dport,
            l4: L4::Tcp { flags },
            ttl: 64,
            payload: b"hello".to_vec(),
            udp_no_csum: false,
            dont_fragment: true,
        }
    }

    /// A UDP datagram.
    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Spec {
        Spec {
            l4: L4::Udp,
            ..Spec::tcp(src, sport, dst, dport, 0)
        }
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        self.frame(self.proto(), &self.l4_bytes())
    }

    /// The frame with this spec's Ethernet and IP headers around `l4` of protocol `proto`.
    fn frame(&self, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + l4.len());
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        if let Some(tag) = self.vlan {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            out.extend_from_slice(&tag.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = (20 + l4.len()) as u16;
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&total.to_be_bytes());
                let df = if self.dont_fragment { 0x40 } else { 0 };
                ip.extend_from_slice(&[0x12, 0x34, df, 0x00, self.ttl, proto, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let c = checksum(&ip, 0);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.extend_from_slice(&0x86DDu16.to_be_bytes());
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                out.extend_from_slice(&[proto, self.ttl]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed address families in a test packet"),
        }
        out.extend_from_slice(l4);
        out
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        let csum_at = match self.l4 {
            L4::Tcp { flags } => {
                l4.extend_from_slice(&1000u32.to_be_bytes());
                l4.extend_from_slice(&0u32.to_be_bytes());
                l4.extend_from_slice(&[0x50, flags]);
                l4.extend_from_slice(&65535u16.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
                16
            }
            L4::Udp => {
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                6
            }
        };
        l4.extend_from_slice(&self.payload);
        if !(self.udp_no_csum && matches!(self.l4, L4::Udp)) {
            let mut c = checksum(&l4, pseudo_sum(self.src, self.dst, self.proto(), l4.len()));
            if c == 0 && matches!(self.l4, L4::Udp) {
                c = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        l4
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp => 17,
        }
    }
}

fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Internet checksum of `data` with a starting sum.
pub fn checksum(data: &[u8], initial: u64) -> u16 {
    !fold(sum16(data, initial))
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        _ => {}
    }
    acc + u64::from(proto) + len as u64
}

/// An ICMP error frame from `src` to `dst` (ICMPv6 for IPv6 addresses) of type `kind` and
/// `code`, with `info` in the second header word (the MTU of a "too big"), quoting the first
/// `quote` bytes of the IP packet in the untagged `frame`; checksums correct.
pub fn icmp_error(
    src: &str,
    dst: &str,
    kind: u8,
    code: u8,
    info: u32,
    frame: &[u8],
    quote: usize,
) -> Vec<u8> {
    let spec = Spec::udp(src, 0, dst, 0);
    let v6 = spec.src.is_ipv6();
    let proto = if v6 { 58 } else { 1 };
    let mut msg = vec![kind, code, 0, 0];
    msg.extend_from_slice(&info.to_be_bytes());
    msg.extend_from_slice(&frame[14..(14 + quote).min(frame.len())]);
    let initial = if v6 {
        pseudo_sum(spec.src, spec.dst, proto, msg.len())
    } else {
        0
    };
    let c = checksum(&msg, initial);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    spec.frame(proto, &msg)
}

/// An ICMP error frame (untagged) taken apart, with its checksums verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpParsed {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub kind: u8,
    pub code: u8,
    pub info: u32,
    /// Outer IPv4 header checksum verified (always true for IPv6).
    pub ip_csum_ok: bool,
    /// ICMP checksum verified (over ICMPv6's pseudo-header too).
    pub icmp_csum_ok: bool,
    /// The quoted packet's addresses and ports.
    pub quoted: (IpAddr, u16, IpAddr, u16),
    /// Quoted IPv4 header checksum verified (always true for IPv6).
    pub quoted_ip_csum_ok: bool,
}

/// Parses an ICMP error frame built by [`icmp_error`] (or rewritten by the program).
pub fn parse_icmp(frame: &[u8]) -> Option<IcmpParsed> {
    let ip = frame.get(14..)?;
    let v6 = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?) == 0x86DD;
    // (src, dst, ttl, header length, header checksum ok)
    let addrs = |ip: &[u8], v6: bool| -> Option<(IpAddr, IpAddr, u8, usize, bool)> {
        if v6 {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d), ip[7], 40, true))
        } else {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            let ok = fold(sum16(ip.get(..ihl)?, 0)) == 0xffff;
            Some((IpAddr::from(s), IpAddr::from(d), ip[8], ihl, ok))
        }
    };
    let (src, dst, ttl, hlen, ip_csum_ok) = addrs(ip, v6)?;
    let msg = ip.get(hlen..)?;
    let initial = if v6 {
        pseudo_sum(src, dst, 58, msg.len())
    } else {
        0
    };
    let q = msg.get(8..)?;
    let (qs, qd, _, qhlen, quoted_ip_csum_ok) = addrs(q, v6)?;
    let ports = q.get(qhlen..qhlen + 4)?;
    Some(IcmpParsed {
        src,
        dst,
        ttl,
        kind: msg[0],
        code: msg[1],
        info: u32::from_be_bytes(msg.get(4..8)?.try_into().ok()?),
        ip_csum_ok,
        icmp_csum_ok: fold(sum16(msg, initial)) == 0xffff,
        quoted: (
            qs,
            u16::from_be_bytes([ports[0], ports[1]]),
            qd,
            u16::from_be_bytes([ports[2], ports[3]]),
        ),
        quoted_ip_csum_ok,
    })
}

/// A frame taken apart, with its checksums verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub ttl: u8,
    pub payload: Vec<u8>,
    /// IPv4 header checksum verified (always true for IPv6).
    pub ip_csum_ok: bool,
    /// TCP/UDP checksum verified over the pseudo-header (true for UDP without checksum).
    pub l4_csum_ok: bool,
    pub udp_csum_zero: bool,
}

/// Parses a frame built by [`Spec::build`] (or rewritten by the program).
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    let mac = |o: usize| -> Option<[u8; 6]> { frame.get(o..o + 6)?.try_into().ok() };
    let (dst_mac, src_mac) = (mac(0)?, mac(6)?);
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
    let mut vlan = None;
    if ethertype == 0x8100 {
        vlan = Some(u16::from_be_bytes(frame.get(14..16)?.try_into().ok()?));
        ethertype = u16::from_be_bytes(frame.get(16..18)?.try_into().ok()?);
        off = 18;
    } else {
        off = 14;
    }
    let (src, dst, proto, ttl, l4_off, l4_len, ip_csum_ok) = match ethertype {
        0x0800 => {
            let ip = frame.get(off..off + 20)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let hdr = frame.get(off..off + ihl)?;
            let ok = fold(sum16(hdr, 0)) == 0xffff;
            let s: [u8; 4] = ip[12..16].try_into().ok()?;
            let d: [u8; 4] = ip[16..20].try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                ip[9],
                ip[8],
                off + ihl,
                total - ihl,
                ok,
            )
        }
        0x86DD => {
            let ip = frame.get(off..off + 40)?;
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                ip[6],
                ip[7],
                off + 40,
                len,
                true,
            )
        }
        _ => return None,
    };
    let l4 = frame.get(l4_off..l4_off + l4_len)?;
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let (hlen, csum_at) = if proto == 6 {
        (usize::from(l4[12] >> 4) * 4, 16)
    } else {
        (8, 6)
    };
    let udp_csum_zero = proto == 17 && l4[6] == 0 && l4[7] == 0;
    let l4_csum_ok = udp_csum_zero && src.is_ipv4()
        || fold(sum16(l4, pseudo_sum(src, dst, proto, l4.len()))) == 0xffff && l4.len() > csum_at;
    Some(Parsed {
        src_mac,
        dst_mac,
        vlan,
        src,
        dst,
        sport,
        dport,
        proto,
        ttl,
        payload: l4.get(hlen..)?.to_vec(),
        ip_csum_ok,
        l4_csum_ok,
        udp_csum_zero,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_verify() {
        for spec in [
            Spec::tcp("198.18.0.2", 40000, "198.19.0.10", 80, SYN),
            Spec::udp("198.18.0.2", 40000, "198.19.0.10", 53),
            Spec::tcp("2001:2::2", 40000, "2001:2:1::10", 80, ACK),
            Spec {
                vlan: Some(7),
                ..Spec::udp("2001:2::2", 1, "2001:2:1::10", 2)
            },
        ] {
            let p = parse(&spec.build()).expect("parses");
            assert!(p.ip_csum_ok && p.l4_csum_ok, "{spec:?}");
            assert_eq!(
                (p.src, p.dst, p.sport, p.dport),
                (spec.src, spec.dst, spec.sport, spec.dport)
            );
            assert_eq!(p.payload, spec.payload);
        }
        let mut bad = Spec::tcp("198.18.0.2", 1, "198.19.0.10", 2, SYN).build();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert!(!parse(&bad).expect("parses").l4_csum_ok);
    }

    #[test]
    fn built_icmp_errors_verify() {
        for (quoted, from, to) in [
            (
                Spec::udp("198.18.0.2", 40000, "198.19.0.10", 53),
                "198.18.1.2",
                "198.18.0.2",
            ),
            (
                Spec::tcp("2001:2::2", 40000, "2001:2:1::10", 80, ACK),
                "2001:2:1::1",
                "2001:2::2",
            ),
        ] {
            let inner = quoted.build();
            let mut frame = icmp_error(from, to, 3, 4, 1400, &inner, 1000);
            let p = parse_icmp(&frame).expect("parses");
            assert!(
                p.ip_csum_ok && p.icmp_csum_ok && p.quoted_ip_csum_ok,
                "{p:?}"
            );
            assert_eq!((p.kind, p.code, p.info), (3, 4, 1400));
            assert_eq!(
                p.quoted,
                (quoted.src, quoted.sport, quoted.dst, quoted.dport)
            );
            let n = frame.len();
            frame[n - 1] ^= 0xff;
            assert!(!parse_icmp(&frame).expect("parses").icmp_csum_ok);
        }
    }
}

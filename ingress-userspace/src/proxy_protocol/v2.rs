//! PROXY protocol version 2 (binary): written to passthrough backends so they see the client
//! address, and read from load balancers in front of the listeners.
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, section 2.2.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{DecodeError, ProxyHeader};

/// The 12-byte v2 signature.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const VERSION_PROXY: u8 = 0x21;
const VERSION_LOCAL: u8 = 0x20;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;

/// Encodes the header for a TCP connection from `client` to `local` (the address it reached).
/// Mixed families are sent as IPv6 (IPv4 addresses mapped); IPv4-mapped pairs as IPv4.
pub fn encode(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (src, dst) = (canon(client), canon(local));
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_PROXY);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// Decodes a v2 header at the start of `buf`; `Ok(None)` if more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<ProxyHeader>, DecodeError> {
    let sig = buf.len().min(SIGNATURE.len());
    if buf[..sig] != SIGNATURE[..sig] {
        return Err(DecodeError::NotProxy);
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let cmd = buf[12];
    if cmd != VERSION_PROXY && cmd != VERSION_LOCAL {
        return Err(DecodeError::Command(cmd));
    }
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let Some(block) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let addresses = match (cmd, fam) {
        (VERSION_PROXY, TCP_OVER_IPV4) => {
            let b = block.get(..12).ok_or(DecodeError::Length(len))?;
            let ip = |o: usize| IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            Some((
                SocketAddr::new(ip(0), port(&b[8..])),
                SocketAddr::new(ip(4), port(&b[10..])),
            ))
        }
        (VERSION_PROXY, TCP_OVER_IPV6) => {
            let b = block.get(..36).ok_or(DecodeError::Length(len))?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            Some((
                SocketAddr::new(ip(0), port(&b[32..])),
                SocketAddr::new(ip(16), port(&b[34..])),
            ))
        }
        _ => None,
    };
    Ok(Some(ProxyHeader {
        addresses,
        len: 16 + len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_layout_matches_the_spec() {
        let h = encode(sa("192.0.2.1:51000"), sa("198.51.100.7:443"));
        let mut want = SIGNATURE.to_vec();
        want.extend([
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 7, 0xc7, 0x38, 0x01, 0xbb,
        ]);
        assert_eq!(h, want);
        let d = decode(&h).unwrap().unwrap();
        assert_eq!(
            d,
            ProxyHeader {
                addresses: Some((sa("192.0.2.1:51000"), sa("198.51.100.7:443"))),
                len: 28
            }
        );
    }

    #[test]
    fn ipv6_mapped_and_mixed() {
        let h = encode(sa("[2001:db8::1]:4000"), sa("[2001:db8::2]:443"));
        assert_eq!(h.len(), 52);
        assert_eq!(h[13], 0x21);
        assert_eq!(
            decode(&h).unwrap().unwrap().addresses,
            Some((sa("[2001:db8::1]:4000"), sa("[2001:db8::2]:443")))
        );
        // A dual-stack listener sees IPv4 clients as mapped addresses: sent as IPv4.
        let h = encode(sa("[::ffff:192.0.2.1]:4000"), sa("[::ffff:192.0.2.2]:443"));
        assert_eq!(h[13], 0x11);
        let h = encode(sa("192.0.2.1:4000"), sa("[2001:db8::2]:443"));
        assert_eq!(
            decode(&h).unwrap().unwrap().addresses,
            Some((sa("[::ffff:192.0.2.1]:4000"), sa("[2001:db8::2]:443")))
        );
    }

    #[test]
    fn decode_prefixes_and_garbage() {
        let h = encode(sa("192.0.2.1:1"), sa("192.0.2.2:2"));
        for end in 0..h.len() {
            assert_eq!(decode(&h[..end]), Ok(None), "{end}");
        }
        assert_eq!(decode(b"GET / HTTP/1.1"), Err(DecodeError::NotProxy));
        let mut bad = h.clone();
        bad[12] = 0x11;
        assert_eq!(decode(&bad), Err(DecodeError::Command(0x11)));
        let mut short = h[..16].to_vec();
        short[15] = 4;
        short.extend([0; 4]);
        assert_eq!(decode(&short), Err(DecodeError::Length(4)));
    }
}

//! PROXY protocol version 1 (text), as load balancers such as AWS's Classic ELB send it.
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, section 2.1.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{DecodeError, ProxyHeader};

/// The line's start.
pub const PREFIX: &[u8] = b"PROXY ";
/// The longest line the spec allows, CRLF included.
pub const MAX_LEN: usize = 107;

/// Decodes a v1 line at the start of `buf`; `Ok(None)` if more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<ProxyHeader>, DecodeError> {
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(DecodeError::NotProxy);
    }
    let window = &buf[..buf.len().min(MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LEN {
            Err(DecodeError::V1("no CRLF within 107 bytes"))
        } else {
            Ok(None)
        };
    };
    if lf < PREFIX.len() || buf[lf - 1] != b'\r' {
        return Err(DecodeError::V1("line not ended by CRLF"));
    }
    let line = std::str::from_utf8(&buf[PREFIX.len()..lf - 1])
        .map_err(|_| DecodeError::V1("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let addresses = match fields.as_slice() {
        // The receiver ignores whatever follows UNKNOWN and uses the real connection's
        // addresses (health checks, or a family the sender cannot express).
        ["UNKNOWN", ..] => None,
        ["TCP4", src, dst, sport, dport] => Some((
            SocketAddr::new(IpAddr::V4(v4(src)?), port(sport)?),
            SocketAddr::new(IpAddr::V4(v4(dst)?), port(dport)?),
        )),
        ["TCP6", src, dst, sport, dport] => Some((
            SocketAddr::new(IpAddr::V6(v6(src)?), port(sport)?),
            SocketAddr::new(IpAddr::V6(v6(dst)?), port(dport)?),
        )),
        _ => {
            return Err(DecodeError::V1(
                "expected TCP4, TCP6 or UNKNOWN and four fields",
            ))
        }
    };
    Ok(Some(ProxyHeader {
        addresses,
        len: lf + 1,
    }))
}

fn v4(s: &str) -> Result<Ipv4Addr, DecodeError> {
    s.parse().map_err(|_| DecodeError::V1("bad IPv4 address"))
}

fn v6(s: &str) -> Result<Ipv6Addr, DecodeError> {
    s.parse().map_err(|_| DecodeError::V1("bad IPv6 address"))
}

/// A decimal port, 0 to 65535, without sign or leading zeros (the spec's form).
fn port(s: &str) -> Result<u16, DecodeError> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(DecodeError::V1("bad port"));
    }
    s.parse().map_err(|_| DecodeError::V1("bad port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn tcp4_and_tcp6_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\nGET / HTTP/1.1\r\n";
        let h = decode(line).unwrap().unwrap();
        assert_eq!(
            h.addresses,
            Some((sa("192.0.2.1:51000"), sa("198.51.100.7:443")))
        );
        assert_eq!(&line[h.len..h.len + 3], b"GET");
        let h = decode(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.addresses,
            Some((sa("[2001:db8::1]:4000"), sa("[2001:db8::2]:80")))
        );
        assert_eq!(h.len, 44);
    }

    #[test]
    fn unknown_keeps_the_connection_addresses() {
        let h = decode(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!((h.addresses, h.len), (None, 15));
        let h = decode(b"PROXY UNKNOWN ffff:f...f:ffff 1 2 3\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.addresses, None);
    }

    #[test]
    fn the_longest_line_fits_and_one_more_byte_does_not() {
        // The spec's worst case.
        let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), MAX_LEN);
        assert_eq!(decode(longest).unwrap().unwrap().len, MAX_LEN);
        let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(decode(tcp6).unwrap().unwrap().len, tcp6.len());
        let mut unended = b"PROXY UNKNOWN ".to_vec();
        unended.resize(MAX_LEN, b'x');
        assert_eq!(
            decode(&unended),
            Err(DecodeError::V1("no CRLF within 107 bytes"))
        );
        assert_eq!(decode(&unended[..MAX_LEN - 1]), Ok(None));
    }

    #[test]
    fn every_prefix_asks_for_more() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\n";
        for end in 0..line.len() {
            assert_eq!(decode(&line[..end]), Ok(None), "{end}");
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 51000\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 51000 443 extra\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.7 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 +1 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 01 443\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.7 1 443\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.7 1 443\r\n",
            b"PROXY \xff\xfe\r\n",
            b"proxy TCP4 192.0.2.1 198.51.100.7 1 2\r\n",
        ] {
            assert!(
                decode(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

//! How many bytes a TCP socket has accepted for sending, from `NETLINK_SOCK_DIAG`.
//!
//! The splice needs it to know that the kernel's redirect queue of a socket is empty before
//! propagating a FIN with `shutdown(SHUT_WR)` (bytes still queued would be lost). tcp_info
//! gives it without `unsafe` getsockopt: one exact lookup by address, port and cookie.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
    sync::Mutex,
};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_MSG: usize = 72;
const INET_DIAG_INFO: u16 = 2;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
// Offsets in struct tcp_info (linux/tcp.h); each read is bounds-checked.
const TCPI_NOTSENT_BYTES: usize = 144;
const TCPI_BYTES_SENT: usize = 200;
const TCPI_BYTES_RETRANS: usize = 208;

/// A TCP socket as sock_diag identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockId {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub cookie: u64,
}

/// One netlink socket for lookups; requests are serialised (each is two short syscalls).
#[derive(Debug)]
pub struct SockDiag {
    fd: Mutex<(OwnedFd, u32)>,
}

impl SockDiag {
    /// Opens the netlink socket.
    pub fn open() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            Some(rustix::net::netlink::SOCK_DIAG),
        )?;
        Ok(SockDiag {
            fd: Mutex::new((fd, 0)),
        })
    }

    /// Bytes ever written into the socket's send queue (sent once, plus not yet sent).
    pub fn bytes_written(&self, id: SockId) -> io::Result<u64> {
        let mut guard = self
            .fd
            .lock()
            .map_err(|_| io::Error::other("sock_diag lock poisoned"))?;
        let (fd, seq) = &mut *guard;
        *seq = seq.wrapping_add(1);
        let req = request(id, *seq);
        rustix::net::send(&*fd, &req, SendFlags::empty())?;
        let mut buf = [0u8; 1024];
        // The kernel answers within the send call; loop only past stale replies (a reply
        // to an earlier request whose reader gave up cannot happen: calls are serialised).
        for _ in 0..4 {
            let (n, _) = rustix::net::recv(&*fd, &mut buf[..], RecvFlags::DONTWAIT)?;
            match parse_reply(&buf[..n], *seq)? {
                Some(v) => return Ok(v),
                None => continue,
            }
        }
        Err(io::Error::other("no sock_diag reply"))
    }
}

fn request(id: SockId, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR + 56;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2
    m.push(if id.local.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    });
    m.push(IPPROTO_TCP);
    m.push(1 << (INET_DIAG_INFO - 1));
    m.push(0);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
                                                  // inet_diag_sockid: src is the local end.
    m.extend_from_slice(&id.local.port().to_be_bytes());
    m.extend_from_slice(&id.remote.port().to_be_bytes());
    m.extend_from_slice(&addr16(id.local.ip()));
    m.extend_from_slice(&addr16(id.remote.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&(id.cookie as u32).to_ne_bytes());
    m.extend_from_slice(&((id.cookie >> 32) as u32).to_ne_bytes());
    m
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            a
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

/// `Ok(None)` for a reply to another sequence number.
fn parse_reply(b: &[u8], seq: u32) -> io::Result<Option<u64>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag reply");
    let len = u32_at(b, 0).ok_or_else(bad)? as usize;
    let ty = u16_at(b, 4).ok_or_else(bad)?;
    if u32_at(b, 8).ok_or_else(bad)? != seq {
        return Ok(None);
    }
    let msg = b.get(..len).ok_or_else(bad)?;
    if ty == NLMSG_ERROR {
        let errno = u32_at(msg, NLMSG_HDR).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if ty != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected sock_diag reply type",
        ));
    }
    let mut off = NLMSG_HDR + INET_DIAG_MSG;
    while off + 4 <= msg.len() {
        let alen = usize::from(u16_at(msg, off).ok_or_else(bad)?);
        let aty = u16_at(msg, off + 2).ok_or_else(bad)?;
        if alen < 4 {
            break;
        }
        if aty == INET_DIAG_INFO {
            let info = msg.get(off + 4..off + alen).ok_or_else(bad)?;
            let field = |o| u64_at(info, o).ok_or_else(bad);
            let notsent = u64::from(u32_at(info, TCPI_NOTSENT_BYTES).ok_or_else(bad)?);
            let sent = field(TCPI_BYTES_SENT)?.saturating_sub(field(TCPI_BYTES_RETRANS)?);
            return Ok(Some(sent + notsent));
        }
        off += (alen + 3) & !3;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "sock_diag reply without tcp_info",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn counts_bytes_written_to_a_loopback_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        let diag = SockDiag::open().unwrap();
        let id = SockId {
            local: c.local_addr().unwrap(),
            remote: c.peer_addr().unwrap(),
            cookie: socket2::SockRef::from(&c).cookie().unwrap(),
        };
        assert_eq!(diag.bytes_written(id).unwrap(), 0);
        c.write_all(&[1u8; 12345]).unwrap();
        assert_eq!(diag.bytes_written(id).unwrap(), 12345);
        let wrong = SockId {
            cookie: id.cookie + 1000,
            ..id
        };
        assert!(diag.bytes_written(wrong).is_err());
    }
}

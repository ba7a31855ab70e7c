//! The PROXY protocol (versions 1 and 2): how a TCP load balancer in front of the node tells
//! the proxy who its client was, and how passthrough tells a backend.
//!
//! Listeners with `--use-proxy-protocol` require the header on every connection, as nginx's
//! `listen ... proxy_protocol` (ingress-nginx's `use-proxy-protocol`) does: a connection
//! without one is closed. [`read`] takes exactly the header's bytes off the socket, so what
//! follows (a ClientHello, an HTTP request) is still there to be peeked or read.
mod header;
pub mod v1;
pub mod v2;

pub use header::{decode, DecodeError, ProxyHeader, MAX_HEADER};

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use thiserror::Error;
use tokio::{io::AsyncReadExt, net::TcpStream};

/// Why a connection's header could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed after {0} bytes, before a complete PROXY header")]
    Closed(usize),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// Where a connection comes from, as far as the proxy can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The client: the connection's peer, or the source a trusted PROXY header names.
    pub client: SocketAddr,
    /// The address the client reached: the listener's, or the PROXY header's destination.
    pub local: SocketAddr,
    /// The connection's own peer (the load balancer, when a PROXY header named the client).
    pub peer: IpAddr,
    /// Whether a PROXY header named `client` and `local`.
    pub proxied: bool,
    /// Whether a PROXY header was read off the socket (named addresses or not): what is
    /// queued after it may start in the middle of a segment.
    pub header_read: bool,
}

impl Origin {
    /// A connection straight from its client.
    pub fn direct(peer: SocketAddr, local: SocketAddr) -> Self {
        Origin {
            client: peer,
            local,
            peer: peer.ip(),
            proxied: false,
            header_read: false,
        }
    }

    /// A connection that started with `header`: its addresses count when `trusted` (the
    /// peer may speak for clients) and it names some (not a health check's `LOCAL`).
    pub fn from_header(
        header: &ProxyHeader,
        peer: SocketAddr,
        local: SocketAddr,
        trusted: bool,
    ) -> Self {
        match header.addresses {
            Some((client, reached)) if trusted => Origin {
                client,
                local: reached,
                peer: peer.ip(),
                proxied: true,
                header_read: true,
            },
            _ => Origin {
                header_read: true,
                ..Self::direct(peer, local)
            },
        }
    }
}

/// Waits up to `timeout` for the header `stream` must start with and consumes exactly its
/// bytes.
pub async fn read(stream: &mut TcpStream, timeout: Duration) -> Result<ProxyHeader, ReadError> {
    let (header, mut buf) = tokio::time::timeout(timeout, peek_header(stream))
        .await
        .map_err(|_| ReadError::Timeout(timeout))??;
    // The peeked bytes, taken off the socket this time.
    stream.read_exact(&mut buf[..header.len]).await?;
    Ok(header)
}

/// Peeks until the queued bytes hold a whole header (or cannot start one); returns it with
/// the buffer it was peeked into (holding at least its bytes).
async fn peek_header(stream: &TcpStream) -> Result<(ProxyHeader, Vec<u8>), ReadError> {
    // v1 and v2 without TLVs fit in the first 256 bytes; the buffer grows for TLVs.
    let mut buf = vec![0u8; 256];
    loop {
        let ready = stream.ready(tokio::io::Interest::READABLE).await?;
        let mut seen = 0;
        let res = stream.try_io(tokio::io::Interest::READABLE, || {
            let (n, _) = rustix::net::recv(
                stream,
                &mut buf[..],
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
            )?;
            seen = n;
            if n == 0 {
                return Ok(Err(ReadError::Closed(0)));
            }
            match decode(&buf[..n]) {
                Ok(Some(h)) => Ok(Ok(h)),
                Err(e) => Ok(Err(e.into())),
                Ok(None) if n == buf.len() => {
                    buf.resize((buf.len() * 4).min(MAX_HEADER), 0);
                    // Queued bytes may already fill the larger buffer: peek again now.
                    Err(io::ErrorKind::Interrupted.into())
                }
                // Wait for the next segment: WouldBlock clears the readiness so that its
                // arrival wakes us, instead of peeking the same bytes in a loop.
                Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match res {
            Ok(verdict) => return verdict.map(|h| (h, buf)),
            // tokio's closed flags are sticky: readiness never clears after a FIN, so a
            // partial header followed by one would be peeked again at once, forever, on a
            // worker that never yields (readiness checks take no coop budget) and so never
            // lets the timeout, or anything else on that worker, run.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && ready.is_read_closed() => {
                return Err(ReadError::Closed(seen));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
        // Belt and braces: a loop that keeps finding readiness still lets the timer and
        // the worker's other tasks run.
        tokio::task::consume_budget().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the header of a connection whose peer sent `bytes` and then FIN, on a
    /// single-threaded runtime of its own; `None` if that does not finish within a second.
    fn read_after_fin(bytes: &'static [u8]) -> Option<io::Result<Result<ProxyHeader, ReadError>>> {
        use tokio::io::AsyncWriteExt;
        let (tx, rx) = std::sync::mpsc::channel();
        // A spinning reader would never give the thread back: it is left behind on failure.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let res = rt.and_then(|rt| {
                rt.block_on(async {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let mut client = TcpStream::connect(listener.local_addr()?).await?;
                    let (mut server, _) = listener.accept().await?;
                    client.write_all(bytes).await?;
                    client.shutdown().await?;
                    Ok(read(&mut server, Duration::from_secs(3)).await)
                })
            });
            let _ = tx.send(res);
        });
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }

    #[test]
    fn a_partial_header_cut_by_fin_is_closed_at_once_not_peeked_forever() {
        let v2 = v2::encode(
            "192.0.2.1:1000".parse().unwrap_or_else(|e| panic!("{e}")),
            "192.0.2.2:80".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        let v2_prefix: &'static [u8] = v2[..20].to_vec().leak();
        for bytes in [&b"P"[..], b"PROXY TCP4 192.0.2.1", v2_prefix] {
            let res = read_after_fin(bytes)
                .unwrap_or_else(|| panic!("{bytes:?} + FIN: no verdict within 1 s (spinning)"));
            let res = res.unwrap_or_else(|e| panic!("setup: {e}"));
            assert!(
                matches!(res, Err(ReadError::Closed(n)) if n == bytes.len()),
                "{bytes:?} + FIN: {res:?}"
            );
        }
    }

    #[test]
    fn either_version_is_recognised_by_its_first_byte() {
        let src: SocketAddr = "192.0.2.1:1000".parse().unwrap_or_else(|e| panic!("{e}"));
        let dst: SocketAddr = "192.0.2.2:80".parse().unwrap_or_else(|e| panic!("{e}"));
        let v2 = v2::encode(src, dst);
        assert_eq!(
            decode(&v2),
            Ok(Some(ProxyHeader {
                addresses: Some((src, dst)),
                len: 28
            }))
        );
        let v1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\n";
        assert_eq!(
            decode(v1).map(|h| h.and_then(|h| h.addresses)),
            Ok(Some((src, dst)))
        );
        assert_eq!(decode(b""), Ok(None));
        assert_eq!(decode(b"\x16\x03\x01"), Err(DecodeError::NotProxy));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(DecodeError::NotProxy));
    }

    /// The fuzz corpus (`tests/data/proxy_protocol`): each `.ok` file starts with a header
    /// (possibly followed by the connection's first bytes), each `.bad` one is refused.
    #[test]
    fn corpus_verdicts() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/proxy_protocol");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
            let name = path.display().to_string();
            match path.extension().and_then(|e| e.to_str()) {
                Some("ok") => {
                    let h = decode(&bytes)
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                        .unwrap_or_else(|| panic!("{name}: incomplete"));
                    assert!(h.len <= bytes.len(), "{name}");
                    assert_eq!(decode(&bytes[..h.len]), Ok(Some(h)), "{name}");
                    assert_eq!(decode(&bytes[..h.len - 1]), Ok(None), "{name}");
                }
                Some("bad") => assert!(decode(&bytes).is_err(), "{name}: accepted"),
                _ => continue,
            }
            seen += 1;
        }
        assert!(seen >= 15, "corpus has {seen} files");
    }

    #[test]
    fn a_v2_header_claiming_more_than_the_cap_is_refused() {
        let mut h = v2::SIGNATURE.to_vec();
        h.extend([0x21, 0x11]);
        h.extend(u16::try_from(MAX_HEADER).unwrap_or(u16::MAX).to_be_bytes());
        h.resize(MAX_HEADER, 0);
        assert_eq!(decode(&h), Err(DecodeError::TooLong));
        // Short of the cap it waits for more.
        assert_eq!(decode(&h[..100]), Ok(None));
    }
}

//! The header's types and the decoder for either version. Free of I/O (and of tokio), so
//! the fuzz target compiles it as it is.
use std::net::SocketAddr;

use thiserror::Error;

use super::{v1, v2};

/// The longest header accepted: v1's 107 bytes, or a v2 header with TLVs (load balancers add
/// a few, such as AWS's VPC endpoint id). The v2 length field allows 64 KiB; nothing sends
/// that much, and a peer that claims it should not make us buffer it.
pub const MAX_HEADER: usize = 4096;

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Source (the client) and destination (the address it reached) of a proxied TCP
    /// connection; `None` for a health check (v1 `UNKNOWN`, v2 `LOCAL`) or another protocol,
    /// whose connection's own addresses count.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// Bytes the header occupies, v2 TLVs included.
    pub len: usize,
}

/// Why bytes are not a PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("no PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1: {0}")]
    V1(&'static str),
    #[error("PROXY v2: unsupported version/command byte {0:#04x}")]
    Command(u8),
    #[error("PROXY v2: address block of {0} bytes too short for its family")]
    Length(usize),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
}

/// Decodes a header of either version at the start of `buf`; `Ok(None)` if more bytes are
/// needed.
pub fn decode(buf: &[u8]) -> Result<Option<ProxyHeader>, DecodeError> {
    let header = match buf.first() {
        None => return Ok(None),
        Some(b'P') => v1::decode(buf)?,
        Some(b'\r') => v2::decode(buf)?,
        Some(_) => return Err(DecodeError::NotProxy),
    };
    match header {
        Some(h) if h.len > MAX_HEADER => Err(DecodeError::TooLong),
        None if buf.len() >= MAX_HEADER => Err(DecodeError::TooLong),
        h => Ok(h),
    }
}

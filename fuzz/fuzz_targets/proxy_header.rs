//! Fuzzes the PROXY protocol decoder (v1 and v2): the first bytes of every connection when
//! the listeners take the PROXY protocol. Any input yields a verdict without panicking; a
//! decoded header fits in the input and the cap, decodes the same from exactly its own bytes,
//! and is incomplete one byte short.
#![no_main]

// The decoder's own files, without `mod.rs` (which reads sockets with tokio).
#[path = "../../ingress-userspace/src/proxy_protocol"]
mod proxy_protocol {
    #![allow(dead_code)]
    mod header;
    pub mod v1;
    pub mod v2;
    pub use header::{decode, DecodeError, ProxyHeader, MAX_HEADER};
}

use libfuzzer_sys::fuzz_target;
use proxy_protocol::{decode, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(h)) = decode(data) {
        assert!(h.len <= data.len() && h.len <= MAX_HEADER);
        assert_eq!(decode(&data[..h.len]), Ok(Some(h)));
        assert_eq!(decode(&data[..h.len - 1]), Ok(None));
        if let Some((src, dst)) = h.addresses {
            // What we decode, we can say again: v2 re-encodes the same addresses.
            let again = proxy_protocol::v2::encode(src, dst);
            let back = decode(&again).ok().flatten().and_then(|h| h.addresses);
            let canon = |a: std::net::SocketAddr| (a.ip().to_canonical(), a.port());
            let (s2, d2) = back.expect("re-encoded header decodes");
            assert_eq!((canon(s2), canon(d2)), (canon(src), canon(dst)));
        }
    }
});

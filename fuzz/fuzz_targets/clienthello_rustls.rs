//! Fuzzes the passthrough SNI parser against rustls, the TLS stack the proxy terminates with
//! (and that many backends run). Where rustls reads a complete ClientHello, ours must route it
//! by the same name: the same host name, or no name where rustls sees none; ours may refuse a
//! hello rustls takes (it is stricter), never pick another name.
#![no_main]

#[allow(dead_code)]
#[path = "../../ingress-userspace/src/passthrough/sni.rs"]
mod sni;

use libfuzzer_sys::fuzz_target;
use sni::{parse_client_hello, HelloParse};

/// rustls's reading of `data` as the first bytes of a connection.
enum Rustls {
    Hello(Option<String>),
    Incomplete,
    Refused,
}

fn rustls_reads(data: &[u8]) -> Rustls {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return Rustls::Hello(accepted.client_hello().server_name().map(str::to_owned))
            }
            Ok(None) => {}
            Err(_) => return Rustls::Refused,
        }
    }
    Rustls::Incomplete
}

fuzz_target!(|data: &[u8]| {
    let ours = parse_client_hello(data);
    match rustls_reads(data) {
        Rustls::Hello(Some(name)) => match &ours {
            HelloParse::Found(n) => assert_eq!(*n, name.to_ascii_lowercase(), "another name"),
            HelloParse::Invalid(_) => {}
            other => panic!("rustls reads SNI {name:?}, ours {other:?}"),
        },
        Rustls::Hello(None) => assert!(
            matches!(ours, HelloParse::NoSni | HelloParse::Invalid(_)),
            "rustls reads no SNI, ours {ours:?}"
        ),
        // Ours decides once the ClientHello message is whole, where rustls waits for the rest
        // of its record too: the backend then reads the same hello from the same bytes.
        Rustls::Incomplete | Rustls::Refused => {}
    }
});

//! Fuzzes the SNI parser: any input yields a verdict without panicking, verdicts are
//! consistent with prefixes (a complete hello stays complete when more bytes follow), and a
//! found name is a valid lower-case host name.
#![no_main]

#[allow(dead_code)]
#[path = "../../ingress-userspace/src/passthrough/sni.rs"]
mod sni;

use libfuzzer_sys::fuzz_target;
use sni::{parse_client_hello, HelloParse, MAX_HELLO_LEN};

fuzz_target!(|data: &[u8]| {
    let verdict = parse_client_hello(data);
    if let HelloParse::Found(name) = &verdict {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)));
    }
    // Every prefix of an input that parses to a final verdict is either Incomplete or the
    // same kind of final verdict reached earlier (an Invalid can be detected early).
    if data.len() <= MAX_HELLO_LEN + 1024 {
        let cut = data.len() / 2;
        let prefix = parse_client_hello(&data[..cut]);
        match (&prefix, &verdict) {
            (HelloParse::Incomplete, _) => {}
            (HelloParse::Invalid(_), HelloParse::Invalid(_)) => {}
            (p, v) => assert_eq!(p, v, "prefix verdict must be Incomplete or final"),
        }
    }
});

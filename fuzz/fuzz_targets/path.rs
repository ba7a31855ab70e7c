//! Fuzzes the path normalizer that routing depends on (a wrong answer routes `/x/../admin`
//! past an `/admin` rule). For any path the `http` crate accepts: a verdict without a panic;
//! a normalized path is in normal form (rooted, no empty, `.` or `..` segment but a trailing
//! one); normalizing it again changes nothing when it holds no `%`; and re-encoded for an
//! upstream (as a rewrite result is) it normalizes back to itself.
#![no_main]

#[allow(dead_code)]
#[path = "../../ingress-userspace/src/proxy/target.rs"]
mod target;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pq) = http::uri::PathAndQuery::try_from(data) else {
        return;
    };
    let raw = pq.path();
    let Ok(n) = target::normalize_path(raw) else {
        return;
    };
    if !raw.starts_with('/') {
        assert_eq!(n, raw, "a target that is not a path is left alone");
        return;
    }
    assert!(n.starts_with('/'), "{raw:?} -> {n:?}");
    let segs: Vec<&str> = n[1..].split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        assert!(*s != "." && *s != "..", "{raw:?} -> {n:?}");
        assert!(!s.is_empty() || i + 1 == segs.len(), "{raw:?} -> {n:?}");
    }
    if !n.contains('%') {
        assert_eq!(target::normalize_path(&n).as_deref(), Ok(&*n), "{raw:?}");
    }
    let encoded = target::encode_path(&n);
    assert_eq!(
        target::normalize_path(&encoded).as_deref(),
        Ok(&*n),
        "{raw:?} -> {n:?} -> {encoded:?}"
    );
});

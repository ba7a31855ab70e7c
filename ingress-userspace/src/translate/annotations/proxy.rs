//! `proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout` (seconds),
//! `proxy-body-size` (nginx size syntax: `8m`, `512k`, `1g`, bytes; `0` = unlimited) and
//! `enable-access-log`.
use std::time::Duration;

use super::{AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let t = &mut a.policy.timeouts;
    if let Some(d) = r.get("proxy-connect-timeout", parse_seconds)? {
        t.connect = d;
    }
    if let Some(d) = r.get("proxy-read-timeout", parse_seconds)? {
        t.read = d;
    }
    if let Some(d) = r.get("proxy-send-timeout", parse_seconds)? {
        t.send = d;
    }
    if let Some(size) = r.get("proxy-body-size", parse_size)? {
        a.policy.max_body_bytes = size;
    }
    if let Some(on) = r.flag("enable-access-log")? {
        a.policy.access_log = on;
    }
    Ok(())
}

/// Whole seconds, optionally suffixed with `s`, at least 1.
fn parse_seconds(v: &str) -> Result<Duration, String> {
    let n: u64 = v
        .strip_suffix('s')
        .unwrap_or(v)
        .parse()
        .map_err(|_| "expected a whole number of seconds".to_string())?;
    if n == 0 || n > 7 * 24 * 3600 {
        return Err("must be between 1 and 604800 seconds".into());
    }
    Ok(Duration::from_secs(n))
}

/// nginx size syntax; `None` for unlimited.
pub(crate) fn parse_size(v: &str) -> Result<Option<u64>, String> {
    let (digits, mult) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a size like 1m, 512k or 1048576".into());
    }
    let n: u64 = digits.parse().map_err(|_| "size too large".to_string())?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    Ok((bytes != 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::parse_size;
    use std::time::Duration;

    #[test]
    fn enable_access_log() {
        assert!(nginx(&[]).expect("empty").policy.access_log);
        assert!(!ok("enable-access-log", "false").policy.access_log);
        assert!(ok("enable-access-log", "true").policy.access_log);
        assert_rejects("enable-access-log", &["quiet"]);
    }

    #[test]
    fn timeouts() {
        let a = nginx(&[
            ("proxy-connect-timeout", "2"),
            ("proxy-read-timeout", "120"),
            ("proxy-send-timeout", "30s"),
        ])
        .expect("valid");
        assert_eq!(a.policy.timeouts.connect, Duration::from_secs(2));
        assert_eq!(a.policy.timeouts.read, Duration::from_secs(120));
        assert_eq!(a.policy.timeouts.send, Duration::from_secs(30));
        assert_eq!(
            nginx(&[]).expect("empty").policy.timeouts.read,
            Duration::from_secs(60)
        );
        for name in [
            "proxy-connect-timeout",
            "proxy-read-timeout",
            "proxy-send-timeout",
        ] {
            assert_rejects(name, &["0", "-5", "1.5", "ten", "5m", "99999999"]);
        }
    }

    #[test]
    fn body_size_table() {
        let table = [
            ("0", None),
            ("1", Some(1)),
            ("1k", Some(1024)),
            ("8m", Some(8 << 20)),
            ("8M", Some(8 << 20)),
            ("2g", Some(2 << 30)),
            ("100", Some(100)),
        ];
        for (v, want) in table {
            assert_eq!(parse_size(v), Ok(want), "{v}");
            assert_eq!(ok("proxy-body-size", v).policy.max_body_bytes, want, "{v}");
        }
        assert_eq!(
            nginx(&[]).expect("empty").policy.max_body_bytes,
            Some(1 << 20)
        );
        assert_rejects(
            "proxy-body-size",
            &["", "m", "8mb", "-1", "1.5m", "99999999999999999999g"],
        );
    }
}

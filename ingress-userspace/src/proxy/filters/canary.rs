//! Canary choice (ingress-nginx `canary-by-header`, `canary-by-header-value`, `canary-weight`).
use http::HeaderMap;

use crate::snapshot::Canary;

/// Whether this request goes to the canary. The header decides when present (`always` /
/// `never`, or the configured value); otherwise the weight, as a percentage.
pub fn use_canary(canary: &Canary, headers: &HeaderMap) -> bool {
    if let Some(value) = canary.header.as_deref().and_then(|h| headers.get(h)) {
        match &canary.header_value {
            Some(expected) if value.as_bytes() == expected.as_bytes() => return true,
            Some(_) => {}
            None if value.as_bytes().eq_ignore_ascii_case(b"always") => return true,
            None if value.as_bytes().eq_ignore_ascii_case(b"never") => return false,
            None => {}
        }
    }
    match canary.weight {
        0 => false,
        w if w >= 100 => true,
        w => rand::random_range(0..100u32) < w,
    }
}

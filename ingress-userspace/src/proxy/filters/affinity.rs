//! `affinity: cookie`, in ingress-nginx's two `affinity-mode`s. `balanced` (its default): the
//! cookie holds a random session key, and the endpoint is the key's by rendezvous hashing, so
//! adding endpoints moves about 1/n of the sessions to them. `persistent`: the cookie names
//! its endpoint by a stable hash, and a session moves only when its endpoint leaves.
//!
//! On a route with a canary the cookie also names the upstream that holds the session
//! (`value|tag`, as ingress-nginx appends its backend key), so a session stays with the
//! primary or, under `affinity-canary-behavior: sticky`, with the canary.
use std::borrow::Cow;

use http::{header, HeaderMap, HeaderValue};

use super::hash::Fnv;
use crate::{
    proxy::upstream::UpstreamState,
    snapshot::{AffinityMode, CookieAffinity},
};

/// A request's session: where its cookie routes it and what the answer must set.
#[derive(Debug)]
pub struct Session {
    /// The endpoint the cookie routes to; `None` without a usable cookie, or (persistent)
    /// when its endpoint is gone or ejected.
    pub routed: Option<usize>,
    /// The endpoint to try first: `routed`, or a new balanced session's.
    pub preferred: Option<usize>,
    /// The cookie is a session of this upstream: a key (balanced), or an endpoint that still
    /// exists, failed or ejected (persistent).
    known: bool,
    /// Balanced: the session key, the client's or a new one.
    key: Option<Box<str>>,
    /// The tag of the upstream, which every cookie set here carries (routes with a canary).
    tag: Option<Box<str>>,
    /// The client's cookie (without its tag), to set again with `tag` because it carried
    /// another one or none.
    retag: Option<Box<str>>,
}

impl Session {
    /// The session of a request carrying `headers` to `upstream`; cookies set carry `tag`.
    pub fn resolve(
        aff: &CookieAffinity,
        headers: &HeaderMap,
        upstream: &UpstreamState,
        tag: Option<&str>,
    ) -> Self {
        let raw = cookie_value(headers, &aff.name).filter(|v| !v.is_empty());
        let (cookie, client_tag) = match raw {
            Some(v) => split_tag(v),
            None => (None, None),
        };
        let mut session = match aff.mode {
            AffinityMode::Persistent => {
                let routed = cookie.and_then(|v| upstream.by_cookie(v));
                Session {
                    routed,
                    preferred: routed,
                    known: routed.is_some() || cookie.is_some_and(|v| upstream.knows_cookie(v)),
                    key: None,
                    tag: None,
                    retag: None,
                }
            }
            AffinityMode::Balanced => match cookie.filter(|v| usable_key(v)) {
                Some(key) => {
                    let routed = upstream.by_hash(key_hash(key));
                    Session {
                        routed,
                        preferred: routed,
                        known: true,
                        key: Some(key.into()),
                        tag: None,
                        retag: None,
                    }
                }
                None => {
                    let key = new_key();
                    Session {
                        routed: None,
                        preferred: upstream.by_hash(key_hash(&key)),
                        known: false,
                        key: Some(key.into()),
                        tag: None,
                        retag: None,
                    }
                }
            },
        };
        if let Some(tag) = tag {
            session.tag = Some(tag.into());
            if session.known && client_tag != Some(tag) {
                session.retag = cookie.map(Into::into);
            }
        }
        session
    }

    /// The cookie value the answer from endpoint `served` sets, if any (see [`sets_cookie`]).
    /// Balanced, a moved session gets a new key that hashes to `served`.
    pub fn cookie_after<'a>(
        &'a self,
        aff: &CookieAffinity,
        served: usize,
        upstream: &'a UpstreamState,
    ) -> Option<Cow<'a, str>> {
        let value = if sets_cookie(aff, served, self.routed, self.known) {
            self.new_value(aff, served, upstream)?
        } else {
            Cow::Borrowed(self.retag.as_deref()?)
        };
        Some(match &self.tag {
            Some(tag) => Cow::Owned(format!("{value}{TAG_SEPARATOR}{tag}")),
            None => value,
        })
    }

    fn new_value<'a>(
        &'a self,
        aff: &CookieAffinity,
        served: usize,
        upstream: &'a UpstreamState,
    ) -> Option<Cow<'a, str>> {
        match (&self.key, aff.mode) {
            (_, AffinityMode::Persistent) => upstream
                .endpoints
                .get(served)
                .map(|e| Cow::Borrowed(&*e.cookie)),
            // A new session keeps the key it was routed by, whoever served.
            (Some(key), AffinityMode::Balanced) if !self.known => Some(Cow::Borrowed(key)),
            (_, AffinityMode::Balanced) => key_for(upstream, served).map(Cow::Owned),
        }
    }
}

/// Between a cookie's value and the tag of the upstream holding the session.
const TAG_SEPARATOR: char = '|';

/// The tag of the upstream the request's session cookie names, if it carries one.
pub fn cookie_tag<'a>(aff: &CookieAffinity, headers: &'a HeaderMap) -> Option<&'a str> {
    cookie_value(headers, &aff.name).and_then(|v| split_tag(v).1)
}

/// A cookie value and its tag, if any; `None` for an empty value.
fn split_tag(v: &str) -> (Option<&str>, Option<&str>) {
    let (value, tag) = match v.rsplit_once(TAG_SEPARATOR) {
        Some((value, tag)) => (value, Some(tag)),
        None => (v, None),
    };
    ((!value.is_empty()).then_some(value), tag)
}

/// How hard to look for a key that hashes to a given endpoint: each try hits it with
/// probability about 1/n, so this fails only above a few hundred endpoints, and then the
/// cookie stays as it was.
const KEY_TRIES: usize = 256;

/// A new session key whose endpoint is `served`.
fn key_for(upstream: &UpstreamState, served: usize) -> Option<String> {
    (0..KEY_TRIES)
        .map(|_| new_key())
        .find(|k| upstream.by_hash(key_hash(k)) == Some(served))
}

/// A random session key: 32 hex digits.
fn new_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A key a client may hand back: short and plain (anything else starts a new session).
fn usable_key(v: &str) -> bool {
    v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn key_hash(key: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(key.as_bytes());
    h.finish()
}

/// The value of cookie `name` in the request, if any.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Whether a response served by endpoint `served` sets the cookie: not when the cookie
/// already names it, nor when it names another endpoint that still exists (failed or
/// ejected), unless `change-on-failure` says so.
pub fn sets_cookie(
    aff: &CookieAffinity,
    served: usize,
    routed: Option<usize>,
    named_exists: bool,
) -> bool {
    if routed == Some(served) {
        return false;
    }
    !named_exists || aff.change_on_failure
}

/// The `Set-Cookie` value naming endpoint cookie `value`, for a request that came over TLS
/// or not (`Secure` over HTTPS, as ingress-nginx sets it).
pub fn set_cookie(
    aff: &CookieAffinity,
    value: &str,
    route_path: &str,
    tls: bool,
) -> Option<HeaderValue> {
    let path = aff.path.as_deref().unwrap_or(route_path);
    let mut s = format!("{}={}; Path={}", aff.name, value, path);
    if let Some(secs) = aff.expires {
        let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
        s.push_str(&format!("; Expires={}", httpdate::fmt_http_date(at)));
    }
    if let Some(age) = aff.max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    if let Some(same_site) = aff.same_site {
        s.push_str(&format!("; SameSite={same_site}"));
    }
    if tls || aff.secure || aff.same_site == Some("None") {
        s.push_str("; Secure");
    }
    s.push_str("; HttpOnly");
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aff(mode: AffinityMode, change_on_failure: bool) -> CookieAffinity {
        CookieAffinity {
            name: "s".into(),
            path: None,
            max_age: None,
            expires: None,
            same_site: None,
            secure: false,
            change_on_failure,
            mode,
        }
    }

    fn upstream(n: u8) -> UpstreamState {
        use crate::proxy::upstream::{pool::Pool, Endpoint};
        let endpoints = (1..=n)
            .map(|i| {
                let addr = std::net::SocketAddr::from(([10, 0, 0, i], 80));
                let pool = Pool::new(crate::proxy::upstream::pool::PoolSettings::new(
                    Default::default(),
                ));
                std::sync::Arc::new(Endpoint::new("ns/app:80", addr, pool))
            })
            .collect();
        UpstreamState::new(
            "ns/app:80".into(),
            crate::snapshot::BackendProtocol::Http,
            endpoints,
        )
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("s={v}")) {
            h.insert(header::COOKIE, v);
        }
        h
    }

    #[test]
    fn balanced_sessions_follow_their_key_and_new_endpoints_take_about_a_share() {
        let a = aff(AffinityMode::Balanced, false);
        let three = upstream(3);
        let four = upstream(4);
        let (mut moved, total) = (0, 2000);
        for _ in 0..total {
            let new = Session::resolve(&a, &HeaderMap::new(), &three, None);
            let served = new.preferred.unwrap_or_else(|| panic!("no endpoint"));
            let key = new
                .cookie_after(&a, served, &three)
                .unwrap_or_else(|| panic!("a new session sets its key"))
                .into_owned();
            let back = Session::resolve(&a, &with_cookie(&key), &three, None);
            assert_eq!(back.routed, Some(served));
            assert!(back.cookie_after(&a, served, &three).is_none());
            let after = Session::resolve(&a, &with_cookie(&key), &four, None);
            if after.routed.map(|i| four.endpoints[i].addr) != Some(three.endpoints[served].addr) {
                // Only to the new endpoint.
                assert_eq!(after.routed, Some(3));
                moved += 1;
            }
        }
        // About a quarter of the sessions move to the fourth endpoint, none elsewhere.
        assert!(
            (total / 4 - 150..total / 4 + 150).contains(&moved),
            "{moved}"
        );
    }

    #[test]
    fn balanced_keys_move_only_on_failure_when_asked() {
        let up = upstream(3);
        let keep = aff(AffinityMode::Balanced, false);
        let change = aff(AffinityMode::Balanced, true);
        let key = "0123456789abcdef";
        let s = Session::resolve(&keep, &with_cookie(key), &up, None);
        let routed = s.routed.unwrap_or_else(|| panic!("routed"));
        let other = (routed + 1) % 3;
        assert!(s.cookie_after(&keep, other, &up).is_none());
        let s = Session::resolve(&change, &with_cookie(key), &up, None);
        let moved = s
            .cookie_after(&change, other, &up)
            .unwrap_or_else(|| panic!("moved"))
            .into_owned();
        assert_eq!(
            Session::resolve(&change, &with_cookie(&moved), &up, None).routed,
            Some(other)
        );
        // A key no client should send starts a new session.
        let s = Session::resolve(&keep, &with_cookie("a%20b"), &up, None);
        assert!(s.routed.is_none() && s.preferred.is_some());
    }

    #[test]
    fn persistent_cookies_name_their_endpoint() {
        let a = aff(AffinityMode::Persistent, false);
        let up = upstream(3);
        let s = Session::resolve(&a, &HeaderMap::new(), &up, None);
        assert_eq!((s.routed, s.preferred), (None, None));
        let named = s.cookie_after(&a, 2, &up).map(Cow::into_owned);
        assert_eq!(named.as_deref(), Some(&*up.endpoints[2].cookie));
        let s = Session::resolve(&a, &with_cookie(&up.endpoints[1].cookie), &up, None);
        assert_eq!(s.routed, Some(1));
        assert!(s.cookie_after(&a, 1, &up).is_none());
    }

    #[test]
    fn tagged_cookies_name_their_upstream_and_are_retagged_once() {
        let tag = crate::proxy::upstream::upstream_tag("ns/app:80");
        assert_eq!(tag.len(), 8);
        assert_eq!(*upstream(1).tag, tag, "computed with the upstream");
        assert_ne!(
            tag,
            crate::proxy::upstream::upstream_tag("ns/app-canary:80")
        );
        for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
            let a = aff(mode, false);
            let up = upstream(3);
            let new = Session::resolve(&a, &HeaderMap::new(), &up, Some(&tag));
            let served = new.preferred.unwrap_or(1);
            let set = new
                .cookie_after(&a, served, &up)
                .unwrap_or_else(|| panic!("{mode:?}: a new session sets its cookie"))
                .into_owned();
            let (value, got) = set.rsplit_once('|').unwrap_or_else(|| panic!("{set}"));
            assert_eq!(got, tag, "{mode:?}");
            assert_eq!(cookie_tag(&a, &with_cookie(&set)), Some(&*tag));
            // Tagged: routed by its value, nothing to set again.
            let back = Session::resolve(&a, &with_cookie(&set), &up, Some(&tag));
            assert_eq!(back.routed, Some(served), "{mode:?}");
            assert!(back.cookie_after(&a, served, &up).is_none(), "{mode:?}");
            // Untagged (set before the route had a canary): same session, tagged now.
            let old = Session::resolve(&a, &with_cookie(value), &up, Some(&tag));
            assert_eq!(old.routed, Some(served), "{mode:?}");
            assert_eq!(old.cookie_after(&a, served, &up).as_deref(), Some(&*set));
            // Without a canary the tag is read past and none is written.
            let plain = Session::resolve(&a, &with_cookie(&set), &up, None);
            assert_eq!(plain.routed, Some(served), "{mode:?}");
            assert!(plain.cookie_after(&a, served, &up).is_none(), "{mode:?}");
        }
        let a = aff(AffinityMode::Balanced, false);
        assert_eq!(cookie_tag(&a, &with_cookie("abc")), None);
        assert_eq!(split_tag("|x"), (None, Some("x")));
    }

    #[test]
    fn reads_and_writes() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; INGRESSCOOKIE=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, "INGRESSCOOKIE"), Some("abc"));
        assert_eq!(cookie_value(&h, "c"), None);
        let mut aff = CookieAffinity {
            name: "INGRESSCOOKIE".into(),
            path: None,
            max_age: Some(60),
            expires: None,
            same_site: None,
            secure: false,
            change_on_failure: false,
            mode: AffinityMode::Persistent,
        };
        let v = set_cookie(&aff, "abc", "/app", false).unwrap_or_else(|| panic!("no cookie"));
        assert_eq!(v, "INGRESSCOOKIE=abc; Path=/app; Max-Age=60; HttpOnly");
        let v = set_cookie(&aff, "abc", "/app", true).unwrap_or_else(|| panic!("no cookie"));
        assert_eq!(
            v,
            "INGRESSCOOKIE=abc; Path=/app; Max-Age=60; Secure; HttpOnly"
        );
        aff.same_site = Some("None");
        let v = set_cookie(&aff, "abc", "/app", false).unwrap_or_else(|| panic!("no cookie"));
        assert_eq!(
            v,
            "INGRESSCOOKIE=abc; Path=/app; Max-Age=60; SameSite=None; Secure; HttpOnly"
        );
        aff.same_site = None;
        aff.expires = Some(3600);
        let v = set_cookie(&aff, "abc", "/", false).unwrap_or_else(|| panic!("no cookie"));
        let v = v.to_str().unwrap_or_default();
        let date = v
            .split("; ")
            .find_map(|a| a.strip_prefix("Expires="))
            .unwrap_or_else(|| panic!("no Expires: {v}"));
        let at = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{date}: {e}"));
        let ahead = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        assert!((3590..=3600).contains(&ahead), "{v}");
    }

    #[test]
    fn cookie_changes_only_when_it_must() {
        let mut aff = CookieAffinity {
            name: "c".into(),
            path: None,
            max_age: None,
            expires: None,
            same_site: None,
            secure: false,
            change_on_failure: false,
            mode: AffinityMode::Persistent,
        };
        // Its endpoint served: nothing to change.
        assert!(!sets_cookie(&aff, 2, Some(2), true));
        // No cookie, or one naming no endpoint of the upstream: a new one.
        assert!(sets_cookie(&aff, 2, None, false));
        // Its endpoint is there but failed or is ejected: kept, unless asked.
        assert!(!sets_cookie(&aff, 2, Some(1), true));
        assert!(!sets_cookie(&aff, 2, None, true));
        aff.change_on_failure = true;
        assert!(sets_cookie(&aff, 2, Some(1), true));
        assert!(sets_cookie(&aff, 2, None, true));
    }
}

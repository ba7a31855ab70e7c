//! `auth-type: basic`: htpasswd users with bcrypt, apr1 (Apache MD5), `{SHA}` and the crypt
//! family (`$1$`, `$5$`, `$6$`, DES) through `pwhash`. bcrypt is slow on purpose, so verified
//! credentials are remembered (keyed by a keyed hash of stored hash + header, never the
//! password) and first-time bcrypt checks run on the blocking pool.
use std::{
    collections::HashSet,
    hash::BuildHasher,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use http::{header, HeaderMap};

use crate::snapshot::BasicAuth;

const CACHE_MAX: usize = 4096;

/// Verifies basic credentials, remembering the ones that passed.
#[derive(Debug, Default)]
pub struct Authenticator {
    verified: Mutex<HashSet<u64>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Authenticator {
    /// Whether the request carries valid credentials for `auth`.
    pub async fn check(&self, auth: &Arc<BasicAuth>, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((user, pass)) = parse_basic(value.as_bytes()) else {
            return false;
        };
        let Some(stored) = auth.users.get(&user) else {
            return false;
        };
        let key = self.hasher.hash_one((stored.as_str(), value.as_bytes()));
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let ok = if stored.starts_with("$2") {
            let stored = stored.clone();
            tokio::task::spawn_blocking(move || verify_password(&pass, &stored))
                .await
                .unwrap_or(false)
        } else {
            verify_password(&pass, stored)
        };
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() >= CACHE_MAX {
                v.clear();
            }
            v.insert(key);
        }
        ok
    }
}

/// `Basic base64(user:pass)` -> (user, pass).
pub(crate) fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Checks `pass` against an htpasswd hash.
pub fn verify_password(pass: &str, stored: &str) -> bool {
    if let Some(b64) = stored.strip_prefix("{SHA}") {
        use sha1::Digest as _;
        let digest = sha1::Sha1::digest(pass.as_bytes());
        let mine = base64::engine::general_purpose::STANDARD.encode(digest);
        return constant_eq(mine.as_bytes(), b64.as_bytes());
    }
    if let Some(rest) = stored.strip_prefix("$apr1$") {
        let salt = rest.split('$').next().unwrap_or("");
        let mine = md5_crypt(pass.as_bytes(), salt.as_bytes(), b"$apr1$");
        return constant_eq(mine.as_bytes(), stored.as_bytes());
    }
    pwhash::unix::verify(pass, stored)
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The MD5-crypt algorithm (PHK) with a given magic (`$1$`, or `$apr1$` for Apache).
fn md5_crypt(pw: &[u8], salt: &[u8], magic: &[u8]) -> String {
    use md5::{Digest as _, Md5};
    let salt = &salt[..salt.len().min(8)];
    let mut alt = Md5::new();
    alt.update(pw);
    alt.update(salt);
    alt.update(pw);
    let alt = alt.finalize();
    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(magic);
    ctx.update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i != 0 {
        if i & 1 != 0 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 != 0 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(pw);
        }
        if round & 1 != 0 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(&String::from_utf8_lossy(magic));
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut push = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    push((b(0) << 16) | (b(6) << 8) | b(12), 4);
    push((b(1) << 16) | (b(7) << 8) | b(13), 4);
    push((b(2) << 16) | (b(8) << 8) | b(14), 4);
    push((b(3) << 16) | (b(9) << 8) | b(15), 4);
    push((b(4) << 16) | (b(10) << 8) | b(5), 4);
    push(b(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_formats() {
        // Vectors from `openssl passwd -apr1/-1 -salt xyzsalt password`.
        assert!(verify_password(
            "password",
            "$apr1$xyzsalt$JVPGl77ThvY9HAGwus/Uu1"
        ));
        assert!(!verify_password(
            "passwort",
            "$apr1$xyzsalt$JVPGl77ThvY9HAGwus/Uu1"
        ));
        assert!(verify_password(
            "password",
            "$1$xyzsalt$2eTsT8hwLX2wFYs8OL8u20"
        ));
        assert!(verify_password(
            "password",
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
        ));
        assert!(!verify_password("x", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
        let bcrypt = pwhash::bcrypt::hash_with(
            pwhash::bcrypt::BcryptSetup {
                cost: Some(4),
                variant: Some(pwhash::bcrypt::BcryptVariant::V2y),
                ..Default::default()
            },
            "s3cret",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(bcrypt.starts_with("$2y$"));
        assert!(verify_password("s3cret", &bcrypt));
        assert!(!verify_password("s3cre", &bcrypt));
        assert!(!verify_password("password", "garbage"));
    }

    #[test]
    fn parses_header() {
        assert_eq!(
            parse_basic(b"Basic dXNlcjpwYTpzcw=="),
            Some(("user".into(), "pa:ss".into()))
        );
        assert_eq!(parse_basic(b"Bearer x"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
    }
}

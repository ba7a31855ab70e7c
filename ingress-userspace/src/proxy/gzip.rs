//! `use-gzip`: answers (upstreams' and the proxy's own) compressed for clients that accept
//! gzip, as nginx's gzip filter decides it under ingress-nginx's settings (`gzip_proxied
//! any`, `gzip_vary on`): only 200, 403 and 404 answers, not already encoded, of a listed
//! type, and not known to be shorter than `gzip-min-length`.
use std::io::Write;

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

/// The compiled `gzip-*` settings.
#[derive(Debug)]
pub struct GzipPolicy {
    level: u32,
    min_length: u64,
    /// Lower-case MIME types; `*` matches every type.
    types: Vec<String>,
}

impl GzipPolicy {
    /// The snapshot's settings; `None` while `use-gzip` is off.
    pub fn compile(g: &crate::snapshot::Gzip) -> Option<Self> {
        g.enabled.then(|| GzipPolicy {
            level: g.level.clamp(1, 9),
            min_length: g.min_length,
            types: g.types.iter().map(|t| t.to_ascii_lowercase()).collect(),
        })
    }

    /// Whether a request may get a compressed answer: it accepts gzip and is not `HEAD`.
    pub fn wanted(&self, method: &Method, headers: &HeaderMap) -> bool {
        method != Method::HEAD && accepts_gzip(headers)
    }

    /// Compresses `response` when it qualifies: its headers are changed and its body wrapped.
    pub fn apply(&self, response: &mut Response<super::body::ResponseBody>) {
        if !self.compresses(response.status(), response.headers()) {
            return;
        }
        let h = response.headers_mut();
        h.remove(header::CONTENT_LENGTH);
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        add_vary(h);
        // The compressed bytes differ from what a strong validator promised.
        if let Some(etag) = h.get(header::ETAG) {
            if !etag.as_bytes().starts_with(b"W/") {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(etag.as_bytes());
                if let Ok(v) = HeaderValue::from_bytes(&weak) {
                    h.insert(header::ETAG, v);
                }
            }
        }
        response.body_mut().gzip(Encoder::new(self.level));
    }

    fn compresses(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        let status_ok = matches!(status.as_u16(), 200 | 403 | 404);
        let encoded = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.is_empty());
        let too_short =
            super::headers::content_length(headers).is_some_and(|len| len < self.min_length);
        status_ok && !encoded && !too_short && self.listed(headers)
    }

    /// Whether the answer's type is listed (`text/html` always is, and under `*` every
    /// answer, typed or not, as in nginx).
    fn listed(&self, headers: &HeaderMap) -> bool {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        // gRPC frames its own messages (and compresses them itself), even under `*`.
        if mime.len() >= 16 && mime[..16].eq_ignore_ascii_case("application/grpc") {
            return false;
        }
        if self.types.iter().any(|t| t == "*") {
            return true;
        }
        !mime.is_empty()
            && (mime.eq_ignore_ascii_case("text/html")
                || self.types.iter().any(|t| t.eq_ignore_ascii_case(mime)))
    }
}

/// Whether `Accept-Encoding` lists gzip without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    super::headers::list_items(headers, header::ACCEPT_ENCODING).any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        coding.eq_ignore_ascii_case("gzip") && !refused
    })
}

fn add_vary(h: &mut HeaderMap) {
    let listed = super::headers::list_items(h, header::VARY)
        .any(|v| v.eq_ignore_ascii_case("accept-encoding") || v == "*");
    if !listed {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A gzip stream fed with the body's chunks.
pub struct Encoder {
    enc: Option<GzEncoder<Vec<u8>>>,
    /// The body's trailers, sent after the stream's end.
    trailers: Option<HeaderMap>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("finished", &self.enc.is_none())
            .finish()
    }
}

impl Encoder {
    fn new(level: u32) -> Self {
        Encoder {
            enc: Some(GzEncoder::new(Vec::new(), Compression::new(level))),
            trailers: None,
        }
    }

    /// Keeps the body's trailers until the compressed stream has ended.
    pub fn hold_trailers(&mut self, trailers: HeaderMap) {
        self.trailers = Some(trailers);
    }

    /// The held trailers, once the stream has ended.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        if self.enc.is_some() {
            return None;
        }
        self.trailers.take()
    }

    /// Compresses `data`; what the stream has ready so far, if anything.
    pub fn feed(&mut self, data: &[u8]) -> std::io::Result<Option<Bytes>> {
        let Some(enc) = self.enc.as_mut() else {
            return Ok(None);
        };
        enc.write_all(data)?;
        let out = std::mem::take(enc.get_mut());
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }

    /// Ends the stream: the rest of the output and the gzip trailer (once).
    pub fn finish(&mut self) -> std::io::Result<Option<Bytes>> {
        match self.enc.take() {
            Some(enc) => Ok(Some(Bytes::from(enc.finish()?))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn policy() -> GzipPolicy {
        GzipPolicy::compile(&crate::snapshot::Gzip {
            enabled: true,
            ..Default::default()
        })
        .expect("enabled")
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "x-gzip2")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(!policy().wanted(&Method::HEAD, &headers(&[("accept-encoding", "gzip")])));
    }

    #[test]
    fn only_listed_unencoded_long_enough_answers_qualify() {
        let p = policy();
        let ok = |status: u16, h: &[(&'static str, &'static str)]| {
            p.compresses(StatusCode::from_u16(status).expect("status"), &headers(h))
        };
        assert!(ok(
            200,
            &[("content-type", "application/json; charset=utf-8")]
        ));
        assert!(
            ok(404, &[("content-type", "text/html")]),
            "text/html always"
        );
        assert!(!ok(206, &[("content-type", "text/plain")]));
        assert!(!ok(200, &[("content-type", "image/png")]));
        assert!(!ok(200, &[]), "no type");
        let all = GzipPolicy {
            types: vec!["*".into()],
            ..policy()
        };
        let h = headers(&[("content-type", "image/png")]);
        assert!(all.compresses(StatusCode::OK, &h));
        assert!(
            all.compresses(StatusCode::OK, &HeaderMap::new()),
            "untyped too"
        );
        let h = headers(&[("content-type", "application/grpc+proto")]);
        assert!(!all.compresses(StatusCode::OK, &h), "never gRPC");
        assert!(!ok(
            200,
            &[("content-type", "text/plain"), ("content-encoding", "br")]
        ));
        assert!(!ok(
            200,
            &[("content-type", "text/plain"), ("content-length", "100")]
        ));
        assert!(ok(
            200,
            &[("content-type", "text/plain"), ("content-length", "256")]
        ));
    }

    #[test]
    fn the_stream_decompresses_to_the_input() {
        let mut e = Encoder::new(1);
        let mut out = Vec::new();
        let chunk = "hello gzip ".repeat(500);
        for _ in 0..4 {
            if let Some(b) = e.feed(chunk.as_bytes()).expect("feed") {
                out.extend_from_slice(&b);
            }
        }
        out.extend_from_slice(&e.finish().expect("finish").expect("trailer"));
        assert!(e.finish().expect("again").is_none());
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut plain)
            .expect("gunzip");
        assert_eq!(plain, chunk.repeat(4));
        assert!(out.len() < plain.len() / 10);
    }
}

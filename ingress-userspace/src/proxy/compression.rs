//! `use-gzip` and `enable-brotli`: answers (upstreams' and the proxy's own) compressed for
//! clients that accept it, as nginx's gzip filter and ngx_brotli decide it under
//! ingress-nginx's settings (`gzip_proxied any`, `gzip_vary on`): only 200, 403 and 404
//! answers, not already encoded, of a listed type, and not known to be shorter than the
//! coding's minimum length. A client that accepts both gets brotli, as ngx_brotli's filter
//! runs before gzip's.
use std::io::Write;

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression as GzLevel};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::value_match::ValueMatcher;

/// A content coding the proxy compresses with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Brotli,
}

impl Coding {
    /// Its `Content-Encoding` token.
    fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
        }
    }
}

/// The compiled settings of one coding.
#[derive(Debug)]
struct Settings {
    coding: Coding,
    level: u32,
    min_length: u64,
    /// Lower-case MIME types; `*` matches every type.
    types: Vec<String>,
    /// `gzip-disable`: user agents that never get this coding.
    disabled_for: Option<ValueMatcher>,
}

/// The compiled `use-gzip`/`gzip-*` and `enable-brotli`/`brotli-*` settings.
#[derive(Debug)]
pub struct CompressionPolicy {
    /// In order of preference; only the enabled codings.
    codings: Vec<Settings>,
}

/// The coding chosen for one request, applied to its response once it is known.
#[derive(Clone, Copy, Debug)]
pub struct Chosen<'a>(&'a Settings);

impl CompressionPolicy {
    /// The snapshot's settings; `None` while both codings are off.
    pub fn compile(g: &crate::snapshot::Global) -> Option<Self> {
        let settings = |coding, c: &crate::snapshot::Compression, levels: (u32, u32)| {
            c.enabled.then(|| Settings {
                coding,
                level: c.level.clamp(levels.0, levels.1),
                min_length: c.min_length,
                types: c.types.iter().map(|t| t.to_ascii_lowercase()).collect(),
                disabled_for: ValueMatcher::compile(&c.disable_for),
            })
        };
        let codings: Vec<Settings> = [
            settings(Coding::Brotli, &g.brotli, (0, 11)),
            settings(Coding::Gzip, &g.gzip, (1, 9)),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!codings.is_empty()).then_some(CompressionPolicy { codings })
    }

    /// The coding a request's answer may get: one it accepts, and never for `HEAD`.
    pub fn wanted(&self, method: &Method, headers: &HeaderMap) -> Option<Chosen<'_>> {
        if method == Method::HEAD {
            return None;
        }
        self.codings
            .iter()
            .find(|s| {
                accepts(headers, s.coding)
                    && !s.disabled_for.as_ref().is_some_and(|m| {
                        headers
                            .get(header::USER_AGENT)
                            .is_some_and(|ua| m.matches(ua.as_bytes()))
                    })
            })
            .map(Chosen)
    }
}

impl Chosen<'_> {
    /// The coding chosen.
    pub fn coding(&self) -> Coding {
        self.0.coding
    }

    /// Compresses `response` when it qualifies: its headers are changed and its body wrapped.
    pub fn apply(&self, response: &mut Response<super::body::ResponseBody>) {
        let s = self.0;
        if !s.compresses(response.status(), response.headers()) {
            return;
        }
        let h = response.headers_mut();
        h.remove(header::CONTENT_LENGTH);
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(s.coding.token()),
        );
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
        response
            .body_mut()
            .compress(Encoder::new(s.coding, s.level));
    }
}

impl Settings {
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

/// Whether `Accept-Encoding` lists `coding` without `q=0`.
fn accepts(headers: &HeaderMap, coding: Coding) -> bool {
    super::headers::list_items(headers, header::ACCEPT_ENCODING).any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let listed = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        listed.eq_ignore_ascii_case(coding.token()) && !refused
    })
}

fn add_vary(h: &mut HeaderMap) {
    let listed = super::headers::list_items(h, header::VARY)
        .any(|v| v.eq_ignore_ascii_case("accept-encoding") || v == "*");
    if !listed {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// brotli's window: 2^19 bytes, ngx_brotli's default `brotli_window 512k`, which bounds the
/// memory a client's decoder needs.
const BROTLI_LGWIN: u32 = 19;

/// A compressing stream, written into a buffer that is drained after each write.
enum Stream {
    Gzip(GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

/// A compressed stream fed with the body's chunks.
pub struct Encoder {
    stream: Option<Stream>,
    /// The body's trailers, sent after the stream's end.
    trailers: Option<HeaderMap>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("finished", &self.stream.is_none())
            .finish()
    }
}

impl Encoder {
    fn new(coding: Coding, level: u32) -> Self {
        let stream = match coding {
            Coding::Gzip => Stream::Gzip(GzEncoder::new(Vec::new(), GzLevel::new(level))),
            Coding::Brotli => Stream::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                level,
                BROTLI_LGWIN,
            ))),
        };
        Encoder {
            stream: Some(stream),
            trailers: None,
        }
    }

    /// Keeps the body's trailers until the compressed stream has ended.
    pub fn hold_trailers(&mut self, trailers: HeaderMap) {
        self.trailers = Some(trailers);
    }

    /// The held trailers, once the stream has ended.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        if self.stream.is_some() {
            return None;
        }
        self.trailers.take()
    }

    /// Compresses `data`; what the stream has ready so far, if anything.
    pub fn feed(&mut self, data: &[u8]) -> std::io::Result<Option<Bytes>> {
        let out = match self.stream.as_mut() {
            None => return Ok(None),
            Some(Stream::Gzip(enc)) => {
                enc.write_all(data)?;
                std::mem::take(enc.get_mut())
            }
            Some(Stream::Brotli(enc)) => {
                enc.write_all(data)?;
                std::mem::take(enc.get_mut())
            }
        };
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }

    /// Ends the stream: the rest of the output and the coding's trailer (once).
    pub fn finish(&mut self) -> std::io::Result<Option<Bytes>> {
        let out = match self.stream.take() {
            None => return Ok(None),
            Some(Stream::Gzip(enc)) => enc.finish()?,
            Some(Stream::Brotli(enc)) => enc.into_inner(),
        };
        Ok(Some(Bytes::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Compression, Global, MapSource};
    use std::io::Read;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn global(gzip: bool, brotli: bool) -> Global {
        Global {
            gzip: Compression {
                enabled: gzip,
                ..Compression::gzip_default()
            },
            brotli: Compression {
                enabled: brotli,
                ..Compression::brotli_default()
            },
            ..Global::default()
        }
    }

    fn gzip() -> Settings {
        let mut p = CompressionPolicy::compile(&global(true, false)).expect("enabled");
        p.codings.remove(0)
    }

    fn chosen(p: &CompressionPolicy, accept: &'static str) -> Option<Coding> {
        p.wanted(&Method::GET, &headers(&[("accept-encoding", accept)]))
            .map(|c| c.coding())
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let gz = |pairs| accepts(&headers(pairs), Coding::Gzip);
        assert!(gz(&[("accept-encoding", "gzip, deflate, br")]));
        assert!(gz(&[("accept-encoding", "br;q=1.0, GZIP;q=0.5")]));
        assert!(!gz(&[("accept-encoding", "gzip;q=0")]));
        assert!(!gz(&[("accept-encoding", "identity")]));
        assert!(!gz(&[("accept-encoding", "x-gzip2")]));
        assert!(!gz(&[]));
        assert!(accepts(
            &headers(&[("accept-encoding", "gzip, BR")]),
            Coding::Brotli
        ));
        assert!(!accepts(
            &headers(&[("accept-encoding", "br;q=0.000")]),
            Coding::Brotli
        ));
        let p = CompressionPolicy::compile(&global(true, false)).expect("enabled");
        assert!(p
            .wanted(&Method::HEAD, &headers(&[("accept-encoding", "gzip")]))
            .is_none());
    }

    #[test]
    fn brotli_is_preferred_where_accepted_and_gzip_disable_spares_listed_agents() {
        assert!(CompressionPolicy::compile(&global(false, false)).is_none());
        let both = CompressionPolicy::compile(&global(true, true)).expect("on");
        assert_eq!(chosen(&both, "gzip, deflate, br"), Some(Coding::Brotli));
        assert_eq!(chosen(&both, "gzip, br;q=0"), Some(Coding::Gzip));
        assert_eq!(chosen(&both, "deflate"), None);
        let brotli = CompressionPolicy::compile(&global(false, true)).expect("on");
        assert_eq!(chosen(&brotli, "gzip"), None);
        assert_eq!(chosen(&brotli, "br"), Some(Coding::Brotli));

        let mut g = global(true, true);
        g.gzip.disable_for = vec![MapSource::Regex {
            pattern: "msie [4-6]\\.".into(),
            ignore_case: true,
        }];
        let p = CompressionPolicy::compile(&g).expect("on");
        let ask = |ua: &'static str, accept: &'static str| {
            p.wanted(
                &Method::GET,
                &headers(&[("user-agent", ua), ("accept-encoding", accept)]),
            )
            .map(|c| c.coding())
        };
        assert_eq!(ask("Mozilla/4.0 (compatible; MSIE 6.0)", "gzip"), None);
        assert_eq!(
            ask("Mozilla/4.0 (compatible; MSIE 6.0)", "gzip, br"),
            Some(Coding::Brotli),
            "gzip-disable is gzip's alone"
        );
        assert_eq!(ask("curl/8.0", "gzip"), Some(Coding::Gzip));
    }

    #[test]
    fn only_listed_unencoded_long_enough_answers_qualify() {
        let p = gzip();
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
        let all = Settings {
            types: vec!["*".into()],
            ..gzip()
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

    fn encode(coding: Coding, level: u32, input: &[u8], chunks: usize) -> Vec<u8> {
        let mut e = Encoder::new(coding, level);
        let mut out = Vec::new();
        for _ in 0..chunks {
            if let Some(b) = e.feed(input).expect("feed") {
                out.extend_from_slice(&b);
            }
        }
        out.extend_from_slice(&e.finish().expect("finish").expect("trailer"));
        assert!(e.finish().expect("again").is_none());
        out
    }

    #[test]
    fn each_stream_decompresses_to_the_input() {
        let chunk = "hello compression ".repeat(500);
        let out = encode(Coding::Gzip, 1, chunk.as_bytes(), 4);
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut plain)
            .expect("gunzip");
        assert_eq!(plain, chunk.repeat(4));
        assert!(out.len() < plain.len() / 10);

        for level in [0, 4, 11] {
            let out = encode(Coding::Brotli, level, chunk.as_bytes(), 4);
            let mut plain = String::new();
            brotli::Decompressor::new(&out[..], 4096)
                .read_to_string(&mut plain)
                .expect("unbrotli");
            assert_eq!(plain, chunk.repeat(4), "level {level}");
            assert!(out.len() < plain.len() / 10, "level {level}");
        }
        // An empty body is still a whole stream.
        let out = encode(Coding::Brotli, 4, b"", 0);
        let mut plain = Vec::new();
        brotli::Decompressor::new(&out[..], 4096)
            .read_to_end(&mut plain)
            .expect("empty");
        assert!(plain.is_empty());
    }
}

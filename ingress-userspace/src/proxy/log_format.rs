//! Access-log lines in the operator's nginx `log_format` (`log-format-upstream`), so log
//! pipelines written for ingress-nginx keep parsing them. Compiled once per snapshot; the
//! request values a format names are captured when the request arrives (only those), and
//! the line is rendered when the response is done.
use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use http::{header, HeaderName, HeaderValue, Request, Version};
use k8s_openapi::jiff;

use super::access_log::AccessRecord;
use crate::snapshot::{LogEscape, LogFormat, LogPart, LogVar};

/// A compiled `log-format-upstream`.
#[derive(Debug)]
pub struct AccessFormat {
    parts: Vec<Part>,
    escape: LogEscape,
    /// The `$http_*` headers, each once, in the order `Part::Header` indexes them.
    headers: Vec<HeaderName>,
    wants_user: bool,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Var(LogVar),
    Header(usize),
}

/// What a format needs from the request, taken when it arrives.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    request_uri: String,
    headers: Vec<Option<HeaderValue>>,
    user: Option<String>,
    https: bool,
    request_length: u64,
}

/// How the request ended, for the line.
pub(crate) struct Outcome {
    pub status: u16,
    pub bytes: u64,
    pub elapsed: Duration,
    pub upstream_elapsed: Option<Duration>,
    pub upstream_status: Option<u16>,
    /// Body bytes from the upstream as sent on (compressed ones when gzip applies).
    pub upstream_bytes: Option<u64>,
}

impl AccessFormat {
    /// The translator's checked format, with its escaping.
    pub fn compile(format: &LogFormat, escape: LogEscape) -> Self {
        let mut headers: Vec<HeaderName> = Vec::new();
        let mut wants_user = false;
        let parts = format
            .parts
            .iter()
            .filter_map(|p| match p {
                LogPart::Text(t) => Some(Part::Text(t.clone())),
                LogPart::Var(LogVar::Header(name)) => {
                    // Checked by the translator; a name that still fails is left out.
                    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                    let i = headers.iter().position(|h| *h == name).unwrap_or_else(|| {
                        headers.push(name);
                        headers.len() - 1
                    });
                    Some(Part::Header(i))
                }
                LogPart::Var(v) => {
                    wants_user |= *v == LogVar::RemoteUser;
                    Some(Part::Var(v.clone()))
                }
            })
            .collect();
        AccessFormat {
            parts,
            escape,
            headers,
            wants_user,
        }
    }

    /// The values of `req` the format names; `request_length` is its [`request_length`].
    pub(crate) fn capture<B>(
        &self,
        req: &Request<B>,
        https: bool,
        request_length: u64,
    ) -> Captured {
        let h = req.headers();
        let request_uri = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        Captured {
            request_length,
            request_uri,
            headers: self.headers.iter().map(|n| h.get(n).cloned()).collect(),
            user: self
                .wants_user
                .then(|| h.get(header::AUTHORIZATION))
                .flatten()
                .and_then(|v| super::filters::auth::parse_basic(v.as_bytes()))
                .map(|(user, _)| user),
            https,
        }
    }

    /// The line for a finished request.
    pub(crate) fn render(
        &self,
        r: &AccessRecord,
        c: &Captured,
        o: &Outcome,
        now: SystemTime,
    ) -> String {
        let mut line = String::with_capacity(256);
        let mut value = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Text(t) => line.push_str(t),
                Part::Header(i) => {
                    let v = c.headers.get(*i).and_then(Option::as_ref);
                    self.push_bytes(&mut line, v.map_or(&[][..], |v| v.as_bytes()));
                }
                Part::Var(var) => {
                    value.clear();
                    fill(&mut value, var, r, c, o, now);
                    self.push_bytes(&mut line, value.as_bytes());
                }
            }
        }
        line
    }

    /// Appends a value escaped as nginx's `escape=` says.
    fn push_bytes(&self, line: &mut String, v: &[u8]) {
        if v.is_empty() {
            if self.escape != LogEscape::Json {
                line.push('-');
            }
            return;
        }
        match self.escape {
            LogEscape::None => line.push_str(&String::from_utf8_lossy(v)),
            LogEscape::Default => {
                for &b in v {
                    if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                        let _ = write!(line, "\\x{b:02X}");
                    } else {
                        line.push(b as char);
                    }
                }
            }
            LogEscape::Json => {
                for ch in String::from_utf8_lossy(v).chars() {
                    match ch {
                        '"' => line.push_str("\\\""),
                        '\\' => line.push_str("\\\\"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        '\t' => line.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(line, "\\u{:04x}", c as u32);
                        }
                        c => line.push(c),
                    }
                }
            }
        }
    }
}

/// Each earlier try, as `each` writes it, followed by `, ` (a `String` takes every write).
fn earlier(
    out: &mut String,
    r: &AccessRecord,
    mut each: impl FnMut(&mut String, &super::access_log::EarlierTry) -> std::fmt::Result,
) {
    for t in &r.earlier {
        let _ = each(out, t);
        out.push_str(", ");
    }
}

/// One variable's value into `out`; nothing when it has none.
fn fill(
    out: &mut String,
    var: &LogVar,
    r: &AccessRecord,
    c: &Captured,
    o: &Outcome,
    now: SystemTime,
) {
    let protocol = match r.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let method = r.method.as_ref().map_or("", http::Method::as_str);
    // `ns/svc:port` and `ns/name`.
    let service = r
        .upstream_name
        .as_deref()
        .and_then(|n| n.split_once('/'))
        .and_then(|(_, rest)| rest.rsplit_once(':'));
    let ingress = r.ingress.as_deref().and_then(|n| n.split_once('/'));
    let _ = match var {
        LogVar::RemoteAddr => write!(out, "{}", r.client.to_canonical()),
        LogVar::RemoteUser => write!(out, "{}", c.user.as_deref().unwrap_or("")),
        LogVar::TimeLocal => write!(out, "{}", time_local(now)),
        LogVar::TimeIso8601 => write!(out, "{}", time_iso8601(now)),
        LogVar::Msec => {
            let d = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            write!(out, "{}.{:03}", d.as_secs(), d.subsec_millis())
        }
        LogVar::Request if method.is_empty() => Ok(()),
        LogVar::Request => write!(out, "{method} {} {protocol}", c.request_uri),
        LogVar::RequestMethod => write!(out, "{method}"),
        LogVar::RequestUri => write!(out, "{}", c.request_uri),
        LogVar::Uri => write!(out, "{}", r.path),
        LogVar::Args => write!(
            out,
            "{}",
            c.request_uri.split_once('?').map_or("", |(_, q)| q)
        ),
        LogVar::ServerProtocol => write!(out, "{protocol}"),
        LogVar::Scheme => write!(out, "{}", if c.https { "https" } else { "http" }),
        LogVar::Host => write!(out, "{}", super::router::normalize_host(&r.host)),
        LogVar::Status => write!(out, "{}", o.status),
        LogVar::BodyBytesSent => write!(out, "{}", o.bytes),
        LogVar::RequestLength => write!(out, "{}", c.request_length),
        LogVar::RequestTime => write!(out, "{:.3}", o.elapsed.as_secs_f64()),
        LogVar::ProxyUpstreamName => write!(
            out,
            "{}",
            r.main_upstream
                .as_deref()
                .or(r.upstream_name.as_deref())
                .unwrap_or("")
        ),
        LogVar::ProxyAlternativeUpstreamName => match &r.main_upstream {
            Some(_) => write!(out, "{}", r.upstream_name.as_deref().unwrap_or("")),
            None => Ok(()),
        },
        // Each try that `proxy-next-upstream` went on from comes first, comma-separated, as
        // nginx lists them; a failed one received no bytes.
        LogVar::UpstreamAddr => {
            earlier(out, r, |out, t| write!(out, "{}", t.addr));
            match r.upstream {
                Some(a) => write!(out, "{a}"),
                None => Ok(()),
            }
        }
        LogVar::UpstreamStatus => {
            earlier(out, r, |out, t| write!(out, "{}", t.status));
            match o.upstream_status {
                Some(s) => write!(out, "{s}"),
                None => Ok(()),
            }
        }
        LogVar::UpstreamResponseTime => {
            earlier(out, r, |out, t| {
                write!(out, "{:.3}", t.elapsed.unwrap_or_default().as_secs_f64())
            });
            match o.upstream_elapsed {
                Some(d) => write!(out, "{:.3}", d.as_secs_f64()),
                None => Ok(()),
            }
        }
        LogVar::UpstreamResponseLength => {
            earlier(out, r, |out, _| write!(out, "0"));
            match o.upstream_bytes {
                Some(n) => write!(out, "{n}"),
                None => Ok(()),
            }
        }
        LogVar::RequestId => write!(out, "{}", r.request_id.to_str().unwrap_or("")),
        LogVar::Namespace => write!(out, "{}", ingress.map_or("", |(ns, _)| ns)),
        LogVar::IngressName => write!(out, "{}", ingress.map_or("", |(_, n)| n)),
        LogVar::ServiceName => write!(out, "{}", service.map_or("", |(s, _)| s)),
        LogVar::ServicePort => write!(out, "{}", service.map_or("", |(_, p)| p)),
        // Rendered from the captured headers by the caller.
        LogVar::Header(_) => Ok(()),
    };
}

/// nginx's `$request_length` as the proxy can know it without counting every read: the head
/// as it reads over HTTP/1.1, plus the body's `Content-Length` (a chunked body is not counted).
pub(crate) fn request_length<B>(req: &Request<B>) -> u64 {
    let uri_len = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + 1 + uri_len + 1 + 8 + 2;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    let body = super::headers::content_length(req.headers()).unwrap_or(0);
    (line + fields + 2) as u64 + body
}

/// `now` as nginx's `$time_local` would print it in UTC (containers run in UTC; nginx
/// prints the local zone): `28/Nov/2026:05:00:00 +0000`.
fn time_local(now: SystemTime) -> impl std::fmt::Display {
    timestamp(now).strftime("%d/%b/%Y:%H:%M:%S +0000")
}

/// `now` as `$time_iso8601` in UTC: `2026-11-28T05:00:00+00:00`.
fn time_iso8601(now: SystemTime) -> impl std::fmt::Display {
    timestamp(now).strftime("%Y-%m-%dT%H:%M:%S+00:00")
}

fn timestamp(now: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use super::*;
    use crate::translate::log_format::parse;

    fn record() -> AccessRecord {
        AccessRecord {
            method: Some(http::Method::POST),
            host: "App.Example:8443".into(),
            path: "/api/x".into(),
            version: Version::HTTP_11,
            client: "192.0.2.7".parse().expect("ip"),
            request_id: HeaderValue::from_static("abc123"),
            upstream: Some("10.1.2.3:8080".parse::<SocketAddr>().expect("addr")),
            upstream_name: Some(Arc::from("web/api-canary:80")),
            main_upstream: Some(Arc::from("web/api:80")),
            ingress: Some(Arc::from("web/api")),
            upstream_start: None,
            upstream_status: None,
            earlier: Vec::new(),
            format: None,
        }
    }

    fn request() -> Request<()> {
        Request::builder()
            .method("POST")
            .uri("/api/x?q=1&r=%22")
            .header("user-agent", "curl/8 \"quoted\"")
            .header("authorization", "Basic YWxpY2U6c2VjcmV0")
            .header("content-length", "5")
            .body(())
            .expect("request")
    }

    fn outcome() -> Outcome {
        Outcome {
            status: 201,
            bytes: 42,
            elapsed: Duration::from_millis(1234),
            upstream_elapsed: Some(Duration::from_millis(1200)),
            upstream_status: Some(201),
            upstream_bytes: Some(42),
        }
    }

    fn line(format: &str, escape: LogEscape) -> String {
        let f = AccessFormat::compile(&parse(format).expect("format"), escape);
        let req = request();
        let c = f.capture(&req, true, request_length(&req));
        // 2026-11-28T05:06:07Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_842_367);
        f.render(&record(), &c, &outcome(), now)
    }

    #[test]
    fn ingress_nginx_default_format() {
        let format = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"#;
        let len = "POST /api/x?q=1&r=%22 HTTP/1.1\r\n".len()
            + "user-agent: curl/8 \"quoted\"\r\n".len()
            + "authorization: Basic YWxpY2U6c2VjcmV0\r\n".len()
            + "content-length: 5\r\n".len()
            + 2
            + 5;
        assert_eq!(
            line(format, LogEscape::Default),
            format!(
                "192.0.2.7 - alice [28/Nov/2026:05:06:07 +0000] \"POST /api/x?q=1&r=%22 \
                 HTTP/1.1\" 201 42 \"-\" \"curl/8 \\x22quoted\\x22\" {len} 1.234 \
                 [web/api:80] [web/api-canary:80] 10.1.2.3:8080 42 1.200 201 abc123"
            )
        );
    }

    #[test]
    fn earlier_tries_come_first_in_the_upstream_variables() {
        let f = AccessFormat::compile(
            &parse(
                "$upstream_addr|$upstream_status|$upstream_response_time|$upstream_response_length",
            )
            .expect("format"),
            LogEscape::Default,
        );
        let req = request();
        let c = f.capture(&req, true, request_length(&req));
        let mut r = record();
        for (port, status, ms) in [(1, 502, 1), (2, 503, 20)] {
            r.earlier.push(super::super::access_log::EarlierTry {
                addr: SocketAddr::from(([10, 0, 0, port], 80)),
                status,
                elapsed: Some(Duration::from_millis(ms)),
            });
        }
        assert_eq!(
            f.render(&r, &c, &outcome(), SystemTime::UNIX_EPOCH),
            "10.0.0.1:80, 10.0.0.2:80, 10.1.2.3:8080|502, 503, 201|0.001, 0.020, 1.200|0, 0, 42"
        );
    }

    #[test]
    fn json_escaping_and_ingress_variables() {
        let format = r#"{"time": "$time_iso8601", "ua": "$http_user_agent", "ref": "$http_referer", "ns": "$namespace", "ing": "$ingress_name", "svc": "$service_name", "port": "$service_port", "host": "$host", "args": "$args", "scheme": "$scheme", "ms": $msec}"#;
        let out = line(format, LogEscape::Json);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["time"], "2026-11-28T05:06:07+00:00");
        assert_eq!(v["ua"], "curl/8 \"quoted\"");
        assert_eq!(v["ref"], "", "empty, not -");
        assert_eq!(
            (&v["ns"], &v["ing"], &v["svc"], &v["port"]),
            (
                &"web".into(),
                &"api".into(),
                &"api-canary".into(),
                &"80".into()
            )
        );
        assert_eq!(v["host"], "app.example");
        assert_eq!(v["args"], "q=1&r=%22");
        assert_eq!(v["scheme"], "https");
        assert_eq!(v["ms"], 1_795_842_367.0);
        assert_eq!(
            line("$http_user_agent", LogEscape::None),
            "curl/8 \"quoted\""
        );
    }

    #[test]
    fn civil_dates() {
        let at = |s: u64| time_iso8601(SystemTime::UNIX_EPOCH + Duration::from_secs(s)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59+00:00");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00+00:00");
    }
}

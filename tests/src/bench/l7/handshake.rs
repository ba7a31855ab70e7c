//! One HTTP/1.1 exchange per connection (`Connection: close`), over TLS or not, and a load
//! generator running them back to back on N connections: every TLS connection is a new full
//! handshake (TLS 1.3, X25519, session resumption disabled in the client, so no PSK is ever
//! offered), then one GET, then the server closes.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use rustls::{client::Resumption, ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use super::stats::percentile;

/// Largest response read.
const MAX_RESPONSE: usize = 1 << 20;

/// The client config of the handshake benchmark: TLS 1.3 only, X25519 only (the group every
/// peer supports, so no peer gets a different key exchange), no resumption, ALPN http/1.1,
/// and full certificate verification against `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.context("CA PEM")?)?;
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.resumption = Resumption::disabled();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// TLS side of the client: connector and the server name to send.
#[derive(Clone)]
pub struct ClientTls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl ClientTls {
    /// A client for `sni` with `config`.
    pub fn new(config: Arc<ClientConfig>, sni: &str) -> anyhow::Result<Self> {
        Ok(ClientTls {
            connector: TlsConnector::from(config),
            name: ServerName::try_from(sni.to_string())?,
        })
    }
}

/// What was negotiated on a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub group: String,
    pub kind: String,
}

impl TlsInfo {
    /// Whether the handshake was a full one (no resumption).
    pub fn full(&self) -> bool {
        self.kind == format!("{:?}", HandshakeKind::Full)
    }
}

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub tls: Option<TlsInfo>,
}

/// Parses an HTTP/1.1 response read to its end: status, head, and the body (Content-Length
/// or chunked framing removed).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of response head")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let rest = &raw[end + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let body = if let Some(cl) = header("content-length") {
        let n: usize = cl.parse().context("bad content-length")?;
        if rest.len() < n {
            bail!("body cut short: {} of {n} bytes", rest.len());
        }
        rest[..n].to_vec()
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok((status, head, body))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_txt = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(1024);
    loop {
        match s.read_buf(&mut raw).await {
            Ok(0) => break,
            Ok(_) if raw.len() > MAX_RESPONSE => bail!("response larger than {MAX_RESPONSE}"),
            Ok(_) => {}
            // A peer closing TCP without close_notify: the response is checked for
            // completeness by its framing.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(raw)
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-l7\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    parse_response(&read_to_close(s).await?)
}

/// Connects to `addr` (TLS when `tls` is set), sends `GET /` for `host` with
/// `Connection: close`, and reads the response until the server closes.
pub async fn exchange(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    host: &str,
) -> anyhow::Result<Exchange> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => {
            let mut tcp = tcp;
            let (status, head, body) = request(&mut tcp, host).await?;
            Ok(Exchange {
                status,
                head,
                body,
                tls: None,
            })
        }
        Some(t) => {
            let mut s = t
                .connector
                .connect(t.name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            let c = s.get_ref().1;
            let info = TlsInfo {
                version: c
                    .protocol_version()
                    .map_or("none".into(), |v| format!("{v:?}")),
                cipher: c
                    .negotiated_cipher_suite()
                    .map_or("none".into(), |s| format!("{:?}", s.suite())),
                group: c
                    .negotiated_key_exchange_group()
                    .map_or("none".into(), |g| format!("{:?}", g.name())),
                kind: c
                    .handshake_kind()
                    .map_or("none".into(), |k| format!("{k:?}")),
            };
            let (status, head, body) = request(&mut s, host).await?;
            Ok(Exchange {
                status,
                head,
                body,
                tls: Some(info),
            })
        }
    }
}

/// Result of a handshake load run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Exchanges completed with a full handshake, status 200 and the expected body.
    pub completed: u64,
    pub errors: u64,
    /// Handshakes that were not full (must stay 0).
    pub not_full: u64,
    pub elapsed_s: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    /// CPU the generator itself used (utime+stime), µs; filled in by the caller.
    pub client_cpu_us: u64,
    pub first_error: Option<String>,
}

impl LoadReport {
    /// As one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "completed": self.completed,
            "errors": self.errors,
            "not_full": self.not_full,
            "elapsed_s": self.elapsed_s,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "client_cpu_us": self.client_cpu_us,
            "first_error": self.first_error,
        })
        .to_string()
    }

    /// From [`LoadReport::to_json`]'s output.
    pub fn from_json(s: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(s.trim())?;
        let u = |k: &str| v[k].as_u64().with_context(|| format!("field {k}"));
        Ok(LoadReport {
            completed: u("completed")?,
            errors: u("errors")?,
            not_full: u("not_full")?,
            elapsed_s: v["elapsed_s"].as_f64().context("field elapsed_s")?,
            p50_us: u32::try_from(u("p50_us")?)?,
            p99_us: u32::try_from(u("p99_us")?)?,
            client_cpu_us: u("client_cpu_us")?,
            first_error: v["first_error"].as_str().map(str::to_string),
        })
    }

    /// Completed exchanges per second.
    pub fn rate(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.completed as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct WorkerOut {
    latencies_us: Vec<u32>,
    errors: u64,
    not_full: u64,
    first_error: Option<String>,
}

/// Runs new-connection exchanges on `connections` concurrent loops for `duration`; each
/// exchange is bounded by `timeout`. Latency is from `connect()` to the end of the response.
pub async fn load(
    addr: SocketAddr,
    tls: ClientTls,
    host: String,
    body: &'static [u8],
    connections: usize,
    duration: Duration,
    timeout: Duration,
) -> LoadReport {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (tls, host) = (tls.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let res = tokio::time::timeout(timeout, exchange(addr, Some(&tls), &host)).await;
                let err = match res {
                    Err(_) => Some("exchange timed out".to_string()),
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Ok(Ok(x)) if x.status != 200 || x.body != body => {
                        Some(format!("unexpected response: {}", x.head))
                    }
                    Ok(Ok(x)) => {
                        if x.tls.as_ref().is_some_and(TlsInfo::full) {
                            let us = t0.elapsed().as_micros();
                            out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                            None
                        } else {
                            out.not_full += 1;
                            Some(format!("handshake was not full: {:?}", x.tls))
                        }
                    }
                };
                if let Some(e) = err {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                    // Do not spin on a dead server.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    let mut report = LoadReport::default();
    for t in tasks {
        match t.await {
            Ok(o) => {
                all.extend(o.latencies_us);
                report.errors += o.errors;
                report.not_full += o.not_full;
                if report.first_error.is_none() {
                    report.first_error = o.first_error;
                }
            }
            Err(e) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert(format!("worker failed: {e}"));
            }
        }
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    all.sort_unstable();
    report.completed = all.len() as u64;
    report.p50_us = percentile(&all, 50.0);
    report.p99_us = percentile(&all, 99.0);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let (s, _, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"hello"[..]));
        let (_, _, b) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(b, b"hello!");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn report_round_trips() {
        let r = LoadReport {
            completed: 10,
            errors: 1,
            not_full: 0,
            elapsed_s: 2.5,
            p50_us: 100,
            p99_us: 900,
            client_cpu_us: 1234,
            first_error: Some("x".into()),
        };
        assert_eq!(LoadReport::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(r.rate(), 4.0);
    }
}

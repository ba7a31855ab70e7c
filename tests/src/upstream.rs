//! Upstream servers for the L7 tests, on 127.0.0.1 ephemeral ports: an HTTP echo server
//! (HTTP/1.1 and h2c) that records what reached it, a gRPC-like h2c server with trailers, a
//! WebSocket echo server, and addresses that refuse or never answer connects.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, task::JoinHandle};

/// What an upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A running test server; stops when dropped.
pub struct TestServer {
    pub name: String,
    pub addr: SocketAddr,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// TCP connections accepted and not yet closed.
    pub open: Arc<AtomicUsize>,
    /// Requests whose head was received.
    pub requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    /// Number of requests received.
    pub fn hits(&self) -> usize {
        self.requests.load(SeqCst)
    }

    /// An echo server (HTTP/1.1 and h2c). Paths containing:
    /// `/status/N` answers N (a 3xx with `Location: http://internal.test:8080/next?step=2`);
    /// `/delay/MS` waits first; `/bytes/N` sends N bytes;
    /// `/slowbody/MS` sends a first chunk then stalls MS before the rest; anything else
    /// answers 200 with a JSON description of the request. Every answer has `x-upstream`.
    pub async fn echo(name: &str) -> anyhow::Result<TestServer> {
        Self::serve(name, false, Duration::ZERO).await
    }

    /// An echo server that waits `delay` before every answer.
    pub async fn echo_slow(name: &str, delay: Duration) -> anyhow::Result<TestServer> {
        Self::serve(name, false, delay).await
    }

    /// A gRPC-like h2c server: echoes the request body as one data frame and ends with
    /// trailers `grpc-status: 0`, `grpc-message: ok`, `x-te: <request te>`.
    pub async fn grpc(name: &str) -> anyhow::Result<TestServer> {
        Self::serve(name, true, Duration::ZERO).await
    }

    /// An echo server listening on `addr` (port 0: any).
    pub async fn echo_on(name: &str, addr: SocketAddr) -> anyhow::Result<TestServer> {
        Self::serve_on(name, addr, false, Duration::ZERO).await
    }

    async fn serve(name: &str, grpc: bool, delay: Duration) -> anyhow::Result<TestServer> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::serve_on(name, any, grpc, delay).await
    }

    async fn serve_on(
        name: &str,
        addr: SocketAddr,
        grpc: bool,
        delay: Duration,
    ) -> anyhow::Result<TestServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let o = open.clone();
        let (c, r, s, n) = (
            connections.clone(),
            requests.clone(),
            seen.clone(),
            name.to_string(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, SeqCst);
                o.fetch_add(1, SeqCst);
                let (r, s, n, o) = (r.clone(), s.clone(), n.clone(), o.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (r, s, n) = (r.clone(), s.clone(), n.clone());
                        async move {
                            r.fetch_add(1, SeqCst);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(if grpc {
                                grpc_answer(&n, req, &s).await
                            } else {
                                echo_answer(&n, req, &s).await
                            })
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                    o.fetch_sub(1, SeqCst);
                });
            }
        });
        Ok(TestServer {
            name: name.to_string(),
            addr,
            connections,
            open,
            requests,
            seen,
            task,
        })
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn record(req: Request<Incoming>, seen: &Mutex<Vec<Seen>>) -> Seen {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let s = Seen {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(s.clone());
    s
}

async fn echo_answer(
    name: &str,
    req: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<EchoBody> {
    let s = record(req, seen).await;
    let path = s.uri.path().to_string();
    // The behaviour is the first `<kind>/<number>` pair anywhere in the path.
    let segs: Vec<&str> = path.split('/').collect();
    let (kind, arg) = segs
        .windows(2)
        .find_map(|w| {
            let n = w[1].parse::<u64>().ok()?;
            ["status", "bytes", "slowbody", "delay", "trailers"]
                .contains(&w[0])
                .then_some((w[0], Some(n)))
        })
        .unwrap_or(("", None));
    let mut resp = match (kind, arg) {
        ("status", Some(code)) => {
            let mut r = Response::new(full(format!("status {code} from {name}")));
            *r.status_mut() = StatusCode::from_u16(code as u16).unwrap_or(StatusCode::OK);
            if r.status().is_redirection() {
                // As an app behind a proxy often answers: its own, internal address.
                r.headers_mut().insert(
                    http::header::LOCATION,
                    http::HeaderValue::from_static("http://internal.test:8080/next?step=2"),
                );
            }
            r
        }
        ("bytes", Some(n)) => Response::new(full(vec![b'x'; n as usize])),
        ("trailers", Some(n)) => {
            // Plain text, then trailers (HTTP/2, or HTTP/1.1 chunked to a `TE: trailers`
            // client): `x-checksum` names the length.
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", http::HeaderValue::from(n));
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b't'; n as usize]))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))));
            r.headers_mut()
                .insert("content-type", http::HeaderValue::from_static("text/plain"));
            r
        }
        ("slowbody", Some(ms)) => {
            let stream = futures_util::stream::unfold(0u8, move |step| async move {
                match step {
                    0 => Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first;"))),
                        1,
                    )),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Some((Ok(Frame::data(Bytes::from_static(b"second"))), 2))
                    }
                    _ => None,
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        (k, a) => {
            if let ("delay", Some(ms)) = (k, a) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let headers: serde_json::Map<String, serde_json::Value> = s
                .headers
                .keys()
                .map(|k| {
                    let v: Vec<String> = s
                        .headers
                        .get_all(k)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect();
                    (
                        k.as_str().to_string(),
                        serde_json::Value::String(v.join(", ")),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "server": name,
                "method": s.method.as_str(),
                "uri": s.uri.to_string(),
                "version": format!("{:?}", s.version),
                "headers": headers,
                "body_len": s.body.len(),
            });
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
    };
    if let Ok(v) = http::HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-upstream", v);
    }
    resp
}

async fn grpc_answer(
    name: &str,
    req: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<EchoBody> {
    let s = record(req, seen).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers.insert("grpc-message", http::HeaderValue::from_static("ok"));
    if let Some(te) = s.headers.get("te") {
        trailers.insert("x-te", te.clone());
    }
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(s.body.clone())),
        Ok(Frame::trailers(trailers)),
    ];
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    if let Ok(v) = http::HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-upstream", v);
    }
    resp
}

fn full(b: impl Into<Bytes>) -> EchoBody {
    BodyExt::boxed(Full::new(b.into()))
}

/// A WebSocket echo server; returns its address and the task (abort to stop).
pub async fn websocket_echo() -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// Reads from `s` until a whole request head (up to its blank line) has arrived; `None` when
/// the connection ends first. What follows the head in the last read is dropped: for
/// upstreams that answer heads, not bodies.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => head.extend_from_slice(&buf[..k]),
        }
    }
    Some(head)
}

/// A raw TCP upstream on loopback: every accepted connection (numbered from 1) is handed to
/// `serve` on a task of its own. Stops accepting when dropped.
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// Starts one on loopback.
    pub async fn start<F, Fut>(serve: F) -> anyhow::Result<RawUpstream>
    where
        F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let n = count.fetch_add(1, SeqCst) + 1;
                tokio::spawn(serve(s, n));
            }
        });
        Ok(RawUpstream {
            addr,
            accepted,
            task,
        })
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream that accepts, reads the request and resets the connection without answering.
pub struct Resetter;

impl Resetter {
    /// Starts one on loopback.
    pub async fn start() -> anyhow::Result<RawUpstream> {
        use tokio::io::AsyncReadExt;
        RawUpstream::start(|mut s, _| async move {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            // Linger 0: close sends RST instead of FIN.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        })
        .await
    }
}

/// An HTTP/1.1 upstream that answers the first request of each connection as if keeping it
/// alive (no `Connection: close`) and then closes it, after `linger`: the stale pooled
/// connection every proxy meets when an upstream's keep-alive timeout is shorter than its own.
pub struct OneShot;

impl OneShot {
    /// Starts one on loopback.
    pub async fn start(linger: Duration) -> anyhow::Result<RawUpstream> {
        use tokio::io::AsyncWriteExt;
        RawUpstream::start(move |mut s, n| async move {
            if read_head(&mut s).await.is_none() {
                return;
            }
            let body = format!("conn {n}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-upstream: oneshot\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(linger).await;
            drop(s);
        })
        .await
    }
}

/// An h2c upstream that answers the first request of each connection and then shuts the
/// connection down gracefully (GOAWAY, then close): the HTTP/2 form of a stale pooled
/// connection.
pub struct OneShotH2;

impl OneShotH2 {
    /// Starts one on loopback.
    pub async fn start() -> anyhow::Result<RawUpstream> {
        RawUpstream::start(|s, n| async move {
            let (served, first) = tokio::sync::oneshot::channel::<()>();
            let served = Mutex::new(Some(served));
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                if let Some(tx) = served.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(());
                }
                let body = Full::new(Bytes::from(format!("h2 conn {n}")));
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-upstream", "oneshot-h2")
                            .body(body)
                            .unwrap_or_default(),
                    )
                }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = first => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        })
        .await
    }
}

/// An address where nothing listens (connect is refused).
pub async fn refused_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(addr)
}

/// A listener whose accept queue is full and never drained: further connects hang (the
/// kernel drops their SYNs), so connect timeouts can be tested on loopback.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: std::net::TcpListener,
    _fill: Vec<std::net::TcpStream>,
}

impl Blackhole {
    /// Sets one up.
    pub fn new() -> anyhow::Result<Blackhole> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>()?.into())?;
        s.listen(0)?;
        let listener: std::net::TcpListener = s.into();
        let addr = listener.local_addr()?;
        let mut fill = Vec::new();
        // Fill the queue; stop at the first connect that does not complete promptly.
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(c) => fill.push(c),
                Err(_) => break,
            }
        }
        Ok(Blackhole {
            addr,
            _listener: listener,
            _fill: fill,
        })
    }
}

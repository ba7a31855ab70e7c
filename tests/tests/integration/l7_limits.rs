//! Limits against abuse: smuggling-shaped and malformed requests (400, never forwarded),
//! oversized heads, slowloris, and HTTP/2 stream limits.
use std::{sync::atomic::Ordering::SeqCst, time::Duration};

use ingress::proxy::{limits::Limits, ProxyOptions};
use tests::{l7::*, upstream::*};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy with `limits` sending every request to `up`, under the name `name`.
async fn serving(up: &TestServer, name: &str, limits: Limits) -> anyhow::Result<L7> {
    let t = target(name, upstream(name, &[up.addr]));
    let opts = ProxyOptions {
        limits,
        ..Default::default()
    };
    L7::start_with(opts, snapshot(vec![vhost("", vec![prefix("/", &t)])])).await
}

#[tokio::test]
async fn l7_malformed_and_smuggling_requests_never_reach_upstream() -> anyhow::Result<()> {
    let up = TestServer::echo("victim").await?;
    let l7 = serving(
        &up,
        "victim",
        Limits {
            max_header_bytes: 8192,
            max_headers: 20,
            ..Default::default()
        },
    )
    .await?;

    let smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "CL then TE",
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            &[400],
        ),
        (
            "TE then CL",
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"),
            &[400],
        ),
        ("differing CLs", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde".into(), &[400]),
        ("TE gzip,chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".into(), &[400]),
        ("TE chunked,gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".into(), &[400]),
        ("TE identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n".into(), &[400]),
        ("TE twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), &[400]),
        ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), &[400]),
        ("space before colon", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nabcde".into(), &[400]),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n".into(), &[400]),
        ("bad CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nabcde".into(), &[400]),
        ("too many headers", format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..40).map(|i| format!("X-{i}: v\r\n")).collect::<String>()), &[431, 400]),
        ("huge header", format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)), &[431]),
        ("huge request line", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000)), &[414, 431]),
        ("garbage", "\x16\x03\x01\x00\x00 nonsense\r\n\r\n".into(), &[400]),
        ("lower-case method", "get / HTTP/1.1\r\nHost: x\r\n\r\n".into(), &[400]),
        ("digit in method", "G3T / HTTP/1.1\r\nHost: x\r\n\r\n".into(), &[400]),
        ("asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".into(), &[400]),
        ("authority-form GET", "GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n".into(), &[400]),
        ("authority-form POST", "POST x:80 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(), &[400]),
    ];
    for (name, req, want) in &cases {
        let out = raw(l7.http, req.as_bytes()).await?;
        let status = raw_status(&out);
        assert!(
            status.is_some_and(|s| want.contains(&s)),
            "{name}: got {out:?}"
        );
        assert_eq!(
            up.connections.load(SeqCst),
            0,
            "{name}: something reached the upstream"
        );
    }
    // A well-formed chunked request passes.
    let out = raw(l7.http, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(up.hits(), 1);
    Ok(())
}

/// The smuggling guard reads a chunked body's trailers as hyper does (they end only at an
/// empty CRLF line), so text hidden in them cannot pass for a head of its own: here a fake
/// head with a large `Content-Length` inside the trailers, which a looser reading would take
/// as a request and skip the next one as its body, is trailer bytes to both, and the real
/// next request, carrying both `Content-Length` and `Transfer-Encoding`, still gets 400.
#[tokio::test]
async fn l7_a_head_hidden_in_trailers_does_not_blind_the_smuggling_guard() -> anyhow::Result<()> {
    let up = TestServer::echo("trailers").await?;
    let l7 = serving(&up, "trailers", Limits::default()).await?;
    let first = "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        3\r\nabc\r\n0\r\nX-T: a\n\n\
        GET /fake HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n";
    let second = "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    // One after the other, so the first is answered before the second arrives (a conflict
    // seen while requests are pipelined refuses the connection's requests not yet answered).
    let mut s = tokio::net::TcpStream::connect(l7.http).await?;
    s.write_all(first.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(second.as_bytes()).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{out}");
    assert_eq!(up.hits(), 1, "the CL+TE request reached the upstream");
    Ok(())
}

/// The default header count limit (100, as hyper's own, which the proxy leaves in place)
/// holds: 101 fields get 431 from the proxy and nothing reaches the upstream; 100 fields are
/// forwarded (what the upstream answers is its own business: the proxy adds the forwarding
/// headers, which takes this test upstream past its own limit of 100).
#[tokio::test]
async fn l7_default_header_count_limit_is_100() -> anyhow::Result<()> {
    let up = TestServer::echo("counted").await?;
    let l7 = serving(&up, "counted", Limits::default()).await?;
    assert_eq!(Limits::default().max_headers, 100);
    let request = |fields: usize| {
        // Host and Connection count too.
        let extra: String = (0..fields - 2).map(|i| format!("X-{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
    };
    let out = raw(l7.http, request(101).as_bytes()).await?;
    assert_eq!(raw_status(&out), Some(431), "{out}");
    assert_eq!(up.connections.load(SeqCst), 0, "101 fields were forwarded");
    let out = raw(l7.http, request(100).as_bytes()).await?;
    assert!(raw_status(&out).is_some(), "{out}");
    assert_eq!(
        up.connections.load(SeqCst),
        1,
        "100 fields were refused: {out}"
    );
    let out = raw(l7.http, request(90).as_bytes()).await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    Ok(())
}

/// The CL+TE guard follows bodies by their framing: header-looking lines inside a body (a
/// pasted HTTP message, a HAR dump) are body, on the request itself and on the ones after it.
#[tokio::test]
async fn l7_bodies_that_look_like_headers_are_forwarded() -> anyhow::Result<()> {
    let up = TestServer::echo("bodies").await?;
    let l7 = serving(&up, "bodies", Limits::default()).await?;
    let body = "Content-Length: 12\nTransfer-Encoding: chunked\n\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
    let fixed = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let last = "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // That a conflicting head after such a body is still caught is the scanner's unit test
    // (`header_lines_inside_bodies_are_body`), split at every byte.
    for (name, first) in [("content-length body", &fixed), ("chunked body", &chunked)] {
        // Two body requests and a bodiless one on one connection: all three answered 200.
        let out = raw(l7.http, format!("{first}{first}{last}").as_bytes()).await?;
        assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{name}: {out}");
        assert!(!out.contains("HTTP/1.1 400"), "{name}: {out}");
    }
    assert_eq!(up.hits(), 6);
    Ok(())
}

#[tokio::test]
async fn l7_slowloris_header_timeout() -> anyhow::Result<()> {
    let up = TestServer::echo("slow").await?;
    let l7 = serving(
        &up,
        "slow",
        Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await?;

    let mut s = tokio::net::TcpStream::connect(l7.http).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await?;
    let started = std::time::Instant::now();
    // Trickle one header byte every 100 ms; the connection must be closed anyway.
    let mut closed_after = None;
    for _ in 0..30 {
        if s.write_all(b"X").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => {} // a 408 may be written before closing
            Err(_) => {}
        }
    }
    let closed_after =
        closed_after.ok_or_else(|| anyhow::anyhow!("slowloris connection still open after 3 s"))?;
    assert!(
        closed_after < Duration::from_millis(1500),
        "{closed_after:?}"
    );
    assert_eq!(up.connections.load(SeqCst), 0);

    // An idle keep-alive connection is closed by the same timer.
    let mut s = tokio::net::TcpStream::connect(l7.http).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "idle connection not closed");
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    Ok(())
}

/// `client-header-timeout`: a head that has started must end within it, though the keep-alive
/// limit (hyper's head timer) is far longer; an idle connection is not cut by it, and a head
/// in several pieces inside it is served; the controller ConfigMap's key replaces the flag for
/// new connections.
#[tokio::test]
async fn l7_client_header_timeout_bounds_a_started_head() -> anyhow::Result<()> {
    let up = TestServer::echo("heads").await?;
    let l7 = serving(
        &up,
        "heads",
        Limits {
            header_read_timeout: Duration::from_secs(30),
            client_header_timeout: Duration::from_millis(600),
            ..Default::default()
        },
    )
    .await?;

    // A trickled head is cut at the header timeout, not at the 30 s keep-alive.
    let s = tokio::net::TcpStream::connect(l7.http).await?;
    let (mut r, mut w) = s.into_split();
    w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await?;
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let closed = closed_within(&mut r, Duration::from_millis(2000)).await;
    trickle.abort();
    let closed = closed.ok_or_else(|| anyhow::anyhow!("a trickled head was not cut"))?;
    assert!(closed >= Duration::from_millis(500), "{closed:?}");

    // Idle, with no byte sent: the header timeout does not apply.
    let mut s = tokio::net::TcpStream::connect(l7.http).await?;
    assert_eq!(
        closed_within(&mut s, Duration::from_millis(1200)).await,
        None,
        "an idle connection is the keep-alive limit's"
    );
    // A head in three pieces, 200 ms apart, then a second request on the same connection.
    for piece in ["GET /one HTTP/1.1\r\n", "Host: x\r\n", "\r\n"] {
        s.write_all(piece.as_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await??;
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");

    // The ConfigMap key, longer than the flag: a new connection's head may take 600 ms+.
    let mut snap = snapshot(vec![vhost(
        "",
        vec![prefix("/", &target("heads", upstream("heads", &[up.addr])))],
    )]);
    snap.generation = 2;
    snap.global.client_header_timeout = Some(Duration::from_secs(20));
    l7.apply(snap);
    let mut s = tokio::net::TcpStream::connect(l7.http).await?;
    s.write_all(b"GET / HTTP/1.1\r\n").await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.write_all(b"Host: x\r\nConnection: close\r\n\r\n").await?;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await??;
    assert!(
        String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    Ok(())
}

/// A proxy sending everything to the gRPC (h2c) upstream at `addr`, with a 300 ms
/// `client-body-timeout`.
async fn grpc_with_body_timeout(addr: std::net::SocketAddr) -> anyhow::Result<L7> {
    let t = target(
        "grpc",
        upstream_with("grpc", &[addr], ingress::snapshot::BackendProtocol::Grpc),
    );
    let opts = ProxyOptions {
        limits: Limits {
            client_body_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    };
    L7::start_with(opts, snapshot(vec![vhost("", vec![prefix("/", &t)])])).await
}

/// A stalled upload to an HTTP/2 upstream (gRPC) is the client's fault there too: 408, and
/// no mark against the endpoint. (The HTTP/2 client resets the stream, and the reset no
/// longer says why; it was a 502 that counted towards ejecting a healthy endpoint.)
#[tokio::test]
async fn l7_stalled_upload_to_an_http2_upstream_is_408_not_an_upstream_failure(
) -> anyhow::Result<()> {
    let grpc = TestServer::grpc("grpc").await?;
    let l7 = grpc_with_body_timeout(grpc.addr).await?;
    // More than the five failures in a row that would eject it.
    for i in 0..6 {
        let (status, took) = stalled_upload(l7.http).await?;
        assert_eq!(status, Some(408), "upload {i}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    let m = l7.proxy.metrics();
    use ingress::proxy::metrics::UpstreamErrorKind as K;
    for kind in [K::Protocol, K::Timeout] {
        assert_eq!(m.upstream_errors(kind), 0, "{kind:?}");
    }
    Ok(())
}

/// A gRPC stream whose client is quiet on its side while the server streams (a subscription)
/// outlives `client-body-timeout`: the timer waits for silence both ways, as nginx's does.
#[tokio::test]
async fn l7_a_quiet_client_of_a_streaming_answer_is_not_cut_off() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // An h2c upstream that answers at once and sends a message every 100 ms, twelve times,
    // without reading the request body.
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut conn = h2::server::handshake(tcp).await?;
        let Some(accepted) = conn.accept().await else {
            anyhow::bail!("no stream");
        };
        let (_req, mut respond) = accepted?;
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        let resp = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())?;
        let mut send = respond.send_response(resp, false)?;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            send.send_data(bytes::Bytes::from_static(b"\0\0\0\0\x01m"), false)?;
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        send.send_trailers(trailers)?;
        anyhow::Ok(())
    });
    let l7 = grpc_with_body_timeout(addr).await?;
    let tcp = tokio::net::TcpStream::connect(l7.http).await?;
    let (client, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(conn);
    let mut client = tokio::time::timeout(WAIT, client.ready()).await??;
    let req = http::Request::builder()
        .method("POST")
        .uri("http://watch.test/pkg.Watch/Follow")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (resp, mut stream) = client.send_request(req, false)?;
    // One message, and the client's side stays open and quiet from then on.
    stream.send_data(bytes::Bytes::from_static(b"\0\0\0\0\x01q"), false)?;
    let resp = tokio::time::timeout(WAIT, resp).await??;
    assert_eq!(resp.status(), 200);
    let started = std::time::Instant::now();
    let mut body = resp.into_body();
    let mut messages = 0;
    while let Some(chunk) = tokio::time::timeout(WAIT, body.data()).await? {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        messages += chunk.len() / 6;
    }
    let trailers = tokio::time::timeout(WAIT, body.trailers())
        .await??
        .unwrap_or_default();
    assert_eq!(messages, 12);
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert!(
        started.elapsed() > Duration::from_millis(900),
        "the stream outlived the timeout several times over: {:?}",
        started.elapsed()
    );
    tokio::time::timeout(WAIT, server).await???;
    drop(stream);
    Ok(())
}

/// `client-body-timeout`: an upload that stalls gets 408 after it, though the route's
/// `proxy-send-timeout` (60 s here) is longer; one that keeps moving is forwarded whole.
#[tokio::test]
async fn l7_client_body_timeout_cuts_a_stalled_upload() -> anyhow::Result<()> {
    let up = TestServer::echo("uploads").await?;
    let l7 = serving(
        &up,
        "uploads",
        Limits {
            client_body_timeout: Duration::from_millis(400),
            ..Default::default()
        },
    )
    .await?;
    let (status, took) = stalled_upload(l7.http).await?;
    assert_eq!(status, Some(408));
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Gaps shorter than the timeout: the whole body arrives.
    let mut s = tokio::net::TcpStream::connect(l7.http).await?;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nConnection: close\r\n\r\n")
        .await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"0123456789").await?;
    }
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await??;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(up.last().map(|r| r.body.len()), Some(30));
    Ok(())
}

#[tokio::test]
async fn l7_h2_max_concurrent_streams_advertised() -> anyhow::Result<()> {
    let up = TestServer::echo("h2").await?;
    let l7 = serving(
        &up,
        "h2",
        Limits {
            h2_max_concurrent_streams: 7,
            ..Default::default()
        },
    )
    .await?;
    let tcp = tokio::net::TcpStream::connect(l7.http).await?;
    let (client, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(conn);
    let mut client = tokio::time::timeout(WAIT, client.ready()).await??;
    let req = http::Request::builder().uri("http://h/").body(())?;
    let (resp, _) = client.send_request(req, true)?;
    let resp = tokio::time::timeout(WAIT, resp).await??;
    assert_eq!(resp.status(), 200);
    assert_eq!(client.current_max_send_streams(), 7);
    Ok(())
}

/// Reads until the server closes the connection; returns how long that took, or None if it
/// was still open after `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut sink)).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => None,
    }
}

/// Connections that never start a request (silent, or stalled inside the HTTP/2 preface,
/// plain or after TLS) are closed by the header-read timeout too, before hyper's own timer
/// would start.
#[tokio::test]
async fn l7_silent_and_stalled_preface_connections_are_closed() -> anyhow::Result<()> {
    let up = TestServer::echo("quiet").await?;
    let l7 = serving(
        &up,
        "quiet",
        Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await?;
    let limit = Duration::from_secs(3);

    let mut silent = tokio::net::TcpStream::connect(l7.http).await?;
    let took = closed_within(&mut silent, limit).await;
    assert!(
        took.is_some_and(|d| d >= Duration::from_millis(400)),
        "silent: {took:?}"
    );

    let mut stalled = tokio::net::TcpStream::connect(l7.http).await?;
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await?;
    let took = closed_within(&mut stalled, limit).await;
    assert!(took.is_some(), "stalled in the h2 preface: still open");

    let insecure = tests::certs::insecure_client_config(&[b"h2", b"http/1.1"])?;
    let mut tls = tls_connect(l7.https, "quiet.example", insecure).await?;
    let took = closed_within(&mut tls, limit).await;
    assert!(took.is_some(), "silent after the TLS handshake: still open");

    // A client that does send a request in time is served as before.
    let mut ok = tokio::net::TcpStream::connect(l7.http).await?;
    ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut all = Vec::new();
    ok.read_to_end(&mut all).await?;
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    assert_eq!(up.connections.load(SeqCst), 1);
    Ok(())
}

/// An HTTP/2 connection with no request in progress is closed after the idle limit (GOAWAY),
/// while a request that takes longer than that limit is never cut by it.
#[tokio::test]
async fn l7_idle_h2_connections_are_closed_but_long_requests_are_not() -> anyhow::Result<()> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    let up = TestServer::echo_slow("slowish", Duration::from_millis(1200)).await?;
    let l7 = serving(
        &up,
        "slowish",
        Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await?;

    let (mut sender, conn) = h2c(l7.http).await?;
    let req = http::Request::builder()
        .uri("http://h2idle.test/slow")
        .body(Full::new(Bytes::new()))?;
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await??;
    assert_eq!(
        resp.status(),
        200,
        "a request longer than the idle limit completes"
    );
    resp.into_body().collect().await?;
    assert!(started.elapsed() >= Duration::from_millis(1200));

    // Now idle: the server closes the connection, which ends the client's connection task.
    let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection still open after 3 s");
    Ok(())
}

/// An HTTP/2 client connection is closed gracefully (GOAWAY) after its request limit (nginx's
/// `keepalive_requests`), so resetting streams slowly enough to pass the codec's reset limit
/// cannot drive requests on one connection forever.
#[tokio::test]
async fn l7_connections_are_retired_after_their_request_limit() -> anyhow::Result<()> {
    use http_body_util::Full;
    let up = TestServer::echo("limit").await?;
    let l7 = serving(
        &up,
        "limit",
        Limits {
            max_requests_per_connection: 5,
            ..Default::default()
        },
    )
    .await?;
    // HTTP/2 (h2c prior knowledge).
    let (mut sender, conn) = h2c(l7.http).await?;
    for i in 0..5 {
        let req = http::Request::builder()
            .uri(format!("http://x/{i}"))
            .body(Full::new(bytes::Bytes::new()))?;
        let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
        assert_eq!(resp.status(), 200, "request {i}");
    }
    let ended = tokio::time::timeout(WAIT, conn).await;
    assert!(
        ended.is_ok(),
        "HTTP/2 connection still open after its limit"
    );
    // HTTP/1.1 keep-alive is not counted (closing it would race the client's next request).
    let many: String = (0..8)
        .map(|i| format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .chain(std::iter::once(
            "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
        ))
        .collect();
    let out = raw(l7.http, many.as_bytes()).await?;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 9, "{out}");
    Ok(())
}

/// A client that stops reading its response is cut after the send timeout (nginx's
/// `send_timeout`) instead of holding its connection, the upstream's and the response in
/// flight for as long as it likes: it gets a truncated body, not the whole one later.
#[tokio::test]
async fn l7_a_client_that_stops_reading_is_cut_after_the_send_timeout() -> anyhow::Result<()> {
    let up = TestServer::echo("slowread").await?;
    let l7 = serving(
        &up,
        "slowread",
        Limits {
            client_send_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await?;
    const BODY: usize = 32 << 20;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.set_recv_buffer_size(4096)?;
    sock.connect(&l7.http.into())?;
    sock.set_nonblocking(true)?;
    let mut tcp = tokio::net::TcpStream::from_std(sock.into())?;
    tcp.write_all(format!("GET /bytes/{BODY} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    // Not reading for well past the timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut got)).await;
    assert!(
        got.len() < BODY,
        "the whole {} bytes arrived: the stalled connection was kept",
        got.len()
    );
    assert!(String::from_utf8_lossy(&got[..got.len().min(64)]).starts_with("HTTP/1.1 200"));
    Ok(())
}

/// An HTTP/2 client that grants a response no flow-control window stalls its stream while
/// the connection stays writable (the socket send deadline never fires): the stream is cut
/// after the send timeout too, and the connection's other streams carry on.
#[tokio::test]
async fn l7_an_h2_stream_stalled_by_flow_control_is_cut_after_the_send_timeout(
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let up = TestServer::echo("h2stall").await?;
    let l7 = serving(
        &up,
        "h2stall",
        Limits {
            client_send_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await?;
    const BODY: usize = 32 << 20;
    let mut client = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    client.initial_stream_window_size(65_535);
    let (mut sender, conn) = h2c_with(l7.http, client).await?;
    let get = |path: String| {
        hyper::Request::get(format!("http://x{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
    };
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(get(format!("/bytes/{BODY}"))?),
    )
    .await??;
    assert_eq!(resp.status(), 200);
    // Not reading (so granting no window) for well past the timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The upstream connection was released meanwhile (closed: it stopped mid-body), while
    // the client still holds its stream.
    let port = [up.addr.port()];
    let released = tests::passthrough::eventually(Duration::from_secs(5), || {
        tests::passthrough::open_sockets_on(&port) == 0
    })
    .await;
    assert!(
        released,
        "{} sockets still open to the upstream",
        tests::passthrough::open_sockets_on(&port)
    );
    let mut body = resp.into_body();
    let mut got = 0usize;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), body.frame()).await {
            Ok(Some(Ok(frame))) => got += frame.data_ref().map_or(0, |d| d.len()),
            Ok(Some(Err(e))) => break format!("error: {e}"),
            Ok(None) => break "end".to_string(),
            Err(_) => break "timeout".to_string(),
        }
    };
    assert!(
        got < BODY && ended.starts_with("error"),
        "the stalled stream was kept: {got} bytes, then {ended}"
    );
    // The connection itself is fine: the next stream is answered.
    sender.ready().await?;
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(get("/again".into())?),
    )
    .await??;
    assert_eq!(again.status(), 200);
    let _ = again.into_body().collect().await?;
    // A client that reads slowly, but keeps reading, is never cut: 1 MiB through a 64 KiB
    // window at about 340 KiB/s, 3 s in all against the 1 s timeout (the upstream's chunks
    // are far larger than what the client takes in a second).
    const SLOW: usize = 1 << 20;
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(get(format!("/bytes/{SLOW}"))?),
    )
    .await??;
    let mut body = resp.into_body();
    let (mut got, mut frames) = (0usize, 0usize);
    let started = tokio::time::Instant::now();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame()).await? {
        let len = frame?.data_ref().map_or(0, |d| d.len());
        got += len;
        frames += 1;
        // About 3 s per MiB, whatever the frame sizes.
        tokio::time::sleep(Duration::from_nanos(2_900 * len as u64)).await;
    }
    assert_eq!(got, SLOW, "a slow reader was cut after {frames} frames");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "not slow enough to test anything: {frames} frames in {:?}",
        started.elapsed()
    );
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    Ok(())
}

/// `upstream_max_idle_per_endpoint` (`--upstream-keepalive-connections`) bounds the idle pool:
/// after a burst of 5 concurrent requests 2 upstream connections stay open for reuse, and the
/// next burst of 5 opens only the 3 it lacks.
#[tokio::test]
async fn l7_idle_upstream_connections_are_kept_up_to_the_keepalive_limit() -> anyhow::Result<()> {
    let up = TestServer::echo_slow("pool", Duration::from_millis(300)).await?;
    let l7 = serving(
        &up,
        "pool",
        Limits {
            upstream_max_idle_per_endpoint: 2,
            ..Default::default()
        },
    )
    .await?;
    let burst = |round: usize| {
        let addr = l7.http;
        async move {
            let tasks: Vec<_> = (0..5)
                .map(|i| {
                    tokio::spawn(async move { get(addr, "x", &format!("/{round}/{i}")).await })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await??.status, 200);
            }
            anyhow::Ok(())
        }
    };
    burst(0).await?;
    assert_eq!(
        up.connections.load(SeqCst),
        5,
        "one connection per concurrent request"
    );
    burst(1).await?;
    assert_eq!(
        up.connections.load(SeqCst),
        8,
        "2 pooled connections reused, 3 new ones"
    );
    Ok(())
}

/// `upstream-keepalive-timeout`: idle upstream connections are closed once idle that long,
/// even when no request comes to take them (as nginx's keepalive timer).
#[tokio::test]
async fn l7_idle_upstream_connections_close_after_the_keepalive_timeout() -> anyhow::Result<()> {
    let up = TestServer::echo_slow("idle", Duration::from_millis(200)).await?;
    let l7 = serving(
        &up,
        "idle",
        Limits {
            upstream_idle_timeout: Duration::from_millis(400),
            ..Default::default()
        },
    )
    .await?;
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let addr = l7.http;
            tokio::spawn(async move { get(addr, "x", &format!("/{i}")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await??.status, 200);
    }
    assert_eq!(up.connections.load(SeqCst), 4);
    // Kept for reuse first...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(up.open.load(SeqCst), 4, "pooled");
    let r = get(l7.http, "x", "/again").await?;
    assert_eq!(r.status, 200);
    assert_eq!(up.connections.load(SeqCst), 4, "reused");
    // ...then closed once idle past the timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while up.open.load(SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} idle connections still open",
            up.open.load(SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the next request dials anew.
    let r = get(l7.http, "x", "/later").await?;
    assert_eq!(r.status, 200);
    assert_eq!(up.connections.load(SeqCst), 5);
    Ok(())
}

/// `limit-rate` / `limit-rate-after`: a 160 KiB response at 64 KiB/s with 32 KiB free takes
/// about one second after nginx's free first second (over HTTP/1.1 and HTTP/2), arrives
/// whole, and a route without the limit is not slowed.
#[tokio::test]
async fn l7_limit_rate_paces_responses() -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    use ingress::snapshot::SendRate;
    let up = TestServer::echo("big").await?;
    let u = upstream("big", &[up.addr]);
    let mut policy = test_policy();
    policy.limit_rate = Some(SendRate {
        bytes_per_sec: 64 * 1024,
        after: 32 * 1024,
    });
    let slow = target_with("slow", u.clone(), policy);
    let fast = target("fast", u);
    let l7 = L7::start(snapshot(vec![vhost(
        "rate.test",
        vec![prefix("/slow", &slow), prefix("/", &fast)],
    )]))
    .await?;
    const SIZE: usize = 160 * 1024;

    let started = std::time::Instant::now();
    let r = get(l7.http, "rate.test", &format!("/slow/bytes/{SIZE}")).await?;
    let took = started.elapsed();
    assert_eq!((r.status.as_u16(), r.body.len()), (200, SIZE));
    assert!(
        (Duration::from_millis(850)..Duration::from_secs(3)).contains(&took),
        "HTTP/1.1 took {took:?}"
    );

    let (mut h2, conn) = h2c(l7.http).await?;
    let started = std::time::Instant::now();
    let req = http::Request::builder()
        .uri(format!("http://rate.test/slow/bytes/{SIZE}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), h2.send_request(req)).await??;
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await??
        .to_bytes();
    let took = started.elapsed();
    assert_eq!(body.len(), SIZE);
    assert!(
        (Duration::from_millis(850)..Duration::from_secs(3)).contains(&took),
        "HTTP/2 took {took:?}"
    );
    drop(h2);
    conn.abort();

    let started = std::time::Instant::now();
    let r = get(l7.http, "rate.test", &format!("/bytes/{SIZE}")).await?;
    assert_eq!(r.body.len(), SIZE);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "unlimited route was slowed"
    );
    Ok(())
}

/// The controller ConfigMap's connection-reuse keys replace the flags' limits without a
/// restart: `upstream-keepalive-requests` retires pooled upstream connections (one pooled
/// before the change too), `http2-max-concurrent-streams` and `keep-alive-requests` hold for
/// client connections accepted after it; a snapshot without the keys brings the flags back.
#[tokio::test]
async fn l7_connection_reuse_keys_apply_without_a_restart() -> anyhow::Result<()> {
    use ingress::snapshot::KeepAlive;
    let up = TestServer::echo("reuse").await?;
    let t = target("reuse", upstream("reuse", &[up.addr]));
    let routes = || vec![vhost("", vec![prefix("/", &t)])];
    let opts = ProxyOptions {
        limits: Limits {
            h2_max_concurrent_streams: 7,
            max_requests_per_connection: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let l7 = L7::start_with(opts, snapshot(routes())).await?;
    let sequential = |round: &'static str| {
        let addr = l7.http;
        async move {
            for i in 0..6 {
                let r = get(addr, "x", &format!("/{round}/{i}")).await?;
                assert_eq!(r.status, 200, "{round} {i}");
            }
            anyhow::Ok(())
        }
    };
    // A fresh h2c connection: the streams it may open, and whether the proxy closes it
    // after two requests.
    let h2_client = |addr| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (client, conn) = h2::client::handshake(tcp).await?;
        let conn = tokio::spawn(conn);
        let mut client = tokio::time::timeout(WAIT, client.ready()).await??;
        let mut streams = 0;
        for i in 0..2 {
            let req = http::Request::builder()
                .uri(format!("http://x/h2/{i}"))
                .body(())?;
            let (resp, _) = client.send_request(req, true)?;
            assert_eq!(tokio::time::timeout(WAIT, resp).await??.status(), 200);
            if i == 0 {
                // The server's SETTINGS have arrived with its first answer.
                streams = client.current_max_send_streams();
                client = tokio::time::timeout(WAIT, client.ready()).await??;
            }
        }
        // With the client still held, only the proxy can end the connection.
        let retired = tokio::time::timeout(Duration::from_secs(2), conn)
            .await
            .is_ok();
        drop(client);
        anyhow::Ok((streams, retired))
    };

    sequential("flags").await?;
    assert_eq!(
        up.connections.load(SeqCst),
        1,
        "one pooled connection serves all"
    );
    let (streams, retired) = h2_client(l7.http).await?;
    assert_eq!((streams, retired), (7, false), "the flags' limits");

    let mut snap = snapshot(routes());
    snap.global.keep_alive = KeepAlive {
        requests: Some(2),
        h2_max_concurrent_streams: Some(3),
        upstream_requests: Some(2),
        ..Default::default()
    };
    l7.apply(snap);
    sequential("configmap").await?;
    assert_eq!(
        up.connections.load(SeqCst),
        4,
        "the pooled connection is past 2 requests; then one connection per 2 requests"
    );
    let (streams, retired) = h2_client(l7.http).await?;
    assert_eq!((streams, retired), (3, true), "the ConfigMap's limits");

    l7.apply(snapshot(routes()));
    sequential("flags-again").await?;
    // The two HTTP/2 requests above took one more upstream connection and retired it.
    assert_eq!(up.connections.load(SeqCst), 6, "no request limit again");
    let (streams, retired) = h2_client(l7.http).await?;
    assert_eq!((streams, retired), (7, false), "the flags' limits again");
    Ok(())
}

/// The controller ConfigMap's `keep-alive` replaces the flag's idle limit for connections
/// accepted after the change (the one a load balancer in front needs to exceed its own), and
/// `keep-alive: 0` closes an HTTP/1.1 connection after its response.
#[tokio::test]
async fn l7_keep_alive_key_sets_the_idle_limit() -> anyhow::Result<()> {
    use ingress::snapshot::KeepAlive;
    let up = TestServer::echo("ka").await?;
    let t = target("ka", upstream("ka", &[up.addr]));
    let routes = || vec![vhost("", vec![prefix("/", &t)])];
    let opts = ProxyOptions {
        limits: Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    };
    let l7 = L7::start_with(opts, snapshot(routes())).await?;
    // One request, then how long the idle connection stays open (None: over `limit`).
    let idle_close = |limit: Duration| async move {
        let mut s = tokio::net::TcpStream::connect(l7.http).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        assert_eq!(&head, b"HTTP/1.1 200");
        anyhow::Ok(closed_within(&mut s, limit).await)
    };
    let took = idle_close(Duration::from_secs(3)).await?;
    assert!(
        took.is_some_and(|d| d < Duration::from_millis(1500)),
        "flag: {took:?}"
    );

    let mut snap = snapshot(routes());
    snap.global.keep_alive = KeepAlive {
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    l7.apply(snap);
    let took = idle_close(Duration::from_secs(4)).await?;
    assert!(
        took.is_some_and(|d| d >= Duration::from_millis(1500)),
        "keep-alive 2 s: {took:?}"
    );

    let mut snap = snapshot(routes());
    snap.global.keep_alive = KeepAlive {
        timeout: Some(Duration::ZERO),
        ..Default::default()
    };
    l7.apply(snap);
    let out = raw(
        l7.http,
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await?;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    Ok(())
}

/// The controller ConfigMap's `large-client-header-buffers` bounds request heads for
/// connections accepted after the change, over HTTP/1.1 (431) and HTTP/2 (the stream is
/// refused), and the default comes back with the key gone.
#[tokio::test]
async fn l7_large_client_header_buffers_key_bounds_request_heads() -> anyhow::Result<()> {
    use ingress::snapshot::KeepAlive;
    let up = TestServer::echo("heads").await?;
    let t = target("heads", upstream("heads", &[up.addr]));
    let routes = || vec![vhost("", vec![prefix("/", &t)])];
    let l7 = L7::start(snapshot(routes())).await?;
    let with_cookie = |bytes: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: s={}\r\n\r\n",
            "c".repeat(bytes)
        )
    };
    let h2_status = |bytes: usize| async move {
        let tcp = tokio::net::TcpStream::connect(l7.http).await?;
        let (client, conn) = h2::client::handshake(tcp).await?;
        tokio::spawn(conn);
        let mut client = tokio::time::timeout(WAIT, client.ready()).await??;
        let req = http::Request::builder()
            .uri("http://x/h2")
            .header("cookie", format!("s={}", "c".repeat(bytes)))
            .body(())?;
        let (resp, _) = client.send_request(req, true)?;
        anyhow::Ok(
            tokio::time::timeout(WAIT, resp)
                .await?
                .map(|r| r.status().as_u16()),
        )
    };
    // The flags' 64 KiB.
    let out = raw(l7.http, with_cookie(40_000).as_bytes()).await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");

    let mut snap = snapshot(routes());
    snap.global.keep_alive = KeepAlive {
        max_header_bytes: Some(16 << 10),
        ..Default::default()
    };
    l7.apply(snap);
    let out = raw(l7.http, with_cookie(20_000).as_bytes()).await?;
    assert_eq!(raw_status(&out), Some(431), "{out}");
    let out = raw(l7.http, with_cookie(10_000).as_bytes()).await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert!(
        !matches!(h2_status(20_000).await?, Ok(200)),
        "an HTTP/2 head over the limit is not forwarded"
    );
    assert_eq!(h2_status(10_000).await?.ok(), Some(200));
    let forwarded = up.hits();

    l7.apply(snapshot(routes()));
    let out = raw(l7.http, with_cookie(40_000).as_bytes()).await?;
    assert_eq!(raw_status(&out), Some(200), "the flags' limit again: {out}");
    assert_eq!(up.hits(), forwarded + 1);
    Ok(())
}

/// One keep-alive GET on `s`; the status of its answer (read up to the end of its body).
async fn keep_alive_get(s: &mut tokio::net::TcpStream) -> anyhow::Result<Option<u16>> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "closed before an answer");
        got.extend_from_slice(&buf[..n]);
    }
    Ok(raw_status(&String::from_utf8_lossy(&got)))
}

/// `--max-connections`: with the cap's worth of connections open, a new one is not served
/// (it waits in the listen backlog, unaccepted) until one of them closes; then it is.
#[tokio::test]
async fn l7_connections_over_the_cap_wait_for_one_to_close() -> anyhow::Result<()> {
    let up = TestServer::echo("capped").await?;
    let l7 = serving(
        &up,
        "capped",
        Limits {
            max_connections: 2,
            ..Default::default()
        },
    )
    .await?;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(l7.http).await?;
        assert_eq!(keep_alive_get(&mut s).await?, Some(200));
        open.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(l7.http).await?;
    let answer = tokio::spawn(async move { keep_alive_get(&mut third).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !answer.is_finished(),
        "a third connection was served over a cap of 2"
    );
    let metrics = l7.proxy.metrics();
    assert!(metrics.accept_pauses() >= 1);
    drop(open.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .map_err(|_| {
            anyhow::anyhow!("the waiting connection was not served after one closed")
        })???;
    assert_eq!(status, Some(200));
    Ok(())
}

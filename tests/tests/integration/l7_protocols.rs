//! Protocols: HTTP/2 from clients (TLS+ALPN and h2c), gRPC over h2c upstreams with trailers
//! end to end, WebSocket upgrades, and HTTPS upstreams.
use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingress::snapshot::BackendProtocol;
use tests::{certs::*, l7::*, upstream::*};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn l7_h2_clients_over_tls_and_h2c() -> anyhow::Result<()> {
    let up = TestServer::echo("h2").await?;
    let l7 = L7::start(snapshot(vec![vhost(
        "h2.test",
        vec![prefix("/", &target("h2", upstream("h2", &[up.addr])))],
    )]))
    .await?;

    // TLS with ALPN h2.
    let tls = tls_connect(l7.https, "h2.test", insecure_client_config(&[b"h2"])?).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("https://h2.test/p/{i}?q=1"))
            .body(Full::new(Bytes::from_static(b"payload")))?;
        let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await?.to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body)?;
        // Routed by :authority, forwarded as HTTP/1.1 with Host set from it.
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(seen["uri"], format!("/p/{i}?q=1"));
        assert_eq!(seen["headers"]["host"], "h2.test");
        assert_eq!(seen["body_len"], 7);
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    }
    // h2c with prior knowledge on the plain port.
    let (mut sender, _conn) = h2c(l7.http).await?;
    let req = http::Request::builder()
        .uri("http://h2.test/c")
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.hits(), 4);
    // The upstream connection was reused (keep-alive pool).
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn l7_grpc_trailers_end_to_end() -> anyhow::Result<()> {
    let grpc = TestServer::grpc("grpc").await?;
    let up = upstream_with("grpc", &[grpc.addr], BackendProtocol::Grpc);
    let l7 = L7::start(snapshot(vec![vhost(
        "grpc.test",
        vec![prefix("/", &target("grpc", up))],
    )]))
    .await?;
    let tls = tls_connect(l7.https, "grpc.test", insecure_client_config(&[b"h2"])?).await?;
    let (client, conn) = h2::client::handshake(tls).await?;
    tokio::spawn(conn);
    for _ in 0..2 {
        let mut client = tokio::time::timeout(WAIT, client.clone().ready()).await??;
        let req = http::Request::builder()
            .method("POST")
            .uri("https://grpc.test/pkg.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (resp, mut stream) = client.send_request(req, false)?;
        stream.send_data(Bytes::from_static(b"\0\0\0\0\x05hello"), true)?;
        let resp = tokio::time::timeout(WAIT, resp).await??;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let mut body = resp.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = tokio::time::timeout(WAIT, body.data()).await? {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        assert_eq!(data, b"\0\0\0\0\x05hello");
        let trailers = tokio::time::timeout(WAIT, body.trailers())
            .await??
            .unwrap_or_default();
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(
            trailers.get("grpc-message").map(|v| v.as_bytes()),
            Some(&b"ok"[..])
        );
        assert_eq!(
            trailers.get("x-te").map(|v| v.as_bytes()),
            Some(&b"trailers"[..]),
            "TE: trailers forwarded"
        );
    }
    let seen = grpc
        .last()
        .ok_or_else(|| anyhow::anyhow!("nothing reached the gRPC upstream"))?;
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.uri.path(), "/pkg.Echo/Say");
    assert_eq!(seen.uri.authority().map(|a| a.as_str()), Some("grpc.test"));
    // One multiplexed upstream connection for both calls.
    assert_eq!(
        grpc.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    Ok(())
}

/// A WebSocket echoes through the proxy, and is logged when it closes, as nginx logs one:
/// status 101, the bytes the upstream sent through the tunnel, the whole time it was open.
#[tokio::test]
async fn l7_websocket_echo() -> anyhow::Result<()> {
    // Current-thread runtime: the tunnel task runs on this thread and sees this subscriber.
    let (buf, _guard) = crate::l7_lifecycle::capture_access_log();
    let (ws_addr, ws_task) = websocket_echo().await?;
    let l7 = L7::start(with_access_log(snapshot(vec![vhost(
        "ws.test",
        vec![prefix("/", &target("ws", upstream("ws", &[ws_addr])))],
    )])))
    .await?;
    let mut ws = ws_client(TcpStream::connect(l7.http).await?, "ws://ws.test/chat").await?;
    for i in 0..5 {
        echo(&mut ws, Message::text(format!("hello {i}"))).await?;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await?;
    assert!(
        crate::l7_lifecycle::logged(&buf).is_empty(),
        "logged while open"
    );
    ws.close(None).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let line = loop {
        if let Some(v) = crate::l7_lifecycle::logged(&buf).pop() {
            break v;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no line after close"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        (line["status"].as_u64(), line["path"].as_str()),
        (Some(101), Some("/chat"))
    );
    // Six echoed messages of 7 and 4 bytes, each with a 2-byte frame header, and the close.
    let bytes = line["bytes"].as_u64().unwrap_or(0);
    assert!((5 * 9 + 6..200).contains(&bytes), "{line}");
    assert!(
        line["duration_ms"].as_f64().unwrap_or(0.0) >= 300.0,
        "{line}"
    );
    ws_task.abort();
    Ok(())
}

/// Under `limit-connections` an open WebSocket holds its client's place until it closes, as
/// nginx's `limit_conn` counts a request until its upgraded connection ends.
#[tokio::test]
async fn l7_websocket_counts_under_limit_connections_until_it_closes() -> anyhow::Result<()> {
    let (ws_addr, ws_task) = websocket_echo().await?;
    let mut one = test_policy();
    one.limit_connections = Some(1);
    let l7 = L7::start(snapshot(vec![vhost(
        "ws.test",
        vec![prefix(
            "/",
            &target_with("ws", upstream("ws", &[ws_addr]), one),
        )],
    )]))
    .await?;
    let mut ws = ws_client(TcpStream::connect(l7.http).await?, "ws://ws.test/chat").await?;
    echo(&mut ws, Message::text("hello")).await?;
    assert_eq!(get(l7.http, "ws.test", "/").await?.status, 503);
    ws.close(None).await?;
    drop(ws);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = get(l7.http, "ws.test", "/").await?.status;
        if status != 503 {
            // The echo upstream is not HTTP: anything but the limit's 503 shows the place
            // came back.
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "place not given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    ws_task.abort();
    Ok(())
}

/// An upgraded tunnel with no traffic either way for the route's read timeout is closed, as
/// nginx closes a WebSocket its upstream leaves silent; one that keeps talking stays open.
#[tokio::test]
async fn l7_idle_websocket_is_closed_after_the_read_timeout() -> anyhow::Result<()> {
    let (ws_addr, ws_task) = websocket_echo().await?;
    let t = target_with("ws", upstream("ws", &[ws_addr]), {
        let mut p = test_policy();
        p.timeouts.read = std::time::Duration::from_millis(800);
        p
    });
    let l7 = L7::start(snapshot(vec![vhost("ws.test", vec![prefix("/", &t)])])).await?;
    let mut ws = ws_client(TcpStream::connect(l7.http).await?, "ws://ws.test/chat").await?;
    // Talking every 300 ms for 2 s: longer than the timeout, never idle for it.
    for i in 0..7 {
        echo(&mut ws, Message::text(format!("still here {i}"))).await?;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Then silence: the proxy closes the tunnel.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
    assert!(
        matches!(
            ended,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_))))
        ),
        "idle tunnel still open: {ended:?}"
    );
    ws_task.abort();
    Ok(())
}

/// An HTTPS upstream with a certificate the proxy cannot verify (it does not try to).
async fn https_upstream(ca: &TestCa) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let key = ca.issue(&["pod.internal"])?;
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tests::certs::server_config(key, &[b"h2", b"http/1.1"])?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .unwrap_or_default();
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let alpn = alpn.clone();
                        async move {
                            let body = format!(
                                "tls {:?} alpn={alpn} path={}",
                                req.version(),
                                req.uri().path()
                            );
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn l7_https_backend_protocol() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let (addr, task) = https_upstream(&ca).await?;
    let up = upstream_with("secure", &[addr], BackendProtocol::Https);
    // GRPCS: the same TLS upstream, reached with h2 only.
    let grpcs = upstream_with("grpcs", &[addr], BackendProtocol::Grpcs);
    let l7 = L7::start(snapshot(vec![
        vhost("s.test", vec![prefix("/", &target("secure", up))]),
        vhost("g.test", vec![prefix("/", &target("grpcs", grpcs))]),
    ]))
    .await?;
    for _ in 0..2 {
        let r = get(l7.http, "s.test", "/over-tls").await?;
        assert_eq!(r.status, 200, "{}", r.text());
        // ALPN offered h2 first; the upstream picked it.
        assert_eq!(r.text(), "tls HTTP/2.0 alpn=h2 path=/over-tls");
        let r = get(l7.http, "g.test", "/pkg.Svc/Method").await?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "tls HTTP/2.0 alpn=h2 path=/pkg.Svc/Method");
    }
    task.abort();
    Ok(())
}

/// An HTTP/2 client's cookies (one header line each, RFC 9113 §8.2.3) reach an HTTP/1.1
/// upstream as one `Cookie` line, `; `-separated.
#[tokio::test]
async fn l7_h2_cookie_lines_are_joined_for_http1_upstreams() -> anyhow::Result<()> {
    let up = TestServer::echo("c").await?;
    let l7 = L7::start(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/", &target("c", upstream("c", &[up.addr])))],
    )]))
    .await?;
    let (mut sender, _conn) = h2c(l7.http).await?;
    let req = http::Request::builder()
        .uri("http://c.test/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
    assert_eq!(resp.status(), 200);
    let seen = up
        .last()
        .ok_or_else(|| anyhow::anyhow!("upstream saw nothing"))?;
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);
    Ok(())
}

/// An upstream answering with both `Content-Length` and `Transfer-Encoding: chunked`: the
/// body is framed by the chunks (RFC 9112 §6.3), and the client must not be told the
/// Content-Length, which would cut or stall the response and the next one on the connection.
#[tokio::test]
async fn l7_upstream_with_length_and_chunked_reaches_the_client_whole() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start(|mut s, _| async move {
        while read_head(&mut s).await.is_some() {
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\
                          transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await?;
    let l7 = L7::start(snapshot(vec![vhost(
        "te.test",
        vec![prefix("/", &target("te", upstream("te", &[up.addr])))],
    )]))
    .await?;
    // Two requests on one client connection: the second is answered too.
    let out = raw(
        l7.http,
        b"GET /1 HTTP/1.1\r\nHost: te.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: te.test\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("content-length: 100"),
        "{out}"
    );
    assert_eq!(out.matches("abc").count(), 2, "{out}");
    Ok(())
}

/// An HTTPS upstream named `names` by `ca`, asking clients for a certificate from
/// `client_ca` (optional), answering `sni=<SNI> client=<subject CN or none>`.
async fn mtls_upstream(
    ca: &TestCa,
    names: &[&str],
    client_ca: &TestCa,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let key = ca.issue(names)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.cert_der())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tests::certs::provider(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(tests::certs::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(AnySni(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let conn = tls.get_ref().1;
                let sni = conn.server_name().unwrap_or("none").to_string();
                // The verifier admitted only certificates from `client_ca`.
                let client = if conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
                    "cert"
                } else {
                    "none"
                };
                // What was negotiated, for `proxy-ssl-protocols` and `-ciphers`.
                let negotiated = format!(
                    "{:?} {:?}",
                    conn.protocol_version(),
                    conn.negotiated_cipher_suite().map(|s| s.suite())
                );
                let svc = hyper::service::service_fn(
                    move |_req: http::Request<hyper::body::Incoming>| {
                        let body = format!("sni={sni} client={client}");
                        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                        if let Ok(v) = http::HeaderValue::from_str(&negotiated) {
                            resp.headers_mut().insert("x-tls", v);
                        }
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

#[derive(Debug)]
struct AnySni(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for AnySni {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// `proxy-ssl-*`: the upstream's certificate checked against `ca.crt` and `proxy-ssl-name`,
/// SNI sent only when asked, and the Secret's certificate presented to the upstream.
#[tokio::test]
async fn l7_proxy_ssl_verifies_upstreams_and_presents_a_certificate() -> anyhow::Result<()> {
    use ingress::snapshot::UpstreamTls;

    let upstream_ca = TestCa::new()?;
    let proxy_ca = TestCa::new()?;
    let other_ca = TestCa::new()?;
    let (addr, task) = mtls_upstream(&upstream_ca, &["api.internal"], &proxy_ca).await?;
    let (chain, key) = proxy_ca.issue_client("ingress")?;
    let client_cert = Arc::new(rustls::sign::CertifiedKey::new(
        chain,
        tests::certs::provider()
            .key_provider
            .load_private_key(key)?,
    ));
    let roots = |ca: &TestCa| -> anyhow::Result<Arc<rustls::RootCertStore>> {
        let mut r = rustls::RootCertStore::empty();
        r.add(ca.cert_der())?;
        Ok(Arc::new(r))
    };
    let tls = |verify: Option<Arc<rustls::RootCertStore>>, name: &str, sni: bool, cert: bool| {
        Arc::new(UpstreamTls {
            secret: "default/upstream-tls".into(),
            verify,
            ca: Vec::new(),
            depth: 1,
            name: name.into(),
            sni,
            client_cert: cert.then(|| client_cert.clone()),
            versions: Default::default(),
            tls12_suites: None,
        })
    };
    let cases = [
        // (host, settings, expected status, expected body)
        (
            "ok.test",
            tls(Some(roots(&upstream_ca)?), "api.internal", true, true),
            200,
            "sni=api.internal client=cert",
        ),
        (
            "nosni.test",
            tls(Some(roots(&upstream_ca)?), "api.internal", false, true),
            200,
            "sni=none client=cert",
        ),
        (
            "nocert.test",
            tls(None, "api.internal", true, false),
            200,
            "sni=api.internal client=none",
        ),
        (
            "wrongname.test",
            tls(Some(roots(&upstream_ca)?), "db.internal", true, true),
            502,
            "",
        ),
        (
            "wrongca.test",
            tls(Some(roots(&other_ca)?), "api.internal", true, true),
            502,
            "",
        ),
        (
            "noroots.test",
            tls(
                Some(Arc::new(rustls::RootCertStore::empty())),
                "api.internal",
                true,
                true,
            ),
            502,
            "",
        ),
    ];
    let hosts: Vec<_> = cases
        .iter()
        .map(|(host, settings, _, _)| {
            let mut up = (*upstream_with(host, &[addr], BackendProtocol::Https)).clone();
            up.name = format!("{}@tls", up.name);
            up.tls = Some(settings.clone());
            vhost(host, vec![prefix("/", &target(host, Arc::new(up)))])
        })
        .collect();
    // `proxy-ssl-protocols` and `proxy-ssl-ciphers`: what the upstream negotiated.
    use ingress::snapshot::TlsVersions;
    let tuned = |versions: TlsVersions, suites: Option<Vec<rustls::CipherSuite>>| {
        let mut t = (*tls(None, "api.internal", true, true)).clone();
        t.versions = versions;
        t.tls12_suites = suites;
        Arc::new(t)
    };
    let only12 = TlsVersions {
        tls12: true,
        tls13: false,
    };
    let tuned_cases = [
        (
            "v13.test",
            tuned(TlsVersions::default(), None),
            "Some(TLSv1_3)",
        ),
        ("v12.test", tuned(only12, None), "Some(TLSv1_2)"),
        (
            "chacha.test",
            tuned(
                only12,
                Some(vec![
                    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                ]),
            ),
            "Some(TLSv1_2) Some(TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)",
        ),
    ];
    let mut hosts = hosts;
    for (host, settings, _) in &tuned_cases {
        let mut up = (*upstream_with(host, &[addr], BackendProtocol::Https)).clone();
        up.name = format!("{}@tls", up.name);
        up.tls = Some(settings.clone());
        hosts.push(vhost(host, vec![prefix("/", &target(host, Arc::new(up)))]));
    }
    let l7 = L7::start(snapshot(hosts)).await?;
    for (host, _, want) in &tuned_cases {
        let r = get(l7.http, host, "/").await?;
        assert_eq!(r.status.as_u16(), 200, "{host}: {}", r.text());
        let seen = r.header("x-tls").unwrap_or_default();
        assert!(seen.starts_with(want), "{host}: {seen}");
    }
    for (host, _, status, body) in &cases {
        // Twice: the second request may use a pooled connection, checked once.
        for _ in 0..2 {
            let r = get(l7.http, host, "/").await?;
            assert_eq!(r.status.as_u16(), *status, "{host}: {}", r.text());
            if *status == 200 {
                assert_eq!(r.text(), *body, "{host}");
            }
        }
    }
    task.abort();
    Ok(())
}

/// A WebSocket's frames are not request heads: the client may pause between messages for
/// longer than `client-header-timeout` (which bounds a started head) without being cut.
#[tokio::test]
async fn l7_websocket_outlives_the_client_header_timeout() -> anyhow::Result<()> {
    websocket_with_pauses(
        ingress::proxy::limits::Limits {
            client_header_timeout: std::time::Duration::from_millis(400),
            ..Default::default()
        },
        false,
    )
    .await
}

/// Nor is a tunnel an idle keep-alive connection: pauses longer than the keep-alive limit
/// (no request in progress on the connection since the 101) do not cut it.
#[tokio::test]
async fn l7_websocket_outlives_the_keep_alive_limit() -> anyhow::Result<()> {
    websocket_with_pauses(
        ingress::proxy::limits::Limits {
            header_read_timeout: std::time::Duration::from_millis(400),
            ..Default::default()
        },
        false,
    )
    .await
}

/// The same over TLS (`wss://`, as browsers open it): the guard reads the decrypted stream,
/// so the switch must stop it there too.
#[tokio::test]
async fn l7_secure_websocket_outlives_the_client_header_timeout() -> anyhow::Result<()> {
    websocket_with_pauses(
        ingress::proxy::limits::Limits {
            client_header_timeout: std::time::Duration::from_millis(400),
            ..Default::default()
        },
        true,
    )
    .await
}

/// A WebSocket through a proxy with `limits`, over its HTTPS listener when `tls`: three
/// messages 700 ms apart are echoed.
async fn websocket_with_pauses(
    limits: ingress::proxy::limits::Limits,
    tls: bool,
) -> anyhow::Result<()> {
    let (ws_addr, ws_task) = websocket_echo().await?;
    let opts = ingress::proxy::ProxyOptions {
        limits,
        ..Default::default()
    };
    let t = target("ws", upstream("ws", &[ws_addr]));
    let l7 = L7::start_with(
        opts,
        snapshot(vec![vhost("ws.test", vec![prefix("/", &t)])]),
    )
    .await?;
    if tls {
        let config = insecure_client_config(&[b"http/1.1"])?;
        let stream = tls_connect(l7.https, "ws.test", config).await?;
        talk_with_pauses(ws_client(stream, "wss://ws.test/chat").await?).await?;
    } else {
        let stream = TcpStream::connect(l7.http).await?;
        talk_with_pauses(ws_client(stream, "ws://ws.test/chat").await?).await?;
    }
    ws_task.abort();
    Ok(())
}

/// Three messages echoed 700 ms apart, then a clean close.
async fn talk_with_pauses<S>(mut ws: tokio_tungstenite::WebSocketStream<S>) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for i in 0..3 {
        echo(&mut ws, Message::text(format!("after a pause {i}"))).await?;
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    ws.close(None).await?;
    Ok(())
}

/// A WebSocket client of `url` over `stream` (connected to the proxy), switched.
async fn ws_client<S>(stream: S, url: &str) -> anyhow::Result<tokio_tungstenite::WebSocketStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (ws, resp) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream)).await??;
    assert_eq!(resp.status(), 101);
    Ok(ws)
}

/// Sends `msg` and checks the echo upstream sends it back.
async fn echo<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, msg: Message) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(msg.clone()).await?;
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("tunnel closed before {msg:?} came back"))??;
    assert_eq!(echoed, msg);
    Ok(())
}

//! Behind a load balancer: the PROXY protocol on the listeners (v1 and v2, HTTP and HTTPS)
//! and trusted forwarding headers (`use-forwarded-headers`, `proxy-real-ip-cidr`), seen by a
//! real echo upstream and by the route's source ranges and `ssl-redirect`.
use std::time::Duration;

use ingress::proxy::{limits::Limits, ProxyOptions};
use ingress::proxy_protocol::v2;
use ingress::snapshot::{RealIp, Snapshot};
use tests::{certs::*, l7::*, upstream::*};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The proxy on `snap` behind `real_ip`, with a short PROXY header timeout.
async fn behind(real_ip: RealIp, mut snap: Snapshot) -> anyhow::Result<L7> {
    snap.global.real_ip = real_ip;
    let options = ProxyOptions {
        limits: Limits {
            proxy_protocol_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    };
    L7::start_with(options, snap).await
}

fn proxy_protocol(trusted: &[&str]) -> RealIp {
    RealIp {
        proxy_protocol: true,
        trusted: trusted.iter().map(|s| net(s)).collect(),
        ..Default::default()
    }
}

/// Sends `header` and then one HTTP/1.1 request on a new connection; the raw answer.
async fn after_header(addr: std::net::SocketAddr, header: &[u8], request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(header).await.expect("header");
    s.write_all(request.as_bytes()).await.expect("request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The upstream's JSON echo at the end of a raw answer: the headers it saw.
fn seen(raw: &str, name: &str) -> Option<String> {
    let body = &raw[raw.find("\r\n\r\n")? + 4..];
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["headers"][name].as_str().map(str::to_string)
}

const GET: &str = "GET /who HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn l7_proxy_protocol_v1_and_v2_name_the_client_on_the_http_port() -> anyhow::Result<()> {
    let up = TestServer::echo("pp").await?;
    let mut policy = test_policy();
    // Only the clients the headers name may use the route; the test connects from loopback.
    policy.allow_sources = vec![net("203.0.113.0/24")];
    let t = target_with("pp", upstream("pp", &[up.addr]), policy);
    let l7 = behind(
        proxy_protocol(&["127.0.0.0/8"]),
        snapshot(vec![vhost("pp.test", vec![prefix("/", &t)])]),
    )
    .await?;

    let v1 = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 8080\r\n";
    let out = after_header(l7.http, v1, GET).await;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(
        seen(&out, "x-forwarded-for").as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(seen(&out, "x-real-ip").as_deref(), Some("203.0.113.7"));
    assert_eq!(seen(&out, "x-forwarded-port").as_deref(), Some("8080"));

    let header = v2::encode("[2001:db8::1]:40000".parse()?, "[2001:db8::2]:80".parse()?);
    let mut policy6 = test_policy();
    policy6.allow_sources = vec![net("2001:db8::/32")];
    let t6 = target_with("pp6", upstream("pp6", &[up.addr]), policy6);
    // Every snapshot carries the settings: a later one without them would turn them off.
    let mut next = snapshot(vec![vhost("pp.test", vec![prefix("/", &t6)])]);
    next.global.real_ip = proxy_protocol(&["127.0.0.0/8"]);
    l7.apply(next);
    let out = after_header(l7.http, &header, GET).await;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(seen(&out, "x-real-ip").as_deref(), Some("2001:db8::1"));
    assert_eq!(seen(&out, "x-forwarded-port").as_deref(), Some("80"));

    // A client the header names outside the allowed range is refused by the route.
    let out = after_header(l7.http, b"PROXY TCP6 2001:db9::1 2001:db8::2 1 80\r\n", GET).await;
    assert_eq!(raw_status(&out), Some(403), "{out}");
    // A health check's header (UNKNOWN, v2 LOCAL) leaves the connection's own address.
    let out = after_header(l7.http, b"PROXY UNKNOWN\r\n", GET).await;
    assert_eq!(raw_status(&out), Some(403), "{out}");
    Ok(())
}

#[tokio::test]
async fn l7_proxy_protocol_header_split_over_segments_is_reassembled() -> anyhow::Result<()> {
    let up = TestServer::echo("split").await?;
    let t = target("split", upstream("split", &[up.addr]));
    let l7 = behind(
        proxy_protocol(&["127.0.0.0/8"]),
        snapshot(vec![vhost("pp.test", vec![prefix("/", &t)])]),
    )
    .await?;
    let header = v2::encode("192.0.2.9:1234".parse()?, "192.0.2.10:80".parse()?);
    let mut s = TcpStream::connect(l7.http).await?;
    s.set_nodelay(true)?;
    for part in [&header[..5], &header[5..14], &header[14..]] {
        s.write_all(part).await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    s.write_all(GET.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await??;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(seen(&out, "x-real-ip").as_deref(), Some("192.0.2.9"));
    Ok(())
}

#[tokio::test]
async fn l7_connections_without_a_good_proxy_header_are_closed_and_counted() -> anyhow::Result<()> {
    let up = TestServer::echo("bad").await?;
    let t = target("bad", upstream("bad", &[up.addr]));
    let l7 = behind(
        proxy_protocol(&["127.0.0.0/8"]),
        snapshot(vec![vhost("pp.test", vec![prefix("/", &t)])]),
    )
    .await?;
    let metrics = l7.proxy.metrics();
    let before = metrics.proxy_protocol_refusals();
    // No header at all: the request itself is not a header.
    let out = after_header(l7.http, b"", GET).await;
    assert_eq!(out, "", "answered a connection without a PROXY header");
    // A malformed v1 line, and a v2 signature with a bad command byte.
    let out = after_header(l7.http, b"PROXY TCP4 203.0.113.7 x 1 2\r\n", GET).await;
    assert_eq!(out, "");
    let mut bad = v2::encode("192.0.2.1:1".parse()?, "192.0.2.2:2".parse()?);
    bad[12] = 0x13;
    let out = after_header(l7.http, &bad, GET).await;
    assert_eq!(out, "");
    // Half a header, then silence: closed after the header timeout (500 ms here).
    let mut s = TcpStream::connect(l7.http).await?;
    s.write_all(b"PROXY TCP4 203.0.11").await?;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    // Closed with the peeked bytes unread, so the kernel may answer with a reset.
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await?;
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "expected the connection to be closed: {read:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(metrics.proxy_protocol_refusals() - before, 4);
    assert_eq!(
        up.hits(),
        0,
        "a request without a good header went upstream"
    );

    // `proxy-protocol-header-timeout` (2 s) over the start-time limit (500 ms): a new
    // connection gets the longer wait, then is closed all the same.
    let mut next = snapshot(vec![vhost("pp.test", vec![prefix("/", &t)])]);
    next.global.real_ip = proxy_protocol(&["127.0.0.0/8"]);
    next.global.proxy_protocol_timeout = Some(Duration::from_secs(2));
    l7.apply(next);
    let mut s = TcpStream::connect(l7.http).await?;
    s.write_all(b"PROXY TCP4 203.0.11").await?;
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(1_800)..Duration::from_millis(4_000)).contains(&waited),
        "closed after {waited:?}"
    );
    assert_eq!(metrics.proxy_protocol_refusals() - before, 5);
    Ok(())
}

#[tokio::test]
async fn l7_an_untrusted_peer_must_send_the_header_but_does_not_name_the_client(
) -> anyhow::Result<()> {
    let up = TestServer::echo("untrusted").await?;
    let t = target("untrusted", upstream("untrusted", &[up.addr]));
    let l7 = behind(
        proxy_protocol(&["10.0.0.0/8"]),
        snapshot(vec![vhost("pp.test", vec![prefix("/", &t)])]),
    )
    .await?;
    let out = after_header(
        l7.http,
        b"PROXY TCP4 203.0.113.7 198.51.100.1 1 80\r\n",
        GET,
    )
    .await;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(seen(&out, "x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        seen(&out, "x-forwarded-port").as_deref(),
        Some(l7.http.port().to_string().as_str())
    );
    Ok(())
}

#[tokio::test]
async fn l7_proxy_protocol_before_a_tls_handshake() -> anyhow::Result<()> {
    use tokio_rustls::TlsConnector;
    let ca = TestCa::new()?;
    let key = ca.issue(&["pp.test"])?;
    let up = TestServer::echo("tls").await?;
    let t = target("tls", upstream("tls", &[up.addr]));
    let mut host = vhost("pp.test", vec![prefix("/", &t)]);
    host.tls = true;
    let l7 = behind(
        proxy_protocol(&["127.0.0.0/8"]),
        with_cert(snapshot(vec![host]), &["pp.test"], key),
    )
    .await?;
    let mut tcp = TcpStream::connect(l7.https).await?;
    tcp.write_all(&v2::encode(
        "203.0.113.50:5555".parse()?,
        "198.51.100.1:443".parse()?,
    ))
    .await?;
    let name = rustls_pki_types::ServerName::try_from("pp.test")?;
    let tls = TlsConnector::from(ca.client_config(&[b"http/1.1"])?)
        .connect(name, tcp)
        .await?;
    let (r, _) = h1_over(
        tls,
        build(http::Method::GET, "pp.test", "/", Default::default()),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("203.0.113.50"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.seen_header("x-forwarded-port").as_deref(), Some("443"));
    Ok(())
}

#[tokio::test]
async fn l7_forwarded_headers_from_a_trusted_balancer_decide_client_scheme_and_redirect(
) -> anyhow::Result<()> {
    let up = TestServer::echo("fwd").await?;
    let t = target("fwd", upstream("fwd", &[up.addr]));
    let mut secure = vhost("secure.test", vec![prefix("/", &t)]);
    // A host with TLS: plain-HTTP requests are redirected (ssl-redirect's default).
    secure.tls = true;
    let real_ip = RealIp {
        forwarded_headers: true,
        trusted: vec![net("127.0.0.0/8"), net("10.0.0.0/8")],
        ..Default::default()
    };
    let l7 = behind(real_ip, snapshot(vec![secure])).await?;

    // The balancer terminated TLS: no redirect loop, and the upstream hears it was HTTPS.
    let req = "GET /a HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\
               X-Forwarded-Host: www.secure.test, lb.internal\r\n\
               X-Forwarded-For: 198.51.100.9, 203.0.113.7, 10.1.1.1\r\n\r\n";
    let out = after_header(l7.http, b"", req).await;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(seen(&out, "x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(seen(&out, "x-forwarded-port").as_deref(), Some("443"));
    // Routed by its own Host, the request reaches the upstream with the host the client
    // asked the balancer for (the first of the list), as ingress-nginx's `$best_http_host`.
    assert_eq!(
        seen(&out, "x-forwarded-host").as_deref(),
        Some("www.secure.test")
    );
    assert_eq!(seen(&out, "host").as_deref(), Some("www.secure.test"));
    // The client is the rightmost address that is not a trusted proxy.
    assert_eq!(seen(&out, "x-real-ip").as_deref(), Some("203.0.113.7"));
    assert_eq!(
        seen(&out, "x-forwarded-for").as_deref(),
        Some("203.0.113.7")
    );
    // HSTS goes with answers to clients that used HTTPS.
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{out}"
    );

    // The balancer says the client used plain HTTP: redirected, to the balancer's view.
    let req = "GET /a HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\
               X-Forwarded-Proto: http\r\n\r\n";
    let out = after_header(l7.http, b"", req).await;
    assert_eq!(raw_status(&out), Some(308), "{out}");
    assert!(
        out.contains(&format!(
            "location: https://secure.test:{}/a\r\n",
            l7.https.port()
        )),
        "{out}"
    );
    // ... to the host the client asked the balancer for, without the balancer's port.
    let req = "GET /a HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\
               X-Forwarded-Proto: http\r\nX-Forwarded-Host: www.secure.test:8080\r\n\r\n";
    let out = after_header(l7.http, b"", req).await;
    assert_eq!(raw_status(&out), Some(308), "{out}");
    assert!(
        out.contains(&format!(
            "location: https://www.secure.test:{}/a\r\n",
            l7.https.port()
        )),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn l7_forwarded_headers_from_an_untrusted_peer_change_nothing() -> anyhow::Result<()> {
    let up = TestServer::echo("fwd").await?;
    let t = target("fwd", upstream("fwd", &[up.addr]));
    let mut secure = vhost("secure.test", vec![prefix("/", &t)]);
    secure.tls = true;
    let open = vhost("open.test", vec![prefix("/", &t)]);
    let real_ip = RealIp {
        forwarded_headers: true,
        trusted: vec![net("10.0.0.0/8")],
        ..Default::default()
    };
    let l7 = behind(real_ip, snapshot(vec![secure, open])).await?;
    let req = "GET /a HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
    let out = after_header(l7.http, b"", req).await;
    assert_eq!(raw_status(&out), Some(308), "{out}");
    let req = "GET /a HTTP/1.1\r\nHost: open.test\r\nConnection: close\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
    let out = after_header(l7.http, b"", req).await;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(seen(&out, "x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen(&out, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen(&out, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
    Ok(())
}

/// `--block-cidrs` in the proxy (the kernel drops these earlier when XDP is on): a blocked
/// connection is closed unanswered, on HTTP and before a TLS handshake; a blocked client named
/// by a PROXY header or by trusted forwarding headers is refused too, the latter with 403.
#[tokio::test]
async fn l7_blocked_clients_are_refused_however_they_are_named() -> anyhow::Result<()> {
    let up = TestServer::echo("blk").await?;
    let t = target("blk", upstream("blk", &[up.addr]));
    // The block list comes with the snapshot (flag or controller ConfigMap).
    let routes = |block: Vec<ipnet::IpNet>| {
        let mut s = snapshot(vec![vhost("pp.test", vec![prefix("/", &t)])]);
        s.global.block_cidrs = block;
        s
    };

    // The connection's own address.
    let l7 = behind(RealIp::default(), routes(vec![net("127.0.0.0/8")])).await?;
    let out = after_header(l7.http, b"", GET).await;
    assert_eq!(out, "", "a blocked client was answered");
    let mut tls = TcpStream::connect(l7.https).await?;
    tls.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0])
        .await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert_eq!(l7.proxy.metrics().blocked_count(), 2);
    drop(l7);

    // A client a trusted balancer names in a PROXY header.
    let blocked = vec![net("203.0.113.0/24"), net("2001:db8:bad::/48")];
    let l7 = behind(proxy_protocol(&["127.0.0.0/8"]), routes(blocked.clone())).await?;
    let out = after_header(
        l7.http,
        b"PROXY TCP4 203.0.113.7 198.51.100.1 1 80\r\n",
        GET,
    )
    .await;
    assert_eq!(
        out, "",
        "a blocked client named by a PROXY header was answered"
    );
    let out = after_header(
        l7.http,
        b"PROXY TCP6 2001:db8:bad::1 2001:db8::2 1 80\r\n",
        GET,
    )
    .await;
    assert_eq!(out, "");
    let out = after_header(
        l7.http,
        b"PROXY TCP4 198.51.100.7 198.51.100.1 1 80\r\n",
        GET,
    )
    .await;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(l7.proxy.metrics().blocked_count(), 2);
    drop(l7);

    // ... or in forwarded headers: known only per request, refused with 403.
    let l7 = behind(
        RealIp {
            forwarded_headers: true,
            trusted: vec![net("127.0.0.0/8")],
            ..Default::default()
        },
        routes(blocked),
    )
    .await?;
    let fwd = |client: &str| {
        format!(
            "GET /who HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\
             X-Forwarded-For: {client}\r\n\r\n"
        )
    };
    let out = after_header(l7.http, b"", &fwd("203.0.113.9")).await;
    assert_eq!(raw_status(&out), Some(403), "{out}");
    let out = after_header(l7.http, b"", &fwd("198.51.100.9")).await;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(seen(&out, "x-real-ip").as_deref(), Some("198.51.100.9"));
    assert_eq!(l7.proxy.metrics().blocked_count(), 1);
    assert_eq!(up.hits(), 2, "a blocked client's request went upstream");
    Ok(())
}

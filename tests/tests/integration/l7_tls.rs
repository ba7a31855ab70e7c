//! TLS termination: certificate by SNI (exact, wildcard, default), TLS 1.2 and 1.3, ALPN,
//! hot-swap of certificates with open connections, ssl-redirect, and HSTS.
use std::sync::Arc;

use tests::{certs::*, l7::*, upstream::*};

#[tokio::test]
async fn l7_tls_sni_selects_exact_wildcard_and_default() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let exact = ca.issue(&["a.example.com"])?;
    let wild = ca.issue(&["*.example.com"])?;
    let up = TestServer::echo("tls").await?;
    let t = target("tls", upstream("tls", &[up.addr]));
    let mut hosts = vec![
        vhost("a.example.com", vec![prefix("/", &t)]),
        vhost("*.example.com", vec![prefix("/", &t)]),
    ];
    hosts.iter_mut().for_each(|h| h.tls = true);
    let snap = with_cert(
        with_cert(snapshot(hosts), &["a.example.com"], exact.clone()),
        &["*.example.com"],
        wild.clone(),
    );
    let l7 = L7::start(snap).await?;
    let verified = ca.client_config(&[b"http/1.1"])?;

    let s = tls_connect(l7.https, "a.example.com", verified.clone()).await?;
    assert_eq!(peer_leaf(&s).as_ref(), exact.cert.first());
    let (r, _) = h1_over(
        s,
        build(http::Method::GET, "a.example.com", "/x", Default::default()),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.seen_header("x-scheme").as_deref(), Some("https"));
    assert_eq!(
        r.seen_header("x-forwarded-scheme").as_deref(),
        Some("https")
    );
    assert_eq!(
        r.seen_header("x-forwarded-port"),
        Some(l7.https.port().to_string())
    );

    let s = tls_connect(l7.https, "b.example.com", verified.clone()).await?;
    assert_eq!(peer_leaf(&s).as_ref(), wild.cert.first());
    // Case-insensitive SNI.
    let s = tls_connect(l7.https, "B.Example.COM", verified.clone()).await?;
    assert_eq!(peer_leaf(&s).as_ref(), wild.cert.first());
    // Two labels below the wildcard: not covered, so the default certificate (which the
    // CA-verifying client rejects).
    assert!(tls_connect(l7.https, "x.b.example.com", verified.clone())
        .await
        .is_err());

    let insecure = insecure_client_config(&[b"http/1.1"])?;
    for sni in ["unknown.org", ""] {
        let s = tls_connect(l7.https, sni, insecure.clone()).await?;
        let leaf = peer_leaf(&s);
        assert!(leaf.is_some());
        assert_ne!(leaf.as_ref(), exact.cert.first(), "sni {sni:?}");
        assert_ne!(leaf.as_ref(), wild.cert.first(), "sni {sni:?}");
    }

    // TLS 1.2 only client, and ALPN h2.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der())?;
    let tls12 = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let s = tls_connect(l7.https, "a.example.com", Arc::new(tls12)).await?;
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let s = tls_connect(
        l7.https,
        "a.example.com",
        ca.client_config(&[b"h2", b"http/1.1"])?,
    )
    .await?;
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // Garbage instead of a ClientHello fails the handshake and is counted.
    let out = raw(l7.https, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await?;
    assert!(!out.contains("200"));
    let mut metrics = String::new();
    l7.proxy.metrics().render(&mut metrics);
    assert!(
        metrics.contains("ingress_tls_handshake_failures_total 2"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn l7_tls_certificate_hot_swap_keeps_open_connections() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let old = ca.issue(&["swap.example.com"])?;
    let new = ca.issue(&["swap.example.com"])?;
    let up = TestServer::echo("swap").await?;
    let t = target("swap", upstream("swap", &[up.addr]));
    let snap = |key| {
        with_cert(
            snapshot(vec![vhost("swap.example.com", vec![prefix("/", &t)])]),
            &["swap.example.com"],
            key,
        )
    };
    let l7 = L7::start(snap(old.clone())).await?;
    let s = tls_connect(
        l7.https,
        "swap.example.com",
        ca.client_config(&[b"http/1.1"])?,
    )
    .await?;
    assert_eq!(peer_leaf(&s).as_ref(), old.cert.first());
    let (r, mut open) = h1_over(
        s,
        build(
            http::Method::GET,
            "swap.example.com",
            "/1",
            Default::default(),
        ),
    )
    .await?;
    assert_eq!(r.status, 200);

    l7.apply(snap(new.clone()));

    // The open connection keeps working on the old certificate.
    let r = again(
        &mut open,
        build(
            http::Method::GET,
            "swap.example.com",
            "/2",
            Default::default(),
        ),
    )
    .await?;
    assert_eq!(r.status, 200);
    // A new full handshake gets the new one (a fresh client: no session to resume, since a
    // resumed session keeps the identity it was established with).
    let s = tls_connect(
        l7.https,
        "swap.example.com",
        ca.client_config(&[b"http/1.1"])?,
    )
    .await?;
    assert_eq!(peer_leaf(&s).as_ref(), new.cert.first());
    let (r, _) = h1_over(
        s,
        build(
            http::Method::GET,
            "swap.example.com",
            "/3",
            Default::default(),
        ),
    )
    .await?;
    assert_eq!(r.status, 200);
    Ok(())
}

#[tokio::test]
async fn l7_ssl_redirect_and_force_ssl_redirect() -> anyhow::Result<()> {
    let up = TestServer::echo("r").await?;
    let u = upstream("r", &[up.addr]);
    let plain = target("plain", u.clone());
    let mut forced_policy = test_policy();
    forced_policy.force_ssl_redirect = true;
    let forced = target_with("forced", u.clone(), forced_policy);
    let mut off_policy = test_policy();
    off_policy.ssl_redirect = false;
    let off = target_with("off", u.clone(), off_policy);
    let mut slash_policy = test_policy();
    slash_policy.preserve_trailing_slash = true;
    let slash = target_with("slash", u.clone(), slash_policy);
    let mut secure = vhost(
        "secure.test",
        vec![
            prefix("/off", &off),
            prefix("/keep", &slash),
            prefix("/", &plain),
        ],
    );
    secure.tls = true;
    let snap = snapshot(vec![
        secure,
        vhost(
            "open.test",
            vec![prefix("/forced", &forced), prefix("/", &plain)],
        ),
    ]);
    let l7 = L7::start(snap).await?;
    let port = l7.https.port();

    let r = get(l7.http, "secure.test", "/a/b?x=1").await?;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://secure.test:{port}/a/b?x=1").as_str())
    );
    // One trailing slash goes, as ingress-nginx's redirect drops it, unless the route says
    // preserve-trailing-slash.
    for (path, expected) in [("/a/b/", "/a/b"), ("/", ""), ("/keep/", "/keep/")] {
        let r = get(l7.http, "secure.test", path).await?;
        assert_eq!(
            r.header("location"),
            Some(format!("https://secure.test:{port}{expected}").as_str()),
            "{path}"
        );
    }
    assert_eq!(up.hits(), 0);
    // ssl-redirect: "false" on the route.
    assert_eq!(get(l7.http, "secure.test", "/off").await?.status, 200);
    // Host without TLS: no redirect, unless forced.
    assert_eq!(get(l7.http, "open.test", "/x").await?.status, 200);
    let r = get(l7.http, "open.test", "/forced").await?;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://open.test:{port}/forced").as_str())
    );
    // Over HTTPS nothing redirects.
    let s = tls_connect(
        l7.https,
        "secure.test",
        insecure_client_config(&[b"http/1.1"])?,
    )
    .await?;
    let (r, _) = h1_over(
        s,
        build(http::Method::GET, "secure.test", "/a", Default::default()),
    )
    .await?;
    assert_eq!(r.status, 200);
    Ok(())
}

/// The controller ConfigMap's `http-redirect-code` and `no-tls-redirect-locations` (by
/// default `/.well-known/acme-challenge`, so an HTTP-01 challenge route of a TLS host answers
/// over HTTP, as in ingress-nginx).
#[tokio::test]
async fn l7_redirect_code_and_locations_exempt_from_it() -> anyhow::Result<()> {
    let up = TestServer::echo("r").await?;
    let plain = target("plain", upstream("r", &[up.addr]));
    let mut secure = vhost(
        "secure.test",
        vec![
            prefix("/.well-known/acme-challenge", &plain),
            prefix("/status", &plain),
            prefix("/", &plain),
        ],
    );
    secure.tls = true;
    let snap = || snapshot(vec![secure.clone()]);
    let l7 = L7::start(snap()).await?;
    let r = get(l7.http, "secure.test", "/.well-known/acme-challenge/token").await?;
    assert_eq!(r.status, 200, "the challenge is answered over HTTP");
    assert_eq!(get(l7.http, "secure.test", "/status").await?.status, 308);
    assert_eq!(get(l7.http, "secure.test", "/").await?.status, 308);
    // A request path under the exempt prefix on a route that is not: redirected, as nginx
    // judges the location, not the request.
    let r = get(l7.http, "secure.test", "/x/.well-known/acme-challenge/t").await?;
    assert_eq!(r.status, 308);

    let mut next = snap();
    next.global.http_redirect_code = 301;
    next.global.no_tls_redirect_locations = vec!["/status".into()];
    l7.apply(next);
    let r = get(l7.http, "secure.test", "/").await?;
    assert_eq!(r.status, 301);
    assert!(r
        .header("location")
        .is_some_and(|l| l.starts_with("https://secure.test")));
    assert_eq!(get(l7.http, "secure.test", "/status").await?.status, 200);
    let r = get(l7.http, "secure.test", "/.well-known/acme-challenge/token").await?;
    assert_eq!(r.status, 301, "the list replaced the default");
    Ok(())
}

#[tokio::test]
async fn l7_serve_tls_with_peeked_bytes_replayed() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let ca = TestCa::new()?;
    let key = ca.issue(&["pt.example.com"])?;
    let up = TestServer::echo("handed").await?;
    let t = target("handed", upstream("handed", &[up.addr]));
    let l7 = L7::start(with_cert(
        snapshot(vec![vhost("pt.example.com", vec![prefix("/", &t)])]),
        &["pt.example.com"],
        key.clone(),
    ))
    .await?;

    // What the passthrough listener does for a host it does not pass through: it has already
    // read the start of the ClientHello, and hands the connection over with those bytes.
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front_addr = front.local_addr()?;
    let proxy = l7.proxy.clone();
    let handoff = tokio::spawn(async move {
        let (mut tcp, peer) = front.accept().await?;
        let mut peeked = vec![0u8; 64];
        tcp.read_exact(&mut peeked).await?;
        let local = tcp.local_addr()?;
        let stream = ingress::passthrough::peek::Replay::new(bytes::Bytes::from(peeked), tcp);
        let origin = ingress::proxy_protocol::Origin::direct(peer, local);
        proxy.serve_tls(stream, origin).await;
        anyhow::Ok(())
    });
    let s = tls_connect(
        front_addr,
        "pt.example.com",
        ca.client_config(&[b"http/1.1"])?,
    )
    .await?;
    assert_eq!(peer_leaf(&s).as_ref(), key.cert.first());
    let (r, sender) = h1_over(
        s,
        build(
            http::Method::GET,
            "pt.example.com",
            "/via-handoff",
            Default::default(),
        ),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        r.seen_header("x-forwarded-port"),
        Some(front_addr.port().to_string())
    );
    drop(sender);
    tokio::time::timeout(WAIT, handoff).await???;
    Ok(())
}

/// A GET over TLS with ALPN `alpn`, the response fully read.
async fn https_get(
    l7: &L7,
    host: &str,
    path: &str,
    alpn: &[u8],
) -> anyhow::Result<(u16, http::Version, Option<String>)> {
    use http_body_util::BodyExt;
    let tls = tls_connect(l7.https, host, insecure_client_config(&[alpn])?).await?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = build(http::Method::GET, host, path, Default::default());
    let resp = if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = format!("https://{host}{path}").parse()?;
        tokio::time::timeout(
            WAIT,
            sender.send_request(http::Request::from_parts(parts, body)),
        )
        .await??
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        tokio::time::timeout(WAIT, sender.send_request(req)).await??
    };
    let (status, version) = (resp.status().as_u16(), resp.version());
    let hsts = resp
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()?;
    resp.into_body().collect().await?;
    Ok((status, version, hsts))
}

#[tokio::test]
async fn l7_hsts_on_https_answers_of_tls_hosts() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    const DEFAULT: &str = "max-age=31536000; includeSubDomains";
    let up = TestServer::echo("h").await?;
    // An upstream that sends a weaker HSTS header of its own.
    let weak_up = RawUpstream::start(|mut s, _| async move {
        if read_head(&mut s).await.is_some() {
            let answer = b"HTTP/1.1 200 OK\r\nstrict-transport-security: max-age=5\r\n\
                content-length: 2\r\nconnection: close\r\n\r\nok";
            let _ = s.write_all(answer).await;
        }
    })
    .await?;
    let plain = target("plain", upstream("h", &[up.addr]));
    let weak = target("weak", upstream("w", &[weak_up.addr]));
    let empty = target("empty", upstream("e", &[]));
    let mut secure = vhost(
        "secure.test",
        vec![
            prefix("/weak", &weak),
            prefix("/empty", &empty),
            prefix("/", &plain),
        ],
    );
    secure.tls = true;
    let snap = || {
        snapshot(vec![
            secure.clone(),
            vhost("open.test", vec![prefix("/", &plain)]),
        ])
    };
    let l7 = L7::start(snap()).await?;

    for alpn in [&b"http/1.1"[..], b"h2"] {
        let (status, version, hsts) = https_get(&l7, "secure.test", "/", alpn).await?;
        assert_eq!(
            (status, hsts.as_deref()),
            (200, Some(DEFAULT)),
            "{version:?}"
        );
        // In place of the upstream's own.
        let (status, _, hsts) = https_get(&l7, "secure.test", "/weak", alpn).await?;
        assert_eq!((status, hsts.as_deref()), (200, Some(DEFAULT)));
        // On the proxy's own answers too (no endpoint: 503).
        let (status, _, hsts) = https_get(&l7, "secure.test", "/empty", alpn).await?;
        assert_eq!((status, hsts.as_deref()), (503, Some(DEFAULT)));
        // Not for a host without TLS, even over HTTPS.
        let (status, _, hsts) = https_get(&l7, "open.test", "/", alpn).await?;
        assert_eq!((status, hsts), (200, None));
    }
    // Never over plain HTTP: not on the redirect to HTTPS, nor on a forwarded answer.
    let r = get(l7.http, "secure.test", "/").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("strict-transport-security")),
        (308, None)
    );
    let r = get(l7.http, "open.test", "/weak").await?;
    assert_eq!(r.status, 200);

    // Other settings in the next snapshot (the controller ConfigMap's `hsts-*` keys change
    // them without a restart).
    let mut next = snap();
    next.global.hsts.max_age = 600;
    next.global.hsts.preload = true;
    l7.apply(next);
    let (_, _, hsts) = https_get(&l7, "secure.test", "/", b"http/1.1").await?;
    assert_eq!(
        hsts.as_deref(),
        Some("max-age=600; includeSubDomains; preload")
    );
    // `hsts: false`: none, and the upstream's own header passes untouched.
    let mut off = snap();
    off.global.hsts.enabled = false;
    l7.apply(off);
    let (_, _, hsts) = https_get(&l7, "secure.test", "/", b"http/1.1").await?;
    assert_eq!(hsts, None);
    let (_, _, hsts) = https_get(&l7, "secure.test", "/weak", b"http/1.1").await?;
    assert_eq!(hsts.as_deref(), Some("max-age=5"));
    Ok(())
}

/// `auth-tls-*`: a host asking for client certificates asks in the handshake (and only it),
/// and judges the certificate on every request, as nginx's `ssl_verify_client`.
#[tokio::test]
async fn l7_client_certificates() -> anyhow::Result<()> {
    use ingress::snapshot::VerifyClient;

    let server_ca = TestCa::new()?;
    let client_ca = TestCa::new()?;
    let rogue_ca = TestCa::new()?;
    let up = TestServer::echo("mtls").await?;
    let t = target("mtls", upstream("mtls", &[up.addr]));
    let mut required = client_auth(&client_ca, VerifyClient::On)?;
    required.pass_certificate = true;
    let mut optional = client_auth(&client_ca, VerifyClient::Optional)?;
    optional.origin = ingress_ref("opt");
    let mut paged = client_auth(&client_ca, VerifyClient::On)?;
    paged.error_page = Some("https://errors.test/client-cert".into());
    let mut no_ca = client_auth(&client_ca, VerifyClient::OptionalNoCa)?;
    no_ca.origin = ingress_ref("noca");
    let hosts_with = |required: Option<ingress::snapshot::ClientAuth>| {
        let mut hosts = vec![
            vhost("m.test", vec![prefix("/", &t)]),
            vhost("open.test", vec![prefix("/", &t)]),
            vhost("opt.test", vec![prefix("/", &t)]),
            vhost("page.test", vec![prefix("/", &t)]),
            vhost("noca.test", vec![prefix("/", &t)]),
        ];
        hosts[0].client_auth = required.map(Arc::new);
        hosts[2].client_auth = Some(Arc::new(optional.clone()));
        hosts[3].client_auth = Some(Arc::new(paged.clone()));
        hosts[4].client_auth = Some(Arc::new(no_ca.clone()));
        hosts.iter_mut().for_each(|h| h.tls = true);
        // Without TLS on the host nothing redirects plain HTTP away.
        let mut plain = vhost("plain.test", vec![prefix("/", &t)]);
        plain.client_auth = hosts[2].client_auth.clone();
        hosts.push(plain);
        let names = ["m.test", "open.test", "opt.test", "page.test", "noca.test"];
        with_cert(
            snapshot(hosts),
            &names,
            server_ca.issue(&names).expect("cert"),
        )
    };
    let l7 = L7::start(hosts_with(Some(required.clone()))).await?;
    let req = |host: &str| build(http::Method::GET, host, "/", Default::default());

    // A certificate from the client CA: served, and the upstream learns who it was. A header
    // the client sent under the same name is replaced, not passed on.
    let (alice, asked) = server_ca
        .client_config_with_cert(Some(client_ca.issue_client("alice")?), &[b"http/1.1"])?;
    let s = tls_connect(l7.https, "m.test", alice.clone()).await?;
    assert_eq!(asked.times(), 1, "m.test asks for a certificate");
    let mut forged = req("m.test");
    forged.headers_mut().insert(
        "ssl-client-verify",
        http::HeaderValue::from_static("SUCCESS-forged"),
    );
    let (r, mut sender) = h1_over(s, forged).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.seen_header("ssl-client-verify").as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(
        r.seen_header("ssl-client-subject-dn").as_deref(),
        Some("CN=alice")
    );
    assert_eq!(
        r.seen_header("ssl-client-issuer-dn").as_deref(),
        Some("CN=ingress test CA")
    );
    assert!(r
        .seen_header("ssl-client-cert")
        .is_some_and(|c| c.starts_with("-----BEGIN%20CERTIFICATE-----%0A")));
    // The same connection again (the verdict is kept per connection).
    let r = again(&mut sender, req("m.test")).await?;
    assert_eq!(r.status, 200);

    // A host that does not ask does not make the client choose a certificate.
    let s = tls_connect(l7.https, "open.test", alice.clone()).await?;
    assert_eq!(asked.times(), 1, "open.test does not ask");
    let (r, mut sender) = h1_over(s, req("open.test")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("ssl-client-verify"), None);
    // ...and its connection is sent away from a host that requires one (421: an HTTP/2
    // client reusing it for another name opens a connection of its own, which is asked).
    let r = again(&mut sender, req("m.test")).await?;
    assert_eq!(r.status, 421);

    // No certificate, or one from another CA: 400, with nginx's texts.
    let (anonymous, asked_anon) = server_ca.client_config_with_cert(None, &[b"http/1.1"])?;
    let s = tls_connect(l7.https, "m.test", anonymous.clone()).await?;
    assert_eq!(asked_anon.times(), 1);
    let (r, _) = h1_over(s, req("m.test")).await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "400 No required SSL certificate was sent\n");
    let (mallory, _) = server_ca
        .client_config_with_cert(Some(rogue_ca.issue_client("mallory")?), &[b"http/1.1"])?;
    let s = tls_connect(l7.https, "m.test", mallory.clone()).await?;
    let (r, _) = h1_over(s, req("m.test")).await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "400 The SSL certificate error\n");
    // Plain HTTP is sent to HTTPS (ssl-redirect), never served unchecked.
    let r = get(l7.http, "m.test", "/").await?;
    assert_eq!(r.status, 308);
    // A host without TLS asking for certificates: plain HTTP has none. `optional` lets it by
    // as NONE; it never carries a forged verdict.
    let mut forged = req("plain.test");
    forged.headers_mut().insert(
        "ssl-client-verify",
        http::HeaderValue::from_static("SUCCESS"),
    );
    let r = send(l7.http, forged).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("ssl-client-verify").as_deref(), Some("NONE"));

    // `optional`: none is fine, a bad one is not. `auth-tls-error-page`: a redirect.
    let s = tls_connect(l7.https, "opt.test", anonymous.clone()).await?;
    let (r, _) = h1_over(s, req("opt.test")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("ssl-client-verify").as_deref(), Some("NONE"));
    let s = tls_connect(l7.https, "opt.test", mallory.clone()).await?;
    let (r, _) = h1_over(s, req("opt.test")).await?;
    assert_eq!(r.status, 400);
    let s = tls_connect(l7.https, "page.test", anonymous.clone()).await?;
    let (r, _) = h1_over(s, req("page.test")).await?;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://errors.test/client-cert")
    );

    // `optional_no_ca`: an unknown issuer passes, with nginx's words for it; an expired
    // certificate does not, whoever issued it (`ngx_ssl_verify_error_optional`).
    let s = tls_connect(l7.https, "noca.test", mallory.clone()).await?;
    let (r, _) = h1_over(s, req("noca.test")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen_header("ssl-client-verify").as_deref(),
        Some("FAILED:self-signed certificate in certificate chain")
    );
    assert_eq!(
        r.seen_header("ssl-client-subject-dn").as_deref(),
        Some("CN=mallory")
    );
    for ca in [&client_ca, &rogue_ca] {
        let (expired, _) = server_ca.client_config_with_cert(
            Some(ca.issue_client_until("old", (2001, 1, 1))?),
            &[b"http/1.1"],
        )?;
        let s = tls_connect(l7.https, "noca.test", expired).await?;
        let (r, _) = h1_over(s, req("noca.test")).await?;
        assert_eq!(r.status, 400);
        assert_eq!(r.text(), "400 The SSL certificate error\n");
    }

    // HTTP/2 carries the same check.
    let (alice_h2, _) =
        server_ca.client_config_with_cert(Some(client_ca.issue_client("alice")?), &[b"h2"])?;
    let s = tls_connect(l7.https, "m.test", alice_h2).await?;
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await?;
    tokio::spawn(conn);
    let resp = h2
        .send_request(
            http::Request::builder()
                .uri("https://m.test/")
                .body(http_body_util::Full::new(bytes::Bytes::new()))?,
        )
        .await?;
    assert_eq!(resp.status(), 200);

    // The host stops asking after a config change: new handshakes are not asked.
    l7.apply(hosts_with(None));
    let before = asked.times();
    let s = tls_connect(l7.https, "m.test", alice.clone()).await?;
    assert_eq!(asked.times(), before);
    let (r, _) = h1_over(s, req("m.test")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("ssl-client-verify"), None);
    Ok(())
}

/// `ssl-protocols` and `ssl-ciphers` (the controller ConfigMap's): the versions and TLS 1.2
/// suites clients can get, changed by a new snapshot for the next handshake, for hosts that
/// ask for client certificates too; back to every version when the keys go.
#[tokio::test]
async fn l7_ssl_protocols_and_ciphers_narrow_what_clients_get() -> anyhow::Result<()> {
    use ingress::snapshot::{ServerTls, TlsVersions, VerifyClient};
    use rustls::{CipherSuite as C, ProtocolVersion as V};

    let ca = TestCa::new()?;
    let client_ca = TestCa::new()?;
    let up = TestServer::echo("v").await?;
    let t = target("v", upstream("v", &[up.addr]));
    let mut hosts = vec![
        vhost("v.test", vec![prefix("/", &t)]),
        vhost("m.test", vec![prefix("/", &t)]),
    ];
    hosts[1].client_auth = Some(Arc::new(client_auth(&client_ca, VerifyClient::Optional)?));
    hosts.iter_mut().for_each(|h| h.tls = true);
    let base = with_cert(
        snapshot(hosts),
        &["v.test", "m.test"],
        ca.issue(&["v.test", "m.test"])?,
    );
    let with_tls = |tls: ServerTls| {
        let mut s = base.clone();
        s.generation += 1_000
            + u64::from(tls.http1_only) * 100
            + u64::from(tls.versions.tls12) * 10
            + u64::from(tls.versions.tls13);
        s.global.server_tls = tls;
        s
    };
    let client = |version: &'static rustls::SupportedProtocolVersion| -> anyhow::Result<_> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der())?;
        let c = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(c))
    };
    let (tls12, tls13) = (
        client(&rustls::version::TLS12)?,
        client(&rustls::version::TLS13)?,
    );
    // What a handshake with `sni` got: its version and suite, or `None` when refused.
    let got = |addr, sni: &'static str, c: Arc<rustls::ClientConfig>| async move {
        let s = tls_connect(addr, sni, c).await.ok()?;
        let conn = s.get_ref().1;
        Some((
            conn.protocol_version()?,
            conn.negotiated_cipher_suite()?.suite(),
        ))
    };

    let l7 = L7::start(with_tls(ServerTls {
        versions: TlsVersions {
            tls12: false,
            tls13: true,
        },
        tls12_suites: None,
        ..Default::default()
    }))
    .await?;
    for sni in ["v.test", "m.test"] {
        assert_eq!(got(l7.https, sni, tls12.clone()).await, None, "{sni}");
        let (v, _) = got(l7.https, sni, tls13.clone())
            .await
            .unwrap_or_else(|| panic!("{sni}: TLS 1.3 refused"));
        assert_eq!(v, V::TLSv1_3);
    }
    // Served over the narrowed config: requests still go through.
    let s = tls_connect(l7.https, "v.test", tls13.clone()).await?;
    let (r, _) = h1_over(
        s,
        build(http::Method::GET, "v.test", "/", Default::default()),
    )
    .await?;
    assert_eq!(r.status, 200);

    // TLS 1.2 only, with one suite.
    l7.apply(with_tls(ServerTls {
        versions: TlsVersions {
            tls12: true,
            tls13: false,
        },
        tls12_suites: Some(vec![C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]),
        ..Default::default()
    }));
    for sni in ["v.test", "m.test"] {
        assert_eq!(got(l7.https, sni, tls13.clone()).await, None, "{sni}");
        assert_eq!(
            got(l7.https, sni, tls12.clone()).await,
            Some((V::TLSv1_2, C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)),
            "{sni}"
        );
    }

    // `use-http2: "false"`: HTTP/1.1 is what a client offering both gets, on both hosts.
    let alpn = |protocols: &[&[u8]]| -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut c = (*client(&rustls::version::TLS13)?).clone();
        c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(c))
    };
    let h2_or_h1 = alpn(&[b"h2", b"http/1.1"])?;
    let negotiated = |c: Arc<rustls::ClientConfig>, sni: &'static str| async move {
        let s = tls_connect(l7.https, sni, c).await?;
        anyhow::Ok(s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    };
    l7.apply(with_tls(ServerTls {
        http1_only: true,
        ..Default::default()
    }));
    for sni in ["v.test", "m.test"] {
        let got = negotiated(h2_or_h1.clone(), sni).await?;
        assert_eq!(got.as_deref(), Some(&b"http/1.1"[..]), "{sni}");
    }
    let s = tls_connect(l7.https, "v.test", h2_or_h1.clone()).await?;
    let (r, _) = h1_over(
        s,
        build(http::Method::GET, "v.test", "/", Default::default()),
    )
    .await?;
    assert_eq!(r.status, 200);

    // The keys removed: both versions, and TLS 1.2's preferred suite again.
    l7.apply(with_tls(ServerTls::default()));
    assert_eq!(
        negotiated(h2_or_h1.clone(), "v.test").await?.as_deref(),
        Some(&b"h2"[..]),
        "HTTP/2 offered again"
    );
    for sni in ["v.test", "m.test"] {
        assert_eq!(
            got(l7.https, sni, tls12.clone()).await,
            Some((V::TLSv1_2, C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)),
            "{sni}"
        );
        assert!(got(l7.https, sni, tls13.clone()).await.is_some(), "{sni}");
    }
    Ok(())
}

#[tokio::test]
async fn l7_ssl_reject_handshake_refuses_names_no_host_serves() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let cert = ca.issue(&["a.example.com"])?;
    let up = TestServer::echo("tls").await?;
    let t = target("tls", upstream("tls", &[up.addr]));
    let mut secure = vhost("a.example.com", vec![prefix("/", &t)]);
    secure.tls = true;
    let mut www = vhost("www.example.org", vec![prefix("/", &t)]);
    www.www_redirect = true;
    let hosts = vec![
        secure,
        vhost("plain.example.com", vec![prefix("/", &t)]),
        vhost("*.wild.example.com", vec![prefix("/", &t)]),
        www,
        // A catch-all rule is ingress-nginx's default server: it does not make names known.
        vhost("", vec![prefix("/", &t)]),
    ];
    let mut snap = with_cert(snapshot(hosts), &["a.example.com"], cert.clone());
    let l7 = L7::start(snap.clone()).await?;
    let insecure = insecure_client_config(&[b"http/1.1"])?;
    // Off (the default): every name gets a certificate.
    for sni in ["unknown.org", ""] {
        assert!(
            tls_connect(l7.https, sni, insecure.clone()).await.is_ok(),
            "{sni:?}"
        );
    }

    snap.global.ssl_reject_handshake = true;
    snap.generation += 1;
    l7.apply(snap.clone());
    let verified = ca.client_config(&[b"http/1.1"])?;
    let s = tls_connect(l7.https, "a.example.com", verified).await?;
    assert_eq!(peer_leaf(&s).as_ref(), cert.cert.first());
    let (r, _) = h1_over(
        s,
        build(http::Method::GET, "a.example.com", "/", Default::default()),
    )
    .await?;
    assert_eq!(r.status, 200);
    // Hosts without a certificate of their own still get the default one.
    for sni in ["plain.example.com", "x.wild.example.com", "example.org"] {
        let s = tls_connect(l7.https, sni, insecure.clone()).await?;
        assert_ne!(peer_leaf(&s).as_ref(), cert.cert.first(), "{sni}");
    }
    for sni in [
        "unknown.org",
        "",
        "a.b.wild.example.com",
        "wild.example.com",
    ] {
        let err = tls_connect(l7.https, sni, insecure.clone())
            .await
            .expect_err(sni);
        assert!(
            format!("{err:#}").contains("alert"),
            "{sni:?}: refused with an alert, not a timeout: {err:#}"
        );
    }
    let before = up.hits();
    // Refused handshakes left the proxy serving.
    let s = tls_connect(l7.https, "plain.example.com", insecure.clone()).await?;
    let (r, _) = h1_over(
        s,
        build(
            http::Method::GET,
            "plain.example.com",
            "/",
            Default::default(),
        ),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), before + 1);

    // Off again: the default certificate is back without a restart.
    snap.global.ssl_reject_handshake = false;
    snap.generation += 1;
    l7.apply(snap);
    assert!(tls_connect(l7.https, "unknown.org", insecure).await.is_ok());
    Ok(())
}

/// A proxy serving `a.example.com` over TLS, with a certificate of `ca`, from `up`; and its
/// snapshot, to change.
async fn one_tls_host(
    ca: &TestCa,
    up: &TestServer,
) -> anyhow::Result<(L7, ingress::snapshot::Snapshot)> {
    let cert = ca.issue(&["a.example.com"])?;
    let t = target("tls", upstream("tls", &[up.addr]));
    let mut host = vhost("a.example.com", vec![prefix("/", &t)]);
    host.tls = true;
    let snap = with_cert(snapshot(vec![host]), &["a.example.com"], cert);
    Ok((L7::start(snap.clone()).await?, snap))
}

/// Whether a second handshake with `config` (after a first one that got its session ticket)
/// resumes; `pause` is waited between the two.
async fn resumes(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    pause: std::time::Duration,
) -> anyhow::Result<bool> {
    let mut kinds = Vec::new();
    for i in 0..2 {
        if i == 1 {
            tokio::time::sleep(pause).await;
        }
        let s = tls_connect(addr, "a.example.com", config.clone()).await?;
        kinds.push(s.get_ref().1.handshake_kind());
        // The answer is read after the server's tickets, so the client has stored them.
        let (r, _) = h1_over(
            s,
            build(http::Method::GET, "a.example.com", "/", Default::default()),
        )
        .await?;
        anyhow::ensure!(r.status == 200, "status {}", r.status);
    }
    anyhow::ensure!(kinds[0] == Some(rustls::HandshakeKind::Full), "{kinds:?}");
    Ok(kinds[1] == Some(rustls::HandshakeKind::Resumed))
}

#[tokio::test]
async fn l7_ssl_session_keys_set_how_sessions_resume() -> anyhow::Result<()> {
    use ingress::snapshot::TlsSessions;
    use std::time::Duration;
    let ca = TestCa::new()?;
    let up = TestServer::echo("tls").await?;
    let (l7, mut snap) = one_tls_host(&ca, &up).await?;
    let tls12 = || -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der())?;
        let c = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(c))
    };
    let tls13 = || ca.client_config(&[b"http/1.1"]);
    let now = Duration::ZERO;
    // Defaults: tickets and the cache.
    assert!(resumes(l7.https, tls13()?, now).await?, "TLS 1.3, default");
    assert!(resumes(l7.https, tls12()?, now).await?, "TLS 1.2, default");

    let mut apply = |sessions: TlsSessions| {
        snap.generation += 1;
        snap.global.server_tls.sessions = sessions;
        l7.apply(snap.clone());
    };
    // No tickets: resumed from the proxy's cache (TLS 1.3 tickets then name cached sessions;
    // TLS 1.2 resumes by session id).
    apply(TlsSessions {
        tickets: false,
        ..TlsSessions::default()
    });
    assert!(
        resumes(l7.https, tls13()?, now).await?,
        "TLS 1.3 from the cache"
    );
    assert!(
        resumes(l7.https, tls12()?, now).await?,
        "TLS 1.2 from the cache"
    );
    // Neither: every handshake is full.
    apply(TlsSessions {
        tickets: false,
        cache: false,
        ..TlsSessions::default()
    });
    assert!(
        !resumes(l7.https, tls13()?, now).await?,
        "TLS 1.3, nothing kept"
    );
    assert!(
        !resumes(l7.https, tls12()?, now).await?,
        "TLS 1.2, nothing kept"
    );
    // A timeout: resumed within it, not after.
    apply(TlsSessions {
        timeout: Some(Duration::from_secs(1)),
        ..TlsSessions::default()
    });
    assert!(
        resumes(l7.https, tls13()?, now).await?,
        "within the timeout"
    );
    let later = Duration::from_millis(2_100);
    assert!(
        !resumes(l7.https, tls13()?, later).await?,
        "TLS 1.3 ticket past it"
    );
    apply(TlsSessions {
        tickets: false,
        timeout: Some(Duration::from_secs(1)),
        ..TlsSessions::default()
    });
    assert!(
        !resumes(l7.https, tls12()?, later).await?,
        "cached session past it"
    );
    assert!(
        resumes(l7.https, tls12()?, now).await?,
        "cached session within it"
    );
    Ok(())
}

#[tokio::test]
async fn l7_ssl_ecdh_curve_sets_the_key_exchange_groups() -> anyhow::Result<()> {
    use rustls::{crypto::aws_lc_rs::kx_group, NamedGroup};
    let ca = TestCa::new()?;
    let up = TestServer::echo("tls").await?;
    let (l7, mut snap) = one_tls_host(&ca, &up).await?;
    // A client offering only `groups`, in that order.
    let client = |groups: &[&'static dyn rustls::crypto::SupportedKxGroup]| {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        p.kx_groups = groups.to_vec();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der())?;
        let c = rustls::ClientConfig::builder_with_provider(Arc::new(p))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        anyhow::Ok(Arc::new(c))
    };
    let group = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name())
    };
    let s = tls_connect(l7.https, "a.example.com", client(&[kx_group::X25519])?).await?;
    assert_eq!(
        group(&s),
        Some(NamedGroup::X25519),
        "rustls's groups by default"
    );

    snap.generation += 1;
    snap.global.server_tls.kx_groups = Some(vec![NamedGroup::secp384r1, NamedGroup::secp256r1]);
    l7.apply(snap);
    assert!(
        tls_connect(l7.https, "a.example.com", client(&[kx_group::X25519])?)
            .await
            .is_err(),
        "X25519 is no longer offered"
    );
    // The client's first key share is X25519: the server asks again for one it offers.
    let fallback = client(&[kx_group::X25519, kx_group::SECP384R1])?;
    let s = tls_connect(l7.https, "a.example.com", fallback).await?;
    assert_eq!(group(&s), Some(NamedGroup::secp384r1));
    let (r, _) = h1_over(
        s,
        build(http::Method::GET, "a.example.com", "/", Default::default()),
    )
    .await?;
    assert_eq!(r.status, 200);
    Ok(())
}

/// `auth-tls-verify-client: off` on a host with a client CA: the upstream gets
/// `ssl-client-verify: NONE` in place of whatever `ssl-client-*` headers the client forged, as
/// ingress-nginx sets them.
#[tokio::test]
async fn l7_client_certificates_off_still_replaces_forged_headers() -> anyhow::Result<()> {
    let up = TestServer::echo("off").await?;
    let mut policy = test_policy();
    policy.client_cert_off = true;
    let off = target_with("off", upstream("off", &[up.addr]), policy);
    let open = target("open", upstream("off", &[up.addr]));
    let l7 = L7::start(snapshot(vec![
        vhost("off.test", vec![prefix("/", &off)]),
        vhost("open.test", vec![prefix("/", &open)]),
    ]))
    .await?;
    let forged = |host: &str| {
        let mut req = build(http::Method::GET, host, "/", Default::default());
        for (name, value) in [
            ("ssl-client-verify", "SUCCESS"),
            ("ssl-client-subject-dn", "CN=admin"),
            ("ssl-client-cert", "forged"),
        ] {
            req.headers_mut()
                .insert(name, http::HeaderValue::from_static(value));
        }
        req
    };
    let r = send(l7.http, forged("off.test")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("ssl-client-verify").as_deref(), Some("NONE"));
    assert_eq!(r.seen_header("ssl-client-subject-dn"), None);
    assert_eq!(r.seen_header("ssl-client-cert"), None);
    // A host without a client CA passes them on, as nginx does.
    let r = send(l7.http, forged("open.test")).await?;
    assert_eq!(
        r.seen_header("ssl-client-verify").as_deref(),
        Some("SUCCESS")
    );
    Ok(())
}

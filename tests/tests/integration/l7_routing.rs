//! L7 routing end to end: host and path precedence, fallbacks, the default backend, 404, and
//! the 502/503/504 answers.
use std::{sync::Arc, time::Duration};

use tests::{l7::*, upstream::*};

/// A catch-all Ingress (`spec.defaultBackend` without rules) answers unknown hosts and the
/// stray paths of host-less rules, never a named host's: those get the default Service
/// (`--default-backend-service`), else the proxy's 404, as in ingress-nginx. One tenant's
/// catch-all must not receive another tenant's requests, cookies and all.
#[tokio::test]
async fn l7_a_catch_all_ingress_never_takes_a_named_hosts_paths() -> anyhow::Result<()> {
    let names = ["app", "any", "catch-all", "service"];
    let mut servers = Vec::new();
    for n in names {
        servers.push(TestServer::echo(n).await?);
    }
    let t = |i: usize| target(names[i], upstream(names[i], &[servers[i].addr]));
    let (app, any, catch_all, service) = (t(0), t(1), t(2), t(3));
    let mut snap = snapshot(vec![
        vhost("named.test", vec![prefix("/api", &app)]),
        vhost("", vec![prefix("/any", &any)]),
    ]);
    snap.http.default_backend = Some(catch_all.clone());
    let l7 = L7::start(snap.clone()).await?;
    let who = |host: &'static str, path: &'static str| {
        let l7 = &l7;
        async move {
            let r = get(l7.http, host, path).await.expect("request");
            (r.status.as_u16(), r.upstream().map(str::to_string))
        }
    };
    assert_eq!(who("named.test", "/api/x").await, (200, Some("app".into())));
    assert_eq!(who("named.test", "/other").await, (404, None));
    assert_eq!(
        who("unknown.test", "/other").await,
        (200, Some("catch-all".into()))
    );
    assert_eq!(who("unknown.test", "/any").await, (200, Some("any".into())));

    // With the default Service too: named hosts' stray paths go there; unknown hosts still to
    // the catch-all Ingress.
    snap.http.service_default = Some(service);
    snap.generation += 1;
    l7.apply(snap);
    assert_eq!(
        who("named.test", "/other").await,
        (200, Some("service".into()))
    );
    assert_eq!(
        who("unknown.test", "/other").await,
        (200, Some("catch-all".into()))
    );
    Ok(())
}

#[tokio::test]
async fn l7_routing_precedence_table() -> anyhow::Result<()> {
    let names = ["a", "b", "c", "d", "e", "f", "dflt"];
    let mut servers = Vec::new();
    for n in names {
        servers.push(TestServer::echo(n).await?);
    }
    let t = |i: usize| target(names[i], upstream(names[i], &[servers[i].addr]));
    let (a, b, c, d, e, f, dflt) = (t(0), t(1), t(2), t(3), t(4), t(5), t(6));
    let mut foo = vhost(
        "foo.example.com",
        vec![
            exact("/exact", &a),
            prefix("/app/v2", &b),
            prefix("/app", &c),
            regex("/re[0-9]+", &d),
        ],
    );
    foo.fallback = Some(e.clone());
    let mut snap = snapshot(vec![
        foo,
        vhost("*.example.com", vec![prefix("/", &f)]),
        vhost("", vec![prefix("/any", &a)]),
    ]);
    set_default_service(&mut snap, Some(dflt.clone()));
    let l7 = L7::start(snap.clone()).await?;

    let table: &[(&str, &str, &str)] = &[
        ("foo.example.com", "/exact", "a"),
        ("foo.example.com", "/exact/", "e"),
        ("foo.example.com", "/app/v2/x", "b"),
        ("foo.example.com", "/app/v2", "b"),
        ("foo.example.com", "/app/v20", "c"),
        ("foo.example.com", "/app", "c"),
        ("foo.example.com", "/app/", "c"),
        ("foo.example.com", "/apple", "e"),
        ("foo.example.com", "/RE123/x", "d"),
        ("FOO.Example.COM:8080", "/app?q=1", "c"),
        ("bar.example.com", "/anything", "f"),
        ("a.b.example.com", "/any/x", "a"),
        ("a.b.example.com", "/nothing", "dflt"),
        ("example.com", "/zzz", "dflt"),
        ("other.org", "/any", "a"),
    ];
    for (host, path, want) in table {
        let r = get(l7.http, host, path).await?;
        assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
        assert_eq!(r.upstream(), Some(*want), "{host}{path}");
    }
    // The query string and the original path reach the upstream unchanged.
    let r = get(l7.http, "foo.example.com", "/app/x?y=1&z=%20").await?;
    assert_eq!(r.json()["uri"], "/app/x?y=1&z=%20");

    // ingress-nginx's request series count each path rule on its host, as its location: the
    // host's fallback at `/`, a wildcard under its pattern, a rule without host under no host.
    // The default backend's requests are left out, as ingress-nginx leaves out undefined hosts.
    let mut metrics = String::new();
    l7.proxy.metrics().render(&mut metrics);
    let series = |ingress: &str, host: &str, path: &str| {
        format!(
            "nginx_ingress_controller_requests{{namespace=\"default\",ingress=\"{ingress}\",\
             service=\"{ingress}\",host=\"{host}\",path=\"{path}\",method=\"GET\",status=\"200\"}}"
        )
    };
    for (ingress, host, path, n) in [
        ("a", "foo.example.com", "/exact", 1),
        ("e", "foo.example.com", "/", 2),
        ("b", "foo.example.com", "/app/v2", 2),
        ("c", "foo.example.com", "/app", 5),
        ("d", "foo.example.com", "/re[0-9]+", 1),
        ("f", "*.example.com", "/", 1),
        ("a", "", "/any", 2),
    ] {
        let want = format!("{} {n}\n", series(ingress, host, path));
        assert!(metrics.contains(&want), "missing {want:?} in\n{metrics}");
    }
    // (The catch-all Ingress still has its `orphan_ingress` series: it is an Ingress.)
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("nginx_ingress_controller_")
                && l.contains("ingress=\"dflt\"")
                && !l.starts_with("nginx_ingress_controller_orphan_ingress")),
        "{metrics}"
    );

    // Without a default backend, an unmatched request is 404 from the proxy.
    set_default_service(&mut snap, None);
    snap.generation += 100;
    l7.apply(snap);
    let r = get(l7.http, "a.b.example.com", "/nothing").await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 Not Found\n");
    assert_eq!(r.upstream(), None);
    // Target `a` serves two rules: after the recompile each still counts in its own series.
    assert_eq!(
        get(l7.http, "other.org", "/any").await?.upstream(),
        Some("a")
    );
    let mut metrics = String::new();
    l7.proxy.metrics().render(&mut metrics);
    for (host, path, n) in [("", "/any", 3), ("foo.example.com", "/exact", 1)] {
        let want = format!("{} {n}\n", series("a", host, path));
        assert!(metrics.contains(&want), "missing {want:?} in\n{metrics}");
    }
    // Now the rule without host has `a` alone: its requests still count as its own.
    l7.apply(snapshot(vec![vhost("", vec![prefix("/any", &a)])]));
    assert_eq!(
        get(l7.http, "other.org", "/any").await?.upstream(),
        Some("a")
    );
    let mut metrics = String::new();
    l7.proxy.metrics().render(&mut metrics);
    let want = format!("{} 4\n", series("a", "", "/any"));
    assert!(metrics.contains(&want), "missing {want:?} in\n{metrics}");

    // A location's series are made on its first request, not by the apply; an edit of its
    // Ingress (a new target) keeps its counts; deleting the Ingress drops them. A path no
    // rule of the host takes counts at the host's `/`, under its Ingress with no Service,
    // whether the default backend or the proxy's 404 answers (ingress-nginx's location `/`).
    // The request series only: every Ingress of the configuration in use has its
    // `orphan_ingress` series from the apply on.
    let rendered = || {
        let mut out = String::new();
        l7.proxy.metrics().render(&mut out);
        let requests = out
            .lines()
            .filter(|l| !l.starts_with("nginx_ingress_controller_orphan_ingress"));
        requests.map(|l| format!("{l}\n")).collect::<String>()
    };
    let g = |n: usize| {
        let g = target("g", upstream("g", &[servers[n].addr]));
        let mut snap = snapshot(vec![
            vhost("", vec![prefix("/any", &a)]),
            vhost("g.test", vec![prefix("/app", &g)]),
        ]);
        set_default_service(&mut snap, (n == 1).then(|| dflt.clone()));
        snap
    };
    l7.apply(g(0));
    assert!(!rendered().contains("ingress=\"g\""), "{}", rendered());
    assert_eq!(
        get(l7.http, "g.test", "/app/x").await?.upstream(),
        Some("a")
    );
    assert_eq!(get(l7.http, "g.test", "/other").await?.status, 404);
    l7.apply(g(1));
    assert_eq!(
        get(l7.http, "g.test", "/app/x").await?.upstream(),
        Some("b")
    );
    assert_eq!(
        get(l7.http, "g.test", "/other").await?.upstream(),
        Some("dflt")
    );
    let unmatched = "nginx_ingress_controller_requests{namespace=\"default\",ingress=\"g\",\
                     service=\"\",host=\"g.test\",path=\"/\",method=\"GET\"";
    for want in [
        format!("{} 2\n", series("g", "g.test", "/app")),
        format!("{unmatched},status=\"404\"}} 1\n"),
        format!("{unmatched},status=\"200\"}} 1\n"),
    ] {
        assert!(
            rendered().contains(&want),
            "missing {want:?} in\n{}",
            rendered()
        );
    }
    l7.apply(snapshot(vec![vhost("", vec![prefix("/any", &a)])]));
    // They go once the old table is freed, off the apply path.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rendered().contains("ingress=\"g\"") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = rendered();
    assert!(!metrics.contains("ingress=\"g\""), "{metrics}");
    assert!(metrics.contains(&series("a", "", "/any")), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn l7_errors_502_503_504_and_connect_timeout() -> anyhow::Result<()> {
    let slow = TestServer::echo("slow").await?;
    let refused = refused_addr().await?;
    let blackhole = Blackhole::new()?;
    let mut quick = test_policy();
    quick.timeouts.read = Duration::from_millis(300);
    quick.timeouts.connect = Duration::from_millis(300);
    let snap = snapshot(vec![vhost(
        "e.test",
        vec![
            prefix("/none", &target("none", upstream("none", &[]))),
            prefix(
                "/refused",
                &target("refused", upstream("refused", &[refused])),
            ),
            prefix(
                "/slow",
                &target_with("slow", upstream("slow", &[slow.addr]), quick.clone()),
            ),
            prefix(
                "/hole",
                &target_with("hole", upstream("hole", &[blackhole.addr]), quick),
            ),
        ],
    )]);
    let l7 = L7::start(snap).await?;

    let r = get(l7.http, "e.test", "/none").await?;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (503, "503 Service Temporarily Unavailable\n")
    );
    let r = get(l7.http, "e.test", "/refused").await?;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (502, "502 Bad Gateway\n")
    );

    // The lone endpoint gets the three tries of `error timeout`, each cut at the read
    // timeout, as ingress-nginx's balancer retries one replica.
    let started = std::time::Instant::now();
    let r = get(l7.http, "e.test", "/slow/delay/2000").await?;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (504, "504 Gateway Timeout\n")
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(1800)).contains(&started.elapsed()),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.hits(), 3);
    // Within the read timeout it is served.
    let r = get(l7.http, "e.test", "/slow/delay/50").await?;
    assert_eq!(r.status, 200);

    let started = std::time::Instant::now();
    let r = get(l7.http, "e.test", "/hole").await?;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    let m = l7.proxy.metrics();
    use ingress::proxy::metrics::UpstreamErrorKind as K;
    assert!(m.upstream_errors(K::ConnectRefused) >= 1);
    assert!(m.upstream_errors(K::Timeout) >= 1);
    assert!(m.upstream_errors(K::ConnectTimeout) >= 1);
    Ok(())
}

#[tokio::test]
async fn l7_forwarded_and_hop_by_hop_headers() -> anyhow::Result<()> {
    let up = TestServer::echo("h").await?;
    let l7 = L7::start(snapshot(vec![vhost(
        "h.test",
        vec![prefix("/", &target("h", upstream("h", &[up.addr])))],
    )]))
    .await?;
    let req = http::Request::builder()
        .uri("/p")
        .header("host", "h.test:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .header("te", "trailers, deflate")
        .header("expect", "100-continue")
        .header("upgrade", "h2c")
        .header("x-kept", "yes")
        .header("proxy", "http://attacker.example:8080")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let r = send(l7.http, req).await?;
    assert_eq!(r.status, 200);
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(h["host"], "h.test:8080", "Host is preserved");
    // Replaced, not appended: the client cannot plant an address (ingress-nginx default).
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-scheme"], "http");
    assert_eq!(h["x-scheme"], "http");
    assert_eq!(h["x-original-forwarded-for"], "203.0.113.9");
    assert_eq!(h["x-forwarded-host"], "h.test:8080");
    assert_eq!(h["x-forwarded-port"], l7.http.port().to_string());
    assert_eq!(h["x-kept"], "yes");
    // `Proxy` too (httpoxy: a CGI upstream would read it as HTTP_PROXY).
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "upgrade",
        "proxy",
        // nginx clears both towards HTTP/1.1 upstreams.
        "te",
        "expect",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }
    let id = h["x-request-id"].as_str().unwrap_or("");
    assert_eq!(id.len(), 32, "generated request id: {id:?}");

    // A client-supplied request id is kept.
    let req = http::Request::builder()
        .uri("/")
        .header("host", "h.test")
        .header("x-request-id", "abc-123")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let r = send(l7.http, req).await?;
    assert_eq!(r.seen_header("x-request-id").as_deref(), Some("abc-123"));
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );

    // Behind a trusted proxy (`--compute-full-forwarded-for`) the chain is kept.
    let mut snap = snapshot(vec![vhost(
        "h.test",
        vec![prefix("/", &target("h", upstream("h", &[up.addr])))],
    )]);
    snap.global.real_ip.compute_full_forwarded_for = true;
    let chain = L7::start(snap).await?;
    let req = http::Request::builder()
        .uri("/")
        .header("host", "h.test")
        .header("x-forwarded-for", "203.0.113.9")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let r = send(chain.http, req).await?;
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    let _ = Arc::new(());
    Ok(())
}

/// Routes match the path as nginx does (decoded, dot-segments resolved, slashes merged), so
/// an encoded or dotted path cannot slip past a more specific rule; the upstream still gets
/// the path as sent. Invalid paths and Host headers are 400 and never forwarded.
#[tokio::test]
async fn l7_paths_match_normalized_and_hosts_are_validated() -> anyhow::Result<()> {
    let (lax, strict, api) = (
        TestServer::echo("lax").await?,
        TestServer::echo("strict").await?,
        TestServer::echo("api").await?,
    );
    let lax_t = target("lax", upstream("lax", &[lax.addr]));
    let strict_t = target("strict", upstream("strict", &[strict.addr]));
    let mut rewrite = test_policy();
    rewrite.rewrite_target = Some("/v1".into());
    let api_t = target_with("api", upstream("api", &[api.addr]), rewrite);
    let l7 = L7::start(snapshot(vec![vhost(
        "r.test",
        vec![
            exact("/admin", &strict_t),
            prefix("/bar", &strict_t),
            prefix("/api", &api_t),
            prefix("/", &lax_t),
        ],
    )]))
    .await?;
    let request = |target: &str, host: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };

    for path in [
        "/admin",
        "/%61dmin",
        "/x/../admin",
        "//admin",
        "/./admin",
        "/bar/../admin",
    ] {
        let out = raw(l7.http, request(path, "r.test").as_bytes()).await?;
        assert_eq!(raw_status(&out), Some(200), "{path}: {out}");
        assert!(
            out.contains("\"server\":\"strict\""),
            "{path} routed by its normalized form: {out}"
        );
        assert!(
            out.contains(&format!("\"uri\":\"{path}\"")),
            "{path} sent as is: {out}"
        );
    }
    let out = raw(l7.http, request("/%62ar/x", "r.test").as_bytes()).await?;
    assert!(out.contains("\"server\":\"strict\""), "{out}");
    // A rewrite works on the normalized path, re-encoded.
    let out = raw(
        l7.http,
        request("/api/a/../x%3Fy%20z?q=1", "r.test").as_bytes(),
    )
    .await?;
    assert!(out.contains("\"uri\":\"/v1/x%3Fy%20z?q=1\""), "{out}");
    // The absolute form's authority routes and is the Host the upstream sees.
    let out = raw(
        l7.http,
        request("http://r.test/admin", "other.test").as_bytes(),
    )
    .await?;
    assert!(out.contains("\"server\":\"strict\""), "{out}");
    assert!(out.contains("\"host\":\"r.test\""), "{out}");

    let before = lax.hits() + strict.hits() + api.hits();
    let bad: &[&[u8]] = &[
        b"GET /../admin HTTP/1.1\r\nHost: r.test\r\n\r\n",
        b"GET /%2e%2e/admin HTTP/1.1\r\nHost: r.test\r\n\r\n",
        b"GET /a%zz HTTP/1.1\r\nHost: r.test\r\n\r\n",
        b"GET /a%00b HTTP/1.1\r\nHost: r.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: r.test\r\nHost: x.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@r.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: r.test/evil\r\n\r\n",
    ];
    for req in bad {
        let out = raw(l7.http, req).await?;
        assert_eq!(
            raw_status(&out),
            Some(400),
            "{}: {out}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(
        lax.hits() + strict.hits() + api.hits(),
        before,
        "nothing bad forwarded"
    );
    // HTTP/1.0 may omit Host: routed (here to no host rule: 404), not refused.
    let out = raw(l7.http, b"GET / HTTP/1.0\r\n\r\n").await?;
    assert_eq!(raw_status(&out), Some(404), "{out}");
    Ok(())
}

/// An HTTP/1.0 request without Host reaches a rule without a host, and the upstream (spoken
/// to in HTTP/1.1, which requires Host) gets the endpoint's address as Host.
#[tokio::test]
async fn l7_http10_without_host_gets_a_host_upstream() -> anyhow::Result<()> {
    let up = TestServer::echo("any").await?;
    let t = target("any", upstream("any", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("", vec![prefix("/", &t)])])).await?;
    let out = raw(l7.http, b"GET /x HTTP/1.0\r\n\r\n").await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert!(out.contains(&format!("\"host\":\"{}\"", up.addr)), "{out}");
    Ok(())
}

/// `server-alias` and `from-to-www-redirect`: more names for a host, and the `www` twin
/// redirected to it; a host of their own always wins over both.
#[tokio::test]
async fn l7_server_aliases_and_www_redirects() -> anyhow::Result<()> {
    use ingress::snapshot::HostMatch;
    use tests::certs::TestCa;

    let main = TestServer::echo("main").await?;
    let other = TestServer::echo("other").await?;
    let t_main = target("main", upstream("main", &[main.addr]));
    let t_other = target("other", upstream("other", &[other.addr]));
    let mut a = vhost("a.test", vec![prefix("/", &t_main)]);
    a.aliases = vec![
        HostMatch::Exact("alias.test".into()),
        HostMatch::Wildcard("wild-alias.test".into()),
        HostMatch::Exact("taken.test".into()),
    ];
    // No `tls` flag: plain HTTP is served, not sent to HTTPS (ssl-redirect).
    let mut bare = vhost("example.test", vec![prefix("/", &t_main)]);
    bare.www_redirect = true;
    let mut www = vhost("www.shop.test", vec![prefix("/", &t_main)]);
    www.www_redirect = true;
    let mut both = vhost("both.test", vec![prefix("/", &t_main)]);
    both.www_redirect = true;
    let hosts = vec![
        a,
        bare,
        www,
        both,
        vhost("www.both.test", vec![prefix("/", &t_other)]),
        vhost("taken.test", vec![prefix("/", &t_other)]),
    ];
    let ca = TestCa::new()?;
    // The certificate is declared for the hosts only; SNI for an alias or the `www` twin
    // gets it too (as the nginx server block holding those names would serve it).
    let snap = with_cert(
        with_cert(
            snapshot(hosts),
            &["a.test"],
            ca.issue(&["a.test", "alias.test", "x.wild-alias.test"])?,
        ),
        &["example.test"],
        ca.issue(&["example.test", "www.example.test"])?,
    );
    let l7 = L7::start(snap).await?;

    for (host, expected) in [
        ("a.test", "main"),
        ("alias.test", "main"),
        ("Alias.TEST", "main"),
        ("x.wild-alias.test", "main"),
        // A host of its own wins over an alias and over a redirect.
        ("taken.test", "other"),
        ("www.both.test", "other"),
        ("both.test", "main"),
    ] {
        let r = get(l7.http, host, "/p").await?;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.upstream(), Some(expected), "{host}");
    }
    for (host, path, location) in [
        (
            "www.example.test",
            "/docs/?q=1",
            "http://example.test/docs/?q=1",
        ),
        ("www.example.test", "/docs/", "http://example.test/docs"),
        ("www.example.test", "/", "http://example.test"),
        ("shop.test", "/cart", "http://www.shop.test/cart"),
    ] {
        let r = get(l7.http, host, path).await?;
        assert_eq!(r.status, 308, "{host}{path}");
        assert_eq!(r.header("location"), Some(location), "{host}{path}");
    }
    assert_eq!(main.hits() + other.hits(), 7, "redirects reach no upstream");
    // Unknown names stay unknown.
    assert_eq!(get(l7.http, "www.a.test", "/").await?.status, 404);

    let verified = ca.client_config(&[b"http/1.1"])?;
    let s = tls_connect(l7.https, "alias.test", verified.clone()).await?;
    let (r, _) = h1_over(
        s,
        build(http::Method::GET, "alias.test", "/", Default::default()),
    )
    .await?;
    assert_eq!(r.upstream(), Some("main"));
    let s = tls_connect(l7.https, "www.example.test", verified).await?;
    let (r, _) = h1_over(
        s,
        build(
            http::Method::GET,
            "www.example.test",
            "/x",
            Default::default(),
        ),
    )
    .await?;
    assert_eq!(r.status, 308);
    let port = l7.https.port();
    assert_eq!(
        r.header("location"),
        Some(format!("https://example.test:{port}/x").as_str())
    );
    Ok(())
}

/// `proxy-set-headers` and `add-headers` (header ConfigMaps the controller ConfigMap names):
/// set on every request to an upstream and on every answer, the proxy's own 404 included;
/// an empty value removes the header; a new snapshot changes them for the next request on a
/// connection already open. `hide-headers` drops upstream headers before `add-headers`.
#[tokio::test]
async fn l7_global_header_sets_reach_upstreams_and_clients() -> anyhow::Result<()> {
    let up = TestServer::echo("hs").await?;
    let t = target("hs", upstream("hs", &[up.addr]));
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    let mut snap = snapshot(vec![vhost("h.test", vec![prefix("/", &t)])]);
    snap.global.proxy_set_headers = vec![
        pair("x-env", "prod"),
        pair("x-forwarded-port", ""),
        pair("user-agent", "ingressd-test"),
    ];
    snap.global.add_headers = vec![pair("x-frame-options", "DENY"), pair("x-upstream", "")];
    let l7 = L7::start(snap.clone()).await?;

    let mut conn = H1::connect(l7.http).await?;
    let req = || build(http::Method::GET, "h.test", "/", bytes::Bytes::new());
    let r = conn.send(req()).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen_header("x-env").as_deref(), Some("prod"));
    assert_eq!(
        r.seen_header("user-agent").as_deref(),
        Some("ingressd-test")
    );
    assert_eq!(r.seen_header("x-forwarded-port"), None, "removed");
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "the proxy's own headers stay"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.upstream(), None, "the upstream's header removed");
    let r = get(l7.http, "nowhere.test", "/").await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));

    // The ConfigMaps edited: the open connection's next request sees the new sets.
    snap.generation += 1_000;
    snap.global.proxy_set_headers = vec![pair("x-env", "staging")];
    snap.global.add_headers = Vec::new();
    l7.apply(snap.clone());
    let r = conn.send(req()).await?;
    assert_eq!(r.seen_header("x-env").as_deref(), Some("staging"));
    assert!(r.seen_header("x-forwarded-port").is_some());
    assert_eq!(r.header("x-frame-options"), None);
    assert_eq!(r.upstream(), Some("hs"));

    // `hide-headers`: the upstream's headers are dropped; one `add-headers` also names is
    // then set.
    snap.generation += 1_000;
    snap.global.hide_headers = vec!["x-upstream".into(), "x-env".into()];
    snap.global.add_headers = vec![pair("x-env", "edge")];
    l7.apply(snap);
    let r = conn.send(req()).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), None, "hidden");
    assert_eq!(r.header("x-env"), Some("edge"), "hidden, then added");
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "the rest stays"
    );
    Ok(())
}

/// `generate-request-id` and `proxy-add-original-uri-header`, switched by new snapshots on
/// one open connection.
#[tokio::test]
async fn l7_request_ids_and_the_original_uri_header() -> anyhow::Result<()> {
    let up = TestServer::echo("ids").await?;
    let mut rewrite = test_policy();
    rewrite.rewrite_target = Some("/v1".into());
    let api = target_with("api", upstream("ids", &[up.addr]), rewrite);
    let t = target("ids", upstream("ids", &[up.addr]));
    let mut snap = snapshot(vec![vhost(
        "ids.test",
        vec![prefix("/api", &api), prefix("/", &t)],
    )]);
    let l7 = L7::start(snap.clone()).await?;
    let mut conn = H1::connect(l7.http).await?;
    let req = |path: &str, id: Option<&str>| {
        let mut r = build(http::Method::GET, "ids.test", path, bytes::Bytes::new());
        if let Some(id) = id {
            r.headers_mut()
                .insert("x-request-id", id.parse().expect("value"));
        }
        r
    };
    // Defaults: an id is made up when the client sends none; no X-Original-Uri.
    let r = conn.send(req("/a?b=1", None)).await?;
    let made = r.seen_header("x-request-id").unwrap_or_default();
    assert!(
        made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made:?}"
    );
    assert_eq!(r.seen_header("x-original-uri"), None);
    let r = conn.send(req("/a", Some("client-7"))).await?;
    assert_eq!(r.seen_header("x-request-id").as_deref(), Some("client-7"));

    snap.generation += 1;
    snap.global.generate_request_id = false;
    snap.global.original_uri_header = true;
    l7.apply(snap.clone());
    let r = conn.send(req("/a?b=1", None)).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-request-id"), None, "none made up");
    assert_eq!(r.seen_header("x-original-uri").as_deref(), Some("/a?b=1"));
    let r = conn.send(req("/a", Some("client-8"))).await?;
    assert_eq!(
        r.seen_header("x-request-id").as_deref(),
        Some("client-8"),
        "the client's kept"
    );
    // The original URI is the client's, before `rewrite-target`.
    let r = conn.send(req("/api/users?x=%20y", None)).await?;
    assert_eq!(
        r.seen_header("x-original-uri").as_deref(),
        Some("/api/users?x=%20y")
    );
    assert_eq!(r.json()["uri"], "/v1/users?x=%20y");
    // The client's own header is replaced while the key is on, and passes on as any other
    // header while it is off (as nginx, which only sets it when asked to).
    let spoofed = || {
        let mut r = req("/a", None);
        r.headers_mut()
            .insert("x-original-uri", "/admin".parse().expect("value"));
        r
    };
    let r = conn.send(spoofed()).await?;
    assert_eq!(r.seen_header("x-original-uri").as_deref(), Some("/a"));
    snap.generation += 1;
    snap.global.original_uri_header = false;
    l7.apply(snap);
    let r = conn.send(spoofed()).await?;
    assert_eq!(r.seen_header("x-original-uri").as_deref(), Some("/admin"));
    Ok(())
}

/// The upstream's `Server`, `X-Pad` and `X-Accel-*` headers never reach clients, as nginx
/// hides them, and its `Date` is replaced by the proxy's own; `allow-backend-server-header` lets `Server` through, over HTTP/1.1 and HTTP/2.
#[tokio::test]
async fn l7_upstream_private_headers_are_hidden() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start(|mut s, _| async move {
        while read_head(&mut s).await.is_some() {
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nserver: gunicorn/20.1.0\r\n\
                          x-accel-redirect: /internal/report.pdf\r\nx-accel-buffering: no\r\n\
                          x-pad: avoid browser bug\r\nx-app: kept\r\n\
                          date: Mon, 01 Jan 2001 00:00:00 GMT\r\n\r\nok";
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await?;
    let t = target("private", upstream("private", &[up.addr]));
    let mut snap = snapshot(vec![vhost("p.test", vec![prefix("/", &t)])]);
    let l7 = L7::start(snap.clone()).await?;
    let r = get(l7.http, "p.test", "/").await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("x-app"), Some("kept"));
    for hidden in ["server", "x-accel-redirect", "x-accel-buffering", "x-pad"] {
        assert_eq!(r.header(hidden), None, "{hidden} reached the client");
    }
    let date = r.header("date").unwrap_or_default();
    assert!(
        date.ends_with(" GMT") && !date.contains("2001"),
        "the upstream's Date reached the client: {date:?}"
    );
    let (mut h2, _conn) = h2c(l7.http).await?;
    let req = http::Request::builder()
        .uri("http://p.test/")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), h2.send_request(req)).await??;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("server"), None, "over HTTP/2 too");

    snap.generation += 1;
    snap.global.backend_server_header = true;
    l7.apply(snap);
    let r = get(l7.http, "p.test", "/").await?;
    assert_eq!(r.header("server"), Some("gunicorn/20.1.0"));
    assert_eq!(r.header("x-accel-redirect"), None, "X-Accel-* stays hidden");
    Ok(())
}

/// An upstream repeating its `Content-Length` (the same value twice) is relayed with one, so
/// HTTP/2 clients, which refuse a repeated one, get the answer too.
#[tokio::test]
async fn l7_repeated_content_length_reaches_http2_clients() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start(|mut s, _| async move {
        while read_head(&mut s).await.is_some() {
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await?;
    let t = target("twice", upstream("twice", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("cl.test", vec![prefix("/", &t)])])).await?;
    let (mut h2, _conn) = h2c(l7.http).await?;
    let req = http::Request::builder()
        .uri("http://cl.test/")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), h2.send_request(req)).await??;
    assert_eq!(resp.status(), 200);
    let lengths: Vec<_> = resp.headers().get_all("content-length").iter().collect();
    assert_eq!(lengths, ["2"]);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    assert_eq!(&body[..], b"ok");
    let r = get(l7.http, "cl.test", "/").await?;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(r.headers.get_all("content-length").iter().count(), 1);
    Ok(())
}

/// `custom-headers`: the route's headers on every answer of that route (the upstream's 200,
/// replacing the upstream's own or removing it, and the proxy's own 413), over the global
/// `add-headers`; other routes get none; a denied set answers 503 without reaching the
/// upstream.
#[tokio::test]
async fn l7_custom_headers_are_set_on_every_answer_of_their_routes() -> anyhow::Result<()> {
    use ingress::snapshot::CustomHeaders;
    let up = TestServer::echo("ch").await?;
    let u = upstream("ch", &[up.addr]);
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    let mut policy = test_policy();
    policy.max_body_bytes = Some(4);
    policy.custom_headers = Some(Arc::new(CustomHeaders {
        headers: vec![
            pair("content-security-policy", "default-src 'self'"),
            pair("x-frame-options", "SAMEORIGIN"),
            pair("x-upstream", ""),
        ],
        denied: false,
    }));
    let with_headers = target_with("ch", u.clone(), policy);
    let mut denied_policy = test_policy();
    denied_policy.custom_headers = Some(Arc::new(CustomHeaders {
        headers: Vec::new(),
        denied: true,
    }));
    let denied = target_with("denied", u.clone(), denied_policy);
    let plain = target("plain", u);
    let mut snap = snapshot(vec![vhost(
        "ch.test",
        vec![
            prefix("/secure", &with_headers),
            prefix("/denied", &denied),
            prefix("/", &plain),
        ],
    )]);
    snap.global.add_headers = vec![pair("x-frame-options", "DENY")];
    let l7 = L7::start(snap).await?;

    let r = get(l7.http, "ch.test", "/secure/page").await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'self'")
    );
    assert_eq!(
        r.header("x-frame-options"),
        Some("SAMEORIGIN"),
        "over add-headers"
    );
    assert_eq!(r.upstream(), None, "the upstream's header removed");
    let big = build(
        http::Method::POST,
        "ch.test",
        "/secure/upload",
        bytes::Bytes::from_static(b"too long"),
    );
    let r = send(l7.http, big).await?;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'self'")
    );

    let r = get(l7.http, "ch.test", "/other").await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-security-policy"), None);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.upstream(), Some("ch"));

    let before = up.requests.load(std::sync::atomic::Ordering::SeqCst);
    let r = get(l7.http, "ch.test", "/denied/x").await?;
    assert_eq!(r.status, 503);
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "never forwarded"
    );
    Ok(())
}

/// gzip on a response that ends with trailers (an h2c upstream, an HTTP/2 client): the body
/// arrives compressed and whole, and the trailers after it, unchanged.
#[tokio::test]
async fn l7_gzip_keeps_the_trailers_after_the_compressed_body() -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full};
    use ingress::snapshot::BackendProtocol;
    let up = TestServer::echo("gzt").await?;
    let u = upstream_with("gzt", &[up.addr], BackendProtocol::Grpc);
    let t = target("gzt", u);
    let mut snap = snapshot(vec![vhost("gt.test", vec![prefix("/", &t)])]);
    snap.global.gzip.enabled = true;
    let l7 = L7::start(snap).await?;
    let (mut sender, _conn) = h2c(l7.http).await?;
    let req = http::Request::builder()
        .uri("http://gt.test/trailers/4000")
        .header("accept-encoding", "gzip")
        .body(Full::new(bytes::Bytes::new()))?;
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    let collected = tokio::time::timeout(WAIT, resp.into_body().collect()).await??;
    let trailers = collected.trailers().cloned();
    let body = gunzip(&collected.to_bytes())?;
    assert_eq!(body, vec![b't'; 4000], "decompressed body");
    assert_eq!(
        trailers
            .as_ref()
            .and_then(|t| t.get("x-checksum"))
            .map(|v| v.as_bytes()),
        Some(&b"4000"[..]),
        "trailers after the compressed stream"
    );
    Ok(())
}

fn gunzip(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

/// `use-gzip` and the `gzip-*` keys: answers of a listed type are compressed for clients that
/// accept gzip, over HTTP/1.1 and HTTP/2, and decompress to what the upstream sent; short,
/// unlisted, HEAD and not-accepted ones are not; a new snapshot turns it off.
#[tokio::test]
async fn l7_gzip_compresses_listed_answers_for_clients_that_accept_it() -> anyhow::Result<()> {
    let up = TestServer::echo("gz").await?;
    let t = target("gz", upstream("gz", &[up.addr]));
    let mut snap = snapshot(vec![vhost("g.test", vec![prefix("/", &t)])]);
    snap.global.gzip.enabled = true;
    let l7 = L7::start(snap.clone()).await?;
    let req = |method: http::Method, path: &str, accept: Option<&str>| {
        let mut r = build(method, "g.test", path, bytes::Bytes::new());
        if let Some(a) = accept {
            r.headers_mut().insert(
                "accept-encoding",
                http::HeaderValue::from_str(a).expect("value"),
            );
        }
        r
    };

    // The JSON echo (application/json, listed), over HTTP/1.1.
    let r = send(l7.http, req(http::Method::GET, "/j", Some("br, gzip"))).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let plain = gunzip(&r.body)?;
    let echo: serde_json::Value = serde_json::from_slice(&plain)?;
    assert_eq!(echo["uri"], "/j");
    assert_eq!(echo["headers"]["accept-encoding"], "br, gzip");

    // Over HTTP/2.
    let (mut h2, _conn) = h2c(l7.http).await?;
    let mut r2 = req(http::Method::GET, "/h2", Some("gzip"));
    *r2.uri_mut() = "http://g.test/h2".parse()?;
    let resp = tokio::time::timeout(WAIT, h2.send_request(r2)).await??;
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&gunzip(&body)?)?;
    assert_eq!(echo["uri"], "/h2");

    // Not accepted, refused with q=0, or HEAD: as the upstream sent it.
    for (method, accept) in [
        (http::Method::GET, None),
        (http::Method::GET, Some("gzip;q=0, identity")),
        (http::Method::HEAD, Some("gzip")),
    ] {
        let r = send(l7.http, req(method.clone(), "/j", accept)).await?;
        assert_eq!(r.header("content-encoding"), None, "{method} {accept:?}");
    }
    // No type (`/bytes/N`): not listed by default ...
    let r = send(l7.http, req(http::Method::GET, "/bytes/4000", Some("gzip"))).await?;
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, 4000));

    // ... but under `*`, unless shorter than gzip-min-length.
    let mut all = snap.clone();
    all.generation += 1_000;
    all.global.gzip.types = vec!["*".into()];
    all.global.gzip.level = 9;
    l7.apply(all);
    let r = send(l7.http, req(http::Method::GET, "/bytes/4000", Some("gzip"))).await?;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.body.len() < 200, "{} bytes", r.body.len());
    assert_eq!(gunzip(&r.body)?, vec![b'x'; 4000]);
    let r = send(l7.http, req(http::Method::GET, "/bytes/100", Some("gzip"))).await?;
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, 100));
    // The proxy's own answers qualify like an upstream's: with no minimum, its 404
    // (text/plain) goes compressed, and says so only because it is.
    let mut own = snap.clone();
    own.generation += 1_500;
    own.global.gzip.min_length = 0;
    l7.apply(own);
    let mut r404 = build(http::Method::GET, "nowhere.test", "/", bytes::Bytes::new());
    r404.headers_mut()
        .insert("accept-encoding", http::HeaderValue::from_static("gzip"));
    let r = send(l7.http, r404).await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let text = String::from_utf8(gunzip(&r.body)?)?;
    assert!(text.contains("404"), "{text:?}");

    // Off again.
    snap.generation += 2_000;
    snap.global.gzip.enabled = false;
    l7.apply(snap);
    let r = send(l7.http, req(http::Method::GET, "/j", Some("gzip"))).await?;
    assert_eq!(r.header("content-encoding"), None);
    serde_json::from_slice::<serde_json::Value>(&r.body)?;
    Ok(())
}

fn unbrotli(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    brotli::Decompressor::new(body, 4096).read_to_end(&mut out)?;
    Ok(out)
}

/// `enable-brotli` and the `brotli-*` keys beside `use-gzip`: a client that accepts both gets
/// brotli, over HTTP/1.1 and HTTP/2, decompressing to what the upstream sent, a large
/// body included; one that accepts gzip alone gets gzip; `gzip-disable` spares the agents it
/// names from gzip only; `brotli-min-length` and `brotli-types` hold for brotli alone.
#[tokio::test]
async fn l7_brotli_is_preferred_where_accepted_beside_gzip() -> anyhow::Result<()> {
    let up = TestServer::echo("br").await?;
    let t = target("br", upstream("br", &[up.addr]));
    let mut snap = snapshot(vec![vhost("b.test", vec![prefix("/", &t)])]);
    snap.global.gzip.enabled = true;
    snap.global.brotli.enabled = true;
    snap.global.gzip.disable_for = vec![ingress::snapshot::MapSource::Regex {
        pattern: r"MSIE [4-6]\.".into(),
        ignore_case: true,
    }];
    let l7 = L7::start(snap.clone()).await?;
    let req = |path: &str, accept: &str, agent: Option<&'static str>| {
        let mut r = build(http::Method::GET, "b.test", path, bytes::Bytes::new());
        let h = r.headers_mut();
        h.insert(
            "accept-encoding",
            http::HeaderValue::from_str(accept).expect("value"),
        );
        if let Some(a) = agent {
            h.insert("user-agent", http::HeaderValue::from_static(a));
        }
        r
    };

    let r = send(l7.http, req("/j", "gzip, deflate, br", None)).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let echo: serde_json::Value = serde_json::from_slice(&unbrotli(&r.body)?)?;
    assert_eq!(echo["uri"], "/j");
    assert_eq!(echo["headers"]["accept-encoding"], "gzip, deflate, br");

    let r = send(l7.http, req("/j", "gzip, br;q=0", None)).await?;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    serde_json::from_slice::<serde_json::Value>(&gunzip(&r.body)?)?;

    // gzip-disable: no gzip for that agent, brotli still.
    let msie = Some("Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)");
    let r = send(l7.http, req("/j", "gzip", msie)).await?;
    assert_eq!(r.header("content-encoding"), None);
    serde_json::from_slice::<serde_json::Value>(&r.body)?;
    let r = send(l7.http, req("/j", "gzip, br", msie)).await?;
    assert_eq!(r.header("content-encoding"), Some("br"));

    // Over HTTP/2.
    let (mut h2, _conn) = h2c(l7.http).await?;
    let mut r2 = req("/h2", "br", None);
    *r2.uri_mut() = "http://b.test/h2".parse()?;
    let resp = tokio::time::timeout(WAIT, h2.send_request(r2)).await??;
    assert_eq!(resp.headers()["content-encoding"], "br");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&unbrotli(&body)?)?;
    assert_eq!(echo["uri"], "/h2");

    // Every type for brotli alone, with its own minimum; a body of many chunks.
    let mut all = snap.clone();
    all.generation += 1_000;
    all.global.brotli.types = vec!["*".into()];
    all.global.brotli.min_length = 50;
    l7.apply(all);
    let r = send(l7.http, req("/bytes/2000000", "br, gzip", None)).await?;
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert!(r.body.len() < 10_000, "{} bytes", r.body.len());
    assert_eq!(unbrotli(&r.body)?, vec![b'x'; 2_000_000]);
    let r = send(l7.http, req("/bytes/40", "br", None)).await?;
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, 40));
    let r = send(l7.http, req("/bytes/4000", "gzip", None)).await?;
    assert_eq!(
        (r.header("content-encoding"), r.body.len()),
        (None, 4000),
        "gzip-types still leaves untyped answers alone"
    );

    // Brotli off: gzip for the same client.
    snap.generation += 2_000;
    snap.global.brotli.enabled = false;
    l7.apply(snap);
    let r = send(l7.http, req("/j", "br, gzip", None)).await?;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    Ok(())
}

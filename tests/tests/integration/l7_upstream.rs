//! Upstream behaviour: retries, outlier ejection, round robin, peak-EWMA, cookie affinity,
//! canaries, and config swaps under load.
use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use ingress::{
    proxy::metrics::UpstreamErrorKind,
    snapshot::{
        AffinityMode, Canary, CookieAffinity, LoadBalance, Pattern, RoutePolicy, RouteTarget,
    },
};
use tests::{l7::*, upstream::*};

/// A connection that cannot be made is tried on the next endpoint for every method (the
/// request never left, so a POST is as safe as a GET), as nginx does; five failures in a row
/// eject the endpoint.
#[tokio::test]
async fn l7_retries_refused_connections_and_ejects_failing_endpoint() -> anyhow::Result<()> {
    let good = TestServer::echo("good").await?;
    let refused = refused_addr().await?;
    let t = target("retry", upstream("retry", &[refused, good.addr]));
    let l7 = L7::start(snapshot(vec![vhost("r.test", vec![prefix("/", &t)])])).await?;
    let m = l7.proxy.metrics();

    // Round robin sends every GET to the refusing endpoint first; each is retried on the
    // other endpoint and succeeds.
    for i in 0..4 {
        let r = get(l7.http, "r.test", &format!("/get/{i}")).await?;
        assert_eq!(r.status, 200, "GET {i}");
        assert_eq!(r.upstream(), Some("good"));
    }
    assert_eq!(m.upstream_errors(UpstreamErrorKind::ConnectRefused), 4);
    // A POST with a body that meets the refusing endpoint goes to `good`, body intact.
    let hits_before = good.hits();
    let r = send(
        l7.http,
        build(
            http::Method::POST,
            "r.test",
            "/post",
            Bytes::from_static(b"xyz"),
        ),
    )
    .await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, Some("good")));
    assert_eq!(
        (r.json()["method"].as_str(), r.json()["body_len"].as_u64()),
        (Some("POST"), Some(3))
    );
    assert_eq!(good.hits(), hits_before + 1);
    // That was the fifth consecutive failure: the endpoint is ejected and not tried again.
    assert_eq!(m.upstream_errors(UpstreamErrorKind::ConnectRefused), 5);
    for i in 0..6 {
        let r = send(
            l7.http,
            build(
                http::Method::POST,
                "r.test",
                &format!("/post/{i}"),
                Bytes::from_static(b"x"),
            ),
        )
        .await?;
        assert_eq!(r.status, 200, "POST {i} after ejection");
    }
    assert_eq!(m.upstream_errors(UpstreamErrorKind::ConnectRefused), 5);

    // The only endpoint is never ejected: still tried (502), never turned into 503. Each
    // request gets its three tries on it, as ingress-nginx's balancer gives a lone replica.
    let lone = target("lone", upstream("lone", &[refused]));
    l7.apply(snapshot(vec![vhost("r.test", vec![prefix("/", &lone)])]));
    for _ in 0..7 {
        assert_eq!(get(l7.http, "r.test", "/").await?.status, 502);
    }
    assert_eq!(
        m.upstream_errors(UpstreamErrorKind::ConnectRefused),
        5 + 7 * 3
    );
    Ok(())
}

/// One replica gets `proxy-next-upstream-tries` tries, as ingress-nginx's balancer gives it:
/// a connection reset under a GET (a pod restarting its server) is retried on the same
/// endpoint. Two endpoints and three tries go round to the first again. `tries: 0` (no
/// limit) stops after one round, so a dead Service cannot hold a request forever.
#[tokio::test]
async fn l7_one_replica_gets_its_tries() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::AsyncWriteExt;
    // Resets its first connection under the request; answers on every later one.
    let flaky = RawUpstream::start(|mut s, n| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        if n == 1 {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
    })
    .await?;
    let refused = refused_addr().await?;
    let mut unlimited = test_policy();
    unlimited.max_attempts = u32::MAX;
    let l7 = L7::start(snapshot(vec![vhost(
        "one.test",
        vec![
            prefix("/flaky", &target("flaky", upstream("flaky", &[flaky.addr]))),
            prefix("/dead", &target("dead", upstream("dead", &[refused]))),
            prefix(
                "/unlimited",
                &target_with("unl", upstream("unl", &[refused]), unlimited),
            ),
        ],
    )]))
    .await?;
    let m = l7.proxy.metrics();

    let r = get(l7.http, "one.test", "/flaky").await?;
    assert_eq!((r.status.as_u16(), r.text()), (200, "ok".to_string()));
    assert_eq!(flaky.accepted.load(SeqCst), 2);

    assert_eq!(get(l7.http, "one.test", "/dead").await?.status, 502);
    assert_eq!(m.upstream_errors(UpstreamErrorKind::ConnectRefused), 3);
    assert_eq!(get(l7.http, "one.test", "/unlimited").await?.status, 502);
    assert_eq!(m.upstream_errors(UpstreamErrorKind::ConnectRefused), 4);
    Ok(())
}

#[tokio::test]
async fn l7_round_robin_and_peak_ewma() -> anyhow::Result<()> {
    let a = TestServer::echo("a").await?;
    let b = TestServer::echo("b").await?;
    let c = TestServer::echo("c").await?;
    let slow = TestServer::echo_slow("slow", Duration::from_millis(40)).await?;
    let rr = target("rr", upstream("rr", &[a.addr, b.addr, c.addr]));
    let mut ewma_policy = test_policy();
    ewma_policy.load_balance = LoadBalance::PeakEwma;
    let ewma = target_with("ewma", upstream("ewma", &[slow.addr, a.addr]), ewma_policy);
    let l7 = L7::start(snapshot(vec![vhost(
        "lb.test",
        vec![prefix("/ewma", &ewma), prefix("/", &rr)],
    )]))
    .await?;

    let mut conn = H1::connect(l7.http).await?;
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let r = conn
            .send(build(http::Method::GET, "lb.test", "/", Bytes::new()))
            .await?;
        *count
            .entry(r.upstream().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    assert_eq!(count.get("a"), Some(&10), "{count:?}");
    assert_eq!(count.get("b"), Some(&10), "{count:?}");
    assert_eq!(count.get("c"), Some(&10), "{count:?}");
    // Upstream connections are kept alive and reused: one per endpoint.
    assert_eq!(a.connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    let mut fast = 0;
    for _ in 0..30 {
        let r = conn
            .send(build(http::Method::GET, "lb.test", "/ewma", Bytes::new()))
            .await?;
        if r.upstream() == Some("a") {
            fast += 1;
        }
    }
    assert!(
        fast >= 25,
        "peak-EWMA sent only {fast}/30 to the fast endpoint"
    );
    // At most the first probe (an unmeasured endpoint) went to the slow one.
    assert!(
        slow.hits() <= 5,
        "slow endpoint got {} requests",
        slow.hits()
    );
    Ok(())
}

#[tokio::test]
async fn l7_cookie_affinity() -> anyhow::Result<()> {
    let servers = [
        TestServer::echo("s0").await?,
        TestServer::echo("s1").await?,
        TestServer::echo("s2").await?,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let mut policy = test_policy();
    policy.affinity = Some(CookieAffinity {
        name: "INGRESSCOOKIE".into(),
        path: None,
        max_age: Some(3600),
        expires: None,
        same_site: None,
        secure: false,
        change_on_failure: false,
        mode: AffinityMode::Persistent,
    });
    let snap_for = |addrs: &[std::net::SocketAddr]| {
        let t = target_with("sticky", upstream("sticky", addrs), policy.clone());
        snapshot(vec![vhost("aff.test", vec![prefix("/app", &t)])])
    };
    let l7 = L7::start(snap_for(&addrs)).await?;

    let first = get(l7.http, "aff.test", "/app/x").await?;
    let set = first.header("set-cookie").unwrap_or_default().to_string();
    assert!(
        set.starts_with("INGRESSCOOKIE=")
            && set.contains("Path=/app")
            && set.contains("Max-Age=3600"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Over HTTPS the cookie is Secure, as ingress-nginx sets it.
    let tls = tls_connect(
        l7.https,
        "aff.test",
        tests::certs::insecure_client_config(&[b"http/1.1"])?,
    )
    .await?;
    let (over_tls, _) = h1_over(
        tls,
        build(http::Method::GET, "aff.test", "/app/t", Bytes::new()),
    )
    .await?;
    let secure = over_tls.header("set-cookie").unwrap_or_default();
    assert!(secure.contains("; Secure"), "HTTPS: {secure}");
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let pinned = first.upstream().unwrap_or_default().to_string();
    for _ in 0..10 {
        let req = http::Request::builder()
            .uri("/app/y")
            .header("host", "aff.test")
            .header("cookie", format!("other=1; {cookie}"))
            .body(http_body_util::Full::new(Bytes::new()))?;
        let r = send(l7.http, req).await?;
        assert_eq!(r.upstream(), Some(pinned.as_str()));
        assert!(
            r.header("set-cookie").is_none(),
            "a valid cookie is not reset"
        );
    }
    // The pinned endpoint goes away: another one serves and the cookie is replaced.
    let remaining: Vec<_> = servers
        .iter()
        .filter(|s| s.name != pinned)
        .map(|s| s.addr)
        .collect();
    l7.apply(snap_for(&remaining));
    let req = http::Request::builder()
        .uri("/app/z")
        .header("host", "aff.test")
        .header("cookie", cookie.clone())
        .body(http_body_util::Full::new(Bytes::new()))?;
    let r = send(l7.http, req).await?;
    assert_eq!(r.status, 200);
    assert_ne!(r.upstream(), Some(pinned.as_str()));
    assert!(r
        .header("set-cookie")
        .is_some_and(|c| !c.starts_with(&cookie)));
    Ok(())
}

/// `affinity-mode`: a balanced session (ingress-nginx's default) carries a key hashed to its
/// endpoint, so a new endpoint takes about a quarter of four endpoints' sessions and the
/// others stay; a persistent one stays where it is.
#[tokio::test]
async fn l7_affinity_modes_when_endpoints_are_added() -> anyhow::Result<()> {
    let servers = [
        TestServer::echo("s0").await?,
        TestServer::echo("s1").await?,
        TestServer::echo("s2").await?,
        TestServer::echo("s3").await?,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let target_for = |name: &str, mode: AffinityMode, addrs: &[std::net::SocketAddr]| {
        let mut p = test_policy();
        p.affinity = Some(CookieAffinity {
            name: "s".into(),
            path: None,
            max_age: None,
            expires: None,
            same_site: None,
            secure: false,
            change_on_failure: false,
            mode,
        });
        target_with(name, upstream(name, addrs), p)
    };
    let snap_for = |addrs: &[std::net::SocketAddr]| {
        snapshot(vec![vhost(
            "aff.test",
            vec![
                prefix("/balanced", &target_for("b", AffinityMode::Balanced, addrs)),
                prefix(
                    "/persistent",
                    &target_for("p", AffinityMode::Persistent, addrs),
                ),
            ],
        )])
    };
    let l7 = L7::start(snap_for(&addrs[..3])).await?;
    let with = |path: &str, cookie: &str| -> anyhow::Result<_> {
        Ok(http::Request::builder()
            .uri(path)
            .header("host", "aff.test")
            .header("cookie", cookie)
            .body(http_body_util::Full::new(Bytes::new()))?)
    };
    const SESSIONS: usize = 60;
    let mut sessions = Vec::new();
    for path in ["/balanced", "/persistent"] {
        for _ in 0..SESSIONS {
            let r = get(l7.http, "aff.test", path).await?;
            let cookie = r
                .header("set-cookie")
                .and_then(|c| c.split(';').next())
                .unwrap_or_else(|| panic!("{path}: a new session sets its cookie"))
                .to_string();
            let served = r.upstream().unwrap_or_default().to_string();
            // Back with the cookie: the same endpoint, and no new cookie.
            let again = send(l7.http, with(path, &cookie)?).await?;
            assert_eq!(again.upstream(), Some(served.as_str()), "{path} {cookie}");
            assert!(again.header("set-cookie").is_none(), "{path}");
            sessions.push((path, cookie, served));
        }
    }
    l7.apply(snap_for(&addrs));
    let mut moved = std::collections::HashMap::new();
    for (path, cookie, served) in &sessions {
        let r = send(l7.http, with(path, cookie)?).await?;
        let now = r.upstream().unwrap_or_default();
        assert!(
            r.header("set-cookie").is_none(),
            "{path}: the session keeps its cookie"
        );
        if now != served {
            assert_eq!(now, "s3", "{path}: a session moved between old endpoints");
            *moved.entry(*path).or_insert(0) += 1;
        }
    }
    let balanced = moved.get("/balanced").copied().unwrap_or(0);
    assert!(
        (3..=35).contains(&balanced),
        "balanced: {balanced} of {SESSIONS} sessions moved to the new endpoint"
    );
    assert_eq!(moved.get("/persistent"), None, "persistent sessions moved");
    Ok(())
}

/// `session-cookie-change-on-failure`: when the cookie's endpoint fails and another one
/// serves, the cookie is kept by default (the client goes back once its endpoint recovers)
/// and moved to the new endpoint when asked. `session-cookie-expires` adds an `Expires` date.
#[tokio::test]
async fn l7_cookie_affinity_on_failure() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    // s0 closes every connection after its answer, so none is pooled: once it is dropped,
    // connections to it are refused.
    let s0 = RawUpstream::start(|mut s, _| async move {
        if read_head(&mut s).await.is_some() {
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\
                          x-upstream: s0\r\n\r\nok";
            let _ = s.write_all(answer.as_bytes()).await;
        }
    })
    .await?;
    let s1 = TestServer::echo("s1").await?;
    let addrs = [s0.addr, s1.addr];
    let policy = |change_on_failure: bool| {
        let mut p = test_policy();
        p.affinity = Some(CookieAffinity {
            name: "route".into(),
            path: None,
            max_age: None,
            expires: Some(7200),
            same_site: None,
            secure: false,
            change_on_failure,
            mode: AffinityMode::Persistent,
        });
        p
    };
    let keep = target_with("keep", upstream("keep", &addrs), policy(false));
    let change = target_with("change", upstream("change", &addrs), policy(true));
    let l7 = L7::start(snapshot(vec![vhost(
        "aff.test",
        vec![prefix("/keep", &keep), prefix("/change", &change)],
    )]))
    .await?;

    // A cookie for s0 on each route: ask until s0 serves one without a cookie.
    let mut cookies = HashMap::new();
    for route in ["/keep", "/change"] {
        for _ in 0..4 {
            let r = get(l7.http, "aff.test", route).await?;
            let set = r.header("set-cookie").unwrap_or_default().to_string();
            assert!(set.contains("; Expires="), "{set}");
            if r.upstream() == Some("s0") {
                let cookie = set.split(';').next().unwrap_or_default().to_string();
                cookies.insert(route, cookie);
                break;
            }
        }
    }
    let with_cookie = |route: &str| -> anyhow::Result<_> {
        Ok(http::Request::builder()
            .uri(route)
            .header("host", "aff.test")
            .header("cookie", cookies.get(route).cloned().unwrap_or_default())
            .body(http_body_util::Full::new(Bytes::new()))?)
    };
    assert_eq!(cookies.len(), 2, "s0 never served");
    // s0 goes down (connections refused): s1 serves the retried GET.
    drop(s0);
    let r = send(l7.http, with_cookie("/keep")?).await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, Some("s1")));
    assert!(
        r.header("set-cookie").is_none(),
        "cookie moved without change-on-failure"
    );
    let r = send(l7.http, with_cookie("/change")?).await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, Some("s1")));
    let moved = r.header("set-cookie").unwrap_or_default().to_string();
    assert!(
        moved.starts_with("route=") && !moved.starts_with(&cookies["/change"]),
        "{moved}"
    );
    // The moved cookie sticks to s1 and is not set again.
    let again = http::Request::builder()
        .uri("/change")
        .header("host", "aff.test")
        .header("cookie", moved.split(';').next().unwrap_or_default())
        .body(http_body_util::Full::new(Bytes::new()))?;
    let r = send(l7.http, again).await?;
    assert_eq!(r.upstream(), Some("s1"));
    assert!(r.header("set-cookie").is_none());
    Ok(())
}

/// `affinity-canary-behavior` with cookie affinity on the route, as ingress-nginx's balancer:
/// the cookie names the upstream that holds the session, which keeps it (a header asking
/// for the canary does not move a session the primary holds); `sticky` keeps canary sessions
/// on the canary, `legacy` gives the canary none, and its requests are shaped again.
#[tokio::test]
async fn l7_canary_sessions_stay_with_the_upstream_that_holds_them() -> anyhow::Result<()> {
    let main = TestServer::echo("main").await?;
    let canary = TestServer::echo("canary").await?;
    let mut policy = test_policy();
    policy.affinity = Some(CookieAffinity {
        name: "route".into(),
        path: None,
        max_age: None,
        expires: None,
        same_site: None,
        secure: false,
        change_on_failure: false,
        mode: AffinityMode::Balanced,
    });
    let with_canary = |weight: u32, sticky: bool| {
        let mut t = (*target_with("app", upstream("main", &[main.addr]), policy.clone())).clone();
        t.canary = Some(Canary {
            origin: ingress_ref("app-canary"),
            upstream: upstream("canary", &[canary.addr]),
            label: "default-canary-80".into(),
            weight,
            weight_total: 100,
            header: Some("X-Canary".into()),
            header_value: None,
            header_pattern: None,
            cookie: None,
            sticky,
        });
        snapshot(vec![vhost("s.test", vec![prefix("/", &Arc::new(t))])])
    };
    let l7 = L7::start(with_canary(50, true)).await?;
    let request = |cookie: Option<&str>, header: Option<&str>| {
        let mut b = http::Request::builder().uri("/").header("host", "s.test");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        if let Some(h) = header {
            b = b.header("x-canary", h);
        }
        b.body(http_body_util::Full::new(Bytes::new()))
    };
    let cookie_of = |r: &Reply| {
        r.header("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
    };

    // sticky: new sessions land on either side by weight, then stay there.
    let mut held = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let r = send(l7.http, request(None, None)?).await?;
        let served = r.upstream().unwrap_or_default().to_string();
        let cookie = cookie_of(&r).unwrap_or_else(|| panic!("{served}: no session cookie"));
        assert!(cookie.contains('|'), "tagged with its upstream: {cookie}");
        for _ in 0..3 {
            let again = send(l7.http, request(Some(&cookie), None)?).await?;
            assert_eq!(again.upstream(), Some(served.as_str()), "{cookie}");
            assert_eq!(again.header("set-cookie"), None, "{cookie}");
        }
        held.insert(served, cookie);
    }
    let (Some(on_main), Some(on_canary)) = (held.get("main"), held.get("canary")) else {
        panic!("40 new sessions at weight 50 all went one way: {held:?}");
    };
    // A session the primary holds stays there whatever the header says, as in ingress-nginx.
    let r = send(l7.http, request(Some(on_main), Some("always"))?).await?;
    assert_eq!(r.upstream(), Some("main"));
    // One the canary holds stays there at weight 0, and even against `never`.
    l7.apply(with_canary(0, true));
    for header in [None, Some("never")] {
        let r = send(l7.http, request(Some(on_canary), header)?).await?;
        assert_eq!(r.upstream(), Some("canary"), "{header:?}");
    }
    // A cookie set before the route had a canary (no tag) keeps its endpoint and is tagged.
    let untagged = on_main.split('|').next().unwrap_or_default();
    let r = send(l7.http, request(Some(untagged), None)?).await?;
    assert_eq!(r.upstream(), Some("main"));
    assert_eq!(cookie_of(&r).as_deref(), Some(on_main.as_str()));

    // legacy: the canary keeps no session; a canary cookie is shaped again (weight 0: main).
    l7.apply(with_canary(0, false));
    let r = send(l7.http, request(Some(on_canary), None)?).await?;
    assert_eq!(r.upstream(), Some("main"));
    l7.apply(with_canary(100, false));
    let r = send(l7.http, request(None, None)?).await?;
    assert_eq!(
        (r.upstream(), r.header("set-cookie")),
        (Some("canary"), None)
    );
    let r = send(l7.http, request(Some(on_main), None)?).await?;
    assert_eq!(
        r.upstream(),
        Some("main"),
        "the primary's sessions still hold"
    );
    Ok(())
}

#[tokio::test]
async fn l7_canary_by_header_value_and_weight() -> anyhow::Result<()> {
    let main = TestServer::echo("main").await?;
    let canary = TestServer::echo("canary").await?;
    let with_canary = |weight: u32, header_value: Option<&str>| -> Arc<RouteTarget> {
        let mut t = (*target("app", upstream("main", &[main.addr]))).clone();
        t.canary = Some(Canary {
            origin: ingress_ref("app-canary"),
            upstream: upstream("canary", &[canary.addr]),
            label: "default-canary-80".into(),
            weight,
            weight_total: 100,
            header: Some("X-Canary".into()),
            header_value: header_value.map(str::to_string),
            header_pattern: None,
            cookie: Some("canary".into()),
            sticky: true,
        });
        Arc::new(t)
    };
    let l7 = L7::start(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/", &with_canary(0, None))],
    )]))
    .await?;
    let with_header = |v: &str| {
        http::Request::builder()
            .uri("/")
            .header("host", "c.test")
            .header("x-canary", v)
            .body(http_body_util::Full::new(Bytes::new()))
    };
    assert_eq!(get(l7.http, "c.test", "/").await?.upstream(), Some("main"));
    assert_eq!(
        send(l7.http, with_header("always")?).await?.upstream(),
        Some("canary")
    );
    assert_eq!(
        send(l7.http, with_header("never")?).await?.upstream(),
        Some("main")
    );
    let with_cookie = |v: &str| {
        http::Request::builder()
            .uri("/")
            .header("host", "c.test")
            .header("cookie", format!("session=1; canary={v}"))
            .body(http_body_util::Full::new(Bytes::new()))
    };
    assert_eq!(
        send(l7.http, with_cookie("always")?).await?.upstream(),
        Some("canary")
    );
    assert_eq!(
        send(l7.http, with_cookie("maybe")?).await?.upstream(),
        Some("main")
    );
    // As ingress-nginx counts them: under the main Ingress and Service, those the canary
    // served apart, with its upstream as the `canary` label.
    let mut metrics = String::new();
    l7.proxy.metrics().render(&mut metrics);
    let location = "namespace=\"default\",ingress=\"app\",service=\"main\",host=\"c.test\",\
                    path=\"/\",method=\"GET\"";
    for want in [
        format!("nginx_ingress_controller_requests{{{location},status=\"200\"}} 3\n"),
        format!(
            "nginx_ingress_controller_requests{{{location},canary=\"default-canary-80\",\
             status=\"200\"}} 2\n"
        ),
    ] {
        assert!(metrics.contains(&want), "missing {want:?} in\n{metrics}");
    }

    l7.apply(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/", &with_canary(100, None))],
    )]));
    assert_eq!(
        send(l7.http, with_cookie("never")?).await?.upstream(),
        Some("main")
    );
    assert_eq!(
        get(l7.http, "c.test", "/").await?.upstream(),
        Some("canary")
    );
    assert_eq!(
        send(l7.http, with_header("never")?).await?.upstream(),
        Some("main")
    );

    l7.apply(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/", &with_canary(0, Some("v2")))],
    )]));
    assert_eq!(
        send(l7.http, with_header("v2")?).await?.upstream(),
        Some("canary")
    );
    assert_eq!(
        send(l7.http, with_header("always")?).await?.upstream(),
        Some("main")
    );

    // `canary-by-header-pattern`: a value the regex finds a match in picks the canary; any
    // other value, `always` included, leaves it to the weight (0 here).
    let mut patterned = (*with_canary(0, None)).clone();
    if let Some(c) = patterned.canary.as_mut() {
        c.header_pattern = Some(Pattern {
            source: "^(beta|alpha)-[0-9]+$".into(),
            regex: regex::Regex::new("^(beta|alpha)-[0-9]+$")?,
        });
    }
    l7.apply(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/", &Arc::new(patterned))],
    )]));
    for (value, expected) in [
        ("beta-42", "canary"),
        ("alpha-1", "canary"),
        ("beta-x", "main"),
        ("always", "main"),
    ] {
        assert_eq!(
            send(l7.http, with_header(value)?).await?.upstream(),
            Some(expected),
            "x-canary: {value}"
        );
    }

    l7.apply(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/", &with_canary(50, None))],
    )]));
    let mut canary_hits = 0;
    let mut conn = H1::connect(l7.http).await?;
    for _ in 0..200 {
        let r = conn
            .send(build(http::Method::GET, "c.test", "/", Bytes::new()))
            .await?;
        if r.upstream() == Some("canary") {
            canary_hits += 1;
        }
    }
    assert!(
        (60..=140).contains(&canary_hits),
        "weight 50 gave {canary_hits}/200"
    );
    // Canary traffic is counted under the canary Ingress.
    let mut metrics = String::new();
    l7.proxy.metrics().render(&mut metrics);
    assert!(
        metrics.contains(
            "ingress=\"default/app-canary\",service=\"default/canary:80\",status_class=\"2xx\""
        ),
        "{metrics}"
    );
    Ok(())
}

/// Resets count towards ejection like connect failures do (nginx's `max_fails`): after five
/// in a row the endpoint is skipped, and the healthy one takes everything. Meanwhile each
/// reset GET goes on to the healthy endpoint (ingress-nginx's default `error timeout`).
#[tokio::test]
async fn l7_resets_eject_an_endpoint() -> anyhow::Result<()> {
    let good = TestServer::echo("good").await?;
    let bad = Resetter::start().await?;
    let t = target("resets", upstream("resets", &[bad.addr, good.addr]));
    let l7 = L7::start(snapshot(vec![vhost("x.test", vec![prefix("/", &t)])])).await?;
    let m = l7.proxy.metrics();
    let accepted = || bad.accepted.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..10 {
        let r = get(l7.http, "x.test", &format!("/{i}")).await?;
        assert_eq!(
            (r.status.as_u16(), r.upstream()),
            (200, Some("good")),
            "{i}"
        );
    }
    let resets = accepted();
    assert!(resets >= 5, "{resets}");
    assert_eq!(
        m.upstream_errors(UpstreamErrorKind::Protocol),
        resets as u64
    );
    for i in 0..6 {
        let r = get(l7.http, "x.test", &format!("/after/{i}")).await?;
        assert_eq!(r.status, 200, "after ejection {i}");
        assert_eq!(r.upstream(), Some("good"));
    }
    assert_eq!(accepted(), resets, "ejected: not tried again");
    Ok(())
}

/// An endpoint change recompiles only what changed: routes whose target the new snapshot
/// carries over keep their upstream state (pooled connections), while the route whose
/// upstream changed goes to its new endpoint at once.
#[tokio::test]
async fn l7_config_change_keeps_unchanged_routes_and_moves_changed_ones() -> anyhow::Result<()> {
    let a = TestServer::echo("a").await?;
    let b_old = TestServer::echo("b-old").await?;
    let b_new = TestServer::echo("b-new").await?;
    let keep = target("keep", upstream("keep", &[a.addr]));
    let moving = target("moving", upstream("moving", &[b_old.addr]));
    let l7 = L7::start(snapshot(vec![
        vhost("keep.test", vec![prefix("/", &keep)]),
        vhost("moving.test", vec![prefix("/", &moving)]),
    ]))
    .await?;
    for _ in 0..3 {
        assert_eq!(get(l7.http, "keep.test", "/").await?.upstream(), Some("a"));
        assert_eq!(
            get(l7.http, "moving.test", "/").await?.upstream(),
            Some("b-old")
        );
    }
    assert_eq!(a.connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Same Arc<RouteTarget> for keep.test (as the translator hands over unchanged routes),
    // a new target with a new endpoint list for moving.test.
    let moved = target("moving", upstream("moving", &[b_new.addr]));
    l7.apply(snapshot(vec![
        vhost("keep.test", vec![prefix("/", &keep)]),
        vhost("moving.test", vec![prefix("/", &moved)]),
    ]));
    for _ in 0..3 {
        assert_eq!(get(l7.http, "keep.test", "/").await?.upstream(), Some("a"));
        assert_eq!(
            get(l7.http, "moving.test", "/").await?.upstream(),
            Some("b-new")
        );
    }
    assert_eq!(
        a.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the unchanged route kept its pooled upstream connection"
    );
    assert_eq!(b_old.hits(), 3);
    Ok(())
}

/// An upstream that closes each kept-alive connection right after answering (or a moment
/// later): the pool must not hand the dead connection to the next request, and a request that
/// races the close is retried on a fresh connection rather than answered 502, as nginx does
/// for errors on cached keep-alive connections.
#[tokio::test]
async fn l7_stale_pooled_connections_never_fail_idempotent_requests() -> anyhow::Result<()> {
    for linger in [Duration::ZERO, Duration::from_millis(5)] {
        let up = OneShot::start(linger).await?;
        let t = target("oneshot", upstream("oneshot", &[up.addr]));
        let l7 = L7::start(snapshot(vec![vhost("x.test", vec![prefix("/", &t)])])).await?;
        let mut statuses = Vec::new();
        for i in 0..100 {
            statuses.push(get(l7.http, "x.test", &format!("/{i}")).await?.status);
        }
        let failed = statuses.iter().filter(|s| **s != 200).count();
        assert_eq!(failed, 0, "close after {linger:?}: {statuses:?}");
        assert!(up.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 100);
    }
    Ok(())
}

/// An HTTP/1.1 upstream that echoes the body of the first request of each connection (read
/// by its `Content-Length`) and resets the connection at the second, unanswered: the idle
/// keep-alive close that meets a request on its way, made certain.
async fn echo_once_per_connection() -> anyhow::Result<RawUpstream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    RawUpstream::start(|mut s, _| async move {
        let mut buf = Vec::new();
        for served in 0.. {
            let mut chunk = [0u8; 16384];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            };
            if served == 1 {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                return;
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            if s.write_all(answer.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A PUT with a body that meets a pooled connection the upstream closes under it goes again,
/// body and all, on a fresh connection, as nginx resends what it buffered. The body is kept
/// as it streams, up to 64 KiB: a larger one, and any POST, get the 502.
#[tokio::test]
async fn l7_stale_pooled_connections_resend_small_bodies() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let up = echo_once_per_connection().await?;
    let t = target("once", upstream("once", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("x.test", vec![prefix("/", &t)])])).await?;
    let put = |body: Bytes| send(l7.http, build(http::Method::PUT, "x.test", "/put", body));
    let post = |body: Bytes| send(l7.http, build(http::Method::POST, "x.test", "/post", body));

    // The first request opens a connection that the pool keeps; each later one meets the
    // reset on it and goes again on a fresh one, which the pool keeps in its turn.
    let first = put(Bytes::from_static(b"first")).await?;
    assert_eq!((first.status.as_u16(), first.text()), (200, "first".into()));
    for i in 0..5 {
        let body = Bytes::from(format!("put {i} ").repeat(500 * (i + 1)));
        let r = put(body.clone()).await?;
        assert_eq!(r.status, 200, "PUT {i}");
        assert_eq!(r.body, body, "PUT {i} arrived changed");
    }
    assert_eq!(up.accepted.load(SeqCst), 6);

    let big = Bytes::from(vec![b'b'; 64 * 1024 + 1]);
    assert_eq!(
        put(big).await?.status,
        502,
        "a body past the limit went again"
    );
    // The 502 left no pooled connection: open one for the POST to meet.
    assert_eq!(put(Bytes::from_static(b"x")).await?.status, 200);
    assert_eq!(
        post(Bytes::from_static(b"p")).await?.status,
        502,
        "a POST went again"
    );

    // With `proxy-next-upstream: off` nothing goes again, as with nginx, whose resend on a
    // cached connection still needs `error` among the conditions.
    let mut policy = test_policy();
    policy.next_upstream = ingress::snapshot::NextUpstream::off();
    let up = echo_once_per_connection().await?;
    let t = target_with("off", upstream("off", &[up.addr]), policy);
    let l7 = L7::start(snapshot(vec![vhost("off.test", vec![prefix("/", &t)])])).await?;
    let put = |body: &'static [u8]| {
        send(
            l7.http,
            build(
                http::Method::PUT,
                "off.test",
                "/put",
                Bytes::from_static(body),
            ),
        )
    };
    assert_eq!(put(b"first").await?.status, 200);
    assert_eq!(put(b"again").await?.status, 502, "sent again with off");
    assert_eq!(up.accepted.load(SeqCst), 1);
    Ok(())
}

/// The HTTP/2 form: an h2c upstream that sends GOAWAY after one request per connection. The
/// shared pooled connection must be dropped once it is going away. (Here the GOAWAY always
/// arrives before the next request; one that raced it would take the resend path the HTTP/1.1
/// test above exercises.)
#[tokio::test]
async fn l7_h2_upstream_going_away_never_fails_idempotent_requests() -> anyhow::Result<()> {
    let up = OneShotH2::start().await?;
    let t = target(
        "oneshot-h2",
        upstream_with(
            "oneshot-h2",
            &[up.addr],
            ingress::snapshot::BackendProtocol::Grpc,
        ),
    );
    let l7 = L7::start(snapshot(vec![vhost("x.test", vec![prefix("/", &t)])])).await?;
    let mut statuses = Vec::new();
    for i in 0..50 {
        let r = get(l7.http, "x.test", &format!("/{i}")).await?;
        statuses.push((r.status, r.upstream().map(str::to_owned)));
    }
    assert!(
        statuses
            .iter()
            .all(|(s, u)| *s == 200 && u.as_deref() == Some("oneshot-h2")),
        "{statuses:?}"
    );
    assert!(up.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 50);
    Ok(())
}

/// An HTTP/2 upstream allowing 100 streams per connection (nginx's and h2o's limits are
/// about that): 150 requests at once open a second connection rather than queue behind the
/// first one's streams, as nginx would open more connections. Once the burst is over the
/// extra connection goes.
#[tokio::test]
async fn l7_h2_upstream_gets_another_connection_when_streams_run_out() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let live = Arc::new(AtomicUsize::new(0));
    let (n, m, l) = (now.clone(), most.clone(), live.clone());
    let up = RawUpstream::start(move |s, _| {
        let (now, most, live) = (n.clone(), m.clone(), l.clone());
        async move {
            live.fetch_add(1, SeqCst);
            let svc =
                hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let (now, most) = (now.clone(), most.clone());
                    async move {
                        most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        now.fetch_sub(1, SeqCst);
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"ok")),
                        ))
                    }
                });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .max_concurrent_streams(100)
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            live.fetch_sub(1, SeqCst);
        }
    })
    .await?;
    let t = target(
        "h2",
        upstream_with("h2", &[up.addr], ingress::snapshot::BackendProtocol::Grpc),
    );
    let l7 = L7::start(snapshot(vec![vhost("h2.test", vec![prefix("/", &t)])])).await?;
    // One request first, so the burst finds a pooled connection.
    assert_eq!(get(l7.http, "h2.test", "/warm").await?.status, 200);
    // Client connections made one by one first: 150 connects at once would overflow the
    // listen backlog, and a dropped SYN costs its client a second.
    let mut clients = Vec::new();
    for _ in 0..150 {
        clients.push(H1::connect(l7.http).await?);
    }
    let started = std::time::Instant::now();
    let burst: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let req = build(http::Method::GET, "h2.test", &format!("/{i}"), Bytes::new());
            tokio::spawn(async move { c.send(req).await })
        })
        .collect();
    for r in burst {
        assert_eq!(r.await??.status, 200);
    }
    let took = started.elapsed();
    assert_eq!(up.accepted.load(SeqCst), 2, "connections to the upstream");
    assert!(
        most.load(SeqCst) > 100,
        "at most {} at once",
        most.load(SeqCst)
    );
    assert!(took < Duration::from_millis(550), "the burst took {took:?}");
    // Quiet again: the next request lets the idle extra connection go.
    assert_eq!(get(l7.http, "h2.test", "/after").await?.status, 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    while live.load(SeqCst) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live.load(SeqCst), 1, "upstream connections still open");
    Ok(())
}

/// Answers that would break the client's protocol if passed on: a `101` to a request that
/// asked for no upgrade is a 502 (HTTP/1.1 clients would wait on a protocol they never chose;
/// HTTP/2 cannot switch), and a `204` claiming a body loses its `Content-Length` (an HTTP/2
/// client takes it as a framing error).
#[tokio::test]
async fn l7_upstream_answers_that_would_break_the_client_protocol() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start(|mut s, _| async move {
        while let Some(head) = read_head(&mut s).await {
            let answer: &[u8] = if head.starts_with(b"GET /101") {
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n"
            } else {
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nx-upstream: raw\r\n\r\n"
            };
            if s.write_all(answer).await.is_err() || head.starts_with(b"GET /101") {
                // Hold the switched connection open, as a server that switched would.
                tokio::time::sleep(Duration::from_secs(5)).await;
                return;
            }
        }
    })
    .await?;
    let t = target("raw", upstream("raw", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("u.test", vec![prefix("/", &t)])])).await?;

    // HTTP/1.1, pipelined on one connection: the 101 becomes a 502 and the connection goes
    // on serving.
    let out = raw(
        l7.http,
        b"GET /101 HTTP/1.1\r\nHost: u.test\r\n\r\nGET /204 HTTP/1.1\r\nHost: u.test\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(raw_status(&out), Some(502), "{out}");
    assert!(out.contains("HTTP/1.1 204"), "{out}");
    // HTTP/2 (h2c prior knowledge): a 502, and a clean 204.
    let (mut sender, _conn) = h2c(l7.http).await?;
    for (path, want) in [("/101", 502), ("/204", 204)] {
        let req = http::Request::builder()
            .uri(format!("http://u.test{path}"))
            .body(http_body_util::Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
        assert_eq!(resp.status(), want, "{path}: {resp:?}");
        if want == 204 {
            assert!(resp.headers().get(http::header::CONTENT_LENGTH).is_none());
            let body = http_body_util::BodyExt::collect(resp.into_body()).await?;
            assert!(body.to_bytes().is_empty());
        }
    }
    Ok(())
}

/// Client headers that would reach the upstream as forwarding headers under another spelling
/// (`X_Forwarded_For` is `HTTP_X_FORWARDED_FOR` to CGI, WSGI and PHP) are dropped, as nginx
/// drops every header with an underscore; an authority with userinfo or a port out of range
/// is refused before routing, as a `Host` with them is.
#[tokio::test]
async fn l7_forged_forwarding_headers_and_authorities_are_refused() -> anyhow::Result<()> {
    let up = TestServer::echo("echo").await?;
    let t = target("echo", upstream("echo", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("u.test", vec![prefix("/", &t)])])).await?;
    let out = raw(
        l7.http,
        b"GET / HTTP/1.1\r\nHost: u.test\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nX-Custom: kept\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    let seen = up.last().expect("request seen");
    let names: Vec<&str> = seen.headers.keys().map(|k| k.as_str()).collect();
    assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
    assert_eq!(seen.headers["x-custom"], "kept");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");

    // `enable-underscores-in-headers: "true"` passes them on, as nginx's
    // `underscores_in_headers on`.
    let mut snap = snapshot(vec![vhost("u.test", vec![prefix("/", &t)])]);
    snap.generation = 2;
    snap.global.underscores_in_headers = true;
    l7.apply(snap);
    let out = raw(
        l7.http,
        b"GET / HTTP/1.1\r\nHost: u.test\r\nX_Tenant: blue\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    assert_eq!(up.last().expect("request seen").headers["x_tenant"], "blue");

    let hits = up.hits();
    for target in ["http://evil.test:80@u.test/", "http://u.test:99999/"] {
        let out = raw(
            l7.http,
            format!("GET {target} HTTP/1.1\r\nHost: u.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        assert_eq!(raw_status(&out), Some(400), "{target}: {out}");
    }
    assert_eq!(up.hits(), hits, "a refused request reached the upstream");
    Ok(())
}

/// `upstream-hash-by`: every request with the same key reaches the same endpoint, different
/// keys spread over all of them, and a key's endpoint leaving moves that key only.
/// `upstream-hash-by-subset`: a key's requests spread over its own set of
/// `upstream-hash-by-subset-size` endpoints, and different keys get different sets.
#[tokio::test]
async fn l7_upstream_hash_by_subset_spreads_a_key_over_its_set() -> anyhow::Result<()> {
    let mut servers = Vec::new();
    for i in 0..6 {
        servers.push(TestServer::echo(&format!("e{i}")).await?);
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let mut t = (*target("app", upstream("app", &addrs))).clone();
    t.policy.hash_by = Some(ingress::snapshot::HashKey {
        parts: vec![ingress::snapshot::HashPart::Header("x-user".into())],
    });
    t.policy.hash_subset = Some(2);
    let l7 = L7::start(snapshot(vec![vhost(
        "h.test",
        vec![prefix("/", &Arc::new(t))],
    )]))
    .await?;
    let mut conn = H1::connect(l7.http).await?;
    let mut sets = std::collections::BTreeSet::new();
    for i in 0..8 {
        let user = format!("user{i}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let req = http::Request::builder()
                .uri("/")
                .header("host", "h.test")
                .header("x-user", &user)
                .body(http_body_util::Full::new(Bytes::new()))?;
            let r = conn.send(req).await?;
            seen.insert(r.upstream().unwrap_or("?").to_string());
        }
        // 40 random picks from a set of two miss one with probability 2^-39.
        assert_eq!(seen.len(), 2, "{user} went to {seen:?}");
        sets.insert(seen);
    }
    assert!(sets.len() > 1, "every key got the same endpoints: {sets:?}");
    Ok(())
}

#[tokio::test]
async fn l7_upstream_hash_by_keeps_a_key_on_one_endpoint() -> anyhow::Result<()> {
    let servers = [
        TestServer::echo("e0").await?,
        TestServer::echo("e1").await?,
        TestServer::echo("e2").await?,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let hashed = |addrs: &[std::net::SocketAddr]| {
        let mut t = (*target("app", upstream("app", addrs))).clone();
        t.policy.hash_by = Some(ingress::snapshot::HashKey {
            parts: vec![ingress::snapshot::HashPart::Header("x-user".into())],
        });
        Arc::new(t)
    };
    let l7 = L7::start(snapshot(vec![vhost(
        "h.test",
        vec![prefix("/", &hashed(&addrs))],
    )]))
    .await?;
    let as_user = |u: &str| {
        http::Request::builder()
            .uri("/")
            .header("host", "h.test")
            .header("x-user", u)
            .body(http_body_util::Full::new(Bytes::new()))
    };
    let mut conn = H1::connect(l7.http).await?;
    let mut owner = std::collections::BTreeMap::new();
    for i in 0..60 {
        let user = format!("user{i}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let r = conn.send(as_user(&user)?).await?;
            seen.insert(r.upstream().unwrap_or("?").to_string());
        }
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
        owner.insert(user, seen.into_iter().next().unwrap_or_default());
    }
    let used: std::collections::BTreeSet<_> = owner.values().cloned().collect();
    assert_eq!(used.len(), 3, "60 keys over 3 endpoints: {used:?}");

    // e2 leaves: only its users move.
    l7.apply(snapshot(vec![vhost(
        "h.test",
        vec![prefix("/", &hashed(&addrs[..2]))],
    )]));
    for (user, was) in &owner {
        let r = send(l7.http, as_user(user)?).await?;
        let now = r.upstream().unwrap_or("?");
        if was != "e2" {
            assert_eq!(now, was, "{user} moved although its endpoint stayed");
        } else {
            assert_ne!(now, "e2");
        }
    }
    Ok(())
}

/// Two Ingresses naming one Service port with different `backend-protocol`s get two
/// upstreams of the same name: each keeps its own protocol in the proxy.
#[tokio::test]
async fn l7_one_service_port_two_backend_protocols() -> anyhow::Result<()> {
    let up = TestServer::echo("both").await?;
    let h1 = target("h1", upstream("both", &[up.addr]));
    let h2 = target(
        "h2",
        upstream_with("both", &[up.addr], ingress::snapshot::BackendProtocol::Grpc),
    );
    let l7 = L7::start(snapshot(vec![
        vhost("h1.test", vec![prefix("/", &h1)]),
        vhost("h2.test", vec![prefix("/", &h2)]),
    ]))
    .await?;
    for (host, want) in [
        ("h1.test", http::Version::HTTP_11),
        ("h2.test", http::Version::HTTP_2),
        ("h1.test", http::Version::HTTP_11),
    ] {
        assert_eq!(get(l7.http, host, "/").await?.status, 200);
        let seen = up.last().ok_or_else(|| anyhow::anyhow!("nothing seen"))?;
        assert_eq!(seen.version, want, "{host}");
    }
    Ok(())
}

/// An HTTP/1.1 upstream answering every request (keep-alive) with `status` after `delay`,
/// counting the requests it read.
async fn answering(
    name: &'static str,
    status: u16,
    delay: Duration,
) -> anyhow::Result<(RawUpstream, Arc<std::sync::atomic::AtomicUsize>)> {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::AsyncWriteExt;
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let up = RawUpstream::start(move |mut s, _| {
        let count = count.clone();
        async move {
            while read_head(&mut s).await.is_some() {
                count.fetch_add(1, SeqCst);
                tokio::time::sleep(delay).await;
                let body = format!("{name} says {status}");
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-upstream: {name}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await?;
    Ok((up, hits))
}

/// Peak-EWMA: an endpoint added to a Service starts at the mean estimate of the others (as
/// ingress-nginx's `ewma.lua`), not at the optimistic default that made it look faster than
/// every measured endpoint and take most of a burst.
#[tokio::test]
async fn l7_peak_ewma_gives_a_new_endpoint_its_share_not_the_burst() -> anyhow::Result<()> {
    let delay = Duration::from_millis(250);
    let a = TestServer::echo_slow("a", delay).await?;
    let b = TestServer::echo_slow("b", delay).await?;
    let c = TestServer::echo_slow("c", delay).await?;
    let mut policy = test_policy();
    policy.load_balance = LoadBalance::PeakEwma;
    let snap = |eps: &[std::net::SocketAddr]| {
        let t = target_with("ewma", upstream("ewma", eps), policy.clone());
        snapshot(vec![vhost("e.test", vec![prefix("/", &t)])])
    };
    let l7 = L7::start(snap(&[a.addr, b.addr])).await?;
    let burst = |n: usize| {
        let addr = l7.http;
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|i| tokio::spawn(async move { get(addr, "e.test", &format!("/{i}")).await }))
                .collect();
            let mut count: HashMap<String, usize> = HashMap::new();
            for t in tasks {
                let r = t.await??;
                assert_eq!(r.status, 200);
                *count.entry(r.upstream().unwrap_or("?").into()).or_default() += 1;
            }
            anyhow::Ok(count)
        }
    };
    burst(8).await?;
    l7.apply(snap(&[a.addr, b.addr, c.addr]));
    let count = burst(45).await?;
    let new = count.get("c").copied().unwrap_or(0);
    assert!(new <= 24, "the new endpoint took {new}/45: {count:?}");
    assert!(new >= 5, "the new endpoint got only {new}/45: {count:?}");
    Ok(())
}

/// A read timeout goes on to the next endpoint (the default `error timeout`) but never ejects
/// the slow endpoint: it is one route's timeout meeting a slow path, and ejection would move
/// the Service's traffic away from it for every Ingress.
#[tokio::test]
async fn l7_read_timeouts_are_retried_but_do_not_eject() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let good = TestServer::echo("good").await?;
    let (slow, slow_hits) = answering("slow", 200, Duration::from_secs(2)).await?;
    let mut policy = test_policy();
    policy.timeouts.read = Duration::from_millis(150);
    let t = target_with("slow", upstream("slow", &[slow.addr, good.addr]), policy);
    let l7 = L7::start(snapshot(vec![vhost("t.test", vec![prefix("/", &t)])])).await?;
    for i in 0..14 {
        let r = get(l7.http, "t.test", &format!("/{i}")).await?;
        assert_eq!(
            (r.status.as_u16(), r.upstream()),
            (200, Some("good")),
            "{i}"
        );
    }
    // Round robin keeps offering it: more than the five failures that would eject it.
    assert!(slow_hits.load(SeqCst) >= 6, "{}", slow_hits.load(SeqCst));
    Ok(())
}

/// `proxy-next-upstream`: chosen answers, errors and timeouts after the request was sent go
/// on to the next endpoint for bodiless requests, within the tries and the
/// `proxy-next-upstream-timeout`; `off` stops even connect-failure retries.
#[tokio::test]
async fn l7_proxy_next_upstream_conditions() -> anyhow::Result<()> {
    use ingress::snapshot::NextUpstream;
    use std::sync::atomic::Ordering::SeqCst;
    let good = TestServer::echo("good").await?;
    let (busy, busy_hits) = answering("busy", 503, Duration::ZERO).await?;
    let (busy2, busy2_hits) = answering("busy2", 503, Duration::ZERO).await?;
    let (slow503, slow503_hits) = answering("slow503", 503, Duration::from_millis(150)).await?;
    let slow = TestServer::echo_slow("slow", Duration::from_secs(2)).await?;
    let resetter = Resetter::start().await?;
    let refused = refused_addr().await?;

    let with = |next: NextUpstream| {
        let mut p = test_policy();
        p.next_upstream = next;
        p
    };
    let on_503 = NextUpstream {
        statuses: vec![503],
        ..NextUpstream::default()
    };
    let mut on_503_any_method = on_503.clone();
    on_503_any_method.non_idempotent = true;
    let mut on_503_within = on_503.clone();
    on_503_within.timeout = Some(Duration::from_millis(50));
    // The default: `error timeout`.
    let mut timeout_policy = test_policy();
    timeout_policy.timeouts.read = Duration::from_millis(300);
    // `proxy-next-upstream: error`.
    let mut no_timeout_policy = with(NextUpstream {
        connect_timeout: false,
        sent_timeout: false,
        ..NextUpstream::default()
    });
    no_timeout_policy.timeouts.read = Duration::from_millis(300);
    let route = |name: &str, eps: &[std::net::SocketAddr], p: RoutePolicy| {
        target_with(name, upstream(name, eps), p)
    };
    let l7 = L7::start(snapshot(vec![vhost(
        "n.test",
        vec![
            prefix(
                "/503",
                &route("s", &[busy.addr, good.addr], with(on_503.clone())),
            ),
            // Its own upstream: each 503 counts towards ejecting `busy`.
            prefix(
                "/put-503",
                &route("p", &[busy.addr, good.addr], with(on_503.clone())),
            ),
            prefix(
                "/any-method",
                &route("m", &[busy.addr, good.addr], with(on_503_any_method)),
            ),
            prefix(
                "/all-busy",
                &route("a", &[busy.addr, busy2.addr], with(on_503.clone())),
            ),
            prefix(
                "/within",
                &route("w", &[slow503.addr, good.addr], with(on_503_within)),
            ),
            prefix(
                "/timeout",
                &route("t", &[slow.addr, good.addr], timeout_policy),
            ),
            prefix(
                "/no-timeout",
                &route("nt", &[slow.addr, good.addr], no_timeout_policy),
            ),
            prefix(
                "/reset",
                &route(
                    "r",
                    &[resetter.addr, good.addr],
                    with(NextUpstream::default()),
                ),
            ),
            prefix(
                "/off",
                &route("o", &[refused, good.addr], with(NextUpstream::off())),
            ),
        ],
    )]))
    .await?;

    // A 503 goes on to the next endpoint: the client sees the good answer.
    for i in 0..3 {
        let r = get(l7.http, "n.test", &format!("/503/{i}")).await?;
        assert_eq!(
            (r.status.as_u16(), r.upstream()),
            (200, Some("good")),
            "GET {i}"
        );
    }
    assert!(
        busy_hits.load(SeqCst) >= 1,
        "the 503 endpoint was never tried"
    );

    // A PUT's small body is kept as it streams: the PUT goes on to `good`, body intact.
    for i in 0..3 {
        let r = send(
            l7.http,
            build(
                http::Method::PUT,
                "n.test",
                &format!("/put-503/{i}"),
                Bytes::from_static(b"payload"),
            ),
        )
        .await?;
        assert_eq!(
            (r.status.as_u16(), r.json()["body_len"].as_u64()),
            (200, Some(7)),
            "PUT {i}"
        );
    }
    // A POST is not idempotent, with a body or without: it goes again only with
    // `non_idempotent`.
    // (Each list in a loop of its own: round robin alternates per pick, so interleaving
    // two kinds of request on one route would give each the same endpoint every time.)
    let post = |path: String, body: &'static [u8]| {
        send(
            l7.http,
            build(
                http::Method::POST,
                "n.test",
                &path,
                Bytes::from_static(body),
            ),
        )
    };
    let mut with_body = Vec::new();
    for i in 0..4 {
        with_body.push(
            post(format!("/503/b{i}"), b"payload")
                .await?
                .status
                .as_u16(),
        );
    }
    let mut bodiless = Vec::new();
    for i in 0..4 {
        bodiless.push(post(format!("/503/e{i}"), b"").await?.status.as_u16());
    }
    let mut any_method = Vec::new();
    for i in 0..4 {
        any_method.push(post(format!("/any-method/{i}"), b"").await?.status.as_u16());
    }
    assert!(
        with_body.contains(&503),
        "POST with a body went again: {with_body:?}"
    );
    assert!(
        bodiless.contains(&503),
        "bodiless POST went again: {bodiless:?}"
    );
    assert!(
        any_method.iter().all(|s| *s == 200),
        "non_idempotent: {any_method:?}"
    );

    // Every endpoint answers 503: the last answer is the client's, body and all, after the
    // three tries, which came round to the first endpoint again.
    let (b1, b2) = (busy_hits.load(SeqCst), busy2_hits.load(SeqCst));
    let r = get(l7.http, "n.test", "/all-busy").await?;
    assert_eq!(r.status.as_u16(), 503);
    assert!(r.text().ends_with("says 503"), "{}", r.text());
    let tries = (busy_hits.load(SeqCst) - b1, busy2_hits.load(SeqCst) - b2);
    assert!(tries == (2, 1) || tries == (1, 2), "{tries:?}");

    // `proxy-next-upstream-timeout`: once it has passed, no new try; the 503 stands.
    let mut within = Vec::new();
    for i in 0..4 {
        within.push(
            get(l7.http, "n.test", &format!("/within/{i}"))
                .await?
                .status
                .as_u16(),
        );
    }
    assert!(within.contains(&503), "{within:?}");
    assert!(slow503_hits.load(SeqCst) >= 1);

    // `timeout`: no response head within the read timeout goes on; without it, 504.
    for i in 0..2 {
        let r = get(l7.http, "n.test", &format!("/timeout/{i}")).await?;
        assert_eq!(
            (r.status.as_u16(), r.upstream()),
            (200, Some("good")),
            "timeout {i}"
        );
    }
    let mut plain = Vec::new();
    for i in 0..2 {
        plain.push(
            get(l7.http, "n.test", &format!("/no-timeout/{i}"))
                .await?
                .status
                .as_u16(),
        );
    }
    assert!(plain.contains(&504), "{plain:?}");

    // `error`: a connection reset after the request was sent goes on.
    for i in 0..4 {
        let r = get(l7.http, "n.test", &format!("/reset/{i}")).await?;
        assert_eq!(
            (r.status.as_u16(), r.upstream()),
            (200, Some("good")),
            "reset {i}"
        );
    }
    assert!(resetter.accepted.load(SeqCst) >= 1);

    // `off`: not even a refused connection is retried.
    let mut off = Vec::new();
    for i in 0..4 {
        off.push(
            get(l7.http, "n.test", &format!("/off/{i}"))
                .await?
                .status
                .as_u16(),
        );
    }
    assert!(off.contains(&502), "{off:?}");
    assert!(off.contains(&200), "{off:?}");
    Ok(())
}

/// A GET with a chunked body (a search API's query) reaches an HTTP/1.1 upstream with its
/// body: hyper's client would send a GET body of unknown length as none.
#[tokio::test]
async fn l7_get_with_a_chunked_body_keeps_its_body() -> anyhow::Result<()> {
    let up = TestServer::echo("search").await?;
    let t = target("search", upstream("search", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("s.test", vec![prefix("/", &t)])])).await?;
    let out = raw(
        l7.http,
        b"GET /_search HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5\r\n{\"q\":\r\n3\r\n1}\n\r\n0\r\n\r\n",
    )
    .await?;
    assert_eq!(raw_status(&out), Some(200), "{out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    let seen: serde_json::Value = serde_json::from_str(body.trim())
        .or_else(|_| {
            // A chunked answer: the JSON is the first chunk's data.
            serde_json::from_str(body.lines().nth(1).unwrap_or_default())
        })
        .map_err(|e| anyhow::anyhow!("not JSON ({e}): {out}"))?;
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["body_len"], 8, "{seen}");
    // A bodiless GET still goes without one.
    let r = get(l7.http, "s.test", "/plain").await?;
    assert_eq!(r.json()["body_len"], 0);
    assert_eq!(r.seen_header("transfer-encoding"), None);
    Ok(())
}

//! Annotation behaviours from `RoutePolicy`, end to end.
use anyhow::Context as _;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use ingress::snapshot::{BasicAuth, Cors, Redirect, RoutePolicy};
use tests::{l7::*, upstream::*};

fn policy(f: impl FnOnce(&mut RoutePolicy)) -> RoutePolicy {
    let mut p = test_policy();
    f(&mut p);
    p
}

#[tokio::test]
async fn l7_rewrite_app_root_and_redirects() -> anyhow::Result<()> {
    let up = TestServer::echo("rw").await?;
    let u = upstream("rw", &[up.addr]);
    let re = target_with(
        "re",
        u.clone(),
        policy(|p| p.rewrite_target = Some("/$2".into())),
    );
    let pre = target_with(
        "pre",
        u.clone(),
        policy(|p| p.rewrite_target = Some("/v2".into())),
    );
    let query = target_with(
        "query",
        u.clone(),
        policy(|p| p.rewrite_target = Some("/items?id=$1".into())),
    );
    let drop_query = target_with(
        "drop-query",
        u.clone(),
        policy(|p| p.rewrite_target = Some("/fixed?".into())),
    );
    let root = target_with(
        "root",
        u.clone(),
        policy(|p| p.app_root = Some("/app1".into())),
    );
    // `rewrite-target: /` on `path: /`, as tutorials copy it: nothing to rewrite.
    let same = target_with(
        "same",
        u.clone(),
        policy(|p| p.rewrite_target = Some("/".into())),
    );
    let perm = target_with(
        "perm",
        u.clone(),
        policy(|p| {
            p.redirect = Some(Redirect {
                status: 308,
                location: "https://new.example/".into(),
            })
        }),
    );
    let temp = target_with(
        "temp",
        u.clone(),
        policy(|p| {
            p.redirect = Some(Redirect {
                status: 302,
                location: "https://tmp.example/x".into(),
            })
        }),
    );
    // `app-root` is the host's (the translator takes the oldest Ingress's): `/` redirects
    // even where the host routes only the app's own path, as ingress-nginx's server-level
    // `if` does.
    let with_root = |name: &str, routes| {
        let mut h = vhost(name, routes);
        h.app_root = Some("/app1".into());
        h
    };
    let snap = snapshot(vec![
        vhost(
            "rw.test",
            vec![
                regex("/something(/|$)(.*)", &re),
                prefix("/api", &pre),
                regex("/item/([0-9]+)", &query),
                regex("/drop", &drop_query),
            ],
        ),
        with_root("root.test", vec![prefix("/", &root)]),
        with_root("app-only.test", vec![prefix("/app1", &root)]),
        vhost("same.test", vec![regex("/", &same)]),
        vhost("perm.test", vec![prefix("/", &perm)]),
        vhost("temp.test", vec![prefix("/", &temp)]),
    ]);
    let l7 = L7::start(snap).await?;

    for (path, want) in [
        ("/something/new/path?x=1", "/new/path?x=1"),
        ("/something", "/"),
        ("/SOMETHING/Case", "/Case"),
        ("/api/users/7", "/v2/users/7"),
        ("/api", "/v2"),
        // nginx's `rewrite`: the target's arguments, then the request's; a target ending in
        // `?` drops the request's.
        ("/item/42?x=1", "/items?id=42&x=1"),
        ("/item/42", "/items?id=42"),
        ("/drop/a?x=1", "/fixed"),
    ] {
        let r = get(l7.http, "rw.test", path).await?;
        assert_eq!(r.json()["uri"], want, "{path}");
    }
    let r = get(l7.http, "same.test", "/foo/bar?x=1").await?;
    assert_eq!(r.json()["uri"], "/foo/bar?x=1");
    let r = get(l7.http, "root.test", "/").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (302, Some("/app1"))
    );
    assert_eq!(get(l7.http, "root.test", "/app1").await?.status, 200);
    let r = get(l7.http, "app-only.test", "/").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (302, Some("/app1"))
    );
    let r = get(l7.http, "perm.test", "/any").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (308, Some("https://new.example/"))
    );
    let r = get(l7.http, "temp.test", "/any").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (302, Some("https://tmp.example/x"))
    );
    assert_eq!(up.hits(), 10);
    Ok(())
}

#[tokio::test]
async fn l7_body_size_limit_413() -> anyhow::Result<()> {
    let up = TestServer::echo("body").await?;
    let t = target_with(
        "body",
        upstream("body", &[up.addr]),
        policy(|p| p.max_body_bytes = Some(1000)),
    );
    let l7 = L7::start(snapshot(vec![vhost("b.test", vec![prefix("/", &t)])])).await?;

    // Declared too large: refused up front, nothing forwarded.
    let r = send(
        l7.http,
        build(
            http::Method::POST,
            "b.test",
            "/",
            Bytes::from(vec![b'x'; 1001]),
        ),
    )
    .await?;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (413, "413 Request Entity Too Large\n")
    );
    assert_eq!(up.hits(), 0);
    let r = send(
        l7.http,
        build(
            http::Method::POST,
            "b.test",
            "/",
            Bytes::from(vec![b'x'; 1000]),
        ),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 1000);

    // Chunked (no length): cut off once it passes the limit.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..5)
        .map(|_| Ok(Frame::data(Bytes::from(vec![b'y'; 400]))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "b.test")
        .body(body)?;
    let stream = tokio::net::TcpStream::connect(l7.http).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await?.to_bytes();
    assert_eq!(&body[..], b"413 Request Entity Too Large\n");
    // The upstream never got a complete request.
    assert!(up.seen().iter().all(|s| s.body.len() <= 1000));
    Ok(())
}

#[tokio::test]
async fn l7_source_ranges_and_rate_limit() -> anyhow::Result<()> {
    let up = TestServer::echo("acl").await?;
    let u = upstream("acl", &[up.addr]);
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap_or_else(|e| panic!("{e}"));
    let allow_other = target_with(
        "allow-other",
        u.clone(),
        policy(|p| p.allow_sources = vec![net("10.0.0.0/8")]),
    );
    let allow_me = target_with(
        "allow-me",
        u.clone(),
        policy(|p| p.allow_sources = vec![net("127.0.0.1/32")]),
    );
    let deny_me = target_with(
        "deny-me",
        u.clone(),
        policy(|p| p.deny_sources = vec![net("127.0.0.0/8")]),
    );
    let limited = target_with("limited", u.clone(), policy(|p| p.limit_rps = Some(2)));
    let per_minute = target_with(
        "per-minute",
        u.clone(),
        policy(|p| {
            p.limit_rpm = Some(3);
            p.limit_burst_multiplier = 1;
        }),
    );
    let exempt = target_with(
        "exempt",
        u.clone(),
        policy(|p| {
            p.limit_rps = Some(1);
            p.limit_burst_multiplier = 1;
            p.limit_exempt = vec![net("127.0.0.0/8")];
        }),
    );
    let snap = snapshot(vec![vhost(
        "acl.test",
        vec![
            prefix("/other", &allow_other),
            prefix("/me", &allow_me),
            prefix("/deny", &deny_me),
            prefix("/limited", &limited),
            prefix("/per-minute", &per_minute),
            prefix("/exempt", &exempt),
        ],
    )]);
    let l7 = L7::start(snap).await?;
    let r = get(l7.http, "acl.test", "/other").await?;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (403, "403 Forbidden\n")
    );
    assert_eq!(get(l7.http, "acl.test", "/me").await?.status, 200);
    assert_eq!(get(l7.http, "acl.test", "/deny").await?.status, 403);
    assert_eq!(up.hits(), 1);

    // 2 rps with a burst of 10: the first 11 pass (nginx's `burst=10 nodelay`), the rest get
    // 503 until tokens refill.
    let mut conn = H1::connect(l7.http).await?;
    let mut codes = Vec::new();
    for _ in 0..15 {
        codes.push(
            conn.send(build(
                http::Method::GET,
                "acl.test",
                "/limited",
                Bytes::new(),
            ))
            .await?
            .status
            .as_u16(),
        );
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 11, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 4, "{codes:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        conn.send(build(
            http::Method::GET,
            "acl.test",
            "/limited",
            Bytes::new()
        ))
        .await?
        .status,
        200
    );

    // 3 a minute with a burst of 3 (multiplier 1): the fifth within the minute is refused.
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = conn
            .send(build(
                http::Method::GET,
                "acl.test",
                "/per-minute",
                Bytes::new(),
            ))
            .await?;
        codes.push(r.status.as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 200, 503]);
    // A client in limit-whitelist is never limited (1 rps, burst 1, 10 at once).
    for _ in 0..10 {
        let r = conn
            .send(build(
                http::Method::GET,
                "acl.test",
                "/exempt",
                Bytes::new(),
            ))
            .await?;
        assert_eq!(r.status, 200);
    }
    Ok(())
}

/// CORS preflights are answered before the rate limit, as ingress-nginx answers them in
/// its rewrite phase: a page's preflights do not use up its client's requests.
#[tokio::test]
async fn l7_cors_preflights_are_not_rate_limited() -> anyhow::Result<()> {
    let up = TestServer::echo("corsrl").await?;
    let cors = Cors {
        allow_origins: vec!["https://app.example".into()],
        allow_methods: "GET, PUT".into(),
        allow_headers: "X-Custom".into(),
        expose_headers: String::new(),
        allow_credentials: false,
        max_age: 60,
    };
    let t = target_with(
        "corsrl",
        upstream("corsrl", &[up.addr]),
        policy(|p| {
            p.cors = Some(cors);
            p.limit_rps = Some(1);
        }),
    );
    let l7 = L7::start(snapshot(vec![vhost("rl.test", vec![prefix("/", &t)])])).await?;
    let req = |method: &str| {
        http::Request::builder()
            .method(method)
            .uri("/r")
            .header("host", "rl.test")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "PUT")
            .body(Full::new(Bytes::new()))
    };
    for i in 0..12 {
        let r = send(l7.http, req("OPTIONS")?).await?;
        assert_eq!(r.status, 204, "preflight {i}");
    }
    let mut limited = 0;
    for _ in 0..12 {
        if send(l7.http, req("GET")?).await?.status == 503 {
            limited += 1;
        }
    }
    assert!(limited > 0, "the rate limit never applied to GETs");
    Ok(())
}

#[tokio::test]
async fn l7_cors_preflight_and_response_headers() -> anyhow::Result<()> {
    let up = TestServer::echo("cors").await?;
    let cors = Cors {
        allow_origins: vec![
            "https://app.example".into(),
            "https://*.wild.example".into(),
        ],
        allow_methods: "GET, PUT, POST".into(),
        allow_headers: "Authorization, X-Custom".into(),
        expose_headers: "X-Upstream".into(),
        allow_credentials: true,
        max_age: 1728000,
    };
    let t = target_with(
        "cors",
        upstream("cors", &[up.addr]),
        policy(|p| p.cors = Some(cors)),
    );
    let l7 = L7::start(snapshot(vec![vhost("cors.test", vec![prefix("/", &t)])])).await?;
    let with_origin = |method: &str, origin: &str| {
        http::Request::builder()
            .method(method)
            .uri("/res")
            .header("host", "cors.test")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .body(Full::new(Bytes::new()))
    };
    // A wildcard origin covers one label under it.
    let r = send(
        l7.http,
        with_origin("OPTIONS", "https://team.wild.example")?,
    )
    .await?;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://team.wild.example")
    );
    let r = send(l7.http, with_origin("OPTIONS", "https://app.example")?).await?;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, PUT, POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("Authorization, X-Custom")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("1728000"));
    assert_eq!(up.hits(), 0, "preflight answered by the proxy");

    let r = send(l7.http, with_origin("GET", "https://app.example")?).await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("X-Upstream")
    );
    // A foreign origin gets no CORS headers (and its OPTIONS goes to the upstream).
    let r = send(l7.http, with_origin("GET", "https://evil.example")?).await?;
    assert!(r.header("access-control-allow-origin").is_none());
    let r = send(l7.http, with_origin("OPTIONS", "https://evil.example")?).await?;
    assert_eq!(r.upstream(), Some("cors"));
    Ok(())
}

/// A route whose auth Secret is missing or unusable is denied (503), as ingress-nginx denies
/// the location: the protected path is neither served unauthenticated by the host's
/// less specific route nor passed to its own upstream.
#[tokio::test]
async fn l7_denied_auth_answers_503() -> anyhow::Result<()> {
    let up = TestServer::echo("auth").await?;
    let open = target("open", upstream("auth", &[up.addr]));
    let denied = Arc::new(BasicAuth {
        realm: "Staff Only".into(),
        users: Default::default(),
        denied: true,
    });
    let admin = target_with(
        "admin",
        upstream("auth", &[up.addr]),
        policy(|p| p.basic_auth = Some(denied)),
    );
    let l7 = L7::start(snapshot(vec![vhost(
        "auth.test",
        vec![prefix("/admin", &admin), prefix("/", &open)],
    )]))
    .await?;
    let r = get(l7.http, "auth.test", "/admin/secret").await?;
    assert_eq!(r.status, 503);
    assert_eq!(up.hits(), 0, "a denied route reached the upstream");
    let r = get(l7.http, "auth.test", "/public").await?;
    assert_eq!(r.status, 200);
    Ok(())
}

#[tokio::test]
async fn l7_basic_auth() -> anyhow::Result<()> {
    let up = TestServer::echo("auth").await?;
    let bcrypt = pwhash::bcrypt::hash_with(
        pwhash::bcrypt::BcryptSetup {
            cost: Some(4),
            variant: Some(pwhash::bcrypt::BcryptVariant::V2y),
            ..Default::default()
        },
        "b-pass",
    )?;
    let users = BTreeMap::from([
        (
            "apr".to_string(),
            "$apr1$xyzsalt$JVPGl77ThvY9HAGwus/Uu1".to_string(),
        ),
        (
            "sha".to_string(),
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".to_string(),
        ),
        ("bc".to_string(), bcrypt),
        (
            "md5".to_string(),
            "$1$xyzsalt$2eTsT8hwLX2wFYs8OL8u20".to_string(),
        ),
    ]);
    let auth = Arc::new(BasicAuth {
        realm: "Staff Only".into(),
        users,
        denied: false,
    });
    let t = target_with(
        "auth",
        upstream("auth", &[up.addr]),
        policy(|p| p.basic_auth = Some(auth)),
    );
    let l7 = L7::start(snapshot(vec![vhost("auth.test", vec![prefix("/", &t)])])).await?;
    let with_creds = |user: &str, pass: &str| {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        http::Request::builder()
            .uri("/")
            .header("host", "auth.test")
            .header("authorization", format!("Basic {v}"))
            .body(Full::new(Bytes::new()))
    };
    let r = get(l7.http, "auth.test", "/").await?;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Staff Only\"")
    );
    for (user, pass) in [
        ("apr", "password"),
        ("sha", "password"),
        ("bc", "b-pass"),
        ("md5", "password"),
        ("bc", "b-pass"),
    ] {
        let r = send(l7.http, with_creds(user, pass)?).await?;
        assert_eq!(r.status, 200, "{user}");
        let seen = up.last().context("the upstream saw no request")?;
        assert!(
            seen.headers.get("authorization").is_none(),
            "the client's credentials reached the upstream: {:?}",
            seen.headers.get("authorization")
        );
    }
    for (user, pass) in [
        ("apr", "wrong"),
        ("bc", "wrong"),
        ("nobody", "password"),
        ("sha", ""),
    ] {
        let r = send(l7.http, with_creds(user, pass)?).await?;
        assert_eq!(r.status, 401, "{user}:{pass}");
    }
    assert_eq!(up.hits(), 5);
    Ok(())
}

#[tokio::test]
async fn l7_custom_http_errors() -> anyhow::Result<()> {
    let app = TestServer::echo("app").await?;
    let errors = TestServer::echo("errors").await?;
    let t = target_with(
        "app",
        upstream("app", &[app.addr]),
        policy(|p| p.custom_http_errors = vec![404, 503]),
    );
    let mut snap = snapshot(vec![vhost("ce.test", vec![prefix("/", &t)])]);
    set_default_service(
        &mut snap,
        Some(target(
            "default-backend",
            upstream("errors", &[errors.addr]),
        )),
    );
    let l7 = L7::start(snap.clone()).await?;

    let req = http::Request::builder()
        .uri("/status/503?x=1")
        .header("host", "ce.test")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))?;
    let r = send(l7.http, req).await?;
    assert_eq!(r.upstream(), Some("errors"), "{}", r.text());
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(h["x-code"], "503");
    assert_eq!(h["x-format"], "application/json");
    assert_eq!(h["x-original-uri"], "/status/503?x=1");
    assert_eq!(h["x-namespace"], "default");
    assert_eq!(h["x-ingress-name"], "app");
    assert_eq!(h["x-service-name"], "app");
    assert_eq!(h["x-service-port"], "80");
    assert!(h["x-request-id"].as_str().is_some_and(|v| v.len() == 32));
    // The client's Host, as `$best_http_host`: one error backend can answer per site.
    assert_eq!(h["host"], "ce.test");
    // Codes not listed pass through.
    let r = get(l7.http, "ce.test", "/status/500").await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (500, Some("app")));

    // The proxy's own 502/503 are replaced too (nginx's error_page covers them): a route
    // whose only endpoint refuses connections, and one with no endpoint at all.
    let refused = refused_addr().await?;
    let dead = target_with(
        "dead",
        upstream("dead", &[refused]),
        policy(|p| p.custom_http_errors = vec![502, 503]),
    );
    let empty = target_with(
        "empty",
        upstream("empty", &[]),
        policy(|p| p.custom_http_errors = vec![502, 503]),
    );
    let mut own = snap.clone();
    own.http
        .hosts
        .push(vhost("dead.test", vec![prefix("/", &dead)]));
    own.http
        .hosts
        .push(vhost("empty.test", vec![prefix("/", &empty)]));
    own.generation += 500;
    l7.apply(own);
    for (host, code) in [("dead.test", "502"), ("empty.test", "503")] {
        let r = get(l7.http, host, "/x").await?;
        assert_eq!(r.upstream(), Some("errors"), "{host}: {}", r.text());
        assert_eq!(r.json()["headers"]["x-code"], code, "{host}");
    }

    // No default backend: a short proxy body with the original code.
    set_default_service(&mut snap, None);
    snap.generation += 1000;
    l7.apply(snap);
    let r = get(l7.http, "ce.test", "/status/404").await?;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (404, "404 Not Found\n")
    );
    assert_eq!(r.upstream(), None);
    Ok(())
}

/// The proxy's own refusals (a source range, the rate limit, the body size, basic auth) get
/// the custom error page when their code is listed, as nginx's `error_page` covers what its
/// own modules answer; and every answer of a CORS route carries its CORS headers, so a page
/// script can read the 401 or 503 instead of failing on an opaque CORS error.
#[tokio::test]
async fn l7_own_refusals_get_custom_error_pages_and_cors_headers() -> anyhow::Result<()> {
    let app = TestServer::echo("app").await?;
    let errors = TestServer::echo("errors").await?;
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap_or_else(|e| panic!("{e}"));
    let auth = Arc::new(BasicAuth {
        realm: "Staff".into(),
        users: Default::default(),
        denied: false,
    });
    let cors = Cors {
        allow_origins: vec!["https://app.example".into()],
        allow_methods: "GET".into(),
        allow_headers: "X-Custom".into(),
        expose_headers: String::new(),
        allow_credentials: true,
        max_age: 60,
    };
    let refusing = |name: &str, codes: Vec<u16>, set: &dyn Fn(&mut RoutePolicy)| {
        target_with(
            name,
            upstream("app", &[app.addr]),
            policy(|p| {
                p.custom_http_errors = codes;
                p.cors = Some(cors.clone());
                set(p);
            }),
        )
    };
    let hosts = [
        (
            "acl.test",
            refusing("acl", vec![403], &|p| {
                p.allow_sources = vec![net("10.0.0.0/8")]
            }),
        ),
        (
            "rl.test",
            refusing("rl", vec![503], &|p| {
                p.limit_rps = Some(1);
                p.limit_burst_multiplier = 1;
            }),
        ),
        (
            "big.test",
            refusing("big", vec![413], &|p| p.max_body_bytes = Some(4)),
        ),
        (
            "auth.test",
            refusing("auth", vec![401], &|p| p.basic_auth = Some(auth.clone())),
        ),
        // Not listed: the proxy's own page, with the CORS headers.
        (
            "plain.test",
            refusing("plain", vec![404], &|p| p.basic_auth = Some(auth.clone())),
        ),
    ];
    let mut snap = snapshot(
        hosts
            .iter()
            .map(|(h, t)| vhost(h, vec![prefix("/", t)]))
            .collect(),
    );
    set_default_service(
        &mut snap,
        Some(target(
            "default-backend",
            upstream("errors", &[errors.addr]),
        )),
    );
    let l7 = L7::start(snap).await?;
    let request = |host: &str, body: &'static str| {
        http::Request::builder()
            .method(if body.is_empty() { "GET" } else { "POST" })
            .uri("/page")
            .header("host", host)
            .header("origin", "https://app.example")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
    };
    let cors_of = |r: &Reply| {
        (
            r.header("access-control-allow-origin").map(str::to_owned),
            r.header("access-control-allow-credentials")
                .map(str::to_owned),
        )
    };
    let want_cors = (
        Some("https://app.example".to_owned()),
        Some("true".to_owned()),
    );
    // The rate limit lets the first two requests through (1 rps, burst 1).
    for _ in 0..2 {
        let r = send(l7.http, request("rl.test", "")?).await?;
        assert_eq!((r.status.as_u16(), r.upstream()), (200, Some("app")));
        assert_eq!(cors_of(&r), want_cors, "an upstream answer");
    }
    for (host, body, code) in [
        ("acl.test", "", "403"),
        ("rl.test", "", "503"),
        ("big.test", "too large", "413"),
        ("auth.test", "", "401"),
    ] {
        let r = send(l7.http, request(host, body)?).await?;
        assert_eq!(r.upstream(), Some("errors"), "{host}: {}", r.text());
        let h = &r.json()["headers"];
        assert_eq!(
            (h["x-code"].as_str(), h["host"].as_str()),
            (Some(code), Some(host))
        );
        assert_eq!(cors_of(&r), want_cors, "{host}");
    }
    let r = send(l7.http, request("plain.test", "")?).await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (401, None));
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"Staff\""));
    assert_eq!(cors_of(&r), want_cors, "the proxy's own 401");
    assert_eq!(app.hits(), 2, "no refused request reached the app");
    // A preflight still carries its headers once, not twice.
    let r = send(
        l7.http,
        http::Request::builder()
            .method("OPTIONS")
            .uri("/page")
            .header("host", "plain.test")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .body(Full::new(Bytes::new()))?,
    )
    .await?;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.headers.get_all("vary").iter().count(),
        1,
        "{:?}",
        r.headers
    );
    Ok(())
}

#[tokio::test]
async fn l7_upstream_body_read_timeout_cuts_stalled_response() -> anyhow::Result<()> {
    let up = TestServer::echo("stall").await?;
    let t = target_with(
        "stall",
        upstream("stall", &[up.addr]),
        policy(|p| p.timeouts.read = Duration::from_millis(300)),
    );
    let l7 = L7::start(snapshot(vec![vhost("st.test", vec![prefix("/", &t)])])).await?;
    // The head comes at once; the body stalls past the read timeout: the response is cut.
    let stream = tokio::net::TcpStream::connect(l7.http).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(
        WAIT,
        sender.send_request(build(
            http::Method::GET,
            "st.test",
            "/slowbody/3000",
            Bytes::new(),
        )),
    )
    .await??;
    assert_eq!(resp.status(), 200);
    let started = std::time::Instant::now();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect()).await?;
    assert!(body.is_err(), "a stalled body must not complete");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    // A stall shorter than the timeout is fine.
    let r = get(l7.http, "st.test", "/slowbody/100").await?;
    assert_eq!(r.text(), "first;second");
    Ok(())
}

#[tokio::test]
async fn l7_send_timeout_on_stalled_request_body() -> anyhow::Result<()> {
    let up = TestServer::echo("upload").await?;
    let t = target_with(
        "upload",
        upstream("upload", &[up.addr]),
        policy(|p| p.timeouts.send = Duration::from_millis(300)),
    );
    let l7 = L7::start(snapshot(vec![vhost("", vec![prefix("/", &t)])])).await?;
    let (status, took) = stalled_upload(l7.http).await?;
    assert_eq!(status, Some(408));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // CONNECT is not proxied.
    let out = raw(
        l7.http,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(raw_status(&out), Some(405), "{out}");
    Ok(())
}

/// Uploads `len` bytes on an h2 stream, waiting for flow-control capacity; returns how many
/// were sent before the server reset the stream (all of them if it never did).
async fn upload(send: &mut h2::SendStream<Bytes>, len: usize, end: bool) -> anyhow::Result<usize> {
    let mut sent = 0;
    while sent < len {
        send.reserve_capacity((len - sent).min(16_384));
        let cap =
            match tokio::time::timeout(WAIT, std::future::poll_fn(|cx| send.poll_capacity(cx)))
                .await?
            {
                Some(Ok(c)) => c,
                Some(Err(_)) | None => return Ok(sent),
            };
        let last = end && sent + cap >= len;
        if send.send_data(Bytes::from(vec![b'x'; cap]), last).is_err() {
            return Ok(sent);
        }
        sent += cap;
    }
    Ok(sent)
}

/// Sends `req` (its content-length declared), uploads 16 KiB, expects the answer `want` before
/// the rest, then checks the stream stays open (no reset within 300 ms) and takes the rest of
/// the upload. Returns the client for the next request.
async fn answered_early_then_drained(
    mut client: h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    want: (u16, &[u8]),
) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let total: usize = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the request declares no length"))?;
    let (resp, mut send) = client.send_request(req, false)?;
    assert_eq!(upload(&mut send, 16_384, false).await?, 16_384);
    let resp = tokio::time::timeout(WAIT, resp).await??;
    assert_eq!(resp.status(), want.0);
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.data()).await? {
        text.extend_from_slice(&chunk?);
    }
    assert_eq!(text, want.1);
    // The response is complete; the stream must stay open for the rest of the upload.
    let reset = tokio::time::timeout(
        Duration::from_millis(300),
        std::future::poll_fn(|cx| send.poll_reset(cx)),
    )
    .await;
    assert!(reset.is_err(), "stream reset after the response: {reset:?}");
    assert_eq!(
        upload(&mut send, total - 16_384, true).await?,
        total - 16_384
    );
    Ok(client)
}

/// An h2 client still uploading when the 413 comes: the proxy reads and discards the rest of
/// the body (up to 4 MiB) so the stream ends normally, instead of resetting it under the
/// client (curl 7.88 reported "Stream error in the HTTP/2 framing layer" and no response).
/// Past the bound the stream is reset with NO_ERROR.
#[tokio::test]
async fn l7_h2_upload_answered_early_is_drained_not_reset() -> anyhow::Result<()> {
    let up = TestServer::echo("body3").await?;
    let t = target_with(
        "body3",
        upstream("body3", &[up.addr]),
        policy(|p| p.max_body_bytes = Some(1000)),
    );
    let l7 = L7::start(snapshot(vec![vhost("b3.test", vec![prefix("/", &t)])])).await?;
    let tcp = tokio::net::TcpStream::connect(l7.http).await?;
    let (client, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(conn);
    let post = |len: usize| {
        http::Request::builder()
            .method("POST")
            .uri("http://b3.test/")
            .header("content-length", len)
            .body(())
    };

    let client = tokio::time::timeout(WAIT, client.ready()).await??;
    let client = answered_early_then_drained(
        client,
        post(1 << 20)?,
        (413, b"413 Request Entity Too Large\n"),
    )
    .await?;

    // Far past the drain bound: the proxy stops reading and resets with NO_ERROR.
    let mut client = tokio::time::timeout(WAIT, client.ready()).await??;
    let (resp, mut send) = client.send_request(post(64 << 20)?, false)?;
    let sent = upload(&mut send, 16 << 20, false).await?;
    assert_eq!(tokio::time::timeout(WAIT, resp).await??.status(), 413);
    assert!(sent < 16 << 20, "the proxy read 16 MiB of a refused body");
    let reason =
        tokio::time::timeout(WAIT, std::future::poll_fn(|cx| send.poll_reset(cx))).await??;
    assert_eq!(reason, h2::Reason::NO_ERROR);

    // The connection still serves requests, and nothing of the refused bodies went upstream.
    let mut client = tokio::time::timeout(WAIT, client.ready()).await??;
    let (resp, mut send) = client.send_request(post(10)?, false)?;
    send.send_data(Bytes::from_static(b"0123456789"), true)?;
    assert_eq!(tokio::time::timeout(WAIT, resp).await??.status(), 200);
    assert_eq!(up.hits(), 1);
    Ok(())
}

/// The same when the upstream answers before reading the body (an application's own 401 or
/// 413): the client's HTTP/2 stream is drained, not reset under its upload.
#[tokio::test]
async fn l7_h2_upload_answered_early_by_the_upstream_is_drained_not_reset() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start(|mut s, _| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let _ = s
            .write_all(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
            )
            .await;
    })
    .await?;
    let t = target("early", upstream("early", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("e.test", vec![prefix("/", &t)])])).await?;
    let tcp = tokio::net::TcpStream::connect(l7.http).await?;
    let (client, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(conn);
    let client = tokio::time::timeout(WAIT, client.ready()).await??;
    let req = http::Request::builder()
        .method("POST")
        .uri("http://e.test/")
        .header("content-length", 1 << 20)
        .body(())?;
    answered_early_then_drained(client, req, (401, b"nope")).await?;
    Ok(())
}

/// `upstream-vhost` replaces the Host the upstream sees (HTTP/1.1 `Host`, HTTP/2
/// `:authority`) while `X-Forwarded-Host` keeps the client's; `x-forwarded-prefix` is sent as
/// `X-Forwarded-Prefix`. Routes without them are untouched.
#[tokio::test]
async fn l7_upstream_vhost_and_forwarded_prefix() -> anyhow::Result<()> {
    let up = TestServer::echo("vh").await?;
    let with = |p: &mut RoutePolicy| {
        p.upstream_vhost = Some("internal.svc:8080".into());
        p.forwarded_prefix = Some("/api".into());
    };
    let h1 = target_with("vh1", upstream("vh1", &[up.addr]), policy(with));
    let h2 = target_with(
        "vh2",
        upstream_with("vh2", &[up.addr], ingress::snapshot::BackendProtocol::Grpc),
        policy(with),
    );
    let plain = target_with("plain", upstream("plain", &[up.addr]), test_policy());
    let l7 = L7::start(snapshot(vec![
        vhost("a.test", vec![prefix("/", &h1)]),
        vhost("b.test", vec![prefix("/", &h2)]),
        vhost("c.test", vec![prefix("/", &plain)]),
    ]))
    .await?;

    let r = get(l7.http, "a.test", "/x").await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("host").as_deref(), Some("internal.svc:8080"));
    assert_eq!(r.seen_header("x-forwarded-host").as_deref(), Some("a.test"));
    assert_eq!(r.seen_header("x-forwarded-prefix").as_deref(), Some("/api"));

    let r = get(l7.http, "b.test", "/y").await?;
    assert_eq!(r.status, 200);
    let seen = up.last().ok_or_else(|| anyhow::anyhow!("nothing seen"))?;
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(
        seen.uri.authority().map(|a| a.as_str()),
        Some("internal.svc:8080")
    );
    assert_eq!(seen.headers["x-forwarded-host"], "b.test");
    assert_eq!(seen.headers["x-forwarded-prefix"], "/api");

    let r = get(l7.http, "c.test", "/z").await?;
    assert_eq!(r.seen_header("host").as_deref(), Some("c.test"));
    assert_eq!(r.seen_header("x-forwarded-prefix"), None);
    Ok(())
}

/// `proxy-redirect-from` / `-to`: the upstream's redirects to its internal address come out
/// with the public prefix; routes without the annotation pass them as sent.
#[tokio::test]
async fn l7_proxy_redirect_rewrites_upstream_locations() -> anyhow::Result<()> {
    let up = TestServer::echo("loc").await?;
    let rewriting = target_with(
        "rw",
        upstream("loc", &[up.addr]),
        policy(|p| {
            p.redirect_rewrite = Some((
                "http://internal.test:8080/".into(),
                "https://www.example.com/app/".into(),
            ))
        }),
    );
    let plain = target_with("plain", upstream("loc", &[up.addr]), test_policy());
    let l7 = L7::start(snapshot(vec![
        vhost("rw.test", vec![prefix("/", &rewriting)]),
        vhost("plain.test", vec![prefix("/", &plain)]),
    ]))
    .await?;
    let r = get(l7.http, "rw.test", "/status/302").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (302, Some("https://www.example.com/app/next?step=2"))
    );
    let r = get(l7.http, "plain.test", "/status/302").await?;
    assert_eq!(
        r.header("location"),
        Some("http://internal.test:8080/next?step=2")
    );
    Ok(())
}

/// A plain or TLS connection of the stand-in auth service.
trait AuthIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AuthIo for T {}

/// A stand-in for oauth2-proxy's `/oauth2/auth`: `session=good` is alice (200 with
/// `X-Auth-Request-User`), `session=anon` passes without a user, `session=banned` is 403,
/// anything else 401. Records the `X-Original-URL` it was asked about.
async fn auth_service(
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let stream: Box<dyn AuthIo> = match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(s) => Box::new(s),
                        Err(_) => return,
                    },
                    None => Box::new(tcp),
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let h = req.headers();
                            let original = h
                                .get("x-original-url")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            seen.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(original);
                            let cookie =
                                h.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            if cookie.contains("session=good") {
                                r.headers_mut().insert(
                                    "x-auth-request-user",
                                    http::HeaderValue::from_static("alice"),
                                );
                                // A refreshed session, as oauth2-proxy sends.
                                r.headers_mut().append(
                                    "set-cookie",
                                    http::HeaderValue::from_static("session=good; Path=/"),
                                );
                                r.headers_mut().append(
                                    "set-cookie",
                                    http::HeaderValue::from_static("csrf=1; Path=/"),
                                );
                            } else if cookie.contains("session=anon") {
                            } else if h.get("x-auth-tenant").is_some_and(|v| v == "blue") {
                                // What `auth-proxy-set-headers` adds for its routes.
                                r.headers_mut().insert(
                                    "x-auth-request-user",
                                    http::HeaderValue::from_static("tenant-blue"),
                                );
                            } else if cookie.contains("session=banned") {
                                *r.status_mut() = http::StatusCode::FORBIDDEN;
                            } else {
                                *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                                r.headers_mut().insert(
                                    "www-authenticate",
                                    http::HeaderValue::from_static("Bearer"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    Ok((addr, task))
}

/// `auth-url`: the auth service decides, its user header reaches the upstream (and a client
/// cannot forge it), a 401 becomes the sign-in redirect, 403 stays 403, and an auth service
/// that cannot be reached fails closed (500). `auth-proxy-set-headers` reach the service;
/// with their ConfigMap unusable, the route answers 503 without asking it.
#[tokio::test]
async fn l7_external_auth() -> anyhow::Result<()> {
    use ingress::snapshot::ExternalAuth;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (auth, _task) = auth_service(seen.clone(), None).await?;
    let ca = tests::certs::TestCa::new()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tests::certs::server_config(
        ca.issue(&["localhost"])?,
        &[b"http/1.1"],
    )?);
    let (tls_auth, _tls_task) = auth_service(seen.clone(), Some(acceptor)).await?;
    let up = TestServer::echo("private").await?;
    let ext = |url: String, signin: Option<&str>| {
        policy(|p| {
            p.external_auth = Some(Arc::new(ExternalAuth {
                url,
                method: "GET".into(),
                signin: signin.map(str::to_string),
                redirect_param: "rd".into(),
                response_headers: vec!["x-auth-request-user".into()],
                cache: None,
                request_redirect: None,
                always_set_cookie: false,
                global: false,
                proxy_set_headers: Vec::new(),
                denied: false,
            }))
        })
    };
    let url = format!("http://{auth}/oauth2/auth");
    let signin = target_with(
        "signin",
        upstream("private", &[up.addr]),
        ext(url.clone(), Some("https://$host/oauth2/start")),
    );
    let plain = target_with("plain", upstream("private", &[up.addr]), ext(url, None));
    let dead = target_with(
        "dead",
        upstream("private", &[up.addr]),
        ext(format!("http://{}/auth", refused_addr().await?), None),
    );
    let over_tls = target_with(
        "tls",
        upstream("private", &[up.addr]),
        ext(
            format!("https://localhost:{}/oauth2/auth", tls_auth.port()),
            None,
        ),
    );
    let with_set_headers = |denied: bool| {
        let mut p = ext(format!("http://{auth}/oauth2/auth"), None);
        if let Some(e) = p.external_auth.as_mut() {
            let e = Arc::make_mut(e);
            e.proxy_set_headers = vec![("x-auth-tenant".into(), "blue".into())];
            e.denied = denied;
        }
        p
    };
    let tenant = target_with(
        "tenant",
        upstream("private", &[up.addr]),
        with_set_headers(false),
    );
    let denied = target_with(
        "denied",
        upstream("private", &[up.addr]),
        with_set_headers(true),
    );
    let l7 = L7::start(snapshot(vec![
        vhost("app.test", vec![prefix("/", &signin)]),
        vhost("api.test", vec![prefix("/", &plain)]),
        vhost("dead.test", vec![prefix("/", &dead)]),
        vhost("tls.test", vec![prefix("/", &over_tls)]),
        vhost("tenant.test", vec![prefix("/", &tenant)]),
        vhost("denied.test", vec![prefix("/", &denied)]),
    ]))
    .await?;
    let with_cookie = |host: &str, path: &str, cookie: &str| {
        http::Request::builder()
            .uri(path)
            .header("host", host)
            .header("cookie", cookie)
            .header("x-auth-request-user", "mallory")
            .body(Full::new(Bytes::new()))
    };

    let r = send(
        l7.http,
        with_cookie("app.test", "/page?id=7", "session=good")?,
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .map(String::as_str),
        Some("http://app.test/page?id=7")
    );
    // Allowed without a user: the client's own header does not get through.
    let r = send(l7.http, with_cookie("api.test", "/", "session=anon")?).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-auth-request-user"), None);

    let hits = up.hits();
    let r = get(l7.http, "app.test", "/page?id=7").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (
            302,
            Some("https://app.test/oauth2/start?rd=http%3A%2F%2Fapp.test%2Fpage%3Fid%3D7")
        )
    );
    let r = get(l7.http, "api.test", "/").await?;
    assert_eq!(
        (r.status.as_u16(), r.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    let r = send(l7.http, with_cookie("api.test", "/", "session=banned")?).await?;
    assert_eq!(r.status, 403);
    assert_eq!(get(l7.http, "dead.test", "/").await?.status, 500);
    let asked = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
    assert_eq!(get(l7.http, "denied.test", "/").await?.status, 503);
    assert_eq!(
        seen.lock().unwrap_or_else(|e| e.into_inner()).len(),
        asked,
        "a denied route does not ask the service"
    );
    assert_eq!(get(l7.http, "tls.test", "/").await?.status, 401);
    assert_eq!(up.hits(), hits, "nothing refused reached the upstream");
    // The service allows the tenant's requests by the header auth-proxy-set-headers adds.
    let r = get(l7.http, "tenant.test", "/").await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen_header("x-auth-request-user").as_deref(),
        Some("tenant-blue")
    );
    // An https:// auth service (its certificate is not checked, as by nginx by default).
    let r = send(l7.http, with_cookie("tls.test", "/t", "session=good")?).await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    Ok(())
}

/// `limit-connections`: requests in progress per client; one over the limit gets 503, and a
/// place comes back when its response is done. `limit-whitelist` clients are not counted.
#[tokio::test]
async fn l7_limit_connections() -> anyhow::Result<()> {
    let up = TestServer::echo("conn").await?;
    let u = upstream("conn", &[up.addr]);
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap_or_else(|e| panic!("{e}"));
    let limited = target_with(
        "limited",
        u.clone(),
        policy(|p| p.limit_connections = Some(2)),
    );
    let exempt = target_with(
        "exempt",
        u.clone(),
        policy(|p| {
            p.limit_connections = Some(1);
            p.limit_exempt = vec![net("127.0.0.0/8")];
        }),
    );
    let l7 = L7::start(snapshot(vec![
        vhost("conn.test", vec![prefix("/", &limited)]),
        vhost("free.test", vec![prefix("/", &exempt)]),
    ]))
    .await?;
    let slow = |host: &'static str| {
        let addr = l7.http;
        tokio::spawn(async move {
            get(addr, host, "/delay/400")
                .await
                .map(|r| r.status.as_u16())
        })
    };
    let mut statuses = Vec::new();
    for task in (0..3).map(|_| slow("conn.test")).collect::<Vec<_>>() {
        statuses.push(task.await??);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503], "two in progress at most");
    // Every place came back: the same client is served again, twice at once.
    let again: Vec<_> = (0..2).map(|_| slow("conn.test")).collect();
    for task in again {
        assert_eq!(task.await??, 200);
    }
    // Exempt clients are not counted at all.
    let mut statuses = Vec::new();
    for task in (0..3).map(|_| slow("free.test")).collect::<Vec<_>>() {
        statuses.push(task.await??);
    }
    assert_eq!(statuses, [200, 200, 200]);

    // `limit-conn-status-code` and `limit-req-status-code` from the controller ConfigMap.
    let rate = target_with(
        "rate",
        u.clone(),
        policy(|p| {
            p.limit_rps = Some(1);
            p.limit_burst_multiplier = 1;
        }),
    );
    let mut snap = snapshot(vec![
        vhost("conn.test", vec![prefix("/", &limited)]),
        vhost("rate.test", vec![prefix("/", &rate)]),
    ]);
    snap.global.limit_conn_status = 429;
    snap.global.limit_req_status = 420;
    l7.apply(snap);
    let mut statuses = Vec::new();
    for task in (0..3).map(|_| slow("conn.test")).collect::<Vec<_>>() {
        statuses.push(task.await??);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429]);
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(get(l7.http, "rate.test", "/").await?.status.as_u16());
    }
    assert_eq!(codes, [200, 200, 420, 420]);
    Ok(())
}

/// `default-backend`: the Ingress's own stand-in serves its routes while their backend has
/// no endpoint, and answers their `custom-http-errors` instead of the global default backend.
#[tokio::test]
async fn l7_annotated_default_backend() -> anyhow::Result<()> {
    let app = TestServer::echo("app").await?;
    let own = TestServer::echo("own-errors").await?;
    let global = TestServer::echo("global-errors").await?;
    let with_default = |name: &str, up: Arc<ingress::snapshot::Upstream>, codes: Vec<u16>| {
        let mut t = (*target_with(name, up, policy(|p| p.custom_http_errors = codes))).clone();
        t.default_backend = Some(upstream("own-errors", &[own.addr]));
        Arc::new(t)
    };
    let empty = with_default("empty", upstream("empty", &[]), Vec::new());
    let app_t = with_default("app", upstream("app", &[app.addr]), vec![404]);
    let plain = target_with(
        "plain",
        upstream("app", &[app.addr]),
        policy(|p| p.custom_http_errors = vec![404]),
    );
    let mut snap = snapshot(vec![
        vhost("empty.test", vec![prefix("/", &empty)]),
        vhost("app.test", vec![prefix("/", &app_t)]),
        vhost("plain.test", vec![prefix("/", &plain)]),
    ]);
    set_default_service(
        &mut snap,
        Some(target(
            "default-backend",
            upstream("global-errors", &[global.addr]),
        )),
    );
    let l7 = L7::start(snap).await?;

    // No endpoint: the whole request goes to the stand-in, path and all.
    let r = get(l7.http, "empty.test", "/some/page?q=1").await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, Some("own-errors")));
    assert_eq!(r.json()["uri"], "/some/page?q=1");
    // An intercepted error: the Ingress's own default backend, not the global one.
    let r = get(l7.http, "app.test", "/status/404").await?;
    assert_eq!(r.upstream(), Some("own-errors"), "{}", r.text());
    assert_eq!(r.json()["headers"]["x-code"], "404");
    let r = get(l7.http, "plain.test", "/status/404").await?;
    assert_eq!(r.upstream(), Some("global-errors"), "{}", r.text());
    // Normal answers are the app's.
    let r = get(l7.http, "app.test", "/x").await?;
    assert_eq!(r.upstream(), Some("app"));
    Ok(())
}

/// `auth-cache-key` / `auth-cache-duration`: an answer is kept per key value and route for
/// its time, only for the listed codes; another key value, or another route, asks again.
#[tokio::test]
async fn l7_external_auth_cache() -> anyhow::Result<()> {
    use ingress::snapshot::{AuthCacheSpec, ExternalAuth, HashKey, HashPart};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (auth, _task) = auth_service(seen.clone(), None).await?;
    let asked = || seen.lock().unwrap_or_else(|e| e.into_inner()).len();
    let up = TestServer::echo("private").await?;
    let ext = policy(|p| {
        p.external_auth = Some(Arc::new(ExternalAuth {
            url: format!("http://{auth}/oauth2/auth"),
            method: "GET".into(),
            signin: None,
            redirect_param: "rd".into(),
            response_headers: vec!["x-auth-request-user".into()],
            cache: Some(AuthCacheSpec {
                key: HashKey {
                    parts: vec![HashPart::Cookie("session".into())],
                },
                valid: vec![(Some(200), Duration::from_millis(800))],
            }),
            request_redirect: None,
            always_set_cookie: false,
            global: false,
            proxy_set_headers: Vec::new(),
            denied: false,
        }))
    });
    let t = target_with("cached", upstream("private", &[up.addr]), ext);
    let l7 = L7::start(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/a", &t), prefix("/b", &t)],
    )]))
    .await?;
    let req = |path: &str, session: &str| {
        http::Request::builder()
            .uri(path)
            .header("host", "c.test")
            .header("cookie", format!("session={session}"))
            .header("x-auth-request-user", "mallory")
            .body(Full::new(Bytes::new()))
    };
    for _ in 0..3 {
        let r = send(l7.http, req("/a/x", "good")?).await?;
        assert_eq!(r.status, 200, "{}", r.text());
        // The kept answer carries its headers too; the client's copy is still replaced.
        assert_eq!(
            r.seen_header("x-auth-request-user").as_deref(),
            Some("alice")
        );
    }
    assert_eq!(asked(), 1, "one question for three requests");
    // Another route is another keyspace.
    assert_eq!(send(l7.http, req("/b/x", "good")?).await?.status, 200);
    assert_eq!(asked(), 2);
    // 401 is not in the list: asked every time.
    for _ in 0..2 {
        assert_eq!(send(l7.http, req("/a/x", "nope")?).await?.status, 401);
    }
    assert_eq!(asked(), 4);
    // After its time the answer is asked for again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(send(l7.http, req("/a/x", "good")?).await?.status, 200);
    assert_eq!(asked(), 5);
    Ok(())
}

/// The auth service's `Set-Cookie`s reach the client on 2xx and redirects, and on every
/// answer with `auth-always-set-cookie`.
#[tokio::test]
async fn l7_external_auth_cookies() -> anyhow::Result<()> {
    use ingress::snapshot::ExternalAuth;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (auth, _task) = auth_service(seen.clone(), None).await?;
    let up = TestServer::echo("private").await?;
    let ext = |always: bool| {
        policy(|p| {
            p.external_auth = Some(Arc::new(ExternalAuth {
                url: format!("http://{auth}/oauth2/auth"),
                method: "GET".into(),
                signin: None,
                redirect_param: "rd".into(),
                response_headers: Vec::new(),
                cache: None,
                request_redirect: None,
                always_set_cookie: always,
                global: false,
                proxy_set_headers: Vec::new(),
                denied: false,
            }))
        })
    };
    let default = target_with("default", upstream("private", &[up.addr]), ext(false));
    let always = target_with("always", upstream("private", &[up.addr]), ext(true));
    let l7 = L7::start(snapshot(vec![
        vhost("d.test", vec![prefix("/", &default)]),
        vhost("a.test", vec![prefix("/", &always)]),
    ]))
    .await?;
    let cookies = |r: &Reply| -> Vec<String> {
        r.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let req = |host: &str, path: &str| {
        http::Request::builder()
            .uri(path)
            .header("host", host)
            .header("cookie", "session=good")
            .body(Full::new(Bytes::new()))
    };
    let r = send(l7.http, req("d.test", "/ok")?).await?;
    assert_eq!(r.status, 200);
    assert_eq!(cookies(&r), ["session=good; Path=/", "csrf=1; Path=/"]);
    let r = send(l7.http, req("d.test", "/status/404")?).await?;
    assert_eq!(r.status, 404);
    assert!(cookies(&r).is_empty(), "{:?}", cookies(&r));
    let r = send(l7.http, req("a.test", "/status/404")?).await?;
    assert_eq!(r.status, 404);
    assert_eq!(cookies(&r).len(), 2);
    Ok(())
}

/// `satisfy: any`: a client in the allow list needs no credentials, one outside it may still
/// sign in, and with neither it gets basic auth's 401 (not the 403); the default still asks
/// for both.
#[tokio::test]
async fn l7_satisfy_any() -> anyhow::Result<()> {
    let up = TestServer::echo("sat").await?;
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap_or_else(|e| panic!("{e}"));
    let auth = Arc::new(BasicAuth {
        realm: "Staff".into(),
        users: BTreeMap::from([(
            "sha".to_string(),
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".to_string(),
        )]),
        denied: false,
    });
    let make = |name: &str, allow: &str, any: bool| {
        let auth = auth.clone();
        let allow = net(allow);
        target_with(
            name,
            upstream("sat", &[up.addr]),
            policy(move |p| {
                p.basic_auth = Some(auth);
                p.allow_sources = vec![allow];
                p.satisfy_any = any;
            }),
        )
    };
    let l7 = L7::start(snapshot(vec![
        vhost(
            "inside-any.test",
            vec![prefix("/", &make("a", "127.0.0.0/8", true))],
        ),
        vhost(
            "outside-any.test",
            vec![prefix("/", &make("b", "10.0.0.0/8", true))],
        ),
        vhost(
            "inside-all.test",
            vec![prefix("/", &make("c", "127.0.0.0/8", false))],
        ),
        vhost(
            "outside-all.test",
            vec![prefix("/", &make("d", "10.0.0.0/8", false))],
        ),
    ]))
    .await?;
    let with_creds = |host: &str| {
        let v = base64::engine::general_purpose::STANDARD.encode("sha:password");
        http::Request::builder()
            .uri("/")
            .header("host", host)
            .header("authorization", format!("Basic {v}"))
            .body(Full::new(Bytes::new()))
    };
    for (host, bare, signed) in [
        ("inside-any.test", 200, 200),
        ("outside-any.test", 401, 200),
        ("inside-all.test", 401, 200),
        ("outside-all.test", 403, 403),
    ] {
        assert_eq!(
            get(l7.http, host, "/").await?.status,
            bare,
            "{host} without"
        );
        assert_eq!(
            send(l7.http, with_creds(host)?).await?.status,
            signed,
            "{host} with"
        );
    }
    Ok(())
}

/// `proxy-cookie-path` / `proxy-cookie-domain`: the upstream's cookies, every one of them,
/// have their `Path` prefix and `Domain` rewritten on the way to the client, over HTTP/1.1
/// and HTTP/2; cookies that do not match are left as sent.
#[tokio::test]
async fn l7_proxy_cookie_path_and_domain() -> anyhow::Result<()> {
    use ingress::snapshot::CookieRewrite;
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start(|mut s, _| async move {
        while read_head(&mut s).await.is_some() {
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\
                          set-cookie: sid=1; Path=/internal/app/x; Domain=svc.local; HttpOnly\r\n\
                          set-cookie: theme=dark; Path=/elsewhere; Domain=other.local\r\n\
                          set-cookie: lang=en; path=/internal/; domain=.SVC.local\r\n\r\nok";
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await?;
    let t = target_with(
        "cookies",
        upstream("cookies", &[up.addr]),
        policy(|p| {
            p.cookie_rewrite = Some(CookieRewrite {
                path: Some(("/internal/".into(), "/".into())),
                domain: Some(("svc.local".into(), "shop.example.com".into())),
            })
        }),
    );
    let plain = target("plain", upstream("plain", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost(
        "c.test",
        vec![prefix("/plain", &plain), prefix("/", &t)],
    )]))
    .await?;
    let cookies = |r: &Reply| -> Vec<String> {
        r.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let want = vec![
        "sid=1; Path=/app/x; Domain=shop.example.com; HttpOnly".to_string(),
        "theme=dark; Path=/elsewhere; Domain=other.local".to_string(),
        "lang=en; path=/; domain=.shop.example.com".to_string(),
    ];
    let r = get(l7.http, "c.test", "/").await?;
    assert_eq!(r.status, 200);
    assert_eq!(cookies(&r), want);
    let (mut h2, conn) = h2c(l7.http).await?;
    let req = http::Request::builder()
        .uri("http://c.test/")
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), h2.send_request(req)).await??;
    let h2_cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert_eq!(h2_cookies, want);
    drop(h2);
    conn.abort();
    // A route without the annotations passes them on untouched.
    let r = get(l7.http, "c.test", "/plain").await?;
    assert!(cookies(&r)[0].starts_with("sid=1; Path=/internal/app/x; Domain=svc.local"));
    Ok(())
}

/// `mirror-target`: each request is copied to the shadow (method, path and query, headers,
/// body), with `mirror-host` and without the body when asked; the client's answer comes from
/// the real upstream and never waits for the shadow; failed copies are counted, not felt.
#[tokio::test]
async fn l7_mirror_copies_requests_to_a_shadow() -> anyhow::Result<()> {
    use ingress::{proxy::filters::mirror::MirrorOutcome, snapshot::Mirror};
    use tests::passthrough::eventually;
    let main = TestServer::echo("main").await?;
    let shadow = TestServer::echo("shadow").await?;
    let slow_shadow = TestServer::echo_slow("slow-shadow", Duration::from_secs(2)).await?;
    let refused = refused_addr().await?;
    let route = |name: &str, target: String, host: Option<&str>, body: bool| {
        target_with(
            name,
            upstream(name, &[main.addr]),
            policy(|p| {
                p.mirror = Some(Arc::new(Mirror {
                    target,
                    host: host.map(str::to_owned),
                    body,
                }))
            }),
        )
    };
    let l7 = L7::start(snapshot(vec![vhost(
        "m.test",
        vec![
            prefix(
                "/copy",
                &route(
                    "copy",
                    format!("http://{}$request_uri", shadow.addr),
                    None,
                    true,
                ),
            ),
            prefix(
                "/nobody",
                &route(
                    "nobody",
                    format!("http://{}", shadow.addr),
                    Some("copy.internal"),
                    false,
                ),
            ),
            prefix(
                "/slow",
                &route("slow", format!("http://{}", slow_shadow.addr), None, true),
            ),
            prefix(
                "/down",
                &route("down", format!("http://{refused}"), None, true),
            ),
        ],
    )]))
    .await?;
    let m = l7.proxy.metrics();
    let seen = |path: &str| shadow.seen().into_iter().find(|s| s.uri.path() == path);

    let r = get(l7.http, "m.test", "/copy/a?x=1").await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, Some("main")));
    assert!(eventually(Duration::from_secs(5), || seen("/copy/a").is_some()).await);
    let copy = seen("/copy/a").unwrap_or_else(|| unreachable!());
    assert_eq!(copy.uri.query(), Some("x=1"));
    assert_eq!(copy.headers["x-original-uri"], "/copy/a?x=1");
    assert_eq!(copy.headers["host"], shadow.addr.to_string().as_str());
    assert_eq!(copy.headers["x-forwarded-host"], "m.test");

    let body = Bytes::from_static(b"hello mirror");
    let r = send(
        l7.http,
        build(http::Method::POST, "m.test", "/copy/post", body.clone()),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 12, "the real upstream got the body");
    assert!(eventually(Duration::from_secs(5), || seen("/copy/post").is_some()).await);
    let copy = seen("/copy/post").unwrap_or_else(|| unreachable!());
    assert_eq!(
        (copy.method.as_str(), copy.body.clone()),
        ("POST", body.clone())
    );

    // `mirror-request-body: off` and `mirror-host`; a target without a path gets the
    // request's own.
    let r = send(
        l7.http,
        build(http::Method::POST, "m.test", "/nobody/p", body),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(5), || seen("/nobody/p").is_some()).await);
    let copy = seen("/nobody/p").unwrap_or_else(|| unreachable!());
    assert!(copy.body.is_empty(), "body copied: {:?}", copy.body);
    assert_eq!(copy.headers["host"], "copy.internal");

    // A slow shadow does not slow the client; a dead one costs it nothing.
    let started = std::time::Instant::now();
    let r = get(l7.http, "m.test", "/slow/x").await?;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let r = get(l7.http, "m.test", "/down/x").await?;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, Some("main")));
    assert!(
        eventually(Duration::from_secs(5), || m.mirrors(MirrorOutcome::Failed)
            == 1)
        .await,
        "failed copies: {}",
        m.mirrors(MirrorOutcome::Failed)
    );
    assert!(
        eventually(Duration::from_secs(5), || m.mirrors(MirrorOutcome::Sent)
            == 4)
        .await
    );
    assert_eq!(m.mirrors(MirrorOutcome::Skipped), 0);
    Ok(())
}

/// The controller ConfigMap's `global-auth-url` spares routes in `no-auth-locations`
/// (by default the ACME challenge path); an Ingress's own `auth-url` does not.
#[tokio::test]
async fn l7_global_auth_spares_no_auth_locations() -> anyhow::Result<()> {
    use ingress::snapshot::ExternalAuth;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (auth, _task) = auth_service(seen.clone(), None).await?;
    let asked = || seen.lock().unwrap_or_else(|e| e.into_inner()).len();
    let up = TestServer::echo("app").await?;
    let ext = |global| {
        policy(move |p| {
            p.external_auth = Some(Arc::new(ExternalAuth {
                url: format!("http://{auth}/oauth2/auth"),
                method: "GET".into(),
                signin: None,
                redirect_param: "rd".into(),
                response_headers: vec![],
                cache: None,
                request_redirect: None,
                always_set_cookie: false,
                global,
                proxy_set_headers: Vec::new(),
                denied: false,
            }))
        })
    };
    let global = target_with("global", upstream("app", &[up.addr]), ext(true));
    let own = target_with("own", upstream("app", &[up.addr]), ext(false));
    let mut snap = snapshot(vec![
        vhost(
            "g.test",
            vec![
                prefix("/.well-known/acme-challenge", &global),
                prefix("/public", &global),
                prefix("/", &global),
            ],
        ),
        vhost("o.test", vec![prefix("/public", &own)]),
    ]);
    snap.global.no_auth_locations = vec!["/public".into(), "/.well-known/acme-challenge".into()];
    let l7 = L7::start(snap).await?;
    // No session cookie: the auth service says 401.
    assert_eq!(get(l7.http, "g.test", "/private").await?.status, 401);
    assert_eq!(asked(), 1);
    assert_eq!(get(l7.http, "g.test", "/public/x").await?.status, 200);
    let r = get(l7.http, "g.test", "/.well-known/acme-challenge/t").await?;
    assert_eq!(r.status, 200);
    assert_eq!(asked(), 1, "exempt routes never ask");
    assert_eq!(get(l7.http, "o.test", "/public/x").await?.status, 401);
    assert_eq!(asked(), 2, "an Ingress's own auth-url is not exempt");
    Ok(())
}

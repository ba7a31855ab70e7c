//! Lifecycle: config swaps under load, graceful drain, the admin endpoint and the access log.
use std::{
    io::Write,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use ingress::{
    admin::{AdminServer, Readiness},
    apply::proxy::ProxyApplier,
    proxy::{Proxy, ProxyOptions},
};
use tests::{l7::*, upstream::*};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_config_swap_under_load_drops_nothing() -> anyhow::Result<()> {
    let servers = [
        TestServer::echo("u0").await?,
        TestServer::echo("u1").await?,
        TestServer::echo("u2").await?,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let snap_for = move |i: usize| {
        // Each generation has a different endpoint set and route table shape.
        let eps = [addrs[i % 3], addrs[(i + 1) % 3]];
        let t = target("load", upstream("load", &eps));
        let extra = target(
            &format!("extra{i}"),
            upstream(&format!("extra{i}"), &[addrs[i % 3]]),
        );
        snapshot(vec![vhost(
            "load.test",
            vec![prefix(&format!("/extra{i}"), &extra), prefix("/", &t)],
        )])
    };
    let l7 = Arc::new(L7::start(snap_for(0)).await?);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (l7, done) = (l7.clone(), done.clone());
        tokio::spawn(async move {
            let mut i = 1;
            while !done.load(SeqCst) && i < 200 {
                l7.apply(snap_for(i));
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            i
        })
    };
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (addr, ok) = (l7.http, ok.clone());
        clients.push(tokio::spawn(async move {
            let mut conn = H1::connect(addr).await?;
            for i in 0..500 {
                let path = if i % 2 == 0 {
                    "/a".to_string()
                } else {
                    format!("/b/{c}/{i}")
                };
                let r = conn
                    .send(build(http::Method::GET, "load.test", &path, Bytes::new()))
                    .await?;
                anyhow::ensure!(
                    r.status == 200,
                    "request {c}/{i} got {}: {}",
                    r.status,
                    r.text()
                );
                ok.fetch_add(1, SeqCst);
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            anyhow::Ok(())
        }));
    }
    let started = std::time::Instant::now();
    for c in clients {
        tokio::time::timeout(Duration::from_secs(30), c).await???;
    }
    done.store(true, SeqCst);
    let swaps = swapper.await?;
    assert_eq!(ok.load(SeqCst), 2000);
    assert!(
        swaps >= 5,
        "only {swaps} swaps during {:?}",
        started.elapsed()
    );
    assert!(l7.proxy.metrics().config_applies() >= swaps as u64);
    Ok(())
}

#[tokio::test]
async fn l7_drain_finishes_in_flight_and_refuses_new() -> anyhow::Result<()> {
    let up = TestServer::echo("drain").await?;
    let t = target("drain", upstream("drain", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("", vec![prefix("/", &t)])])).await?;
    let drain = l7.proxy.drain_handle();

    let in_flight = tokio::spawn(get(l7.http, "d.test", "/delay/600"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let drained = tokio::spawn({
        let drain = drain.clone();
        async move { drain.drain(Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(drain.is_draining());
    // New connections are refused while the in-flight request is still running.
    let refused = tokio::time::timeout(WAIT, get(l7.http, "d.test", "/")).await?;
    assert!(
        refused.is_err(),
        "a new request was served during the drain: {refused:?}"
    );
    let r = tokio::time::timeout(WAIT, in_flight).await???;
    assert_eq!(r.status, 200);
    assert!(
        tokio::time::timeout(WAIT, drained).await??,
        "drain did not finish cleanly"
    );
    assert_eq!(drain.open(), 0);
    Ok(())
}

#[tokio::test]
async fn l7_drain_timeout_cuts_what_is_left() -> anyhow::Result<()> {
    let up = TestServer::echo("stuck").await?;
    let t = target("stuck", upstream("stuck", &[up.addr]));
    let l7 = L7::start(snapshot(vec![vhost("", vec![prefix("/", &t)])])).await?;
    let stuck = tokio::spawn(get(l7.http, "d.test", "/delay/8000"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let clean = l7
        .proxy
        .drain_handle()
        .drain(Duration::from_millis(300))
        .await;
    assert!(!clean);
    assert!(started.elapsed() < Duration::from_secs(2));
    let r = tokio::time::timeout(WAIT, stuck).await??;
    assert!(r.is_err(), "the stuck request should have been cut: {r:?}");
    Ok(())
}

#[tokio::test]
async fn l7_admin_health_ready_and_metrics() -> anyhow::Result<()> {
    let up = TestServer::echo("m").await?;
    let proxy = Proxy::new(ProxyOptions::default())?;
    let readiness = Arc::new(Readiness::default());
    let applier = ProxyApplier::new(proxy.clone()).with_readiness(readiness.clone());
    let admin_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = admin_l.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let admin_task = tokio::spawn(
        AdminServer::new(readiness.clone())
            .with_source(proxy.metrics())
            .serve(admin_l, stop.clone()),
    );
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = http_l.local_addr()?;
    let serve = tokio::spawn(proxy.serve_http(http_l));

    assert_eq!(get(admin, "admin", "/healthz").await?.status, 200);
    assert_eq!(get(admin, "admin", "/readyz").await?.status, 503);
    let t = target("metered", upstream("metered", &[up.addr]));
    let ca = tests::certs::TestCa::new()?;
    applier.apply(&Arc::new(with_cert(
        snapshot(vec![vhost("m.test", vec![prefix("/", &t)])]),
        &["m.test", "*.m.test"],
        ca.issue_until(&["m.test", "*.m.test"], (2031, 6, 15))?,
    )));
    assert_eq!(get(admin, "admin", "/readyz").await?.status, 200);

    for _ in 0..3 {
        assert_eq!(get(http, "m.test", "/").await?.status, 200);
    }
    assert_eq!(get(http, "m.test", "/status/503").await?.status, 503);
    let post = build(http::Method::POST, "m.test", "/", Bytes::from_static(b"x"));
    assert_eq!(send(http, post).await?.status, 200);
    assert_eq!(get(http, "nowhere.test", "/").await?.status, 404);
    // One request on the wire as written, to compare with the sizes the series count.
    let put = b"PUT /bytes/3000 HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let put_response = raw(http, put).await?;
    assert_eq!(raw_status(&put_response), Some(200), "{put_response}");
    let m = get(admin, "admin", "/metrics").await?;
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = m.text();
    for want in [
        "ingress_requests_total{ingress=\"default/metered\",service=\"default/metered:80\",status_class=\"2xx\"} 5",
        "ingress_requests_total{ingress=\"default/metered\",service=\"default/metered:80\",status_class=\"5xx\"} 1",
        "ingress_requests_total{ingress=\"\",service=\"\",status_class=\"4xx\"} 1",
        "ingress_request_duration_seconds_count{ingress=\"default/metered\",service=\"default/metered:80\"} 6",
        "ingress_config_applies_total 1",
        "ingress_config_apply_duration_seconds_count 1",
        "ingress_upstream_errors_total{kind=\"connect_refused\"} 0",
        "ingress_tls_handshakes_total 0",
        // The same under ingress-nginx's names and labels, for its dashboards and alerts.
        "nginx_ingress_controller_requests{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"GET\",status=\"200\"} 3",
        "nginx_ingress_controller_requests{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"GET\",status=\"503\"} 1",
        "nginx_ingress_controller_requests{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"POST\",status=\"200\"} 1",
        "nginx_ingress_controller_request_duration_seconds_count{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"GET\",status=\"200\"} 3",
        "nginx_ingress_controller_request_duration_seconds_count{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"GET\",status=\"503\"} 1",
        "nginx_ingress_controller_response_duration_seconds_count{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"GET\",status=\"503\"} 1",
        "nginx_ingress_controller_header_duration_seconds_count{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"PUT\",status=\"200\"} 1",
        "nginx_ingress_controller_response_size_count{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"POST\",status=\"200\"} 1",
        "nginx_ingress_controller_ssl_expire_time_seconds{host=\"m.test\",namespace=\"default\",secret_name=\"tls\",identifier=\"-",
        "nginx_ingress_controller_ssl_expire_time_seconds{host=\"*.m.test\",namespace=\"default\",secret_name=\"tls\",identifier=\"-",
        "nginx_ingress_controller_ssl_certificate_info{host=\"m.test\",namespace=\"default\",secret_name=\"tls\",identifier=\"-",
        "issuer_organization=\"\",issuer_common_name=\"ingress test CA\",serial_number=\"",
        "public_key_algorithm=\"ECDSA\"} 1\n",
        "nginx_ingress_controller_config_last_reload_successful 1",
        "nginx_ingress_controller_success 1\n",
        "nginx_ingress_controller_nginx_process_connections{state=\"active\"} ",
        "nginx_ingress_controller_nginx_process_requests_total 7\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The configuration's hash, worked out off the apply path, arrives within moments.
    let mut hash = value(&text, "nginx_ingress_controller_config_hash");
    for _ in 0..100 {
        if hash != 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let again = get(admin, "admin", "/metrics").await?.text();
        hash = value(&again, "nginx_ingress_controller_config_hash");
    }
    assert!(hash > 0.0, "no config_hash");
    // Every series ingress-nginx's two Grafana dashboards (nginx.json and
    // request-handling-performance.json) query.
    for name in [
        "nginx_ingress_controller_requests{",
        "nginx_ingress_controller_success ",
        "nginx_ingress_controller_config_last_reload_successful ",
        "nginx_ingress_controller_config_last_reload_successful_timestamp_seconds ",
        "nginx_ingress_controller_nginx_process_connections{",
        "nginx_ingress_controller_nginx_process_resident_memory_bytes ",
        "nginx_ingress_controller_nginx_process_cpu_seconds_total ",
        "nginx_ingress_controller_request_size_sum{",
        "nginx_ingress_controller_response_size_sum{",
        "nginx_ingress_controller_response_size_count{",
        "nginx_ingress_controller_response_size_bucket{",
        "nginx_ingress_controller_request_duration_seconds_bucket{",
        "nginx_ingress_controller_request_duration_seconds_count{",
        "nginx_ingress_controller_response_duration_seconds_bucket{",
        "nginx_ingress_controller_response_duration_seconds_sum{",
        "nginx_ingress_controller_ssl_expire_time_seconds{",
        "nginx_ingress_controller_config_hash ",
    ] {
        assert!(text.contains(name), "no {name:?} in\n{text}");
    }
    // The certificate is named as ingress-nginx names it: its serial in decimal, and the
    // identifier made from it.
    let info = text
        .lines()
        .find(|l| l.starts_with("nginx_ingress_controller_ssl_certificate_info{host=\"m.test\""))
        .expect("certificate info");
    let label = |name: &str| {
        let start = info.find(&format!("{name}=\"")).expect("label") + name.len() + 2;
        info[start..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let serial = label("serial_number");
    assert!(
        !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_digit()),
        "{info}"
    );
    assert_eq!(label("identifier"), format!("-{serial}"), "{info}");
    for host in ["m.test", "*.m.test"] {
        let expiry = format!(
            "nginx_ingress_controller_ssl_expire_time_seconds{{host=\"{host}\",\
             namespace=\"default\",secret_name=\"tls\",identifier=\"-{serial}\"}}"
        );
        assert_eq!(value(&text, &expiry), 1939248000.0);
    }
    let put_labels = "{namespace=\"default\",ingress=\"metered\",service=\"metered\",host=\"m.test\",path=\"/\",method=\"PUT\",status=\"200\"}";
    // The request is counted as read, head and body; the response as sent, within what
    // hyper adds on its own (the `connection: close` it answers with).
    let request_size = value(
        &text,
        &format!("nginx_ingress_controller_request_size_sum{put_labels}"),
    );
    assert_eq!(request_size, put.len() as f64);
    let response_size = value(
        &text,
        &format!("nginx_ingress_controller_response_size_sum{put_labels}"),
    );
    let sent = put_response.len() as f64;
    assert!(
        (sent - 40.0..=sent).contains(&response_size),
        "counted {response_size} of {sent} bytes:\n{put_response}"
    );
    let cpu = value(
        &text,
        "nginx_ingress_controller_nginx_process_cpu_seconds_total",
    );
    assert!(cpu > 0.0, "{cpu}");
    let accepted = value(
        &text,
        "nginx_ingress_controller_nginx_process_connections_total{state=\"accepted\"}",
    );
    assert!(accepted >= 2.0, "{accepted}");
    // As ingress-nginx's default (`--metrics-per-undefined-host=false`), requests for a host
    // no rule names are left out of its series; ingressd's own count them.
    assert!(
        !text.contains("nginx_ingress_controller_requests{namespace=\"\""),
        "{text}"
    );
    // `--default-ssl-certificate`: its expiry for the catch-all `_`, as ingress-nginx
    // reports it, and for a TLS host without a certificate of its own, which it serves.
    let mut snap = with_cert(
        snapshot(vec![
            vhost("m.test", vec![prefix("/", &t)]),
            ingress::snapshot::VirtualHost {
                tls: true,
                ..vhost("bare.test", vec![prefix("/", &t)])
            },
        ]),
        &["m.test", "*.m.test"],
        ca.issue_until(&["m.test", "*.m.test"], (2031, 6, 15))?,
    );
    snap.generation += 1;
    snap.tls.default = Some(ingress::snapshot::TlsCert {
        origin: ingress::snapshot::ObjectRef::default(),
        secret: ingress::snapshot::ObjectRef {
            kind: "Secret",
            namespace: "ingress".into(),
            name: "fallback".into(),
        },
        hosts: Vec::new(),
        key: ca.issue_until(&["fallback.test"], (2030, 1, 2))?,
    });
    applier.apply(&Arc::new(snap));
    let text = get(admin, "admin", "/metrics").await?.text();
    for host in ["_", "bare.test"] {
        let want = format!(
            "nginx_ingress_controller_ssl_expire_time_seconds{{host=\"{host}\",namespace=\"ingress\",secret_name=\"fallback\",identifier=\"-"
        );
        let line = text.lines().find(|l| l.starts_with(&want));
        assert!(
            line.is_some_and(|l| l.ends_with("\"} 1893542400")),
            "missing {want:?} in\n{text}"
        );
    }
    assert!(
        !text.contains("host=\"m.test\",namespace=\"ingress\""),
        "a host with its own certificate counted the default's"
    );

    readiness.set_draining();
    assert_eq!(get(admin, "admin", "/readyz").await?.status, 503);
    assert_eq!(get(admin, "admin", "/nope").await?.status, 404);
    stop.cancel();
    tokio::time::timeout(WAIT, admin_task).await??;
    serve.abort();
    Ok(())
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
pub(crate) struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An access-logged snapshot that routes `log.test` + `path` to a new echo upstream, and
/// that upstream.
async fn logged_host(path: &str) -> anyhow::Result<(TestServer, ingress::snapshot::Snapshot)> {
    let up = TestServer::echo("logged").await?;
    let t = target("logged", upstream("logged", &[up.addr]));
    let snap = with_access_log(snapshot(vec![vhost("log.test", vec![prefix(path, &t)])]));
    Ok((up, snap))
}

/// Captures this thread's access-log lines until the guard drops.
pub(crate) fn capture_access_log() -> (Buf, tracing::subscriber::DefaultGuard) {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter("access_log=info")
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn l7_access_log_json_lines() -> anyhow::Result<()> {
    // Current-thread runtime: the proxy's tasks run on this thread and see this subscriber.
    let (buf, _guard) = capture_access_log();
    let up = TestServer::echo("logged").await?;
    let t = target("logged", upstream("logged", &[up.addr]));
    let snap = with_access_log(snapshot(vec![vhost("log.test", vec![prefix("/", &t)])]));
    let l7 = L7::start(snap.clone()).await?;
    let req = http::Request::builder()
        .uri("/bytes/123?q=1")
        .header("host", "log.test")
        .header("x-request-id", "req-42")
        .body(http_body_util::Full::new(Bytes::new()))?;
    assert_eq!(send(l7.http, req).await?.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = String::from_utf8(buf.0.lock().unwrap_or_else(|e| e.into_inner()).clone())?;
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0].trim())?;
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "log.test");
    assert_eq!(v["path"], "/bytes/123");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], 123);
    assert_eq!(v["request_id"], "req-42");
    assert_eq!(v["upstream"], up.addr.to_string());
    assert_eq!(v["upstream_name"], "default/logged:80");
    assert_eq!(v["ingress"], "default/logged");
    assert!(v["duration_ms"].as_f64().is_some());

    // A route with `enable-access-log: false` is not logged; the others still are.
    let mut quiet_policy = test_policy();
    quiet_policy.access_log = false;
    let quiet_route = target_with("health", upstream("logged", &[up.addr]), quiet_policy);
    l7.apply(with_access_log(snapshot(vec![vhost(
        "log.test",
        vec![prefix("/healthz", &quiet_route), prefix("/", &t)],
    )])));
    assert_eq!(get(l7.http, "log.test", "/healthz").await?.status, 200);
    assert_eq!(get(l7.http, "log.test", "/other").await?.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let paths: Vec<String> = logged(&buf)
        .iter()
        .map(|v| v["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(paths, ["/bytes/123", "/other"]);

    // Switched off by a new snapshot (`disable-access-log`), on the open connection's
    // next request too: nothing is written. Then on again.
    let mut off = snap.clone();
    off.global.access_log = false;
    l7.apply(off);
    let mut conn = H1::connect(l7.http).await?;
    let on_conn = |path: &str| build(http::Method::GET, "log.test", path, Bytes::new());
    assert_eq!(conn.send(on_conn("/off")).await?.status, 200);
    assert_eq!(get(l7.http, "log.test", "/off").await?.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(logged(&buf).len(), 2);
    let mut on = snap;
    on.generation += 1_000;
    l7.apply(on);
    assert_eq!(conn.send(on_conn("/on")).await?.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let paths: Vec<String> = logged(&buf)
        .iter()
        .map(|v| v["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(paths, ["/bytes/123", "/other", "/on"]);
    Ok(())
}

/// Requests for a host no Ingress names are left out of the access log, whether a default
/// backend answers them or the proxy's 404 does (ingress-nginx's default server), unless
/// `enable-access-log-for-default-backend` is set; a named host's unmatched path is logged.
#[tokio::test]
async fn l7_default_server_requests_are_logged_only_when_asked() -> anyhow::Result<()> {
    let (buf, _guard) = capture_access_log();
    let (_up, mut snap) = logged_host("/app").await?;
    let l7 = L7::start(snap.clone()).await?;
    assert_eq!(get(l7.http, "scan.test", "/").await?.status, 404);
    assert_eq!(get(l7.http, "log.test", "/elsewhere").await?.status, 404);
    assert_eq!(get(l7.http, "log.test", "/app").await?.status, 200);
    let db = TestServer::echo("default").await?;
    set_default_service(
        &mut snap,
        Some(target("default-backend", upstream("db", &[db.addr]))),
    );
    snap.generation += 1;
    l7.apply(snap.clone());
    let r = get(l7.http, "scan.test", "/x").await?;
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("default"),
        "{r:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = |buf: &Buf| -> Vec<(String, String, u64)> {
        logged(buf)
            .iter()
            .map(|v| {
                let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
                (
                    field("host"),
                    field("path"),
                    v["status"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let named = vec![
        ("log.test".to_string(), "/elsewhere".to_string(), 404),
        ("log.test".to_string(), "/app".to_string(), 200),
    ];
    assert_eq!(seen(&buf), named);

    // Asked for: both kinds of default-server answers are logged.
    snap.global.access_log_default_backend = true;
    snap.generation += 1;
    l7.apply(snap.clone());
    assert_eq!(get(l7.http, "scan.test", "/y").await?.status, 200);
    set_default_service(&mut snap, None);
    snap.generation += 1;
    l7.apply(snap);
    assert_eq!(get(l7.http, "scan.test", "/z").await?.status, 404);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut want = named;
    want.push(("scan.test".into(), "/y".into(), 200));
    want.push(("scan.test".into(), "/z".into(), 404));
    assert_eq!(seen(&buf), want);
    Ok(())
}

#[tokio::test]
async fn l7_skip_access_log_urls_and_blocked_clients() -> anyhow::Result<()> {
    use ingress::snapshot::MapSource;
    let (buf, _guard) = capture_access_log();
    let (up, mut snap) = logged_host("/").await?;
    let re = |p: &str, ignore_case| MapSource::Regex {
        pattern: p.into(),
        ignore_case,
    };
    snap.global.skip_access_log_urls =
        vec![MapSource::Exact("/healthz".into()), re("^/metrics", false)];
    snap.global.block_user_agents = vec![re("badbot", true), MapSource::Exact("curl/7.0".into())];
    snap.global.block_referers = vec![MapSource::Exact("http://spam.test/".into())];
    let l7 = L7::start(snap.clone()).await?;
    let with = |path: &str, header: Option<(&str, &str)>| {
        let mut b = http::Request::builder()
            .uri(path)
            .header("host", "log.test");
        if let Some((k, v)) = header {
            b = b.header(k, v);
        }
        b.body(http_body_util::Full::new(Bytes::new()))
    };
    for (path, header, status) in [
        ("/healthz", None, 200),
        ("/healthz?full=1", None, 200),
        ("/metrics/cpu", None, 200),
        ("/METRICS", None, 200),
        ("/ua", Some(("user-agent", "Mozilla/5.0 (BadBot 2.1)")), 403),
        ("/ua-exact", Some(("user-agent", "curl/7.0")), 403),
        ("/ua-longer", Some(("user-agent", "curl/7.0.1")), 200),
        ("/ref", Some(("referer", "http://spam.test/")), 403),
        (
            "/ref-other",
            Some(("referer", "http://spam.test/page")),
            200,
        ),
        ("/fine", Some(("user-agent", "Mozilla/5.0")), 200),
    ] {
        let reply = send(l7.http, with(path, header)?).await?;
        assert_eq!(reply.status, status, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen: Vec<(String, u64)> = logged(&buf)
        .iter()
        .map(|v| {
            let path = v["path"].as_str().unwrap_or("").to_string();
            (path, v["status"].as_u64().unwrap_or(0))
        })
        .collect();
    let want = [
        ("/healthz", 200),
        ("/METRICS", 200),
        ("/ua", 403),
        ("/ua-exact", 403),
        ("/ua-longer", 200),
        ("/ref", 403),
        ("/ref-other", 200),
        ("/fine", 200),
    ]
    .map(|(p, s)| (p.to_string(), s));
    assert_eq!(
        seen, want,
        "/healthz exactly and ^/metrics are not logged; /healthz?full=1 is"
    );
    assert_eq!(
        up.hits(),
        7,
        "the three refused requests never reach the upstream"
    );

    // A new snapshot without the lists lets them through and logs everything.
    let mut open = snap;
    open.global.block_user_agents.clear();
    open.global.skip_access_log_urls.clear();
    l7.apply(open);
    let reply = send(l7.http, with("/healthz", Some(("user-agent", "badbot")))?).await?;
    assert_eq!(reply.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(logged(&buf).len(), want.len() + 1);
    Ok(())
}

/// `log-format-upstream`: ingress-nginx's default text format, then a JSON one, on the open
/// connection's next requests; a refused upstream connection logs 502 as its status, as nginx.
#[tokio::test]
async fn l7_log_format_upstream_writes_the_operators_lines() -> anyhow::Result<()> {
    use ingress::snapshot::LogEscape;
    let (buf, _guard) = capture_access_log();
    let up = TestServer::echo("fmt").await?;
    let t = target("fmt", upstream("fmt", &[up.addr]));
    let dead = target("dead", upstream("dead", &[refused_addr().await?]));
    let mut snap = with_access_log(snapshot(vec![vhost(
        "fmt.test",
        vec![prefix("/dead", &dead), prefix("/", &t)],
    )]));
    let default_format = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"#;
    snap.global.log_format =
        Some(ingress::translate::log_format::parse(default_format).map_err(anyhow::Error::msg)?);
    let l7 = L7::start(snap.clone()).await?;
    let mut conn = H1::connect(l7.http).await?;
    let req = |path: &str| {
        let mut r = build(http::Method::GET, "fmt.test", path, Bytes::new());
        let h = r.headers_mut();
        h.insert("user-agent", "probe \"1\"".parse().expect("value"));
        h.insert("x-request-id", "rid-1".parse().expect("value"));
        h.insert("authorization", "Basic Ym9iOnB3".parse().expect("value"));
        r
    };
    assert_eq!(conn.send(req("/bytes/7?x=1")).await?.status, 200);
    assert_eq!(conn.send(req("/dead")).await?.status, 502);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lines = text_lines(&buf);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let line = regex::Regex::new(
        r#"^127\.0\.0\.1 - bob \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /bytes/7\?x=1 HTTP/1\.1" 200 7 "-" "probe \\x221\\x22" \d+ \d+\.\d{3} \[default/fmt:80\] \[-\] (\S+) 7 \d+\.\d{3} 200 rid-1$"#,
    )?;
    let caps = line
        .captures(&lines[0])
        .ok_or_else(|| anyhow::anyhow!("{}", lines[0]))?;
    assert_eq!(&caps[1], up.addr.to_string());
    let dead_line = regex::Regex::new(
        r#""GET /dead HTTP/1\.1" 502 \d+ .* \[default/dead:80\] \[-\] \S+, \S+, \S+ 0, 0, 0 \d+\.\d{3}, \d+\.\d{3}, \d+\.\d{3} 502, 502, 502 rid-1$"#,
    )?;
    assert!(dead_line.is_match(&lines[1]), "{}", lines[1]);

    // A JSON format, escaped as JSON, from the next request on.
    snap.generation += 1;
    snap.global.log_format = Some(ingress::translate::log_format::parse(
        r#"{"status": $status, "ua": "$http_user_agent", "ns": "$namespace", "ingress": "$ingress_name", "svc": "$service_name", "port": "$service_port", "referer": "$http_referer"}"#,
    ).map_err(anyhow::Error::msg)?);
    snap.global.log_escape = LogEscape::Json;
    l7.apply(snap);
    assert_eq!(conn.send(req("/")).await?.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lines = text_lines(&buf);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[2])?;
    assert_eq!(v["status"], 200);
    assert_eq!(v["ua"], "probe \"1\"");
    assert_eq!(
        (&v["ns"], &v["ingress"]),
        (&"default".into(), &"fmt".into())
    );
    assert_eq!((&v["svc"], &v["port"]), (&"fmt".into(), &"80".into()));
    assert_eq!(v["referer"], "");
    Ok(())
}

/// The access log's lines as written, trimmed.
fn text_lines(buf: &Buf) -> Vec<String> {
    let out = buf.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The access log lines written so far, parsed.
pub(crate) fn logged(buf: &Buf) -> Vec<serde_json::Value> {
    text_lines(buf)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A client that leaves before its response is logged and counted as 499 (nginx's code),
/// not forgotten; a client whose request body is broken (bad chunk, cut short) gets 400 and
/// is not counted against the upstream.
#[tokio::test]
async fn l7_abandoned_requests_log_499_and_broken_bodies_are_400() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (buf, _guard) = capture_access_log();
    let slow = TestServer::echo_slow("slow", Duration::from_secs(2)).await?;
    let up = TestServer::echo("body").await?;
    let l7 = L7::start(with_access_log(snapshot(vec![
        vhost(
            "slow.test",
            vec![prefix("/", &target("slow", upstream("slow", &[slow.addr])))],
        ),
        vhost(
            "body.test",
            vec![prefix("/", &target("body", upstream("body", &[up.addr])))],
        ),
    ])))
    .await?;

    let mut c = tokio::net::TcpStream::connect(l7.http).await?;
    c.write_all(b"GET /gone HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let line = loop {
        if let Some(l) = logged(&buf).into_iter().find(|l| l["path"] == "/gone") {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access-log line for the abandoned request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["aborted"], true, "{line}");
    // Routed and sent before the client left: the line says where, as nginx's does.
    assert_eq!(line["upstream"], slow.addr.to_string(), "{line}");
    assert_eq!(line["upstream_name"], "default/slow:80", "{line}");
    assert_eq!(line["ingress"], "default/slow", "{line}");

    for body in [
        &b"zz\r\nabc\r\n0\r\n\r\n"[..],
        b"-1\r\nabc\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcXX0\r\n\r\n",
    ] {
        let mut req =
            b"POST /p HTTP/1.1\r\nHost: body.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        req.extend_from_slice(body);
        let out = raw(l7.http, &req).await?;
        assert_eq!(
            raw_status(&out),
            Some(400),
            "{}: {out}",
            String::from_utf8_lossy(body)
        );
    }
    let mut text = String::new();
    l7.proxy.metrics().render(&mut text);
    assert!(
        text.contains("ingress_upstream_errors_total{kind=\"protocol\"} 0"),
        "a client's broken body counted against the upstream:\n{text}"
    );
    assert!(
        text.contains("ingress_requests_total{ingress=\"default/slow\",service=\"default/slow:80\",status_class=\"4xx\"} 1"),
        "the 499 is counted against its route:\n{text}"
    );
    Ok(())
}

/// Requests hyper refuses while parsing their head (it answers 400 or 431 itself) are logged
/// and counted like every other answer, as nginx logs its 400s; before, they left no trace.
#[tokio::test]
async fn l7_requests_refused_by_the_parser_are_logged_and_counted() -> anyhow::Result<()> {
    let (buf, _guard) = capture_access_log();
    let up = TestServer::echo("parse").await?;
    let l7 = L7::start(with_access_log(snapshot(vec![vhost(
        "",
        vec![prefix("/", &target("parse", upstream("parse", &[up.addr])))],
    )])))
    .await?;
    let cases: [(&[u8], u16); 3] = [
        (b"\x16\x03\x01\x00\x00 nonsense\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
            400,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70_000)
            )
            .into_bytes()
            .leak(),
            431,
        ),
    ];
    for (req, want) in cases {
        let out = raw(l7.http, req).await?;
        assert_eq!(raw_status(&out), Some(want), "{out}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = logged(&buf);
        if lines.len() >= 3 || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let statuses: Vec<_> = lines.iter().map(|l| l["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(400), Some(400), Some(431)], "{lines:?}");
    for l in &lines {
        assert_eq!(l["client"], "127.0.0.1", "{l}");
        assert_eq!(l["method"], "", "{l}");
        assert!(
            l["request_id"].as_str().is_some_and(|id| id.len() == 32),
            "{l}"
        );
    }
    let mut text = String::new();
    l7.proxy.metrics().render(&mut text);
    assert!(
        text.contains("ingress_requests_total{ingress=\"\",service=\"\",status_class=\"4xx\"} 3"),
        "{text}"
    );
    assert_eq!(up.hits(), 0);
    Ok(())
}

/// The value of the one sample of `series` (its name and labels as rendered) in `text`.
fn value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|v| v.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len()..].trim().parse().expect("a number")
}

//! Annotations end to end through the real binary in standalone mode: manifests on disk ->
//! translator -> running proxy -> a real upstream. (The L7 tests build route policies
//! directly; the translator tests stop at the snapshot; this joins the two.)
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use tests::{
    ingressd::{class_and_service_yaml, Ingressd},
    upstream::TestServer,
};

const BIN: &str = env!("CARGO_BIN_EXE_ingressd_under_test");

fn manifests(upstream: SocketAddr) -> String {
    class_and_service_yaml("app", &upstream.to_string(), "http", 80) + INGRESSES
}

/// The Ingresses of [`manifests`]: a regex rewrite, one whose Service does not exist, a
/// redirect, and one with an invalid annotation.
const INGRESSES: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
spec:
  rules:
  - host: r.test
    http:
      paths:
      - path: /api(/|$)(.*)
        pathType: ImplementationSpecific
        backend:
          service: {name: app, port: {number: 80}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: open
  namespace: default
spec:
  rules:
  - host: o.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: missing, port: {number: 80}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: moved
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: https://new.example/landing
spec:
  rules:
  - host: m.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: app, port: {number: 80}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: broken
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/proxy-body-size: "lots"
spec:
  rules:
  - host: b.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: app, port: {number: 80}}
"#;

/// One HTTP/1.1 GET; returns the whole response text.
fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Writes `all.yaml` in `dir`: the IngressClass, a Service `service` (port 80, named `http`)
/// with `endpoints`, and one Ingress `name` sending `host` to it.
fn one_ingress(dir: &std::path::Path, service: &str, endpoints: &str, name: &str, host: &str) {
    let yaml = class_and_service_yaml(service, endpoints, "http", 80)
        + &tests::ingressd::ingress_yaml(name, host, service, 80);
    std::fs::write(dir.join("all.yaml"), yaml).expect("manifests");
}

fn free_addr() -> SocketAddr {
    tests::ports::free_loopback_addr()
}

/// `ingressd run` in standalone mode on `dir`, with its own pin directory named after `pins`,
/// the listeners given (`127.0.0.1:0` for one not used) and `extra` flags.
fn standalone_args(
    dir: &std::path::Path,
    http: &str,
    https: &str,
    admin: SocketAddr,
    pins: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--manifests",
        &dir.to_string_lossy(),
        "--http-addr",
        http,
        "--https-addr",
        https,
        "--admin-addr",
        &admin.to_string(),
        "--pin-dir",
        &format!("/sys/fs/bpf/ingressd-{pins}-{}", std::process::id()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A manifest directory that cannot be read at start stops ingressd with an error naming
/// it, instead of leaving it up serving nothing and never ready.
#[test]
fn a_manifest_directory_that_cannot_be_read_stops_ingressd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let args = standalone_args(
        &missing,
        "127.0.0.1:0",
        "127.0.0.1:0",
        free_addr(),
        "nodir",
        &[],
    );
    let mut child = std::process::Command::new(BIN)
        .arg("run")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ingressd");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ingressd still running on a missing manifest directory");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut log);
    }
    assert!(!status.success(), "exited cleanly: {log}");
    assert!(
        log.contains("manifest source failed") && log.contains("missing"),
        "{log}"
    );
}

/// Stops `p` (SIGTERM, then up to 10 s for it to exit) and returns its log as it was when
/// asked to stop.
fn stop(mut p: Ingressd) -> String {
    let log_text = p.log_text();
    p.signal(libc::SIGTERM).expect("SIGTERM");
    let _ = p.wait(Duration::from_secs(10));
    log_text
}

/// Starts `ingressd run <args>` and waits until it reports ready (off the async threads: the
/// wait polls the admin port with blocking I/O).
/// As [`start_ready`], with the access log on its own file (`access`), the rest in `log`
/// under `dir`.
async fn start_ready_with_access_log(
    args: Vec<String>,
    admin: SocketAddr,
    dir: &std::path::Path,
    access: &std::path::Path,
) -> Ingressd {
    let (log, access) = (dir.join("log"), access.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut p = Ingressd::start_with_access_log(
            BIN.as_ref(),
            &args,
            &admin.to_string(),
            &log,
            &access,
        )?;
        p.wait_ready(Duration::from_secs(20))?;
        anyhow::Ok(p)
    })
    .await
    .expect("join")
    .expect("ingressd starts")
}

async fn start_ready(args: Vec<String>, admin: SocketAddr, log: std::path::PathBuf) -> Ingressd {
    tokio::task::spawn_blocking(move || {
        let mut p = Ingressd::start(BIN.as_ref(), None, &args, &admin.to_string(), &log)?;
        p.wait_ready(Duration::from_secs(20))?;
        anyhow::Ok(p)
    })
    .await
    .expect("join")
    .expect("ingressd starts")
}

/// `ingressd run` on `dir` (its log in `dir/log`) once ready, serving HTTP on a free port
/// (HTTPS on an unused one), with its pins named after `pins` and `extra` flags: the HTTP
/// address, the admin address, the process.
async fn start_http_on(
    dir: &std::path::Path,
    pins: &str,
    extra: &[&str],
) -> (SocketAddr, SocketAddr, Ingressd) {
    let (http, admin) = (free_addr(), free_addr());
    let args = standalone_args(dir, &http.to_string(), "127.0.0.1:0", admin, pins, extra);
    let p = start_ready(args, admin, dir.join("log")).await;
    (http, admin, p)
}

/// `ingressd` in standalone mode on [`manifests`] for a fresh echo upstream, serving HTTP on
/// a free port (HTTPS on an unused one), with its pins named after `pins` and `extra` flags:
/// the upstream, the manifest directory (which holds the log), the HTTP address, the process.
async fn on_manifests(
    pins: &str,
    extra: &[&str],
) -> (TestServer, tempfile::TempDir, SocketAddr, Ingressd) {
    let up = TestServer::echo("app").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("all.yaml"), manifests(up.addr)).expect("manifests");
    let (http, _, p) = start_http_on(dir.path(), pins, extra).await;
    (up, dir, http, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_from_manifests_reach_the_running_proxy() {
    let (up, _dir, http, p) = on_manifests(
        "standalone",
        // ingress-nginx's flags for its request series, which migrating operators carry over.
        &[
            "--report-status-classes",
            "--exclude-socket-metrics=nginx_ingress_controller_request_size",
        ],
    )
    .await;

    let checks = tokio::task::spawn_blocking(move || -> Result<(), String> {
        // rewrite-target with use-regex capture groups.
        let r = get(http, "r.test", "/api/users/7?x=1").map_err(|e| e.to_string())?;
        if !(r.starts_with("HTTP/1.1 200") && r.contains("\"uri\":\"/users/7?x=1\"")) {
            return Err(format!("rewrite: {r}"));
        }
        // A missing Service: 503, as ingress-nginx.
        let r = get(http, "o.test", "/").map_err(|e| e.to_string())?;
        if !r.starts_with("HTTP/1.1 503") {
            return Err(format!("missing Service: {r}"));
        }
        // permanent-redirect (301 by default, as ingress-nginx).
        let r = get(http, "m.test", "/old").map_err(|e| e.to_string())?;
        if !(r.starts_with("HTTP/1.1 301")
            && r.to_ascii_lowercase()
                .contains("location: https://new.example/landing"))
        {
            return Err(format!("redirect: {r}"));
        }
        // An invalid annotation rejects its whole Ingress (not applied half-way): its
        // routes stand, answering 503, and nothing reaches the upstream.
        let r = get(http, "b.test", "/").map_err(|e| e.to_string())?;
        if !r.starts_with("HTTP/1.1 503") {
            return Err(format!("broken ingress not answered 503: {r}"));
        }
        Ok(())
    })
    .await
    .expect("join");
    let metrics = tokio::task::block_in_place(|| p.metrics()).unwrap_or_default();
    let log_text = stop(p);
    checks.unwrap_or_else(|e| panic!("{e}\nlog:\n{log_text}"));
    assert_eq!(
        up.hits(),
        1,
        "only the rewritten request reached the upstream"
    );
    // The redirect counts under its class; the excluded family is left out, the others stay.
    assert!(
        metrics.lines().any(|l| l.contains(
            "host=\"m.test\",path=\"/\",method=\"GET\",status=\"3xx\",controller_class=\""
        ) && l.ends_with("} 1")),
        "{metrics}"
    );
    assert!(!metrics.contains("status=\"301\""), "{metrics}");
    assert!(
        !metrics.contains("nginx_ingress_controller_request_size"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nginx_ingress_controller_response_size_sum{"),
        "{metrics}"
    );
    // Every Ingress but `open` routes to a Service with an endpoint: none is an orphan.
    for ingress in ["rewrite", "moved", "broken"] {
        for kind in ["no-service", "no-endpoint"] {
            let series = format!(
                "nginx_ingress_controller_orphan_ingress{{namespace=\"default\",ingress=\"{ingress}\",type=\"{kind}\""
            );
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(&series) && l.ends_with("} 0")),
                "no {series}... 0 in\n{metrics}"
            );
        }
    }
    // `open` names a Service that does not exist.
    for (kind, value) in [("no-service", "} 1"), ("no-endpoint", "} 0")] {
        let series = format!(
            "nginx_ingress_controller_orphan_ingress{{namespace=\"default\",ingress=\"open\",type=\"{kind}\""
        );
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&series) && l.ends_with(value)),
            "no {series}...{value} in\n{metrics}"
        );
    }
    assert!(
        log_text.contains("default/broken") && log_text.contains("proxy-body-size"),
        "the rejection is logged with its reason:\n{log_text}"
    );
}

/// The soft open-file limit of process `pid`.
fn open_files_limit(pid: u32) -> Option<usize> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Sets the soft open-file limit of process `pid`.
fn set_open_files(pid: u32, n: usize) {
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
        .output()
        .expect("prlimit runs");
    assert!(out.status.success(), "prlimit: {out:?}");
}

/// Out of file descriptors (the cap set above the open-file limit): accepting backs off with
/// one warning per burst instead of one every few milliseconds, nothing crashes, and once
/// descriptors are free again new connections are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_backs_off_and_recovers() {
    let (_up, _dir, http, p) =
        on_manifests("fd-exhaustion", &["--max-connections", "100000"]).await;
    let log = p.log.clone();
    let pid = p.pid().expect("running");
    let checks = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map_err(|e| e.to_string())?
            .count();
        let before = open_files_limit(pid).ok_or("no open-file limit in /proc")?;
        set_open_files(pid, open + 4);
        // Each completes its TCP handshake in the backlog; few can be accepted.
        let clients: Vec<TcpStream> = (0..40)
            .filter_map(|_| TcpStream::connect_timeout(&http, Duration::from_secs(2)).ok())
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let warnings = |log: &str| log.matches("accept failed").count();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if warnings(&text) == 0 || warnings(&text) > 2 {
            return Err(format!(
                "{} accept warnings in 2 s (want 1 or 2)",
                warnings(&text)
            ));
        }
        drop(clients);
        set_open_files(pid, before);
        let r = get(http, "m.test", "/old").map_err(|e| format!("after recovery: {e}"))?;
        if !r.starts_with("HTTP/1.1 301") {
            return Err(format!("after recovery: {r}"));
        }
        Ok(())
    })
    .await
    .expect("join");
    let metrics = tokio::task::block_in_place(|| p.metrics()).unwrap_or_default();
    let log_text = stop(p);
    checks.unwrap_or_else(|e| panic!("{e}\nlog:\n{log_text}"));
    let errors = tests::metric(&metrics, "ingress_accept_errors_total");
    assert!(errors > 0, "accept errors counted:\n{metrics}");
    assert!(
        metrics.contains("ingress_max_connections 100000\n"),
        "{metrics}"
    );
}

/// `--default-tls-cert/--default-tls-key`: the operator's certificate is what clients with an
/// unknown SNI get; an unusable one stops startup with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_certificate_from_files_serves_unknown_sni() {
    let ca = tests::certs::TestCa::new().expect("CA");
    let (chain, key) = ca.issue_pem(&["fallback.test"]).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let up = TestServer::echo("app").await.expect("upstream");
    std::fs::write(dir.path().join("all.yaml"), manifests(up.addr)).expect("manifests");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, chain).expect("write cert");
    std::fs::write(&key_path, key).expect("write key");
    let (http, https, admin) = (free_addr(), free_addr(), free_addr());
    let args = |key: &std::path::Path| -> Vec<String> {
        let (cert, key) = (cert_path.to_string_lossy(), key.to_string_lossy());
        let certs = ["--default-tls-cert", &cert, "--default-tls-key", &key];
        standalone_args(
            dir.path(),
            &http.to_string(),
            &https.to_string(),
            admin,
            "defcert",
            &certs,
        )
    };

    // A key file that is not a key: startup fails and says why.
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "not a key").expect("write bad key");
    let bad_args = args(&bad_key);
    let bad_log = dir.path().join("bad.log");
    let (status, text) = tokio::task::spawn_blocking(move || {
        let mut p = Ingressd::start(BIN.as_ref(), None, &bad_args, &admin.to_string(), &bad_log)
            .expect("spawn");
        let status = p.wait(Duration::from_secs(10)).expect("exits");
        (status, p.log_text())
    })
    .await
    .expect("join");
    assert!(!status.success(), "started with an unusable key:\n{text}");
    assert!(text.contains("default certificate"), "{text}");

    let p = start_ready(args(&key_path), admin, dir.path().join("log")).await;
    // No Ingress claims fallback.test: the client verifies the default certificate against
    // the test CA, which only the operator's certificate passes.
    let verified = ca.client_config(&[b"http/1.1"]).expect("client config");
    let r = tests::l7::tls_connect(https, "fallback.test", verified).await;
    // A client sending no SNI at all (dialling the address, as load balancer health checks
    // do) is terminated with the same certificate and routed by its Host header.
    let no_sni = no_sni_get(https, &cert_path).await;
    let log_text = stop(p);
    assert!(
        r.is_ok(),
        "default certificate not served: {r:?}\nlog:\n{log_text}"
    );
    let (status, body) =
        no_sni.unwrap_or_else(|e| panic!("no-SNI client: {e:#}\nlog:\n{log_text}"));
    assert_eq!(status, 200, "{body}\nlog:\n{log_text}");
    assert!(body.contains("/users/7"), "routed by Host: {body}");
}

/// `--watch-ingress-without-class` and `--ingress-class-by-name` (ingress-nginx's flags): with
/// no IngressClass of ours at all, a class-less Ingress and one naming `--ingress-class` are
/// served only with the flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_flags_take_ingresses_without_an_ingressclass_of_ours() {
    let up = TestServer::echo("app").await.expect("upstream");
    let with_class = class_and_service_yaml("app", &up.addr.to_string(), "http", 80);
    // The Service alone: no IngressClass object.
    let service = with_class
        .split_once("---\n")
        .map(|(_, rest)| rest.to_string())
        .expect("class then service");
    let named = tests::ingressd::ingress_yaml("named", "k.test", "app", 80).replacen(
        "spec:\n",
        "spec:\n  ingressClassName: xdp\n",
        1,
    );
    let yaml = format!(
        "{service}---\n{}---\n{named}",
        tests::ingressd::ingress_yaml("classless", "n.test", "app", 80)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("all.yaml"), yaml).expect("manifests");
    let mut statuses = Vec::new();
    for flags in [
        &[][..],
        &["--watch-ingress-without-class", "--ingress-class-by-name"][..],
    ] {
        let (http, admin) = (free_addr(), free_addr());
        let args = standalone_args(
            dir.path(),
            &http.to_string(),
            "127.0.0.1:0",
            admin,
            "classes",
            flags,
        );
        let p = start_ready(args, admin, dir.path().join(format!("log{}", flags.len()))).await;
        let got: Vec<String> = ["n.test", "k.test"]
            .iter()
            .map(|h| {
                get(http, h, "/")
                    .map(|r| r.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|e| e.to_string())
            })
            .collect();
        stop(p);
        statuses.push(got);
    }
    assert_eq!(
        statuses,
        [
            ["HTTP/1.1 404 Not Found", "HTTP/1.1 404 Not Found"],
            ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
        ]
    );
}

/// `--default-ssl-certificate namespace/name` (ingress-nginx's flag): the TLS Secret is what
/// clients with an unknown SNI get, and a renewed Secret is served without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_ssl_certificate_secret_serves_unknown_sni_and_is_followed() {
    let ca = tests::certs::TestCa::new().expect("CA");
    let secret = |names: &[&str]| {
        let (chain, key) = ca.issue_pem(names).expect("certificate");
        tests::ingressd::tls_secret_yaml("ingress-system", "wildcard", &chain, &key)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let up = TestServer::echo("app").await.expect("upstream");
    std::fs::write(dir.path().join("all.yaml"), manifests(up.addr)).expect("manifests");
    let secret_path = dir.path().join("default-cert.yaml");
    write_whole(&secret_path, &secret(&["fallback.test"]));
    let (http, https, admin) = (free_addr(), free_addr(), free_addr());
    let args = standalone_args(
        dir.path(),
        &http.to_string(),
        &https.to_string(),
        admin,
        "defsecret",
        &["--default-ssl-certificate", "ingress-system/wildcard"],
    );
    let p = start_ready(args, admin, dir.path().join("log")).await;
    let verified = ca.client_config(&[b"http/1.1"]).expect("client config");
    // Only the Secret's certificate passes the test CA for a name no Ingress has.
    let first = tests::l7::tls_connect(https, "fallback.test", verified.clone()).await;
    write_whole(&secret_path, &secret(&["renewed.test"]));
    let mut renewed = Err(anyhow::anyhow!("not tried"));
    for _ in 0..100 {
        renewed = tests::l7::tls_connect(https, "renewed.test", verified.clone()).await;
        if renewed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A botched rotation: the renewed certificate stays served, with a warning.
    write_whole(
        &secret_path,
        &tests::ingressd::tls_secret_yaml("ingress-system", "wildcard", "garbage", "garbage"),
    );
    let mut warned = false;
    for _ in 0..100 {
        warned = p.log_text().contains("last usable certificate is served");
        if warned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = tests::l7::tls_connect(https, "renewed.test", verified.clone()).await;
    let log_text = stop(p);
    assert!(first.is_ok(), "{first:?}\nlog:\n{log_text}");
    assert!(renewed.is_ok(), "{renewed:?}\nlog:\n{log_text}");
    assert!(warned, "no warning about the unusable Secret:\n{log_text}");
    assert!(kept.is_ok(), "{kept:?}\nlog:\n{log_text}");
}

/// Connects without SNI, checks the certificate is the one in `cert_pem`, and sends one
/// `GET /api/users/7` for `r.test` (a rewrite route of [`manifests`]).
async fn no_sni_get(
    https: SocketAddr,
    cert_pem: &std::path::Path,
) -> anyhow::Result<(u16, String)> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    use tests::l7::*;
    let want = CertificateDer::pem_file_iter(cert_pem)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate in {}", cert_pem.display()))??;
    // An IP address as server name: rustls sends no SNI extension.
    let s = tls_connect(
        https,
        "",
        tests::certs::insecure_client_config(&[b"http/1.1"])?,
    )
    .await?;
    anyhow::ensure!(
        peer_leaf(&s).as_ref() == Some(&want),
        "a no-SNI client did not get the default certificate"
    );
    let (r, _) = h1_over(
        s,
        build(
            http::Method::GET,
            "r.test",
            "/api/users/7",
            Default::default(),
        ),
    )
    .await?;
    Ok((r.status.as_u16(), r.text()))
}

/// Flags that cannot work are refused at startup with a reason, before anything is bound
/// or loaded: a VIP capacity of zero, and L4 services with no VIP address to expose them on.
#[tokio::test]
async fn unusable_flags_are_refused_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[&str], &str); 3] = [
        ("max-vips", &["--max-vips", "0"], "--max-vips"),
        (
            "l4 without address",
            &["--tcp-services-configmap", "ingressd-system/tcp-services"],
            "--l4-address",
        ),
        (
            "two status address sources",
            &[
                "--publish-address",
                "192.0.2.1",
                "--publish-pods",
                "app=ingressd",
            ],
            "--publish-pods",
        ),
    ];
    for (name, extra, want) in cases {
        let mut args: Vec<String> = vec![
            "--manifests".into(),
            dir.path().to_string_lossy().into_owned(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--https-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.path().join(format!("{name}.log"));
        let (status, text) = tokio::task::spawn_blocking(move || {
            let mut p =
                Ingressd::start(BIN.as_ref(), None, &args, "127.0.0.1:0", &log).expect("spawn");
            let status = p.wait(Duration::from_secs(10)).expect("exits");
            (status, p.log_text())
        })
        .await
        .expect("join");
        assert!(!status.success(), "{name}: started anyway:\n{text}");
        assert!(text.contains(want), "{name}: {text}");
    }
}

/// SIGTERM drains TLS passthrough connections as it drains requests: an open spliced
/// connection keeps working after the signal while new connections are refused, and the
/// process exits once the connection closes, well before the drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_passthrough_connections_finish() {
    use tests::passthrough::{
        connect, tls_over, BackendBehavior, BackendEnd, Pki, TlsBackend, STEP,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const HOST: &str = "pass.test";
    let pki = Pki::new();
    let mut backend =
        TlsBackend::start(pki.server_config(&[HOST]), BackendBehavior::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingress = tests::ingressd::passthrough_ingress_yaml(HOST, "tls-backend", 443);
    let yaml = class_and_service_yaml("tls-backend", &backend.addr.to_string(), "https", 443);
    std::fs::write(dir.path().join("all.yaml"), yaml + &ingress).expect("manifests");
    let (https, admin) = (free_addr(), free_addr());
    let https_addr = https.to_string();
    let args = standalone_args(
        dir.path(),
        "127.0.0.1:0",
        &https_addr,
        admin,
        "ptdrain",
        &["--drain-timeout", "30s"],
    );
    let mut p = start_ready(args, admin, dir.path().join("log")).await;

    let mut tls = tls_over(connect(https).await, HOST, pki.client_config())
        .await
        .unwrap_or_else(|e| panic!("handshake through the front: {e}\n{}", p.log_text()));
    echo_tls(&mut tls, b"before the signal").await;

    p.signal(libc::SIGTERM).expect("SIGTERM");
    let draining = tests::passthrough::eventually(STEP, || p.log_text().contains("draining")).await;
    assert!(draining, "no drain logged:\n{}", p.log_text());
    // The listener is gone: a new connection is refused (or reset before any TLS).
    let refused = match tokio::net::TcpStream::connect(https).await {
        Err(_) => true,
        Ok(mut s) => {
            let mut b = [0u8; 1];
            matches!(
                tokio::time::timeout(STEP, s.read(&mut b)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    };
    assert!(refused, "a new connection was accepted during the drain");
    echo_tls(&mut tls, b"after the signal").await;
    let running = p.wait(Duration::from_millis(300)).is_err();
    assert!(
        running,
        "ingressd exited with a passthrough connection open"
    );

    tls.shutdown().await.expect("close_notify");
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, tls.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .expect("read to end");
    assert_eq!(rest, b"BYE");
    let conn = backend.next().await;
    assert_eq!(conn.end, BackendEnd::Eof);
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let s = p.wait(Duration::from_secs(10));
        (s, p.log_text())
    })
    .await
    .expect("join");
    let (status, log) = status;
    let status = status.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exit waited for the drain timeout"
    );
    assert!(
        !log.contains("drain timeout"),
        "the drain timed out:\n{log}"
    );
}

/// The controller ConfigMap's `worker-shutdown-timeout` replaces `--drain-timeout`: on
/// SIGTERM, a request whose upstream never answers is given that long, then the process
/// exits saying the drain timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_shutdown_timeout_bounds_the_drain() {
    // An upstream that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    one_ingress(
        dir.path(),
        "slow",
        &silent_addr.to_string(),
        "slow",
        "s.test",
    );
    std::fs::write(
        dir.path().join("controller.yaml"),
        controller_configmap("  worker-shutdown-timeout: 1s\n"),
    )
    .expect("configmap");
    let (http, _, mut p) = start_http_on(
        dir.path(),
        "wst",
        &[
            "--drain-timeout",
            "30s",
            "--configmap",
            "ingress-system/ingressd",
        ],
    )
    .await;
    let in_flight = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(2)).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nhost: s.test\r\n\r\n")
            .expect("request");
        let (upstream, _) = silent.accept().expect("the request reached the upstream");
        (s, upstream)
    })
    .await
    .expect("join");
    let started = std::time::Instant::now();
    p.signal(libc::SIGTERM).expect("SIGTERM");
    let (status, log) = tokio::task::spawn_blocking(move || {
        let s = p.wait(Duration::from_secs(15));
        (s, p.log_text())
    })
    .await
    .expect("join");
    let waited = started.elapsed();
    drop(in_flight);
    let status = status.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "exited after {waited:?}, not after the ConfigMap's 1s:\n{log}"
    );
    let plain = regex::Regex::new("\x1b\\[[0-9;]*m")
        .expect("regex")
        .replace_all(&log, "");
    assert!(
        plain.contains("draining timeout=1s"),
        "the drain's timeout is logged:\n{plain}"
    );
    assert!(log.contains("drain timeout reached"), "{log}");
}

/// `--shutdown-grace-period`: after SIGTERM, `/readyz` fails at once while new connections
/// are still accepted and served for the period; then the drain and exit follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_period_serves_on_while_not_ready() {
    let up = TestServer::echo("app").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    one_ingress(dir.path(), "app", &up.addr.to_string(), "app", "g.test");
    let (http, admin, mut p) =
        start_http_on(dir.path(), "grace", &["--shutdown-grace-period", "2s"]).await;
    let started = std::time::Instant::now();
    p.signal(libc::SIGTERM).expect("SIGTERM");
    let (during, ready) = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500));
        (get(http, "g.test", "/during"), get(admin, "x", "/readyz"))
    })
    .await
    .expect("join");
    let (status, log) = tokio::task::spawn_blocking(move || {
        let s = p.wait(Duration::from_secs(15));
        (s, p.log_text())
    })
    .await
    .expect("join");
    let waited = started.elapsed();
    let during = during.unwrap_or_else(|e| panic!("refused during the grace period: {e}\n{log}"));
    assert!(during.starts_with("HTTP/1.1 200"), "{during}\n{log}");
    let ready = ready.expect("admin answers");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    let status = status.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(10)).contains(&waited),
        "exited after {waited:?}\n{log}"
    );
    assert!(log.contains("shutdown grace period"), "{log}");
}

/// SIGHUP is nginx's reload: the process lives on and reads its manifests again at once, so
/// a change the directory watch cannot see (the target of a symlink leading out of the
/// directory) applies without waiting for the 30 s resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_manifests_again() {
    let up = TestServer::echo("app").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    one_ingress(
        elsewhere.path(),
        "app",
        &up.addr.to_string(),
        "app",
        "old.test",
    );
    std::os::unix::fs::symlink(
        elsewhere.path().join("all.yaml"),
        dir.path().join("all.yaml"),
    )
    .expect("symlink");
    let (http, _, p) = start_http_on(dir.path(), "hup", &[]).await;
    one_ingress(
        elsewhere.path(),
        "app",
        &up.addr.to_string(),
        "app",
        "new.test",
    );
    let started = std::time::Instant::now();
    p.signal(libc::SIGHUP).expect("SIGHUP");
    let served = tokio::task::spawn_blocking(move || {
        until("the new host after SIGHUP", || {
            let r = get(http, "new.test", "/").unwrap_or_else(|e| e.to_string());
            (r.starts_with("HTTP/1.1 200"), r)
        })
    })
    .await
    .expect("join");
    let took = started.elapsed();
    let old = get(http, "old.test", "/").expect("still serving");
    let log = p.log_text();
    served.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(took < Duration::from_secs(10), "took {took:?}\n{log}");
    assert!(old.starts_with("HTTP/1.1 404"), "{old}");
    assert!(log.contains("SIGHUP"), "{log}");
    tokio::task::spawn_blocking(move || stop(p))
        .await
        .expect("join");
}

/// Writes `payload` and reads the same bytes back (the test backend echoes).
async fn echo_tls<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    payload: &[u8],
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(payload).await.expect("write");
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(tests::passthrough::STEP, tls.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, payload);
}

/// `auth-tls-secret` end to end: a CA Secret (with a revocation list) and an Ingress from
/// files, the running binary asking for and judging client certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_manifests() {
    let server_ca = tests::certs::TestCa::new().expect("CA");
    let client_ca = tests::certs::TestCa::new().expect("client CA");
    let (chain, key) = server_ca.issue_pem(&["mtls.test"]).expect("certificate");
    let indent = tests::ingressd::indent_block;
    let yaml = format!(
        r#"{}---
apiVersion: v1
kind: Secret
metadata: {{name: client-ca, namespace: default}}
stringData:
  ca.crt: |
    {}
  ca.crl: |
    {}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: mtls
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/auth-tls-secret: default/client-ca
    nginx.ingress.kubernetes.io/auth-tls-verify-client: "on"
spec:
  tls:
  - hosts: [mtls.test]
    secretName: mtls-tls
  rules:
  - host: mtls.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {{name: app, port: {{number: 80}}}}
"#,
        tests::ingressd::tls_secret_yaml("default", "mtls-tls", &chain, &key),
        indent(&client_ca.cert_pem()),
        indent(&client_ca.crl_pem(&[66]).expect("CRL"))
    );
    let up = TestServer::echo("app").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    let all = class_and_service_yaml("app", &up.addr.to_string(), "http", 80) + &yaml;
    std::fs::write(dir.path().join("all.yaml"), all).expect("manifests");
    let (http, https, admin) = (free_addr(), free_addr(), free_addr());
    let (http_addr, https_addr) = (http.to_string(), https.to_string());
    let args = standalone_args(dir.path(), &http_addr, &https_addr, admin, "mtls", &[]);
    let p = start_ready(args, admin, dir.path().join("log")).await;
    let status = |identity| {
        let server_ca = &server_ca;
        async move {
            let (config, asked) = server_ca.client_config_with_cert(identity, &[b"http/1.1"])?;
            let s = tests::l7::tls_connect(https, "mtls.test", config).await?;
            let req = tests::l7::build(http::Method::GET, "mtls.test", "/", Default::default());
            let (r, _) = tests::l7::h1_over(s, req).await?;
            anyhow::Ok((
                r.status.as_u16(),
                asked.times(),
                (r.status == 200)
                    .then(|| r.seen_header("ssl-client-subject-dn"))
                    .flatten(),
            ))
        }
    };
    let with_cert = status(Some(client_ca.issue_client("svc-a").expect("client cert"))).await;
    let without = status(None).await;
    let revoked = status(Some(
        client_ca
            .issue_client_serial("svc-r", 66)
            .expect("client cert"),
    ))
    .await;
    let log_text = stop(p);
    let with_cert = with_cert.unwrap_or_else(|e| panic!("{e:#}\nlog:\n{log_text}"));
    assert_eq!(
        with_cert,
        (200, 1, Some("CN=svc-a".to_string())),
        "log:\n{log_text}"
    );
    let without = without.unwrap_or_else(|e| panic!("{e:#}\nlog:\n{log_text}"));
    assert_eq!((without.0, without.1), (400, 1), "log:\n{log_text}");
    // Revoked by the Secret's ca.crl: "The SSL certificate error", as nginx's ssl_crl.
    let revoked = revoked.unwrap_or_else(|e| panic!("{e:#}\nlog:\n{log_text}"));
    assert_eq!((revoked.0, revoked.1), (400, 1), "log:\n{log_text}");
}

/// `--use-proxy-protocol` through the real binary: behind a load balancer that sends PROXY
/// headers, a passthrough backend gets the balancer's client in its own PROXY v2 header, the
/// L7 upstream sees it as `X-Real-IP`, and a connection without a header is closed and
/// counted. The passthrough host's `force-ssl-redirect` sends plain-HTTP clients to HTTPS,
/// as ingress-nginx's server for it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_from_a_load_balancer_reaches_passthrough_and_l7_backends() {
    use tests::passthrough::{connect, tls_over, BackendBehavior, Pki, Prefixed, TlsBackend, STEP};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const HOST: &str = "pass.test";
    let pki = Pki::new();
    let behavior = BackendBehavior {
        expect_proxy: true,
        ..BackendBehavior::default()
    };
    let mut backend = TlsBackend::start(pki.server_config(&[HOST]), behavior).await;
    let web = TestServer::echo("web").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    let passthrough = tests::ingressd::passthrough_ingress_yaml(HOST, "tls-backend", 443).replacen(
        "ssl-passthrough: \"true\"\n",
        "ssl-passthrough: \"true\"\n    ingress.example.dev/proxy-protocol: \"true\"\n    \
         nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"\n",
        1,
    );
    let web_service = class_and_service_yaml("web", &web.addr.to_string(), "http", 80)
        .split("---\n")
        .nth(1)
        .map(str::to_string)
        .expect("service part");
    let yaml = class_and_service_yaml("tls-backend", &backend.addr.to_string(), "https", 443)
        + &passthrough
        + "---\n"
        + &web_service
        + "---\n"
        + &tests::ingressd::ingress_yaml("web", "web.test", "web", 80);
    std::fs::write(dir.path().join("all.yaml"), yaml).expect("manifests");
    let (http, https, admin) = (free_addr(), free_addr(), free_addr());
    let (http_addr, https_addr) = (http.to_string(), https.to_string());
    let args = standalone_args(
        dir.path(),
        &http_addr,
        &https_addr,
        admin,
        "ppin",
        &[
            "--use-proxy-protocol",
            "--proxy-real-ip-cidr",
            "127.0.0.0/8,::1/128",
        ],
    );
    let p = start_ready(args, admin, dir.path().join("log")).await;

    // Passthrough: the header goes first, in the ClientHello's segment (the kernel splice
    // must not pass its bytes on), then the client's TLS straight to the backend.
    let tcp = Prefixed::new(
        b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n",
        connect(https).await,
    );
    let mut tls = tls_over(tcp, HOST, pki.client_config())
        .await
        .unwrap_or_else(|e| panic!("handshake after the header: {e}\n{}", p.log_text()));
    echo_tls(&mut tls, b"through the balancer").await;
    tls.shutdown().await.expect("close_notify");
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, tls.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .expect("read to end");
    let conn = backend.next().await;
    let want: (SocketAddr, SocketAddr) = (
        "203.0.113.7:40000".parse().expect("addr"),
        "198.51.100.1:443".parse().expect("addr"),
    );
    assert_eq!(conn.proxy, Some(want), "the backend's PROXY header");

    // L7 on the HTTP port, a v2 header this time.
    let header = ingress::proxy_protocol::v2::encode(
        "198.51.100.20:5000".parse().expect("addr"),
        "198.51.100.1:80".parse().expect("addr"),
    );
    let get = move |host: &'static str| {
        let header = header.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(http).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(&header).expect("header");
            let request = format!("GET /app HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            s.write_all(request.as_bytes()).expect("request");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
    };
    let redirect = get(HOST).await.expect("join");
    assert!(
        redirect.starts_with("HTTP/1.1 308"),
        "{redirect}\n{}",
        p.log_text()
    );
    assert!(
        redirect.contains(&format!(
            "location: https://{HOST}:{}/app\r\n",
            https.port()
        )),
        "{redirect}"
    );
    let out = get("web.test").await.expect("join");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}\n{}", p.log_text());
    assert!(
        out.contains(r#""x-real-ip":"198.51.100.20""#),
        "upstream did not see the balancer's client: {out}"
    );

    // No header: closed before TLS, and counted.
    let mut bare = connect(https).await;
    let closed = tls_over(&mut bare, HOST, pki.client_config())
        .await
        .is_err();
    assert!(closed, "a TLS handshake without a PROXY header succeeded");
    let counted = tests::passthrough::eventually(STEP, || {
        p.metrics()
            .is_some_and(|m| m.contains("ingress_proxy_protocol_refused_total 1"))
    })
    .await;
    assert!(counted, "refusal not counted: {:?}", p.metrics());
}

/// The controller ConfigMap of [`the_controller_configmap_applies_without_a_restart`].
/// Replaces `path` at once (a temporary file renamed over it), so the manifest watcher never
/// reads it half written: a truncated ConfigMap would look like one without the keys.
fn write_whole(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn controller_configmap(data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ingressd\n  namespace: ingress-system\n\
         data:\n{data}"
    )
}

/// A POST with a body of `len` bytes; the status line, or "" when the connection was closed
/// unanswered.
fn post(addr: SocketAddr, host: &str, len: usize) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    // A refused body may meet a closed connection: the answer still decides.
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&vec![b'x'; len]);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// A GET for `/` on `host` with `extra` header lines, after `prefix` (a PROXY header); the
/// whole answer, or "" when the connection was closed unanswered.
fn get_after(addr: SocketAddr, prefix: &[u8], host: &str, extra: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "connect failed".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let head = format!("GET / HTTP/1.1\r\nhost: {host}\r\n{extra}connection: close\r\n\r\n");
    let _ = s.write_all(prefix);
    let _ = s.write_all(head.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `check` until it holds, for at most 10 s; returns the last value it saw.
fn until(what: &str, mut check: impl FnMut() -> (bool, String)) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, seen) = check();
        if ok {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{what}: still {seen:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--configmap`: its annotation defaults, its `block-cidrs`, a bad value, the header
/// ConfigMaps, `global-allowed-response-headers` for a `custom-headers` Ingress and the
/// load-balancer keys, each edited in the running process's manifest directory and in force
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_configmap_applies_without_a_restart() {
    let up = TestServer::echo("app").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    let ingresses = class_and_service_yaml("app", &up.addr.to_string(), "http", 80)
        + &tests::ingressd::ingress_yaml("plain", "c.test", "app", 80)
        + "---\n"
        + &tests::ingressd::ingress_yaml("own", "o.test", "app", 80).replace(
            "  namespace: default\n",
            "  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/proxy-body-size: 8k\n",
        );
    std::fs::write(dir.path().join("all.yaml"), ingresses).expect("manifests");
    let cm = dir.path().join("controller.yaml");
    let headers_path = dir.path().join("headers.yaml");
    let custom_path = dir.path().join("custom.yaml");
    let write_cm = move |data: &str| write_whole(&cm, &controller_configmap(data));
    write_cm("  proxy-body-size: 1k\n  worker-processes: \"4\"\n");
    let (http, admin, p) = start_http_on(
        dir.path(),
        "configmap",
        &["--configmap", "ingress-system/ingressd"],
    )
    .await;

    let checks = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let status =
            |host: &str, len: usize| post(http, host, len).unwrap_or_else(|e| e.to_string());
        // The default applies where the Ingress sets nothing; its own annotation wins.
        let r = status("c.test", 2048);
        if !r.starts_with("HTTP/1.1 413") {
            return Err(format!("default proxy-body-size: {r}"));
        }
        let r = status("o.test", 2048);
        if !r.starts_with("HTTP/1.1 200") {
            return Err(format!("the Ingress's own proxy-body-size: {r}"));
        }
        // Edited: a larger limit, and an allow-list this client is not in, for every Ingress
        // without its own.
        write_cm("  proxy-body-size: 4k\n  whitelist-source-range: 10.0.0.0/8\n");
        until("whitelist-source-range default", || {
            let r = status("c.test", 2048);
            (r.starts_with("HTTP/1.1 403"), r)
        })?;
        let r = status("o.test", 2048);
        if !r.starts_with("HTTP/1.1 403") {
            return Err(format!("the default allow-list on o.test: {r}"));
        }
        // block-cidrs: the connection is closed unanswered.
        write_cm("  block-cidrs: 127.0.0.0/8\n");
        until("block-cidrs", || {
            let r = status("o.test", 10);
            (r.is_empty(), r)
        })?;
        // A bad value: the change is not applied, so the block stays, and the reload counts
        // as failed (nginx keeps running when `nginx -t` refuses a reload) ...
        write_cm("  proxy-body-size: lots\n");
        let reload_ok = || {
            let out = std::process::Command::new("curl")
                .args(["-s", "-m", "2", &format!("http://{admin}/metrics")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out.lines()
                .find_map(|l| {
                    let labelled = l.strip_prefix("nginx_ingress_controller_config_last_reload_successful{")?;
                    Some(labelled.split_once("} ")?.1)
                })
                .map(str::to_owned)
                .unwrap_or_default()
        };
        until("a bad change refused", || {
            let v = reload_ok();
            (v == "0", v)
        })?;
        let r = status("o.test", 10);
        if !r.is_empty() {
            return Err(format!("the previous block-cidrs dropped by a refused change: {r}"));
        }
        // ... until fixed.
        write_cm("  proxy-body-size: 4k\n");
        until("a fixed change applied", || {
            let r = status("c.test", 2048);
            (r.starts_with("HTTP/1.1 200") && reload_ok() == "1", r)
        })?;
        // Header ConfigMaps: named, then edited on their own.
        let headers = |data: &str| {
            let yaml = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: headers\n  \
                 namespace: ingress-system\ndata:\n{data}"
            );
            std::fs::write(headers_path.as_path(), yaml).expect("header ConfigMap");
        };
        headers("  X-Frame-Options: DENY\n");
        write_cm("  add-headers: ingress-system/headers\n  proxy-set-headers: headers\n");
        until("add-headers and proxy-set-headers", || {
            let out = get_after(http, b"", "c.test", "").to_ascii_lowercase();
            let both = out.contains("x-frame-options: deny")
                && out.contains(r#""x-frame-options":"deny""#);
            (both, out)
        })?;
        headers("  X-Frame-Options: SAMEORIGIN\n");
        until("an edited header ConfigMap", || {
            let out = get_after(http, b"", "c.test", "").to_ascii_lowercase();
            (out.contains("x-frame-options: sameorigin"), out)
        })?;
        // custom-headers: denied (503) until the controller ConfigMap allows its header.
        let custom_ingress = tests::ingressd::ingress_yaml("custom", "h.test", "app", 80).replace(
            "  namespace: default\n",
            "  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/custom-headers: sec\n",
        );
        let sec = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sec\n  namespace: default\n\
                   data:\n  X-Robots-Tag: noindex\n";
        std::fs::write(custom_path.as_path(), format!("{custom_ingress}---\n{sec}"))
            .expect("custom-headers manifests");
        until("custom-headers denied", || {
            let out = get_after(http, b"", "h.test", "");
            (out.starts_with("HTTP/1.1 503"), out)
        })?;
        write_cm("  global-allowed-response-headers: X-Robots-Tag\n");
        until("custom-headers allowed", || {
            let out = get_after(http, b"", "h.test", "").to_ascii_lowercase();
            (out.starts_with("http/1.1 200") && out.contains("x-robots-tag: noindex"), out)
        })?;
        // Behind a load balancer, without the flags: its forwarding headers, from a trusted
        // peer only ...
        let fwd = "x-forwarded-for: 203.0.113.7\r\n";
        let real_ip = |out: &str| {
            out.split(r#""x-real-ip":""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        write_cm("  use-forwarded-headers: \"true\"\n  proxy-real-ip-cidr: 127.0.0.1/32\n");
        until("use-forwarded-headers", || {
            let out = get_after(http, b"", "c.test", fwd);
            (real_ip(&out) == "203.0.113.7", out)
        })?;
        write_cm("  use-forwarded-headers: \"true\"\n  proxy-real-ip-cidr: 10.0.0.0/8\n");
        until("proxy-real-ip-cidr", || {
            let out = get_after(http, b"", "c.test", fwd);
            (real_ip(&out) == "127.0.0.1", out)
        })?;
        // ... then the PROXY protocol: a connection without its header is closed unanswered.
        write_cm("  use-proxy-protocol: \"true\"\n");
        until("use-proxy-protocol", || {
            let out = get_after(http, b"", "c.test", "");
            (out.is_empty(), out)
        })?;
        let header = b"PROXY TCP4 198.51.100.20 198.51.100.1 5000 80\r\n";
        let out = get_after(http, header, "c.test", "");
        if real_ip(&out) != "198.51.100.20" {
            return Err(format!("after a PROXY header: {out}"));
        }
        Ok(())
    })
    .await
    .expect("join");
    let metrics = p.metrics().unwrap_or_default();
    let log_text = stop(p);
    checks.unwrap_or_else(|e| panic!("{e}\nlog:\n{log_text}"));
    let blocked = tests::metric(&metrics, "ingress_blocked_total");
    assert!(blocked >= 1, "{metrics}");
    for needle in [
        "ConfigKeyIgnored",
        "keys that tune nginx itself, with nothing to set here: worker-processes",
        "InvalidConfigKey",
        "key proxy-body-size: invalid value \"lots\"",
    ] {
        assert!(
            log_text.contains(needle),
            "{needle:?} not logged:\n{log_text}"
        );
    }
}

/// A request that `proxy-next-upstream` sent on is logged with every try, as nginx's
/// `$upstream_addr` and `$upstream_status` list them (`refused, good` and `502, 200`), in
/// `log-format-upstream` lines and in the JSON record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_try_is_logged() {
    let up = TestServer::echo("app").await.expect("upstream");
    let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused_addr = refused.local_addr().expect("addr");
    drop(refused);
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = format!("{refused_addr},{}", up.addr);
    one_ingress(dir.path(), "app", &endpoints, "plain", "c.test");
    let cm = dir.path().join("controller.yaml");
    let write_cm = move |data: &str| write_whole(&cm, &controller_configmap(data));
    write_cm("  log-format-upstream: 'tries $upstream_addr|$upstream_status|$upstream_response_length|$status'\n");
    let (http, admin) = (free_addr(), free_addr());
    let args = standalone_args(
        dir.path(),
        &http.to_string(),
        "127.0.0.1:0",
        admin,
        "tries",
        &["--configmap", "ingress-system/ingressd"],
    );
    let access_path = dir.path().join("access.log");
    let p = start_ready_with_access_log(args, admin, dir.path(), &access_path).await;
    let up_addr = up.addr;
    let checks = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let log = || std::fs::read_to_string(&access_path).unwrap_or_default();
        // Round robin: within two requests one meets the refusing endpoint first.
        for _ in 0..2 {
            let out = get_after(http, b"", "c.test", "");
            if !out.starts_with("HTTP/1.1 200") {
                return Err(format!("request: {out}"));
            }
        }
        until("a line with both tries", || {
            let text = log();
            let want = format!("tries {refused_addr}, {up_addr}|502, 200|0, ");
            (text.contains(&want), text)
        })?;
        write_cm("  error-log-level: warn\n");
        until("the JSON record with the earlier try", || {
            let _ = get_after(http, b"", "c.test", "");
            let text = log();
            let want = format!(
                r#""upstream_tries_before":[{{"status":502,"upstream":"{refused_addr}"}}]"#
            );
            (text.contains(&want), text)
        })?;
        Ok(())
    })
    .await
    .expect("join");
    let log_text = stop(p);
    checks.unwrap_or_else(|e| panic!("{e}\nlog:\n{log_text}"));
}

/// The controller ConfigMap's `log-format-upstream` and `error-log-level` reach the running
/// binary's own log, and edits apply without a restart. Access-log lines go to stdout bare,
/// as ingress-nginx's do; everything else to stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_and_error_log_level_apply_without_a_restart() {
    let up = TestServer::echo("app").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    one_ingress(dir.path(), "app", &up.addr.to_string(), "plain", "c.test");
    let cm = dir.path().join("controller.yaml");
    let write_cm = move |data: &str| write_whole(&cm, &controller_configmap(data));
    write_cm(
        "  log-format-upstream: '$remote_addr \"$request\" $status [$proxy_upstream_name] $req_id'\n  \
         error-log-level: debug\n",
    );
    let (http, admin) = (free_addr(), free_addr());
    let http_addr = http.to_string();
    let args = standalone_args(
        dir.path(),
        &http_addr,
        "127.0.0.1:0",
        admin,
        "logfmt",
        &["--configmap", "ingress-system/ingressd"],
    );
    let access_path = dir.path().join("access.log");
    let p = start_ready_with_access_log(args, admin, dir.path(), &access_path).await;
    let log_path = p.log.clone();
    let checks = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let own_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let log = || std::fs::read_to_string(&access_path).unwrap_or_default();
        let count = |needle: &str| own_log().matches(needle).count();
        let out = get_after(http, b"", "c.test", "x-request-id: fmt-1\r\n");
        if !out.starts_with("HTTP/1.1 200") {
            return Err(format!("request: {out}"));
        }
        until("a line in the operator's format", || {
            let text = log();
            let want = r#"127.0.0.1 "GET / HTTP/1.1" 200 [default/app:80] fmt-1"#;
            (text.contains(want), text)
        })?;
        // At debug, a refused Host is logged with its reason (info would say nothing).
        let out = get_after(http, b"", "a/b", "");
        if !out.starts_with("HTTP/1.1 400") {
            return Err(format!("bad host: {out}"));
        }
        until("a debug record", || (count("bad request") == 1, own_log()))?;
        write_cm("  error-log-level: error\n");
        until("the JSON access log back", || {
            let _ = get_after(http, b"", "c.test", "x-request-id: json-2\r\n");
            let text = log();
            (text.contains(r#""request_id":"json-2""#), text)
        })?;
        let _ = get_after(http, b"", "a/b", "");
        let _ = get_after(http, b"", "c.test", "x-request-id: json-3\r\n");
        until("the access log still written at level error", || {
            let text = log();
            (text.contains(r#""request_id":"json-3""#), text)
        })?;
        if count("bad request") != 1 {
            return Err(format!("a debug record at level error:\n{}", own_log()));
        }
        // Every stdout line is an access-log line as rendered, and none went to stderr.
        let access = log();
        let lines: Vec<&str> = access.lines().collect();
        let json = |l: &str| serde_json::from_str::<serde_json::Value>(l).ok();
        let bare = lines.first()
            == Some(&r#"127.0.0.1 "GET / HTTP/1.1" 200 [default/app:80] fmt-1"#)
            && lines
                .iter()
                .all(|l| l.starts_with(r#"127.0.0.1 "GET / HTTP/1.1" "#) || json(l).is_some())
            && lines
                .iter()
                .any(|l| json(l).is_some_and(|v| v["request_id"] == "json-3"));
        if !bare || own_log().contains("fmt-1") || own_log().contains("json-3") {
            return Err(format!("stdout:\n{access}\nstderr:\n{}", own_log()));
        }
        Ok(())
    })
    .await
    .expect("join");
    let log_text = stop(p);
    checks.unwrap_or_else(|e| panic!("{e}\nlog:\n{log_text}"));
}

/// The Services and Ingresses of [`external_name_services_route_to_their_addresses`]: two
/// ExternalName Services on local non-loopback addresses (one with ports, one without), one
/// on `localhost` (refused) and one on a name that cannot resolve.
fn external_name_manifests(ext: &str, ext_port: u16, bare: &str, bare_port: u16) -> String {
    let ingress = |name: &str, host: &str, svc: &str, port: u16| {
        tests::ingressd::ingress_yaml(name, host, svc, port) + "---\n"
    };
    let service = |name: &str, external: &str, ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n\
             spec:\n  type: ExternalName\n  externalName: {external}\n{ports}---\n"
        )
    };
    class_and_service_yaml("app", "127.0.0.1:9", "http", 80)
        + &service(
            "ext",
            ext,
            &format!("  ports:\n  - name: http\n    port: 80\n    targetPort: {ext_port}\n"),
        )
        + &service("bare", bare, "")
        + &service("local", "localhost", "")
        + &service("nowhere", "nowhere.invalid", "")
        + &ingress("ext", "e.test", "ext", 80)
        + &ingress("bare", "b.test", "bare", bare_port)
        + &ingress("local", "l.test", "local", 80)
        + &ingress("nowhere", "n.test", "nowhere", 80)
}

/// ExternalName Services, end to end: an IP address (here added to `lo`, since loopback is
/// refused as in ingress-nginx) is used with the Service's target port, or without ports with
/// the port the Ingress names; changing `externalName` moves the traffic without a restart;
/// `localhost` and a name that does not resolve answer 503 and are reported with their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_services_route_to_their_addresses() {
    use tests::netns::LoAddress;
    let a = LoAddress::add("198.18.250.1".parse().expect("ip")).expect("address on lo");
    let b = LoAddress::add("198.18.250.2".parse().expect("ip")).expect("address on lo");
    let up_a = TestServer::echo_on("up-a", SocketAddr::new(a.ip, 0))
        .await
        .expect("upstream a");
    let up_b = TestServer::echo_on("up-b", SocketAddr::new(b.ip, 0))
        .await
        .expect("upstream b");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("all.yaml");
    let (b_ip, bare_port) = (b.ip, up_b.addr.port());
    let write = move |ext: &str, ext_port: u16| {
        let yaml = external_name_manifests(ext, ext_port, &b_ip.to_string(), bare_port);
        std::fs::write(&path, yaml).expect("manifests")
    };
    write(&a.ip.to_string(), up_a.addr.port());
    let (http, _, p) = start_http_on(dir.path(), "extname", &[]).await;
    let checks = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let answer = |host: &str| get(http, host, "/status/200").unwrap_or_else(|e| e.to_string());
        let r = answer("e.test");
        if !(r.starts_with("HTTP/1.1 200") && r.contains("from up-a")) {
            return Err(format!("e.test, ExternalName with a target port: {r}"));
        }
        let r = answer("b.test");
        if !(r.starts_with("HTTP/1.1 200") && r.contains("from up-b")) {
            return Err(format!("b.test, ExternalName without ports: {r}"));
        }
        for host in ["l.test", "n.test"] {
            let r = answer(host);
            if !r.starts_with("HTTP/1.1 503") {
                return Err(format!("{host} must answer 503: {r}"));
            }
        }
        // The Service now points at the other address: followed without a restart.
        write(&b_ip.to_string(), bare_port);
        until("e.test after the externalName change", || {
            let r = answer("e.test");
            (r.contains("from up-b"), r)
        })?;
        Ok(())
    })
    .await
    .expect("join");
    // The failed lookup may take up to its timeout to be reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !p.log_text().contains("ExternalNameUnresolved") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log_text = stop(p);
    drop((a, b));
    checks.unwrap_or_else(|e| panic!("{e}\nlog:\n{log_text}"));
    assert!(
        log_text.contains("default/local") && log_text.contains("localhost, which is refused"),
        "localhost is reported:\n{log_text}"
    );
    assert!(
        log_text.contains("ExternalNameUnresolved") && log_text.contains("nowhere.invalid"),
        "the failed lookup is reported:\n{log_text}"
    );
    assert!(up_a.hits() >= 1 && up_b.hits() >= 2);
}

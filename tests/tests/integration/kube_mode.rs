//! `ingressd run --kubeconfig` end to end against the in-process fake API server (not a
//! cluster): objects listed and watched from the API become routes, an EndpointSlice change
//! moves traffic, the elected leader writes the Ingress status, and SIGTERM releases the Lease.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tests::{fake_api::FakeApi, ingressd::Ingressd};

const BIN: &str = env!("CARGO_BIN_EXE_ingressd_under_test");

/// An HTTP upstream on loopback answering `name` to every request.
fn upstream(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if s.write_all(r.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

fn slice(port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "shop", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    })
}

fn get(addr: SocketAddr, host: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// The shop objects (an IngressClass of ours, Service `shop/web` on `port`, its Ingress for
/// `shop.test`) in `api`, and ingressd started against it with `extra` flags and ready: the
/// process, its HTTP address, and the directory holding its kubeconfig and log.
fn start_against(
    api: &FakeApi,
    port: u16,
    extra: &[&str],
) -> (Ingressd, SocketAddr, tempfile::TempDir) {
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "xdp"},
        "spec": {"controller": "ingress.example.dev/xdp-ingress"},
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }));
    api.apply(slice(port));
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"ingressClassName": "xdp", "rules": [{"host": "shop.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]},
    }));

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\nusers:\n- name: me\n  user:\n    token: not-a-secret\n",
            api.url()
        ),
    )
    .unwrap();
    let http = tests::ports::free_loopback_addr();
    let admin = tests::ports::free_loopback_addr();
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--http-addr",
        &http.to_string(),
        "--https-addr",
        "127.0.0.1:0",
        "--admin-addr",
        &admin.to_string(),
        "--publish-address",
        "192.0.2.10",
        "--identity",
        "replica-1",
        "--pin-dir",
        &format!("/sys/fs/bpf/ingressd-kube-{}-{port}", std::process::id()),
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let mut p = Ingressd::start(
        BIN.as_ref(),
        None,
        &args,
        &admin.to_string(),
        &dir.path().join("log"),
    )
    .unwrap();
    tokio::task::block_in_place(|| p.wait_ready(Duration::from_secs(30))).unwrap();
    (p, http, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_routes_follows_endpoints_and_writes_status() {
    let api = FakeApi::start().await.unwrap();
    let blue = upstream("blue");
    let green = upstream("green");
    let (mut p, http, _dir) = start_against(&api, blue, &[]);

    tokio::task::block_in_place(|| {
        let r = get(http, "shop.test");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("blue"),
            "{r}\n{}",
            p.log_text()
        );
        // A watch event moves the endpoints: traffic follows.
        api.apply(slice(green));
        eventually("traffic on the new endpoint", || {
            get(http, "shop.test").ends_with("green")
        });
        // The leader publishes the address on the Ingress it owns.
        eventually("status written", || {
            api.get("networking.k8s.io/v1", "Ingress", "shop", "web")
                .is_some_and(|i| i["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.10")
        });
        let lease = api
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                "default",
                "ingressd-leader",
            )
            .expect("lease");
        assert_eq!(lease["spec"]["holderIdentity"], "replica-1");
        // ingress-nginx's leadership gauge says so too, naming this replica as its series do.
        eventually("leader_election_status 1", || {
            p.metrics().is_some_and(|m| {
                m.contains(
                    "nginx_ingress_controller_leader_election_status{name=\"ingressd-leader\",\
                     controller_class=\"ingress.example.dev/xdp-ingress\",\
                     controller_namespace=\"default\",controller_pod=\"replica-1\"} 1\n",
                )
            })
        });
        // A slow API: releasing the Lease (a GET and a PUT) takes longer than a token grace
        // period, so shutdown has to wait for it.
        api.set_delay(Some(Duration::from_millis(300)));
        p.signal(libc::SIGTERM).unwrap();
        let status = p.wait(Duration::from_secs(35)).unwrap();
        assert!(status.success(), "{}", p.log_text());
    });
    // On shutdown the Lease is released for a fast handover.
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "default",
            "ingressd-leader",
        )
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null() || lease["spec"]["holderIdentity"] == "",
        "lease not released: {lease}"
    );
}

/// `--update-status=false` (ingress-nginx's flag): the leader writes no Ingress status, while
/// routing and leadership go on as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_without_status_updates_writes_none() {
    let api = FakeApi::start().await.unwrap();
    let blue = upstream("blue");
    let (mut p, http, _dir) = start_against(&api, blue, &["--update-status=false"]);
    tokio::task::block_in_place(|| {
        assert!(get(http, "shop.test").ends_with("blue"), "{}", p.log_text());
        eventually("leadership", || {
            api.get(
                "coordination.k8s.io/v1",
                "Lease",
                "default",
                "ingressd-leader",
            )
            .is_some_and(|l| l["spec"]["holderIdentity"] == "replica-1")
        });
        // The leader writes the status within a few hundred ms when it may (the test above):
        // a second and a half with none is no write.
        thread::sleep(Duration::from_millis(1_500));
        let patched = api
            .requests()
            .iter()
            .filter(|r| r.path().contains("/status"))
            .count();
        assert_eq!(patched, 0, "{}", p.log_text());
        let web = api.get("networking.k8s.io/v1", "Ingress", "shop", "web");
        assert!(
            web.is_some_and(|w| w["status"]["loadBalancer"]["ingress"].is_null()),
            "status written"
        );
        p.signal(libc::SIGTERM).unwrap();
        let status = p.wait(Duration::from_secs(35)).unwrap();
        assert!(status.success(), "{}", p.log_text());
    });
}

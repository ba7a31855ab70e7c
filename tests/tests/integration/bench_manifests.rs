//! The manifests the benchmarks hand to ingressd translate into the routes the benchmarks
//! measure. The benchmarks do not run in CI, and a broken manifest silently makes the proxy
//! under test do something else: a literal `{HOST}` as the passthrough host once made that
//! benchmark terminate TLS instead of splicing it, and it failed only when next run by hand.
use std::{net::SocketAddr, path::Path};

use ingress::{
    config::Settings,
    snapshot::HostMatch,
    source::manifests,
    store::ObjectCache,
    translate::{translate, Translation},
};
use tests::bench::{l7, passthrough};

fn settings() -> Settings {
    Settings {
        controller_name: "ingress.example.dev/xdp-ingress".into(),
        ingress_class: "xdp".into(),
        static_endpoints: true,
        ..Default::default()
    }
}

fn translate_dir(dir: &Path) -> Translation {
    let (objects, errors) = manifests::load_dir(dir).expect("manifest dir readable");
    assert!(errors.is_empty(), "{errors:?}");
    let t = translate(&ObjectCache::from_objects(objects), &settings());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    t
}

#[test]
fn passthrough_bench_manifests_splice_its_host_to_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backend: SocketAddr = "127.0.0.1:9443".parse().unwrap();
    passthrough::peers::write_manifests(dir.path(), backend).unwrap();
    let t = translate_dir(dir.path());
    let routes = &t.snapshot.passthrough;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(
        routes[0].host,
        HostMatch::Exact(passthrough::peers::HOST.into())
    );
    assert_eq!(routes[0].upstream.endpoints, vec![backend]);
    // Its host also serves plain HTTP (as in ingress-nginx), with no certificate of its own.
    let hosts: Vec<&HostMatch> = t.snapshot.http.hosts.iter().map(|h| &h.host).collect();
    assert_eq!(hosts, [&routes[0].host]);
    assert!(t.snapshot.tls.certs.is_empty());
}

#[test]
fn l7_bench_manifests_route_its_host_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = l7::peers::Certs::generate().unwrap();
    std::fs::write(
        dir.path().join("bench.json"),
        serde_json::to_vec_pretty(&l7::peers::ingressd_manifests(18080, &certs)).unwrap(),
    )
    .unwrap();
    let t = translate_dir(dir.path());
    let host = HostMatch::Exact(l7::peers::HOST.into());
    let vhost = t
        .snapshot
        .http
        .hosts
        .iter()
        .find(|h| h.host == host)
        .expect("the bench host has routes");
    let endpoints: Vec<SocketAddr> = vhost
        .routes
        .iter()
        .flat_map(|r| r.target.upstream.endpoints.clone())
        .collect();
    assert_eq!(endpoints, vec!["127.0.0.1:18080".parse().unwrap()]);
    assert!(
        t.snapshot.tls.certs.iter().any(|c| c.hosts.contains(&host)),
        "no certificate for the bench host"
    );
}

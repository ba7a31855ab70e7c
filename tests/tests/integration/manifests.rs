//! Standalone mode end to end: a manifest directory on disk -> manifest source (notify watch)
//! -> store -> translation, with the example set in `deploy/examples/`.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ingress::{
    config::{NamespacedName, Settings},
    snapshot::{HostMatch, L4Protocol, PathMatch, Snapshot},
    source::manifests,
    store::{self, StoreHandle},
    translate::Translation,
};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use tokio::{sync::watch, time::timeout};

const WAIT: Duration = Duration::from_secs(10);
const VIP: &str = "198.19.0.10";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

/// The settings `ingressd run --manifests deploy/examples --tcp-services-configmap
/// ingress-system/tcp-services --l4-address 198.19.0.10` gives the translator.
fn settings() -> Settings {
    Settings {
        controller_name: "ingress.example.dev/xdp-ingress".into(),
        ingress_class: "xdp".into(),
        tcp_services: Some(NamespacedName {
            namespace: "ingress-system".into(),
            name: "tcp-services".into(),
        }),
        udp_services: None,
        l4_addresses: vec![VIP.parse().unwrap()],
        default_backend: None,
        static_endpoints: true,
        ..Settings::default()
    }
}

/// Starts the store and the manifest source on `dir`; returns once the store is ready.
async fn start(
    dir: PathBuf,
) -> (
    StoreHandle,
    tokio::task::JoinHandle<Result<(), manifests::ManifestError>>,
) {
    let mut store = store::spawn(settings(), Duration::from_millis(20), 1);
    let source = tokio::spawn(manifests::run(dir, store.events.clone()));
    timeout(WAIT, store.ready.wait_for(|r| *r))
        .await
        .expect("ready in time")
        .expect("store running");
    (store, source)
}

/// Waits for a published translation satisfying `done`.
async fn wait_for(
    rx: &mut watch::Receiver<Arc<Translation>>,
    what: &str,
    done: impl Fn(&Translation) -> bool,
) -> Arc<Translation> {
    let t = timeout(WAIT, rx.wait_for(|t| done(t)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("store running");
    t.clone()
}

fn addrs(v: &[&str]) -> Vec<SocketAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn exact(h: &str) -> HostMatch {
    HostMatch::Exact(h.into())
}

fn check_examples(s: &Snapshot) {
    let hosts: Vec<&HostMatch> = s.http.hosts.iter().map(|v| &v.host).collect();
    assert_eq!(
        hosts,
        vec![
            // The passthrough Ingress's host serves plain HTTP too, as in ingress-nginx.
            &exact("passthrough.example.test"),
            &exact("secure.example.test"),
            &exact("www.example.test"),
            &HostMatch::Wildcard("apps.example.test".into())
        ]
    );

    let www = &s.http.hosts[2];
    let routes: Vec<(String, &str, Vec<SocketAddr>)> = www
        .routes
        .iter()
        .map(|r| {
            let kind = match &r.path {
                PathMatch::Exact(p) => format!("Exact {p}"),
                PathMatch::Prefix(p) => format!("Prefix {p}"),
                PathMatch::Regex(r) => format!("Regex {}", r.source),
            };
            (
                kind,
                r.target.upstream.name.as_str(),
                r.target.upstream.endpoints.clone(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            (
                "Exact /healthz".to_owned(),
                "default/web:80",
                addrs(&["198.18.1.2:8080", "198.18.2.2:8080"])
            ),
            (
                "Prefix /api".to_owned(),
                "default/api:80",
                addrs(&["198.18.2.2:8081"])
            ),
            (
                "Prefix /".to_owned(),
                "default/web:80",
                addrs(&["198.18.1.2:8080", "198.18.2.2:8080"])
            ),
        ]
    );
    assert!(!www.tls);
    assert!(www.routes[0].path.matches("/healthz") && !www.routes[0].path.matches("/healthz/x"));

    let secure = &s.http.hosts[1];
    assert!(secure.tls);
    assert_eq!(secure.routes.len(), 2);
    assert!(secure
        .routes
        .iter()
        .all(|r| r.target.policy.max_body_bytes == Some(8 << 20)));
    assert!(secure.routes.iter().all(|r| r.target.policy.ssl_redirect));

    let apps = &s.http.hosts[3];
    assert!(
        apps.host.matches("shop.apps.example.test") && !apps.host.matches("a.b.apps.example.test")
    );
    assert_eq!(
        apps.routes[0].target.upstream.endpoints,
        addrs(&["198.18.1.2:8080", "198.18.2.2:8080"])
    );

    // The demo certificate, parsed, for its host.
    assert_eq!(s.tls.certs.len(), 1);
    let cert = &s.tls.certs[0];
    assert_eq!(cert.hosts, vec![exact("secure.example.test")]);
    let want =
        CertificateDer::from_pem_file(examples_dir().join("demo-certs/secure.example.test.crt"))
            .unwrap();
    assert_eq!(cert.key.cert, vec![want]);
    cert.key.keys_match().unwrap();

    assert_eq!(s.passthrough.len(), 1);
    let pt = &s.passthrough[0];
    assert_eq!(pt.host, exact("passthrough.example.test"));
    assert_eq!(pt.upstream.name, "default/tls-backend:443");
    assert_eq!(pt.upstream.endpoints, addrs(&["198.18.1.2:8443"]));
    assert!(!pt.proxy_protocol);

    assert_eq!(s.l4.len(), 1);
    let l4 = &s.l4[0];
    assert_eq!(
        (l4.vip, l4.port, l4.protocol, l4.backends.clone()),
        (
            VIP.parse::<IpAddr>().unwrap(),
            9000,
            L4Protocol::Tcp,
            addrs(&["198.18.1.2:9000", "198.18.2.2:9000"])
        )
    );
    assert!(s.http.default_backend.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_manifests_translate_cleanly() {
    let (store, source) = start(examples_dir()).await;
    let t = store.translations.borrow().clone();
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let owned: Vec<String> = t
        .owned_ingresses
        .iter()
        .map(|o| format!("{}/{}", o.namespace, o.name))
        .collect();
    assert_eq!(
        owned,
        vec!["default/passthrough", "default/secure", "default/web"]
    );
    assert_eq!(t.snapshot.generation, 1);
    check_examples(&t.snapshot);
    source.abort();
}

/// A file written out over a while (`helm template > dir/app.yaml`) is read once it is
/// whole: the directory must be quiet for `SETTLE`, so no translation is published from the
/// first half of it (an Ingress there without the one further down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_slowly_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples_dir().join("00-ingressclass.yaml"),
        dir.path().join("00-ingressclass.yaml"),
    )
    .unwrap();
    let (store, source) = start(dir.path().to_owned()).await;
    let hosts = |t: &Translation| -> Vec<String> {
        t.snapshot
            .http
            .hosts
            .iter()
            .map(|v| format!("{:?}", v.host))
            .collect()
    };
    let mut seen = store.translations.clone();
    let watcher = tokio::spawn(async move {
        let mut published = Vec::new();
        while seen.changed().await.is_ok() {
            let h = hosts(&seen.borrow_and_update());
            let both = h.len() == 2;
            published.push(h);
            if both {
                break;
            }
        }
        published
    });
    let text = format!(
        "{}---\n{}",
        tests::ingressd::ingress_yaml("first", "a.test", "web", 80),
        tests::ingressd::ingress_yaml("second", "b.test", "web", 80)
    );
    // Twelve pieces 50 ms apart: never quiet for SETTLE until the end.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.path().join("app.yaml")).unwrap();
        for piece in text.as_bytes().chunks(text.len().div_ceil(12)) {
            f.write_all(piece).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let published = timeout(WAIT, watcher)
        .await
        .expect("both Ingresses in time")
        .unwrap();
    // (An empty translation may come first: the class alone, before the file.)
    assert!(
        published.iter().all(|h| h.len() != 1),
        "a translation was published from part of the file: {published:?}"
    );
    assert_eq!(
        published.last(),
        Some(&vec![
            format!("{:?}", exact("a.test")),
            format!("{:?}", exact("b.test"))
        ])
    );
    source.abort();
}

fn copy_examples(to: &Path) {
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_edits_to_the_example_set_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let (mut store, source) = start(dir.path().to_owned()).await;
    check_examples(&store.translations.borrow_and_update().snapshot);
    let web = |t: &Translation| {
        t.snapshot
            .http
            .hosts
            .iter()
            .find(|v| v.host == exact("www.example.test"))
            .map(|v| v.routes[2].target.upstream.endpoints.clone())
    };

    // Scale web to three endpoints.
    let services = dir.path().join("10-services.yaml");
    let text = std::fs::read_to_string(&services).unwrap();
    std::fs::write(
        &services,
        text.replace(
            "\"198.18.1.2:8080,198.18.2.2:8080\"",
            "\"198.18.1.2:8080,198.18.2.2:8080,198.18.3.2:8080\"",
        ),
    )
    .unwrap();
    let t = wait_for(&mut store.translations, "three web endpoints", |t| {
        web(t)
            == Some(addrs(&[
                "198.18.1.2:8080",
                "198.18.2.2:8080",
                "198.18.3.2:8080",
            ]))
    })
    .await;
    assert!(t.diagnostics.is_empty());

    // A broken file keeps its previous objects: no change is published.
    let generation = t.snapshot.generation;
    std::fs::write(
        dir.path().join("20-ingress-web.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nspec: [",
    )
    .unwrap();
    tokio::time::sleep(manifests::SETTLE * 5).await;
    let now = store.translations.borrow_and_update().clone();
    assert_eq!(now.snapshot.generation, generation);
    assert!(web(&now).is_some());

    // A deleted file removes its objects.
    std::fs::remove_file(dir.path().join("40-ingress-passthrough.yaml")).unwrap();
    let t = wait_for(&mut store.translations, "passthrough removed", |t| {
        t.snapshot.passthrough.is_empty()
    })
    .await;
    assert_eq!(t.owned_ingresses.len(), 2);
    assert!(
        web(&t).is_some(),
        "the broken file's Ingress is still served"
    );

    // Repairing the broken file applies its new content.
    std::fs::copy(
        examples_dir().join("20-ingress-web.yaml"),
        dir.path().join("20-ingress-web.yaml"),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("20-ingress-web.yaml")).unwrap();
    std::fs::write(
        dir.path().join("20-ingress-web.yaml"),
        text.replace("/healthz", "/livez"),
    )
    .unwrap();
    wait_for(&mut store.translations, "new exact path", |t| {
        t.snapshot.http.hosts.iter().any(|v| {
            v.routes
                .iter()
                .any(|r| r.path == PathMatch::Exact("/livez".into()))
        })
    })
    .await;
    source.abort();
}

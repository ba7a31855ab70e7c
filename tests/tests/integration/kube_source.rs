//! The Kubernetes-facing parts against the in-process fake API server (`tests::fake_api`):
//! the watch source, the Ingress status writer, leader election and Events. Every request goes
//! over real HTTP on loopback through kube-rs's own client.
use std::{net::IpAddr, sync::Arc, time::Duration};

use ingress::{
    apply::{
        events::{self, EventsConfig},
        leader::{self, LeaderConfig},
        publish::{self, PublishSource, StatusAddress},
        status::{self, Replicas, StatusConfig},
    },
    snapshot::{ObjectRef, Snapshot},
    source::{kube as kube_source, Key, Kind, Object, SourceEvent},
    translate::{Diagnostic, Translation},
};
use serde_json::{json, Value};
use tests::fake_api::{FakeApi, RecordedRequest};
use tokio::{
    sync::{mpsc, watch},
    time::{timeout, Instant},
};
use tokio_util::sync::CancellationToken;

/// Bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(15);
const TCP_SERVICES: &str = "tcp-services";

fn client(api: &FakeApi) -> kube::Client {
    let url = api.url().parse().unwrap_or_else(|e| panic!("{e}"));
    kube::Client::try_from(kube::Config::new(url)).unwrap_or_else(|e| panic!("{e}"))
}

fn meta(ns: &str, name: &str) -> Value {
    json!({
        "namespace": ns,
        "name": name,
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"huge\":\"copy\"}",
            "nginx.ingress.kubernetes.io/ssl-redirect": "false",
        },
        "managedFields": [{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {}},
        }],
    })
}

fn ingress(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta(ns, name),
        "spec": {"ingressClassName": "xdp", "rules": [{"host": format!("{name}.example"), "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]},
    })
}

fn service(ns: &str, name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta(ns, name),
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

fn slice(ns: &str, name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn secret(ns: &str, name: &str, type_: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(ns, name), "type": type_, "data": data})
}

fn configmap(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(ns, name), "data": {"9000": "shop/db:5432"}})
}

fn ingress_class(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": name},
        "spec": {"controller": "ingress.example.dev/xdp-ingress"},
    })
}

/// One of each kind, and ConfigMaps in several namespaces.
fn seed(api: &FakeApi) {
    api.apply(ingress("shop", "web"));
    api.apply(ingress_class("xdp"));
    api.apply(service("shop", "web", 80));
    api.apply(slice("shop", "web-abc", "10.1.0.5"));
    api.apply(secret(
        "shop",
        "web-tls",
        "kubernetes.io/tls",
        json!({"tls.crt": "Y3J0", "tls.key": "a2V5"}),
    ));
    api.apply(secret(
        "shop",
        "basic-auth",
        "Opaque",
        json!({"auth": "dXNlcjokYXByMSR4"}),
    ));
    api.apply(configmap("ingress", TCP_SERVICES));
    api.apply(configmap("ingress", "unrelated"));
    api.apply(configmap(CONTROLLER_NS, CONTROLLER_CONFIG));
    api.apply(configmap(CONTROLLER_NS, "headers"));
}

/// What [`seed`] puts in namespace `shop` and the cluster scope, by kind, sorted.
fn seeded_besides_configmaps() -> Vec<(Kind, Vec<String>)> {
    let expect = |k: Kind, n: &[&str]| (k, n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    vec![
        expect(Kind::Ingress, &["web"]),
        expect(Kind::IngressClass, &["xdp"]),
        expect(Kind::Service, &["web"]),
        expect(Kind::EndpointSlice, &["web-abc"]),
        expect(Kind::Secret, &["basic-auth", "web-tls"]),
    ]
}

/// The controller ConfigMap's namespace.
const CONTROLLER_NS: &str = "ingress-system";

/// The controller ConfigMap (`--configmap`).
const CONTROLLER_CONFIG: &str = "ingressd";

/// A running Kubernetes source and its output.
struct Source {
    rx: mpsc::Receiver<SourceEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Source {
    fn start(client: kube::Client) -> Source {
        Source::start_in(client, None)
    }

    /// Watching `namespace` only, as `--watch-namespace`.
    fn start_in(client: kube::Client, namespace: Option<&str>) -> Source {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(kube_source::run(client, tx, namespace.map(str::to_owned)));
        Source { rx, task }
    }

    async fn next(&mut self) -> SourceEvent {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("source stopped"),
            Err(_) => panic!("no source event within {WAIT:?}"),
        }
    }

    /// Events up to and including `Synced`.
    async fn until_synced(&mut self) -> Vec<SourceEvent> {
        let mut out = Vec::new();
        loop {
            let e = self.next().await;
            let done = matches!(e, SourceEvent::Synced);
            out.push(e);
            if done {
                return out;
            }
        }
    }

    /// Skips events of other kinds (other watchers' relists) until one concerning `kind`
    /// arrives; fails on `Synced`.
    async fn next_of(&mut self, kind: Kind) -> SourceEvent {
        loop {
            let e = self.next().await;
            let k = match &e {
                SourceEvent::Apply(o) => kube_source::key_of(o).kind,
                SourceEvent::Delete(key) => key.kind,
                SourceEvent::Replace(k, _) => *k,
                SourceEvent::Synced => panic!("a second Synced"),
            };
            if k == kind {
                return e;
            }
        }
    }

    /// Asserts nothing arrives for `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(e)) = timeout(quiet, self.rx.recv()).await {
            panic!("unexpected event {e:?}");
        }
    }
}

fn names(objects: &[Object]) -> Vec<String> {
    objects
        .iter()
        .map(|o| kube_source::key_of(o).name)
        .collect()
}

fn assert_stripped(object: &Object) {
    let meta = match object {
        Object::Ingress(o) => &o.metadata,
        Object::Service(o) => &o.metadata,
        Object::Secret(o) => &o.metadata,
        Object::ConfigMap(o) => &o.metadata,
        Object::EndpointSlice(o) => &o.metadata,
        Object::IngressClass(o) => &o.metadata,
    };
    assert!(
        meta.managed_fields.is_none(),
        "managedFields kept: {meta:?}"
    );
    if let Some(a) = &meta.annotations {
        assert!(
            !a.contains_key("kubectl.kubernetes.io/last-applied-configuration"),
            "{a:?}"
        );
        assert_eq!(
            a.get("nginx.ingress.kubernetes.io/ssl-redirect")
                .map(String::as_str),
            Some("false"),
            "other annotations must stay"
        );
    }
}

#[tokio::test]
async fn kube_source_lists_every_kind_then_synced_once() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    seed(&api);
    let mut source = Source::start(client(&api));
    let events = source.until_synced().await;
    let mut replaced: Vec<(Kind, Vec<String>)> = Vec::new();
    for e in &events[..events.len() - 1] {
        match e {
            SourceEvent::Replace(kind, objects) => {
                objects.iter().for_each(assert_stripped);
                replaced.push((*kind, names(objects)));
            }
            other => panic!("only Replace before Synced, got {other:?}"),
        }
    }
    // One ConfigMap watch over every namespace: `custom-headers` may name any ConfigMap in
    // its Ingress's namespace, and the controller ConfigMap's keys name more.
    let configmaps: Vec<Vec<String>> = replaced
        .iter()
        .filter(|(k, _)| *k == Kind::ConfigMap)
        .map(|(_, n)| n.clone())
        .collect();
    assert_eq!(configmaps.len(), 1, "{configmaps:?}");
    let mut all = configmaps[0].clone();
    all.sort();
    assert_eq!(
        all,
        ["headers", CONTROLLER_CONFIG, TCP_SERVICES, "unrelated"]
    );
    replaced.retain(|(k, _)| *k != Kind::ConfigMap);
    replaced.sort();
    assert_eq!(replaced, seeded_besides_configmaps());
    api.wait_for_request(WAIT, |r| {
        r.path() == "/api/v1/configmaps" && r.query("fieldSelector").is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("cluster-wide ConfigMaps: {e}"));
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.path().starts_with("/api/v1/namespaces/")
                && r.path().ends_with("/configmaps")),
        "no per-namespace ConfigMap watch besides"
    );
    source.assert_quiet(Duration::from_millis(300)).await;
}

/// `--watch-namespace`: Ingresses, Services, EndpointSlices and Secrets are listed and watched
/// in that namespace only (the API requests name it); IngressClasses and ConfigMaps stay
/// cluster-wide.
#[tokio::test]
async fn kube_source_watch_namespace_scopes_the_namespaced_kinds() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    seed(&api);
    api.apply(ingress("other", "theirs"));
    api.apply(service("other", "theirs", 80));
    api.apply(slice("other", "theirs-xyz", "10.2.0.5"));
    api.apply(secret(
        "other",
        "their-tls",
        "kubernetes.io/tls",
        json!({"tls.crt": "Y3J0"}),
    ));
    let mut source = Source::start_in(client(&api), Some("shop"));
    let events = source.until_synced().await;
    let mut replaced: Vec<(Kind, Vec<String>)> = events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Replace(kind, objects) => Some((*kind, names(objects))),
            _ => None,
        })
        .collect();
    replaced.iter_mut().for_each(|(_, n)| n.sort());
    let configmaps: Vec<_> = replaced
        .iter()
        .filter(|(k, _)| *k == Kind::ConfigMap)
        .map(|(_, n)| n.clone())
        .collect();
    assert_eq!(
        configmaps,
        [["headers", CONTROLLER_CONFIG, TCP_SERVICES, "unrelated"]],
        "ConfigMaps stay cluster-wide"
    );
    replaced.retain(|(k, _)| *k != Kind::ConfigMap);
    replaced.sort();
    assert_eq!(replaced, seeded_besides_configmaps(), "only shop's");
    for plural in ["ingresses", "services", "endpointslices", "secrets"] {
        api.wait_for_request(WAIT, |r| {
            r.path().starts_with("/api")
                && r.path().ends_with(&format!("/namespaces/shop/{plural}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{plural} in shop: {e}"));
    }
    // A change in another namespace is not seen; one in the watched namespace is.
    api.apply(ingress("other", "later"));
    api.apply(ingress("shop", "later"));
    match source.next_of(Kind::Ingress).await {
        SourceEvent::Apply(Object::Ingress(i)) => {
            assert_eq!(i.metadata.namespace.as_deref(), Some("shop"));
        }
        other => panic!("expected the shop Ingress, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_source_streams_add_modify_delete() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    seed(&api);
    let mut source = Source::start(client(&api));
    source.until_synced().await;
    // Watches must be open before the changes, or they would arrive as part of a list.
    api.wait_until(WAIT, "6 watches", |a| a.open_watches() == 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    api.apply(ingress("shop", "api"));
    match source.next_of(Kind::Ingress).await {
        SourceEvent::Apply(o @ Object::Ingress(_)) => {
            assert_eq!(kube_source::key_of(&o).name, "api");
            assert_stripped(&o);
        }
        other => panic!("expected Apply(Ingress api), got {other:?}"),
    }

    api.apply(service("shop", "web", 81));
    match source.next_of(Kind::Service).await {
        SourceEvent::Apply(Object::Service(s)) => {
            let port = s
                .spec
                .and_then(|s| s.ports)
                .and_then(|p| p.first().map(|p| p.port));
            assert_eq!(port, Some(81));
        }
        other => panic!("expected Apply(Service), got {other:?}"),
    }

    api.apply(slice("shop", "web-abc", "10.1.0.6"));
    assert!(matches!(
        source.next_of(Kind::EndpointSlice).await,
        SourceEvent::Apply(_)
    ));
    api.delete("discovery.k8s.io/v1", "EndpointSlice", "shop", "web-abc");
    match source.next_of(Kind::EndpointSlice).await {
        SourceEvent::Delete(key) => assert_eq!(
            key,
            Key {
                kind: Kind::EndpointSlice,
                namespace: "shop".into(),
                name: "web-abc".into()
            }
        ),
        other => panic!("expected Delete, got {other:?}"),
    }

    api.apply(secret(
        "shop",
        "new-tls",
        "kubernetes.io/tls",
        json!({"tls.crt": "YQ==", "tls.key": "Yg=="}),
    ));
    match source.next_of(Kind::Secret).await {
        SourceEvent::Apply(Object::Secret(s)) => {
            assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
            assert_eq!(s.data.map(|d| d.len()), Some(2));
        }
        other => panic!("expected Apply(Secret), got {other:?}"),
    }
    api.delete("v1", "Secret", "shop", "basic-auth");
    assert!(
        matches!(source.next_of(Kind::Secret).await, SourceEvent::Delete(k) if k.name == "basic-auth")
    );

    // A ConfigMap in any namespace streams too (a custom-headers ConfigMap may be anywhere).
    api.apply(configmap("other", "headers"));
    match source.next_of(Kind::ConfigMap).await {
        SourceEvent::Apply(o @ Object::ConfigMap(_)) => {
            let key = kube_source::key_of(&o);
            assert_eq!(
                (key.namespace.as_str(), key.name.as_str()),
                ("other", "headers")
            );
            assert_stripped(&o);
        }
        other => panic!("expected Apply(ConfigMap other/headers), got {other:?}"),
    }
    api.delete("v1", "ConfigMap", "other", "headers");
    assert!(matches!(
        source.next_of(Kind::ConfigMap).await,
        SourceEvent::Delete(k) if k.name == "headers" && k.namespace == "other"
    ));
    source.assert_quiet(Duration::from_millis(300)).await;
}

/// Helm v3 keeps every release revision as a Secret (often 100 KB to 1 MB each) and token
/// Secrets are never read either: neither may be listed, watched or cached.
#[tokio::test]
async fn kube_source_skips_helm_release_and_token_secrets() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    seed(&api);
    let helm = |revision: u32| {
        secret(
            "shop",
            &format!("sh.helm.release.v1.web.v{revision}"),
            "helm.sh/release.v1",
            json!({"release": "SDRzSUFBQUFBQUFD"}),
        )
    };
    let token = |value: &str| {
        secret(
            "shop",
            "default-token-x7k2p",
            "kubernetes.io/service-account-token",
            json!({"token": value}),
        )
    };
    api.apply(helm(1));
    api.apply(token("dG9rZW4x"));
    let mut source = Source::start(client(&api));
    let listed = source
        .until_synced()
        .await
        .into_iter()
        .find_map(|e| match e {
            SourceEvent::Replace(Kind::Secret, objects) => Some(names(&objects)),
            _ => None,
        });
    assert_eq!(
        listed.as_deref(),
        Some(["basic-auth".to_string(), "web-tls".to_string()].as_slice())
    );
    api.wait_until(WAIT, "6 watches", |a| a.open_watches() == 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let secret_requests: Vec<RecordedRequest> = api
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/api/v1/secrets")
        .collect();
    assert!(
        secret_requests.iter().any(|r| r.is_watch())
            && secret_requests.iter().any(|r| !r.is_watch()),
        "{secret_requests:#?}"
    );
    for r in &secret_requests {
        assert_eq!(
            r.query("fieldSelector").as_deref(),
            Some("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"),
            "{} {}",
            r.method,
            r.uri
        );
    }

    // Live changes: a new Helm revision and a rotated token never arrive; a TLS Secret written
    // after them (so on the same watch, later) does.
    api.apply(helm(2));
    api.apply(token("dG9rZW4y"));
    api.apply(secret(
        "shop",
        "new-tls",
        "kubernetes.io/tls",
        json!({"tls.crt": "YQ==", "tls.key": "Yg=="}),
    ));
    match source.next().await {
        SourceEvent::Apply(o) => assert_eq!(kube_source::key_of(&o).name, "new-tls"),
        other => panic!("expected Apply(Secret new-tls), got {other:?}"),
    }
    source.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn kube_source_relists_after_410_gone() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    seed(&api);
    let mut source = Source::start(client(&api));
    source.until_synced().await;
    api.wait_until(WAIT, "6 watches", |a| a.open_watches() == 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Changes the watches cannot deliver: the API is down, then every watch gets 410.
    api.set_unavailable(true);
    api.expire_watches();
    api.delete("networking.k8s.io/v1", "Ingress", "shop", "web");
    api.apply(ingress("shop", "late"));
    api.set_unavailable(false);

    // Every kind relists, in any order, each as one Replace; no second Synced.
    let mut relisted = std::collections::BTreeMap::new();
    while relisted.len() < 6 {
        match source.next().await {
            SourceEvent::Replace(kind, objects) => {
                objects.iter().for_each(assert_stripped);
                relisted.insert(kind, names(&objects));
            }
            other => panic!("expected relist Replaces only, got {other:?}"),
        }
    }
    assert_eq!(relisted[&Kind::Ingress], ["late"]);
    assert_eq!(relisted[&Kind::Secret], ["basic-auth", "web-tls"]);
    let mut configmaps = relisted[&Kind::ConfigMap].clone();
    configmaps.sort();
    assert_eq!(
        configmaps,
        ["headers", CONTROLLER_CONFIG, TCP_SERVICES, "unrelated"]
    );
    let relists = api
        .requests()
        .iter()
        .filter(|r| r.path() == "/apis/networking.k8s.io/v1/ingresses" && !r.is_watch())
        .count();
    assert!(
        relists >= 2,
        "initial list and at least one relist, got {relists}"
    );
}

#[tokio::test]
async fn kube_source_resumes_or_relists_after_dropped_connection() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    seed(&api);
    let mut source = Source::start(client(&api));
    source.until_synced().await;
    api.wait_until(WAIT, "6 watches", |a| a.open_watches() == 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Cut connections, history intact: the watch resumes and the change arrives as an Apply.
    api.set_unavailable(true);
    api.drop_watches();
    api.apply(ingress("shop", "during-outage"));
    api.set_unavailable(false);
    match source.next_of(Kind::Ingress).await {
        SourceEvent::Apply(o) => assert_eq!(kube_source::key_of(&o).name, "during-outage"),
        other => panic!("expected the missed change as Apply, got {other:?}"),
    }
    api.wait_until(WAIT, "6 watches again", |a| a.open_watches() == 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Cut connections and compact history: resuming gets 410, so the source relists.
    api.set_unavailable(true);
    api.drop_watches();
    api.delete("networking.k8s.io/v1", "Ingress", "shop", "web");
    api.compact();
    api.set_unavailable(false);
    match source.next_of(Kind::Ingress).await {
        SourceEvent::Replace(Kind::Ingress, objects) => {
            assert_eq!(names(&objects), ["during-outage"])
        }
        other => panic!("expected a relist Replace, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_source_keeps_retrying_until_the_api_answers() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    seed(&api);
    // 500s are not retried inside kube's client: the watcher's own backoff must do it.
    api.set_failing(Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    let (tx, mut rx) = mpsc::channel(64);
    let task = kube_source::spawn(client(&api), tx, None);
    let lists = |a: &FakeApi| {
        a.requests()
            .iter()
            .filter(|r| r.path() == "/apis/networking.k8s.io/v1/ingresses")
            .count()
    };
    api.wait_until(WAIT, "a retried Ingress list", |a| lists(a) >= 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!task.is_finished(), "the source gave up");
    assert!(
        rx.try_recv().is_err(),
        "nothing is sent before a list succeeds"
    );
    api.set_failing(None);
    let mut source = Source { rx, task };
    let events = source.until_synced().await;
    assert_eq!(events.len(), 7, "6 Replaces and Synced: {events:?}");
}

#[tokio::test]
async fn kube_client_reads_a_kubeconfig_file() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(service("shop", "web", 80));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\nusers:\n- name: me\n  user:\n    token: not-a-secret\n",
        api.url()
    );
    std::fs::write(&path, kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let client = kube_source::client(Some(&path))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::all(client);
    let list = timeout(WAIT, services.list(&Default::default()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.items.len(), 1);

    let missing = kube_source::client(Some(&dir.path().join("nope"))).await;
    let err = missing.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("reading kubeconfig") && err.contains("nope"),
        "{err}"
    );
}

// ---- status --------------------------------------------------------------------------------

const PUBLISH: &str = "192.0.2.10";
const SET_BODY: &str = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"}]}}}"#;

/// A clear: guarded by the resourceVersion of the Ingress as it was read just before.
fn clear_body(resource_version: &str) -> String {
    format!(
        r#"{{"metadata":{{"resourceVersion":"{resource_version}"}},"status":{{"loadBalancer":{{"ingress":null}}}}}}"#
    )
}

fn resource_version(api: &FakeApi, name: &str) -> String {
    api.get("networking.k8s.io/v1", "Ingress", "shop", name)
        .and_then(|i| {
            i["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn object_path(name: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/shop/ingresses/{name}")
}

fn owned(names: &[&str]) -> Vec<ObjectRef> {
    names
        .iter()
        .map(|n| ObjectRef {
            kind: "Ingress",
            namespace: "shop".into(),
            name: (*n).into(),
        })
        .collect()
}

fn translation(
    generation: u64,
    owned_ingresses: Vec<ObjectRef>,
    diagnostics: Vec<Diagnostic>,
) -> Arc<Translation> {
    Arc::new(Translation {
        snapshot: Arc::new(Snapshot {
            generation,
            ..Default::default()
        }),
        diagnostics,
        owned_ingresses,
        claimed_elsewhere: Vec::new(),
    })
}

fn patches(api: &FakeApi) -> Vec<RecordedRequest> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == http::Method::PATCH)
        .collect()
}

async fn wait_patches(api: &FakeApi, n: usize) -> Vec<RecordedRequest> {
    api.wait_until(WAIT, &format!("{n} PATCH requests"), |a| {
        patches(a).len() >= n
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    patches(api)
}

fn status_path(name: &str) -> String {
    format!(
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/{name}/status?&fieldManager=ingressd"
    )
}

fn assert_patch(r: &RecordedRequest, name: &str, body: &str) {
    assert_eq!(r.method, http::Method::PATCH);
    assert_eq!(r.uri, status_path(name));
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(std::str::from_utf8(&r.body).unwrap_or("<not utf-8>"), body);
}

fn lb(api: &FakeApi, name: &str) -> Value {
    let ing = api
        .get("networking.k8s.io/v1", "Ingress", "shop", name)
        .unwrap_or_default();
    ing["status"]["loadBalancer"].clone()
}

struct StatusTask {
    translations: watch::Sender<Arc<Translation>>,
    leader: watch::Sender<bool>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StatusTask {
    /// The status writer publishing [`PUBLISH`].
    fn start(api: &FakeApi, leading: bool, resync: Duration) -> StatusTask {
        let addr: IpAddr = PUBLISH.parse().unwrap_or_else(|e| panic!("{e}"));
        Self::following(
            api,
            watch::channel(vec![addr.into()]).1,
            Arc::new(Translation::default()),
            leading,
            resync,
        )
    }

    /// The leading status writer publishing what `source` finds, for the owned Ingress
    /// `shop/web`; cancel the token to stop the source.
    fn publishing(api: &FakeApi, source: PublishSource) -> (StatusTask, CancellationToken) {
        let shutdown = CancellationToken::new();
        let addresses = publish::spawn(Some(client(api)), source, shutdown.clone());
        let st = Self::following(
            api,
            addresses,
            translation(1, owned(&["web"]), vec![]),
            true,
            Duration::from_secs(60),
        );
        (st, shutdown)
    }

    /// The status writer publishing whatever `addresses` holds, starting from `first`.
    fn following(
        api: &FakeApi,
        addresses: watch::Receiver<Vec<StatusAddress>>,
        first: Arc<Translation>,
        leading: bool,
        resync: Duration,
    ) -> StatusTask {
        Self::following_in(api, addresses, first, leading, resync, None, None)
    }

    /// [`Self::following`], with `--watch-namespace` set to `namespace`, and clearing on stop
    /// when `replicas` finds no other.
    fn following_in(
        api: &FakeApi,
        addresses: watch::Receiver<Vec<StatusAddress>>,
        first: Arc<Translation>,
        leading: bool,
        resync: Duration,
        namespace: Option<&str>,
        replicas: Option<Replicas>,
    ) -> StatusTask {
        let (translations, trx) = watch::channel(first);
        let (leader, lrx) = watch::channel(leading);
        let shutdown = CancellationToken::new();
        let config = StatusConfig {
            resync,
            retry: Duration::from_millis(200),
            ..StatusConfig::following(addresses)
        }
        .in_namespace(namespace.map(str::to_owned))
        .clearing_on_shutdown(replicas);
        let task = tokio::spawn(status::run(client(api), config, trx, lrx, shutdown.clone()));
        StatusTask {
            translations,
            leader,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn status_patches_set_and_clear_exactly_and_skips_no_ops() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    api.apply(ingress("shop", "api"));
    let st = StatusTask::start(&api, true, Duration::from_secs(3600));
    st.translations
        .send_replace(translation(1, owned(&["api", "web"]), vec![]));

    let p = wait_patches(&api, 2).await;
    assert_patch(&p[0], "api", SET_BODY);
    assert_patch(&p[1], "web", SET_BODY);
    assert_eq!(lb(&api, "web"), json!({"ingress": [{"ip": PUBLISH}]}));
    // The first thing a new leader does is one LIST to learn the current statuses.
    let first = &api.requests()[0];
    assert_eq!(
        (first.method.as_str(), first.path()),
        ("GET", "/apis/networking.k8s.io/v1/ingresses")
    );

    let rv = resource_version(&api, "api");
    st.translations
        .send_replace(translation(2, owned(&["web"]), vec![]));
    let p = wait_patches(&api, 3).await;
    assert_patch(&p[2], "api", &clear_body(&rv));
    assert_eq!(lb(&api, "api"), json!({}));

    // Nothing changed: no request at all.
    let before = api.requests().len();
    st.translations
        .send_replace(translation(3, owned(&["web"]), vec![]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        api.requests().len(),
        before,
        "{:#?}",
        &api.requests()[before..]
    );

    // An owned Ingress that disappears is not an error and is not retried.
    st.translations
        .send_replace(translation(4, owned(&["web", "gone"]), vec![]));
    let p = wait_patches(&api, 4).await;
    assert_eq!(p[3].uri, status_path("gone"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(patches(&api).len(), 4, "a 404 is final");
    st.stop().await;
}

/// A clear never removes a status another controller wrote: not one it wrote before we
/// looked (no patch at all), and not one it wrote between our read and our patch (the
/// patch's resourceVersion no longer matches, the re-read shows the other status).
#[tokio::test]
async fn status_clear_never_removes_a_status_another_controller_wrote() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    api.apply(ingress("shop", "api"));
    api.apply(ingress("shop", "keep"));
    let st = StatusTask::start(&api, true, Duration::from_secs(3600));
    st.translations
        .send_replace(translation(1, owned(&["api", "keep", "web"]), vec![]));
    wait_patches(&api, 3).await;
    let other = json!({"ingress": [{"hostname": "lb.other.example"}]});
    let write_other = |name: &str| {
        let mut ing = api
            .get("networking.k8s.io/v1", "Ingress", "shop", name)
            .unwrap_or_default();
        ing["status"]["loadBalancer"] = other.clone();
        api.apply(ing);
    };

    // Written before we look: read, found not ours, left alone.
    write_other("web");
    st.translations
        .send_replace(translation(2, owned(&["api", "keep"]), vec![]));
    api.wait_for_request(WAIT, |r| {
        r.method == http::Method::GET && r.uri == object_path("web")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(patches(&api).len(), 3, "{:#?}", patches(&api));
    assert_eq!(lb(&api, "web"), other);

    // Written between our read and our patch: every answer is held back a second, and the
    // other controller writes half a second after our read has been answered.
    api.set_delay(Some(Duration::from_secs(1)));
    st.translations
        .send_replace(translation(3, owned(&["keep"]), vec![]));
    let read = api
        .wait_for_request(WAIT, |r| {
            r.method == http::Method::GET && r.uri == object_path("api")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep_until(read.at + Duration::from_millis(1500)).await;
    write_other("api");
    api.wait_until(WAIT, "a second read of api after the conflict", |a| {
        a.requests()
            .iter()
            .filter(|r| r.method == http::Method::GET && r.uri == object_path("api"))
            .count()
            >= 2
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    api.set_delay(None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let api_patches: Vec<String> = patches(&api)
        .iter()
        .filter(|r| r.uri == status_path("api"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(
        api_patches.len(),
        2,
        "one set, one refused clear: {api_patches:#?}"
    );
    assert_eq!(
        lb(&api, "api"),
        other,
        "the other controller's status was removed"
    );
    // Still ours: untouched throughout.
    assert_eq!(lb(&api, "keep"), json!({"ingress": [{"ip": PUBLISH}]}));
    st.stop().await;
}

#[tokio::test]
async fn status_non_leader_and_placeholder_write_nothing() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    let st = StatusTask::start(&api, true, Duration::from_secs(3600));
    // The Default translation (generation 0) is a placeholder, never acted on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.requests().is_empty(), "{:?}", api.requests());

    st.leader.send_replace(false);
    st.translations
        .send_replace(translation(1, owned(&["web"]), vec![]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        api.requests().is_empty(),
        "a non-leader sent {:?}",
        api.requests()
    );

    st.leader.send_replace(true);
    let p = wait_patches(&api, 1).await;
    assert_patch(&p[0], "web", SET_BODY);
    st.stop().await;
}

#[tokio::test]
async fn status_resync_repairs_and_clears_leftovers() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    // Left by an earlier run: shows our address but is no longer ours.
    let mut old = ingress("shop", "old");
    old["status"] = json!({"loadBalancer": {"ingress": [{"ip": PUBLISH}]}});
    api.apply(old);
    let st = StatusTask::start(&api, true, Duration::from_millis(500));
    st.translations
        .send_replace(translation(1, owned(&["web"]), vec![]));
    let p = wait_patches(&api, 2).await;
    let mut uris: Vec<&str> = p.iter().map(|r| r.uri.as_str()).collect();
    uris.sort();
    assert_eq!(uris, [status_path("old"), status_path("web")]);
    assert_eq!(lb(&api, "old"), json!({}));

    // Someone else overwrites our status; the periodic re-check puts it back.
    let mut web = api
        .get("networking.k8s.io/v1", "Ingress", "shop", "web")
        .unwrap_or_default();
    web["status"] = json!({"loadBalancer": {"ingress": [{"hostname": "elsewhere.example"}]}});
    api.apply(web);
    api.wait_until(WAIT, "status repaired", |a| {
        lb(a, "web") == json!({"ingress": [{"ip": PUBLISH}]})
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_patch(&patches(&api)[2], "web", SET_BODY);
    st.stop().await;
}

/// An Ingress of another controller's class that shows our address (both controllers publish
/// the same nodes) is left alone on every resync; once no class claims it, it is cleared.
#[tokio::test]
async fn status_never_clears_an_ingress_another_controller_claims() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    let ours = json!({"ingress": [{"ip": PUBLISH}]});
    for name in ["theirs", "old"] {
        let mut i = ingress("shop", name);
        i["status"] = json!({"loadBalancer": ours.clone()});
        api.apply(i);
    }
    let claimed = |names: &[&str], generation| {
        let mut t = (*translation(generation, owned(&["web"]), vec![])).clone();
        t.claimed_elsewhere = owned(names);
        Arc::new(t)
    };
    let st = StatusTask::start(&api, true, Duration::from_millis(300));
    st.translations.send_replace(claimed(&["theirs"], 1));
    let p = wait_patches(&api, 2).await;
    let mut uris: Vec<&str> = p.iter().map(|r| r.uri.as_str()).collect();
    uris.sort();
    assert_eq!(uris, [status_path("old"), status_path("web")]);
    // Several resyncs later: still theirs, untouched, not even read.
    let lists = |a: &FakeApi| {
        a.requests()
            .iter()
            .filter(|r| r.method == http::Method::GET && r.path().ends_with("/ingresses"))
            .count()
    };
    let before = lists(&api);
    api.wait_until(WAIT, "three more resyncs", |a| lists(a) >= before + 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !api.requests().iter().any(|r| r.uri.contains("/theirs")),
        "{:#?}",
        api.requests()
    );
    assert_eq!(lb(&api, "theirs"), ours);

    // Its class now names no IngressClass: nobody's, so it is cleared.
    st.translations.send_replace(claimed(&[], 2));
    let p = wait_patches(&api, 3).await;
    assert_eq!(p[2].uri, status_path("theirs"));
    assert_eq!(lb(&api, "theirs"), json!({}));
    st.stop().await;
}

/// With `--watch-namespace` the writer lists that namespace only (a namespaced Role allows
/// nothing else) and leaves another namespace's Ingress alone even when it shows our address.
#[tokio::test]
async fn status_in_one_namespace_lists_and_clears_there_only() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    let mut old = ingress("shop", "old");
    old["status"] = json!({"loadBalancer": {"ingress": [{"ip": PUBLISH}]}});
    api.apply(old);
    let mut theirs = ingress("other", "theirs");
    theirs["status"] = json!({"loadBalancer": {"ingress": [{"ip": PUBLISH}]}});
    api.apply(theirs);
    let addr: IpAddr = PUBLISH.parse().unwrap_or_else(|e| panic!("{e}"));
    let st = StatusTask::following_in(
        &api,
        watch::channel(vec![addr.into()]).1,
        translation(1, owned(&["web"]), vec![]),
        true,
        Duration::from_millis(300),
        Some("shop"),
        None,
    );
    let p = wait_patches(&api, 2).await;
    let mut uris: Vec<&str> = p.iter().map(|r| r.uri.as_str()).collect();
    uris.sort();
    assert_eq!(uris, [status_path("old"), status_path("web")]);
    // A few re-checks later, the other namespace was never read nor written.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let requests = api.requests();
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path()),
        (
            "GET",
            "/apis/networking.k8s.io/v1/namespaces/shop/ingresses"
        )
    );
    for r in &requests {
        assert!(
            r.path()
                .starts_with("/apis/networking.k8s.io/v1/namespaces/shop/"),
            "outside the namespace: {} {}",
            r.method,
            r.uri
        );
    }
    let theirs = api
        .get("networking.k8s.io/v1", "Ingress", "other", "theirs")
        .unwrap_or_default();
    assert_eq!(
        theirs["status"]["loadBalancer"],
        json!({"ingress": [{"ip": PUBLISH}]})
    );
    st.stop().await;
}

#[tokio::test]
async fn status_retries_after_api_errors() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    // 500s are not retried inside kube's client; the status writer retries on its own, with
    // no new translation needed.
    api.set_failing(Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    let st = StatusTask::start(&api, true, Duration::from_secs(3600));
    st.translations
        .send_replace(translation(1, owned(&["web"]), vec![]));
    wait_patches(&api, 2).await;
    api.set_failing(None);
    api.wait_until(WAIT, "status written after the outage", |a| {
        lb(a, "web") == json!({"ingress": [{"ip": PUBLISH}]})
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    st.stop().await;
}

// ---- leader election -----------------------------------------------------------------------

fn lease_config(identity: &str) -> LeaderConfig {
    LeaderConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
        ..LeaderConfig::new("ingress", identity)
    }
}

/// A pod of ingressd (label `app=ingressd` in namespace `ingress`) on the node `host_ip`.
fn ingressd_pod(name: &str, host_ip: &str, phase: &str, deleting: bool) -> Value {
    let mut metadata = json!({"namespace": "ingress", "name": name, "labels": {"app": "ingressd"}});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"containers": [{"name": "ingressd", "image": "ingressd"}]},
        "status": {"phase": phase, "hostIP": host_ip},
    })
}

/// `--publish-pods`: the status lists the node of every running ingressd pod, follows pods
/// coming, starting and leaving, ignores other pods, and is never cleared by an empty view.
#[tokio::test]
async fn status_publishes_the_nodes_of_running_ingressd_pods() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    api.apply(ingressd_pod("ingressd-a", "192.0.2.2", "Running", false));
    api.apply(ingressd_pod("ingressd-b", "192.0.2.1", "Running", false));
    // Not ours: another label.
    let mut other = ingressd_pod("web-x", "192.0.2.9", "Running", false);
    other["metadata"]["labels"]["app"] = json!("web");
    api.apply(other);
    let source = PublishSource::Pods {
        namespace: "ingress".into(),
        selector: "app=ingressd".into(),
    };
    let (st, shutdown) = StatusTask::publishing(&api, source);
    let shows = |want: &[&str]| {
        let want: Vec<Value> = want.iter().map(|ip| json!({"ip": ip})).collect();
        move |a: &FakeApi| {
            let ing = a
                .get("networking.k8s.io/v1", "Ingress", "shop", "web")
                .unwrap_or_default();
            ing["status"]["loadBalancer"]["ingress"] == Value::Array(want.clone())
        }
    };
    let wait = |want: &'static [&'static str]| {
        let api = &api;
        async move {
            api.wait_until(WAIT, &format!("status {want:?}"), shows(want))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    wait(&["192.0.2.1", "192.0.2.2"]).await;

    // A new node's pod counts once it runs.
    api.apply(ingressd_pod("ingressd-c", "192.0.2.3", "Pending", false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        shows(&["192.0.2.1", "192.0.2.2"])(&api),
        "a pending pod was published"
    );
    api.apply(ingressd_pod("ingressd-c", "192.0.2.3", "Running", false));
    wait(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]).await;
    // A terminating pod's node leaves first; a deleted pod's too.
    api.apply(ingressd_pod("ingressd-a", "192.0.2.2", "Running", true));
    wait(&["192.0.2.1", "192.0.2.3"]).await;
    api.delete("v1", "Pod", "ingress", "ingressd-a");
    api.delete("v1", "Pod", "ingress", "ingressd-c");
    wait(&["192.0.2.1"]).await;
    // With no running pod at all the status stays (never an empty list).
    let before = patches(&api).len();
    api.delete("v1", "Pod", "ingress", "ingressd-b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(patches(&api).len(), before, "statuses cleared");
    assert!(shows(&["192.0.2.1"])(&api));
    // Ingresses owned later get the current list too.
    api.apply(ingress("shop", "api"));
    st.translations
        .send_replace(translation(2, owned(&["api", "web"]), vec![]));
    api.wait_until(WAIT, "api status", |a| {
        let ing = a
            .get("networking.k8s.io/v1", "Ingress", "shop", "api")
            .unwrap_or_default();
        ing["status"]["loadBalancer"]["ingress"] == json!([{"ip": "192.0.2.1"}])
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    st.stop().await;
    shutdown.cancel();
}

/// A Service `ingress/<name>` of `spec` (its `type` among it) and `status`.
fn front_service(name: &str, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "ingress", "name": name},
        "spec": spec, "status": status,
    })
}

/// `--publish-service`: the status lists the Service's load balancer (hostnames as
/// hostnames), follows it as it changes, ignores other Services, keeps the last list while
/// the Service has no address or is gone, and takes a recreated Service's cluster IP.
#[tokio::test]
async fn status_publishes_the_addresses_of_the_publish_service() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    let lb_spec = json!({"type": "LoadBalancer", "clusterIP": "10.96.0.9"});
    api.apply(front_service("front", lb_spec.clone(), json!({})));
    let other_status = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.50"}]}});
    api.apply(front_service("other", lb_spec.clone(), other_status));
    let source = PublishSource::Service {
        namespace: "ingress".into(),
        name: "front".into(),
    };
    let (st, shutdown) = StatusTask::publishing(&api, source);
    // No load balancer yet: nothing is written (not the cluster IP, not the other Service's).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(patches(&api).len(), 0, "a status was written");
    let wait = |want: Value| {
        let api = &api;
        async move {
            let what = format!("status {want}");
            api.wait_until(WAIT, &what, |a| lb(a, "web") == json!({"ingress": want}))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    let lb_status = |entries: Value| json!({"loadBalancer": {"ingress": entries}});
    api.apply(front_service(
        "front",
        lb_spec.clone(),
        lb_status(json!([{"hostname": "a1.elb.example.com"}])),
    ));
    wait(json!([{"hostname": "a1.elb.example.com"}])).await;
    api.apply(front_service(
        "front",
        lb_spec.clone(),
        lb_status(json!([{"ip": "203.0.113.7"}, {"hostname": "a1.elb.example.com"}])),
    ));
    wait(json!([{"ip": "203.0.113.7"}, {"hostname": "a1.elb.example.com"}])).await;
    // Deleted: the last list stays.
    let before = patches(&api).len();
    api.delete("v1", "Service", "ingress", "front");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(patches(&api).len(), before, "statuses changed");
    // Recreated as a ClusterIP Service: its cluster IP.
    api.apply(front_service(
        "front",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10"}),
        json!({}),
    ));
    wait(json!([{"ip": "10.96.0.10"}])).await;
    st.stop().await;
    shutdown.cancel();
}

/// An Ingress un-owned while the published addresses change still shows the old list,
/// which is no longer "ours" by the current one; it is cleared all the same, and a status
/// this process never wrote is left alone.
#[tokio::test]
async fn status_clears_an_ingress_unowned_while_the_addresses_change() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    api.apply(ingress("shop", "api"));
    let mut foreign = ingress("shop", "foreign");
    foreign["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}});
    api.apply(foreign);
    let ip = |s: &str| StatusAddress::Ip(s.parse().unwrap_or_else(|e| panic!("{e}")));
    let (addresses, arx) = watch::channel(vec![ip("192.0.2.1")]);
    let st = StatusTask::following(
        &api,
        arx,
        translation(1, owned(&["api", "web"]), vec![]),
        true,
        Duration::from_secs(3600),
    );
    let old = json!({"ingress": [{"ip": "192.0.2.1"}]});
    api.wait_until(WAIT, "both statuses set", |a| {
        lb(a, "web") == old && lb(a, "api") == old
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Both changes before the writer runs again.
    addresses.send_replace(vec![ip("192.0.2.2")]);
    st.translations
        .send_replace(translation(2, owned(&["web"]), vec![]));
    let new = json!({"ingress": [{"ip": "192.0.2.2"}]});
    api.wait_until(WAIT, "web moved to the new list, api cleared", |a| {
        lb(a, "web") == new && lb(a, "api") == json!({})
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: web {}, api {}", lb(&api, "web"), lb(&api, "api")));
    assert_eq!(
        lb(&api, "foreign"),
        json!({"ingress": [{"ip": "198.51.100.7"}]}),
        "a status this process never wrote was touched"
    );
    st.stop().await;
}

fn lease(api: &FakeApi) -> Value {
    api.get(
        "coordination.k8s.io/v1",
        "Lease",
        "ingress",
        leader::LEASE_NAME,
    )
    .unwrap_or_default()
}

async fn wait_leading(rx: &mut watch::Receiver<bool>, want: bool) -> Instant {
    timeout(WAIT, rx.wait_for(|l| *l == want))
        .await
        .unwrap_or_else(|_| panic!("leadership never became {want}"))
        .unwrap_or_else(|e| panic!("{e}"));
    Instant::now()
}

#[tokio::test]
async fn leader_acquires_renews_and_is_taken_over_only_after_expiry() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let stop_a = CancellationToken::new();
    let (mut a, task_a) = leader::spawn(client(&api), lease_config("pod-a"), stop_a.clone());
    wait_leading(&mut a, true).await;
    let first = lease(&api);
    assert_eq!(first["spec"]["holderIdentity"], "pod-a");
    assert_eq!(first["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(first["spec"]["leaseTransitions"], 0);

    api.wait_until(WAIT, "a renewal", |api| {
        lease(api)["spec"]["renewTime"] != first["spec"]["renewTime"]
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let renewed = lease(&api);
    assert_eq!(renewed["spec"]["acquireTime"], first["spec"]["acquireTime"]);
    assert_eq!(renewed["spec"]["holderIdentity"], "pod-a");

    let stop_b = CancellationToken::new();
    let (mut b, task_b) = leader::spawn(client(&api), lease_config("pod-b"), stop_b.clone());
    // B waits while A renews, for longer than the lease duration.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(3000) {
        assert!(!*b.borrow(), "pod-b led while pod-a renewed");
        assert!(*a.borrow(), "pod-a lost the lease while renewing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A dies without releasing: B takes over, but only once the lease has expired.
    task_a.abort();
    let died = Instant::now();
    let took_over = wait_leading(&mut b, true).await;
    let waited = took_over - died;
    assert!(
        waited >= Duration::from_millis(1700),
        "took over after only {waited:?}"
    );
    assert!(
        waited <= Duration::from_secs(5),
        "took over after {waited:?}"
    );
    let taken = lease(&api);
    assert_eq!(taken["spec"]["holderIdentity"], "pod-b");
    assert_eq!(taken["spec"]["leaseTransitions"], 1);
    assert_ne!(taken["spec"]["acquireTime"], first["spec"]["acquireTime"]);

    stop_b.cancel();
    timeout(WAIT, task_b)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    stop_a.cancel();
}

#[tokio::test]
async fn leader_releases_on_shutdown_for_a_fast_handover() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let stop_a = CancellationToken::new();
    let (mut a, task_a) = leader::spawn(client(&api), lease_config("pod-a"), stop_a.clone());
    wait_leading(&mut a, true).await;
    let stop_b = CancellationToken::new();
    let (mut b, task_b) = leader::spawn(client(&api), lease_config("pod-b"), stop_b.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!*b.borrow());

    stop_a.cancel();
    let released = wait_leading(&mut a, false).await;
    timeout(WAIT, task_a)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let took_over = wait_leading(&mut b, true).await;
    assert!(
        took_over - released < Duration::from_millis(1500),
        "handover took {:?}",
        took_over - released
    );
    assert_eq!(lease(&api)["spec"]["holderIdentity"], "pod-b");
    stop_b.cancel();
    timeout(WAIT, task_b)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn leader_steps_down_when_it_cannot_renew() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let stop = CancellationToken::new();
    let (mut a, task) = leader::spawn(client(&api), lease_config("pod-a"), stop.clone());
    wait_leading(&mut a, true).await;
    api.set_unavailable(true);
    let cut = Instant::now();
    let stepped_down = wait_leading(&mut a, false).await;
    // Before the 2 s lease can expire for anyone else.
    assert!(
        stepped_down - cut < Duration::from_millis(1900),
        "stepped down after {:?}",
        stepped_down - cut
    );
    api.set_unavailable(false);
    wait_leading(&mut a, true).await;
    assert_eq!(
        lease(&api)["spec"]["leaseTransitions"],
        0,
        "renewed its own lease, no transition"
    );
    stop.cancel();
    timeout(WAIT, task)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The last Lease write received before `api` was stalled: every one before was answered.
fn last_lease_write(api: &FakeApi) -> RecordedRequest {
    api.requests()
        .into_iter()
        .rev()
        .find(|r| r.method == http::Method::PUT && r.path().ends_with(leader::LEASE_NAME))
        .unwrap_or_else(|| panic!("no lease write: {:#?}", api.requests()))
}

/// Renewals that hang (a wedged API server, a black-holed connection) end leadership
/// `renew_deadline` after the last successful renewal was sent, not when the hanging round
/// gives up: another replica may take over `lease_duration` after that renewal.
#[tokio::test]
async fn leader_steps_down_at_the_deadline_while_a_renewal_hangs() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    // A pause between rounds that is long against the deadline, so leading on past the
    // deadline (into the pause, then the hanging round) shows.
    let config = LeaderConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_secs(1),
        ..LeaderConfig::new("ingress", "pod-a")
    };
    let stop = CancellationToken::new();
    let (mut a, task) = leader::spawn(client(&api), config, stop.clone());
    wait_leading(&mut a, true).await;
    let first = lease(&api);
    api.wait_until(WAIT, "a renewal", |api| {
        lease(api)["spec"]["renewTime"] != first["spec"]["renewTime"]
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    api.set_stalled(true);
    let renewed = last_lease_write(&api).at;

    let stepped_down = wait_leading(&mut a, false).await;
    let led = stepped_down - renewed;
    assert!(
        led >= Duration::from_millis(1800) && led < Duration::from_millis(2300),
        "led for {led:?} after the last renewal; renew deadline 2 s"
    );
    assert!(api.held_requests() > 0, "a renewal must have hung");

    api.set_stalled(false);
    wait_leading(&mut a, true).await;
    stop.cancel();
    timeout(WAIT, task)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Shutdown while a renewal hangs releases the Lease at once, not after the round gives up.
#[tokio::test]
async fn leader_releases_on_shutdown_during_a_hanging_renewal() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let config = LeaderConfig {
        lease_duration: Duration::from_secs(10),
        renew_deadline: Duration::from_secs(6),
        retry_period: Duration::from_millis(100),
        ..LeaderConfig::new("ingress", "pod-a")
    };
    let stop = CancellationToken::new();
    let (mut a, task) = leader::spawn(client(&api), config, stop.clone());
    wait_leading(&mut a, true).await;
    api.set_stalled(true);
    api.wait_until(WAIT, "a renewal request hanging", |a| a.held_requests() > 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The hanging request stays unanswered; the release's own requests are served.
    api.set_stalled(false);

    let cancelled = Instant::now();
    stop.cancel();
    api.wait_until(WAIT, "the lease released", |a| {
        lease(a)["spec"]["holderIdentity"].is_null()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cancelled.elapsed() < Duration::from_secs(1),
        "released {:?} after shutdown",
        cancelled.elapsed()
    );
    assert_eq!(lease(&api)["spec"]["leaseDurationSeconds"], 1);
    assert!(!*a.borrow());
    timeout(Duration::from_secs(1), task)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn leader_racing_candidates_never_both_lead() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let stop = CancellationToken::new();
    let candidates: Vec<_> = ["pod-a", "pod-b", "pod-c"]
        .iter()
        .map(|id| leader::spawn(client(&api), lease_config(id), stop.clone()))
        .collect();
    let start = Instant::now();
    let mut saw_leader = false;
    while start.elapsed() < Duration::from_millis(1500) {
        let leading = candidates.iter().filter(|(rx, _)| *rx.borrow()).count();
        assert!(leading <= 1, "{leading} leaders at once");
        saw_leader |= leading == 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_leader);
    let creates = api
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::POST && r.path().ends_with("/leases"))
        .count();
    assert!(creates >= 1);
    stop.cancel();
    for (_, task) in candidates {
        timeout(WAIT, task)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

// ---- events --------------------------------------------------------------------------------

fn diagnostic(name: &str, message: &str) -> Diagnostic {
    Diagnostic {
        object: ObjectRef {
            kind: "Ingress",
            namespace: "shop".into(),
            name: name.into(),
        },
        reason: "BackendNotFound",
        message: message.into(),
    }
}

fn posts(api: &FakeApi) -> Vec<RecordedRequest> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == http::Method::POST)
        .collect()
}

/// A diagnostic the rate limits held back is posted once they allow, without waiting for
/// the configuration to change (it was dropped for as long as it lasted).
#[tokio::test]
async fn events_held_back_by_the_limits_are_posted_later() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    let (translations, trx) = watch::channel(Arc::new(Translation::default()));
    let (_leader, lrx) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let config = EventsConfig {
        dedup_window: Duration::from_millis(700),
        per_object_limit: 1,
        retry_deferred: Duration::from_millis(200),
        ..EventsConfig::new("ingress.example.dev/xdp-ingress", "pod-a")
    };
    let task = tokio::spawn(events::run(
        client(&api),
        config,
        trx,
        lrx,
        shutdown.clone(),
    ));
    translations.send_replace(translation(
        1,
        vec![],
        vec![
            diagnostic("web", "service shop/a not found"),
            diagnostic("web", "service shop/b not found"),
        ],
    ));
    api.wait_until(WAIT, "the first event", |a| posts(a).len() == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // One per object per window: the second waits for the window, then goes alone.
    api.wait_until(WAIT, "the held-back event", |a| posts(a).len() == 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let notes: Vec<String> = posts(&api)
        .iter()
        .map(|p| p.json()["note"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        notes,
        ["service shop/a not found", "service shop/b not found"]
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(posts(&api).len(), 2, "each posted once");
    shutdown.cancel();
    timeout(WAIT, task)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn events_one_post_per_new_diagnostic() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let web = api.apply(ingress("shop", "web"));
    let (translations, trx) = watch::channel(Arc::new(Translation::default()));
    let (leader_tx, lrx) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let config = EventsConfig::new("ingress.example.dev/xdp-ingress", "pod-a");
    let task = tokio::spawn(events::run(
        client(&api),
        config,
        trx,
        lrx,
        shutdown.clone(),
    ));

    let missing = diagnostic("web", "service shop/missing not found");
    translations.send_replace(translation(1, vec![], vec![missing.clone()]));
    api.wait_until(WAIT, "an event POST", |a| posts(a).len() == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let post = &posts(&api)[0];
    assert_eq!(post.uri, "/apis/events.k8s.io/v1/namespaces/shop/events?");
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    let body = post.json();
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let time = body["eventTime"].as_str().unwrap_or_default().to_string();
    assert!(
        name.strip_prefix("web.")
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())),
        "{name}"
    );
    assert!(
        time.len() == 27 && time.ends_with('Z'),
        "microsecond RFC 3339: {time}"
    );
    assert_eq!(
        body,
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": "shop"},
            "eventTime": time,
            "action": "Translate",
            "reason": "BackendNotFound",
            "note": "service shop/missing not found",
            "type": "Warning",
            "regarding": {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "namespace": "shop",
                "name": "web",
                "uid": web["metadata"]["uid"],
                "resourceVersion": web["metadata"]["resourceVersion"],
            },
            "reportingController": "ingress.example.dev/xdp-ingress",
            "reportingInstance": "pod-a",
        })
    );
    // The uid came from a metadata-only read (Secrets' data is never fetched this way).
    let get = api
        .wait_for_request(WAIT, |r| {
            r.method == http::Method::GET && r.path().ends_with("/ingresses/web")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        get.accept
            .as_deref()
            .unwrap_or("")
            .contains("as=PartialObjectMetadata"),
        "{get:?}"
    );

    // The same diagnostic again, gone and back (flapping): nothing.
    translations.send_replace(translation(2, vec![], vec![missing.clone()]));
    translations.send_replace(translation(3, vec![], vec![]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    translations.send_replace(translation(4, vec![], vec![missing.clone()]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(posts(&api).len(), 1, "{:#?}", posts(&api));

    // A different diagnostic is news; an object that no longer exists gets no event.
    translations.send_replace(translation(
        5,
        vec![],
        vec![
            missing.clone(),
            diagnostic("web", "port 81 not found"),
            diagnostic("deleted", "x"),
        ],
    ));
    api.wait_until(WAIT, "a second POST", |a| posts(a).len() == 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(posts(&api)[1].json()["note"], "port 81 not found");

    // A non-leader records nothing.
    leader_tx.send_replace(false);
    translations.send_replace(translation(
        6,
        vec![],
        vec![diagnostic("web", "while not leading")],
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(posts(&api).len(), 2);
    assert_eq!(api.list("events.k8s.io/v1", "Event").len(), 2);

    shutdown.cancel();
    timeout(WAIT, task)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `--update-status-on-shutdown`: the last replica clears the statuses it wrote when it stops.
/// With another replica's pod present (the next revision's, in a rolling update), or several
/// addresses published, they stay for the next leader. An Ingress another controller's class
/// claims is never cleared.
#[tokio::test]
async fn status_is_cleared_on_shutdown_by_the_last_replica_only() {
    let api = FakeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    api.apply(ingress("shop", "web"));
    let ours = json!({"ingress": [{"ip": PUBLISH}]});
    let mut theirs = ingress("shop", "theirs");
    theirs["status"] = json!({"loadBalancer": ours.clone()});
    api.apply(theirs);
    let revision = |mut pod: Value, hash: &str| {
        pod["metadata"]["labels"]["controller-revision-hash"] = json!(hash);
        pod
    };
    api.apply(revision(
        ingressd_pod("ingressd-a", PUBLISH, "Running", true),
        "rev1",
    ));
    api.apply(revision(
        ingressd_pod("ingressd-b", "192.0.2.11", "Pending", false),
        "rev2",
    ));
    // This pod's own labels, less the revision hash, find the replicas.
    let this_pod = || Replicas {
        namespace: "ingress".into(),
        pod: "ingressd-a".into(),
        selector: None,
    };
    let mut t = (*translation(1, owned(&["web"]), vec![])).clone();
    t.claimed_elsewhere = owned(&["theirs"]);
    let t = Arc::new(t);
    let run = |addresses: &[&str]| {
        let addresses: Vec<StatusAddress> = addresses
            .iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let want: Vec<Value> = addresses
            .iter()
            .map(|a| json!({"ip": a.to_string()}))
            .collect();
        let (api, t) = (&api, t.clone());
        async move {
            let st = StatusTask::following_in(
                api,
                watch::channel(addresses).1,
                t,
                true,
                Duration::from_secs(60),
                None,
                Some(this_pod()),
            );
            api.wait_until(WAIT, "status set", |a| {
                lb(a, "web")["ingress"] == json!(want)
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            st.stop().await;
            lb(api, "web")
        }
    };
    // A rolling update: the next pod exists, so the status stays.
    assert_eq!(run(&[PUBLISH]).await, ours);
    // Alone, but two addresses published: the other one's holder keeps them.
    api.delete("v1", "Pod", "ingress", "ingressd-b");
    assert_eq!(
        run(&[PUBLISH, "192.0.2.11"]).await,
        json!({"ingress": [{"ip": PUBLISH}, {"ip": "192.0.2.11"}]})
    );
    // The last replica with one address: cleared, but not another controller's Ingress.
    assert_eq!(run(&[PUBLISH]).await, json!({}));
    assert_eq!(lb(&api, "theirs"), ours);
    // Stopped before its first sync: it cannot tell whose Ingresses show the address, so
    // none is cleared (here both, ours written back as by an earlier leader).
    let mut web = ingress("shop", "web");
    web["status"] = json!({"loadBalancer": ours.clone()});
    api.apply(web);
    let unsynced = StatusTask::following_in(
        &api,
        watch::channel(vec![PUBLISH.parse().unwrap_or_else(|e| panic!("{e}"))]).1,
        translation(0, vec![], vec![]),
        true,
        Duration::from_secs(60),
        None,
        Some(this_pod()),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsynced.stop().await;
    assert_eq!(lb(&api, "web"), ours);
    assert_eq!(lb(&api, "theirs"), ours);
}

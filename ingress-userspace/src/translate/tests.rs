//! Whole-translation conformance tests: objects in, snapshot and diagnostics out.
use std::{net::SocketAddr, sync::Arc};

use super::{testutil::*, *};
use crate::{
    config::{NamespacedName, ServicePortRef},
    snapshot::{
        BackendProtocol, HostMatch, L4Protocol, L4Service, PathMatch, VerifyClient, VirtualHost,
    },
    source::Object,
};

fn class() -> Object {
    Object::IngressClass(mk_class("xdp", CONTROLLER, false))
}

/// Service `ns/name` port 80 "http" -> 8080, with one ready endpoint `ip`.
fn backend_objects(ns: &str, name: &str, ip: &str) -> Vec<Object> {
    vec![
        Object::Service(mk_service(ns, name).port("http", 80, 8080).build()),
        Object::EndpointSlice(
            mk_slice(ns, &format!("{name}-x"), name)
                .port("http", 8080)
                .endpoint(ip)
                .build(),
        ),
    ]
}

fn ing(b: IngressBuilder) -> Object {
    Object::Ingress(b.build())
}

/// The Service `ns/web` with one endpoint, our class, and the Ingress `ns/plain` routing
/// `a.example/` to it: the base of the controller-wide settings tests.
fn plain_ingress_objects() -> Vec<Object> {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(class());
    objs.push(ing(mk_ingress("ns", "plain")
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    objs
}

fn run_with(objs: Vec<Object>, settings: &Settings) -> Translation {
    translate(&ObjectCache::from_objects(objs), settings)
}

fn run(mut objs: Vec<Object>) -> Translation {
    objs.push(class());
    run_with(objs, &settings())
}

fn exact(h: &str) -> HostMatch {
    HostMatch::Exact(h.into())
}

fn vhost<'a>(t: &'a Translation, host: &HostMatch) -> &'a VirtualHost {
    t.snapshot
        .http
        .hosts
        .iter()
        .find(|v| &v.host == host)
        .unwrap_or_else(|| panic!("no vhost {host:?} in {:#?}", t.snapshot.http.hosts))
}

/// (kind, path, upstream name, origin name) of every route.
fn routes(vh: &VirtualHost) -> Vec<(&'static str, String, String, String)> {
    vh.routes
        .iter()
        .map(|r| {
            let kind = match r.path {
                PathMatch::Exact(_) => "Exact",
                PathMatch::Prefix(_) => "Prefix",
                PathMatch::Regex(_) => "Regex",
            };
            (
                kind,
                r.path.as_str().to_owned(),
                r.target.upstream.name.clone(),
                r.target.origin.name.clone(),
            )
        })
        .collect()
}

fn diags(t: &Translation) -> Vec<(String, &'static str)> {
    t.diagnostics
        .iter()
        .map(|d| (d.object.name.clone(), d.reason))
        .collect()
}

fn r(
    kind: &'static str,
    path: &str,
    up: &str,
    origin: &str,
) -> (&'static str, String, String, String) {
    (kind, path.into(), up.into(), origin.into())
}

#[test]
fn routes_are_in_precedence_order_and_hosts_sorted() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(ing(mk_ingress("ns", "a")
        .host("Foo.Example.com")
        .path("/", "Prefix", "web", 80)
        .path("/api", "Prefix", "web", 80)
        .path("/api", "Exact", "web", 80)
        .path("/api/v1/", "ImplementationSpecific", "web", 80)
        .host("*.example.com")
        .path("/", "Prefix", "web", 80)
        .host("*.api.example.com")
        .path("/", "Prefix", "web", 80)
        .host("")
        .path("/", "Prefix", "web", 80)
        .host("bar.example.com")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let hosts: Vec<&HostMatch> = t.snapshot.http.hosts.iter().map(|v| &v.host).collect();
    assert_eq!(
        hosts,
        vec![
            &exact("bar.example.com"),
            &exact("foo.example.com"),
            &HostMatch::Wildcard("api.example.com".into()),
            &HostMatch::Wildcard("example.com".into()),
            &HostMatch::Any,
        ]
    );
    assert_eq!(
        routes(vhost(&t, &exact("foo.example.com"))),
        vec![
            r("Prefix", "/api/v1", "ns/web:80", "a"),
            r("Exact", "/api", "ns/web:80", "a"),
            r("Prefix", "/api", "ns/web:80", "a"),
            r("Prefix", "/", "ns/web:80", "a"),
        ]
    );
    let up = &vhost(&t, &exact("foo.example.com")).routes[0]
        .target
        .upstream;
    assert_eq!(
        up.endpoints,
        vec!["10.0.0.1:8080".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(t.owned_ingresses.len(), 1);
}

#[test]
fn rules_merge_across_ingresses_and_conflicts_go_to_the_oldest() {
    // (created a, created b) -> which Ingress owns the shared rule
    let table: &[(Option<i64>, Option<i64>, &str)] = &[
        (Some(100), Some(200), "a"),
        (Some(200), Some(100), "b"),
        (Some(100), Some(100), "b"), // tie: "ns/name" descending, as ingress-nginx
        (None, Some(100), "a"),      // no timestamp counts as oldest
        (Some(100), None, "b"),
    ];
    for (ca, cb, winner) in table {
        let mut objs = backend_objects("ns", "web", "10.0.0.1");
        objs.extend(backend_objects("ns", "api", "10.0.0.2"));
        let mut a = mk_ingress("ns", "a")
            .host("shop.example")
            .path("/", "Prefix", "web", 80)
            .path("/a", "Prefix", "web", 80);
        let mut b = mk_ingress("ns", "b")
            .host("shop.example")
            .path("/", "Prefix", "api", 80)
            .path("/", "Exact", "api", 80);
        if let Some(c) = ca {
            a = a.created(*c);
        }
        if let Some(c) = cb {
            b = b.created(*c);
        }
        objs.push(ing(a));
        objs.push(ing(b));
        let t = run(objs);
        let vh = vhost(&t, &exact("shop.example"));
        let shared = vh
            .routes
            .iter()
            .find(|r| matches!(&r.path, PathMatch::Prefix(p) if p == "/"))
            .expect("shared rule");
        assert_eq!(shared.target.origin.name, *winner, "{ca:?} {cb:?}");
        // Different pathType on the same path is a different rule: no conflict.
        assert_eq!(vh.routes.len(), 3, "{ca:?} {cb:?}");
        let loser = if *winner == "a" { "b" } else { "a" };
        assert_eq!(
            diags(&t),
            vec![(loser.to_owned(), reason::RULE_CONFLICT)],
            "{ca:?} {cb:?}"
        );
        assert!(
            t.diagnostics[0].message.contains(&format!("ns/{winner}")),
            "{}",
            t.diagnostics[0].message
        );
    }
}

#[test]
fn default_backends() {
    let base = || {
        let mut objs = backend_objects("ns", "web", "10.0.0.1");
        objs.extend(backend_objects("ns", "fallback-old", "10.0.0.2"));
        objs.extend(backend_objects("ns", "fallback-new", "10.0.0.3"));
        objs.extend(backend_objects("ns", "only-default", "10.0.0.4"));
        objs
    };
    let mut objs = base();
    objs.push(ing(mk_ingress("ns", "new")
        .created(300)
        .host("a.example")
        .path("/x", "Prefix", "web", 80)
        .default_backend("fallback-new", 80)));
    objs.push(ing(mk_ingress("ns", "old")
        .created(200)
        .host("a.example")
        .path("/y", "Prefix", "web", 80)
        .default_backend("fallback-old", "http")));
    objs.push(ing(mk_ingress("ns", "nodefault")
        .created(100)
        .host("a.example")
        .path("/z", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "lonely")
        .created(250)
        .default_backend("only-default", 80)));
    let t = run(objs.clone());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    // The oldest Ingress of the host ("nodefault") has no defaultBackend: the host has no
    // fallback of its own, the younger ones' defaultBackends do not count.
    assert!(vhost(&t, &exact("a.example")).fallback.is_none());
    // Global: the oldest Ingress with a defaultBackend and no rules, "lonely"; "old" has
    // rules, so its defaultBackend never catches other hosts.
    let global = t
        .snapshot
        .http
        .default_backend
        .as_ref()
        .expect("global default");
    assert_eq!(global.upstream.name, "ns/only-default:80");
    assert_eq!(global.origin.name, "lonely");
    // Without the flag, a named host's stray paths get the proxy's 404, never "lonely".
    assert!(t.snapshot.http.service_default.is_none());

    // With the flag, the catch-all Ingress still answers unknown hosts (as in ingress-nginx);
    // the flag's Service answers named hosts' stray paths and custom error pages.
    let mut s = settings();
    s.default_backend = Some(ServicePortRef {
        namespace: "ns".into(),
        name: "web".into(),
        port: "http".into(),
    });
    let mut with_flag = objs;
    with_flag.push(class());
    let t = run_with(with_flag.clone(), &s);
    let name =
        |d: &Option<Arc<crate::snapshot::RouteTarget>>| d.as_ref().map(|d| d.upstream.name.clone());
    assert_eq!(
        name(&t.snapshot.http.default_backend).as_deref(),
        Some("ns/only-default:80")
    );
    let service = t.snapshot.http.service_default.as_ref().expect("flag");
    assert_eq!(service.upstream.name, "ns/web:80");
    assert_eq!(service.upstream.endpoints.len(), 1);
    // No catch-all Ingress: the flag's Service answers unknown hosts too.
    with_flag.retain(
        |o| !matches!(o, Object::Ingress(i) if i.metadata.name.as_deref() == Some("lonely")),
    );
    let t = run_with(with_flag, &s);
    assert_eq!(
        name(&t.snapshot.http.default_backend).as_deref(),
        Some("ns/web:80")
    );

    // An Ingress with only a defaultBackend is valid and gives the global default.
    let mut objs = base();
    objs.push(ing(
        mk_ingress("ns", "lonely").default_backend("only-default", 80)
    ));
    let t = run(objs);
    assert!(t.diagnostics.is_empty());
    assert!(t.snapshot.http.hosts.is_empty());
    assert_eq!(
        t.snapshot
            .http
            .default_backend
            .as_ref()
            .map(|d| d.upstream.name.as_str()),
        Some("ns/only-default:80")
    );

    // Nothing anywhere: the proxy answers 404 itself.
    let t = run(vec![ing(mk_ingress("ns", "a")
        .host("a.example")
        .path("/", "Prefix", "web", 80))]);
    assert!(t.snapshot.http.default_backend.is_none());
    assert!(vhost(&t, &exact("a.example")).fallback.is_none());
}

#[test]
fn default_backend_with_rules_is_only_the_fallback_of_its_own_hosts() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.extend(backend_objects("ns", "fallback-a", "10.0.0.2"));
    objs.extend(backend_objects("ns", "fallback-b", "10.0.0.3"));
    objs.push(ing(mk_ingress("ns", "a")
        .created(100)
        .host("a.example")
        .path("/x", "Prefix", "web", 80)
        .host("")
        .path("/x", "Prefix", "web", 80)
        .default_backend("fallback-a", 80)));
    objs.push(ing(mk_ingress("ns", "b")
        .created(200)
        .host("a.example")
        .path("/y", "Prefix", "web", 80)
        .default_backend("fallback-b", 80)));
    let t = run(objs.clone());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    // The oldest Ingress of the host gives its fallback.
    let fb = vhost(&t, &exact("a.example"))
        .fallback
        .as_ref()
        .expect("host fallback");
    assert_eq!(fb.upstream.name, "ns/fallback-a:80");
    // Neither Ingress has rule-less spec: no catch-all for unknown hosts, and rules without
    // host join the catch-all server, which has no fallback of its own either.
    assert!(t.snapshot.http.default_backend.is_none());
    assert!(vhost(&t, &HostMatch::Any).fallback.is_none());

    // An Ingress whose only rule was dropped as invalid still had rules: it is not the
    // catch-all either.
    objs.push(ing(mk_ingress("ns", "dropped")
        .created(50)
        .host("bad host!")
        .path("/", "Prefix", "web", 80)
        .default_backend("web", 80)));
    let t = run(objs);
    assert!(t.snapshot.http.default_backend.is_none());
}

#[test]
fn class_filtering_end_to_end() {
    let bad = |b: IngressBuilder| {
        ing(b
            .host("bad host!")
            .path("/", "Prefix", "nope", 80)
            .annotation("limit-rps", "x"))
    };
    let objs = vec![
        Object::IngressClass(mk_class("xdp", CONTROLLER, true)),
        Object::IngressClass(mk_class("nginx", "k8s.io/ingress-nginx", false)),
        ing(mk_ingress("ns", "by-name")
            .host("a.example")
            .path("/", "Prefix", "web", 80)),
        ing(mk_ingress("ns", "by-annotation")
            .no_class()
            .raw_annotation(ingress::LEGACY_CLASS_ANNOTATION, "xdp")
            .host("b.example")
            .path("/", "Prefix", "web", 80)),
        // A set class name alone decides: the annotation is not consulted.
        ing(mk_ingress("ns", "by-name-despite-annotation")
            .raw_annotation(ingress::LEGACY_CLASS_ANNOTATION, "nginx")
            .host("d.example")
            .path("/", "Prefix", "web", 80)),
        bad(mk_ingress("ns", "foreign-name-our-annotation")
            .class("nginx")
            .raw_annotation(ingress::LEGACY_CLASS_ANNOTATION, "xdp")),
        ing(mk_ingress("ns", "by-default")
            .no_class()
            .host("c.example")
            .path("/", "Prefix", "web", 80)),
        bad(mk_ingress("ns", "foreign").class("nginx")),
        bad(mk_ingress("ns", "foreign-annotation")
            .no_class()
            .raw_annotation(ingress::LEGACY_CLASS_ANNOTATION, "nginx")),
        bad(mk_ingress("ns", "missing-class").class("gone")),
    ];
    let t = run_with(objs.clone(), &settings());
    let owned: Vec<&str> = t.owned_ingresses.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        owned,
        vec![
            "by-annotation",
            "by-default",
            "by-name",
            "by-name-despite-annotation"
        ]
    );
    // Foreign Ingresses are ignored completely: no diagnostics about them.
    assert!(
        t.diagnostics
            .iter()
            .all(|d| d.object.name.starts_with("by-")),
        "{:?}",
        t.diagnostics
    );
    assert_eq!(t.snapshot.http.hosts.len(), 4);
    // Those of nginx's class are nginx's to write status on; the missing class is nobody's.
    let claimed: Vec<&str> = t
        .claimed_elsewhere
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(
        claimed,
        [
            "foreign",
            "foreign-annotation",
            "foreign-name-our-annotation"
        ]
    );

    // Without the default mark, the class-less one is not ours.
    let mut objs = objs;
    objs[0] = class();
    let t = run_with(objs.clone(), &settings());
    assert!(!t.owned_ingresses.iter().any(|o| o.name == "by-default"));
    assert!(!t.claimed_elsewhere.iter().any(|o| o.name == "by-default"));
    // nginx's class becomes the default: the class-less one is nginx's now.
    objs[1] = Object::IngressClass(mk_class("nginx", "k8s.io/ingress-nginx", true));
    let t = run_with(objs, &settings());
    assert!(t.claimed_elsewhere.iter().any(|o| o.name == "by-default"));
}

#[test]
fn unknown_service_still_routes_to_an_empty_upstream() {
    let t = run(vec![ing(mk_ingress("ns", "a")
        .host("a.example")
        .path("/ghost", "Prefix", "ghost", 80)
        .path("/noport", "Prefix", "web", 81))
    .clone()]
    .into_iter()
    .chain(backend_objects("ns", "web", "10.0.0.1"))
    .collect());
    let vh = vhost(&t, &exact("a.example"));
    assert_eq!(vh.routes.len(), 2);
    assert!(vh
        .routes
        .iter()
        .all(|r| r.target.upstream.endpoints.is_empty()));
    assert_eq!(
        diags(&t),
        vec![
            ("a".into(), reason::BACKEND_NOT_FOUND),
            ("a".into(), reason::BACKEND_NOT_FOUND)
        ]
    );
}

#[test]
fn resource_backends_and_bad_paths_are_dropped_rest_applied() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(ing(mk_ingress("ns", "a")
        .host("a.example")
        .resource_path("/bucket")
        .path("relative", "Prefix", "web", 80)
        .path("/ok", "Prefix", "web", 80)
        .host("-bad-.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    assert_eq!(
        routes(vhost(&t, &exact("a.example"))),
        vec![r("Prefix", "/ok", "ns/web:80", "a")]
    );
    assert_eq!(t.snapshot.http.hosts.len(), 1);
    assert_eq!(
        diags(&t),
        vec![
            ("a".into(), reason::INVALID_HOST),
            ("a".into(), reason::INVALID_PATH),
            ("a".into(), reason::UNSUPPORTED_BACKEND),
        ]
    );
}

#[test]
fn upstreams_are_shared_per_service_port_and_protocol() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(ing(mk_ingress("ns", "a")
        .host("a.example")
        .path("/1", "Prefix", "web", 80)
        .path("/2", "Prefix", "web", "http")));
    objs.push(ing(mk_ingress("ns", "b")
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "g")
        .annotation("backend-protocol", "GRPC")
        .host("g.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    let a = vhost(&t, &exact("a.example"));
    let b = vhost(&t, &exact("b.example"));
    let g = vhost(&t, &exact("g.example"));
    assert!(Arc::ptr_eq(
        &a.routes[0].target.upstream,
        &a.routes[1].target.upstream
    ));
    assert!(Arc::ptr_eq(
        &a.routes[0].target.upstream,
        &b.routes[0].target.upstream
    ));
    assert!(!Arc::ptr_eq(
        &a.routes[0].target.upstream,
        &g.routes[0].target.upstream
    ));
    assert_eq!(g.routes[0].target.upstream.protocol, BackendProtocol::Grpc);
    assert_eq!(a.routes[0].target.upstream.protocol, BackendProtocol::Http);
}

#[test]
fn service_upstream_uses_the_cluster_ip() {
    let svc = |name: &str, ip: &str| {
        vec![
            Object::Service(
                mk_service("ns", name)
                    .port("http", 80, 8080)
                    .cluster_ip(ip)
                    .build(),
            ),
            Object::EndpointSlice(
                mk_slice("ns", &format!("{name}-x"), name)
                    .port("http", 8080)
                    .endpoint("10.0.0.1")
                    .build(),
            ),
        ]
    };
    let mut objs = svc("web", "10.96.0.10");
    objs.extend(svc("headless", "None"));
    objs.push(ing(mk_ingress("ns", "mesh")
        .annotation("service-upstream", "true")
        .host("mesh.example")
        .path("/", "Prefix", "web", 80)
        .path("/h", "Prefix", "headless", 80)));
    objs.push(ing(mk_ingress("ns", "pods")
        .host("pods.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    let mesh = vhost(&t, &exact("mesh.example"));
    let by_path = |p: &str| {
        mesh.routes
            .iter()
            .find(|r| r.path.as_str() == p)
            .map(|r| r.target.upstream.clone())
            .unwrap_or_else(|| panic!("no route {p}"))
    };
    let up = by_path("/");
    assert_eq!(
        up.endpoints,
        vec!["10.96.0.10:80".parse().unwrap_or_else(|e| panic!("{e}"))]
    );
    assert_eq!(up.name, "ns/web:80@cluster-ip");
    // A headless Service has no cluster IP: its pods, as without the annotation.
    let up = by_path("/h");
    assert_eq!(
        up.endpoints,
        vec!["10.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"))]
    );
    assert_eq!(up.name, "ns/headless:80");
    let pods = vhost(&t, &exact("pods.example"));
    assert_eq!(
        pods.routes[0].target.upstream.endpoints,
        vec!["10.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"))]
    );
    assert!(diags(&t).is_empty(), "{:?}", diags(&t));
}

/// A Secret rotated into something unusable (a half-written Secret, a key of another
/// certificate) keeps its last usable certificate served, with a Warning, as ingress-nginx
/// keeps the one it last read; a usable version replaces it, and a deleted Secret takes it
/// away for good.
#[test]
fn a_botched_rotation_keeps_the_last_usable_certificate() {
    let (cert, key) = self_signed(&["secure.example"]);
    let (other_cert, other_key) = self_signed(&["secure.example"]);
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(class());
    let secret = |c: &str, k: &str| Object::Secret(mk_tls_secret("ns", "tls", c, k));
    objs.push(secret(&cert, &key));
    objs.push(ing(mk_ingress("ns", "a")
        .tls(&["secure.example"], "tls")
        .host("secure.example")
        .path("/", "Prefix", "web", 80)));
    let mut cache = ObjectCache::from_objects(objs);
    let mut tr = Translator::new(settings());
    let served = |t: &Translation| t.snapshot.tls.certs.first().map(|c| c.key.cert.clone());
    let t = tr.translate(&cache);
    let first = served(&t).expect("served");
    assert!(diags(&t).is_empty());

    // The new certificate with the old key: unusable.
    cache.apply(secret(&other_cert, &key));
    let t = tr.translate(&cache);
    assert_eq!(
        served(&t),
        Some(first.clone()),
        "the last usable certificate stays"
    );
    assert_eq!(diags(&t), vec![("a".into(), reason::TLS_SECRET_INVALID)]);
    assert!(
        t.diagnostics[0]
            .message
            .contains("last usable certificate is served"),
        "{}",
        t.diagnostics[0].message
    );
    // A translation from scratch knows no history: nothing to serve.
    assert_eq!(served(&translate(&cache, &settings())), None);

    cache.apply(secret(&other_cert, &other_key));
    let t = tr.translate(&cache);
    let second = served(&t).expect("served");
    assert_ne!(second, first, "the fixed Secret is served");
    assert!(diags(&t).is_empty());

    cache.delete(&crate::source::Key {
        kind: crate::source::Kind::Secret,
        namespace: "ns".into(),
        name: "tls".into(),
    });
    let t = tr.translate(&cache);
    assert_eq!(served(&t), None, "a deleted Secret is not served");
    cache.apply(secret("garbage", "garbage"));
    let t = tr.translate(&cache);
    assert_eq!(served(&t), None, "nothing usable since it was deleted");
}

#[test]
fn tls_good_missing_and_garbage_secrets() {
    let (cert, key) = self_signed(&["secure.example", "*.wild.example"]);
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Secret(mk_tls_secret("ns", "good", &cert, &key)));
    objs.push(Object::Secret(mk_tls_secret(
        "ns",
        "garbage",
        "not a cert",
        "not a key",
    )));
    objs.push(ing(mk_ingress("ns", "a")
        .created(1)
        .tls(&["secure.example"], "good")
        .tls(&["*.wild.example"], "good")
        .host("secure.example")
        .path("/", "Prefix", "web", 80)
        .host("*.wild.example")
        .path("/", "Prefix", "web", 80)
        .host("x.wild.example")
        .path("/", "Prefix", "web", 80)
        .host("plain.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "missing")
        .created(2)
        .tls(&["m.example"], "nope")
        .host("m.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "bad")
        .created(3)
        .tls(&["g.example"], "garbage")
        .host("g.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    assert_eq!(
        diags(&t),
        vec![
            ("bad".into(), reason::TLS_SECRET_INVALID),
            ("missing".into(), reason::TLS_SECRET_INVALID),
        ]
    );
    let certs = &t.snapshot.tls.certs;
    assert_eq!(certs.len(), 2);
    // x.wild.example is listed under no spec.tls[].hosts: it takes the first entry whose
    // certificate is valid for it.
    assert_eq!(
        certs[0].hosts,
        vec![exact("secure.example"), exact("x.wild.example")]
    );
    assert_eq!(
        certs[1].hosts,
        vec![HostMatch::Wildcard("wild.example".into())]
    );
    assert!(
        Arc::ptr_eq(&certs[0].key, &certs[1].key),
        "one Secret is parsed once"
    );
    // Routes are served either way; tls marks every rule host of an Ingress with spec.tls,
    // as ingress-nginx gives each a certificate (the default one for plain.example), so
    // ssl-redirect and HSTS apply to it.
    assert!(vhost(&t, &HostMatch::Wildcard("wild.example".into())).tls);
    for (host, tls) in [
        ("secure.example", true),
        ("x.wild.example", true),
        ("plain.example", true),
        ("m.example", true),
        ("g.example", true),
    ] {
        let vh = vhost(&t, &exact(host));
        assert_eq!(vh.tls, tls, "{host}");
        assert_eq!(vh.routes.len(), 1, "{host}");
    }
}

#[test]
fn tls_host_claimed_by_two_secrets_goes_to_the_oldest() {
    let (c1, k1) = self_signed(&["s.example"]);
    let (c2, k2) = self_signed(&["s.example"]);
    // A spec.tls host counts only with a rule for it in the same Ingress; distinct paths
    // keep route conflicts out of the way.
    let mut objs = vec![
        Object::Secret(mk_tls_secret("ns", "one", &c1, &k1)),
        Object::Secret(mk_tls_secret("ns", "two", &c2, &k2)),
        ing(mk_ingress("ns", "new")
            .created(2)
            .tls(&["s.example"], "two")
            .host("s.example")
            .path("/new", "Prefix", "web", 80)),
        ing(mk_ingress("ns", "old")
            .created(1)
            .tls(&["s.example"], "one")
            .host("s.example")
            .path("/old", "Prefix", "web", 80)),
        ing(mk_ingress("ns", "same")
            .created(3)
            .tls(&["s.example"], "one")
            .host("s.example")
            .path("/same", "Prefix", "web", 80)),
    ];
    objs.extend(backend_objects("ns", "web", "10.0.0.1"));
    let t = run(objs);
    assert_eq!(t.snapshot.tls.certs.len(), 1);
    assert_eq!(t.snapshot.tls.certs[0].origin.name, "old");
    assert_eq!(diags(&t), vec![("new".into(), reason::RULE_CONFLICT)]);
}

#[test]
fn tls_hosts_apply_only_with_a_rule_in_the_same_ingress() {
    let (cert, key) = self_signed(&["a.test", "b.test"]);
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Secret(mk_tls_secret("ns", "x", &cert, &key)));
    objs.push(ing(mk_ingress("ns", "a")
        .created(1)
        .host("a.test")
        .path("/", "Prefix", "web", 80)));
    // Lists a.test without routing it: neither its certificate nor the HTTPS redirect may
    // reach a's host.
    objs.push(ing(mk_ingress("ns", "b")
        .created(2)
        .tls(&["a.test", "b.test"], "x")
        .tls(&["a.test"], "missing")
        .host("b.test")
        .path("/", "Prefix", "web", 80)));
    // A wildcard's TLS does not spread to an exact host routed by another Ingress.
    objs.push(ing(mk_ingress("ns", "w")
        .created(3)
        .tls(&["*.test"], "x")
        .host("*.test")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    // The entry with the missing Secret applies to no host: not reported either.
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert!(!vhost(&t, &exact("a.test")).tls);
    assert!(vhost(&t, &exact("b.test")).tls);
    assert!(vhost(&t, &HostMatch::Wildcard("test".into())).tls);
    let certs = &t.snapshot.tls.certs;
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0].hosts, vec![exact("b.test")]);
}

#[test]
fn tls_entry_without_hosts_applies_by_certificate_name() {
    let (cert, key) = self_signed(&["c.example", "*.wild.example"]);
    let (other, other_key) = self_signed(&["elsewhere.example"]);
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Secret(mk_tls_secret("ns", "named", &cert, &key)));
    objs.push(Object::Secret(mk_tls_secret(
        "ns", "other", &other, &other_key,
    )));
    objs.push(ing(mk_ingress("ns", "a")
        // The first entry's certificate is not valid for the hosts: the second is used.
        .tls(&[], "other")
        .tls(&[], "named")
        .host("c.example")
        .path("/", "Prefix", "web", 80)
        .host("x.wild.example")
        .path("/", "Prefix", "web", 80)
        // A wildcard rule host takes the certificate whose SAN is that wildcard.
        .host("*.wild.example")
        .path("/", "Prefix", "web", 80)
        .host("*.c.example")
        .path("/", "Prefix", "web", 80)
        .host("plain.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    // plain.example gets the default certificate, and is an HTTPS host all the same.
    for (host, tls) in [
        ("c.example", true),
        ("x.wild.example", true),
        ("plain.example", true),
    ] {
        assert_eq!(vhost(&t, &exact(host)).tls, tls, "{host}");
    }
    let named = t
        .snapshot
        .tls
        .certs
        .iter()
        .find(|c| c.hosts.contains(&exact("c.example")))
        .expect("certificate of Secret named");
    assert_eq!(
        named.hosts,
        vec![
            exact("c.example"),
            exact("x.wild.example"),
            HostMatch::Wildcard("wild.example".into())
        ]
    );
}

#[test]
fn passthrough_ingresses_become_sni_routes_and_serve_plain_http() {
    let mut objs = backend_objects("ns", "tls-app", "10.0.0.5");
    objs.extend(backend_objects("ns", "other", "10.0.0.6"));
    objs.push(ing(mk_ingress("ns", "pt")
        .created(1)
        .annotation("ssl-passthrough", "true")
        .own_annotation("proxy-protocol", "true")
        .host("pt.example")
        .path("/other", "Prefix", "other", 80)
        .path("/", "Prefix", "tls-app", 80)
        .host("first.example")
        .path("/x", "Prefix", "other", 80)
        .host("")
        .path("/", "Prefix", "tls-app", 80)));
    objs.push(ing(mk_ingress("ns", "pt2")
        .created(2)
        .own_annotation("ssl-passthrough", "true")
        .host("pt.example")
        .path("/", "Prefix", "other", 80)
        .host("*.pt.example")
        .default_backend("other", 80)));
    let t = run(objs);
    // As in ingress-nginx, their rules also serve plain HTTP (where `force-ssl-redirect`
    // sends clients to HTTPS); the oldest Ingress wins a path, as for any host.
    let hosts: Vec<(HostMatch, usize)> = t
        .snapshot
        .http
        .hosts
        .iter()
        .map(|h| (h.host.clone(), h.routes.len()))
        .collect();
    assert_eq!(
        hosts,
        vec![
            (exact("first.example"), 1),
            (exact("pt.example"), 2),
            (HostMatch::Wildcard("pt.example".into()), 0),
            (HostMatch::Any, 1),
        ]
    );
    let pt_root = vhost(&t, &exact("pt.example"))
        .routes
        .iter()
        .find(|r| r.path.as_str() == "/")
        .map(|r| r.target.upstream.name.clone());
    assert_eq!(pt_root.as_deref(), Some("ns/tls-app:80"));
    let pt: Vec<(HostMatch, String, bool)> = t
        .snapshot
        .passthrough
        .iter()
        .map(|p| (p.host.clone(), p.upstream.name.clone(), p.proxy_protocol))
        .collect();
    assert_eq!(
        pt,
        vec![
            (exact("first.example"), "ns/other:80".into(), true),
            (exact("pt.example"), "ns/tls-app:80".into(), true),
            (
                HostMatch::Wildcard("pt.example".into()),
                "ns/other:80".into(),
                false
            ),
        ]
    );
    assert_eq!(
        diags(&t),
        vec![
            ("pt".into(), reason::INVALID_PASSTHROUGH),
            // pt.example's SNI route, and its HTTP path `/`.
            ("pt2".into(), reason::RULE_CONFLICT),
            ("pt2".into(), reason::RULE_CONFLICT)
        ]
    );
}

#[test]
fn l4_services_from_configmaps() {
    let mut s = settings();
    s.tcp_services = Some(NamespacedName {
        namespace: "ingress".into(),
        name: "tcp".into(),
    });
    s.udp_services = Some(NamespacedName {
        namespace: "ingress".into(),
        name: "udp".into(),
    });
    s.l4_addresses = vec![
        "192.0.2.1".parse().expect("ip"),
        "2001:db8::1".parse().expect("ip"),
    ];
    let objs = vec![
        Object::Service(mk_service("db", "pg").port("pg", 5432, 5432).build()),
        Object::EndpointSlice(
            mk_slice("db", "pg-v4", "pg")
                .port("pg", 5432)
                .endpoint("10.0.0.7")
                .endpoint("10.0.0.8")
                .build(),
        ),
        Object::EndpointSlice({
            let mut sl = mk_slice("db", "pg-v6", "pg")
                .port("pg", 5432)
                .endpoint("fd00::7")
                .build();
            sl.address_type = "IPv6".into();
            sl
        }),
        Object::Service(
            mk_service("kube-system", "dns")
                .port_proto("dns", 53, 53, "UDP")
                .build(),
        ),
        Object::EndpointSlice(
            mk_slice("kube-system", "dns-a", "dns")
                .port_proto("dns", 53, "UDP")
                .endpoint("10.0.0.53")
                .build(),
        ),
        Object::ConfigMap(mk_configmap(
            "ingress",
            "tcp",
            &[
                ("5432", "db/pg:5432"),
                ("5433", "db/pg:pg:PROXY"),
                ("x", "db/pg:5432"),
                ("6000", "db/ghost:1"),
            ],
        )),
        Object::ConfigMap(mk_configmap(
            "ingress",
            "udp",
            &[("53", "kube-system/dns:53")],
        )),
    ];
    let t = run_with(objs, &s);
    let got: Vec<(String, u16, L4Protocol, Vec<String>)> = t
        .snapshot
        .l4
        .iter()
        .map(|l: &L4Service| {
            (
                l.vip.to_string(),
                l.port,
                l.protocol,
                l.backends.iter().map(|b| b.to_string()).collect(),
            )
        })
        .collect();
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            (
                "192.0.2.1".into(),
                53,
                L4Protocol::Udp,
                v(&["10.0.0.53:53"])
            ),
            (
                "192.0.2.1".into(),
                5432,
                L4Protocol::Tcp,
                v(&["10.0.0.7:5432", "10.0.0.8:5432"])
            ),
            ("192.0.2.1".into(), 6000, L4Protocol::Tcp, v(&[])),
            ("2001:db8::1".into(), 53, L4Protocol::Udp, v(&[])),
            (
                "2001:db8::1".into(),
                5432,
                L4Protocol::Tcp,
                v(&["[fd00::7]:5432"])
            ),
            ("2001:db8::1".into(), 6000, L4Protocol::Tcp, v(&[])),
        ]
    );
    assert!(t.snapshot.l4.iter().all(|l| l.origin.kind == "ConfigMap"));
    let reasons: Vec<&str> = t.diagnostics.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        vec![
            reason::BACKEND_NOT_FOUND,
            reason::INVALID_L4_SERVICE,
            reason::INVALID_L4_SERVICE
        ]
    );
    assert!(t.diagnostics.iter().all(|d| d.object.name == "tcp"));
    // The PROXY entry is skipped, not served without the header its backend expects.
    assert!(t
        .diagnostics
        .iter()
        .any(|d| d.message.contains("\"5433\"") && d.message.contains("PROXY")));
}

#[test]
fn annotations_apply_to_every_route_of_the_ingress() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    // "limited" is the older one, so its defaultBackend is the host's fallback.
    objs.push(ing(mk_ingress("ns", "limited")
        .created(100)
        .annotation("limit-rps", "5")
        .annotation("proxy-body-size", "8m")
        .own_annotation("whitelist-source-range", "10.0.0.0/8")
        .annotation("configuration-snippet", "deny all;")
        .annotation("proxy-buffering", "on")
        .host("a.example")
        .path("/x", "Prefix", "web", 80)
        .path("/y", "Prefix", "web", 80)
        .default_backend("web", 80)));
    objs.push(ing(mk_ingress("ns", "plain")
        .created(200)
        .host("a.example")
        .path("/z", "Prefix", "web", 80)));
    let t = run(objs);
    assert_eq!(
        diags(&t),
        vec![
            ("limited".into(), reason::ANNOTATION_IGNORED),
            ("limited".into(), reason::SNIPPET_REJECTED)
        ]
    );
    let ignored = t
        .diagnostics
        .iter()
        .find(|d| d.reason == reason::ANNOTATION_IGNORED)
        .map(|d| d.message.as_str());
    assert_eq!(
        ignored,
        Some(
            "annotations not used (unknown to ingressd, or without effect with the others \
             given): nginx.ingress.kubernetes.io/proxy-buffering"
        )
    );
    let vh = vhost(&t, &exact("a.example"));
    for route in &vh.routes {
        let limited = route.target.origin.name == "limited";
        assert_eq!(route.target.policy.limit_rps, limited.then_some(5));
        assert_eq!(
            route.target.policy.max_body_bytes,
            Some(if limited { 8 << 20 } else { 1 << 20 })
        );
        assert_eq!(
            route.target.policy.allow_sources.len(),
            usize::from(limited)
        );
    }
    assert_eq!(
        vh.fallback.as_ref().and_then(|f| f.policy.limit_rps),
        Some(5)
    );
}

/// Settings naming the controller ConfigMap `ingress/ingressd`, with a flag's block list.
fn controller_settings() -> Settings {
    let mut s = settings();
    s.controller_config = Some(NamespacedName {
        namespace: "ingress".into(),
        name: "ingressd".into(),
    });
    s.global.block_cidrs = vec!["192.0.2.0/24".parse().expect("net")];
    s
}

fn controller_configmap(data: &[(&str, &str)]) -> Object {
    Object::ConfigMap(mk_configmap("ingress", "ingressd", data))
}

#[test]
fn the_controller_configmap_sets_globals_and_annotation_defaults() {
    let mut objs = plain_ingress_objects();
    objs.push(ing(mk_ingress("ns", "own")
        .annotation("proxy-body-size", "8k")
        .annotation("allowlist-source-range", "127.0.0.1")
        .annotation("denylist-source-range", "")
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(controller_configmap(&[
        ("proxy-body-size", "2k"),
        ("whitelist-source-range", "10.0.0.0/8"),
        ("denylist-source-range", "10.9.0.0/16"),
        ("ssl-redirect", "false"),
        ("skip-access-log-urls", "/healthz, ~*^/ping"),
        ("block-cidrs", "203.0.113.0/24, 2001:db8:bad::/48"),
        ("hsts-max-age", "600"),
        ("limit-req-status-code", "429"),
        ("limit-conn-status-code", "429"),
        (
            "no-tls-redirect-locations",
            "/.well-known/acme-challenge, /healthz",
        ),
        ("http-redirect-code", "303"),
        ("proxy-read-timeout", "bogus"),
        ("hsts-preload", "maybe"),
        ("worker-processes", "4"),
        ("use-forwarded-headers", "true"),
        ("enable-real-ip", "true"),
        ("compute-full-forwarded-for", "true"),
        ("proxy-real-ip-cidr", "10.0.0.0/8, 192.0.2.1"),
        ("forwarded-for-header", "CF-Connecting-IP"),
        ("use-proxy-protocol", "yes please"),
        ("disable-access-log", "true"),
        ("keep-alive-requests", "100"),
        ("upstream-keepalive-timeout", "90"),
        ("upstream-keepalive-time", "30m"),
        ("upstream-keepalive-requests", "-1"),
        ("server-snippet", "deny all;"),
    ]));
    let t = run_with(objs, &controller_settings());

    let plain = &vhost(&t, &exact("a.example")).routes[0].target.policy;
    assert_eq!(plain.max_body_bytes, Some(2048));
    assert_eq!(plain.allow_sources, ["10.0.0.0/8".parse().expect("net")]);
    assert_eq!(plain.deny_sources, ["10.9.0.0/16".parse().expect("net")]);
    assert!(!plain.ssl_redirect);
    // An Ingress's own annotations replace the defaults; the rest still apply.
    let own = &vhost(&t, &exact("b.example")).routes[0].target.policy;
    assert_eq!(own.max_body_bytes, Some(8192));
    assert_eq!(own.allow_sources, ["127.0.0.1/32".parse().expect("net")]);
    assert!(
        own.deny_sources.is_empty(),
        "an empty annotation replaces the default too"
    );
    assert!(!own.ssl_redirect);
    // The defaults with a bad value (and the keys not read) change nothing.
    assert_eq!(
        plain.timeouts,
        crate::snapshot::RoutePolicy::default().timeouts
    );

    let g = &t.snapshot.global;
    let blocked: Vec<String> = g.block_cidrs.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        blocked,
        ["203.0.113.0/24", "2001:db8:bad::/48"],
        "replaces the flag's"
    );
    assert_eq!(
        g.hsts.header().as_deref(),
        Some("max-age=600; includeSubDomains"),
        "a bad hsts-preload leaves the flag's"
    );
    assert_eq!((g.limit_req_status, g.limit_conn_status), (429, 429));
    assert_eq!(
        g.no_tls_redirect_locations,
        ["/.well-known/acme-challenge", "/healthz"]
    );
    assert_eq!(
        g.http_redirect_code, 308,
        "303 is refused, the default stays"
    );
    assert!(!g.access_log);
    assert_eq!(g.skip_access_log_urls.len(), 2);
    let real_ip = crate::snapshot::RealIp {
        proxy_protocol: false,
        forwarded_headers: true,
        enable_real_ip: true,
        trusted: vec![
            "10.0.0.0/8".parse().expect("net"),
            "192.0.2.1/32".parse().expect("net"),
        ],
        forwarded_for: "cf-connecting-ip".into(),
        compute_full_forwarded_for: true,
    };
    assert_eq!(
        g.real_ip, real_ip,
        "a bad use-proxy-protocol leaves the flag's"
    );
    let keep_alive = crate::snapshot::KeepAlive {
        requests: Some(100),
        upstream_timeout: Some(std::time::Duration::from_secs(90)),
        upstream_time: Some(std::time::Duration::from_secs(1800)),
        ..Default::default()
    };
    assert_eq!(
        g.keep_alive, keep_alive,
        "a bad upstream-keepalive-requests leaves the flag's"
    );

    // Only the ConfigMap has diagnostics: the defaults are not "unread" annotations.
    let on_cm: Vec<(&str, &str)> = t
        .diagnostics
        .iter()
        .map(|d| (d.object.kind, d.reason))
        .collect();
    assert_eq!(
        on_cm,
        [
            ("ConfigMap", reason::CONFIG_KEY_IGNORED),
            ("ConfigMap", reason::INVALID_CONFIG_KEY),
            ("ConfigMap", reason::INVALID_CONFIG_KEY),
            ("ConfigMap", reason::INVALID_CONFIG_KEY),
            ("ConfigMap", reason::INVALID_CONFIG_KEY),
            ("ConfigMap", reason::INVALID_CONFIG_KEY),
        ]
    );
    let messages: Vec<&str> = t.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages[0],
        "keys not used by ingressd: server-snippet (snippets are never run); keys that tune nginx \
         itself, with nothing to set here: worker-processes"
    );
    assert!(messages[1..]
        .iter()
        .any(|m| m.starts_with("key use-proxy-protocol: invalid value \"yes please\"")));
    assert!(messages[1..]
        .iter()
        .any(|m| m.starts_with("key hsts-preload: invalid value \"maybe\"")));
    assert!(messages[1..]
        .iter()
        .any(|m| m.starts_with("key http-redirect-code: invalid value \"303\"")));
    assert!(messages[1..].iter().any(|m| m
        .starts_with("key proxy-read-timeout: invalid value \"bogus\"")
        && m.ends_with("; ignored")));
}

#[test]
fn without_the_controller_configmap_the_flags_hold() {
    let mut objs = plain_ingress_objects();
    // Named but absent, and a ConfigMap of another name: neither counts.
    objs.push(Object::ConfigMap(mk_configmap(
        "ingress",
        "other",
        &[("proxy-body-size", "2k"), ("block-cidrs", "")],
    )));
    let s = controller_settings();
    let t = run_with(objs, &s);
    assert_eq!(t.snapshot.global, s.global);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let policy = &vhost(&t, &exact("a.example")).routes[0].target.policy;
    assert_eq!(policy.max_body_bytes, Some(1 << 20));
}

/// `global-auth-*`: every Ingress without its own `auth-url` and without
/// `enable-global-auth: "false"` gets them as a whole.
#[test]
fn global_auth_from_the_controller_configmap() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(class());
    let ingress = |name: &str, host: &str| {
        mk_ingress("ns", name)
            .host(host)
            .path("/", "Prefix", "web", 80)
    };
    objs.push(ing(ingress("plain", "a.example")));
    objs.push(ing(
        ingress("own", "b.example").annotation("auth-url", "http://own.example/auth")
    ));
    objs.push(ing(
        ingress("off", "c.example").annotation("enable-global-auth", "false")
    ));
    objs.push(ing(
        ingress("bad", "d.example").annotation("enable-global-auth", "maybe")
    ));
    objs.push(controller_configmap(&[
        ("global-auth-url", "http://auth.example/check"),
        ("global-auth-method", "POST"),
        ("global-auth-response-headers", "X-User"),
        ("global-auth-signin", "not a url"),
        ("no-auth-locations", "/public"),
    ]));
    let t = run_with(objs, &controller_settings());
    let auth = |host: &str| {
        vhost(&t, &exact(host)).routes[0]
            .target
            .policy
            .external_auth
            .clone()
    };
    let plain = auth("a.example").expect("global auth");
    assert!(plain.global);
    assert_eq!(
        (
            plain.url.as_str(),
            plain.method.as_str(),
            plain.signin.as_deref()
        ),
        ("http://auth.example/check", "POST", None)
    );
    assert_eq!(plain.response_headers, ["x-user"]);
    let own = auth("b.example").expect("its own auth");
    assert!(!own.global);
    assert_eq!(
        (own.url.as_str(), own.method.as_str()),
        ("http://own.example/auth", "GET"),
        "none of the global keys mix into an Ingress's own"
    );
    assert!(auth("c.example").is_none(), "enable-global-auth: false");
    assert!(vhost(&t, &exact("d.example"))
        .routes
        .iter()
        .all(|r| r.target.policy.rejected));
    assert_eq!(t.snapshot.global.no_auth_locations, ["/public"]);
    let problems: Vec<(&str, &str)> = t
        .diagnostics
        .iter()
        .map(|d| (d.object.name.as_str(), d.reason))
        .collect();
    assert_eq!(
        problems,
        [
            ("ingressd", reason::INVALID_CONFIG_KEY),
            ("bad", reason::INVALID_ANNOTATION)
        ]
    );
    assert!(t.diagnostics[0]
        .message
        .starts_with("key global-auth-signin: "));
}

/// Editing, then deleting, the controller ConfigMap re-translates every Ingress.
#[test]
fn controller_configmap_changes_reach_every_ingress() {
    let s = controller_settings();
    let objs = plain_ingress_objects();
    let mut cache = ObjectCache::from_objects(objs);
    let mut tr = Translator::new(s.clone());
    let body = |t: &Translation| {
        vhost(t, &exact("a.example")).routes[0]
            .target
            .policy
            .max_body_bytes
    };
    assert_eq!(body(&tr.translate(&cache)), Some(1 << 20));
    let retries = |t: &Translation| {
        vhost(t, &exact("a.example")).routes[0]
            .target
            .policy
            .next_upstream
            .non_idempotent
    };
    cache.apply(controller_configmap(&[
        ("proxy-body-size", "0"),
        ("block-cidrs", ""),
        ("retry-non-idempotent", "true"),
    ]));
    let t = tr.translate(&cache);
    assert_eq!(body(&t), None, "0 is unlimited");
    assert!(retries(&t), "retry-non-idempotent");
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert!(
        t.snapshot.global.block_cidrs.is_empty(),
        "an empty list replaces the flag's"
    );
    cache.delete(&crate::source::Key {
        kind: crate::source::Kind::ConfigMap,
        namespace: "ingress".into(),
        name: "ingressd".into(),
    });
    let t = tr.translate(&cache);
    assert_eq!(body(&t), Some(1 << 20));
    assert!(!retries(&t));
    assert_eq!(t.snapshot.global, s.global);
}

/// A controller ConfigMap change with an invalid value is not applied: the previous settings
/// stay (nginx keeps running when a reload fails) and `config_rejected` is set, until fixed.
/// Deleting the ConfigMap is not a failure.
#[test]
fn an_invalid_controller_configmap_change_keeps_the_previous_settings() {
    let s = controller_settings();
    let mut cache = ObjectCache::from_objects(plain_ingress_objects());
    let mut tr = Translator::new(s.clone());
    let cm = |body: &str, code: &str| {
        controller_configmap(&[("proxy-body-size", body), ("http-redirect-code", code)])
    };
    let body = |t: &Translation| {
        vhost(t, &exact("a.example")).routes[0]
            .target
            .policy
            .max_body_bytes
    };
    cache.apply(cm("3m", "301"));
    let t = tr.translate(&cache);
    assert_eq!(body(&t), Some(3 << 20));
    assert!(!t.snapshot.global.config_rejected);
    // A typo: neither it nor the valid key beside it is applied.
    cache.apply(cm("3 m", "302"));
    let t = tr.translate(&cache);
    assert_eq!(body(&t), Some(3 << 20), "the previous limit stays");
    assert_eq!(t.snapshot.global.http_redirect_code, 301);
    assert!(t.snapshot.global.config_rejected);
    let messages: Vec<&str> = t.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("proxy-body-size"))
            && messages.iter().any(|m| m.contains("not applied")),
        "{messages:?}"
    );
    // Fixed: applied.
    cache.apply(cm("4m", "302"));
    let t = tr.translate(&cache);
    assert_eq!(body(&t), Some(4 << 20));
    assert_eq!(t.snapshot.global.http_redirect_code, 302);
    assert!(!t.snapshot.global.config_rejected && t.diagnostics.is_empty());
    // Invalid from the start: the valid keys apply, the invalid keep their defaults, and the
    // failure shows.
    let mut fresh = Translator::new(s.clone());
    cache.apply(cm("3 m", "302"));
    let t = fresh.translate(&cache);
    assert_eq!(body(&t), Some(1 << 20));
    assert_eq!(t.snapshot.global.http_redirect_code, 302);
    assert!(t.snapshot.global.config_rejected);
}

/// `proxy-set-headers` / `add-headers`: the header ConfigMaps they name are followed like the
/// controller ConfigMap itself, from absent to present to edited, incrementally as from
/// scratch.
#[test]
fn header_configmaps_are_followed() {
    let s = controller_settings();
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(class());
    objs.push(controller_configmap(&[
        ("proxy-set-headers", "ingress/up"),
        ("add-headers", "down"),
    ]));
    let mut cache = ObjectCache::from_objects(objs);
    let mut tr = Translator::new(s.clone());
    let t = tr.translate(&cache);
    assert!(t.snapshot.global.proxy_set_headers.is_empty());
    let messages: Vec<&str> = t.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "key add-headers: invalid value \"down\": ConfigMap ingress/down not found; ignored",
            "key proxy-set-headers: invalid value \"ingress/up\": ConfigMap ingress/up not found; \
             ignored",
        ]
    );
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    cache.apply(Object::ConfigMap(mk_configmap(
        "ingress",
        "up",
        &[("X-Env", "prod"), ("Host", "x")],
    )));
    cache.apply(Object::ConfigMap(mk_configmap(
        "ingress",
        "down",
        &[("X-Frame-Options", "DENY")],
    )));
    // One no key names adds nothing.
    cache.apply(Object::ConfigMap(mk_configmap(
        "ingress",
        "unrelated",
        &[("X-Other", "1")],
    )));
    let t = tr.translate(&cache);
    assert_eq!(t.snapshot.global.proxy_set_headers, [pair("x-env", "prod")]);
    assert_eq!(
        t.snapshot.global.add_headers,
        [pair("x-frame-options", "DENY")]
    );
    assert!(
        t.same_content(&translate(&cache, &s)),
        "incremental equals from scratch"
    );
    let messages: Vec<&str> = t.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "key proxy-set-headers: ConfigMap ingress/up: header \"Host\": set by the proxy \
          itself; that header is ignored"
        ]
    );
    cache.apply(Object::ConfigMap(mk_configmap(
        "ingress",
        "down",
        &[("X-Frame-Options", "SAMEORIGIN"), ("Server", "")],
    )));
    let t = tr.translate(&cache);
    assert_eq!(
        t.snapshot.global.add_headers,
        [pair("server", ""), pair("x-frame-options", "SAMEORIGIN")]
    );
    // In another namespace (as ingress-nginx allows): followed the same way.
    cache.apply(controller_configmap(&[("add-headers", "other/down")]));
    let t = tr.translate(&cache);
    assert!(t.snapshot.global.add_headers.is_empty());
    assert!(t.diagnostics[0]
        .message
        .contains("ConfigMap other/down not found"));
    cache.apply(Object::ConfigMap(mk_configmap(
        "other",
        "down",
        &[("X-Frame-Options", "DENY")],
    )));
    let t = tr.translate(&cache);
    assert_eq!(
        t.snapshot.global.add_headers,
        [pair("x-frame-options", "DENY")]
    );
    assert!(
        t.snapshot.same_config(&translate(&cache, &s).snapshot),
        "incremental = scratch"
    );
}

#[test]
fn an_invalid_annotation_leaves_its_routes_answering_503() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    // An older Ingress serves the rest of the host: the broken one's paths must not fall
    // to it, which would drop the allow-list they were meant to have.
    objs.push(ing(mk_ingress("ns", "open")
        .created(1)
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "broken")
        .created(2)
        .annotation("whitelist-source-range", "10.0.0.0/8")
        .annotation("proxy-read-timeout", "soon")
        .host("a.example")
        .path("/admin", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "fine")
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    // Neither a canary nor a passthrough Ingress is applied with invalid annotations.
    objs.push(ing(mk_ingress("ns", "canary")
        .annotation("canary", "true")
        .annotation("canary-weight", "50")
        .annotation("proxy-body-size", "huge")
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "pt")
        .annotation("ssl-passthrough", "true")
        .annotation("proxy-body-size", "huge")
        .host("pt.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    assert_eq!(
        diags(&t),
        vec![
            ("broken".into(), reason::INVALID_ANNOTATION),
            ("canary".into(), reason::INVALID_ANNOTATION),
            ("pt".into(), reason::INVALID_ANNOTATION),
        ]
    );
    let broken = &t.diagnostics[0].message;
    assert!(
        broken.contains("nginx.ingress.kubernetes.io/proxy-read-timeout")
            && broken.contains("\"soon\"")
            && broken.contains("503"),
        "{broken}"
    );
    let a = vhost(&t, &exact("a.example"));
    let policy = |path: &str| {
        let r = a
            .routes
            .iter()
            .find(|r| r.path == PathMatch::Prefix(path.into()))
            .unwrap_or_else(|| panic!("no route {path}"));
        r.target.policy.clone()
    };
    let admin = policy("/admin");
    assert!(admin.rejected, "the broken Ingress's route must answer 503");
    // Its valid annotations are still read as meant.
    assert_eq!(admin.allow_sources.len(), 1);
    assert!(!policy("/").rejected);
    let b = vhost(&t, &exact("b.example"));
    assert!(b
        .routes
        .iter()
        .all(|r| !r.target.policy.rejected && r.target.canary.is_none()));
    assert!(t.snapshot.passthrough.is_empty());
    assert_eq!(
        t.owned_ingresses.len(),
        5,
        "still ours, so status and events can be written"
    );
}

/// Whatever key is invalid, the paths are read as the Ingress meant them and a canary or
/// passthrough Ingress stays one, so failing closed never hands a path to another route.
#[test]
fn an_invalid_annotation_keeps_the_paths_and_role_it_meant() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(ing(mk_ingress("ns", "open")
        .created(1)
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    // The error names `auth-secret`, which the Ingress lacks.
    objs.push(ing(mk_ingress("ns", "no-secret")
        .created(2)
        .annotation("auth-type", "basic")
        .annotation("rewrite-target", "/$2")
        .host("a.example")
        .path("/admin(/|$)(.*)", "ImplementationSpecific", "web", 80)));
    // The invalid key is the one that made the paths regexes.
    objs.push(ing(mk_ingress("ns", "bad-target")
        .created(2)
        .annotation("rewrite-target", "app/$2")
        .host("a.example")
        .path("/api(/|$)(.*)", "ImplementationSpecific", "web", 80)));
    objs.push(ing(mk_ingress("ns", "bad-flag")
        .created(2)
        .annotation("use-regex", "yes")
        .host("a.example")
        .path("/v[0-9]+/x", "ImplementationSpecific", "web", 80)));
    // An invalid canary older than its main Ingress must not take the main's path.
    objs.push(ing(mk_ingress("ns", "bad-canary")
        .created(0)
        .annotation("canary", "yes")
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "main")
        .created(5)
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "bad-pt")
        .annotation("ssl-passthrough", "on")
        .host("pt.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    let rejected = |n: &str| (n.to_owned(), reason::INVALID_ANNOTATION);
    let mut want = vec![
        rejected("bad-canary"),
        rejected("bad-flag"),
        rejected("bad-pt"),
        rejected("bad-target"),
        rejected("no-secret"),
    ];
    let mut got = diags(&t);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let a = vhost(&t, &exact("a.example"));
    for (path, probe) in [
        ("/admin(/|$)(.*)", "/admin/users"),
        ("/api(/|$)(.*)", "/api/x"),
        ("/v[0-9]+/x", "/v2/x"),
    ] {
        let r = a
            .routes
            .iter()
            .find(|r| matches!(&r.path, PathMatch::Regex(p) if p.source == path))
            .unwrap_or_else(|| panic!("no regex route {path}: {:?}", routes(a)));
        assert!(r.target.policy.rejected, "{path} must answer 503");
        assert!(r.path.matches(probe), "{path} takes {probe}");
    }
    let b = vhost(&t, &exact("b.example"));
    assert!(
        b.routes
            .iter()
            .all(|r| !r.target.policy.rejected && r.target.canary.is_none()),
        "{:?}",
        routes(b)
    );
    assert!(t.snapshot.passthrough.is_empty());
    assert!(t
        .snapshot
        .http
        .hosts
        .iter()
        .all(|v| v.host != exact("pt.example")));
}

#[test]
fn use_regex_and_rewrite_target() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(ing(mk_ingress("ns", "rx")
        .annotation("rewrite-target", "/$2")
        .host("a.example")
        .path("/something(/|$)(.*)", "ImplementationSpecific", "web", 80)));
    objs.push(ing(mk_ingress("ns", "plain").host("a.example").path(
        "/something",
        "Prefix",
        "web",
        80,
    )));
    let t = run(objs);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let vh = vhost(&t, &exact("a.example"));
    assert_eq!(
        routes(vh),
        vec![
            r("Regex", "/something(/|$)(.*)", "ns/web:80", "rx"),
            r("Prefix", "/something", "ns/web:80", "plain")
        ]
    );
    assert_eq!(
        vh.routes[0].target.policy.rewrite_target.as_deref(),
        Some("/$2")
    );
    assert!(vh.routes[0].path.matches("/SOMETHING/else"));
}

/// A canary's own annotations do not decide how its paths meet the main's: a rule written
/// the same attaches to the main's route even when the main's `rewrite-target` makes it a
/// regex and the canary, which does not repeat it, reads it as a prefix (ingress-nginx
/// compares the path and pathType as written).
#[test]
fn a_canary_attaches_to_a_regex_main_rule_written_the_same() {
    let mut objs = backend_objects("ns", "stable", "10.0.0.1");
    objs.extend(backend_objects("ns", "next", "10.0.0.2"));
    objs.push(ing(mk_ingress("ns", "main")
        .created(1)
        .annotation("rewrite-target", "/$2")
        .host("a.example")
        .path("/app(/|$)(.*)", "ImplementationSpecific", "stable", 80)));
    objs.push(ing(mk_ingress("ns", "canary")
        .created(2)
        .annotation("canary", "true")
        .annotation("canary-weight", "20")
        .host("a.example")
        .path("/app(/|$)(.*)", "ImplementationSpecific", "next", 80)));
    let t = run(objs);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let vh = vhost(&t, &exact("a.example"));
    assert_eq!(vh.routes.len(), 1);
    let c = vh.routes[0]
        .target
        .canary
        .as_ref()
        .expect("canary on the regex route");
    assert_eq!((c.weight, c.upstream.name.as_str()), (20, "ns/next:80"));
}

/// A canary is called as its main route is: the main's `backend-protocol` holds for it,
/// as ingress-nginx ignores a canary's own.
#[test]
fn a_canary_is_called_over_its_main_s_backend_protocol() {
    let mut objs = backend_objects("ns", "stable", "10.0.0.1");
    objs.extend(backend_objects("ns", "next", "10.0.0.2"));
    objs.push(ing(mk_ingress("ns", "main")
        .created(1)
        .annotation("backend-protocol", "HTTPS")
        .host("a.example")
        .path("/", "Prefix", "stable", 80)));
    objs.push(ing(mk_ingress("ns", "canary")
        .created(2)
        .annotation("canary", "true")
        .annotation("canary-weight", "20")
        .host("a.example")
        .path("/", "Prefix", "next", 80)));
    let t = run(objs);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let vh = vhost(&t, &exact("a.example"));
    let c = vh.routes[0].target.canary.as_ref().expect("canary");
    assert_eq!(c.upstream.protocol, BackendProtocol::Https);
    assert!(!c.upstream.endpoints.is_empty());
}

#[test]
fn canary_attaches_to_main_routes() {
    let mut objs = backend_objects("ns", "stable", "10.0.0.1");
    objs.extend(backend_objects("ns", "next", "10.0.0.2"));
    objs.push(ing(mk_ingress("ns", "main")
        .created(1)
        .host("a.example")
        .path("/", "Prefix", "stable", 80)
        .path("/", "Exact", "stable", 80)
        .path("/b", "Prefix", "stable", 80)));
    objs.push(ing(mk_ingress("ns", "canary")
        .created(2)
        .annotation("canary", "true")
        .annotation("canary-weight", "20")
        .annotation("canary-by-header", "X-Canary")
        .annotation("canary-by-cookie", "use_canary")
        .annotation("canary-by-header-pattern", "^beta")
        .host("a.example")
        // By the port's name: the `canary` label keeps it, as ingress-nginx's upstream name.
        .path("/", "Prefix", "next", "http")
        .path("/nomatch", "Prefix", "next", 80)
        // The text of a main rule, but not its type: no match, as in ingress-nginx.
        .path("/b", "Exact", "next", 80)
        .host("other.example")
        .path("/", "Prefix", "next", 80)));
    objs.push(ing(mk_ingress("ns", "canary2")
        .created(3)
        .annotation("canary", "true")
        .host("a.example")
        .path("/", "Prefix", "next", 80)));
    let t = run(objs);
    let vh = vhost(&t, &exact("a.example"));
    assert_eq!(
        t.snapshot.http.hosts.len(),
        1,
        "a canary creates no host of its own"
    );
    assert_eq!(vh.routes.len(), 3, "a canary creates no route of its own");
    for route in &vh.routes {
        let c = route.target.canary.as_ref();
        if route.path == PathMatch::Prefix("/".into()) {
            let c = c.expect("canary on prefix /");
            assert_eq!(
                (c.weight, c.header.as_deref(), c.origin.name.as_str()),
                (20, Some("X-Canary"), "canary")
            );
            assert_eq!(c.cookie.as_deref(), Some("use_canary"));
            assert_eq!(
                c.header_pattern.as_ref().map(|p| p.source.as_str()),
                Some("^beta")
            );
            assert_eq!(c.weight_total, 100);
            assert_eq!(c.upstream.name, "ns/next:80");
            assert_eq!(c.label, "ns-next-http");
            assert_eq!(route.target.upstream.name, "ns/stable:80");
        } else {
            assert!(c.is_none());
        }
    }
    assert_eq!(
        diags(&t),
        vec![
            ("canary".into(), reason::CANARY_WITHOUT_MAIN_ROUTE),
            ("canary".into(), reason::CANARY_WITHOUT_MAIN_ROUTE),
            ("canary".into(), reason::CANARY_WITHOUT_MAIN_ROUTE),
            ("canary2".into(), reason::RULE_CONFLICT),
        ]
    );
}

#[test]
fn basic_auth_resolves_the_secret_or_rejects_the_ingress() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Secret(mk_secret(
        "ns",
        "users",
        &[("auth", "alice:$apr1$abc$def\n")],
    )));
    objs.push(Object::Secret(mk_secret("ns", "empty", &[("auth", "\n")])));
    let with_auth = |name: &str, host: &str, secret: &str| {
        ing(mk_ingress("ns", name)
            .annotation("auth-type", "basic")
            .annotation("auth-secret", secret)
            .annotation("auth-realm", "Staff")
            .host(host)
            .path("/", "Prefix", "web", 80))
    };
    objs.push(with_auth("ok", "a.example", "users"));
    objs.push(with_auth("ok2", "c.example", "users"));
    objs.push(with_auth("missing", "b.example", "ghost"));
    objs.push(with_auth("bad", "d.example", "empty"));
    let t = run(objs);
    let auth = vhost(&t, &exact("a.example")).routes[0]
        .target
        .policy
        .basic_auth
        .clone()
        .expect("auth");
    assert_eq!(auth.realm, "Staff");
    assert_eq!(
        auth.users.get("alice").map(String::as_str),
        Some("$apr1$abc$def")
    );
    let auth2 = vhost(&t, &exact("c.example")).routes[0]
        .target
        .policy
        .basic_auth
        .clone()
        .expect("auth");
    assert!(Arc::ptr_eq(&auth, &auth2));
    // Fail closed: the routes stay, denied (503), so no less specific route of the host
    // serves their paths unauthenticated.
    assert_eq!(t.snapshot.http.hosts.len(), 4);
    for host in ["b.example", "d.example"] {
        let auth = vhost(&t, &exact(host)).routes[0]
            .target
            .policy
            .basic_auth
            .clone()
            .expect("denied auth");
        assert!(auth.denied && auth.users.is_empty(), "{host}");
    }
    assert_eq!(
        diags(&t),
        vec![
            ("bad".into(), reason::AUTH_SECRET_INVALID),
            ("missing".into(), reason::AUTH_SECRET_INVALID)
        ]
    );
}

#[test]
fn client_certificates_are_a_host_setting_read_from_the_ca_secret() {
    let (ca, _) = self_signed(&["ca.example"]);
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Secret(mk_secret("ns", "ca", &[("ca.crt", &ca)])));
    let with_tls_auth = |name: &str, created: i64, host: &str, path: &str, secret: Option<&str>| {
        let mut b = mk_ingress("ns", name).created(created);
        if let Some(secret) = secret {
            b = b.annotation("auth-tls-secret", secret);
        }
        if name == "c" {
            b = b.annotation("auth-tls-verify-client", "optional");
        }
        ing(b.host(host).path(path, "Prefix", "web", 80))
    };
    objs.push(with_tls_auth("a", 1, "m.example", "/", Some("ca")));
    // No annotation of its own: its paths are still behind the host's client certificates.
    objs.push(with_tls_auth("b", 2, "m.example", "/b", None));
    // Different settings for the same host: the oldest Ingress's stay.
    objs.push(with_tls_auth("c", 3, "m.example", "/c", Some("ns/ca")));
    objs.push(with_tls_auth("d", 4, "x.example", "/", Some("ghost")));
    objs.push(with_tls_auth("e", 5, "plain.example", "/", None));
    let t = run(objs.clone());
    let m = vhost(&t, &exact("m.example"));
    assert_eq!(m.routes.len(), 3);
    let auth = m.client_auth.clone().expect("client auth on m.example");
    assert_eq!(auth.origin.name, "a");
    assert_eq!(
        (auth.secret.as_str(), auth.mode),
        ("ns/ca", VerifyClient::On)
    );
    assert_eq!(
        (auth.ca.len(), auth.roots.len(), auth.denied),
        (1, 1, false)
    );
    // Fail closed on a missing Secret: the host keeps asking, and answers 503.
    let x = vhost(&t, &exact("x.example"))
        .client_auth
        .clone()
        .expect("denied");
    assert!(x.denied && x.ca.is_empty());
    assert!(vhost(&t, &exact("plain.example")).client_auth.is_none());
    assert_eq!(
        diags(&t),
        vec![
            ("c".into(), reason::RULE_CONFLICT),
            ("d".into(), reason::AUTH_SECRET_INVALID)
        ]
    );

    // The Secret appearing later is picked up by the running translator, as a fresh one would.
    let s = settings();
    let mut cache =
        ObjectCache::from_objects(objs.into_iter().chain([class()]).collect::<Vec<_>>());
    let mut tr = Translator::new(s.clone());
    let before = tr.translate(&cache);
    assert!(before.same_content(&translate(&cache, &s)));
    cache.apply(Object::Secret(mk_secret("ns", "ghost", &[("ca.crt", &ca)])));
    let after = tr.translate(&cache);
    assert!(after.same_content(&translate(&cache, &s)));
    let x = vhost(&after, &exact("x.example"))
        .client_auth
        .clone()
        .expect("auth");
    assert!(!x.denied && x.ca.len() == 1);
}

#[test]
fn server_aliases_and_www_redirect_are_host_settings() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(ing(mk_ingress("ns", "old")
        .created(1)
        .annotation("server-alias", "b.example, *.b.example")
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "young")
        .created(2)
        .annotation("server-alias", "c.example")
        .annotation("from-to-www-redirect", "true")
        .host("a.example")
        .path("/young", "Prefix", "web", 80)
        .host("*.w.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "self")
        .created(3)
        .annotation("server-alias", "s.example")
        .host("s.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    let a = vhost(&t, &exact("a.example"));
    // The oldest Ingress naming aliases decides them; any Ingress of the host asks for the
    // redirect.
    assert_eq!(
        a.aliases,
        vec![exact("b.example"), HostMatch::Wildcard("b.example".into())]
    );
    assert!(a.www_redirect);
    // Only exact hosts have a `www` twin; a host is not its own alias. An Ingress's aliases
    // go to each of its hosts (the router gives a name to the first host in order).
    let w = vhost(&t, &HostMatch::Wildcard("w.example".into()));
    assert!(!w.www_redirect);
    assert_eq!(w.aliases, vec![exact("c.example")]);
    assert!(vhost(&t, &exact("s.example")).aliases.is_empty());
    // An invalid alias rejects the Ingress, naming the annotation: its routes answer 503.
    let bad = run(vec![ing(mk_ingress("ns", "bad")
        .annotation("server-alias", "under_score.example")
        .host("x.example")
        .path("/", "Prefix", "web", 80))]);
    let x = vhost(&bad, &exact("x.example"));
    assert!(x.aliases.is_empty());
    assert!(x.routes.iter().all(|r| r.target.policy.rejected));
    assert!(bad
        .diagnostics
        .iter()
        .any(|d| d.message.contains("server-alias")));
}

#[test]
fn proxy_ssl_settings_make_upstreams_of_their_own() {
    let (ca, _) = self_signed(&["ca.example"]);
    let (cert, key) = self_signed(&["ingress.example"]);
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Secret(mk_secret(
        "ns",
        "up-tls",
        &[("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)],
    )));
    let https = |name: &str, host: &str, secret: &str, extra: &[(&str, &str)]| {
        let mut b = mk_ingress("ns", name)
            .annotation("backend-protocol", "HTTPS")
            .annotation("proxy-ssl-secret", secret);
        for (k, v) in extra {
            b = b.annotation(k, v);
        }
        ing(b.host(host).path("/", "Prefix", "web", 80))
    };
    objs.push(https(
        "verified",
        "a.example",
        "up-tls",
        &[("proxy-ssl-verify", "on")],
    ));
    objs.push(https(
        "named",
        "b.example",
        "up-tls",
        &[
            ("proxy-ssl-name", "api.internal"),
            ("proxy-ssl-server-name", "on"),
        ],
    ));
    objs.push(https(
        "missing",
        "c.example",
        "ghost",
        &[("proxy-ssl-verify", "on")],
    ));
    // Plain HTTP upstreams have no TLS to set.
    objs.push(ing(mk_ingress("ns", "plain")
        .annotation("proxy-ssl-secret", "up-tls")
        .host("d.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    let up = |h: &str| vhost(&t, &exact(h)).routes[0].target.upstream.clone();
    let a = up("a.example");
    let spec = a.tls.clone().expect("tls on a");
    assert!(a.name.starts_with("ns/web:80@tls-"), "{}", a.name);
    assert_eq!(spec.name, "web.ns.svc", "the Service's name by default");
    assert!(spec.verify.as_ref().is_some_and(|r| r.len() == 1));
    assert!(spec.client_cert.is_some() && !spec.sni);
    let b = up("b.example");
    let spec_b = b.tls.clone().expect("tls on b");
    assert_eq!((spec_b.name.as_str(), spec_b.sni), ("api.internal", true));
    assert!(spec_b.verify.is_none());
    // Other settings, another upstream (pools are keyed by name).
    assert_ne!(a.name, b.name);
    // An unusable Secret with verify on: nothing verifies (502), and a Warning says so.
    let c = up("c.example").tls.clone().expect("tls on c");
    assert!(c.verify.as_ref().is_some_and(|r| r.is_empty()));
    assert!(up("d.example").tls.is_none());
    assert_eq!(
        diags(&t),
        vec![("missing".into(), reason::AUTH_SECRET_INVALID)]
    );
}

#[test]
fn default_backend_annotation_is_the_services_first_port_and_follows_it() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Service(
        mk_service("ns", "errors")
            .port("http", 8080, 80)
            .port("metrics", 9090, 9090)
            .build(),
    ));
    objs.push(ing(mk_ingress("ns", "a")
        .annotation("default-backend", "errors")
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "b")
        .annotation("default-backend", "ghost")
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    let s = settings();
    let mut cache =
        ObjectCache::from_objects(objs.into_iter().chain([class()]).collect::<Vec<_>>());
    let mut tr = Translator::new(s.clone());
    let first = tr.translate(&cache);
    let db = |t: &Translation, h: &str| {
        vhost(t, &exact(h)).routes[0]
            .target
            .default_backend
            .clone()
            .expect("default backend")
    };
    assert_eq!(db(&first, "a.example").name, "ns/errors:8080");
    assert!(db(&first, "a.example").endpoints.is_empty(), "no slice yet");
    // A missing Service is reported, and its stand-in has no endpoint (the proxy's own 503).
    assert!(db(&first, "b.example").endpoints.is_empty());
    assert!(diags(&first)
        .iter()
        .any(|(name, reason)| name == "b" && *reason == reason::BACKEND_NOT_FOUND));
    // Its endpoints arriving reach the route, as a fresh translation would have them.
    cache.apply(Object::EndpointSlice(
        mk_slice("ns", "errors-x", "errors")
            .port("http", 80)
            .endpoint("10.0.0.9")
            .build(),
    ));
    let second = tr.translate(&cache);
    assert!(second.same_content(&translate(&cache, &s)));
    assert_eq!(
        db(&second, "a.example").endpoints,
        vec!["10.0.0.9:80".parse::<SocketAddr>().expect("addr")]
    );
}

#[test]
fn static_endpoints_setting() {
    let objs = vec![
        Object::Service(
            mk_service("ns", "web")
                .port("http", 80, 8080)
                .annotation(STATIC_ENDPOINTS_ANNOTATION, "127.0.0.1:18081,nope")
                .build(),
        ),
        ing(mk_ingress("ns", "a")
            .host("a.example")
            .path("/", "Prefix", "web", 80)),
        class(),
    ];
    let mut s = settings();
    s.static_endpoints = true;
    let t = run_with(objs.clone(), &s);
    let up = &vhost(&t, &exact("a.example")).routes[0].target.upstream;
    assert_eq!(
        up.endpoints,
        vec!["127.0.0.1:18081".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(diags(&t), vec![("web".into(), reason::INVALID_ENDPOINTS)]);
    let t = run_with(objs, &settings());
    assert!(vhost(&t, &exact("a.example")).routes[0]
        .target
        .upstream
        .endpoints
        .is_empty());
    assert!(t.diagnostics.is_empty());
}

/// The memoising translator must produce exactly what a fresh translation does, and reuse
/// what did not change.
#[test]
fn translator_memory_is_transparent() {
    let (cert, key) = self_signed(&["s.example"]);
    let mut cache = ObjectCache::from_objects(
        [
            vec![
                class(),
                Object::Secret(mk_tls_secret("ns", "tls", &cert, &key)),
            ],
            backend_objects("ns", "web", "10.0.0.1"),
            backend_objects("ns", "api", "10.0.0.2"),
        ]
        .concat(),
    );
    cache.apply(ing(mk_ingress("ns", "a")
        .tls(&["s.example"], "tls")
        .host("s.example")
        .path("/", "Prefix", "web", 80)));
    cache.apply(ing(mk_ingress("ns", "b")
        .host("b.example")
        .path("/", "Prefix", "api", 80)));
    let s = settings();
    let mut tr = Translator::new(s.clone());
    let first = tr.translate(&cache);
    assert!(first.same_content(&translate(&cache, &s)));

    // Endpoint change of one service: only its upstream is rebuilt.
    cache.apply(Object::EndpointSlice(
        mk_slice("ns", "api-x", "api")
            .port("http", 8080)
            .endpoint("10.0.0.3")
            .build(),
    ));
    let second = tr.translate(&cache);
    assert!(second.same_content(&translate(&cache, &s)));
    let up = |t: &Translation, h: &str| vhost(t, &exact(h)).routes[0].target.upstream.clone();
    assert!(Arc::ptr_eq(
        &up(&first, "s.example"),
        &up(&second, "s.example")
    ));
    assert!(!Arc::ptr_eq(
        &up(&first, "b.example"),
        &up(&second, "b.example")
    ));
    assert_eq!(
        up(&second, "b.example").endpoints,
        vec!["10.0.0.3:8080".parse::<SocketAddr>().expect("addr")]
    );
    assert!(Arc::ptr_eq(
        &first.snapshot.tls.certs[0].key,
        &second.snapshot.tls.certs[0].key
    ));
    // Unchanged routes keep their target (cheap to build and to compare); changed ones do not.
    let target = |t: &Translation, h: &str| vhost(t, &exact(h)).routes[0].target.clone();
    assert!(Arc::ptr_eq(
        &target(&first, "s.example"),
        &target(&second, "s.example")
    ));
    assert!(!Arc::ptr_eq(
        &target(&first, "b.example"),
        &target(&second, "b.example")
    ));

    // Ingress edited, Secret replaced, Service deleted: still identical to a fresh run.
    cache.apply(ing(mk_ingress("ns", "b")
        .annotation("limit-rps", "3")
        .host("b.example")
        .path("/v2", "Prefix", "api", 80)));
    let (cert2, key2) = self_signed(&["s.example"]);
    cache.apply(Object::Secret(mk_tls_secret("ns", "tls", &cert2, &key2)));
    cache.delete(&crate::source::Key {
        kind: crate::source::Kind::Service,
        namespace: "ns".into(),
        name: "web".into(),
    });
    let third = tr.translate(&cache);
    let fresh = translate(&cache, &s);
    assert!(third.same_content(&fresh));
    assert!(!third.same_content(&second));
    assert!(!Arc::ptr_eq(
        &second.snapshot.tls.certs[0].key,
        &third.snapshot.tls.certs[0].key
    ));
    assert_eq!(diags(&third), vec![("a".into(), reason::BACKEND_NOT_FOUND)]);

    // Nothing changed: equal content.
    assert!(tr.translate(&cache).same_content(&third));
}

#[test]
fn translation_is_deterministic() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    for i in 0..20 {
        objs.push(ing(mk_ingress("ns", &format!("i{i}"))
            .host(&format!("h{}.example", i % 3))
            .path("/", "Prefix", "web", 80)
            .path(&format!("/p{i}"), "Prefix", "ghost", 80)));
    }
    let a = run(objs.clone());
    let mut rev = objs;
    rev.reverse();
    let b = run(rev);
    assert!(a.same_content(&b));
    assert_eq!(a.diagnostics, b.diagnostics);
}

/// Deterministic xorshift, so a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn random_ingress(
    rng: &mut Rng,
    ns: &str,
    name: &str,
) -> k8s_openapi::api::networking::v1::Ingress {
    const HOSTS: &[&str] = &["a.example", "b.example", "*.w.example", "x.w.example", ""];
    const PATHS: &[(&str, &str)] = &[
        ("/", "Prefix"),
        ("/api", "Prefix"),
        ("/api", "Exact"),
        ("/v(1|2)", "Prefix"),
    ];
    const SERVICES: &[&str] = &["svc0", "svc1", "svc2", "ghost"];
    let mut b = mk_ingress(ns, name).created(rng.pick(3) as i64);
    b = match rng.pick(8) {
        0 => b.class("nginx"),
        1 => b.no_class(),
        2 => b.raw_annotation(ingress::LEGACY_CLASS_ANNOTATION, "xdp"),
        _ => b,
    };
    b = match rng.pick(12) {
        0 => b
            .annotation("canary", "true")
            .annotation("canary-weight", "30"),
        1 => b.annotation("ssl-passthrough", "true"),
        2 => b.annotation("limit-rps", "bogus"),
        3 => b
            .annotation("auth-type", "basic")
            .annotation("auth-secret", "users"),
        4 => b
            .annotation("auth-type", "basic")
            .annotation("auth-secret", "ghost-users"),
        5 => b.annotation("backend-protocol", "GRPC"),
        6 => b.annotation("use-regex", "true"),
        7 => b.annotation("limit-rps", "5"),
        _ => b,
    };
    for _ in 0..rng.pick(3) + 1 {
        b = b.host(HOSTS[rng.pick(HOSTS.len())]);
        for _ in 0..rng.pick(3) {
            let (p, t) = PATHS[rng.pick(PATHS.len())];
            let svc = SERVICES[rng.pick(SERVICES.len())];
            b = if rng.chance(50) {
                b.path(p, t, svc, 80)
            } else {
                b.path(p, t, svc, "http")
            };
        }
    }
    if rng.chance(30) {
        b = b.default_backend(SERVICES[rng.pick(SERVICES.len())], 80);
    }
    if rng.chance(30) {
        let secret = ["tls0", "tls1", "missing"][rng.pick(3)];
        b = b.tls(&[HOSTS[rng.pick(HOSTS.len() - 1)]], secret);
    }
    b.build()
}

fn random_slice(rng: &mut Rng, svc: &str) -> Object {
    let mut s = mk_slice("ns0", &format!("{svc}-{}", rng.pick(2)), svc).port("http", 8080);
    for i in 0..rng.pick(3) {
        let ready = [Some(true), Some(false), None][rng.pick(3)];
        s = s.endpoint_cond(
            &format!("10.0.{}.{}", rng.pick(4), i + 1),
            ready,
            Some(true),
            Some(rng.chance(50)),
        );
    }
    Object::EndpointSlice(s.build())
}

/// The incremental translator against a from-scratch translation after every step of
/// random change sequences touching every kind of object.
#[test]
fn incremental_translation_equals_translation_from_scratch() {
    let certs = [
        self_signed(&["a.example", "*.w.example"]),
        self_signed(&["b.example"]),
    ];
    let mut s = controller_settings();
    s.controller_config = Some(NamespacedName {
        namespace: "ns0".into(),
        name: "ingressd".into(),
    });
    s.tcp_services = Some(NamespacedName {
        namespace: "ns0".into(),
        name: "tcp".into(),
    });
    s.l4_addresses = vec!["192.0.2.1".parse().expect("ip")];
    s.static_endpoints = true;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut cache = ObjectCache::from_objects([class()]);
        for svc in ["svc0", "svc1", "svc2"] {
            cache.apply(Object::Service(
                mk_service("ns0", svc).port("http", 80, 8080).build(),
            ));
        }
        let mut tr = Translator::new(s.clone());
        for step in 0..60 {
            let ns = ["ns0", "ns1"][rng.pick(2)];
            let name = format!("ing{}", rng.pick(6));
            let svc = ["svc0", "svc1", "svc2"][rng.pick(3)];
            match rng.pick(10) {
                0..=2 => {
                    cache.apply(Object::Ingress(random_ingress(&mut rng, ns, &name)));
                }
                3 => {
                    cache.delete(&crate::source::Key {
                        kind: crate::source::Kind::Ingress,
                        namespace: ns.into(),
                        name,
                    });
                }
                4 | 5 => {
                    cache.apply(random_slice(&mut rng, svc));
                }
                6 => {
                    let mut b = mk_service("ns0", svc).port("http", 80, 8080);
                    if rng.chance(50) {
                        b = b.annotation(STATIC_ENDPOINTS_ANNOTATION, "127.0.0.1:9,bogus");
                    }
                    if rng.chance(30) {
                        cache.delete(&crate::source::Key {
                            kind: crate::source::Kind::Service,
                            namespace: "ns0".into(),
                            name: svc.into(),
                        });
                    } else {
                        cache.apply(Object::Service(b.build()));
                    }
                }
                7 => {
                    let secret = match rng.pick(4) {
                        0 => mk_tls_secret("ns0", "tls0", &certs[0].0, &certs[0].1),
                        1 => mk_tls_secret("ns0", "tls0", &certs[1].0, &certs[1].1),
                        2 => mk_tls_secret("ns1", "tls1", "garbage", "garbage"),
                        _ => mk_secret(
                            ns,
                            "users",
                            &[("auth", ["u:h", "v:h2", "broken"][rng.pick(3)])],
                        ),
                    };
                    cache.apply(Object::Secret(secret));
                }
                8 if rng.chance(50) => {
                    let data: &[(&str, &str)] = match rng.pick(5) {
                        0 => &[("proxy-body-size", "2k"), ("ssl-redirect", "false")],
                        1 => &[
                            ("whitelist-source-range", "10.0.0.0/8"),
                            ("block-cidrs", ""),
                        ],
                        2 => &[("proxy-body-size", "lots"), ("hsts", "false"), ("x", "y")],
                        3 => &[("proxy-set-headers", "ns0/hdr"), ("add-headers", "hdr")],
                        _ => {
                            cache.delete(&crate::source::Key {
                                kind: crate::source::Kind::ConfigMap,
                                namespace: "ns0".into(),
                                name: "ingressd".into(),
                            });
                            &[]
                        }
                    };
                    if !data.is_empty() {
                        cache.apply(Object::ConfigMap(mk_configmap("ns0", "ingressd", data)));
                    }
                }
                8 if rng.chance(30) => {
                    // The header ConfigMap the controller ConfigMap may name.
                    let data: &[(&str, &str)] = match rng.pick(2) {
                        0 => &[("X-A", "1")],
                        _ => &[("X-B", "2"), ("Host", "refused")],
                    };
                    cache.apply(Object::ConfigMap(mk_configmap("ns0", "hdr", data)));
                }
                8 => {
                    let data: &[(&str, &str)] = match rng.pick(3) {
                        0 => &[("9000", "ns0/svc0:80")],
                        1 => &[("9000", "ns0/svc1:http"), ("9001", "ns0/nope:80")],
                        _ => &[("bad", "x")],
                    };
                    cache.apply(Object::ConfigMap(mk_configmap("ns0", "tcp", data)));
                }
                _ => {
                    cache.apply(Object::IngressClass(mk_class(
                        "xdp",
                        CONTROLLER,
                        rng.chance(50),
                    )));
                }
            }
            // Sometimes the log is discarded before the translator read it: it must notice.
            if rng.chance(5) {
                cache.discard_changes_until(cache.version());
            }
            let incremental = tr.translate(&cache);
            cache.discard_changes_until(cache.version());
            // From scratch but for the controller ConfigMap settings last accepted, which an
            // invalid change keeps.
            let fresh = Translator::remembering(s.clone(), &tr).translate(&cache);
            assert!(
                incremental.same_content(&fresh),
                "seed {seed} step {step}:\nincremental {:#?}\nfresh {:#?}",
                (&incremental.snapshot, &incremental.diagnostics),
                (&fresh.snapshot, &fresh.diagnostics)
            );
        }
    }
}

/// `custom-headers`: the ConfigMap is followed incrementally (absent, present, edited) as from
/// scratch; a missing one, or one setting a header `global-allowed-response-headers` does not
/// list, leaves the routes in place but denied (503) with a Warning.
#[test]
fn custom_headers_follow_their_configmap_and_the_allowed_list() {
    let s = controller_settings();
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(class());
    objs.push(controller_configmap(&[(
        "global-allowed-response-headers",
        "X-Frame-Options, Content-Security-Policy",
    )]));
    objs.push(ing(mk_ingress("ns", "site")
        .annotation("custom-headers", "sec")
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "other")
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    let mut cache = ObjectCache::from_objects(objs);
    let mut tr = Translator::new(s.clone());
    let custom = |t: &Translation, host: &str| {
        vhost(t, &exact(host)).routes[0]
            .target
            .policy
            .custom_headers
            .as_deref()
            .cloned()
    };
    let check = |tr: &mut Translator, cache: &ObjectCache| {
        let t = tr.translate(cache);
        let scratch = translate(cache, &s);
        assert_eq!(
            t.snapshot.http, scratch.snapshot.http,
            "incremental = scratch"
        );
        assert_eq!(custom(&t, "b.example"), None);
        t
    };

    let t = check(&mut tr, &cache);
    let denied = Some(crate::snapshot::CustomHeaders {
        headers: Vec::new(),
        denied: true,
    });
    assert_eq!(custom(&t, "a.example"), denied, "missing ConfigMap");
    assert_eq!(
        diags(&t),
        vec![("site".into(), reason::CUSTOM_HEADERS_INVALID)]
    );

    cache.apply(Object::ConfigMap(mk_configmap(
        "ns",
        "sec",
        &[
            ("X-Frame-Options", "DENY"),
            ("Content-Security-Policy", "default-src 'self'"),
        ],
    )));
    let t = check(&mut tr, &cache);
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        custom(&t, "a.example"),
        Some(crate::snapshot::CustomHeaders {
            headers: vec![
                pair("content-security-policy", "default-src 'self'"),
                pair("x-frame-options", "DENY"),
            ],
            denied: false,
        })
    );
    assert!(diags(&t).is_empty());

    // One header not allowed: none of them, and the routes answer 503.
    cache.apply(Object::ConfigMap(mk_configmap(
        "ns",
        "sec",
        &[("X-Frame-Options", "DENY"), ("Server", "mine")],
    )));
    let t = check(&mut tr, &cache);
    assert_eq!(custom(&t, "a.example"), denied);
    let message = &t.diagnostics[0].message;
    assert!(
        message.contains("\"server\" is not in the controller ConfigMap's global-allowed"),
        "{message}"
    );
    // The allowed list grows (a full translation): the same ConfigMap is now fine.
    cache.apply(controller_configmap(&[(
        "global-allowed-response-headers",
        "x-frame-options,server",
    )]));
    let t = check(&mut tr, &cache);
    assert_eq!(
        custom(&t, "a.example").map(|c| (c.denied, c.headers.len())),
        Some((false, 2))
    );
}

/// `auth-proxy-set-headers`: the ConfigMap it names (any namespace) is followed from absent
/// to present to edited, incrementally as from scratch; missing or holding a bad entry, the
/// routes stay but are denied (503) with a Warning.
#[test]
fn auth_proxy_set_headers_follow_their_configmap() {
    let s = settings();
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(class());
    objs.push(ing(mk_ingress("ns", "site")
        .annotation("auth-url", "http://auth.example/check")
        .annotation("auth-proxy-set-headers", "auth/hdrs")
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    let mut cache = ObjectCache::from_objects(objs);
    let mut tr = Translator::new(s.clone());
    let auth = |t: &Translation| {
        let ext = vhost(t, &exact("a.example")).routes[0]
            .target
            .policy
            .external_auth
            .clone()
            .expect("auth-url");
        (ext.denied, ext.proxy_set_headers.clone())
    };
    let check = |tr: &mut Translator, cache: &ObjectCache| {
        let t = tr.translate(cache);
        assert_eq!(t.snapshot.http, translate(cache, &s).snapshot.http);
        t
    };

    let t = check(&mut tr, &cache);
    assert_eq!(auth(&t), (true, Vec::new()), "missing ConfigMap");
    assert_eq!(
        diags(&t),
        vec![("site".into(), reason::AUTH_HEADERS_INVALID)]
    );
    cache.apply(Object::ConfigMap(mk_configmap(
        "auth",
        "hdrs",
        &[("X-Auth-Tenant", "blue"), ("X-Forwarded-Host", "")],
    )));
    let t = check(&mut tr, &cache);
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        auth(&t),
        (
            false,
            vec![pair("x-auth-tenant", "blue"), pair("x-forwarded-host", "")]
        )
    );
    assert!(diags(&t).is_empty());
    cache.apply(Object::ConfigMap(mk_configmap(
        "auth",
        "hdrs",
        &[("X-Auth-Tenant", "$remote_addr")],
    )));
    let t = check(&mut tr, &cache);
    assert_eq!(auth(&t), (true, Vec::new()), "an nginx variable");
    assert!(t.diagnostics[0].message.contains("nginx variable"));
}

/// `--default-ssl-certificate`: the Secret is read into `tls.default` and followed (absent,
/// present, replaced), incrementally as from scratch; while it cannot be used there is a
/// Warning on it and no default, so the proxy's own stays.
#[test]
fn the_default_certificate_secret_is_followed() {
    let mut s = settings();
    s.default_certificate = Some(NamespacedName {
        namespace: "ingress".into(),
        name: "wildcard".into(),
    });
    let objs = plain_ingress_objects();
    let mut cache = ObjectCache::from_objects(objs);
    let mut tr = Translator::new(s.clone());
    let check = |tr: &mut Translator, cache: &ObjectCache| {
        let t = tr.translate(cache);
        assert_eq!(t.snapshot.tls, translate(cache, &s).snapshot.tls);
        t
    };
    let t = check(&mut tr, &cache);
    assert_eq!(t.snapshot.tls.default, None);
    assert_eq!(
        t.diagnostics
            .iter()
            .map(|d| (d.object.to_string(), d.reason))
            .collect::<Vec<_>>(),
        vec![(
            "Secret ingress/wildcard".to_string(),
            reason::TLS_SECRET_INVALID
        )]
    );

    let (cert, key) = self_signed(&["*.example"]);
    cache.apply(Object::Secret(mk_tls_secret(
        "ingress", "wildcard", &cert, &key,
    )));
    let t = check(&mut tr, &cache);
    let first = t.snapshot.tls.default.clone().expect("read");
    assert_eq!(first.secret.name, "wildcard");
    assert!(first.hosts.is_empty());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);

    let (cert, key) = self_signed(&["*.example"]);
    cache.apply(Object::Secret(mk_tls_secret(
        "ingress", "wildcard", &cert, &key,
    )));
    let t = check(&mut tr, &cache);
    let second = t.snapshot.tls.default.clone().expect("read");
    assert_ne!(
        first.key.cert, second.key.cert,
        "a renewed certificate is taken"
    );
    // An unrelated Secret changes nothing.
    cache.apply(Object::Secret(mk_tls_secret("ns", "other", &cert, &key)));
    let t = check(&mut tr, &cache);
    assert!(t.snapshot.tls.default.is_some());
}

/// `app-root` is the host's, from the oldest main Ingress of the host that sets it, as
/// ingress-nginx renders it at server level: it holds even where another Ingress routes `/`.
#[test]
fn app_root_belongs_to_the_host() {
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(ing(mk_ingress("ns", "app")
        .created(1)
        .annotation("app-root", "/app")
        .host("a.example")
        .path("/app", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "site")
        .created(2)
        .annotation("app-root", "/other")
        .host("a.example")
        .path("/", "Prefix", "web", 80)
        .host("b.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "plain")
        .created(3)
        .host("c.example")
        .path("/", "Prefix", "web", 80)));
    let t = run(objs);
    let root = |h: &str| vhost(&t, &exact(h)).app_root.clone();
    assert_eq!(root("a.example").as_deref(), Some("/app"));
    assert_eq!(root("b.example").as_deref(), Some("/other"));
    assert_eq!(root("c.example"), None);
}

/// ingress-nginx's `config_hash` tells replicas running one configuration apart from those
/// that lag: the same objects give the same hash in another translation, and any change of
/// the configuration another.
#[test]
fn the_config_hash_follows_the_configuration_only() {
    let objects = || {
        let mut o = backend_objects("ns", "web", "10.0.0.1");
        o.push(ing(mk_ingress("ns", "web")
            .host("a.example")
            .path("/", "Prefix", "web", 80)));
        o
    };
    let first = run(objects()).snapshot;
    let again = run(objects()).snapshot;
    assert_eq!(first.config_hash(), again.config_hash());
    let mut other_path = objects();
    other_path.push(ing(mk_ingress("ns", "more")
        .host("a.example")
        .path("/more", "Prefix", "web", 80)));
    assert_ne!(first.config_hash(), run(other_path).snapshot.config_hash());
    let mut other_endpoint = backend_objects("ns", "web", "10.0.0.2");
    other_endpoint.push(ing(mk_ingress("ns", "web")
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    assert_ne!(
        first.config_hash(),
        run(other_endpoint).snapshot.config_hash()
    );
    assert!(first.config_hash() < 1 << 53, "a float holds it exactly");
}

/// ingress-nginx's `orphan_ingress`: per Ingress, a missing Service or port, and a Service
/// without endpoints, canaries included; an endpoint that appears clears it.
#[test]
fn orphan_ingresses_are_told_apart_by_missing_service_and_missing_endpoints() {
    use crate::proxy::orphans::{orphans, Orphan};
    let mut objs = backend_objects("ns", "web", "10.0.0.1");
    objs.push(Object::Service(
        mk_service("ns", "empty").port("http", 80, 8080).build(),
    ));
    objs.push(ing(mk_ingress("ns", "ok")
        .host("a.example")
        .path("/", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "ghost")
        .host("b.example")
        .path("/", "Prefix", "ghost", 80)
        .path("/x", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "starved")
        .host("c.example")
        .path("/", "Prefix", "empty", 80)
        .path("/y", "Prefix", "web", 80)));
    objs.push(ing(mk_ingress("ns", "both")
        .host("d.example")
        .path("/", "Prefix", "ghost", 80)
        .path("/e", "Prefix", "empty", 80)));
    objs.push(ing(mk_ingress("ns", "canary")
        .annotation("canary", "true")
        .annotation("canary-weight", "10")
        .host("a.example")
        .path("/", "Prefix", "empty", 80)));
    // A port the Service lacks: no endpoint, as ingress-nginx counts it.
    objs.push(ing(mk_ingress("ns", "portless")
        .host("g.example")
        .path("/", "Prefix", "web", 81)));
    // The host's fallback: this Ingress's `spec.defaultBackend`.
    objs.push(ing(mk_ingress("ns", "fallback")
        .host("f.example")
        .path("/x", "Prefix", "web", 80)
        .default_backend("empty", 80)));
    let o = |name: &str, no_service, no_endpoint| Orphan {
        namespace: "ns".into(),
        ingress: name.into(),
        no_service,
        no_endpoint,
    };
    let t = run(objs.clone());
    assert_eq!(
        orphans(&t.snapshot),
        vec![
            o("both", true, true),
            o("canary", false, true),
            o("fallback", false, true),
            o("ghost", true, false),
            o("ok", false, false),
            o("portless", false, true),
            o("starved", false, true),
        ]
    );
    objs.push(Object::EndpointSlice(
        mk_slice("ns", "empty-x", "empty")
            .port("http", 8080)
            .endpoint("10.0.0.2")
            .build(),
    ));
    let t = run(objs);
    assert_eq!(
        orphans(&t.snapshot),
        vec![
            o("both", true, false),
            o("canary", false, false),
            o("fallback", false, false),
            o("ghost", true, false),
            o("ok", false, false),
            o("portless", false, true),
            o("starved", false, false),
        ]
    );
}

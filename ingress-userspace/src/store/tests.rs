use std::net::SocketAddr;

use tokio::time::timeout;

use super::*;
use crate::{
    snapshot::HostMatch,
    source::{Key, Kind, Object},
    translate::testutil::*,
};

const WAIT: Duration = Duration::from_secs(5);

/// The next published translation, or `None` if there is none within `within`.
async fn next(
    rx: &mut watch::Receiver<Arc<Translation>>,
    within: Duration,
) -> Option<Arc<Translation>> {
    match timeout(within, rx.changed()).await {
        Ok(Ok(())) => Some(rx.borrow_and_update().clone()),
        _ => None,
    }
}

fn base_objects() -> Vec<SourceEvent> {
    vec![
        SourceEvent::Apply(Object::IngressClass(mk_class("xdp", CONTROLLER, false))),
        SourceEvent::Apply(Object::Service(
            mk_service("ns", "web").port("http", 80, 8080).build(),
        )),
        SourceEvent::Apply(Object::EndpointSlice(slice("10.0.0.1"))),
        SourceEvent::Apply(Object::Ingress(
            mk_ingress("ns", "a")
                .host("a.example")
                .path("/", "Prefix", "web", 80)
                .build(),
        )),
    ]
}

fn slice(ip: &str) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    mk_slice("ns", "web-x", "web")
        .port("http", 8080)
        .endpoint(ip)
        .build()
}

fn endpoints(t: &Translation) -> Vec<SocketAddr> {
    let vh = t
        .snapshot
        .http
        .hosts
        .iter()
        .find(|v| v.host == HostMatch::Exact("a.example".into()));
    vh.map(|v| v.routes[0].target.upstream.endpoints.clone())
        .unwrap_or_default()
}

async fn started(debounce: Duration) -> StoreHandle {
    let mut h = spawn(settings(), debounce, 1);
    for ev in base_objects().into_iter().chain([SourceEvent::Synced]) {
        h.events.send(ev).await.expect("store running");
    }
    let first = next(&mut h.translations, WAIT)
        .await
        .expect("first publish");
    assert_eq!(first.snapshot.generation, 1);
    h
}

#[tokio::test]
async fn nothing_is_published_before_every_source_synced() {
    let mut h = spawn(settings(), Duration::from_millis(10), 2);
    for ev in base_objects().into_iter().chain([SourceEvent::Synced]) {
        h.events.send(ev).await.expect("store running");
    }
    assert!(next(&mut h.translations, Duration::from_millis(300))
        .await
        .is_none());
    assert!(!*h.ready.borrow());
    h.events
        .send(SourceEvent::Synced)
        .await
        .expect("store running");
    let t = next(&mut h.translations, WAIT)
        .await
        .expect("published after the second Synced");
    assert_eq!(t.snapshot.generation, 1);
    assert_eq!(
        endpoints(&t),
        vec!["10.0.0.1:8080".parse::<SocketAddr>().expect("addr")]
    );
    timeout(WAIT, h.ready.wait_for(|r| *r))
        .await
        .expect("ready in time")
        .expect("ready");
}

#[tokio::test]
async fn no_sources_means_an_empty_first_snapshot_and_ready() {
    let mut h = spawn(settings(), Duration::from_millis(10), 0);
    let t = next(&mut h.translations, WAIT).await.expect("published");
    assert_eq!(t.snapshot.generation, 1);
    assert!(t.snapshot.http.hosts.is_empty());
    assert!(*h.ready.borrow());
}

/// On a multi-thread runtime the writer translates in place (`block_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_propagates() {
    let mut h = started(Duration::from_millis(20)).await;
    h.events
        .send(SourceEvent::Apply(Object::EndpointSlice(slice("10.0.0.2"))))
        .await
        .expect("send");
    let t = next(&mut h.translations, WAIT).await.expect("published");
    assert_eq!(t.snapshot.generation, 2);
    assert_eq!(
        endpoints(&t),
        vec!["10.0.0.2:8080".parse::<SocketAddr>().expect("addr")]
    );
    // Deletion propagates too: no endpoints, the route stays (503).
    let key = Key {
        kind: Kind::EndpointSlice,
        namespace: "ns".into(),
        name: "web-x".into(),
    };
    h.events.send(SourceEvent::Delete(key)).await.expect("send");
    let t = next(&mut h.translations, WAIT).await.expect("published");
    assert_eq!(t.snapshot.generation, 3);
    assert!(endpoints(&t).is_empty());
    assert_eq!(t.snapshot.http.hosts.len(), 1);
}

/// A snapshot that only EndpointSlices changed is marked so (ingress-nginx applies those
/// without a reload); the first one, and one after any other change, are not.
#[tokio::test]
async fn endpoint_only_changes_are_marked() {
    let mut h = spawn(settings(), Duration::from_millis(10), 1);
    for ev in base_objects().into_iter().chain([SourceEvent::Synced]) {
        h.events.send(ev).await.expect("store running");
    }
    let first = next(&mut h.translations, WAIT).await.expect("first");
    assert!(!first.snapshot.endpoints_only);
    h.events
        .send(SourceEvent::Apply(Object::EndpointSlice(slice("10.0.0.2"))))
        .await
        .expect("send");
    let t = next(&mut h.translations, WAIT).await.expect("published");
    assert!(t.snapshot.endpoints_only);
    h.events
        .send(SourceEvent::Apply(Object::Ingress(
            mk_ingress("ns", "a")
                .host("b.example")
                .path("/", "Prefix", "web", 80)
                .build(),
        )))
        .await
        .expect("send");
    let t = next(&mut h.translations, WAIT).await.expect("published");
    assert!(!t.snapshot.endpoints_only);
}

/// Standalone mode's endpoints live in a Service annotation: a change of that alone is an
/// endpoint change too, and one of anything else in the Service is not.
#[tokio::test]
async fn a_change_of_standalone_endpoints_alone_is_marked_too() {
    let standalone = crate::config::Settings {
        static_endpoints: true,
        ..settings()
    };
    let mut h = spawn(standalone, Duration::from_millis(10), 1);
    for ev in base_objects().into_iter().chain([SourceEvent::Synced]) {
        h.events.send(ev).await.expect("store running");
    }
    let first = next(&mut h.translations, WAIT).await.expect("first");
    assert!(!first.snapshot.endpoints_only);
    let service = |endpoints: &str, port: i32| {
        mk_service("ns", "web")
            .port("http", port, 8080)
            .annotation(crate::translate::STATIC_ENDPOINTS_ANNOTATION, endpoints)
            .build()
    };
    for (svc, endpoints_only) in [
        (service("127.0.0.1:9001", 80), true),
        (service("127.0.0.1:9002", 80), true),
        (service("127.0.0.1:9002", 81), false),
    ] {
        h.events
            .send(SourceEvent::Apply(Object::Service(svc)))
            .await
            .expect("send");
        let t = next(&mut h.translations, WAIT).await.expect("published");
        assert_eq!(t.snapshot.endpoints_only, endpoints_only);
    }
}

#[tokio::test]
async fn a_burst_is_coalesced_into_one_publish() {
    let mut h = started(Duration::from_millis(50)).await;
    // The test runtime is single-threaded: the writer cannot run before the next await, so
    // the whole burst is queued when it wakes up.
    for i in 0..200u32 {
        let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        h.events
            .try_send(SourceEvent::Apply(Object::EndpointSlice(slice(&ip))))
            .expect("queue has room");
    }
    let t = next(&mut h.translations, WAIT).await.expect("published");
    assert_eq!(t.snapshot.generation, 2);
    assert_eq!(
        endpoints(&t),
        vec!["10.1.0.200:8080".parse::<SocketAddr>().expect("addr")]
    );
    assert!(
        next(&mut h.translations, Duration::from_millis(300))
            .await
            .is_none(),
        "one publish only"
    );
}

#[tokio::test]
async fn changes_within_the_window_wait_for_its_end_together() {
    let debounce = Duration::from_millis(300);
    let mut h = started(debounce).await;
    // Isolated change (the window after the first publish has passed): not delayed.
    tokio::time::sleep(debounce + Duration::from_millis(50)).await;
    let sent = Instant::now();
    h.events
        .send(SourceEvent::Apply(Object::EndpointSlice(slice("10.0.0.2"))))
        .await
        .expect("send");
    let t = next(&mut h.translations, WAIT).await.expect("published");
    let published = Instant::now();
    assert!(
        published - sent < debounce / 2,
        "isolated change delayed {:?}",
        published - sent
    );
    assert_eq!(t.snapshot.generation, 2);
    // Changes right after a publish are held to the end of the window, then go out as one.
    for ip in ["10.0.0.3", "10.0.0.4", "10.0.0.5"] {
        h.events
            .send(SourceEvent::Apply(Object::EndpointSlice(slice(ip))))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = next(&mut h.translations, WAIT).await.expect("published");
    let waited = Instant::now() - published;
    assert_eq!(t.snapshot.generation, 3);
    assert_eq!(
        endpoints(&t),
        vec!["10.0.0.5:8080".parse::<SocketAddr>().expect("addr")]
    );
    assert!(
        waited >= debounce - Duration::from_millis(30),
        "published after {waited:?}"
    );
    assert!(
        waited < debounce * 3,
        "never much later than the window: {waited:?}"
    );
}

#[tokio::test]
async fn changes_invisible_to_translation_publish_nothing() {
    let mut h = started(Duration::from_millis(10)).await;
    // resourceVersion-only update.
    let mut same = mk_ingress("ns", "a")
        .host("a.example")
        .path("/", "Prefix", "web", 80)
        .build();
    same.metadata.resource_version = Some("42".into());
    h.events
        .send(SourceEvent::Apply(Object::Ingress(same)))
        .await
        .expect("send");
    // A foreign Ingress: translated, but the result is the same.
    let foreign = mk_ingress("ns", "other")
        .class("nginx")
        .host("b.example")
        .path("/", "Prefix", "web", 80)
        .build();
    h.events
        .send(SourceEvent::Apply(Object::Ingress(foreign)))
        .await
        .expect("send");
    // An unreferenced Secret.
    h.events
        .send(SourceEvent::Apply(Object::Secret(mk_secret(
            "ns",
            "s",
            &[("k", "v")],
        ))))
        .await
        .expect("send");
    assert!(next(&mut h.translations, Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(h.translations.borrow().snapshot.generation, 1);
}

#[tokio::test]
async fn replace_removes_objects_and_the_writer_stops_with_its_senders() {
    let mut h = started(Duration::from_millis(10)).await;
    h.events
        .send(SourceEvent::Replace(Kind::Ingress, Vec::new()))
        .await
        .expect("send");
    let t = next(&mut h.translations, WAIT).await.expect("published");
    assert!(t.snapshot.http.hosts.is_empty());
    assert!(t.owned_ingresses.is_empty());
    let StoreHandle { events, task, .. } = h;
    drop(events);
    timeout(WAIT, task)
        .await
        .expect("writer stops")
        .expect("no panic");
}

#[test]
fn only_new_diagnostics_are_logged() {
    use crate::{snapshot::ObjectRef, translate::reason};
    let d = |name: &str| {
        let object = ObjectRef {
            kind: "Ingress",
            namespace: "ns".into(),
            name: name.into(),
        };
        Diagnostic::new(object, reason::BACKEND_NOT_FOUND, "service ns/x not found")
    };
    let (a, b, c) = (d("a"), d("b"), d("c"));
    assert_eq!(new_diagnostics(&[], std::slice::from_ref(&a)), vec![&a]);
    let current = [a.clone(), b.clone(), c.clone()];
    assert_eq!(new_diagnostics(&[a.clone(), c.clone()], &current), vec![&b]);
    assert!(new_diagnostics(&current, &current).is_empty());
}

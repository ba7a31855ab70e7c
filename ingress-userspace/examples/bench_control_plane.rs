//! Control-plane benchmark: 10,000 Ingresses, 5,000 Services, 50,000 endpoints through the
//! store and the translator.
//!
//! Prints the full (cold) translation time (median of several runs), the latency of a single
//! endpoint change (event sent -> new translation observed on the watch channel, and event
//! sent -> the L7 proxy serving the new configuration; median and p99), and the process RSS.
//! Run in release mode:
//!
//! ```text
//! cargo run --release -p ingress-userspace --example bench_control_plane [-- --strict]
//! ```
//!
//! With `--strict` the exit status is 1 when a target (< 1 s, < 50 ms, < 300 MB) is missed.
use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use ingress::{
    apply::proxy::ProxyApplier,
    config::Settings,
    proxy::{Proxy, ProxyOptions},
    source::{Kind, Object, SourceEvent},
    store::{self, cache::SERVICE_NAME_LABEL, ObjectCache},
    translate::{self, Translation, Translator},
};
use k8s_openapi::{
    api::{
        core::v1::{Secret, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass,
            IngressClassSpec, IngressRule, IngressServiceBackend, IngressSpec, IngressTLS,
            ServiceBackendPort,
        },
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
    ByteString,
};
use tokio::sync::watch;

/// `--small` divides the object counts and changes by 10: the smoke run `cargo xtask test`
/// makes so this benchmark cannot rot unseen (its figures then mean nothing).
static DIVISOR: OnceLock<usize> = OnceLock::new();

fn scaled(n: usize) -> usize {
    n / *DIVISOR.get_or_init(|| {
        if std::env::args().any(|a| a == "--small") {
            10
        } else {
            1
        }
    })
}

fn ingresses() -> usize {
    scaled(10_000)
}

fn services() -> usize {
    scaled(5_000)
}

fn changes() -> usize {
    scaled(200)
}

const ENDPOINTS_PER_SERVICE: usize = 10;
const NAMESPACES: usize = 50;
const FULL_RUNS: usize = 5;
const DEBOUNCE: Duration = Duration::from_millis(50);
const CONTROLLER: &str = "ingress.example.dev/xdp-ingress";

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        resource_version: Some("1".into()),
        ..Default::default()
    }
}

fn ns_of(i: usize) -> String {
    format!("bench-{}", i % NAMESPACES)
}

fn service(i: usize) -> Service {
    Service {
        metadata: meta(&ns_of(i), &format!("svc-{i}")),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("web".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The slice of service `i`; `variant` shifts one address so that changes are real.
fn slice(i: usize, variant: usize) -> EndpointSlice {
    let mut m = meta(&ns_of(i), &format!("svc-{i}-abcde"));
    m.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_owned(),
        format!("svc-{i}"),
    )]));
    let endpoints = (0..ENDPOINTS_PER_SERVICE)
        .map(|j| {
            let idx = i * ENDPOINTS_PER_SERVICE + j + if j == 0 { variant * 1_000_000 } else { 0 };
            let ip = format!(
                "10.{}.{}.{}",
                (idx >> 16) & 0xff,
                (idx >> 8) & 0xff,
                idx & 0xff
            );
            Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(format!("node-{}", j % 20)),
                ..Default::default()
            }
        })
        .collect();
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

fn backend(svc: usize) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: format!("svc-{svc}"),
            port: Some(ServiceBackendPort {
                number: Some(80),
                name: None,
            }),
        }),
        resource: None,
    }
}

fn path(p: &str, svc: usize) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(p.into()),
        path_type: "Prefix".into(),
        backend: backend(svc),
    }
}

fn ingress(k: usize) -> Ingress {
    let ns = ns_of(k);
    let mut m = meta(&ns, &format!("ing-{k}"));
    if k.is_multiple_of(7) {
        m.annotations = Some(BTreeMap::from([
            (
                "nginx.ingress.kubernetes.io/limit-rps".to_owned(),
                "20".to_owned(),
            ),
            (
                "nginx.ingress.kubernetes.io/proxy-body-size".to_owned(),
                "8m".to_owned(),
            ),
            (
                "nginx.ingress.kubernetes.io/ssl-redirect".to_owned(),
                "false".to_owned(),
            ),
        ]));
    }
    let host = format!("h{k}.bench.example");
    let tls = k.is_multiple_of(10).then(|| {
        vec![IngressTLS {
            hosts: Some(vec![host.clone()]),
            secret_name: Some("tls".into()),
        }]
    });
    Ingress {
        metadata: m,
        spec: Some(IngressSpec {
            ingress_class_name: Some("xdp".into()),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![
                        path("/", k % services()),
                        path("/api", (k + NAMESPACES) % services()),
                    ],
                }),
            }]),
            tls,
            default_backend: None,
        }),
        status: None,
    }
}

fn objects() -> Vec<Object> {
    let ck = rcgen::generate_simple_self_signed(vec!["*.bench.example".to_owned()]).expect("rcgen");
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let mut out = vec![Object::IngressClass(IngressClass {
        metadata: ObjectMeta {
            name: Some("xdp".into()),
            ..Default::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.into()),
            parameters: None,
        }),
    })];
    for n in 0..NAMESPACES {
        out.push(Object::Secret(Secret {
            metadata: meta(&ns_of(n), "tls"),
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("tls.crt".to_owned(), ByteString(cert.clone().into_bytes())),
                ("tls.key".to_owned(), ByteString(key.clone().into_bytes())),
            ])),
            ..Default::default()
        }));
    }
    out.extend((0..services()).map(|i| Object::Service(service(i))));
    out.extend((0..services()).map(|i| Object::EndpointSlice(slice(i, 0))));
    out.extend((0..ingresses()).map(|k| Object::Ingress(ingress(k))));
    out
}

fn settings() -> Settings {
    Settings {
        controller_name: CONTROLLER.into(),
        ingress_class: "xdp".into(),
        ..Default::default()
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let idx = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx]
}

/// (VmRSS, VmHWM) in MiB from /proc/self/status.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn wait_generation(
    rx: &mut watch::Receiver<Arc<Translation>>,
    generation: u64,
) -> Arc<Translation> {
    loop {
        tokio::time::timeout(Duration::from_secs(30), rx.changed())
            .await
            .expect("a translation within 30 s")
            .expect("store running");
        let t = rx.borrow_and_update().clone();
        if t.snapshot.generation >= generation {
            return t;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The allocator `ingressd` runs with, so memory and timings are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let strict = std::env::args().any(|a| a == "--strict");
    println!(
        "control-plane bench: {} Ingresses, {} Services, {} endpoints, debounce {} ms",
        ingresses(),
        services(),
        services() * ENDPOINTS_PER_SERVICE,
        DEBOUNCE.as_millis()
    );

    // Store: initial sync, then isolated single-endpoint changes.
    let objs = objects();
    let mut by_kind: BTreeMap<Kind, Vec<Object>> = BTreeMap::new();
    for o in objs {
        let kind = match &o {
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
        };
        by_kind.entry(kind).or_default().push(o);
    }
    let mut h = store::spawn(settings(), DEBOUNCE, 1);
    let started = Instant::now();
    for (kind, list) in by_kind {
        h.events
            .send(SourceEvent::Replace(kind, list))
            .await
            .expect("store running");
    }
    h.events
        .send(SourceEvent::Synced)
        .await
        .expect("store running");
    let first = wait_generation(&mut h.translations, 1).await;
    let sync = started.elapsed();
    let routes: usize = first
        .snapshot
        .http
        .hosts
        .iter()
        .map(|v| v.routes.len())
        .sum();
    println!(
        "initial sync through the store: {:.1} ms ({} hosts, {routes} routes, {} certs, {} diagnostics)",
        ms(sync),
        first.snapshot.http.hosts.len(),
        first.snapshot.tls.certs.len(),
        first.diagnostics.len()
    );
    assert!(
        first.diagnostics.is_empty(),
        "bench objects must be valid: {:?}",
        &first.diagnostics[..1]
    );
    // The L7 proxy the snapshots are applied to, as the app does after each translation.
    let proxy = Proxy::new(ProxyOptions::default()).expect("proxy");
    let applier = ProxyApplier::new(proxy);
    let t0 = Instant::now();
    applier.apply(&first.snapshot);
    println!("initial proxy apply: {:.1} ms", ms(t0.elapsed()));
    // Worked out after every apply that changes more than endpoints, on a thread of its own.
    let t0 = Instant::now();
    let hash = first.snapshot.config_hash();
    println!(
        "config_hash of the full snapshot: {:.1} ms ({hash:x})",
        ms(t0.elapsed())
    );
    // Worked out at every /metrics scrape (not on the apply path).
    let t0 = Instant::now();
    let orphans = ingress::proxy::orphans::orphans(&first.snapshot);
    println!(
        "orphan_ingress of the full snapshot: {:.2} ms ({} Ingresses)",
        ms(t0.elapsed()),
        orphans.len()
    );
    drop(first);

    let mut latencies = Vec::with_capacity(changes());
    let mut applied = Vec::with_capacity(changes());
    let mut generation = 1;
    for n in 0..changes() {
        // Isolated changes: outside the previous change's debounce window.
        tokio::time::sleep(DEBOUNCE + Duration::from_millis(5)).await;
        let svc = (n * 7919) % services();
        let sent = Instant::now();
        h.events
            .send(SourceEvent::Apply(Object::EndpointSlice(slice(svc, n + 1))))
            .await
            .expect("store running");
        generation += 1;
        let t = wait_generation(&mut h.translations, generation).await;
        latencies.push(sent.elapsed());
        assert_eq!(t.snapshot.generation, generation, "one publish per change");
        applier.apply(&t.snapshot);
        applied.push(sent.elapsed());
    }
    let change_median = median(&mut latencies);
    let change_p90 = percentile(&mut latencies, 0.90);
    let change_p99 = percentile(&mut latencies, 0.99);
    println!(
        "single endpoint change, event -> translation observed ({} changes): \
         median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        changes(),
        ms(change_median),
        ms(change_p90),
        ms(change_p99),
        ms(*latencies.last().expect("changes"))
    );
    let applied_p99 = percentile(&mut applied, 0.99);
    println!(
        "single endpoint change, event -> L7 proxy serving it ({} changes): \
         median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        changes(),
        ms(median(&mut applied)),
        ms(applied_p99),
        ms(*applied.last().expect("changes"))
    );

    let (rss, hwm) = memory_mib();
    println!("memory with the store loaded: VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB");
    drop(h);

    // Full translation from scratch, outside the store.
    let cache = ObjectCache::from_objects(objects());
    let s = settings();
    let mut full = Vec::new();
    for _ in 0..FULL_RUNS {
        let t0 = Instant::now();
        let t = translate::translate(&cache, &s);
        full.push(t0.elapsed());
        drop(t);
    }
    let full_median = median(&mut full);
    let mut tr = Translator::new(s.clone());
    tr.translate(&cache);
    let mut warm = Vec::new();
    for _ in 0..FULL_RUNS {
        let t0 = Instant::now();
        let t = tr.translate(&cache);
        warm.push(t0.elapsed());
        drop(t);
    }
    let mut cache = cache;
    let mut single = Vec::new();
    for n in 0..changes() {
        cache.apply(Object::EndpointSlice(slice((n * 7919) % services(), n + 1)));
        let t0 = Instant::now();
        let t = tr.translate(&cache);
        single.push(t0.elapsed());
        drop(t);
    }
    println!(
        "translation only: from scratch (median of {FULL_RUNS}) {:.1} ms; with memory, nothing changed {:.1} ms; one endpoint changed {:.1} ms",
        ms(full_median),
        ms(median(&mut warm)),
        ms(median(&mut single))
    );

    let checks = [
        ("full translate < 1 s", full_median < Duration::from_secs(1)),
        (
            "endpoint change p99 < 50 ms",
            change_p99 < Duration::from_millis(50),
        ),
        (
            "endpoint change applied end to end p99 < 100 ms",
            applied_p99 < Duration::from_millis(100),
        ),
        ("RSS < 300 MB", rss < 300.0),
    ];
    let mut ok = true;
    for (name, pass) in checks {
        println!("{} {name}", if pass { "PASS" } else { "FAIL" });
        ok &= pass;
    }
    if strict && !ok {
        std::process::exit(1);
    }
}

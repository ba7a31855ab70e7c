//! Kubernetes Events for translation diagnostics: every diagnostic that appears in a new
//! translation becomes one `events.k8s.io/v1` Warning Event on the object it names, so
//! `kubectl describe ingress` shows why a rule was dropped.
//!
//! Only the leader records Events, so replicas do not repeat each other. Diagnostics are
//! diffed against the last translation processed while leading: a diagnostic that persists
//! is reported once, and a new leader reports what is current once. On top of that a
//! [`Limiter`] suppresses the same diagnostic within `dedup_window`, caps Events per object
//! per window and caps all Events per minute, so a flapping object cannot flood the API.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, ObjectReference, Secret, Service},
        discovery::v1::EndpointSlice,
        events::v1::Event,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    snapshot::ObjectRef,
    translate::{Diagnostic, Translation},
};

/// What makes two diagnostics the same report.
type DiagKey = (ObjectRef, &'static str, String);

fn key(d: &Diagnostic) -> DiagKey {
    (d.object.clone(), d.reason, d.message.clone())
}

/// `action` of our Events.
pub const ACTION: &str = "Translate";
/// API limit on `note`, in bytes.
const NOTE_LIMIT: usize = 1024;
/// API limit on `reportingInstance`, in bytes.
const INSTANCE_LIMIT: usize = 128;
/// Longest object-name part of an Event name, leaving room for the unique suffix.
const NAME_PREFIX_LIMIT: usize = 230;
/// Per request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Who reports and how much.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// `reportingController`: the controller name (a qualified name such as `example.dev/x`).
    pub controller: String,
    /// `reportingInstance`: this replica's identity.
    pub instance: String,
    /// The same diagnostic on the same object is reported at most once per window.
    pub dedup_window: Duration,
    /// At most this many Events per object per `dedup_window`.
    pub per_object_limit: u32,
    /// At most this many Events per minute in total.
    pub per_minute_limit: u32,
    /// How often diagnostics held back by the limits are tried again while they last.
    pub retry_deferred: Duration,
}

impl EventsConfig {
    /// 10 minute dedup window, 5 Events per object per window, 60 Events per minute.
    pub fn new(controller: impl Into<String>, instance: impl Into<String>) -> Self {
        EventsConfig {
            controller: controller.into(),
            instance: instance.into(),
            dedup_window: Duration::from_secs(600),
            per_object_limit: 5,
            per_minute_limit: 60,
            retry_deferred: Duration::from_secs(60),
        }
    }
}

/// Records Events for new diagnostics while `leader` is true, until `shutdown`. Translations
/// with snapshot generation 0 (the `Default` placeholder) are skipped.
pub async fn run(
    client: Client,
    config: EventsConfig,
    mut translations: watch::Receiver<Arc<Translation>>,
    mut leader: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut limiter = Limiter::new(&config);
    let mut previous: HashSet<DiagKey> = HashSet::new();
    // Diagnostics the limits held back: not in `previous`, so they are tried again (on a
    // timer, since nothing else may change) until posted or gone.
    let mut deferred = false;
    loop {
        let leading = *leader.borrow_and_update();
        let translation = translations.borrow_and_update().clone();
        if leading && translation.snapshot.generation != 0 {
            let now = Instant::now();
            limiter.prune(now);
            let fresh = translation
                .diagnostics
                .iter()
                .filter(|d| !previous.contains(&key(d)));
            let mut completed = true;
            let mut held_back: HashSet<DiagKey> = HashSet::new();
            for diagnostic in fresh {
                if !*leader.borrow() {
                    // Whoever leads now reports the rest.
                    completed = false;
                    break;
                }
                if !limiter.admit(diagnostic, now) {
                    if !limiter.is_recent(diagnostic, now) {
                        held_back.insert(key(diagnostic));
                    }
                    debug!(object = %diagnostic.object, reason = diagnostic.reason, "event suppressed");
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = record(&client, &config, diagnostic) => {}
                }
            }
            if completed {
                previous = translation
                    .diagnostics
                    .iter()
                    .map(key)
                    .filter(|k| !held_back.contains(k))
                    .collect();
            }
            deferred = !held_back.is_empty();
        }
        let retry = async {
            if deferred {
                tokio::time::sleep(config.retry_deferred).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = translations.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            () = retry => {}
        }
    }
}

/// Posts one Event; failures are logged, never retried (Events are best effort).
async fn record(client: &Client, config: &EventsConfig, diagnostic: &Diagnostic) {
    let object = &diagnostic.object;
    let regarding = match tokio::time::timeout(REQUEST_TIMEOUT, regarding(client, object)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            debug!(%object, "object gone; no event");
            return;
        }
        Ok(Err(error)) => {
            debug!(%object, %error, "looking up the event's object failed; reporting without uid");
            fallback_reference(object)
        }
        Err(_) => fallback_reference(object),
    };
    let event = build_event(config, diagnostic, regarding, Timestamp::now());
    let namespace = event
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api = Api::<Event>::namespaced(client.clone(), &namespace);
    match tokio::time::timeout(REQUEST_TIMEOUT, api.create(&PostParams::default(), &event)).await {
        Ok(Ok(_)) => debug!(%object, reason = diagnostic.reason, "event recorded"),
        Ok(Err(error)) => warn!(%object, %error, "recording event failed"),
        Err(_) => warn!(%object, "recording event timed out"),
    }
}

/// The Event for `diagnostic` on `regarding`, reported at `now`.
pub fn build_event(
    config: &EventsConfig,
    diagnostic: &Diagnostic,
    regarding: ObjectReference,
    now: Timestamp,
) -> Event {
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let prefix = truncate(&diagnostic.object.name, NAME_PREFIX_LIMIT).trim_end_matches(['.', '-']);
    let name = format!("{prefix}.{:x}", now.as_nanosecond());
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(ACTION.into()),
        reason: Some(diagnostic.reason.into()),
        note: Some(truncate(&diagnostic.message, NOTE_LIMIT).into()),
        type_: Some("Warning".into()),
        regarding: Some(regarding),
        reporting_controller: Some(config.controller.clone()),
        reporting_instance: Some(truncate(&config.instance, INSTANCE_LIMIT).into()),
        ..Default::default()
    }
}

/// Cuts `s` to at most `limit` bytes at a character boundary.
fn truncate(s: &str, limit: usize) -> &str {
    let mut end = s.len().min(limit);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A reference without uid: visible in `kubectl get events`, not in `describe`.
fn fallback_reference(object: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: api_version(object.kind).map(Into::into),
        kind: Some(object.kind.into()),
        namespace: Some(object.namespace.clone()).filter(|n| !n.is_empty()),
        name: Some(object.name.clone()),
        ..Default::default()
    }
}

fn api_version(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "Service" | "Secret" | "ConfigMap" => "v1",
        _ => return None,
    })
}

/// A full reference (with uid, which `kubectl describe` filters on) to the named object, or
/// `None` if it no longer exists. Reads metadata only, so Secrets' data is never fetched.
async fn regarding(
    client: &Client,
    object: &ObjectRef,
) -> Result<Option<ObjectReference>, kube::Error> {
    let (c, ns, name) = (
        client.clone(),
        object.namespace.as_str(),
        object.name.as_str(),
    );
    match object.kind {
        "Ingress" => reference::<Ingress>(Api::namespaced(c, ns), name).await,
        "IngressClass" => reference::<IngressClass>(Api::all(c), name).await,
        "Service" => reference::<Service>(Api::namespaced(c, ns), name).await,
        "EndpointSlice" => reference::<EndpointSlice>(Api::namespaced(c, ns), name).await,
        "Secret" => reference::<Secret>(Api::namespaced(c, ns), name).await,
        "ConfigMap" => reference::<ConfigMap>(Api::namespaced(c, ns), name).await,
        _ => Ok(Some(fallback_reference(object))),
    }
}

async fn reference<K>(api: Api<K>, name: &str) -> Result<Option<ObjectReference>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(meta) = api.get_metadata_opt(name).await? else {
        return Ok(None);
    };
    Ok(Some(ObjectReference {
        api_version: Some(K::api_version(&()).into()),
        kind: Some(K::kind(&()).into()),
        namespace: meta.metadata.namespace,
        name: meta.metadata.name,
        uid: meta.metadata.uid,
        resource_version: meta.metadata.resource_version,
        ..Default::default()
    }))
}

/// A counter over a fixed window.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u32,
}

impl Window {
    /// Counts one if under `limit` in the window of `length` containing `now`.
    fn take(&mut self, now: Instant, length: Duration, limit: u32) -> bool {
        if now.duration_since(self.start) >= length {
            *self = Window {
                start: now,
                count: 0,
            };
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

/// Dedup and rate limits for Events; memory is bounded by pruning on every translation.
#[derive(Debug)]
pub struct Limiter {
    dedup_window: Duration,
    per_object_limit: u32,
    per_minute_limit: u32,
    recent: HashMap<DiagKey, Instant>,
    per_object: HashMap<ObjectRef, Window>,
    global: Option<Window>,
}

impl Limiter {
    /// A limiter with the limits of `config`.
    pub fn new(config: &EventsConfig) -> Self {
        Limiter {
            dedup_window: config.dedup_window,
            per_object_limit: config.per_object_limit,
            per_minute_limit: config.per_minute_limit,
            recent: HashMap::new(),
            per_object: HashMap::new(),
            global: None,
        }
    }

    /// Drops what is older than the window.
    pub fn prune(&mut self, now: Instant) {
        let window = self.dedup_window;
        self.recent.retain(|_, at| now.duration_since(*at) < window);
        self.per_object
            .retain(|_, w| now.duration_since(w.start) < window);
    }

    /// Whether the same diagnostic was reported within the dedup window.
    pub fn is_recent(&self, diagnostic: &Diagnostic, now: Instant) -> bool {
        self.recent
            .get(&key(diagnostic))
            .is_some_and(|at| now.duration_since(*at) < self.dedup_window)
    }

    /// True if an Event for `diagnostic` may be sent now (and counts it).
    pub fn admit(&mut self, diagnostic: &Diagnostic, now: Instant) -> bool {
        let key = key(diagnostic);
        if self
            .recent
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < self.dedup_window)
        {
            return false;
        }
        let object = self
            .per_object
            .entry(diagnostic.object.clone())
            .or_insert(Window {
                start: now,
                count: 0,
            });
        let mut trial = *object;
        if !trial.take(now, self.dedup_window, self.per_object_limit) {
            return false;
        }
        let global = self.global.get_or_insert(Window {
            start: now,
            count: 0,
        });
        if !global.take(now, Duration::from_secs(60), self.per_minute_limit) {
            return false;
        }
        *object = trial;
        self.recent.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(name: &str, message: &str) -> Diagnostic {
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

    fn config() -> EventsConfig {
        EventsConfig {
            per_object_limit: 3,
            per_minute_limit: 4,
            ..EventsConfig::new("example.dev/ingressd", "pod-a")
        }
    }

    #[test]
    fn same_diagnostic_is_reported_once_per_window() {
        let mut l = Limiter::new(&config());
        let t0 = Instant::now();
        assert!(l.admit(&diag("web", "m"), t0));
        assert!(!l.admit(&diag("web", "m"), t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(601);
        l.prune(later);
        assert!(l.admit(&diag("web", "m"), later));
    }

    #[test]
    fn per_object_and_global_limits_hold() {
        let mut l = Limiter::new(&config());
        let t0 = Instant::now();
        let admitted = (0..10)
            .filter(|i| l.admit(&diag("web", &format!("m{i}")), t0))
            .count();
        assert_eq!(admitted, 3, "per object");
        assert!(l.admit(&diag("api", "x"), t0));
        assert!(!l.admit(&diag("db", "x"), t0), "global cap of 4 per minute");
        assert!(l.admit(&diag("db", "x"), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn event_body_follows_the_api_rules() {
        let cfg = config();
        let long = "é".repeat(600);
        let d = diag("web", &long);
        let at = Timestamp::from_second(1_700_000_000).unwrap_or_else(|e| panic!("{e}"));
        let ev = build_event(&cfg, &d, fallback_reference(&d.object), at);
        assert_eq!(ev.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(ev.metadata.name.as_deref(), Some("web.17979cfe362a0000"));
        assert_eq!(ev.note.as_deref().map(str::len), Some(1024));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(
            ev.reporting_controller.as_deref(),
            Some("example.dev/ingressd")
        );
        let r = ev.regarding.unwrap_or_default();
        assert_eq!(r.api_version.as_deref(), Some("networking.k8s.io/v1"));
        assert_eq!(truncate("aé", 2), "a");
        // Cut where the name's 230th character is a dash or dot: a DNS label cannot end so.
        for cut in ["-", ".", ".-", "-."] {
            let mut name = "a".repeat(230 - cut.len());
            name.push_str(cut);
            name.push_str("tail");
            let d = diag(&name, "m");
            let ev = build_event(&cfg, &d, fallback_reference(&d.object), at);
            let want = format!("{}.17979cfe362a0000", "a".repeat(230 - cut.len()));
            assert_eq!(ev.metadata.name.as_deref(), Some(want.as_str()), "{cut}");
        }
        let cluster = ObjectRef {
            kind: "IngressClass",
            namespace: String::new(),
            name: "x".into(),
        };
        let d = Diagnostic {
            object: cluster.clone(),
            reason: "R",
            message: "m".into(),
        };
        let ev = build_event(&cfg, &d, fallback_reference(&cluster), at);
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
    }
}

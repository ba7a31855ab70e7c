//! An in-process fake Kubernetes API server on loopback, for testing API clients (the
//! Kubernetes source, status writer, leader election, Events) without a real control plane.
//!
//! It speaks the real HTTP protocol over plain HTTP/1.1: LIST with `resourceVersion`, `limit`
//! and `continue`; WATCH (`?watch=true&resourceVersion=N`) as newline-delimited JSON events
//! replayed from history and then live, an `ERROR` event with a 410 Gone Status when the
//! requested version has been compacted away; GET (also as `PartialObjectMetadata`), POST, PUT
//! with `resourceVersion` optimistic concurrency, DELETE, and JSON merge PATCH on objects and
//! on the `status` subresource. Field selectors `metadata.name` / `metadata.namespace` (and
//! `type` on Secrets) and equality label selectors are honoured. Errors are `metav1.Status`
//! bodies.
//!
//! Tests drive it like another API client ([`FakeApi::apply`], [`FakeApi::delete`]), inject
//! faults ([`FakeApi::drop_watches`], [`FakeApi::expire_watches`], [`FakeApi::set_failing`],
//! [`FakeApi::set_stalled`], [`FakeApi::set_delay`]) and inspect every request received ([`FakeApi::requests`],
//! [`FakeApi::wait_for_request`]).
//!
//! Known simplifications: one global resourceVersion counter like etcd, but no admission, no
//! validation beyond names, no strategic-merge or apply patches (415), no server-side apply
//! field managers, and `events` of `v1` and `events.k8s.io/v1` are separate collections.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

/// A resource type the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ResourceType {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Has a `status` subresource: main-resource writes keep the old status.
    status: bool,
}

const TYPES: &[ResourceType] = &[
    rt("", "v1", "services", "Service", true, true),
    rt("", "v1", "pods", "Pod", true, true),
    rt("", "v1", "secrets", "Secret", true, false),
    rt("", "v1", "configmaps", "ConfigMap", true, false),
    rt("", "v1", "events", "Event", true, false),
    rt("", "v1", "namespaces", "Namespace", false, true),
    rt(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        true,
    ),
    rt(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        false,
    ),
    rt(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    rt("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    rt("events.k8s.io", "v1", "events", "Event", true, false),
];

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
        status,
    }
}

impl ResourceType {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn by_api_version_kind(api_version: &str, kind: &str) -> Option<usize> {
        TYPES
            .iter()
            .position(|t| t.api_version() == api_version && t.kind == kind)
    }

    fn by_path(group: &str, version: &str, plural: &str) -> Option<usize> {
        TYPES
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query, exactly as sent.
    pub uri: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub body: Bytes,
    /// When it was received.
    pub at: tokio::time::Instant,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// The decoded value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        parse_query(self.uri.split_once('?').map_or("", |(_, q)| q)).remove(name)
    }

    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// True for watch requests.
    pub fn is_watch(&self) -> bool {
        matches!(self.query("watch").as_deref(), Some("true" | "1"))
    }
}

/// Object identity in the store.
type ObjKey = (usize, String, String);

enum WatchFrame {
    Line(Bytes),
    /// Cut the connection without ending the chunked body.
    Abort,
}

struct WatchSub {
    ty: usize,
    namespace: Option<String>,
    selector: Selector,
    tx: mpsc::UnboundedSender<WatchFrame>,
}

struct HistoryEntry {
    rv: u64,
    ty: usize,
    event_type: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<ObjKey, Value>,
    rv: u64,
    /// Oldest version a watch may start from; older ones get 410 Gone.
    compacted: u64,
    history: Vec<HistoryEntry>,
    watches: Vec<WatchSub>,
    requests: Vec<RecordedRequest>,
    failing: Option<StatusCode>,
    /// New requests are held unanswered.
    stalled: bool,
    /// Requests held so far.
    held: usize,
    /// New requests are answered this late.
    delay: Option<Duration>,
    uid: u64,
}

/// The fake API server; shuts down (cutting every connection) when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeApi {
    /// Starts serving on 127.0.0.1 on an ephemeral port.
    pub async fn start() -> io::Result<FakeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            rv: 1000,
            ..Default::default()
        }));
        let accept = tokio::spawn(serve(listener, state.clone()));
        Ok(FakeApi {
            addr,
            state,
            accept,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates or replaces an object (with `apiVersion`, `kind`, `metadata.name` and, for
    /// namespaced kinds, `metadata.namespace`), as another client would; returns it as stored.
    /// Panics on an object the fake cannot store: that is a bug in the test.
    pub fn apply(&self, object: Value) -> Value {
        let ty = type_of(&object).unwrap_or_else(|| panic!("unknown apiVersion/kind: {object}"));
        let ns = str_at(&object, &["metadata", "namespace"]).unwrap_or_default();
        let name = str_at(&object, &["metadata", "name"])
            .unwrap_or_else(|| panic!("object without metadata.name: {object}"));
        let ns = if TYPES[ty].namespaced {
            ns
        } else {
            String::new()
        };
        let mut state = self.lock();
        let key = (ty, ns, name);
        let mut object = object;
        if let Some(old) = state.objects.get(&key) {
            copy_identity(old, &mut object);
            state.update(key, object)
        } else {
            state.create(key, object)
        }
    }

    /// Deletes an object; returns it if it existed.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let ty = ResourceType::by_api_version_kind(api_version, kind)?;
        let ns = if TYPES[ty].namespaced { namespace } else { "" };
        self.lock().remove((ty, ns.into(), name.into()))
    }

    /// One stored object.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let ty = ResourceType::by_api_version_kind(api_version, kind)?;
        let ns = if TYPES[ty].namespaced { namespace } else { "" };
        self.lock()
            .objects
            .get(&(ty, ns.into(), name.into()))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(ty) = ResourceType::by_api_version_kind(api_version, kind) else {
            return Vec::new();
        };
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == ty)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Cuts every open watch connection mid-stream, as a dropped TCP connection would.
    /// Clients resume from their last version, which is still in history.
    pub fn drop_watches(&self) {
        for w in self.lock().watches.drain(..) {
            let _ = w.tx.send(WatchFrame::Abort);
        }
    }

    /// Forgets history and sends every open watch an `ERROR` event with a 410 Gone Status,
    /// then ends it: clients must relist.
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        state.compact();
        let line = error_line(state.rv);
        for w in state.watches.drain(..) {
            let _ = w.tx.send(WatchFrame::Line(line.clone()));
        }
    }

    /// Forgets history: watches from a version older than the current one get 410 Gone.
    pub fn compact(&self) {
        self.lock().compact();
    }

    /// While true, every new request gets 503 ServiceUnavailable (which kube's client retries
    /// with backoff on its own).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.set_failing(unavailable.then_some(StatusCode::SERVICE_UNAVAILABLE));
    }

    /// While set, every new request fails with this status code.
    pub fn set_failing(&self, code: Option<StatusCode>) {
        self.lock().failing = code;
    }

    /// While true, every new request is recorded and then never answered (also not after
    /// this is turned off), as by a wedged API server or a black-holed connection: the client
    /// waits until it gives up.
    pub fn set_stalled(&self, stalled: bool) {
        self.lock().stalled = stalled;
    }

    /// While set, every new request is answered only after this delay, as by a slow or
    /// distant API server.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.lock().delay = delay;
    }

    /// How many requests have been held unanswered by [`FakeApi::set_stalled`].
    pub fn held_requests(&self) -> usize {
        self.lock().held
    }

    /// Watch connections currently open.
    pub fn open_watches(&self) -> usize {
        let mut state = self.lock();
        state.watches.retain(|w| !w.tx.is_closed());
        state.watches.len()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Waits until a request matching `pred` has been received; returns the first match.
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&RecordedRequest) -> bool,
    ) -> Result<RecordedRequest, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.lock().requests.iter().find(|r| pred(r)) {
                return Ok(r.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                let seen: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.uri))
                    .collect();
                return Err(format!(
                    "no matching request within {timeout:?}; seen: {seen:#?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `cond` holds for the fake's state as seen through `self`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&FakeApi) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !cond(self) {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    fn create(&mut self, key: ObjKey, mut object: Value) -> Value {
        let t = TYPES[key.0];
        self.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid);
        let rv = self.next_rv();
        set_type(&mut object, &t);
        let meta = meta_mut(&mut object);
        meta.insert("name".into(), key.2.clone().into());
        if t.namespaced {
            meta.insert("namespace".into(), key.1.clone().into());
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), uid.into());
        meta.insert(
            "creationTimestamp".into(),
            rfc3339(SystemTime::now()).into(),
        );
        meta.insert("resourceVersion".into(), rv.to_string().into());
        self.objects.insert(key.clone(), object.clone());
        self.publish(key.0, "ADDED", rv, object.clone());
        object
    }

    /// Stores `object` over the existing one; no-op writes change nothing (as the real server).
    fn update(&mut self, key: ObjKey, mut object: Value) -> Value {
        let t = TYPES[key.0];
        set_type(&mut object, &t);
        let Some(old) = self.objects.get(&key).cloned() else {
            return object;
        };
        meta_mut(&mut object).insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        if object == old {
            return old;
        }
        let rv = self.next_rv();
        meta_mut(&mut object).insert("resourceVersion".into(), rv.to_string().into());
        self.objects.insert(key.clone(), object.clone());
        self.publish(key.0, "MODIFIED", rv, object.clone());
        object
    }

    fn remove(&mut self, key: ObjKey) -> Option<Value> {
        let mut object = self.objects.remove(&key)?;
        let rv = self.next_rv();
        meta_mut(&mut object).insert("resourceVersion".into(), rv.to_string().into());
        self.publish(key.0, "DELETED", rv, object.clone());
        Some(object)
    }

    fn publish(&mut self, ty: usize, event_type: &'static str, rv: u64, object: Value) {
        let line = event_line(event_type, &object);
        self.watches.retain(|w| {
            if w.ty != ty || !w.matches(&object) {
                return !w.tx.is_closed();
            }
            w.tx.send(WatchFrame::Line(line.clone())).is_ok()
        });
        self.history.push(HistoryEntry {
            rv,
            ty,
            event_type,
            object,
        });
    }
}

impl WatchSub {
    fn matches(&self, object: &Value) -> bool {
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| str_at(object, &["metadata", "namespace"]).as_deref() == Some(ns));
        ns_ok && self.selector.matches(object)
    }
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event_type, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn error_line(rv: u64) -> Bytes {
    let status = status_json(
        StatusCode::GONE,
        "Expired",
        &format!("too old resource version: {rv}"),
    );
    event_line("ERROR", &status)
}

fn status_json(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

fn type_of(object: &Value) -> Option<usize> {
    ResourceType::by_api_version_kind(object["apiVersion"].as_str()?, object["kind"].as_str()?)
}

fn set_type(object: &mut Value, t: &ResourceType) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), t.api_version().into());
        map.insert("kind".into(), t.kind.into());
    }
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object.as_object_mut().unwrap_or_else(|| unreachable!());
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().unwrap_or_else(|| unreachable!())
}

/// Keeps server-owned metadata (uid, creation time) across a replace.
fn copy_identity(old: &Value, new: &mut Value) {
    for field in ["uid", "creationTimestamp"] {
        if let Some(v) = old["metadata"].get(field) {
            meta_mut(new).insert(field.into(), v.clone());
        }
    }
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(v, |v, p| v.get(p))?
        .as_str()
        .map(str::to_string)
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// `metadata.name` / `metadata.namespace` field selectors (and `type` on Secrets, as the real
/// server supports) and equality label selectors.
#[derive(Clone, Debug, Default)]
struct Selector {
    fields: Vec<(String, bool, String)>,
    labels: Vec<(String, bool, String)>,
}

impl Selector {
    fn parse(
        t: &ResourceType,
        fields: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Selector, String> {
        let terms = |s: Option<&str>| -> Result<Vec<(String, bool, String)>, String> {
            s.unwrap_or("")
                .split(',')
                .filter(|t| !t.trim().is_empty())
                .map(|t| {
                    let (k, eq, v) = if let Some((k, v)) = t.split_once("!=") {
                        (k, false, v)
                    } else if let Some((k, v)) = t.split_once("==") {
                        (k, true, v)
                    } else if let Some((k, v)) = t.split_once('=') {
                        (k, true, v)
                    } else {
                        return Err(format!("unsupported selector term {t:?}"));
                    };
                    Ok((k.trim().to_string(), eq, v.trim().to_string()))
                })
                .collect()
        };
        let fields = terms(fields)?;
        let supported = |k: &str| {
            k == "metadata.name" || k == "metadata.namespace" || (t.kind == "Secret" && k == "type")
        };
        if let Some((k, _, _)) = fields.iter().find(|(k, _, _)| !supported(k)) {
            return Err(format!("field label not supported: {k}"));
        }
        Ok(Selector {
            fields,
            labels: terms(labels)?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        let fields_ok = self.fields.iter().all(|(k, eq, v)| {
            let path: Vec<&str> = k.split('.').collect();
            let actual = str_at(object, &path).unwrap_or_default();
            (actual == *v) == *eq
        });
        let labels_ok = self.labels.iter().all(|(k, eq, v)| {
            let actual = object["metadata"]["labels"].get(k).and_then(Value::as_str);
            (actual == Some(v.as_str())) == *eq
        });
        fields_ok && labels_ok
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

type Body = BoxBody<Bytes, io::Error>;

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Connections live in this set, so aborting the accept task cuts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn full(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(code, &status_json(code, reason, message))
}

/// What a request path names.
struct Target {
    ty: usize,
    /// Namespace from the path (`None`: all namespaces or cluster-scoped).
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] => {
            (Some(ns.to_string()), *plural, tail.first(), tail.get(1))
        }
        [plural, tail @ ..] => (None, *plural, tail.first(), tail.get(1)),
        [] => return None,
    };
    let ty = ResourceType::by_path(group, version, plural)?;
    let status = match sub {
        None => false,
        Some(&"status") => true,
        Some(_) => return None,
    };
    Some(Target {
        ty,
        namespace,
        name: name.map(|n| n.to_string()),
        status,
    })
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let header = |h: http::header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let recorded = RecordedRequest {
        method: parts.method.clone(),
        uri: parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        content_type: header(http::header::CONTENT_TYPE),
        accept: header(http::header::ACCEPT),
        body,
        at: tokio::time::Instant::now(),
    };
    let (stalled, delay) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.requests.push(recorded.clone());
        st.held += usize::from(st.stalled);
        (st.stalled, st.delay)
    };
    if stalled {
        return std::future::pending().await;
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(code) = st.failing {
        let reason = match code {
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            _ => "InternalError",
        };
        return error(code, reason, "failure injected by the test");
    }
    let Some(target) = parse_path(recorded.path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let t = TYPES[target.ty];
    if t.namespaced != target.namespace.is_some() && target.name.is_some() {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "wrong scope for resource",
        );
    }
    let query = parse_query(recorded.uri.split_once('?').map_or("", |(_, q)| q));
    let key = |name: &str| {
        (
            target.ty,
            target.namespace.clone().unwrap_or_default(),
            name.to_string(),
        )
    };
    let not_found = |name: &str| {
        error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} \"{name}\" not found", t.plural),
        )
    };
    match (&parts.method, target.name.as_deref()) {
        (&Method::GET, None) => {
            let selector = match Selector::parse(
                &t,
                query.get("fieldSelector").map(String::as_str),
                query.get("labelSelector").map(String::as_str),
            ) {
                Ok(s) => s,
                Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                watch(&mut st, &target, selector, &query)
            } else {
                list(&st, &target, &selector, &query)
            }
        }
        (&Method::GET, Some(name)) => match st.objects.get(&key(name)) {
            None => not_found(name),
            Some(o)
                if recorded
                    .accept
                    .as_deref()
                    .is_some_and(|a| a.contains("as=PartialObjectMetadata")) =>
            {
                full(
                    StatusCode::OK,
                    &json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    }),
                )
            }
            Some(o) => full(StatusCode::OK, o),
        },
        (&Method::POST, None) => {
            let Some(ns) = target
                .namespace
                .clone()
                .or_else(|| (!t.namespaced).then(String::new))
            else {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "POST needs a namespace",
                );
            };
            let Ok(mut object) = serde_json::from_slice::<Value>(&recorded.body) else {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
            };
            if let Some(e) = check_type(&object, &t) {
                return e;
            }
            let name = match (
                str_at(&object, &["metadata", "name"]),
                str_at(&object, &["metadata", "generateName"]),
            ) {
                (Some(n), _) if !n.is_empty() => n,
                (_, Some(prefix)) => {
                    let n = format!("{prefix}{:05x}", st.uid + 1);
                    meta_mut(&mut object).insert("name".into(), n.clone().into());
                    n
                }
                _ => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "metadata.name: Required value",
                    )
                }
            };
            if let Some(body_ns) = str_at(&object, &["metadata", "namespace"]) {
                if t.namespaced && body_ns != ns {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "the namespace of the object does not match the namespace on the request",
                    );
                }
            }
            let key = (target.ty, ns, name.clone());
            if st.objects.contains_key(&key) {
                return error(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", t.plural),
                );
            }
            if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let created = st.create(key, object);
            full(StatusCode::CREATED, &created)
        }
        (&Method::PUT, Some(name)) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&recorded.body) else {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
            };
            if let Some(e) = check_type(&object, &t) {
                return e;
            }
            if str_at(&object, &["metadata", "name"]).as_deref() != Some(name) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the name of the object does not match the name on the URL",
                );
            }
            let Some(old) = st.objects.get(&key(name)).cloned() else {
                return not_found(name);
            };
            if let Some(e) = check_version(&object, &old, t.plural, name) {
                return e;
            }
            copy_identity(&old, &mut object);
            keep_status_split(&old, &mut object, t.status, target.status);
            let written = st.update(key(name), object);
            full(StatusCode::OK, &written)
        }
        (&Method::PATCH, Some(name)) => {
            let ct = recorded.content_type.as_deref().unwrap_or("");
            if !ct.starts_with("application/merge-patch+json") {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!("the fake API server only implements merge patches, not {ct:?}"),
                );
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&recorded.body) else {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "patch is not JSON");
            };
            let Some(old) = st.objects.get(&key(name)).cloned() else {
                return not_found(name);
            };
            if let Some(e) = check_version(&patch, &old, t.plural, name) {
                return e;
            }
            let mut object = old.clone();
            merge_patch(&mut object, &patch);
            copy_identity(&old, &mut object);
            keep_status_split(&old, &mut object, t.status, target.status);
            let written = st.update(key(name), object);
            full(StatusCode::OK, &written)
        }
        (&Method::DELETE, Some(name)) => match st.remove(key(name)) {
            Some(o) => full(StatusCode::OK, &o),
            None => not_found(name),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed",
        ),
    }
}

fn check_type(object: &Value, t: &ResourceType) -> Option<Response<Body>> {
    let ok = object["apiVersion"]
        .as_str()
        .is_none_or(|v| v == t.api_version())
        && object["kind"].as_str().is_none_or(|k| k == t.kind);
    (!ok).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "apiVersion/kind do not match the URL",
        )
    })
}

/// 409 if the body names a resourceVersion other than the stored one.
fn check_version(body: &Value, old: &Value, plural: &str, name: &str) -> Option<Response<Body>> {
    let want = str_at(body, &["metadata", "resourceVersion"])?;
    let have = str_at(old, &["metadata", "resourceVersion"]).unwrap_or_default();
    (want != have).then(|| {
        error(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
    })
}

/// With a status subresource, the main resource cannot change status and `/status` can change
/// only status.
fn keep_status_split(old: &Value, new: &mut Value, has_status: bool, via_status: bool) {
    if !has_status {
        return;
    }
    if via_status {
        let status = new.get("status").cloned();
        *new = old.clone();
        if let Some(map) = new.as_object_mut() {
            match status {
                Some(s) => map.insert("status".into(), s),
                None => map.remove("status"),
            };
        }
    } else if let Some(map) = new.as_object_mut() {
        match old.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }
}

fn list(
    st: &State,
    target: &Target,
    selector: &Selector,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let t = TYPES[target.ty];
    let (rv, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match token
            .split_once(':')
            .and_then(|(r, o)| Some((r.parse().ok()?, o.parse().ok()?)))
        {
            Some(p) => p,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                )
            }
        },
        None => (st.rv, 0usize),
    };
    let matching: Vec<Value> = st
        .objects
        .iter()
        .filter(|(k, v)| {
            k.0 == target.ty
                && target.namespace.as_ref().is_none_or(|ns| &k.1 == ns)
                && selector.matches(v)
        })
        .map(|(_, v)| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                // Items of a typed list carry no apiVersion/kind.
                m.remove("apiVersion");
                m.remove("kind");
            }
            v
        })
        .collect();
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let end = limit.map_or(matching.len(), |l| (offset + l).min(matching.len()));
    let items: Vec<Value> = matching.get(offset..end).unwrap_or_default().to_vec();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if end < matching.len() {
        metadata["continue"] = format!("{rv}:{end}").into();
    }
    full(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.kind),
            "apiVersion": t.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    )
}

fn watch(
    st: &mut State,
    target: &Target,
    selector: Selector,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = WatchSub {
        ty: target.ty,
        namespace: target.namespace.clone(),
        selector,
        tx,
    };
    let from = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    if from.is_empty() || from == "0" {
        // No version: current state as ADDED events, then changes.
        for (k, v) in &st.objects {
            if k.0 == sub.ty && sub.matches(v) {
                let _ = sub.tx.send(WatchFrame::Line(event_line("ADDED", v)));
            }
        }
        st.watches.push(sub);
    } else {
        let Ok(from) = from.parse::<u64>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "invalid resourceVersion",
            );
        };
        if from < st.compacted {
            let _ = sub.tx.send(WatchFrame::Line(error_line(from)));
            drop(sub);
        } else {
            for h in st.history.iter().filter(|h| h.rv > from && h.ty == sub.ty) {
                if sub.matches(&h.object) {
                    let _ = sub
                        .tx
                        .send(WatchFrame::Line(event_line(h.event_type, &h.object)));
                }
            }
            st.watches.push(sub);
        }
    }
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let frames = futures_util::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(WatchFrame::Line(b)) => Some((Ok(Frame::data(b)), Some(rx))),
                Some(WatchFrame::Abort) => Some((Err(io::Error::other("watch cut by test")), None)),
                None => None,
            },
            _ = tokio::time::sleep_until(deadline) => None,
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut v = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge_patch(&mut v, &json!({"a": {"b": null, "c": [3]}, "e": "x"}));
        assert_eq!(v, json!({"a": {"c": [3]}, "d": 1, "e": "x"}));
    }

    #[test]
    fn paths_and_queries_parse() {
        let t = parse_path("/apis/networking.k8s.io/v1/namespaces/ns/ingresses/web/status")
            .unwrap_or_else(|| panic!("no target"));
        assert_eq!(TYPES[t.ty].kind, "Ingress");
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref(), t.status),
            (Some("ns"), Some("web"), true)
        );
        let t = parse_path("/api/v1/secrets").unwrap_or_else(|| panic!("no target"));
        assert_eq!(
            (TYPES[t.ty].kind, t.namespace, t.name),
            ("Secret", None, None)
        );
        assert!(parse_path("/api/v1/nothings").is_none());
        let q = parse_query("fieldSelector=metadata.name%3Dtcp&watch=true");
        assert_eq!(
            q.get("fieldSelector").map(String::as_str),
            Some("metadata.name=tcp")
        );
        assert_eq!(
            rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}

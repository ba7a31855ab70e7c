//! Manifest-directory source (standalone mode): reads *.yaml, *.yml, *.json and watches for changes.
//!
//! Every such file directly in the directory (not in subdirectories; names starting with `.`
//! are skipped) is read as Kubernetes manifests: multi-document YAML (`---`), or JSON holding
//! one object; in both, a `kind: List` contributes its `items`. Objects are dispatched on
//! `apiVersion` + `kind`: `networking.k8s.io/v1` Ingress and IngressClass, `v1` Service,
//! Secret and ConfigMap, `discovery.k8s.io/v1` EndpointSlice; their removed `v1beta1` versions
//! are rejected with what to write instead, other kinds are ignored (debug log). A missing namespace means `default`, as with kubectl; a Secret's `stringData` is
//! merged into `data`, as the API server does.
//!
//! There is no EndpointSlice controller in standalone mode: write EndpointSlices, or annotate
//! a Service with [`STATIC_ENDPOINTS_ANNOTATION`], e.g.
//! `ingress.example.dev/endpoints: "127.0.0.1:8080,127.0.0.1:8081"`: those addresses are ready
//! endpoints of every port of the Service (the app enables this with
//! `Settings::static_endpoints` in this mode).
//!
//! The directory is watched (notify), and read again every [`RESYNC`] for what a watch misses
//! (symlinks leading out of it). After a change settles, files are re-read; only files
//! whose bytes changed are parsed again, and the store gets `Apply`/`Delete` for objects that
//! changed. As with `kubectl apply -f`, each document (and each item of a `kind: List`) stands
//! alone: a bad one is reported (error log naming the file, the document and, if readable, its
//! kind and name) without taking the others down, and when its kind, namespace and name can
//! be read the version of that object the file gave before is kept. Only a file of which no
//! document is YAML (or that is not JSON) is reported as a whole and keeps all its previous
//! objects. A deleted file's objects are deleted. When two files define
//! the same object, the first file in name order wins (warning). The first full read is sent
//! as one `Replace` per kind, then `Synced`.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ByteString,
};
use notify::Watcher as _;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

pub use crate::translate::STATIC_ENDPOINTS_ANNOTATION;

use super::{Key, Kind, Object, SourceEvent};
use crate::store::cache::key_of;

/// How long the directory must be quiet after a change before it is re-read (editors write
/// files in several steps).
pub const SETTLE: Duration = Duration::from_millis(100);
/// Longest a re-read waits for the directory to go quiet after a first change.
pub const SETTLE_MAX: Duration = Duration::from_secs(2);

/// How often the whole directory is read again even when the watch saw nothing (unchanged
/// files are compared by bytes, not parsed again).
pub const RESYNC: Duration = Duration::from_secs(30);

/// Largest manifest file read, so a stray huge file cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// What can go wrong reading manifests.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The directory itself cannot be listed.
    #[error("cannot read manifest directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The directory cannot be watched.
    #[error("cannot watch manifest directory {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    /// One file is unusable; its previous objects are kept.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// One document of a file is unusable; the file's other documents are applied.
    #[error("{}: {reason}", path.display())]
    Document { path: PathBuf, reason: String },
}

/// File formats by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// The format of a manifest file, or `None` if the file is not one.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        if name.starts_with('.') {
            return None;
        }
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// What one manifest text defines.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Objects of the usable documents.
    pub objects: Vec<Object>,
    /// The unusable documents (and List items), each on its own.
    pub rejected: Vec<Rejected>,
}

/// One unusable document.
#[derive(Debug)]
pub struct Rejected {
    /// Its kind, namespace and name, when readable.
    pub key: Option<Key>,
    /// Why, naming the document (`document 2 (Ingress web): ...`).
    pub reason: String,
}

/// Parses manifest text. Each document, and each item of a `kind: List`, stands alone: a bad
/// one is rejected without its neighbours. The text fails as a whole only when it is not JSON
/// (JSON holds one object), or when none of its YAML documents is YAML.
pub fn parse_manifests(text: &str, format: Format) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    match format {
        Format::Json => {
            let doc = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
            collect(doc, "document 1", &mut out, true);
        }
        Format::Yaml => {
            let mut any_document = false;
            let mut first_error = None;
            for (i, (line, chunk)) in yaml_documents(text).into_iter().enumerate() {
                let label = format!("document {}", i + 1);
                let mut docs = Vec::new();
                // A chunk normally holds one document, but takes any the splitter missed.
                let parsed = serde_yaml::Deserializer::from_str(chunk).try_for_each(|d| {
                    docs.push(serde_json::Value::deserialize(d)?);
                    Ok::<_, serde_yaml::Error>(())
                });
                match parsed {
                    Ok(()) => {
                        for doc in docs {
                            any_document |= !doc.is_null();
                            collect(doc, &label, &mut out, true);
                        }
                    }
                    Err(e) => {
                        // serde_yaml counts lines from the start of the chunk.
                        let reason = format!("{label} (from line {line}): invalid YAML: {e}");
                        first_error.get_or_insert_with(|| reason.clone());
                        out.rejected.push(Rejected { key: None, reason });
                    }
                }
            }
            if let (false, Some(reason)) = (any_document, first_error) {
                return Err(reason);
            }
        }
    }
    Ok(out)
}

/// Splits YAML text at its `---` lines (optionally followed by a comment), as kubectl's YAML
/// reader does, so that a syntax error stays within its document. Returns each document with
/// the number of its first line.
fn yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let is_separator = |line: &str| {
        line.strip_prefix("---").is_some_and(|rest| {
            let rest = rest.trim();
            rest.is_empty() || rest.starts_with('#')
        })
    };
    let mut out = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 1, 0);
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if is_separator(line) {
            out.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start..]));
    // Blank lines or comments before the first `---` are no document of their own.
    let blank = |chunk: &str| {
        chunk.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        })
    };
    if out.len() > 1 && blank(out[0].1) {
        out.remove(0);
    }
    out
}

/// The kinds read from manifests, by `apiVersion` and `kind`.
fn kind_of(api_version: &str, kind: &str) -> Option<Kind> {
    Some(match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => Kind::Ingress,
        ("networking.k8s.io/v1", "IngressClass") => Kind::IngressClass,
        ("v1", "Service") => Kind::Service,
        ("v1", "Secret") => Kind::Secret,
        ("v1", "ConfigMap") => Kind::ConfigMap,
        ("discovery.k8s.io/v1", "EndpointSlice") => Kind::EndpointSlice,
        _ => return None,
    })
}

/// A removed API version of a kind read here (`extensions/v1beta1` Ingress and the like).
fn retired_version(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        (
            "extensions/v1beta1" | "networking.k8s.io/v1beta1",
            "Ingress" | "IngressClass"
        ) | ("discovery.k8s.io/v1beta1", "EndpointSlice")
    )
}

/// The `apiVersion` to write a kind read here as.
fn current_version(kind: &str) -> &'static str {
    match kind {
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "networking.k8s.io/v1",
    }
}

/// The identity a document claims, read without validating the rest of it (with the same
/// default namespace as [`fill_namespace`]).
fn identity(doc: &serde_json::Value) -> Option<Key> {
    let kind = kind_of(doc.get("apiVersion")?.as_str()?, doc.get("kind")?.as_str()?)?;
    let name = doc
        .pointer("/metadata/name")?
        .as_str()
        .filter(|n| !n.is_empty())?;
    let namespace = match (kind, doc.pointer("/metadata/namespace")) {
        (Kind::IngressClass, _) => "",
        (_, None | Some(serde_json::Value::Null)) => "default",
        (_, Some(serde_json::Value::String(ns))) if ns.is_empty() => "default",
        (_, Some(serde_json::Value::String(ns))) => ns,
        // Not a string: the document does not say which object it is.
        (_, Some(_)) => return None,
    };
    Some(Key {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Adds a document's object to `out`, or its rejection.
fn collect(doc: serde_json::Value, label: &str, out: &mut Parsed, allow_list: bool) {
    if doc.is_null() {
        return; // empty YAML document, e.g. a trailing `---`
    }
    // Read before the document is consumed: it says which object a rejection is about.
    let key = identity(&doc);
    if let Err(reason) = convert(doc, label, out, allow_list) {
        out.rejected.push(Rejected { key, reason });
    }
}

fn convert(
    doc: serde_json::Value,
    label: &str,
    out: &mut Parsed,
    allow_list: bool,
) -> Result<(), String> {
    let api_version = doc
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let kind = doc
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    if api_version.is_empty() || kind.is_empty() {
        return Err(format!("{label}: missing apiVersion or kind"));
    }
    let name = doc
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    let what = format!("{label} ({kind} {name})");
    if allow_list && api_version == "v1" && kind == "List" {
        let items = match doc.get("items") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(_) => return Err(format!("{label}: List items must be an array")),
        };
        // Each item stands alone, as with `kubectl apply`.
        for (j, item) in items.into_iter().enumerate() {
            collect(item, &format!("{label} item {}", j + 1), out, false);
        }
        return Ok(());
    }
    let obj = match kind_of(&api_version, &kind) {
        Some(Kind::Ingress) => Object::Ingress(typed::<Ingress>(doc, &what)?),
        Some(Kind::IngressClass) => Object::IngressClass(typed::<IngressClass>(doc, &what)?),
        Some(Kind::Service) => Object::Service(typed::<Service>(doc, &what)?),
        Some(Kind::Secret) => Object::Secret(normalize_secret(typed::<Secret>(doc, &what)?)),
        Some(Kind::ConfigMap) => Object::ConfigMap(typed::<ConfigMap>(doc, &what)?),
        Some(Kind::EndpointSlice) => Object::EndpointSlice(typed::<EndpointSlice>(doc, &what)?),
        None if retired_version(&api_version, &kind) => {
            // Ignoring it would leave its hosts unserved without a word.
            return Err(format!(
                "{what}: {api_version} is no longer served (removed in Kubernetes 1.22 and \
                 1.25); write it as {}",
                current_version(&kind)
            ));
        }
        None => {
            debug!(
                api_version,
                kind, name, "manifest kind not watched; ignored"
            );
            return Ok(());
        }
    };
    out.objects.push(fill_namespace(obj, &what)?);
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(doc: serde_json::Value, what: &str) -> Result<T, String> {
    serde_json::from_value(doc).map_err(|e| format!("{what}: {e}"))
}

/// The API server's defaults that matter here: namespace `default`; required name.
fn fill_namespace(mut obj: Object, what: &str) -> Result<Object, String> {
    let (meta, namespaced): (&mut ObjectMeta, bool) = match &mut obj {
        Object::Ingress(o) => (&mut o.metadata, true),
        Object::IngressClass(o) => (&mut o.metadata, false),
        Object::Service(o) => (&mut o.metadata, true),
        Object::EndpointSlice(o) => (&mut o.metadata, true),
        Object::Secret(o) => (&mut o.metadata, true),
        Object::ConfigMap(o) => (&mut o.metadata, true),
    };
    if meta.name.as_deref().is_none_or(str::is_empty) {
        return Err(format!("{what}: metadata.name is required"));
    }
    if namespaced {
        if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some("default".into());
        }
    } else {
        meta.namespace = None;
    }
    Ok(obj)
}

/// `stringData` is write-only sugar for `data`, and wins over it (as in the API server).
fn normalize_secret(mut s: Secret) -> Secret {
    if let Some(sd) = s.string_data.take() {
        let data = s.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in sd {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    s
}

/// Reads one manifest file.
pub fn load_file(path: &Path) -> Result<Parsed, ManifestError> {
    let err = |reason: String| ManifestError::File {
        path: path.to_owned(),
        reason,
    };
    let format = Format::of(path).ok_or_else(|| err("not a .yaml, .yml or .json file".into()))?;
    let bytes = read_bounded(path).map_err(err)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| err("not UTF-8".into()))?;
    parse_manifests(text, format).map_err(err)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// The objects of every manifest file in `dir`, and the files that could not be used.
pub fn load_dir(dir: &Path) -> Result<(Vec<Object>, Vec<ManifestError>), ManifestError> {
    let mut state = DirState::new(dir.to_owned());
    let report = state.rescan()?;
    Ok((state.merged.into_values().collect(), report.errors))
}

/// What one rescan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Changes to send to the store.
    pub events: Vec<SourceEvent>,
    /// Files that could not be used (their previous objects are kept), and documents that
    /// could not be (the previous version of their object is kept, when known).
    pub errors: Vec<ManifestError>,
    /// Objects defined by more than one file (the first file wins).
    pub duplicates: Vec<String>,
}

/// The files of a manifest directory and the objects they define.
#[derive(Debug)]
pub struct DirState {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    merged: BTreeMap<Key, Object>,
}

#[derive(Debug)]
struct FileState {
    /// Bytes last read (parsed or not), to skip unchanged files.
    bytes: Vec<u8>,
    /// Objects the file defines: those of its last readable version, with the previous
    /// version of objects whose new document was rejected.
    objects: Vec<Object>,
}

/// The objects a file defines after a read, and its rejected documents as errors: its good
/// objects plus, for each rejected document whose identity is known, the version of that
/// object the file defined before (as the API server keeps an object whose update it
/// refuses). A document too broken to say which object it is (a YAML syntax error) keeps
/// every object of the file's previous version that no good document redefines: it may be
/// any of them, and a typo must not delete an object; they go once the file reads cleanly.
fn merge_file(
    path: &Path,
    parsed: Parsed,
    previous: Vec<Object>,
) -> (Vec<Object>, Vec<ManifestError>) {
    let mut objects = parsed.objects;
    let mut previous: HashMap<Key, Object> = previous
        .into_iter()
        .filter_map(|o| Some((key_of(&o)?, o)))
        .collect();
    let defined =
        |objects: &[Object], k: &Key| objects.iter().any(|o| key_of(o).as_ref() == Some(k));
    let mut errors = Vec::new();
    let mut unidentified = Vec::new();
    for r in parsed.rejected {
        let Some(key) = r.key else {
            unidentified.push(r.reason);
            continue;
        };
        // A good document for the same object in this file already replaces it.
        let kept = (!defined(&objects, &key))
            .then(|| previous.remove(&key))
            .flatten();
        let reason = match kept {
            Some(obj) => {
                objects.push(obj);
                format!("{}; its previous version is kept", r.reason)
            }
            None => r.reason,
        };
        errors.push(ManifestError::Document {
            path: path.to_owned(),
            reason,
        });
    }
    if !unidentified.is_empty() {
        let mut kept: Vec<(Key, Object)> = previous
            .into_iter()
            .filter(|(k, _)| !defined(&objects, k))
            .collect();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        let note = if kept.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = kept
                .iter()
                .map(|(k, _)| format!("{:?} {}/{}", k.kind, k.namespace, k.name))
                .collect();
            format!(
                "; until the file reads cleanly, the previous version of what it no longer defines is kept ({})",
                names.join(", ")
            )
        };
        objects.extend(kept.into_iter().map(|(_, o)| o));
        for reason in unidentified {
            errors.push(ManifestError::Document {
                path: path.to_owned(),
                reason: format!("{reason}{note}"),
            });
        }
    }
    (objects, errors)
}

impl DirState {
    /// State for `dir`, nothing read yet.
    pub fn new(dir: PathBuf) -> Self {
        DirState {
            dir,
            files: BTreeMap::new(),
            merged: BTreeMap::new(),
        }
    }

    /// Re-reads the directory; returns the `Apply`/`Delete` events for what changed.
    pub fn rescan(&mut self) -> Result<ScanReport, ManifestError> {
        let mut report = ScanReport::default();
        let listing = std::fs::read_dir(&self.dir).map_err(|source| ManifestError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut present = Vec::new();
        for entry in listing.flatten() {
            let path = entry.path();
            // Follows symlinks (ConfigMap volumes are symlink farms).
            if Format::of(&path).is_some() && path.is_file() {
                present.push(path);
            }
        }
        present.sort();
        self.files.retain(|p, _| present.binary_search(p).is_ok());
        for path in present {
            let bytes = match read_bounded(&path) {
                Ok(b) => b,
                Err(reason) => {
                    report.errors.push(ManifestError::File { path, reason });
                    continue;
                }
            };
            if self.files.get(&path).is_some_and(|f| f.bytes == bytes) {
                continue;
            }
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|text| parse_manifests(text, Format::of(&path).unwrap_or(Format::Yaml)));
            match parsed {
                Ok(parsed) => {
                    let previous = self
                        .files
                        .remove(&path)
                        .map(|f| f.objects)
                        .unwrap_or_default();
                    let (objects, errors) = merge_file(&path, parsed, previous);
                    report.errors.extend(errors);
                    self.files.insert(path, FileState { bytes, objects });
                }
                Err(reason) => {
                    report.errors.push(ManifestError::File {
                        path: path.clone(),
                        reason,
                    });
                    // Remember the bytes so the same error is reported once; keep the objects.
                    let previous = self
                        .files
                        .remove(&path)
                        .map(|f| f.objects)
                        .unwrap_or_default();
                    self.files.insert(
                        path,
                        FileState {
                            bytes,
                            objects: previous,
                        },
                    );
                }
            }
        }
        let mut merged: BTreeMap<Key, Object> = BTreeMap::new();
        let mut first_file: HashMap<Key, &Path> = HashMap::new();
        for (path, file) in &self.files {
            for obj in &file.objects {
                let Some(key) = key_of(obj) else { continue };
                if let Some(first) = first_file.get(&key) {
                    report.duplicates.push(format!(
                        "{:?} {}/{} is defined in {} and {}; the first is used",
                        key.kind,
                        key.namespace,
                        key.name,
                        first.display(),
                        path.display()
                    ));
                    continue;
                }
                first_file.insert(key.clone(), path);
                merged.insert(key, obj.clone());
            }
        }
        for (key, obj) in &merged {
            if !self
                .merged
                .get(key)
                .is_some_and(|old| same_object(old, obj))
            {
                report.events.push(SourceEvent::Apply(obj.clone()));
            }
        }
        for key in self.merged.keys() {
            if !merged.contains_key(key) {
                report.events.push(SourceEvent::Delete(key.clone()));
            }
        }
        self.merged = merged;
        Ok(report)
    }

    /// Everything currently defined, as one `Replace` per kind (every kind, even empty).
    pub fn replace_events(&self) -> Vec<SourceEvent> {
        let kinds = [
            Kind::IngressClass,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::Secret,
            Kind::ConfigMap,
            Kind::Ingress,
        ];
        kinds
            .into_iter()
            .map(|kind| {
                let objs = self
                    .merged
                    .iter()
                    .filter(|(k, _)| k.kind == kind)
                    .map(|(_, o)| o.clone())
                    .collect();
                SourceEvent::Replace(kind, objs)
            })
            .collect()
    }
}

fn same_object(a: &Object, b: &Object) -> bool {
    match (a, b) {
        (Object::Ingress(a), Object::Ingress(b)) => a == b,
        (Object::IngressClass(a), Object::IngressClass(b)) => a == b,
        (Object::Service(a), Object::Service(b)) => a == b,
        (Object::EndpointSlice(a), Object::EndpointSlice(b)) => a == b,
        (Object::Secret(a), Object::Secret(b)) => a == b,
        (Object::ConfigMap(a), Object::ConfigMap(b)) => a == b,
        _ => false,
    }
}

fn log_report(report: &ScanReport) {
    for e in &report.errors {
        match e {
            ManifestError::Document { .. } => error!("manifest document not applied: {e}"),
            _ => error!("manifest file not applied, keeping its previous objects: {e}"),
        }
    }
    for d in &report.duplicates {
        warn!("{d}");
    }
}

/// Runs the source: first full read (`Replace` per kind, then `Synced`), then live updates
/// until the store goes away. Fails only if the directory cannot be read or watched at start.
pub async fn run(dir: PathBuf, events: mpsc::Sender<SourceEvent>) -> Result<(), ManifestError> {
    run_resyncing(dir, events, RESYNC, mpsc::channel(1).1).await
}

/// [`run`], reading the whole directory again every `resync`, on each change seen, and on
/// each message of `reload` (SIGHUP: what an nginx operator sends after editing files).
pub async fn run_resyncing(
    dir: PathBuf,
    events: mpsc::Sender<SourceEvent>,
    resync: Duration,
    mut reload: mpsc::Receiver<()>,
) -> Result<(), ManifestError> {
    let (tx, mut changed) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match &res {
            // Our own reads of the files (open/close without writing) change nothing; reacting
            // to them would rescan forever.
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => return,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "manifest watch error; rescanning"),
        }
        // One pending signal is enough: every rescan reads the whole directory.
        let _ = tx.try_send(());
    })
    .map_err(|source| ManifestError::Watch {
        path: dir.clone(),
        source,
    })?;
    // Watch before the first read so no change between the two is missed.
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|source| ManifestError::Watch {
            path: dir.clone(),
            source,
        })?;

    let mut state = DirState::new(dir.clone());
    let report = state.rescan()?;
    log_report(&report);
    info!(dir = %dir.display(), objects = state.merged.len(), errors = report.errors.len(), "manifests loaded");
    for ev in state
        .replace_events()
        .into_iter()
        .chain([SourceEvent::Synced])
    {
        if events.send(ev).await.is_err() {
            return Ok(());
        }
    }
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let by_resync = tokio::select! {
            c = changed.recv() => {
                if c.is_none() {
                    break;
                }
                // Read once the directory has been quiet for SETTLE, so a file written out
                // over a while (`helm template > dir/app.yaml`) is read whole, but no later
                // than SETTLE_MAX after the first event.
                let first = tokio::time::Instant::now();
                while first.elapsed() < SETTLE_MAX {
                    match tokio::time::timeout(SETTLE, changed.recv()).await {
                        // Another change: the quiet period starts again.
                        Ok(Some(())) => {}
                        // Quiet for SETTLE, or the watch is gone (seen at the next turn).
                        Err(_) | Ok(None) => break,
                    }
                }
                false
            }
            // What the watch cannot see: files behind symlinks that lead out of the
            // directory, and events the kernel dropped (inotify queue overflow).
            _ = every.tick() => true,
            Some(()) = reload.recv() => {
                info!(dir = %dir.display(), "reload asked: reading the manifests again");
                false
            }
        };
        let mut report = match state.rescan() {
            Ok(r) => r,
            Err(e) => {
                error!("{e}; keeping the current objects");
                continue;
            }
        };
        if by_resync && report.events.is_empty() {
            // Nothing changed: the duplicates were reported when they appeared.
            report.duplicates.clear();
        }
        log_report(&report);
        if !report.events.is_empty() {
            info!(dir = %dir.display(), changes = report.events.len(), "manifests changed");
        }
        for ev in report.events {
            if events.send(ev).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Manifest-directory source (standalone mode): reads *.yaml, *.yml, *.json and watches for changes.
//!
//! Every such file directly in the directory (not in subdirectories; names starting with `.`
//! are skipped) is read as Kubernetes manifests: multi-document YAML (`---`), or JSON holding
//! one object; in both, a `kind: List` contributes its `items`. Objects are dispatched on
//! `apiVersion` + `kind`: `networking.k8s.io/v1` Ingress and IngressClass, `v1` Service,
//! Secret and ConfigMap, `discovery.k8s.io/v1` EndpointSlice; other kinds are ignored (debug
//! log). A missing namespace means `default`, as with kubectl; a Secret's `stringData` is
//! merged into `data`, as the API server does.
//!
//! There is no EndpointSlice controller in standalone mode: write EndpointSlices, or annotate
//! a Service with [`STATIC_ENDPOINTS_ANNOTATION`], e.g.
//! `ingress.example.dev/endpoints: "127.0.0.1:8080,127.0.0.1:8081"`: those addresses are ready
//! endpoints of every port of the Service (the app enables this with
//! `Settings::static_endpoints` in this mode).
//!
//! The directory is watched (notify). After a change settles, files are re-read; only files
//! whose bytes changed are parsed again, and the store gets `Apply`/`Delete` for objects that
//! changed. A file that does not parse is reported (error log naming the file and reason) and
//! its previous objects are kept; a deleted file's objects are deleted. When two files define
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

/// Parses manifest text into objects. Any bad document fails the whole text.
pub fn parse_manifests(text: &str, format: Format) -> Result<Vec<Object>, String> {
    let docs: Vec<serde_json::Value> = match format {
        Format::Json => vec![serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?],
        Format::Yaml => serde_yaml::Deserializer::from_str(text)
            .enumerate()
            .map(|(i, doc)| {
                serde_json::Value::deserialize(doc)
                    .map_err(|e| format!("document {}: invalid YAML: {e}", i + 1))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let label = format!("document {}", i + 1);
        collect(doc, &label, &mut out, true)?;
    }
    Ok(out)
}

fn collect(
    doc: serde_json::Value,
    label: &str,
    out: &mut Vec<Object>,
    allow_list: bool,
) -> Result<(), String> {
    if doc.is_null() {
        return Ok(()); // empty YAML document, e.g. a trailing `---`
    }
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
    let obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") if allow_list => {
            let items = match doc.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(_) => return Err(format!("{label}: List items must be an array")),
            };
            for (j, item) in items.into_iter().enumerate() {
                collect(item, &format!("{label} item {}", j + 1), out, false)?;
            }
            return Ok(());
        }
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(typed::<Ingress>(doc, &what)?),
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(typed::<IngressClass>(doc, &what)?)
        }
        ("v1", "Service") => Object::Service(typed::<Service>(doc, &what)?),
        ("v1", "Secret") => Object::Secret(normalize_secret(typed::<Secret>(doc, &what)?)),
        ("v1", "ConfigMap") => Object::ConfigMap(typed::<ConfigMap>(doc, &what)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(typed::<EndpointSlice>(doc, &what)?)
        }
        _ => {
            debug!(
                api_version,
                kind, name, "manifest kind not watched; ignored"
            );
            return Ok(());
        }
    };
    out.push(fill_namespace(obj, &what)?);
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
pub fn load_file(path: &Path) -> Result<Vec<Object>, ManifestError> {
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
    /// Files that could not be used (their previous objects are kept).
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
    /// Objects of the last version that parsed.
    objects: Vec<Object>,
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
                Ok(objects) => {
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
        error!("manifest file not applied, keeping its previous objects: {e}");
    }
    for d in &report.duplicates {
        warn!("{d}");
    }
}

/// Runs the source: first full read (`Replace` per kind, then `Synced`), then live updates
/// until the store goes away. Fails only if the directory cannot be read or watched at start.
pub async fn run(dir: PathBuf, events: mpsc::Sender<SourceEvent>) -> Result<(), ManifestError> {
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
    while changed.recv().await.is_some() {
        // Let the burst of events from one save settle, then read once.
        tokio::time::sleep(SETTLE).await;
        while changed.try_recv().is_ok() {}
        let report = match state.rescan() {
            Ok(r) => r,
            Err(e) => {
                error!("{e}; keeping the current objects");
                continue;
            }
        };
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

//! The object store: one writer task applies source events and publishes snapshots.
//!
//! Sources send [`SourceEvent`]s on [`StoreHandle::events`]. The writer task owns the
//! [`ObjectCache`] and a [`Translator`]; after a change it translates and publishes an
//! `Arc<Translation>` on [`StoreHandle::translations`], with `snapshot.generation` increased
//! by one per publish. Nothing is translated before every source has sent `Synced` (a
//! partial view would withdraw routes); [`StoreHandle::ready`] turns true with the first
//! publish after that.
//!
//! Coalescing: a change arriving when nothing was translated during the last `debounce` is
//! translated at once (after draining what is already queued); changes arriving within
//! `debounce` of the previous translation wait for the end of that window and are translated
//! together. So an isolated change is never delayed, and a burst costs at most two
//! translations per window. An event that changes nothing translation can see (e.g. a
//! `resourceVersion`-only update) triggers nothing, and a translation equal in content to the
//! previous one is not published.
pub mod cache;

use std::{
    collections::HashSet,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, error, info, warn};

pub use cache::ObjectCache;

use crate::{
    config::Settings,
    source::{Kind, Object, SourceEvent},
    translate::{Diagnostic, Translation, Translator},
};

/// Capacity of the event channel; sources wait when the writer falls behind.
pub const EVENT_QUEUE: usize = 4096;
/// Events applied at most between two checks of the debounce timer.
const MAX_DRAIN: usize = 16 * 1024;

/// The store's channels.
#[derive(Debug)]
pub struct StoreHandle {
    /// Where sources send events (clone it per source).
    pub events: mpsc::Sender<SourceEvent>,
    /// The latest published translation (generation 0 and empty until the first publish).
    pub translations: watch::Receiver<Arc<Translation>>,
    /// True once every source has synced and a translation has been published.
    pub ready: watch::Receiver<bool>,
    /// The writer task; it ends when every event sender is dropped.
    pub task: JoinHandle<()>,
}

/// Starts the writer task. `sources` is how many sources will each send one `Synced`.
/// Must be called within a Tokio runtime.
pub fn spawn(settings: Settings, debounce: Duration, sources: usize) -> StoreHandle {
    let (events, rx) = mpsc::channel(EVENT_QUEUE);
    let (tx_translations, translations) = watch::channel(Arc::new(Translation::default()));
    let (tx_ready, ready) = watch::channel(false);
    let writer = Writer {
        state: Some(State {
            cache: ObjectCache::default(),
            translator: Translator::new(settings.clone()),
        }),
        settings,
        debounce,
        sources,
        synced: 0,
        dirty: true,
        beyond_endpoints: true,
        generation: 0,
        last: Arc::new(Translation::default()),
        translations: tx_translations,
        ready: tx_ready,
    };
    let task = tokio::spawn(writer.run(rx));
    StoreHandle {
        events,
        translations,
        ready,
        task,
    }
}

struct State {
    cache: ObjectCache,
    translator: Translator,
}

struct Writer {
    /// `None` only while a translation runs on the blocking pool.
    state: Option<State>,
    settings: Settings,
    debounce: Duration,
    sources: usize,
    synced: usize,
    /// Something changed since the last translation (true at start: publish the first one).
    dirty: bool,
    /// Something other than an EndpointSlice changed since the last translation (true at
    /// start: the first snapshot is all new).
    beyond_endpoints: bool,
    generation: u64,
    last: Arc<Translation>,
    translations: watch::Sender<Arc<Translation>>,
    ready: watch::Sender<bool>,
}

/// Whether two versions of a Service differ at most in the endpoints annotation of
/// standalone mode (`STATIC_ENDPOINTS_ANNOTATION`): for the reload metrics that is an
/// endpoint change, as an EndpointSlice's is.
fn same_but_static_endpoints(
    old: &k8s_openapi::api::core::v1::Service,
    new: &k8s_openapi::api::core::v1::Service,
) -> bool {
    let without = |s: &k8s_openapi::api::core::v1::Service| {
        let mut s = s.clone();
        if let Some(a) = s.metadata.annotations.as_mut() {
            a.remove(crate::translate::STATIC_ENDPOINTS_ANNOTATION);
        }
        // No annotations and none left are the same.
        if s.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.is_empty())
        {
            s.metadata.annotations = None;
        }
        s.metadata.resource_version = None;
        s.metadata.managed_fields = None;
        s
    };
    without(old) == without(new)
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<SourceEvent>) {
        let mut next_allowed = Instant::now();
        loop {
            let pending = self.dirty && self.synced >= self.sources;
            if pending {
                tokio::select! {
                    biased;
                    () = tokio::time::sleep_until(next_allowed) => {
                        self.drain(&mut rx);
                        if !self.translate_and_publish().await {
                            return;
                        }
                        next_allowed = Instant::now() + self.debounce;
                    }
                    ev = rx.recv() => match ev {
                        Some(ev) => self.handle(ev),
                        None => break,
                    },
                }
            } else {
                match rx.recv().await {
                    Some(ev) => {
                        self.handle(ev);
                        self.drain(&mut rx);
                    }
                    None => break,
                }
            }
        }
        // Every sender is gone: publish what was received, then stop.
        if self.dirty && self.synced >= self.sources {
            self.translate_and_publish().await;
        }
        debug!("store writer stopped");
    }

    /// Applies what is already queued, up to a bound.
    fn drain(&mut self, rx: &mut mpsc::Receiver<SourceEvent>) {
        for _ in 0..MAX_DRAIN {
            match rx.try_recv() {
                Ok(ev) => self.handle(ev),
                Err(_) => break,
            }
        }
    }

    fn handle(&mut self, ev: SourceEvent) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let endpoints = match &ev {
            SourceEvent::Apply(Object::Service(new)) => {
                let meta = &new.metadata;
                let (ns, name) = (meta.namespace.as_deref(), meta.name.as_deref());
                state
                    .cache
                    .service(ns.unwrap_or_default(), name.unwrap_or_default())
                    .is_some_and(|old| same_but_static_endpoints(old, new))
            }
            SourceEvent::Apply(obj) => matches!(obj, Object::EndpointSlice(_)),
            SourceEvent::Delete(key) => key.kind == Kind::EndpointSlice,
            SourceEvent::Replace(kind, _) => *kind == Kind::EndpointSlice,
            SourceEvent::Synced => true,
        };
        let changed = match ev {
            SourceEvent::Apply(obj) => state.cache.apply(obj),
            SourceEvent::Delete(key) => state.cache.delete(&key),
            SourceEvent::Replace(kind, objs) => state.cache.replace(kind, objs),
            SourceEvent::Synced => {
                self.synced += 1;
                debug!(
                    synced = self.synced,
                    sources = self.sources,
                    "source synced"
                );
                false
            }
        };
        self.dirty |= changed;
        self.beyond_endpoints |= changed && !endpoints;
    }

    /// Translates on the blocking pool and publishes if the result differs. Returns false
    /// when the runtime is shutting down.
    async fn translate_and_publish(&mut self) -> bool {
        let Some(state) = self.state.take() else {
            return false;
        };
        self.dirty = false;
        let endpoints_only = !std::mem::take(&mut self.beyond_endpoints);
        let started = std::time::Instant::now();
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        let (mut state, result) = if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
            // On this thread: no hand-off to the blocking pool and back on the latency path.
            tokio::task::block_in_place(move || run_translation(state))
        } else {
            match tokio::task::spawn_blocking(move || run_translation(state)).await {
                Ok(r) => r,
                Err(e) => {
                    error!(error = %e, "translation task lost; store stopping");
                    return false;
                }
            }
        };
        let elapsed = started.elapsed();
        let translation = match result {
            Ok(t) => t,
            Err(_) => {
                // A bug, not bad input: start over with empty memory and keep serving the
                // previous snapshot.
                error!("translation panicked; keeping the previous snapshot");
                // What changed is still unpublished: the next snapshot carries it.
                self.beyond_endpoints |= !endpoints_only;
                state.translator = Translator::new(self.settings.clone());
                self.state = Some(state);
                return true;
            }
        };
        let objects = state.cache.len();
        self.state = Some(state);
        if self.generation > 0 && translation.same_content(&self.last) {
            debug!(?elapsed, "translation unchanged; not published");
            dispose(translation);
            return true;
        }
        self.publish(translation, elapsed, objects, endpoints_only);
        true
    }

    fn publish(
        &mut self,
        mut translation: Translation,
        elapsed: Duration,
        objects: usize,
        endpoints_only: bool,
    ) {
        self.generation += 1;
        let snapshot = Arc::make_mut(&mut translation.snapshot);
        snapshot.generation = self.generation;
        snapshot.endpoints_only = endpoints_only;
        log_new_diagnostics(&self.last.diagnostics, &translation.diagnostics);
        let s = &translation.snapshot;
        info!(
            generation = self.generation,
            objects,
            hosts = s.http.hosts.len(),
            certs = s.tls.certs.len(),
            passthrough = s.passthrough.len(),
            l4 = s.l4.len(),
            diagnostics = translation.diagnostics.len(),
            translate_ms = elapsed.as_secs_f64() * 1000.0,
            "configuration published"
        );
        let translation = Arc::new(translation);
        let previous = std::mem::replace(&mut self.last, translation.clone());
        let replaced = self.translations.send_replace(translation);
        self.ready.send_if_modified(|r| !std::mem::replace(r, true));
        dispose((previous, replaced));
    }
}

/// Translates, catching a panic, and marks the change log consumed.
fn run_translation(mut state: State) -> (State, std::thread::Result<Translation>) {
    let version = state.cache.version();
    let result = catch_unwind(AssertUnwindSafe(|| {
        state.translator.translate(&state.cache)
    }));
    state.cache.discard_changes_until(version);
    (state, result)
}

/// Frees a large value off the writer task (a snapshot of 10,000 hosts takes milliseconds).
fn dispose<T: Send + 'static>(value: T) {
    tokio::task::spawn_blocking(move || drop(value));
}

/// Logs diagnostics that were not in the previous translation, so each is logged once.
fn log_new_diagnostics(previous: &[Diagnostic], current: &[Diagnostic]) {
    for d in new_diagnostics(previous, current) {
        warn!(object = %d.object, reason = d.reason, "{}", d.message);
    }
}

/// The diagnostics of `current` that are not in `previous`.
fn new_diagnostics<'a>(previous: &[Diagnostic], current: &'a [Diagnostic]) -> Vec<&'a Diagnostic> {
    let old: HashSet<&Diagnostic> = previous.iter().collect();
    current.iter().filter(|d| !old.contains(d)).collect()
}

#[cfg(test)]
mod tests;

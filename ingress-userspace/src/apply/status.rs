//! Ingress status: writes the publish addresses into `status.loadBalancer.ingress` of every
//! owned Ingress and clears it on Ingresses we stop owning. Only the elected leader writes.
//! An Ingress of another controller's class is never cleared: two controllers on the same
//! nodes publish the same addresses, and clearing would fight the other one's writes.
//!
//! Writes are JSON merge patches (`application/merge-patch+json`) on the `status` subresource:
//! a merge patch replaces the `ingress` list whole, which is exactly "we own this field", and
//! clearing is `"ingress": null`. A clear is guarded: the Ingress is read first and the patch
//! carries the `resourceVersion` read, so a status that another controller wrote meanwhile (the
//! Ingress moved to its class) is never removed; on a conflict the read is repeated.
//! Server-side apply would also work but would make us co-own the field with other managers'
//! history for no benefit here.
//!
//! Which Ingresses the API server shows our addresses on is tracked in memory: a patch goes out
//! only when that has to change. On becoming leader and then every `resync`, one paged LIST
//! of Ingresses refreshes `known`, which repairs anything changed behind our back. When the
//! addresses change (a node joins or leaves, with `--publish-pods`), the same LIST runs and
//! every owned Ingress is written again. Lists this process published before still count as
//! ours for clearing, so an Ingress we stopped owning while the addresses changed is cleared
//! too instead of keeping the old list.
//!
//! When asked to stop (`--update-status-on-shutdown`, ingress-nginx's flag), the leader clears
//! the statuses it wrote if it is the last replica: one published address at most and no other
//! ingressd pod left. Otherwise the next leader keeps them, so a rolling update never empties
//! them.
use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::api::{core::v1::Pod, networking::v1::Ingress};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api, Client,
};
use serde::Serialize;
use thiserror::Error;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{apply::publish::StatusAddress, snapshot::ObjectRef, translate::Translation};

/// Field manager recorded for our status writes.
pub const FIELD_MANAGER: &str = "ingressd";
/// Bound on one request, including kube's own retries of 429/503 answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Earlier address lists remembered for clearing; a node pool that churns faster than the
/// status is written only needs the last few.
const PAST_LISTS: usize = 16;
/// Reads and conditional patches per clear before it waits for the retry timer.
const CLEAR_TRIES: usize = 3;

/// What to write and how often to re-check it.
#[derive(Clone, Debug)]
pub struct StatusConfig {
    /// Addresses published on owned Ingresses, in this order (duplicates dropped); when they
    /// change (`apply::publish`), every owned Ingress is written again.
    pub addresses: watch::Receiver<Vec<StatusAddress>>,
    /// Interval of the full re-check against the API server.
    pub resync: Duration,
    /// Delay before retrying after a failed write.
    pub retry: Duration,
    /// The one namespace watched (`--watch-namespace`): Ingresses are listed there only, so a
    /// namespaced Role suffices and other namespaces' statuses are never touched.
    pub namespace: Option<String>,
    /// Clear the statuses on stop when no other replica remains (`--update-status-on-shutdown`),
    /// finding the others this way; `None`: leave them.
    pub clear_on_shutdown: Option<Replicas>,
}

/// How to find ingressd's other replicas: the pods of `selector`, else of this pod's own
/// labels (less the revision hashes), in `namespace`, as ingress-nginx finds them.
#[derive(Clone, Debug)]
pub struct Replicas {
    /// Namespace of ingressd's pods.
    pub namespace: String,
    /// This replica's pod name.
    pub pod: String,
    /// Label selector of all replicas (`--publish-pods`), if known.
    pub selector: Option<String>,
}

/// Labels a controller stamps per revision: a new revision's pods are replicas all the same.
const REVISION_LABELS: [&str; 3] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
];

impl StatusConfig {
    /// Fixed addresses; re-check every 60 s, retry failed writes after 5 s.
    pub fn new(addresses: Vec<StatusAddress>) -> Self {
        Self::following(watch::channel(addresses).1)
    }

    /// Addresses that change (see `apply::publish`); the same timers as [`StatusConfig::new`].
    pub fn following(addresses: watch::Receiver<Vec<StatusAddress>>) -> Self {
        StatusConfig {
            addresses,
            resync: Duration::from_secs(60),
            retry: Duration::from_secs(5),
            namespace: None,
            clear_on_shutdown: None,
        }
    }

    /// On stop, clears the statuses if no replica but this one is found this way.
    pub fn clearing_on_shutdown(mut self, replicas: Option<Replicas>) -> Self {
        self.clear_on_shutdown = replicas;
        self
    }

    /// Lists and writes Ingresses of `namespace` only, if given.
    pub fn in_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }
}

/// A status write or list failed.
#[derive(Debug, Error)]
pub enum StatusError {
    #[error("status request for {0} failed: {1}")]
    Api(String, #[source] kube::Error),
    #[error("status request for {0} timed out after {REQUEST_TIMEOUT:?}")]
    Timeout(String),
    #[error("pod {0} not found, or it has no labels: cannot tell which pods are replicas")]
    NoPod(String),
}

/// Namespace and name of an Ingress.
type IngressKey = (String, String);

/// Keeps Ingress statuses in line with the translations while `leader` is true, until
/// `shutdown` (then clears them if `clear_on_shutdown` says so and this is the last replica). Translations with snapshot generation 0 (the `Default` placeholder published
/// before the store has synced) are ignored: clearing is driven by the owned list, so only a
/// translation built from a complete view may count. With no addresses nothing is written
/// (an address source that has none yet is waited for).
pub async fn run(
    client: Client,
    config: StatusConfig,
    mut translations: watch::Receiver<Arc<Translation>>,
    mut leader: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut source = config.addresses.clone();
    // A fixed list has no sender left: nothing will change it.
    let mut source_live = source.has_changed().is_ok();
    if !source_live && source.borrow().is_empty() {
        info!("no publish address; Ingress status is not written");
        return;
    }
    let mut writer = StatusWriter::new(client.clone(), config.namespace.as_deref(), Vec::new());
    let mut resync_at = Instant::now();
    let mut retry_at: Option<Instant> = None;
    let mut translation;
    loop {
        let addresses = distinct(&source.borrow_and_update());
        if addresses != writer.addresses {
            // Every owned Ingress shows the old list now: relist and write them all.
            debug!(?addresses, "publishing new Ingress status addresses");
            writer.replace_addresses(addresses);
            writer.forget();
            retry_at = None;
        }
        let leading = *leader.borrow_and_update();
        translation = translations.borrow_and_update().clone();
        // Timers run only while there is something to keep in line.
        let active =
            leading && translation.snapshot.generation != 0 && !writer.addresses.is_empty();
        if !leading {
            // Another leader may write meanwhile; start from the server's view next time.
            writer.forget();
            retry_at = None;
        } else if active {
            let refresh = !writer.refreshed || Instant::now() >= resync_at;
            if refresh {
                resync_at = Instant::now() + config.resync;
            }
            let failed = tokio::select! {
                _ = shutdown.cancelled() => break,
                failed = writer.round(refresh, &translation, &leader) => failed,
            };
            retry_at = (failed > 0).then(|| {
                warn!(failed, "Ingress status requests failed; retrying");
                Instant::now() + config.retry
            });
        }
        let wake = retry_at.map_or(resync_at, |r| r.min(resync_at));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = translations.changed() => if r.is_err() { break },
            r = leader.changed() => if r.is_err() { break },
            r = source.changed(), if source_live => source_live = r.is_ok(),
            _ = tokio::time::sleep_until(wake), if active => {}
        }
    }
    let leading = *leader.borrow();
    // Only a complete view tells our Ingresses from those another controller publishing the
    // same address claims: the placeholder before the first sync claims none.
    let synced = translation.snapshot.generation != 0;
    if let Some(replicas) = config
        .clear_on_shutdown
        .as_ref()
        .filter(|_| leading && synced)
    {
        // The last addresses the source gave, as the loop would have taken them.
        let addresses = distinct(&source.borrow());
        if addresses != writer.addresses {
            writer.replace_addresses(addresses);
        }
        farewell(&mut writer, &client, replicas, &translation).await;
    }
}

/// Clears every status showing our addresses (current or past) unless another controller's
/// class claims the Ingress, when this is the last replica. ingress-nginx's rule: with more
/// than one published address, or another replica's pod present, the next leader keeps them.
async fn farewell(
    writer: &mut StatusWriter,
    client: &Client,
    replicas: &Replicas,
    translation: &Translation,
) {
    if writer.addresses.len() > 1 {
        info!(
            addresses = writer.addresses.len(),
            "several addresses published: Ingress status left to the next leader"
        );
        return;
    }
    match other_replicas(client, replicas).await {
        Ok(0) => {}
        Ok(others) => {
            info!(
                others,
                "other ingressd pods remain: Ingress status left to them"
            );
            return;
        }
        Err(error) => {
            warn!(%error, "Ingress status left as it is on shutdown");
            return;
        }
    }
    if let Err(error) = writer.refresh().await {
        warn!(%error, "listing Ingresses to clear their status on shutdown failed");
        return;
    }
    let claimed: BTreeSet<IngressKey> = translation
        .claimed_elsewhere
        .iter()
        .map(|o| (o.namespace.clone(), o.name.clone()))
        .collect();
    // With no current address, `known` is every Ingress without a status: nothing of ours.
    let current = if writer.addresses.is_empty() {
        BTreeSet::new()
    } else {
        writer.known.clone()
    };
    let clear: Vec<IngressKey> = current
        .union(&writer.stale)
        .filter(|k| !claimed.contains(*k))
        .cloned()
        .collect();
    let mut failed = 0;
    for key in &clear {
        failed += usize::from(!writer.write(key, false).await);
    }
    info!(
        cleared = clear.len() - failed,
        failed, "last ingressd replica stopping: Ingress status cleared"
    );
}

/// How many pods besides this one are replicas of ingressd, whatever their phase (one that is
/// starting will publish again).
async fn other_replicas(client: &Client, replicas: &Replicas) -> Result<usize, StatusError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &replicas.namespace);
    let list = |params: ListParams| {
        let pods = pods.clone();
        async move {
            tokio::time::timeout(REQUEST_TIMEOUT, pods.list(&params))
                .await
                .map_err(|_| StatusError::Timeout("pods".into()))?
                .map_err(|e| StatusError::Api("pods".into(), e))
        }
    };
    let me = || format!("{}/{}", replicas.namespace, replicas.pod);
    let selector = match &replicas.selector {
        Some(s) => s.clone(),
        None => {
            let own =
                list(ListParams::default().fields(&format!("metadata.name={}", replicas.pod)))
                    .await?;
            let labels = own
                .items
                .into_iter()
                .next()
                .and_then(|p| p.metadata.labels)
                .unwrap_or_default();
            let terms: Vec<String> = labels
                .iter()
                .filter(|(k, _)| !REVISION_LABELS.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if terms.is_empty() {
                return Err(StatusError::NoPod(me()));
            }
            terms.join(",")
        }
    };
    let all = list(ListParams::default().labels(&selector)).await?;
    Ok(all
        .items
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some(replicas.pod.as_str()))
        .count())
}

/// `addresses` in order without repeats.
fn distinct(addresses: &[StatusAddress]) -> Vec<StatusAddress> {
    let mut out = Vec::with_capacity(addresses.len());
    for a in addresses {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

/// `{"status":{"loadBalancer":{"ingress":[...]}}}`; typed so the bytes are stable.
#[derive(Debug, Serialize)]
struct StatusPatch {
    status: PatchStatus,
}

#[derive(Debug, Serialize)]
struct PatchStatus {
    #[serde(rename = "loadBalancer")]
    load_balancer: PatchLoadBalancer,
}

#[derive(Debug, Serialize)]
struct PatchLoadBalancer {
    /// `None` serializes as `null`, which a merge patch turns into "remove".
    ingress: Option<Vec<PatchIngress>>,
}

#[derive(Debug, Serialize)]
struct PatchIngress {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
}

/// `{"metadata":{"resourceVersion":..},"status":{"loadBalancer":{"ingress":null}}}`: a clear
/// that the API server refuses (409) if the object changed since `resource_version`.
#[derive(Debug, Serialize)]
struct GuardedClear {
    metadata: PatchMetadata,
    #[serde(flatten)]
    clear: StatusPatch,
}

#[derive(Debug, Serialize)]
struct PatchMetadata {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}

/// The merge patch setting `addresses`, or clearing the list when empty.
fn patch_body(addresses: &[StatusAddress]) -> StatusPatch {
    let ingress = (!addresses.is_empty()).then(|| {
        addresses
            .iter()
            .map(|a| match a {
                StatusAddress::Ip(ip) => PatchIngress {
                    ip: Some(ip.to_string()),
                    hostname: None,
                },
                StatusAddress::Hostname(h) => PatchIngress {
                    ip: None,
                    hostname: Some(h.clone()),
                },
            })
            .collect()
    });
    StatusPatch {
        status: PatchStatus {
            load_balancer: PatchLoadBalancer { ingress },
        },
    }
}

/// The addresses an Ingress status lists, if each entry is a plain IP or a plain hostname;
/// anything else (both, ports, an unparsable IP) counts as "not ours", so it is overwritten.
fn status_addresses(ingress: &Ingress) -> Option<Vec<StatusAddress>> {
    let entries = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let Some(entries) = entries else {
        return Some(Vec::new());
    };
    entries
        .iter()
        .map(|e| match (&e.ip, &e.hostname, &e.ports) {
            (Some(ip), None, None) => ip.parse().ok().map(StatusAddress::Ip),
            (None, Some(h), None) if !h.is_empty() => Some(StatusAddress::Hostname(h.clone())),
            _ => None,
        })
        .collect()
}

/// Writes statuses and remembers which Ingresses the server shows our addresses on.
struct StatusWriter {
    api: Api<Ingress>,
    addresses: Vec<StatusAddress>,
    /// Lists published before `addresses`, newest last.
    past: Vec<Vec<StatusAddress>>,
    /// Ingresses whose status is exactly `addresses`, as far as we know.
    known: BTreeSet<IngressKey>,
    /// Ingresses whose status is one of the `past` lists, as the last LIST showed.
    stale: BTreeSet<IngressKey>,
    /// `known` reflects a LIST made while leading.
    refreshed: bool,
}

impl StatusWriter {
    fn new(client: Client, namespace: Option<&str>, addresses: Vec<StatusAddress>) -> Self {
        StatusWriter {
            api: match namespace {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::all(client),
            },
            addresses,
            past: Vec::new(),
            known: BTreeSet::new(),
            stale: BTreeSet::new(),
            refreshed: false,
        }
    }

    fn forget(&mut self) {
        self.known.clear();
        self.stale.clear();
        self.refreshed = false;
    }

    /// Publishes `addresses` from now on; the current list joins the past ones.
    fn replace_addresses(&mut self, addresses: Vec<StatusAddress>) {
        let old = std::mem::replace(&mut self.addresses, addresses);
        self.past.retain(|p| *p != old && *p != self.addresses);
        if !old.is_empty() {
            self.past.push(old);
        }
        if self.past.len() > PAST_LISTS {
            self.past.remove(0);
        }
    }

    fn shows_ours(&self, ingress: &Ingress) -> bool {
        status_addresses(ingress).as_deref() == Some(&self.addresses[..])
    }

    fn shows_past(&self, ingress: &Ingress) -> bool {
        status_addresses(ingress).is_some_and(|a| !a.is_empty() && self.past.contains(&a))
    }

    /// Optionally refreshes, then syncs; returns how many requests failed.
    async fn round(
        &mut self,
        refresh: bool,
        translation: &Translation,
        leader: &watch::Receiver<bool>,
    ) -> usize {
        let mut failed = 0;
        if refresh {
            if let Err(error) = self.refresh().await {
                warn!(%error, "listing Ingresses for status failed");
                failed += 1;
            }
        }
        failed + self.sync(translation, leader).await
    }

    /// Reloads `known` and `stale` from a paged LIST. This also finds Ingresses we no longer
    /// own that still show our addresses from an earlier run, so they get cleared.
    async fn refresh(&mut self) -> Result<(), StatusError> {
        let mut known = BTreeSet::new();
        let mut stale = BTreeSet::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = tokio::time::timeout(REQUEST_TIMEOUT, self.api.list(&params))
                .await
                .map_err(|_| StatusError::Timeout("Ingresses".into()))?
                .map_err(|e| StatusError::Api("Ingresses".into(), e))?;
            for i in &page.items {
                let key = || {
                    (
                        i.metadata.namespace.clone().unwrap_or_default(),
                        i.metadata.name.clone().unwrap_or_default(),
                    )
                };
                if self.shows_ours(i) {
                    known.insert(key());
                } else if self.shows_past(i) {
                    stale.insert(key());
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        self.known = known;
        self.stale = stale;
        self.refreshed = true;
        Ok(())
    }

    /// Sets the status of owned Ingresses and clears it on the others that show our
    /// addresses, current or past, unless another controller's class claims them; returns
    /// how many writes failed. Stops as soon as leadership is lost.
    async fn sync(&mut self, translation: &Translation, leader: &watch::Receiver<bool>) -> usize {
        let keys = |refs: &[ObjectRef]| -> BTreeSet<IngressKey> {
            refs.iter()
                .map(|o| (o.namespace.clone(), o.name.clone()))
                .collect()
        };
        let owned = keys(&translation.owned_ingresses);
        let claimed = keys(&translation.claimed_elsewhere);
        let set: Vec<IngressKey> = owned.difference(&self.known).cloned().collect();
        let clear: Vec<IngressKey> = self
            .known
            .union(&self.stale)
            .filter(|k| !owned.contains(*k) && !claimed.contains(*k))
            .cloned()
            .collect();
        let mut failed = 0;
        let writes = set
            .iter()
            .map(|k| (k, true))
            .chain(clear.iter().map(|k| (k, false)));
        for (key, set) in writes {
            if !*leader.borrow() {
                break;
            }
            failed += usize::from(!self.write(key, set).await);
        }
        failed
    }

    /// Sets our addresses (`set`) or clears them; true if the server holds the wanted status
    /// afterwards (or the Ingress is gone, or shows a status that is not ours to clear).
    async fn write(&mut self, key: &IngressKey, set: bool) -> bool {
        if set {
            let patch = Patch::Merge(patch_body(&self.addresses));
            return self.patch(key, &patch).await == Patched::Done;
        }
        for _ in 0..CLEAR_TRIES {
            let Some(resource_version) = self.still_ours(key).await else {
                return !self.known.contains(key) && !self.stale.contains(key);
            };
            let patch = Patch::Merge(GuardedClear {
                metadata: PatchMetadata { resource_version },
                clear: patch_body(&[]),
            });
            match self.patch(key, &patch).await {
                Patched::Done => return true,
                Patched::Failed => return false,
                Patched::Conflict => debug!(
                    ?key,
                    "Ingress changed before its status was cleared; reading it again"
                ),
            }
        }
        false
    }

    /// Reads the Ingress: its resourceVersion if its status still shows a list of ours.
    /// Otherwise (gone, or another writer's status) it is forgotten and `None` returned; a
    /// failed read also returns `None` but keeps the key, so the clear is retried.
    async fn still_ours(&mut self, key: &IngressKey) -> Option<String> {
        let (namespace, name) = key;
        let api = self.namespaced(namespace);
        let got = match tokio::time::timeout(REQUEST_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(got)) => got,
            Ok(Err(error)) => {
                warn!(namespace, name, %error, "reading Ingress before clearing its status failed");
                return None;
            }
            Err(_) => {
                warn!(
                    namespace,
                    name, "reading Ingress before clearing its status timed out"
                );
                return None;
            }
        };
        let ours = got
            .as_ref()
            .filter(|i| self.shows_ours(i) || self.shows_past(i))
            .and_then(|i| i.metadata.resource_version.clone());
        if ours.is_none() {
            debug!(namespace, name, "status no longer ours; left as it is");
            self.known.remove(key);
            self.stale.remove(key);
        }
        ours
    }

    /// The Ingress API of one namespace.
    fn namespaced(&self, namespace: &str) -> Api<Ingress> {
        Api::namespaced(self.api.clone().into_client(), namespace)
    }

    /// One merge patch of the status subresource; updates `known` from the answer.
    async fn patch<P: Serialize + std::fmt::Debug>(
        &mut self,
        key: &IngressKey,
        patch: &Patch<P>,
    ) -> Patched {
        let (namespace, name) = key;
        let api = self.namespaced(namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patched = tokio::time::timeout(REQUEST_TIMEOUT, api.patch_status(name, &params, patch));
        let Ok(result) = patched.await else {
            warn!(namespace, name, "writing Ingress status timed out");
            return Patched::Failed;
        };
        match result {
            Ok(ingress) => {
                self.stale.remove(key);
                let ours = self.shows_ours(&ingress);
                debug!(namespace, name, ours, "Ingress status written");
                if ours {
                    self.known.insert(key.clone());
                } else {
                    self.known.remove(key);
                }
                Patched::Done
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                debug!(
                    namespace,
                    name, "Ingress gone before its status was written"
                );
                self.known.remove(key);
                self.stale.remove(key);
                Patched::Done
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Patched::Conflict,
            Err(error) => {
                warn!(namespace, name, %error, "writing Ingress status failed");
                Patched::Failed
            }
        }
    }
}

/// How one status patch ended.
#[derive(Debug, PartialEq, Eq)]
enum Patched {
    /// Applied, or the Ingress is gone.
    Done,
    /// The resourceVersion precondition failed.
    Conflict,
    /// Anything else: retried on the timer.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::{
        IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
    };

    #[test]
    fn patch_bodies_are_stable() {
        let ip = |s: &str| StatusAddress::Ip(s.parse().unwrap_or_else(|e| panic!("{e}")));
        let set = serde_json::to_string(&patch_body(&[
            ip("192.0.2.10"),
            ip("2001:db8::1"),
            StatusAddress::Hostname("lb-1.elb.example.com".into()),
        ]))
        .unwrap_or_default();
        assert_eq!(
            set,
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"},{"ip":"2001:db8::1"},{"hostname":"lb-1.elb.example.com"}]}}}"#
        );
        let clear = serde_json::to_string(&patch_body(&[])).unwrap_or_default();
        assert_eq!(clear, r#"{"status":{"loadBalancer":{"ingress":null}}}"#);
        let guarded = serde_json::to_string(&GuardedClear {
            metadata: PatchMetadata {
                resource_version: "42".into(),
            },
            clear: patch_body(&[]),
        })
        .unwrap_or_default();
        assert_eq!(
            guarded,
            r#"{"metadata":{"resourceVersion":"42"},"status":{"loadBalancer":{"ingress":null}}}"#
        );
    }

    #[test]
    fn reads_only_plain_ip_and_hostname_statuses() {
        let with = |entries: Option<Vec<IngressLoadBalancerIngress>>| Ingress {
            status: Some(IngressStatus {
                load_balancer: Some(IngressLoadBalancerStatus { ingress: entries }),
            }),
            ..Default::default()
        };
        assert_eq!(status_addresses(&Ingress::default()), Some(vec![]));
        assert_eq!(status_addresses(&with(None)), Some(vec![]));
        let ip = IngressLoadBalancerIngress {
            ip: Some("192.0.2.1".into()),
            ..Default::default()
        };
        let host = IngressLoadBalancerIngress {
            hostname: Some("lb".into()),
            ..Default::default()
        };
        assert_eq!(
            status_addresses(&with(Some(vec![ip.clone(), host.clone()]))),
            Some(vec![
                StatusAddress::Ip("192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"))),
                StatusAddress::Hostname("lb".into()),
            ])
        );
        let both = IngressLoadBalancerIngress {
            ports: None,
            ..IngressLoadBalancerIngress {
                hostname: Some("lb".into()),
                ..ip
            }
        };
        assert_eq!(status_addresses(&with(Some(vec![both]))), None);
        let empty = IngressLoadBalancerIngress {
            hostname: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(status_addresses(&with(Some(vec![host, empty]))), None);
        let bad = IngressLoadBalancerIngress {
            ip: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(status_addresses(&with(Some(vec![bad]))), None);
    }
}

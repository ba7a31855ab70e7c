//! The addresses the leader writes into Ingress status: fixed ones (`--publish-address`), or
//! the node address of every running ingressd pod (`--publish-pods`), as ingress-nginx
//! publishes when no LoadBalancer Service fronts it. With the DaemonSet, that is every node
//! taking traffic, so DNS built from the status (external-dns) names all of them, not only the
//! node the leader happens to run on.
use std::{collections::BTreeMap, net::IpAddr};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Where the published addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishSource {
    /// These addresses, in this order.
    Fixed(Vec<IpAddr>),
    /// The `status.hostIP` of each running pod matching `selector` in `namespace`.
    Pods { namespace: String, selector: String },
}

/// The address a pod contributes: its node's, once it runs and until it is being deleted (a
/// terminating pod drains, and its node should leave DNS first).
pub fn pod_address(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    status.host_ip.as_deref()?.parse().ok()
}

/// Sorted distinct addresses of `pods` (several pods on one node count once).
fn addresses<'a>(pods: impl IntoIterator<Item = &'a Option<IpAddr>>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = pods.into_iter().flatten().copied().collect();
    out.sort();
    out.dedup();
    out
}

/// Starts following `source`; the receiver always holds the current addresses (empty until
/// the first list of pods). A fixed source never changes (its sender is dropped at once).
pub fn spawn(
    client: Option<Client>,
    source: PublishSource,
    shutdown: CancellationToken,
) -> watch::Receiver<Vec<IpAddr>> {
    match (source, client) {
        (PublishSource::Fixed(addrs), _) => watch::channel(addrs).1,
        (PublishSource::Pods { .. }, None) => watch::channel(Vec::new()).1,
        (
            PublishSource::Pods {
                namespace,
                selector,
            },
            Some(client),
        ) => {
            let (tx, rx) = watch::channel(Vec::new());
            let api = Api::<Pod>::namespaced(client, &namespace);
            tokio::spawn(async move {
                tokio::select! {
                    () = follow(api, &selector, tx) => {}
                    () = shutdown.cancelled() => {}
                }
            });
            rx
        }
    }
}

/// Keeps `tx` at the addresses of the running pods matching `selector`. An empty result is
/// never sent: the leader's own pod runs, so an empty list is a transient view (a relist
/// racing a rollout), and publishing it would clear every Ingress status.
async fn follow(api: Api<Pod>, selector: &str, tx: watch::Sender<Vec<IpAddr>>) {
    let config = watcher::Config::default().labels(selector);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut pods: BTreeMap<String, Option<IpAddr>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Option<IpAddr>>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) => {
                warn!(%error, "watching ingressd pods for the status addresses failed; retrying");
                continue;
            }
        };
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => listing = Some(BTreeMap::new()),
            watcher::Event::InitApply(p) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(name(&p), pod_address(&p));
                }
            }
            watcher::Event::InitDone => {
                if let Some(l) = listing.take() {
                    pods = l;
                }
            }
            watcher::Event::Apply(p) => {
                pods.insert(name(&p), pod_address(&p));
            }
            watcher::Event::Delete(p) => {
                pods.remove(&name(&p));
            }
        }
        if listing.is_some() {
            continue;
        }
        let now = addresses(pods.values());
        if now.is_empty() {
            debug!("no running ingressd pod seen; keeping the published addresses");
            continue;
        }
        if *tx.borrow() != now {
            info!(addresses = ?now, "Ingress status addresses changed");
            tx.send_replace(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::PodStatus, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
    };

    fn pod(phase: &str, host_ip: Option<&str>, deleting: bool) -> Pod {
        let mut p = Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                host_ip: host_ip.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        p
    }

    #[test]
    fn only_running_pods_not_being_deleted_with_a_node_address_count() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            pod_address(&pod("Running", Some("192.0.2.1"), false)),
            ip("192.0.2.1")
        );
        assert_eq!(
            pod_address(&pod("Running", Some("2001:db8::1"), false)),
            ip("2001:db8::1")
        );
        assert_eq!(pod_address(&pod("Pending", Some("192.0.2.1"), false)), None);
        assert_eq!(pod_address(&pod("Running", Some("192.0.2.1"), true)), None);
        assert_eq!(pod_address(&pod("Running", None, false)), None);
        assert_eq!(pod_address(&pod("Running", Some("node-a"), false)), None);
        assert_eq!(pod_address(&Pod::default()), None);
    }

    #[test]
    fn addresses_are_sorted_and_distinct() {
        let a = |s: &str| Some(s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}")));
        let got = addresses(&[a("192.0.2.9"), None, a("192.0.2.1"), a("192.0.2.9")]);
        assert_eq!(got, vec![a("192.0.2.1").unwrap(), a("192.0.2.9").unwrap()]);
    }
}

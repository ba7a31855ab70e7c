//! The addresses the leader writes into Ingress status: fixed ones (`--publish-address`), the
//! node address of every running ingressd pod (`--publish-pods`), as ingress-nginx publishes
//! when no LoadBalancer Service fronts it, or the addresses of the Service that does
//! (`--publish-service`, ingress-nginx's flag). With the DaemonSet and `--publish-pods`, that
//! is every node taking traffic, so DNS built from the status (external-dns) names all of
//! them, not only the node the leader happens to run on.
use std::{collections::BTreeMap, fmt, net::IpAddr};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// One entry of `status.loadBalancer.ingress`: an address, or a DNS name (a cloud load
/// balancer's, as a LoadBalancer Service on AWS reports it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatusAddress {
    Ip(IpAddr),
    Hostname(String),
}

impl From<IpAddr> for StatusAddress {
    fn from(ip: IpAddr) -> Self {
        StatusAddress::Ip(ip)
    }
}

impl std::str::FromStr for StatusAddress {
    type Err = String;

    /// An IP address, else a DNS name (lower-cased; RFC 1123, as the API server checks it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse() {
            return Ok(StatusAddress::Ip(ip));
        }
        let name = s.to_ascii_lowercase();
        if crate::source::external_names::is_dns_subdomain(&name) {
            Ok(StatusAddress::Hostname(name))
        } else {
            Err(format!("{s:?} is neither an IP address nor a DNS name"))
        }
    }
}

impl fmt::Display for StatusAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusAddress::Ip(ip) => ip.fmt(f),
            StatusAddress::Hostname(h) => f.write_str(h),
        }
    }
}

/// Where the published addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishSource {
    /// These addresses, in this order.
    Fixed(Vec<StatusAddress>),
    /// The `status.hostIP` of each running pod matching `selector` in `namespace`.
    Pods { namespace: String, selector: String },
    /// The addresses of this Service, as [`service_addresses`] reads them.
    Service { namespace: String, name: String },
}

/// What a Service contributes, as ingress-nginx reads its `--publish-service`: a
/// LoadBalancer's `status.loadBalancer.ingress` (IP, else hostname) then its external IPs; a
/// NodePort's external IPs, else its cluster IP; a ClusterIP's cluster IP; an ExternalName's
/// name. Entries that are neither an address nor a name are skipped.
pub fn service_addresses(svc: &Service) -> Vec<StatusAddress> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let ip = |s: &String| s.parse().ok().map(StatusAddress::Ip);
    let cluster_ip = || spec.cluster_ip.iter().filter_map(ip).collect::<Vec<_>>();
    let external = || {
        spec.external_ips
            .iter()
            .flatten()
            .filter_map(ip)
            .collect::<Vec<_>>()
    };
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "LoadBalancer" => {
            let lb = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            let mut out: Vec<StatusAddress> = lb
                .iter()
                .flat_map(|entries| entries.iter())
                .filter_map(|e| match (e.ip.as_ref().and_then(ip), &e.hostname) {
                    (Some(a), _) => Some(a),
                    (None, Some(h)) if !h.is_empty() => Some(StatusAddress::Hostname(h.clone())),
                    _ => None,
                })
                .collect();
            out.extend(external());
            out
        }
        "NodePort" if spec.external_ips.as_ref().is_some_and(|e| !e.is_empty()) => external(),
        "NodePort" | "ClusterIP" => cluster_ip(),
        "ExternalName" => spec
            .external_name
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| StatusAddress::Hostname(n.clone()))
            .collect(),
        _ => Vec::new(),
    }
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
fn addresses<'a>(pods: impl IntoIterator<Item = &'a Option<IpAddr>>) -> Vec<StatusAddress> {
    let mut out: Vec<StatusAddress> = pods.into_iter().flatten().map(|a| (*a).into()).collect();
    out.sort();
    out.dedup();
    out
}

/// Starts following `source`; the receiver always holds the current addresses (empty until
/// the first list of pods or the Service). A fixed source never changes (its sender is dropped
/// at once).
pub fn spawn(
    client: Option<Client>,
    source: PublishSource,
    shutdown: CancellationToken,
) -> watch::Receiver<Vec<StatusAddress>> {
    match (source, client) {
        (PublishSource::Fixed(addrs), _) => watch::channel(addrs).1,
        (PublishSource::Pods { .. } | PublishSource::Service { .. }, None) => {
            watch::channel(Vec::new()).1
        }
        (PublishSource::Service { namespace, name }, Some(client)) => {
            let api = Api::<Service>::namespaced(client, &namespace);
            following(shutdown, move |tx| async move {
                follow_service(api, &name, tx).await
            })
        }
        (
            PublishSource::Pods {
                namespace,
                selector,
            },
            Some(client),
        ) => {
            let api = Api::<Pod>::namespaced(client, &namespace);
            following(shutdown, move |tx| async move {
                follow(api, &selector, tx).await
            })
        }
    }
}

/// Runs `follow` on a new channel's sender until it ends or `shutdown`; returns the receiver.
fn following<F>(
    shutdown: CancellationToken,
    follow: impl FnOnce(watch::Sender<Vec<StatusAddress>>) -> F,
) -> watch::Receiver<Vec<StatusAddress>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = watch::channel(Vec::new());
    let run = follow(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = run => {}
            () = shutdown.cancelled() => {}
        }
    });
    rx
}

/// Keeps `tx` at the addresses of the running pods matching `selector`. An empty result is
/// never sent: the leader's own pod runs, so an empty list is a transient view (a relist
/// racing a rollout), and publishing it would clear every Ingress status.
async fn follow(api: Api<Pod>, selector: &str, tx: watch::Sender<Vec<StatusAddress>>) {
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
        publish(&tx, now);
    }
}

/// Keeps `tx` at the addresses of the Service `name`. While it is missing or has none (a
/// LoadBalancer still waiting for its address), the addresses published last stay: clearing
/// every Ingress status for a Service being recreated would send DNS nowhere.
async fn follow_service(api: Api<Service>, name: &str, tx: watch::Sender<Vec<StatusAddress>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let svc = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
            Ok(watcher::Event::Delete(_)) => {
                warn!(
                    service = name,
                    "the --publish-service Service was deleted; keeping the published addresses"
                );
                continue;
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(error) => {
                warn!(%error, "watching the --publish-service Service failed; retrying");
                continue;
            }
        };
        let now = service_addresses(&svc);
        if now.is_empty() {
            info!(
                service = name,
                "the --publish-service Service has no address yet; keeping the published addresses"
            );
            continue;
        }
        publish(&tx, now);
    }
}

/// Sends `now` if it differs from what `tx` holds.
fn publish(tx: &watch::Sender<Vec<StatusAddress>>, now: Vec<StatusAddress>) {
    if *tx.borrow() != now {
        info!(addresses = ?now, "Ingress status addresses changed");
        tx.send_replace(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::PodStatus, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
    };
    use serde_json::json;

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

    fn service(ty: &str, spec: serde_json::Value, status: serde_json::Value) -> Service {
        let mut spec = spec;
        spec["type"] = json!(ty);
        serde_json::from_value(json!({
            "metadata": {"namespace": "ingress", "name": "front"},
            "spec": spec,
            "status": status,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_service_publishes_what_ingress_nginx_reads_from_it() {
        let ip = |s: &str| StatusAddress::Ip(s.parse().unwrap_or_else(|e| panic!("{e}")));
        let host = |s: &str| StatusAddress::Hostname(s.into());
        // A LoadBalancer: its status entries (IP first, else hostname), then external IPs.
        let lb = service(
            "LoadBalancer",
            json!({"clusterIP": "10.0.0.5", "externalIPs": ["198.51.100.9"]}),
            json!({"loadBalancer": {"ingress": [
                {"ip": "203.0.113.7", "hostname": "ignored.example"},
                {"hostname": "a1.elb.example.com"},
                {"ip": "not-an-ip"},
                {},
            ]}}),
        );
        assert_eq!(
            service_addresses(&lb),
            vec![
                ip("203.0.113.7"),
                host("a1.elb.example.com"),
                ip("198.51.100.9")
            ]
        );
        // One still waiting for its load balancer has none (not its cluster IP).
        let pending = service("LoadBalancer", json!({"clusterIP": "10.0.0.5"}), json!({}));
        assert_eq!(service_addresses(&pending), vec![]);
        // NodePort: external IPs, else the cluster IP; ClusterIP (the default type): that.
        let np = service(
            "NodePort",
            json!({"clusterIP": "10.0.0.6", "externalIPs": ["198.51.100.1", "2001:db8::9"]}),
            json!({}),
        );
        assert_eq!(
            service_addresses(&np),
            vec![ip("198.51.100.1"), ip("2001:db8::9")]
        );
        let np = service("NodePort", json!({"clusterIP": "10.0.0.6"}), json!({}));
        assert_eq!(service_addresses(&np), vec![ip("10.0.0.6")]);
        let mut cip = service("ClusterIP", json!({"clusterIP": "10.0.0.7"}), json!({}));
        assert_eq!(service_addresses(&cip), vec![ip("10.0.0.7")]);
        if let Some(spec) = cip.spec.as_mut() {
            spec.type_ = None;
        }
        assert_eq!(service_addresses(&cip), vec![ip("10.0.0.7")]);
        // A headless Service has no address to give.
        let headless = service("ClusterIP", json!({"clusterIP": "None"}), json!({}));
        assert_eq!(service_addresses(&headless), vec![]);
        let ext = service(
            "ExternalName",
            json!({"externalName": "ingress.example.net"}),
            json!({}),
        );
        assert_eq!(service_addresses(&ext), vec![host("ingress.example.net")]);
        assert_eq!(service_addresses(&Service::default()), vec![]);
    }

    #[test]
    fn status_addresses_parse_as_ips_or_dns_names() {
        let parse = |s: &str| s.parse::<StatusAddress>();
        assert_eq!(
            parse("192.0.2.1"),
            Ok(StatusAddress::Ip(
                "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"))
            ))
        );
        assert!(matches!(parse("2001:db8::1"), Ok(StatusAddress::Ip(_))));
        assert_eq!(
            parse("LB-1.Example.com"),
            Ok(StatusAddress::Hostname("lb-1.example.com".into()))
        );
        for bad in [
            "",
            "a..b",
            "-lb.example.com",
            "lb_1.example.com",
            "lb example",
            "1.2.3.4:80",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn addresses_are_sorted_and_distinct() {
        let a = |s: &str| Some(s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}")));
        let got = addresses(&[a("192.0.2.9"), None, a("192.0.2.1"), a("192.0.2.9")]);
        let want: Vec<StatusAddress> = [a("192.0.2.1"), a("192.0.2.9")]
            .into_iter()
            .flatten()
            .map(Into::into)
            .collect();
        assert_eq!(got, want);
    }
}

//! Wires the pipeline together: sources, store, translate, appliers, listeners; and drains it.
//!
//! `build` validates flags, loads and attaches the kernel programs and binds every socket;
//! `run` starts the tasks and waits for SIGTERM/SIGINT, then drains. Nothing here contains
//! logic of its own beyond ordering: readiness turns true only once the first snapshot is live
//! in the proxy and in the kernel maps.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    admin::{kernel::KernelMetrics, AdminServer, Readiness},
    apply::{
        self,
        edge::{EdgeApplier, EdgeSettings, SynRate},
        local_l4::LocalL4,
        local_ports::LocalPortFilter,
        maps::{FlowTimeouts, L4Applier, SnatSettings},
        proxy::ProxyApplier,
    },
    cli::{Cli, Command, RunArgs},
    config::{self, parse_port_range, Settings},
    maps::{
        edge::AyaEdgeWriter,
        kernel_log,
        loader::{self, Datapath, LoaderOptions},
        neigh,
        writer::AyaMapWriter,
    },
    passthrough::{splice, Passthrough, PassthroughConfig},
    proxy::{self, Proxy, ProxyOptions},
    snapshot::{Global, Snapshot},
    source::{self, SourceEvent},
    store,
    translate::Translation,
};

/// Runs the command given on the command line.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Inspect(a) => {
            let report =
                crate::admin::inspect::report(&a.pin.pin_dir, a.conntrack).with_context(|| {
                    format!("reading pinned maps under {}", a.pin.pin_dir.display())
                })?;
            print!("{report}");
            Ok(())
        }
        Command::Cleanup(p) => {
            let removed = loader::cleanup(&p.pin_dir)?;
            println!(
                "removed {} pinned objects under {}",
                removed.len(),
                p.pin_dir.display()
            );
            Ok(())
        }
    }
}

/// The translator's settings from the flags, validated before anything is bound or loaded.
pub fn settings(args: &RunArgs) -> anyhow::Result<Settings> {
    let parse_nn = |s: &Option<String>| -> anyhow::Result<Option<config::NamespacedName>> {
        Ok(match s {
            Some(s) => Some(s.parse()?),
            None => None,
        })
    };
    if (args.tcp_services_configmap.is_some() || args.udp_services_configmap.is_some())
        && args.l4_address.is_empty()
        && args.publish_address.is_empty()
    {
        anyhow::bail!(
            "--tcp-services-configmap/--udp-services-configmap need --l4-address (or \
             --publish-address): the VIP addresses the L4 services are exposed on"
        );
    }
    if args.publish_service.is_some()
        && (!args.publish_address.is_empty() || !args.publish_status_address.is_empty())
    {
        info!("fixed status addresses are given: --publish-service is not used");
    }
    Ok(Settings {
        controller_config: parse_nn(&args.configmap)?,
        default_certificate: parse_nn(&args.default_ssl_certificate)?,
        global: Global {
            block_cidrs: args.edge.block_cidrs.clone(),
            hsts: args.hsts.settings(),
            real_ip: args.real_ip.settings(),
            access_log: args.access_log,
            ..Global::default()
        },
        controller_name: args.controller_name.clone(),
        ingress_class: args.ingress_class.clone(),
        without_class: args.watch_ingress_without_class,
        class_by_name: args.ingress_class_by_name,
        tcp_services: parse_nn(&args.tcp_services_configmap)?,
        udp_services: parse_nn(&args.udp_services_configmap)?,
        l4_addresses: if args.l4_address.is_empty() {
            args.publish_address.clone()
        } else {
            args.l4_address.clone()
        },
        default_backend: match &args.default_backend_service {
            Some(s) => Some(s.parse()?),
            None => None,
        },
        // Only a manifest directory the operator wrote may name endpoints directly.
        static_endpoints: args.manifests.is_some(),
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before anything reads it: the default --max-connections is derived from it.
    crate::proxy::accept::raise_open_file_limit();
    let settings = settings(&args)?;
    let snat = snat_settings(&args)?;
    // Pinned to one CPU (a cpuset of one, `taskset`), one worker is all a multi-thread
    // runtime would start; the current-thread scheduler does the same work without the
    // cross-thread queues and wake-up bookkeeping.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build()?;
    info!(one_cpu, "runtime started");
    runtime.block_on(async move {
        let app = App::build(args, settings, snat).await?;
        app.run().await
    })
}

fn snat_settings(args: &RunArgs) -> anyhow::Result<SnatSettings> {
    let (port_min, port_max) = parse_port_range(&args.xdp.snat_ports)?;
    let snat = SnatSettings {
        v4: args.xdp.snat_v4,
        v6: args.xdp.snat_v6,
        port_min,
        port_max,
        timeouts: FlowTimeouts {
            tcp_established: args.xdp.conntrack_tcp_timeout_established,
            tcp_time_wait: args.xdp.conntrack_tcp_timeout_time_wait,
            tcp_close: args.xdp.conntrack_tcp_timeout_close,
            udp: args.xdp.conntrack_udp_timeout,
            unreplied: args.xdp.conntrack_unreplied_timeout,
        },
    };
    if args.xdp.interfaces.is_empty() && args.edge.edge_syn_rate.is_some() {
        bail!(
            "--edge-syn-rate needs --xdp-interface: the SYN limit is enforced by the XDP program"
        );
    }
    if !args.xdp.interfaces.is_empty() && snat.v4.is_none() && snat.v6.is_none() {
        bail!("--xdp-interface needs --snat-v4 and/or --snat-v6: the source address for L4 traffic to backends");
    }
    Ok(snat)
}

/// What the XDP program's edge protection enforces, and on which listener addresses: the
/// HTTP and HTTPS listeners' own, or for a wildcard listener every node address the flags
/// name (publish, L4 and SNAT addresses) of its family.
pub fn edge_settings(args: &RunArgs) -> EdgeSettings {
    let named: BTreeSet<IpAddr> = args
        .publish_address
        .iter()
        .chain(&args.l4_address)
        .copied()
        .chain(args.xdp.snat_v4.map(IpAddr::V4))
        .chain(args.xdp.snat_v6.map(IpAddr::V6))
        .collect();
    let mut listeners = BTreeSet::new();
    for addr in [args.http_addr, args.https_addr] {
        if !addr.ip().is_unspecified() {
            listeners.insert(addr);
            continue;
        }
        // A `[::]` socket also takes IPv4 (Linux's default dual stack).
        for ip in named.iter().filter(|ip| addr.is_ipv6() || ip.is_ipv4()) {
            listeners.insert(std::net::SocketAddr::new(*ip, addr.port()));
        }
    }
    // The controller ConfigMap may give a block list at any time.
    let enabled = !args.edge.block_cidrs.is_empty()
        || args.edge.edge_syn_rate.is_some()
        || args.configmap.is_some();
    for addr in [args.http_addr, args.https_addr] {
        let covered =
            !addr.ip().is_unspecified() || listeners.iter().any(|l| l.port() == addr.port());
        if enabled && !covered {
            warn!(
                listener = %addr,
                "edge protection cannot guard a wildcard listener without a node address: give --publish-address, --l4-address or --snat-v4/-v6"
            );
        }
    }
    EdgeSettings {
        syn_rate: args.edge.edge_syn_rate.map(|per_second| SynRate {
            per_second,
            burst: args.edge.edge_syn_burst,
        }),
        listeners: listeners.into_iter().collect(),
    }
}

/// The kernel side: loaded programs, the L4 applier, and which next hops are kept resolved.
struct Kernel {
    /// The passthrough splice program, attached from the same object (taken once at start).
    splice: Option<Result<splice::KernelSplice, splice::SpliceError>>,
    // Held so the programs and links live as long as the process.
    _datapath: Datapath,
    applier: L4Applier<AyaMapWriter>,
    edge: EdgeApplier<AyaEdgeWriter>,
    resolved: BTreeSet<IpAddr>,
    local_ports: LocalPortFilter,
    /// Listeners for clients on this node, whose packets never cross the XDP interfaces.
    local: LocalL4,
}

impl Kernel {
    fn load(args: &RunArgs, snat: SnatSettings) -> anyhow::Result<Self> {
        let x = &args.xdp;
        let mut datapath = Datapath::load(&LoaderOptions {
            pin_dir: Some(x.pin.pin_dir.clone()),
            max_vips: x.max_vips,
            conntrack_entries: x.conntrack_entries,
            kernel_log: args.kernel_log,
        })?;
        if args.kernel_log {
            kernel_log::spawn(datapath.ebpf_mut())?;
            info!(
                "kernel log records on (--kernel-log), target {}",
                kernel_log::TARGET
            );
        }
        let applier = L4Applier::new(datapath.map_writer()?, snat)?;
        let edge = EdgeApplier::new(datapath.edge_writer()?, edge_settings(args))?;
        let splice =
            (!args.passthrough_userspace).then(|| splice::attach_kernel(datapath.ebpf_mut()));
        for ifname in &x.interfaces {
            datapath.attach(ifname, x.xdp_generic)?;
        }
        datapath.detach_others(&x.interfaces)?;
        datapath.remove_stale_versions()?;
        Ok(Kernel {
            splice,
            _datapath: datapath,
            applier,
            edge,
            resolved: BTreeSet::new(),
            local_ports: LocalPortFilter::default(),
            local: LocalL4::new(tokio::runtime::Handle::current()).with_xdp_interfaces(
                x.interfaces
                    .iter()
                    .filter_map(|i| crate::maps::local_addrs::ifindex(i))
                    .collect(),
            ),
        })
    }

    fn apply(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let services = self.local_ports.keep(&snapshot.l4, &self.local.serving());
        let services = &*services;
        let report = self.applier.apply(services)?;
        self.local.apply(services);
        self.edge
            .apply(&self.applier.vip_ids(), &snapshot.global.block_cidrs)?;
        let wanted: BTreeSet<IpAddr> = services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.ip()))
            .collect();
        let new: Vec<IpAddr> = wanted.difference(&self.resolved).copied().collect();
        if !new.is_empty() {
            neigh::keep_resolved(new);
        }
        self.resolved = wanted;
        if report != Default::default() {
            info!(?report, "kernel L4 tables updated");
        }
        Ok(())
    }
}

/// Everything bound and loaded, ready to run.
pub struct App {
    args: RunArgs,
    settings: Settings,
    proxy: Proxy,
    passthrough: Arc<Passthrough>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
    kernel: Option<Arc<Mutex<Kernel>>>,
    kernel_metrics: Option<Arc<KernelMetrics>>,
    http: TcpListener,
    https: TcpListener,
    admin: TcpListener,
}

impl App {
    /// Loads the kernel programs (if any interface is configured) and binds the listeners.
    pub async fn build(
        args: RunArgs,
        settings: Settings,
        snat: SnatSettings,
    ) -> anyhow::Result<Self> {
        let proxy = Proxy::new(ProxyOptions {
            default_certificate: default_certificate(&args)?,
            ..ProxyOptions::from_run_args(&args)
        })?;
        proxy.seed_global(&settings.global);
        let pt_config = PassthroughConfig {
            userspace: args.passthrough_userspace,
            kernel_log: args.kernel_log,
            ..Default::default()
        };
        let (kernel, kernel_metrics, passthrough) = if args.xdp.interfaces.is_empty() {
            info!("no --xdp-interface: the kernel L4 path is off");
            if !args.edge.block_cidrs.is_empty() {
                info!("--block-cidrs is enforced by the proxy only (no --xdp-interface)");
            }
            (None, None, Passthrough::start(pt_config).await)
        } else {
            let mut k = Kernel::load(&args, snat)?;
            let m = KernelMetrics::open(&args.xdp.pin.pin_dir)?;
            // The splice program comes from the object already loaded for XDP.
            let pt = Passthrough::start_with_kernel(pt_config, k.splice.take()).await;
            (Some(Arc::new(Mutex::new(k))), Some(m), pt)
        };
        let bind = |addr| proxy::listener::bind(addr).with_context(|| format!("binding {addr}"));
        Ok(App {
            http: bind(args.http_addr)?,
            https: bind(args.https_addr)?,
            admin: bind(args.admin_addr)?,
            args,
            settings,
            proxy,
            passthrough: Arc::new(passthrough),
            readiness: Arc::new(Readiness::default()),
            shutdown: CancellationToken::new(),
            kernel,
            kernel_metrics,
        })
    }

    /// Runs until SIGTERM or SIGINT, then drains in-flight requests and stops.
    pub async fn run(self) -> anyhow::Result<()> {
        let App {
            args,
            settings,
            proxy,
            passthrough,
            readiness,
            shutdown,
            kernel,
            kernel_metrics,
            http,
            https,
            admin,
        } = self;
        let store = store::spawn(settings.clone(), args.debounce, 1);

        // Sources.
        let mut kube_client = None;
        // Every source's events pass the ExternalName resolver on their way to the store.
        let events = source::external_names::spawn(
            store.events.clone(),
            args.external_name_refresh,
            Arc::new(source::external_names::SystemLookup),
        );
        let reloads = on_hangup(args.manifests.is_some())?;
        // A source that cannot start (a manifest directory that cannot be read or watched)
        // stops the process: left up, it would serve nothing and never be ready.
        let (source_failed_tx, mut source_failed) = tokio::sync::oneshot::channel::<String>();
        if let Some(dir) = args.manifests.clone() {
            tokio::spawn(async move {
                let resync = source::manifests::RESYNC;
                if let Err(e) = source::manifests::run_resyncing(dir, events, resync, reloads).await
                {
                    error!("manifest source stopped: {e}");
                    let _ = source_failed_tx.send(e.to_string());
                }
            });
        } else {
            let client = source::kube::client(args.kubeconfig.as_deref()).await?;
            source::kube::spawn(client.clone(), events, args.watch_namespace.clone());
            kube_client = Some(client);
        }
        drop(store.events);

        // Appliers.
        let applier = ProxyApplier::new(proxy.clone());
        tokio::spawn(apply_loop(
            store.translations.clone(),
            applier,
            passthrough.clone(),
            kernel.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        let mut leader_task = None;
        // Stopped before `shutdown`, so a last-replica clear runs while the Lease is held.
        let stop_status = CancellationToken::new();
        let mut status_task = None;
        if let Some(client) = kube_client {
            let identity = args.identity.clone().unwrap_or_else(hostname);
            let (leading, task) = apply::leader::spawn(
                client.clone(),
                apply::leader::LeaderConfig::new(&args.election_namespace, &identity),
                shutdown.clone(),
            );
            leader_task = Some(task);
            tokio::spawn(report_leadership(leading.clone(), proxy.metrics()));
            if args.update_status {
                let replicas = args
                    .update_status_on_shutdown
                    .then(|| apply::status::Replicas {
                        namespace: args.election_namespace.clone(),
                        pod: identity.clone(),
                        selector: args.publish_pods.clone(),
                    });
                status_task = Some(tokio::spawn(apply::status::run(
                    client.clone(),
                    apply::status::StatusConfig::following(apply::publish::spawn(
                        Some(client.clone()),
                        publish_source(&args),
                        shutdown.clone(),
                    ))
                    .in_namespace(args.watch_namespace.clone())
                    .clearing_on_shutdown(replicas),
                    store.translations.clone(),
                    leading.clone(),
                    stop_status.clone(),
                )));
            } else {
                info!("--update-status=false: Ingress status is not written");
            }
            tokio::spawn(apply::events::run(
                client,
                apply::events::EventsConfig::new(&args.controller_name, &identity),
                store.translations.clone(),
                leading,
                shutdown.clone(),
            ));
        }

        // Listeners.
        let mut admin_server = AdminServer::new(readiness.clone())
            .with_source(proxy.metrics())
            .with_source(passthrough.metrics())
            .with_source(passthrough.clone());
        if let Some(m) = kernel_metrics {
            admin_server = admin_server.with_source(m);
        }
        tokio::spawn(admin_server.serve(admin, shutdown.clone()));
        tokio::spawn(proxy.serve_http(http));
        let stop_accepting = CancellationToken::new();
        tokio::spawn(serve_https(
            https,
            proxy.clone(),
            passthrough,
            stop_accepting.clone(),
        ));
        info!(http = %args.http_addr, https = %args.https_addr, admin = %args.admin_addr, "ingressd running");

        tokio::select! {
            r = wait_for_signal() => r?,
            Ok(e) = &mut source_failed => anyhow::bail!("manifest source failed: {e}"),
        }
        readiness.set_draining();
        let grace = args.shutdown_grace_period;
        if !grace.is_zero() {
            info!(period = ?grace, "shutdown grace period: serving on while /readyz fails");
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                r = wait_for_signal() => {
                    r?;
                    info!("second signal: grace period cut short");
                }
            }
        }
        // The controller ConfigMap's `worker-shutdown-timeout`, as last applied, over the flag.
        let drain_timeout = proxy
            .active()
            .global
            .drain_timeout
            .unwrap_or(args.drain_timeout);
        info!(timeout = ?drain_timeout, "draining");
        stop_accepting.cancel();
        // The L4 sockets for clients on the node stop taking new ones too (open TCP
        // connections go on); a successor must not find them bound.
        if let Some(k) = &kernel {
            k.lock().unwrap_or_else(|e| e.into_inner()).local.close();
        }
        stop_status.cancel();
        let clean = proxy.drain_handle().drain(drain_timeout).await;
        if !clean {
            warn!("drain timeout reached with requests still in flight");
        }
        // The status writer's last round (a clear by the last replica) ran during the drain;
        // bounded, since the API may be unreachable.
        if let Some(task) = status_task {
            const STATUS_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
            if tokio::time::timeout(STATUS_STOP_TIMEOUT, task)
                .await
                .is_err()
            {
                warn!(timeout = ?STATUS_STOP_TIMEOUT, "Ingress status not cleared in time");
            }
        }
        shutdown.cancel();
        // Let the leader task release its Lease, so another replica takes over at once instead
        // of after the lease duration; bounded, since the API may be unreachable.
        if let Some(task) = leader_task {
            const LEASE_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
            match tokio::time::timeout(LEASE_RELEASE_TIMEOUT, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("leader election task failed: {e}"),
                Err(_) => warn!(
                    timeout = ?LEASE_RELEASE_TIMEOUT,
                    "lease not released in time; it expires on its own"
                ),
            }
        }
        if kernel.is_some() {
            info!(pin_dir = %args.xdp.pin.pin_dir.display(), "XDP programs stay attached through their pinned links; `ingressd cleanup` removes them");
        }
        Ok(())
    }
}

/// Applies every new translation to the proxy and the kernel maps; readiness follows the
/// first one that reached both. A failed kernel apply is retried (1 s, doubling to 30 s)
/// until it succeeds or a newer translation replaces it: nothing else would write the maps
/// again while the configuration stays the same.
async fn apply_loop(
    mut translations: watch::Receiver<Arc<Translation>>,
    proxy: ProxyApplier,
    passthrough: Arc<Passthrough>,
    kernel: Option<Arc<Mutex<Kernel>>>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    const RETRY_FIRST: Duration = Duration::from_secs(1);
    const RETRY_MAX: Duration = Duration::from_secs(30);
    let mut retry: Option<(Instant, Duration, Arc<crate::snapshot::Snapshot>)> = None;
    let mut recheck = tokio::time::interval(LOCAL_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let retry_at = retry.as_ref().map(|(at, _, _)| *at);
        tokio::select! {
            changed = translations.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
            _ = recheck.tick() => {
                if let Some(k) = kernel.clone() {
                    let _ = tokio::task::spawn_blocking(move || {
                        k.lock().unwrap_or_else(|e| e.into_inner()).local.recheck()
                    })
                    .await;
                }
                continue;
            }
            () = crate::sleep_until_opt(retry_at.map(Into::into)) => {
                if let Some((_, delay, snap)) = retry.take() {
                    match apply_kernel(kernel.clone(), snap.clone()).await {
                        true => {
                            info!(generation = snap.generation, "L4 services applied to the kernel maps on retry");
                            readiness.set_ready();
                        }
                        false => {
                            let delay = (delay * 2).min(RETRY_MAX);
                            retry = Some((Instant::now() + delay, delay, snap));
                        }
                    }
                }
                continue;
            }
        }
        let t = translations.borrow_and_update().clone();
        let snapshot = t.snapshot.clone();
        if snapshot.generation == 0 {
            continue;
        }
        let started = Instant::now();
        let summary = proxy.apply(&snapshot);
        passthrough.apply(&snapshot);
        let kernel_ok = apply_kernel(kernel.clone(), snapshot.clone()).await;
        retry = (!kernel_ok).then(|| (Instant::now() + RETRY_FIRST, RETRY_FIRST, snapshot.clone()));
        if kernel_ok {
            readiness.set_ready();
        }
        info!(
            generation = snapshot.generation,
            upstreams = summary.upstreams,
            l4_services = snapshot.l4.len(),
            diagnostics = t.diagnostics.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "configuration applied"
        );
    }
}

/// How often the node-local L4 sockets are checked against this host's addresses: a VIP
/// address failing over to the node is served to its own clients within this.
const LOCAL_RECHECK: Duration = Duration::from_secs(10);

/// Applies the L4 services of `snapshot` to the kernel maps (if any); false when it failed.
async fn apply_kernel(
    kernel: Option<Arc<Mutex<Kernel>>>,
    snapshot: Arc<crate::snapshot::Snapshot>,
) -> bool {
    let Some(k) = kernel else {
        return true;
    };
    let res = tokio::task::spawn_blocking(move || {
        k.lock().unwrap_or_else(|e| e.into_inner()).apply(&snapshot)
    })
    .await;
    match res {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            error!("applying L4 services to the kernel maps failed (retrying): {e:#}");
            false
        }
        Err(e) => {
            error!("kernel applier panicked: {e}");
            false
        }
    }
}

/// The HTTPS port: each connection's ClientHello is peeked; passthrough hosts are spliced to
/// their backend, everything else is handed to the proxy for TLS termination.
async fn serve_https(
    listener: TcpListener,
    proxy: Proxy,
    passthrough: Arc<Passthrough>,
    stop: CancellationToken,
) {
    // Only the port of the local address is used (X-Forwarded-Port): the listener's serves
    // every connection, even on a wildcard address, without a getsockname per accept.
    let Ok(local) = listener.local_addr() else {
        error!("https listener has no local address");
        return;
    };
    loop {
        let (mut tcp, peer, admitted) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = proxy.accept(&listener) => accepted,
        };
        let _ = tcp.set_nodelay(true);
        let (proxy, passthrough) = (proxy.clone(), passthrough.clone());
        // Tracked by the drain: a passthrough connection (spliced or copied) gets the drain
        // timeout to finish, like an in-flight request, instead of being cut by the exit.
        tokio::spawn(proxy.drain_handle().track(async move {
            let _admitted = admitted;
            let Some(origin) = proxy.origin(&mut tcp, peer, local).await else {
                return;
            };
            if let Some(tls) = passthrough.handle(tcp, origin).await {
                proxy.serve_tls(tls, origin).await;
            }
        }));
    }
}

/// Mirrors the election's result into `leader_election_status` until the election ends.
async fn report_leadership(
    mut leading: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<crate::proxy::metrics::ProxyMetrics>,
) {
    loop {
        let now = *leading.borrow_and_update();
        metrics.set_leader(apply::leader::LEASE_NAME, now);
        if leading.changed().await.is_err() {
            return;
        }
    }
}

/// Where the Ingress status addresses come from, by the flags.
pub fn publish_source(args: &RunArgs) -> apply::publish::PublishSource {
    let fixed: Vec<apply::publish::StatusAddress> = args
        .publish_address
        .iter()
        .map(|a| (*a).into())
        .chain(args.publish_status_address.iter().cloned())
        .collect();
    let service = args.publish_service.clone().filter(|_| fixed.is_empty());
    match (&args.publish_pods, service) {
        (Some(selector), _) => apply::publish::PublishSource::Pods {
            namespace: args.election_namespace.clone(),
            selector: selector.clone(),
        },
        (None, Some(nn)) => apply::publish::PublishSource::Service {
            namespace: nn.namespace,
            name: nn.name,
        },
        (None, None) => apply::publish::PublishSource::Fixed(fixed),
    }
}

/// Takes SIGHUP, whose default action would kill the process, as nginx does: a reload. In
/// standalone mode the manifests are read again at once; from the API there is nothing to
/// read again (the watches are current), so it is only logged.
fn on_hangup(standalone: bool) -> anyhow::Result<mpsc::Receiver<()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if standalone {
                info!("SIGHUP: reading the manifest directory again");
                // One pending reload covers any number of signals.
                let _ = tx.try_send(());
            } else {
                info!("SIGHUP: nothing to reload, the configuration follows the API server");
            }
        }
    });
    Ok(rx)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    Ok(())
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "ingressd".into())
}

/// Keeps the event channel type in one place for the sources (used by tests).
pub type EventSender = mpsc::Sender<SourceEvent>;

/// The certificate for unknown SNI from `--default-tls-cert`/`--default-tls-key`, if given.
fn default_certificate(args: &RunArgs) -> anyhow::Result<Option<Arc<rustls::sign::CertifiedKey>>> {
    let (Some(cert), Some(key)) = (&args.default_tls_cert, &args.default_tls_key) else {
        return Ok(None);
    };
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let ck = crate::translate::tls::certified_key_from_pem(&read(cert)?, &read(key)?)
        .map_err(|e| anyhow::anyhow!("default certificate {}: {e}", cert.display()))?;
    info!(cert = %cert.display(), "default certificate loaded");
    Ok(Some(Arc::new(ck)))
}

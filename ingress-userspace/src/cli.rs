//! Command line: `ingressd run | inspect | cleanup`. Parsing only; validation is in `config`.
use std::{net::IpAddr, net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// eBPF/XDP-accelerated Kubernetes ingress data plane.
#[derive(Debug, Parser)]
#[command(name = "ingressd", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the data plane and the controller.
    Run(Box<RunArgs>),
    /// Print the live kernel state from the pinned maps.
    Inspect(InspectArgs),
    /// Detach programs and remove everything pinned under the pin directory.
    Cleanup(PinArgs),
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where kernel state is pinned.
#[derive(Debug, Args, Clone)]
pub struct PinArgs {
    /// bpffs directory holding this instance's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/ingressd")]
    pub pin_dir: PathBuf,
}

/// `ingressd inspect`.
#[derive(Debug, Args, Clone)]
pub struct InspectArgs {
    #[command(flatten)]
    pub pin: PinArgs,
    /// Also list conntrack entries (up to this many).
    #[arg(long, default_value_t = 0)]
    pub conntrack: usize,
}

/// `ingressd run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Standalone mode: read Kubernetes manifests from this directory and watch it.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubernetes mode with this kubeconfig (default: in-cluster config, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Plain HTTP listener.
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http_addr: SocketAddr,
    /// HTTPS listener (TLS termination and passthrough).
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https_addr: SocketAddr,
    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:10254")]
    pub admin_addr: SocketAddr,
    /// Label ingress-nginx's request series (`nginx_ingress_controller_*`) with the rule's
    /// host (ingress-nginx's flag); `false` merges the hosts of a path's series.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_per_host: bool,
    /// Label ingress-nginx's request series with the status class (`2xx`) instead of the
    /// code (ingress-nginx's flag), for fewer series.
    #[arg(long)]
    pub report_status_classes: bool,
    /// ingress-nginx's request series families to leave out of `/metrics`, such as
    /// `nginx_ingress_controller_header_duration_seconds` (ingress-nginx's flag; the prefix
    /// may be left off; repeated or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_socket_metrics: Vec<String>,

    /// Controller string an IngressClass must name in `spec.controller` to be ours.
    #[arg(long, default_value = "ingress.example.dev/xdp-ingress")]
    pub controller_name: String,
    /// Name of the IngressClass also accepted through the legacy annotation.
    #[arg(long, default_value = "xdp")]
    pub ingress_class: String,
    /// Also take Ingresses that name no class at all (no `ingressClassName`, no annotation)
    /// while none of our IngressClasses is the cluster default (ingress-nginx's flag).
    #[arg(long)]
    pub watch_ingress_without_class: bool,
    /// Also take Ingresses whose `ingressClassName` is `--ingress-class`, whether or not an
    /// IngressClass of that name names our controller (ingress-nginx's flag).
    #[arg(long)]
    pub ingress_class_by_name: bool,
    /// Watch Ingresses, Services, EndpointSlices and Secrets of this namespace only
    /// (ingress-nginx's flag of the same name), for one controller per tenant namespace.
    /// IngressClasses are cluster-scoped and ConfigMaps stay watched everywhere (the
    /// controller ConfigMap lives in the controller's namespace). Kubernetes mode only.
    #[arg(long, conflicts_with = "manifests")]
    pub watch_namespace: Option<String>,
    /// Address written to `status.loadBalancer.ingress` of owned Ingresses (repeated or
    /// comma-separated); also the default L4 VIP addresses and, for a wildcard listener, the
    /// addresses edge protection guards.
    #[arg(long, value_delimiter = ',')]
    pub publish_address: Vec<IpAddr>,
    /// ingress-nginx's flag: addresses or DNS names (a load balancer's) written to Ingress
    /// status only, after any `--publish-address` (repeated or comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "publish_pods")]
    pub publish_status_address: Vec<crate::apply::publish::StatusAddress>,
    /// Write the status of owned Ingresses (ingress-nginx's flag); `false` leaves it to
    /// something else, such as another controller in front.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub update_status: bool,
    /// On shutdown, the leader clears the status it wrote when no other ingressd pod remains
    /// and at most one address is published (ingress-nginx's flag): uninstalling then leaves
    /// no dead address for DNS. A rolling update keeps it (the next pod exists already).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub update_status_on_shutdown: bool,
    /// Instead of fixed addresses, publish the node address (`status.hostIP`) of every running
    /// pod matching this label selector in `--election-namespace` (ingressd's own): with the
    /// DaemonSet, every node that takes traffic.
    #[arg(long, value_name = "SELECTOR", conflicts_with = "publish_address")]
    pub publish_pods: Option<String>,
    /// Instead, publish the addresses of the Service `namespace/name` that fronts ingressd
    /// (ingress-nginx's flag): a LoadBalancer's IPs or hostnames, else its external or cluster
    /// IPs. `--publish-address` wins when both are given, as in ingress-nginx.
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "publish_pods")]
    pub publish_service: Option<crate::config::NamespacedName>,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "default")]
    pub election_namespace: String,
    /// Name of this replica in the Lease (default: hostname).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The controller ConfigMap `namespace/name` (ingress-nginx's `--configmap`): `block-cidrs`,
    /// the `hsts` keys, `use-forwarded-headers` and the other load-balancer keys, and defaults
    /// for annotations (`proxy-body-size`, `ssl-redirect`, `whitelist-source-range`, ...). Its
    /// keys replace the flags of the same names; changes apply without a restart.
    #[arg(long)]
    pub configmap: Option<String>,
    /// ConfigMap `namespace/name` listing TCP services (`"port": "ns/svc:port"`).
    #[arg(long)]
    pub tcp_services_configmap: Option<String>,
    /// ConfigMap `namespace/name` listing UDP services.
    #[arg(long)]
    pub udp_services_configmap: Option<String>,
    /// VIP addresses on which the L4 services are exposed (default: the publish addresses).
    #[arg(long)]
    pub l4_address: Vec<IpAddr>,
    /// Service `namespace/name:port` answering requests that match no rule.
    #[arg(long)]
    pub default_backend_service: Option<String>,

    #[command(flatten)]
    pub xdp: XdpArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub hsts: HstsArgs,

    #[command(flatten)]
    pub real_ip: RealIpArgs,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// Log one JSON line per request.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,

    /// On SIGTERM, keep serving new connections this long first, with `/readyz` failing, so
    /// load balancers and Endpoints drop the node before it stops accepting (ingress-nginx's
    /// `--shutdown-grace-period`); a second signal cuts it short.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub shutdown_grace_period: std::time::Duration,
    /// On SIGTERM, wait this long for in-flight requests and open TLS passthrough connections
    /// before exiting.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Coalesce source events for this long before translating.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub debounce: std::time::Duration,
    /// How often the DNS names of ExternalName Services are looked up again (nginx's
    /// `resolver valid=30s`, as ingress-nginx configures it).
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub external_name_refresh: std::time::Duration,
    /// Certificate chain (PEM) served to HTTPS clients whose SNI matches no Ingress, e.g. the
    /// `tls.crt` of a mounted Secret; a self-signed one is generated when absent.
    #[arg(long, requires = "default_tls_key")]
    pub default_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--default-tls-cert`.
    #[arg(long, requires = "default_tls_cert")]
    pub default_tls_key: Option<PathBuf>,
    /// TLS Secret `namespace/name` served to HTTPS clients whose SNI matches no certificate
    /// of an Ingress, as ingress-nginx's flag of the same name; followed while running, over
    /// `--default-tls-cert`.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub default_ssl_certificate: Option<String>,
    /// TLS passthrough: force the userspace copy instead of the sockmap splice.
    #[arg(long)]
    pub passthrough_userspace: bool,
    /// Debugging: turn on the kernel programs' log statements (drops, new flows, unpaired
    /// splice sockets) and log them under target `ingress::programs`. Costs a ring-buffer
    /// write per logged packet; off, the statements are removed at load.
    #[arg(long)]
    pub kernel_log: bool,
}

/// Behind a load balancer or another proxy, named after ingress-nginx's ConfigMap keys.
#[derive(Debug, Args, Clone)]
pub struct RealIpArgs {
    /// Every connection to the HTTP and HTTPS ports must start with a PROXY protocol header
    /// (v1 or v2), as sent by AWS NLB/ELB, HAProxy and others; connections without one are
    /// closed (`use-proxy-protocol`).
    #[arg(long)]
    pub use_proxy_protocol: bool,
    /// Believe `X-Forwarded-Proto`, `-Port`, `-Host` and the client address in
    /// `--forwarded-for-header` from peers in `--proxy-real-ip-cidr`, for a load balancer that
    /// terminates TLS in front (`use-forwarded-headers`).
    #[arg(long)]
    pub use_forwarded_headers: bool,
    /// Believe only the client address in `--forwarded-for-header` from peers in
    /// `--proxy-real-ip-cidr`, e.g. `CF-Connecting-IP` behind a CDN (`enable-real-ip`).
    #[arg(long)]
    pub enable_real_ip: bool,
    /// Peers whose PROXY headers and forwarding headers are believed, comma-separated
    /// (`proxy-real-ip-cidr`). Narrow it to the load balancer's addresses.
    #[arg(long, value_delimiter = ',', default_value = "0.0.0.0/0,::/0")]
    pub proxy_real_ip_cidr: Vec<ipnet::IpNet>,
    /// The header that names the client's address (`forwarded-for-header`).
    #[arg(long, default_value = "X-Forwarded-For")]
    pub forwarded_for_header: http::HeaderName,
    /// Append the client address to an incoming `X-Forwarded-For` instead of replacing it
    /// (ingress-nginx's `compute-full-forwarded-for`): only behind a trusted proxy.
    #[arg(long)]
    pub compute_full_forwarded_for: bool,
}

impl RealIpArgs {
    /// The settings from these flags (the controller ConfigMap's keys go over them).
    pub fn settings(&self) -> crate::snapshot::RealIp {
        crate::snapshot::RealIp {
            proxy_protocol: self.use_proxy_protocol,
            forwarded_headers: self.use_forwarded_headers,
            enable_real_ip: self.enable_real_ip,
            trusted: self.proxy_real_ip_cidr.clone(),
            forwarded_for: self.forwarded_for_header.as_str().to_owned(),
            compute_full_forwarded_for: self.compute_full_forwarded_for,
        }
    }
}

/// `Strict-Transport-Security` on HTTPS responses, as ingress-nginx's ConfigMap keys of the
/// same names (and defaults) set it; those keys in the controller ConfigMap replace these.
#[derive(Debug, Args, Clone)]
pub struct HstsArgs {
    /// Send `Strict-Transport-Security` on HTTPS responses for hosts listed under some
    /// Ingress's `spec.tls` (ingress-nginx's `hsts`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts: bool,
    /// Its `max-age`, in seconds (`hsts-max-age`).
    #[arg(long, default_value_t = 31_536_000)]
    pub hsts_max_age: u64,
    /// Add `includeSubDomains` (`hsts-include-subdomains`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts_include_subdomains: bool,
    /// Add `preload` (`hsts-preload`).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub hsts_preload: bool,
}

impl HstsArgs {
    /// The settings these flags give.
    pub fn settings(&self) -> crate::snapshot::Hsts {
        crate::snapshot::Hsts {
            enabled: self.hsts,
            max_age: self.hsts_max_age,
            include_subdomains: self.hsts_include_subdomains,
            preload: self.hsts_preload,
        }
    }
}

/// Edge protection of the node's ingress destinations (the HTTP and HTTPS listeners and every
/// L4 VIP), enforced by the XDP program before the stack sees a packet.
#[derive(Debug, Args, Clone)]
pub struct EdgeArgs {
    /// Client prefixes refused everywhere (ingress-nginx's `block-cidrs`, which the controller
    /// ConfigMap's key of that name replaces), comma-separated:
    /// dropped in the kernel with `--xdp-interface`, and refused by the proxy (connection
    /// closed, or 403 for a client named by trusted forwarding headers) in any case.
    #[arg(long, value_delimiter = ',')]
    pub block_cidrs: Vec<ipnet::IpNet>,
    /// New TCP connections (and UDP flows to a UDP VIP) per second a source address (an IPv6
    /// /64) may open to the ingress; the excess is dropped by the XDP program (needs
    /// `--xdp-interface`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub edge_syn_rate: Option<u32>,
    /// How many new connections a source may open at once above `--edge-syn-rate`.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub edge_syn_burst: u32,
}

/// Connection limits of the L7 proxy, named after ingress-nginx's ConfigMap keys; the controller
/// ConfigMap's keys of those names replace them while present.
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Idle keep-alive connections kept per upstream endpoint (ingress-nginx's
    /// `upstream-keepalive-connections`, which counts per upstream and worker). A burst of
    /// more concurrent requests than this opens connections that are closed afterwards.
    #[arg(long, default_value_t = 320)]
    pub upstream_keepalive_connections: usize,
    /// How long an idle upstream connection is kept (`upstream-keepalive-timeout`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub upstream_keepalive_timeout: std::time::Duration,
    /// Requests one upstream keep-alive connection serves before it is closed
    /// (`upstream-keepalive-requests`); 0: no limit.
    #[arg(long, default_value_t = 10_000)]
    pub upstream_keepalive_requests: u64,
    /// How long one upstream keep-alive connection is reused at most
    /// (`upstream-keepalive-time`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub upstream_keepalive_time: std::time::Duration,
    /// How long a client connection may wait for its next request (ingress-nginx's
    /// `keep-alive`); the whole request head must arrive within it too, so it also bounds
    /// slow clients (slowloris). Raise it above the idle timeout of a load balancer in front.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub keep_alive: std::time::Duration,
    /// Time an HTTP/1.1 request head may take once it has started to arrive (ingress-nginx's
    /// `client-header-timeout`): a client trickling its headers is cut at this, even when
    /// `--keep-alive` is longer. The connection is closed unanswered.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub client_header_timeout: std::time::Duration,
    /// Longest wait between two reads of a request body (ingress-nginx's
    /// `client-body-timeout`); a route's shorter `proxy-send-timeout` still applies. A client
    /// that stalls its upload gets 408.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub client_body_timeout: std::time::Duration,
    /// HTTP/2 streams served on one client connection before it is closed gracefully
    /// (`keep-alive-requests`); 0: no limit. HTTP/1.1 connections are not counted.
    #[arg(long, default_value_t = 1000)]
    pub keep_alive_requests: usize,
    /// Concurrent streams per HTTP/2 client connection (`http2-max-concurrent-streams`).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// Client connections open at once, HTTP, HTTPS and TLS passthrough together (like
    /// nginx's `worker_connections`): at the cap, new connections wait in the listen backlog
    /// until one closes. Default: half the open-file limit, which is raised to its hard
    /// limit at start.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
}

/// Kernel data path settings.
#[derive(Debug, Args, Clone)]
pub struct XdpArgs {
    /// Interfaces to attach the XDP L4 program to (none: kernel path off).
    #[arg(long = "xdp-interface")]
    pub interfaces: Vec<String>,
    /// Source address for SNAT of IPv4 L4 traffic to backends.
    #[arg(long)]
    pub snat_v4: Option<std::net::Ipv4Addr>,
    /// Source address for SNAT of IPv6 L4 traffic to backends.
    #[arg(long)]
    pub snat_v6: Option<std::net::Ipv6Addr>,
    /// SNAT source port range, `min-max`.
    #[arg(long, default_value = "20000-32767")]
    pub snat_ports: String,
    /// How long a TCP flow may go without packets before its SNAT port may go to a new flow.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_established: std::time::Duration,
    /// How long after its last packet a TCP flow that saw a FIN keeps its SNAT port (covers
    /// the backend's TIME_WAIT, as Linux conntrack's 120 s does).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_time_wait: std::time::Duration,
    /// How long after its last packet a TCP flow that saw an RST keeps its SNAT port.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_close: std::time::Duration,
    /// How long a UDP flow may go without packets before its SNAT port may go to a new flow.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub conntrack_udp_timeout: std::time::Duration,
    /// How long a flow the backend never answered (TCP or UDP) may go without packets before
    /// its SNAT port may go to a new flow: SYNs to a dead backend and one-way datagrams hold
    /// ports this long, not the established timeout (Linux conntrack: 30 s for unreplied UDP).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub conntrack_unreplied_timeout: std::time::Duration,
    /// VIP capacity of the kernel maps (each VIP's Maglev ring takes 256 KiB).
    #[arg(long, default_value_t = ingress_common::maps::DEFAULT_MAX_VIPS,
          value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub max_vips: u32,
    /// Conntrack capacity (flows). Each of the two tables gives a flow 2 slots of 108 bytes.
    #[arg(long, default_value_t = ingress_common::maps::DEFAULT_CONNTRACK_ENTRIES)]
    pub conntrack_entries: u32,
    /// Attach in generic (skb) mode instead of trying native first.
    #[arg(long)]
    pub xdp_generic: bool,
    #[command(flatten)]
    pub pin: PinArgs,
}

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A duration of more than zero.
fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse_duration("5"), Ok(std::time::Duration::from_secs(5)));
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }

    fn run_args(extra: &[&str]) -> RunArgs {
        let argv = ["ingressd", "run", "--manifests", "/nonexistent"];
        let cli = Cli::try_parse_from(argv.iter().chain(extra)).expect("valid arguments");
        match cli.command {
            Command::Run(r) => *r,
            other => panic!("not a run command: {other:?}"),
        }
    }

    #[test]
    fn edge_flags_name_what_is_guarded() {
        let e = crate::app::edge_settings(&run_args(&[
            "--http-addr=0.0.0.0:80",
            "--https-addr=[2001:db8::1]:443",
            "--publish-address=198.18.0.1",
            "--publish-address=2001:db8::1",
            "--snat-v4=198.18.0.1",
            "--block-cidrs=192.0.2.0/24,2001:db8:bad::/48",
            "--edge-syn-rate=50",
        ]));
        let listeners: Vec<String> = e.listeners.iter().map(|l| l.to_string()).collect();
        // A wildcard IPv4 listener on each named IPv4 address; an exact one as given.
        assert_eq!(listeners, ["198.18.0.1:80", "[2001:db8::1]:443"]);
        let settings =
            crate::app::settings(&run_args(&["--block-cidrs=192.0.2.0/24,2001:db8:bad::/48"]))
                .unwrap();
        assert_eq!(settings.global.block_cidrs.len(), 2);
        assert_eq!(
            e.syn_rate,
            Some(crate::apply::edge::SynRate {
                per_second: 50,
                burst: 20
            })
        );
        assert_eq!(crate::app::edge_settings(&run_args(&[])).syn_rate, None);
        let bad = ["ingressd", "run", "--block-cidrs=192.0.2.0/33"];
        assert!(Cli::try_parse_from(bad).is_err(), "an invalid prefix");
        let bad = ["ingressd", "run", "--edge-syn-rate=0"];
        assert!(Cli::try_parse_from(bad).is_err(), "a zero rate");
    }

    #[test]
    fn limit_flags_reach_the_proxy_limits() {
        let defaults = crate::proxy::limits::Limits::default();
        let l = crate::proxy::ProxyOptions::from_run_args(&run_args(&[])).limits;
        assert_eq!(
            (
                l.upstream_max_idle_per_endpoint,
                l.upstream_idle_timeout,
                l.max_requests_per_connection,
                l.h2_max_concurrent_streams,
                l.upstream_max_requests,
                l.upstream_max_lifetime,
                l.header_read_timeout
            ),
            (
                defaults.upstream_max_idle_per_endpoint,
                defaults.upstream_idle_timeout,
                defaults.max_requests_per_connection,
                defaults.h2_max_concurrent_streams,
                defaults.upstream_max_requests,
                defaults.upstream_max_lifetime,
                defaults.header_read_timeout
            ),
            "the flags' defaults are the library's"
        );
        let l = crate::proxy::ProxyOptions::from_run_args(&run_args(&[
            "--upstream-keepalive-connections",
            "1024",
            "--upstream-keepalive-timeout",
            "5s",
            "--keep-alive-requests",
            "0",
            "--http2-max-concurrent-streams",
            "16",
            "--upstream-keepalive-requests",
            "0",
            "--upstream-keepalive-time",
            "10m",
            "--keep-alive",
            "75s",
        ]))
        .limits;
        assert_eq!(l.header_read_timeout, std::time::Duration::from_secs(75));
        let argv = ["ingressd", "run", "--keep-alive", "0"];
        assert!(Cli::try_parse_from(argv).is_err(), "no time at all");
        assert_eq!(l.upstream_max_requests, 0);
        assert_eq!(l.upstream_max_lifetime, std::time::Duration::from_secs(600));
        assert_eq!(l.upstream_max_idle_per_endpoint, 1024);
        assert_eq!(l.upstream_idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(l.max_requests_per_connection, 0);
        assert_eq!(l.h2_max_concurrent_streams, 16);
        let argv = ["ingressd", "run", "--http2-max-concurrent-streams", "0"];
        assert!(Cli::try_parse_from(argv).is_err(), "no streams at all");
    }

    #[test]
    fn ingress_nginx_status_flags() {
        let argv = [
            "ingressd",
            "run",
            "--publish-status-address",
            "192.0.2.1,192.0.2.2",
            "--update-status=false",
        ];
        let Ok(Cli {
            command: Command::Run(r),
            ..
        }) = Cli::try_parse_from(argv)
        else {
            panic!("ingress-nginx's spellings parse");
        };
        assert_eq!(r.publish_status_address.len(), 2);
        assert!(
            r.publish_address.is_empty(),
            "status only, not an L4 address"
        );
        assert!(!r.update_status);
        // It takes DNS names too, after --publish-address's entries.
        let r = run_args(&[
            "--publish-address=192.0.2.9",
            "--publish-status-address=lb-1.elb.example.com,198.51.100.1",
        ]);
        let crate::apply::publish::PublishSource::Fixed(a) = crate::app::publish_source(&r) else {
            panic!("fixed addresses");
        };
        let shown: Vec<String> = a.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["192.0.2.9", "lb-1.elb.example.com", "198.51.100.1"]);
        let argv = ["ingressd", "run", "--publish-status-address", "not a name"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = [
            "ingressd",
            "run",
            "--publish-status-address=192.0.2.1",
            "--publish-pods=app=x",
        ];
        assert!(Cli::try_parse_from(argv).is_err(), "two sources");
        let Ok(Cli {
            command: Command::Run(r),
            ..
        }) = Cli::try_parse_from(["ingressd", "run"])
        else {
            panic!("defaults parse");
        };
        assert!(r.update_status && r.publish_address.is_empty());
        assert!(r.update_status_on_shutdown);
        assert!(!run_args(&["--update-status-on-shutdown=false"]).update_status_on_shutdown);
        assert!(r.metrics_per_host);
        assert!(!run_args(&["--metrics-per-host=false"]).metrics_per_host);
        assert!(!r.report_status_classes && r.exclude_socket_metrics.is_empty());
        let r = run_args(&[
            "--report-status-classes",
            "--exclude-socket-metrics=nginx_ingress_controller_request_size,response_size",
        ]);
        assert!(r.report_status_classes);
        assert_eq!(
            r.exclude_socket_metrics,
            ["nginx_ingress_controller_request_size", "response_size"]
        );
    }

    #[test]
    fn publish_service_names_the_status_source() {
        use crate::{app, apply::publish::PublishSource};
        let svc = ["--publish-service", "ingress/front"];
        assert_eq!(
            app::publish_source(&run_args(&svc)),
            PublishSource::Service {
                namespace: "ingress".into(),
                name: "front".into()
            }
        );
        assert!(app::settings(&run_args(&svc)).is_ok());
        // As in ingress-nginx, fixed addresses win over the Service.
        let both = run_args(&[svc[0], svc[1], "--publish-address", "192.0.2.1"]);
        assert!(matches!(
            app::publish_source(&both),
            PublishSource::Fixed(a) if a.len() == 1
        ));
        let argv = ["ingressd", "run", svc[0], svc[1], "--publish-pods", "app=x"];
        assert!(Cli::try_parse_from(argv).is_err(), "two dynamic sources");
        let bad = Cli::try_parse_from(["ingressd", "run", "--publish-service", "front"]);
        let msg = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("--publish-service") && msg.contains("namespace/name"),
            "{msg}"
        );
    }

    #[test]
    fn watch_namespace_is_for_kubernetes_mode_only() {
        let argv = ["ingressd", "run", "--watch-namespace", "team-a"];
        let Ok(Cli {
            command: Command::Run(r),
            ..
        }) = Cli::try_parse_from(argv)
        else {
            panic!("--watch-namespace alone parses");
        };
        assert_eq!(r.watch_namespace.as_deref(), Some("team-a"));
        let argv = [
            "ingressd",
            "run",
            "--manifests",
            "/m",
            "--watch-namespace",
            "a",
        ];
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "standalone mode has no namespaces"
        );
    }

    #[test]
    fn external_names_are_looked_up_again_after_a_positive_time() {
        assert_eq!(
            run_args(&[]).external_name_refresh,
            std::time::Duration::from_secs(30)
        );
        let argv = ["ingressd", "run", "--external-name-refresh", "0s"];
        assert!(Cli::try_parse_from(argv).is_err(), "a zero period");
    }

    #[test]
    fn hsts_flags_build_the_header() {
        let hsts = |argv: &[&str]| run_args(argv).hsts.settings().header();
        assert_eq!(
            hsts(&[]).as_deref(),
            Some("max-age=31536000; includeSubDomains"),
        );
        assert_eq!(
            crate::snapshot::Hsts::default().header(),
            hsts(&[]),
            "the flags' defaults are the library's"
        );
        let v = hsts(&[
            "--hsts-max-age",
            "600",
            "--hsts-include-subdomains",
            "false",
            "--hsts-preload",
            "true",
        ]);
        assert_eq!(v.as_deref(), Some("max-age=600; preload"));
        assert_eq!(hsts(&["--hsts", "false"]), None);
        let argv = ["ingressd", "run", "--hsts-max-age", "-1"];
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "not a number of seconds"
        );
    }
}

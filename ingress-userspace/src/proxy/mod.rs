//! The L7 proxy: listeners, TLS termination, routing, upstreams, and error responses.
//!
//! The proxy reads only [`crate::snapshot::Snapshot`], compiled by
//! [`crate::apply::proxy::ProxyApplier`] into an [`ActiveConfig`] (routing table + certificate
//! index) held in one `ArcSwap`: a config change is one pointer swap, requests in flight keep
//! the config they started with, and TLS handshakes read the certificate index live.
//!
//! Wiring: see `app.rs` (`Proxy::new`, `ProxyApplier`, `serve_http`, and `serve_tls` behind the
//! passthrough dispatcher on the HTTPS port).
pub mod accept;
pub mod access_log;
pub mod body;
pub mod compression;
pub mod errors;
pub mod filters;
mod forward;
mod framing;
pub mod headers;
pub mod idle;
pub mod limits;
pub mod listener;
pub mod log_format;
pub mod metrics;
pub mod nginx_metrics;
pub mod orphans;
pub(crate) mod outbound;
pub mod process_stats;
pub mod real_ip;
mod replay;
pub mod router;
mod service;
pub mod slow_reader;
mod target;
pub mod tls;
pub mod tls_sessions;
mod unread;
pub mod upgrade;
pub mod upstream;
pub mod value_match;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper_util::{rt::TokioExecutor, rt::TokioTimer, server::conn::auto};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::cli::RunArgs;

pub use listener::DrainHandle;
pub use tls::TlsSetupError;

use filters::{auth::Authenticator, ratelimit::RateLimiter};
use limits::Limits;
use metrics::ProxyMetrics;
use router::RouteTable;
use tls::CertTable;
use upstream::pool::Connector;

/// The compiled configuration the proxy serves from.
#[derive(Debug, Default)]
pub struct ActiveConfig {
    /// Generation of the snapshot this was compiled from (0: nothing applied yet).
    pub generation: u64,
    pub routes: RouteTable,
    pub certs: CertTable,
    /// Clients refused everywhere (`block-cidrs`) and the HSTS header.
    pub global: GlobalPolicy,
    /// The TLS server config when `ssl-protocols`/`ssl-ciphers` narrow the acceptor's.
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
}

/// The snapshot's controller-wide settings, in the form requests use.
#[derive(Debug)]
pub struct GlobalPolicy {
    pub block_cidrs: Vec<ipnet::IpNet>,
    /// `Strict-Transport-Security` for HTTPS answers of hosts with TLS; `None`: not sent.
    pub hsts: Option<HeaderValue>,
    pub limit_req_status: http::StatusCode,
    pub limit_conn_status: http::StatusCode,
    pub http_redirect_code: http::StatusCode,
    pub no_tls_redirect_locations: Vec<String>,
    pub no_auth_locations: Vec<String>,
    /// Behind a load balancer: the PROXY protocol and trusted forwarding headers. A
    /// connection keeps the PROXY setting and peer trust it was accepted with; requests on it
    /// read the forwarding headers the way the newest settings say.
    pub real_ip: real_ip::RealIp,
    /// Write one JSON access-log line per request (tracing target `access_log`).
    pub access_log: bool,
    /// Also for requests to a host no Ingress names (`enable-access-log-for-default-backend`).
    pub access_log_default_backend: bool,
    /// Set on every request to an upstream (`proxy-set-headers`).
    pub proxy_set_headers: HeaderSet,
    /// Set on every answer to a client (`add-headers`), after the `hide-headers` are removed.
    pub add_headers: HeaderSet,
    /// `allow-backend-server-header`: the upstream's `Server` header is passed on.
    pub backend_server_header: bool,
    /// `enable-underscores-in-headers`: client headers with `_` in their names are kept.
    pub underscores_in_headers: bool,
    /// Time an HTTP/1.1 request head may take from its first bytes (`client-header-timeout`).
    pub client_header_timeout: std::time::Duration,
    /// Longest wait between two reads of a request body (`client-body-timeout`).
    pub client_body_timeout: std::time::Duration,
    /// Time a connection has to send its PROXY protocol header
    /// (`proxy-protocol-header-timeout`).
    pub proxy_protocol_timeout: std::time::Duration,
    /// The TLS settings [`ActiveConfig::server_tls`] was built from.
    pub server_tls: crate::snapshot::ServerTls,
    /// `use-gzip` and `enable-brotli`: compressed answers; `None` while both are off.
    pub compression: Option<compression::CompressionPolicy>,
    /// HTTP/2 streams a client connection accepted now serves before it is retired
    /// (`keep-alive-requests` over the flag's); 0: no limit.
    pub max_requests_per_connection: usize,
    /// The HTTP server for connections accepted now, when `keep-alive` or
    /// `http2-max-concurrent-streams` differ from the flags'; `None`: the proxy's own.
    pub server: Option<Arc<auto::Builder<TokioExecutor>>>,
    /// How long a connection accepted now may go without a request in progress (`keep-alive`
    /// over the flag's; the flag's when `keep-alive` turns keep-alive off).
    pub idle_timeout: std::time::Duration,
    /// The upstream keep-alive limits in force.
    pub upstream_keep_alive: upstream::pool::KeepAliveLimits,
    /// `block-user-agents`: matching requests get 403.
    pub block_user_agents: Option<value_match::ValueMatcher>,
    /// `block-referers`: matching requests get 403.
    pub block_referers: Option<value_match::ValueMatcher>,
    /// `skip-access-log-urls`: matching request URIs are not logged.
    pub skip_access_log_urls: Option<value_match::ValueMatcher>,
    /// `ssl-reject-handshake`: no default certificate for names no host serves.
    pub ssl_reject_handshake: bool,
    /// `generate-request-id`: a request without a usable `X-Request-ID` gets one.
    pub generate_request_id: bool,
    /// `proxy-add-original-uri-header`: `X-Original-Uri` on requests to upstreams.
    pub original_uri_header: bool,
    /// `log-format-upstream`: access-log lines in this format; `None`: the JSON record.
    pub log_format: Option<Arc<log_format::AccessFormat>>,
    /// `worker-shutdown-timeout`: the drain on SIGTERM; `None`: the flag's.
    pub drain_timeout: Option<std::time::Duration>,
}

/// Headers to set, each replacing any of its name; `None` removes it.
#[derive(Debug, Default)]
pub struct HeaderSet(Vec<(http::HeaderName, Option<HeaderValue>)>);

impl HeaderSet {
    /// The snapshot's checked headers; an empty value means removal.
    pub(crate) fn compile(headers: &[(String, String)]) -> Self {
        HeaderSet(
            headers
                .iter()
                .filter_map(|(name, value)| {
                    let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                    if value.is_empty() {
                        return Some((name, None));
                    }
                    Some((name, Some(HeaderValue::from_str(value).ok()?)))
                })
                .collect(),
        )
    }

    /// Applies the set to `headers`.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (name, value) in &self.0 {
            match value {
                Some(v) => {
                    headers.insert(name, v.clone());
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

impl Default for GlobalPolicy {
    fn default() -> Self {
        Self::compile(&crate::snapshot::Global::default(), &Limits::default())
    }
}

impl GlobalPolicy {
    /// Compiles the snapshot's settings; `limits` are the flags' values its keys replace.
    pub fn compile(global: &crate::snapshot::Global, limits: &Limits) -> Self {
        let ka = &global.keep_alive;
        // `keep-alive: 0` closes HTTP/1.1 connections after one response; a new connection
        // still has the flag's time to send its first head.
        let reuse = ka.timeout.is_none_or(|t| !t.is_zero());
        let server_limits = Limits {
            h2_max_concurrent_streams: ka
                .h2_max_concurrent_streams
                .unwrap_or(limits.h2_max_concurrent_streams),
            header_read_timeout: ka
                .timeout
                .filter(|_| reuse)
                .unwrap_or(limits.header_read_timeout),
            max_header_bytes: ka.max_header_bytes.unwrap_or(limits.max_header_bytes),
            ..limits.clone()
        };
        let idle_timeout = server_limits.header_read_timeout;
        let own = server_limits.h2_max_concurrent_streams == limits.h2_max_concurrent_streams
            && idle_timeout == limits.header_read_timeout
            && server_limits.max_header_bytes == limits.max_header_bytes
            && reuse;
        let server = (!own).then(|| Arc::new(server_builder(&server_limits, reuse)));
        let flags = upstream::pool::KeepAliveLimits::from(limits);
        let upstream_keep_alive = upstream::pool::KeepAliveLimits {
            max_idle: ka.upstream_connections.unwrap_or(flags.max_idle),
            idle_timeout: ka.upstream_timeout.unwrap_or(flags.idle_timeout),
            max_requests: ka.upstream_requests.unwrap_or(flags.max_requests),
            max_lifetime: ka.upstream_time.unwrap_or(flags.max_lifetime),
        };
        // The translator checked the codes; a bad one falls back to ingress-nginx's default.
        let status = |code: u16, default| http::StatusCode::from_u16(code).unwrap_or(default);
        GlobalPolicy {
            block_cidrs: global.block_cidrs.clone(),
            hsts: global
                .hsts
                .header()
                .and_then(|v| HeaderValue::from_str(&v).ok()),
            limit_req_status: status(
                global.limit_req_status,
                http::StatusCode::SERVICE_UNAVAILABLE,
            ),
            limit_conn_status: status(
                global.limit_conn_status,
                http::StatusCode::SERVICE_UNAVAILABLE,
            ),
            http_redirect_code: status(
                global.http_redirect_code,
                http::StatusCode::PERMANENT_REDIRECT,
            ),
            no_tls_redirect_locations: global.no_tls_redirect_locations.clone(),
            no_auth_locations: global.no_auth_locations.clone(),
            real_ip: real_ip::RealIp::compile(&global.real_ip),
            access_log: global.access_log,
            access_log_default_backend: global.access_log_default_backend,
            proxy_set_headers: HeaderSet::compile(&global.proxy_set_headers),
            add_headers: HeaderSet::compile(
                &global
                    .hide_headers
                    .iter()
                    .map(|h| (h.clone(), String::new()))
                    .chain(global.add_headers.iter().cloned())
                    .collect::<Vec<_>>(),
            ),
            backend_server_header: global.backend_server_header,
            underscores_in_headers: global.underscores_in_headers,
            client_header_timeout: global
                .client_header_timeout
                .unwrap_or(limits.client_header_timeout),
            client_body_timeout: global
                .client_body_timeout
                .unwrap_or(limits.client_body_timeout),
            proxy_protocol_timeout: global
                .proxy_protocol_timeout
                .unwrap_or(limits.proxy_protocol_timeout),
            server_tls: global.server_tls.clone(),
            compression: compression::CompressionPolicy::compile(global),
            max_requests_per_connection: ka.requests.unwrap_or(limits.max_requests_per_connection),
            server,
            idle_timeout,
            upstream_keep_alive,
            block_user_agents: value_match::ValueMatcher::compile(&global.block_user_agents),
            block_referers: value_match::ValueMatcher::compile(&global.block_referers),
            skip_access_log_urls: value_match::ValueMatcher::compile(&global.skip_access_log_urls),
            ssl_reject_handshake: global.ssl_reject_handshake,
            generate_request_id: global.generate_request_id,
            original_uri_header: global.original_uri_header,
            log_format: global
                .log_format
                .as_ref()
                .map(|f| Arc::new(log_format::AccessFormat::compile(f, global.log_escape))),
            drain_timeout: global.drain_timeout,
        }
    }

    /// Whether a request's `User-Agent` or `Referer` is refused (`block-user-agents`,
    /// `block-referers`). A request without the header is never refused, as in nginx, where
    /// the empty value matches no entry.
    pub fn refused_client(&self, headers: &http::HeaderMap) -> bool {
        let hit = |m: &Option<value_match::ValueMatcher>, name: http::header::HeaderName| {
            m.as_ref().is_some_and(|m| {
                headers
                    .get(name)
                    .is_some_and(|v| !v.is_empty() && m.matches(v.as_bytes()))
            })
        };
        hit(&self.block_user_agents, http::header::USER_AGENT)
            || hit(&self.block_referers, http::header::REFERER)
    }

    /// Whether a request to `uri` is logged (`access_log`, less `skip-access-log-urls`).
    pub fn logs(&self, uri: &http::Uri) -> bool {
        self.access_log
            && !self.skip_access_log_urls.as_ref().is_some_and(|m| {
                let request_uri = uri.path_and_query().map_or("/", |p| p.as_str());
                m.matches(request_uri.as_bytes())
            })
    }

    /// Whether a route with path `path` is exempt from the redirect to HTTPS.
    pub fn no_tls_redirect(&self, path: &str) -> bool {
        starts_with_any(&self.no_tls_redirect_locations, path)
    }

    /// Whether a route with path `path` is exempt from the global external authentication.
    pub fn no_auth(&self, path: &str) -> bool {
        starts_with_any(&self.no_auth_locations, path)
    }

    /// Whether a client is in `block-cidrs`.
    pub fn blocked(&self, client: std::net::IpAddr) -> bool {
        !self.block_cidrs.is_empty() && {
            let ip = client.to_canonical();
            self.block_cidrs.iter().any(|n| n.contains(&ip))
        }
    }
}

fn starts_with_any(prefixes: &[String], path: &str) -> bool {
    prefixes.iter().any(|l| path.starts_with(l.as_str()))
}

/// Settings of the proxy that do not come from the snapshot.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub limits: Limits,
    /// Port put in `ssl-redirect` locations (omitted when 443).
    pub https_port: u16,
    /// Certificate for unknown or missing SNI; a self-signed one is generated when `None`.
    pub default_certificate: Option<Arc<CertifiedKey>>,
    /// ingress-nginx's flags for its request series (`--metrics-per-host`,
    /// `--report-status-classes`, `--exclude-socket-metrics`).
    pub series: nginx_metrics::SeriesOptions,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            limits: Limits::default(),
            https_port: 443,
            default_certificate: None,
            series: nginx_metrics::SeriesOptions::default(),
        }
    }
}

impl ProxyOptions {
    /// Options from the `run` command line.
    pub fn from_run_args(args: &RunArgs) -> Self {
        ProxyOptions {
            https_port: args.https_addr.port(),
            series: nginx_metrics::SeriesOptions {
                per_host: args.metrics_per_host,
                status_classes: args.report_status_classes,
                excluded: args
                    .exclude_socket_metrics
                    .iter()
                    .map(|m| m.trim_start_matches("nginx_ingress_controller_").to_owned())
                    .collect(),
                controller: Some(nginx_metrics::ControllerLabels {
                    class: args.controller_name.clone(),
                    namespace: args.election_namespace.clone(),
                    pod: args.identity.clone().unwrap_or_else(crate::app::hostname),
                }),
            },
            limits: Limits {
                header_read_timeout: args.limits.keep_alive,
                client_header_timeout: args.limits.client_header_timeout,
                client_body_timeout: args.limits.client_body_timeout,
                upstream_max_idle_per_endpoint: args.limits.upstream_keepalive_connections,
                upstream_idle_timeout: args.limits.upstream_keepalive_timeout,
                upstream_max_requests: args.limits.upstream_keepalive_requests,
                upstream_max_lifetime: args.limits.upstream_keepalive_time,
                max_requests_per_connection: args.limits.keep_alive_requests,
                h2_max_concurrent_streams: args.limits.http2_max_concurrent_streams,
                max_connections: max_connections(args.limits.max_connections),
                ..Limits::default()
            },
            ..Default::default()
        }
    }
}

/// The open-connection cap: the flag's, or half the open-file limit (which `ingressd` raises
/// at start).
fn max_connections(flag: Option<u64>) -> usize {
    let open_files = accept::open_file_limit();
    let max = match flag {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => open_files.map_or(usize::MAX, accept::default_max_connections),
    };
    tracing::info!(?open_files, max_connections = max, "client connection cap");
    max
}

/// Handle to the L7 proxy; cheap to clone.
#[derive(Clone, Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
}

/// State shared by every connection of the proxy.
pub(crate) struct Shared {
    config: Arc<ArcSwap<ActiveConfig>>,
    metrics: Arc<ProxyMetrics>,
    options: ProxyOptions,
    acceptor: TlsAcceptor,
    connector: Connector,
    limiter: RateLimiter,
    conn_limiter: Arc<filters::connlimit::ConnLimiter>,
    auth: Authenticator,
    auth_client: filters::external_auth::AuthClient,
    mirrors: filters::mirror::Mirrors,
    server: auto::Builder<TokioExecutor>,
    /// The keep-alive limits of every upstream pool, updated with each snapshot.
    pool_settings: Arc<upstream::pool::PoolSettings>,
    drain: Arc<listener::DrainState>,
    /// The open-connection cap of every listener.
    admission: accept::Admission,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("generation", &self.config.load().generation)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy serving nothing (every request 404) until a snapshot is applied.
    pub fn new(options: ProxyOptions) -> Result<Proxy, TlsSetupError> {
        // The flags' limits hold until a snapshot says otherwise.
        let config = Arc::new(ArcSwap::from_pointee(ActiveConfig {
            global: GlobalPolicy::compile(&Default::default(), &options.limits),
            ..ActiveConfig::default()
        }));
        let default_cert = match &options.default_certificate {
            Some(c) => c.clone(),
            None => tls::generate_default_certificate()?,
        };
        let resolver = Arc::new(tls::CertResolver::new(config.clone(), default_cert));
        let acceptor = TlsAcceptor::from(tls::server_config(resolver)?);
        let tls_clients = tls::upstream_client_configs()?;
        // The http/1.1-only one, as upgrades use.
        let auth_client = filters::external_auth::AuthClient::new(tls_clients[2].clone());
        let mirrors = filters::mirror::Mirrors::new(tls_clients[2].clone());
        let connector = Connector::new(tls_clients);
        let server = server_builder(&options.limits, true);
        let pool_settings = upstream::pool::PoolSettings::new((&options.limits).into());
        let metrics = Arc::new(ProxyMetrics::new(options.series.clone()));
        let admission = accept::Admission::new(options.limits.max_connections, metrics.clone());
        Ok(Proxy {
            shared: Arc::new(Shared {
                config,
                metrics,
                options,
                acceptor,
                connector,
                limiter: RateLimiter::default(),
                conn_limiter: Arc::default(),
                auth: Authenticator::default(),
                auth_client,
                mirrors,
                server,
                pool_settings,
                drain: Arc::new(listener::DrainState::default()),
                admission,
            }),
        })
    }

    /// The next client connection on `listener`, once the open-connection cap has room; the
    /// connection keeps its place until the [`accept::Admitted`] is dropped.
    pub async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
    ) -> (
        tokio::net::TcpStream,
        std::net::SocketAddr,
        accept::Admitted,
    ) {
        self.shared.admission.accept(listener).await
    }

    /// The proxy's metrics (for the admin endpoint).
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        self.shared.metrics.clone()
    }

    /// The configuration being served.
    pub fn active(&self) -> Arc<ActiveConfig> {
        self.shared.config.load_full()
    }

    /// The TLS server config of the HTTPS listener.
    pub(crate) fn tls_config(&self) -> &rustls::ServerConfig {
        self.shared.acceptor.config()
    }

    /// The keep-alive limits every upstream pool follows.
    pub(crate) fn pool_settings(&self) -> &Arc<upstream::pool::PoolSettings> {
        &self.shared.pool_settings
    }

    /// Options the proxy was built with.
    pub fn options(&self) -> &ProxyOptions {
        &self.shared.options
    }

    /// Holds the flags' controller-wide settings (the block list above all) until the first
    /// snapshot arrives, which in a cluster waits for every watch to list.
    pub fn seed_global(&self, global: &crate::snapshot::Global) {
        if self.shared.config.load().generation == 0 {
            self.install(ActiveConfig {
                global: GlobalPolicy::compile(global, &self.shared.options.limits),
                ..ActiveConfig::default()
            });
        }
    }

    /// Makes `config` the one new requests and handshakes use.
    pub(crate) fn install(&self, config: ActiveConfig) {
        let old = self.shared.config.swap(Arc::new(config));
        // Freeing a large table (10,000 hosts) takes ~20 ms: not on the apply path. Requests
        // still holding it keep it alive; whoever drops it last frees it. Counters only the
        // old table used go once it is freed (or at a later apply, when requests held it).
        if Arc::strong_count(&old) == 1 {
            let shared = self.shared.clone();
            let _ = std::thread::Builder::new()
                .name("config-drop".into())
                .spawn(move || {
                    drop(old);
                    shared.metrics.prune(&shared.config.load().routes);
                });
        } else {
            self.shared.metrics.prune(&self.shared.config.load().routes);
        }
    }

    /// The handle that drains this proxy's listeners and connections.
    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle::new(self.shared.drain.clone())
    }
}

/// hyper's HTTP/1.1 header count limit when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The client-side HTTP server settings from the limits; `reuse`: HTTP/1.1 keep-alive.
fn server_builder(limits: &Limits, reuse: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(reuse)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    // hyper's own limit is 100 header fields, parsed into arrays on the stack; any explicit
    // limit, even 100, makes it fill two heap arrays of that size per request (~0.6% of a
    // keep-alive request in perf), so only a different limit is passed.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        b.http1().max_headers(limits.max_headers);
    }
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(std::time::Duration::from_secs(60)))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_block_list_holds_before_the_first_snapshot_and_not_after() {
        let proxy = Proxy::new(ProxyOptions::default()).expect("proxy");
        let client: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
        assert!(!proxy.active().global.blocked(client));
        let flags = crate::snapshot::Global {
            block_cidrs: vec!["192.0.2.0/24".parse().expect("net")],
            ..Default::default()
        };
        proxy.seed_global(&flags);
        assert!(proxy.active().global.blocked(client));
        // A snapshot decides from then on, and a late seed does not undo it.
        proxy.install(ActiveConfig {
            generation: 1,
            ..ActiveConfig::default()
        });
        proxy.seed_global(&flags);
        assert!(!proxy.active().global.blocked(client));
    }
}

//! The immutable configuration snapshot: the one thing `translate` produces and every applier
//! consumes. Nothing here knows about Kubernetes types; the proxy, the passthrough listener and
//! the map writer read only this.
use std::{collections::BTreeMap, fmt, net::IpAddr, net::SocketAddr, sync::Arc, time::Duration};

use ipnet::IpNet;

/// Namespace/name of the object a piece of config came from, for logs, metrics and Events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Everything the data plane needs, built in one pass and swapped in atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Increases by one for every snapshot built.
    pub generation: u64,
    /// Host/path routing for terminated HTTP and HTTPS.
    pub http: HttpConfig,
    /// Certificates for TLS termination, chosen by SNI.
    pub tls: TlsConfig,
    /// Hosts whose TLS is not terminated but spliced to the backend by SNI.
    pub passthrough: Vec<PassthroughRoute>,
    /// VIP:port services balanced in the kernel.
    pub l4: Vec<L4Service>,
    /// Controller-wide settings: the flags', with the controller ConfigMap's keys over them.
    pub global: Global,
    /// Only EndpointSlices changed since the snapshot before: ingress-nginx applies such a
    /// change without a reload, so its reload metrics do not count it. Not configuration:
    /// [`Snapshot::same_config`] ignores it.
    pub endpoints_only: bool,
}

impl Snapshot {
    /// Whether both snapshots configure the data plane identically (`generation` ignored).
    pub fn same_config(&self, other: &Snapshot) -> bool {
        self.http == other.http
            && self.tls == other.tls
            && self.passthrough == other.passthrough
            && self.l4 == other.l4
            && self.global == other.global
    }

    /// A hash of what [`Snapshot::same_config`] compares: equal on every replica given the
    /// same objects (by the same build), for ingress-nginx's `config_hash` series. Fed from
    /// the configuration's debug text, which every type of it has and which holds no
    /// unordered map.
    pub fn config_hash(&self) -> u64 {
        use std::{fmt::Write as _, hash::Hasher as _};
        /// Feeds written text to a hasher without keeping it.
        struct Feed(std::collections::hash_map::DefaultHasher);
        impl std::fmt::Write for Feed {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.write(s.as_bytes());
                Ok(())
            }
        }
        let mut feed = Feed(std::collections::hash_map::DefaultHasher::new());
        let _ = write!(
            feed,
            "{:?}{:?}{:?}{:?}{:?}",
            self.http, self.tls, self.passthrough, self.l4, self.global
        );
        // 53 bits: ingress-nginx's gauge is a float, which holds those exactly.
        feed.0.finish() >> 11
    }
}

/// Settings that hold for every host and listener (ingress-nginx's ConfigMap keys of the same
/// names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Clients refused everywhere (`block-cidrs`): by the proxy, and in the kernel with XDP.
    pub block_cidrs: Vec<IpNet>,
    /// `Strict-Transport-Security` on HTTPS answers of hosts with TLS.
    pub hsts: Hsts,
    /// Status of a request over `limit-rps`/`limit-rpm` (`limit-req-status-code`).
    pub limit_req_status: u16,
    /// Status of a request over `limit-connections` (`limit-conn-status-code`).
    pub limit_conn_status: u16,
    /// Status of the `ssl-redirect`/`force-ssl-redirect` redirect (`http-redirect-code`).
    pub http_redirect_code: u16,
    /// Routes whose path starts with one of these are never redirected to HTTPS
    /// (`no-tls-redirect-locations`), so HTTP-01 challenges answer over HTTP.
    pub no_tls_redirect_locations: Vec<String>,
    /// Routes whose path starts with one of these skip the global external authentication
    /// (`no-auth-locations`).
    pub no_auth_locations: Vec<String>,
    /// Behind a load balancer: where the client's address and scheme come from.
    pub real_ip: RealIp,
    /// One JSON access-log line per request (`disable-access-log` turns it off).
    pub access_log: bool,
    /// `enable-access-log-for-default-backend`: requests for a host no Ingress names (the
    /// default backend's, or 404) are logged too; by default they are not, as in ingress-nginx.
    pub access_log_default_backend: bool,
    /// Headers set on every request to an upstream (`proxy-set-headers`), lower-case names.
    pub proxy_set_headers: Vec<(String, String)>,
    /// Headers set on every answer to a client (`add-headers`), lower-case names.
    pub add_headers: Vec<(String, String)>,
    /// Upstream response headers never passed to clients (`hide-headers`), lower-case.
    pub hide_headers: Vec<String>,
    /// The upstream's `Server` header reaches clients (`allow-backend-server-header`).
    pub backend_server_header: bool,
    /// Client headers with `_` in their names are passed on (`enable-underscores-in-headers`).
    pub underscores_in_headers: bool,
    /// `client-header-timeout`: time an HTTP/1.1 request head may take once started; `None`
    /// leaves the flag's value.
    pub client_header_timeout: Option<Duration>,
    /// `client-body-timeout`: longest wait between two reads of a request body; `None` leaves
    /// the flag's value.
    pub client_body_timeout: Option<Duration>,
    /// `proxy-protocol-header-timeout`: how long a connection may take to send its PROXY
    /// protocol header; `None` leaves the built-in 5 s.
    pub proxy_protocol_timeout: Option<Duration>,
    /// TLS offered to clients (`ssl-protocols`, `ssl-ciphers`).
    pub server_tls: ServerTls,
    /// gzip-compressed answers (`use-gzip`, `gzip-level`, `gzip-min-length`, `gzip-types`,
    /// `gzip-disable`).
    pub gzip: Compression,
    /// brotli-compressed answers (`enable-brotli`, `brotli-level`, `brotli-min-length`,
    /// `brotli-types`), preferred over gzip for clients that accept both.
    pub brotli: Compression,
    /// Connection reuse, client and upstream side: the ConfigMap's keys over the flags.
    pub keep_alive: KeepAlive,
    /// Requests whose `User-Agent` matches one of these get 403 (`block-user-agents`).
    pub block_user_agents: Vec<MapSource>,
    /// Requests whose `Referer` matches one of these get 403 (`block-referers`).
    pub block_referers: Vec<MapSource>,
    /// Requests whose URI (path and query as sent) matches one of these are not logged
    /// (`skip-access-log-urls`).
    pub skip_access_log_urls: Vec<MapSource>,
    /// `ssl-reject-handshake`: a TLS handshake without SNI, or for a name no host serves, is
    /// refused instead of answered with the default certificate.
    pub ssl_reject_handshake: bool,
    /// `generate-request-id`: a request without a usable `X-Request-ID` gets a random one;
    /// off, it goes upstream without.
    pub generate_request_id: bool,
    /// `proxy-add-original-uri-header`: requests go upstream with `X-Original-Uri`, the path
    /// and query as the client sent them.
    pub original_uri_header: bool,
    /// `log-format-upstream`: access-log lines in this nginx format instead of the JSON
    /// record; `None`: the JSON record.
    pub log_format: Option<LogFormat>,
    /// `log-format-escape-json` / `log-format-escape-none`: how variable values are escaped.
    pub log_escape: LogEscape,
    /// `error-log-level`: the level of the process's own log; `None`: RUST_LOG's filter.
    pub error_log_level: Option<LogLevel>,
    /// `worker-shutdown-timeout`: on SIGTERM, how long in-flight requests and passthrough
    /// connections may take; `None`: the flag's.
    pub drain_timeout: Option<Duration>,
    /// The controller ConfigMap holds an invalid value, so its last change was not applied
    /// (the previous settings stay, as nginx keeps running when a reload fails):
    /// `config_last_reload_successful` reads 0 until it is fixed.
    pub config_rejected: bool,
}

/// nginx's error-log levels folded onto tracing's (`notice` is `info`; `crit`, `alert` and
/// `emerg` are `error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// An nginx `log_format`: text and variables, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    pub parts: Vec<LogPart>,
}

/// One piece of a [`LogFormat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogPart {
    /// Written as it is.
    Text(String),
    /// Replaced by the request's value.
    Var(LogVar),
}

/// The nginx variables an access-log format may use (ingress-nginx's own among them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogVar {
    RemoteAddr,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    ServerProtocol,
    Scheme,
    Host,
    Status,
    BodyBytesSent,
    RequestLength,
    RequestTime,
    ProxyUpstreamName,
    ProxyAlternativeUpstreamName,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    UpstreamResponseLength,
    RequestId,
    Namespace,
    IngressName,
    ServiceName,
    ServicePort,
    /// `$http_<name>`: a request header, lower-case with `-` for `_`.
    Header(String),
}

/// nginx's `log_format ... escape=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogEscape {
    /// `"`, `\` and bytes outside printable ASCII as `\xXX`; an empty value as `-`.
    #[default]
    Default,
    /// As inside a JSON string; an empty value as nothing.
    Json,
    /// Values as they are; an empty value as `-`.
    None,
}

/// One entry of a list written as the sources of an nginx `map`: a string the whole value
/// must equal, or after `~` (`~*`: ignoring case) a regex found anywhere in the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapSource {
    /// The value equals this.
    Exact(String),
    /// The value contains a match of `pattern` (Rust `regex` syntax).
    Regex { pattern: String, ignore_case: bool },
}

/// Bounds a list's compiled set, as for `use-regex` paths: a ConfigMap must not be able to
/// make every request run a huge automaton.
const MAP_SET_SIZE_LIMIT: usize = 4 << 20;

impl MapSource {
    /// The regexes of `list` as one set, as the proxy matches them (`~*` ignoring case);
    /// `None` when it has none. The translator builds it too, so a list that would not
    /// compile whole (an `(?x)` comment eating the wrapping's `)`, a size over the bound
    /// together) is refused there rather than dropped at run time.
    pub fn regex_set(list: &[MapSource]) -> Result<Option<regex::bytes::RegexSet>, regex::Error> {
        let patterns: Vec<String> = list
            .iter()
            .filter_map(|s| match s {
                MapSource::Exact(_) => None,
                MapSource::Regex {
                    pattern,
                    ignore_case: true,
                } => Some(format!("(?i:{pattern})")),
                MapSource::Regex { pattern, .. } => Some(format!("(?:{pattern})")),
            })
            .collect();
        if patterns.is_empty() {
            return Ok(None);
        }
        regex::bytes::RegexSetBuilder::new(&patterns)
            .size_limit(MAP_SET_SIZE_LIMIT)
            .build()
            .map(Some)
    }
}

/// The controller ConfigMap's connection-reuse keys; `None` leaves the flag's value (the
/// proxy's start-time limits) in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepAlive {
    /// `keep-alive`: how long a client connection may wait for its next request head (also
    /// the time to send a whole head); zero: HTTP/1.1 connections close after one response.
    pub timeout: Option<Duration>,
    /// `keep-alive-requests`: HTTP/2 streams per client connection; 0 for no limit.
    pub requests: Option<usize>,
    /// `http2-max-concurrent-streams`, for client connections accepted from then on.
    pub h2_max_concurrent_streams: Option<u32>,
    /// `large-client-header-buffers` (number times size): the largest request head, bytes.
    pub max_header_bytes: Option<usize>,
    /// `upstream-keepalive-connections`: idle connections kept per endpoint.
    pub upstream_connections: Option<usize>,
    /// `upstream-keepalive-timeout`: how long one stays idle.
    pub upstream_timeout: Option<Duration>,
    /// `upstream-keepalive-requests`: requests one upstream connection serves; 0 for no limit.
    pub upstream_requests: Option<u64>,
    /// `upstream-keepalive-time`: how long one upstream connection is reused at most.
    pub upstream_time: Option<Duration>,
}

/// One response compression (`use-gzip` or `enable-brotli`) and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compression {
    pub enabled: bool,
    /// gzip: 1 (fastest) to 9; brotli: 0 to 11.
    pub level: u32,
    /// Answers known to be shorter are sent as they are.
    pub min_length: u64,
    /// MIME types compressed (`text/html` always is); `*` for all.
    pub types: Vec<String>,
    /// `gzip-disable`: clients whose `User-Agent` matches one of these get no compression.
    pub disable_for: Vec<MapSource>,
}

impl Compression {
    /// `use-gzip`'s settings as ingress-nginx defaults them (off).
    pub fn gzip_default() -> Self {
        Compression {
            enabled: false,
            level: 1,
            min_length: 256,
            types: default_compressed_types(),
            disable_for: Vec::new(),
        }
    }

    /// `enable-brotli`'s settings as ingress-nginx defaults them (off).
    pub fn brotli_default() -> Self {
        Compression {
            enabled: false,
            level: 4,
            min_length: 20,
            types: default_compressed_types(),
            disable_for: Vec::new(),
        }
    }
}

/// ingress-nginx's default `gzip-types` and `brotli-types`.
fn default_compressed_types() -> Vec<String> {
    [
        "application/atom+xml",
        "application/javascript",
        "application/x-javascript",
        "application/json",
        "application/rss+xml",
        "application/vnd.ms-fontobject",
        "application/x-font-ttf",
        "application/x-web-app-manifest+json",
        "application/xhtml+xml",
        "application/xml",
        "font/opentype",
        "image/svg+xml",
        "image/x-icon",
        "text/css",
        "text/javascript",
        "text/plain",
        "text/x-component",
    ]
    .map(String::from)
    .to_vec()
}

/// TLS offered to clients on the HTTPS listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTls {
    /// `ssl-protocols`.
    pub versions: TlsVersions,
    /// `ssl-ciphers`: the TLS 1.2 suites, in the server's order of preference; `None`: all of
    /// rustls's.
    pub tls12_suites: Option<Vec<rustls::CipherSuite>>,
    /// `use-http2: "false"`: ALPN offers only `http/1.1`.
    pub http1_only: bool,
    /// Session resumption (`ssl-session-*`).
    pub sessions: TlsSessions,
    /// `ssl-ecdh-curve`: the key exchange groups, in the server's order of preference;
    /// `None`: rustls's.
    pub kx_groups: Option<Vec<rustls::NamedGroup>>,
}

/// How TLS sessions are resumed (`ssl-session-tickets`, `ssl-session-cache`,
/// `ssl-session-cache-size`, `ssl-session-timeout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSessions {
    /// Resumption by tickets the client keeps (keys made in memory, rotated every 6 h).
    pub tickets: bool,
    /// Resumption by sessions the proxy keeps.
    pub cache: bool,
    /// How many sessions it keeps.
    pub cache_entries: usize,
    /// How long after its handshake a session may be resumed; `None`: until its ticket key
    /// retires (12 h at most) or the cache drops it.
    pub timeout: Option<Duration>,
}

impl Default for TlsSessions {
    fn default() -> Self {
        TlsSessions {
            tickets: true,
            cache: true,
            cache_entries: 256,
            timeout: None,
        }
    }
}

impl Default for Global {
    fn default() -> Self {
        Global {
            block_cidrs: Vec::new(),
            hsts: Hsts::default(),
            limit_req_status: 503,
            limit_conn_status: 503,
            http_redirect_code: 308,
            no_tls_redirect_locations: vec!["/.well-known/acme-challenge".into()],
            no_auth_locations: vec!["/.well-known/acme-challenge".into()],
            real_ip: RealIp::default(),
            access_log: true,
            access_log_default_backend: false,
            proxy_set_headers: Vec::new(),
            add_headers: Vec::new(),
            hide_headers: Vec::new(),
            backend_server_header: false,
            underscores_in_headers: false,
            client_header_timeout: None,
            client_body_timeout: None,
            proxy_protocol_timeout: None,
            server_tls: ServerTls::default(),
            gzip: Compression::gzip_default(),
            brotli: Compression::brotli_default(),
            keep_alive: KeepAlive::default(),
            block_user_agents: Vec::new(),
            block_referers: Vec::new(),
            skip_access_log_urls: Vec::new(),
            ssl_reject_handshake: false,
            generate_request_id: true,
            original_uri_header: false,
            log_format: None,
            log_escape: LogEscape::Default,
            error_log_level: None,
            drain_timeout: None,
            config_rejected: false,
        }
    }
}

/// Who the client is behind another proxy (`use-proxy-protocol`, `use-forwarded-headers`,
/// `enable-real-ip`, `proxy-real-ip-cidr`, `forwarded-for-header`,
/// `compute-full-forwarded-for`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealIp {
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// Trusted peers' `X-Forwarded-*` headers name the client, scheme, port and host.
    pub forwarded_headers: bool,
    /// Trusted peers' `forwarded_for` header names the client, and nothing else is believed
    /// (`enable-real-ip`, e.g. with `CF-Connecting-IP`).
    pub enable_real_ip: bool,
    /// The peers whose PROXY header or forwarding headers are believed.
    pub trusted: Vec<IpNet>,
    /// The header naming the client's address, lower case.
    pub forwarded_for: String,
    /// Append the client to an incoming `X-Forwarded-For` instead of replacing it.
    pub compute_full_forwarded_for: bool,
}

impl Default for RealIp {
    fn default() -> Self {
        RealIp {
            proxy_protocol: false,
            forwarded_headers: false,
            enable_real_ip: false,
            trusted: vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())],
            forwarded_for: "x-forwarded-for".into(),
            compute_full_forwarded_for: false,
        }
    }
}

/// The `Strict-Transport-Security` header's settings (`hsts`, `hsts-max-age`,
/// `hsts-include-subdomains`, `hsts-preload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hsts {
    pub enabled: bool,
    /// Seconds.
    pub max_age: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Default for Hsts {
    fn default() -> Self {
        Hsts {
            enabled: true,
            max_age: 31_536_000,
            include_subdomains: true,
            preload: false,
        }
    }
}

impl Hsts {
    /// The header value, or `None` when HSTS is off.
    pub fn header(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        Some(v)
    }
}

/// Virtual hosts and the global fallback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpConfig {
    /// Ordered: exact hosts, then wildcards (longer suffix first), then the catch-all (`Any`).
    pub hosts: Vec<VirtualHost>,
    /// Used when no host matches (and for the host-less rules' unmatched paths): the oldest
    /// catch-all Ingress's `spec.defaultBackend`, else `service_default`. `None`: the proxy
    /// answers 404 itself.
    pub default_backend: Option<Arc<RouteTarget>>,
    /// `--default-backend-service`: a named host's paths that no rule and no fallback of its
    /// own take, and custom error pages, as ingress-nginx's `upstream-default-backend`. Never
    /// a catch-all Ingress, which serves unknown hosts only. `None`: 404.
    pub service_default: Option<Arc<RouteTarget>>,
}

/// How a request's host is matched (case-insensitive, port ignored).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// Lower-case host name.
    Exact(String),
    /// `*.example.com` stored as `example.com`: matches exactly one extra leading label.
    Wildcard(String),
    /// Rules without a host.
    Any,
}

impl HostMatch {
    /// The host as an Ingress writes it (`*.example.com` for a wildcard); `None` for rules
    /// without a host.
    pub fn name(&self) -> Option<String> {
        match self {
            HostMatch::Exact(h) => Some(h.clone()),
            HostMatch::Wildcard(s) => Some(format!("*.{s}")),
            HostMatch::Any => None,
        }
    }

    /// Whether `host` (already lower-cased, port stripped) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|p| p.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            HostMatch::Any => true,
        }
    }
}

/// The routes of one host, ordered by precedence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualHost {
    pub host: HostMatch,
    /// Highest precedence first: longer paths first, `Exact` before `Prefix` at equal length.
    pub routes: Vec<Route>,
    /// `spec.defaultBackend` of the oldest Ingress contributing to this host, if any.
    pub fallback: Option<Arc<RouteTarget>>,
    /// Some Ingress lists this host under `spec.tls` (drives `ssl-redirect`).
    pub tls: bool,
    /// `auth-tls-*` of the oldest main Ingress of the host that sets them: client certificates
    /// are asked for in the handshake and checked on every request to the host, as
    /// ingress-nginx's server-level `ssl_verify_client`.
    pub client_auth: Option<Arc<ClientAuth>>,
    /// `server-alias`: more names served by this host (its routes, certificate and settings),
    /// each only where no host of its own has that name.
    pub aliases: Vec<HostMatch>,
    /// `from-to-www-redirect`: `www.` + this name (or this name without its `www.`) answers
    /// a 308 to this host, where no host of its own has that name. Exact hosts only.
    pub www_redirect: bool,
    /// `app-root` of the oldest main Ingress of the host that sets it: `/` on the host is a
    /// 302 there, whichever rule would take `/`, as ingress-nginx's server-level `if`.
    pub app_root: Option<String>,
}

impl VirtualHost {
    /// The other name `from-to-www-redirect` answers for an exact host (lower-cased):
    /// `www.` + the name, or the name without its `www.`.
    pub fn www_counterpart(&self) -> Option<String> {
        let HostMatch::Exact(name) = &self.host else {
            return None;
        };
        if !self.www_redirect {
            return None;
        }
        let name = name.to_ascii_lowercase();
        Some(match name.strip_prefix("www.") {
            Some(bare) => bare.to_owned(),
            None => format!("www.{name}"),
        })
    }

    /// Every exact name TLS is terminated for on this host (lower-cased): its own, its exact
    /// `server-alias` names, and its `from-to-www-redirect` counterpart.
    pub fn exact_names(&self) -> impl Iterator<Item = String> + '_ {
        let own = match &self.host {
            HostMatch::Exact(h) => Some(h.to_ascii_lowercase()),
            _ => None,
        };
        let aliases = self.aliases.iter().filter_map(|a| match a {
            HostMatch::Exact(h) => Some(h.to_ascii_lowercase()),
            _ => None,
        });
        own.into_iter().chain(aliases).chain(self.www_counterpart())
    }
}

/// `auth-tls-verify-client`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyClient {
    /// A certificate that verifies is required (`on`, the default).
    #[default]
    On,
    /// No certificate is fine; one that does not verify is refused.
    Optional,
    /// Asked for and passed on, never refused (`optional_no_ca`).
    OptionalNoCa,
}

/// The revocation lists of a client CA Secret (`ca.crl`), as nginx's `ssl_crl` reads them.
#[derive(Clone, Debug, Default)]
pub struct Crls {
    /// The lists as read, in order (compared between settings).
    pub der: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
    /// The same, parsed for verification.
    pub parsed: Arc<Vec<webpki::CertRevocationList<'static>>>,
}

/// Client certificate authentication of a host (`auth-tls-secret` and friends).
#[derive(Clone, Debug)]
pub struct ClientAuth {
    /// The Ingress the settings come from.
    pub origin: ObjectRef,
    /// `namespace/name` of the CA Secret, for logs.
    pub secret: String,
    /// The CA certificates of `ca.crt`, in the Secret's order; empty when `denied`.
    pub ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The same CAs as trust anchors.
    pub roots: Arc<rustls::RootCertStore>,
    /// Revocation lists (`ca.crl`); empty: no revocation check.
    pub crls: Crls,
    pub mode: VerifyClient,
    /// `auth-tls-verify-depth`: certificates allowed above the client's, its CA included
    /// (1: signed by a CA of the bundle directly).
    pub depth: u8,
    /// `auth-tls-error-page`: where a refused client is redirected instead of a 400.
    pub error_page: Option<String>,
    /// `auth-tls-pass-certificate-to-upstream`: the PEM chain, URL-escaped, in
    /// `ssl-client-cert`.
    pub pass_certificate: bool,
    /// `auth-tls-match-cn`: the subject DN must match, else 403.
    pub match_cn: Option<Pattern>,
    /// The CA Secret is missing or unusable: requests answer 503 until it is fixed.
    pub denied: bool,
}

impl ClientAuth {
    /// The same CA Secret and checks, whichever Ingress sets them (the roots are derived
    /// from `ca`).
    pub fn same_settings(&self, other: &Self) -> bool {
        self.secret == other.secret
            && self.ca == other.ca
            && self.crls.der == other.crls.der
            && self.mode == other.mode
            && self.depth == other.depth
            && self.error_page == other.error_page
            && self.pass_certificate == other.pass_certificate
            && self.match_cn == other.match_cn
            && self.denied == other.denied
    }
}

/// Equal when the same Ingress sets the same settings.
impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin && self.same_settings(other)
    }
}

impl Eq for ClientAuth {}

/// One path rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub path: PathMatch,
    pub target: Arc<RouteTarget>,
}

/// Ingress path types. `ImplementationSpecific` is translated to `Prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// Whole path equal, case-sensitive.
    Exact(String),
    /// Element-wise prefix on `/`-separated segments; stored without a trailing slash
    /// (except the root, stored as `/`).
    Prefix(String),
    /// `use-regex`: the regex anchored at the start of the path, case-insensitive
    /// (ingress-nginx semantics). Precedence by the length of the source string.
    Regex(Pattern),
}

/// A compiled regex (a `use-regex` path, a `canary-by-header-pattern`) and the text it came from.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub source: String,
    pub regex: regex::Regex,
}

/// Two patterns are equal when their source is: each field that holds one always compiles it
/// the same way.
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl PathMatch {
    /// Whether the request path (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                p == "/"
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            PathMatch::Regex(r) => r.regex.find(path).is_some_and(|m| m.start() == 0),
        }
    }

    /// The path text, for ordering and logs.
    pub fn as_str(&self) -> &str {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
            PathMatch::Regex(r) => &r.source,
        }
    }
}

/// Where a matched request goes and what happens to it on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    /// The Ingress this rule came from.
    pub origin: ObjectRef,
    pub upstream: Arc<Upstream>,
    pub policy: RoutePolicy,
    /// Alternative backend chosen by weight or header (ingress-nginx canary Ingress).
    pub canary: Option<Canary>,
    /// `default-backend`: serves the route's requests while `upstream` has no endpoint, and
    /// its `custom-http-errors` pages instead of the global default backend.
    pub default_backend: Option<Arc<Upstream>>,
}

/// A Service port resolved to its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `namespace/service:port`, stable across snapshots; keys pools and metrics.
    pub name: String,
    /// Ready pod endpoints (or serving+terminating ones when none is ready). Empty -> 503.
    pub endpoints: Vec<SocketAddr>,
    /// The Service does not exist (a `BackendNotFound` Warning): no endpoints.
    pub missing: bool,
    pub protocol: BackendProtocol,
    /// `proxy-ssl-*` for HTTPS and GRPCS upstreams; `None`: not verified, no client
    /// certificate, no SNI.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// `proxy-ssl-*`: how the TLS of an upstream is checked, and what the proxy presents to it.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// `namespace/name` of the `proxy-ssl-secret`, for logs.
    pub secret: String,
    /// `proxy-ssl-verify: on`: the upstream's chain must lead to one of these (`ca.crt`; no
    /// anchor at all when the Secret is unusable, so nothing verifies).
    pub verify: Option<Arc<rustls::RootCertStore>>,
    /// The CA certificates of `ca.crt` (what `verify` was made from).
    pub ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// `proxy-ssl-verify-depth`: certificates allowed above the upstream's.
    pub depth: u8,
    /// `proxy-ssl-name` (else the Service's cluster DNS name): checked in the upstream's
    /// certificate, and sent as SNI with `sni`.
    pub name: String,
    /// `proxy-ssl-server-name: on`.
    pub sni: bool,
    /// `tls.crt` and `tls.key` of the Secret: presented when the upstream asks.
    pub client_cert: Option<Arc<rustls::sign::CertifiedKey>>,
    /// `proxy-ssl-protocols`: the versions offered.
    pub versions: TlsVersions,
    /// `proxy-ssl-ciphers`: the TLS 1.2 suites offered, in order; `None`: all of rustls's.
    pub tls12_suites: Option<Vec<rustls::CipherSuite>>,
}

/// TLS versions offered to an upstream (`proxy-ssl-protocols`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct TlsVersions {
    pub tls12: bool,
    pub tls13: bool,
}

impl Default for TlsVersions {
    fn default() -> Self {
        TlsVersions {
            tls12: true,
            tls13: true,
        }
    }
}

/// Equal settings, compared by content (the roots come from `ca`).
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
            && self.verify.is_some() == other.verify.is_some()
            && self.ca == other.ca
            && self.depth == other.depth
            && self.name == other.name
            && self.sni == other.sni
            && self.versions == other.versions
            && self.tls12_suites == other.tls12_suites
            && match (&self.client_cert, &other.client_cert) {
                (None, None) => true,
                (Some(a), Some(b)) => a.cert == b.cert,
                _ => false,
            }
    }
}

impl Eq for UpstreamTls {}

/// `backend-protocol` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    #[default]
    Http,
    Https,
    /// gRPC over h2c.
    Grpc,
    /// gRPC over TLS.
    Grpcs,
}

/// A canary backend for a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    pub origin: ObjectRef,
    pub upstream: Arc<Upstream>,
    /// ingress-nginx's name of the canary's upstream, `namespace-service-port` with the port
    /// as the Ingress writes it (a name or a number): the `canary` label of its requests.
    pub label: String,
    /// Share of requests sent to the canary: `weight` out of `weight_total`.
    pub weight: u32,
    /// `canary-weight-total` (100 unless set).
    pub weight_total: u32,
    /// `canary-by-header`: header name; value "always" forces the canary, "never" forbids it.
    pub header: Option<String>,
    /// `canary-by-header-value`: if set, only this value forces the canary.
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`: without a `header_value`, a header value this regex finds a
    /// match in (anywhere, case-sensitive, as nginx's `ngx.re.match`) forces the canary.
    pub header_pattern: Option<Pattern>,
    /// `canary-by-cookie`: cookie name; value "always" forces the canary, "never" forbids
    /// it. Looked at after the header, before the weight.
    pub cookie: Option<String>,
    /// `affinity-canary-behavior: sticky` (the default): on a route with cookie affinity, a
    /// session the canary served stays with it; `legacy`: the canary keeps no session.
    pub sticky: bool,
}

/// Per-route behaviour from annotations. Defaults mean "annotation absent".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePolicy {
    /// The Ingress's annotations are invalid and no valid version of it is kept: every
    /// request gets 503, as ingress-nginx answers a denied location.
    pub rejected: bool,
    /// Redirect HTTP to HTTPS (308) when the host has TLS (`ssl-redirect`, default true).
    pub ssl_redirect: bool,
    /// Redirect HTTP to HTTPS (308) even without TLS on the host.
    pub force_ssl_redirect: bool,
    /// `preserve-trailing-slash`: the HTTPS redirect keeps a trailing `/` of the request URI,
    /// which it otherwise drops, as ingress-nginx does.
    pub preserve_trailing_slash: bool,
    /// `use-port-in-redirects`: the HTTPS redirect names the port even when it is 443.
    pub use_port_in_redirects: bool,
    /// `rewrite-target`: replacement for the matched path; `$1`.. refer to regex groups.
    pub rewrite_target: Option<String>,
    /// `app-root`: redirect `/` to this path (302).
    pub app_root: Option<String>,
    /// `permanent-redirect` / `temporal-redirect`.
    pub redirect: Option<Redirect>,
    pub timeouts: Timeouts,
    /// `proxy-body-size`: larger request bodies get 413. `None`: unlimited.
    pub max_body_bytes: Option<u64>,
    /// `affinity: cookie`.
    pub affinity: Option<CookieAffinity>,
    /// `whitelist-source-range`: if non-empty, only these client networks are served (403).
    pub allow_sources: Vec<IpNet>,
    /// `denylist-source-range`: these client networks get 403.
    pub deny_sources: Vec<IpNet>,
    /// `limit-rps`: requests per second per client address; excess gets 503 (ingress-nginx).
    pub limit_rps: Option<u32>,
    /// `limit-rpm`: requests per minute per client address, a bucket of its own beside
    /// `limit_rps`'s.
    pub limit_rpm: Option<u32>,
    /// `limit-burst-multiplier`: a bucket holds this many seconds' (or minutes') worth.
    pub limit_burst_multiplier: u32,
    /// `limit-whitelist` / `limit-allowlist`: client networks the rate limits skip.
    pub limit_exempt: Vec<IpNet>,
    /// `limit-connections`: requests in progress per client address; excess gets 503.
    pub limit_connections: Option<u32>,
    /// `limit-rate` and `limit-rate-after`: each response's body is sent no faster than this.
    pub limit_rate: Option<SendRate>,
    /// `satisfy: any`: one of the access checks (source range, basic auth, `auth-url`)
    /// allowing is enough, as nginx's `satisfy any`; otherwise all must.
    pub satisfy_any: bool,
    /// `enable-cors` family.
    pub cors: Option<Cors>,
    /// `auth-type: basic` with an htpasswd Secret.
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// `custom-http-errors`: upstream responses with these codes are replaced by the
    /// default backend's answer (or a short proxy-generated body if there is none).
    pub custom_http_errors: Vec<u16>,
    pub load_balance: LoadBalance,
    /// Tries per request, the first included (`proxy-next-upstream-tries`).
    pub max_attempts: u32,
    /// Which failures send a request on to the next endpoint (`proxy-next-upstream`).
    pub next_upstream: NextUpstream,
    /// `upstream-vhost`: the Host (and HTTP/2 `:authority`) the upstream sees instead of the
    /// client's; `X-Forwarded-Host` keeps the client's. A valid `host[:port]`.
    pub upstream_vhost: Option<String>,
    /// `x-forwarded-prefix`: sent upstream as `X-Forwarded-Prefix`.
    pub forwarded_prefix: Option<String>,
    /// `auth-url` and its companions: an external service decides on each request.
    pub external_auth: Option<Arc<ExternalAuth>>,
    /// `proxy-redirect-from` / `proxy-redirect-to`: a `Location` or `Refresh` URL from the
    /// upstream that starts with `.0` has that prefix replaced by `.1`.
    pub redirect_rewrite: Option<(String, String)>,
    /// `proxy-cookie-path` / `proxy-cookie-domain`: the upstream's `Set-Cookie` attributes
    /// rewritten.
    pub cookie_rewrite: Option<CookieRewrite>,
    /// `mirror-target`: a copy of each request goes there too, its answer ignored.
    pub mirror: Option<Arc<Mirror>>,
    /// `enable-access-log` (default true): `false` keeps this route's requests out of the
    /// access log (they are still counted in the metrics).
    pub access_log: bool,
    /// `auth-tls-secret` with `auth-tls-verify-client: off`: no certificate is asked for, and
    /// the upstream gets `ssl-client-verify: NONE` in place of any `ssl-client-*` header the
    /// client sent, as ingress-nginx sets them whenever the host has a client CA.
    pub client_cert_off: bool,
    /// `upstream-hash-by`: requests with the same key go to the same endpoint while it is
    /// up (consistent hashing); an affinity cookie still wins.
    pub hash_by: Option<HashKey>,
    /// `upstream-hash-by-subset` with its `-size`: a key goes to a fixed set of this many
    /// endpoints (its best by the same hash), one of them at random per request.
    pub hash_subset: Option<u32>,
    /// `custom-headers`: set on every answer of the route, from a ConfigMap.
    pub custom_headers: Option<Arc<CustomHeaders>>,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            rejected: false,
            ssl_redirect: true,
            force_ssl_redirect: false,
            preserve_trailing_slash: false,
            use_port_in_redirects: false,
            rewrite_target: None,
            app_root: None,
            redirect: None,
            timeouts: Timeouts::default(),
            max_body_bytes: Some(1024 * 1024),
            affinity: None,
            allow_sources: Vec::new(),
            deny_sources: Vec::new(),
            limit_rps: None,
            limit_rpm: None,
            limit_burst_multiplier: 5,
            limit_exempt: Vec::new(),
            limit_connections: None,
            limit_rate: None,
            satisfy_any: false,
            cors: None,
            basic_auth: None,
            custom_http_errors: Vec::new(),
            load_balance: LoadBalance::RoundRobin,
            max_attempts: 3,
            next_upstream: NextUpstream::default(),
            upstream_vhost: None,
            forwarded_prefix: None,
            hash_by: None,
            hash_subset: None,
            external_auth: None,
            redirect_rewrite: None,
            cookie_rewrite: None,
            mirror: None,
            access_log: true,
            client_cert_off: false,
            custom_headers: None,
        }
    }
}

/// The headers of a `custom-headers` ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomHeaders {
    /// `(name, value)`, lower-case names; each replaces the upstream's, an empty value
    /// removes it.
    pub headers: Vec<(String, String)>,
    /// The ConfigMap is missing, or holds a header that is invalid or not in
    /// `global-allowed-response-headers`: every request is answered 503, as ingress-nginx
    /// answers a denied location, rather than served without the headers it asks for.
    pub denied: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// 301/308 for permanent, 302/307 for temporal (`*-redirect-code` annotations).
    pub status: u16,
    pub location: String,
}

/// When a request goes on to the next endpoint (nginx's `proxy_next_upstream`). A request
/// that reached an upstream goes again only without a body (client bodies are streamed, not
/// kept) and, unless `non_idempotent`, only with an idempotent method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    /// A connection that could not be made (refused, reset, unreachable): `error`.
    pub connect_error: bool,
    /// A connection not made within the connect timeout: `timeout`.
    pub connect_timeout: bool,
    /// The request was sent and the exchange failed before a response head: `error`,
    /// `invalid_header`.
    pub sent_error: bool,
    /// The request was sent and no response head came within the read timeout: `timeout`.
    pub sent_timeout: bool,
    /// Upstream answers that go on to the next endpoint (`http_500`, `http_502`...).
    pub statuses: Vec<u16>,
    /// Non-idempotent methods go on too (`non_idempotent`).
    pub non_idempotent: bool,
    /// `proxy-next-upstream-timeout`: no new try once this long has passed.
    pub timeout: Option<Duration>,
}

impl Default for NextUpstream {
    /// Without the annotation: ingress-nginx's `error timeout`.
    fn default() -> Self {
        NextUpstream {
            connect_error: true,
            connect_timeout: true,
            sent_error: true,
            sent_timeout: true,
            statuses: Vec::new(),
            non_idempotent: false,
            timeout: None,
        }
    }
}

impl NextUpstream {
    /// No try after the first (`off`).
    pub fn off() -> Self {
        NextUpstream {
            connect_error: false,
            connect_timeout: false,
            sent_error: false,
            sent_timeout: false,
            ..NextUpstream::default()
        }
    }

    /// Whether a failure after the request was sent can send it again, so a copy of its
    /// head must be kept.
    pub fn after_send(&self) -> bool {
        self.sent_error || self.sent_timeout || !self.statuses.is_empty()
    }

    /// Whether an upstream answer with `status` counts against its endpoint, as nginx's
    /// `max_fails` counts them: 500, 502, 503, 504 and 429, never 403 or 404.
    pub fn status_is_failure(status: u16) -> bool {
        matches!(status, 500 | 502 | 503 | 504 | 429)
    }
}

/// Upstream timeouts (`proxy-*-timeout`, seconds in annotations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Time allowed between two reads of the upstream response (and for the first byte).
    pub read: Duration,
    /// Time allowed between two writes of the request body to the upstream.
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            send: Duration::from_secs(60),
        }
    }
}

/// `mirror-target` and its companions (nginx's `mirror`): shadow traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// An `http://` or `https://` URL; the variables of `auth-url` are replaced.
    /// Without a path, the request's own path and query are appended.
    pub target: String,
    /// `mirror-host`: the Host the mirror sees (default: the target URL's).
    pub host: Option<String>,
    /// `mirror-request-body` (default on): the body is copied too.
    pub body: bool,
}

/// nginx's `proxy_cookie_path` and `proxy_cookie_domain`, as `(from, to)` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookieRewrite {
    /// A `Path` starting with `.0` has that prefix replaced by `.1`.
    pub path: Option<(String, String)>,
    /// A `Domain` equal to `.0` (case-insensitively, leading dots ignored) becomes `.1`.
    pub domain: Option<(String, String)>,
}

/// Sticky sessions by cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieAffinity {
    /// `session-cookie-name`, default `INGRESSCOOKIE`.
    pub name: String,
    /// `session-cookie-path`, default the route's path.
    pub path: Option<String>,
    /// `session-cookie-max-age` seconds.
    pub max_age: Option<u64>,
    /// `session-cookie-expires` seconds: an `Expires` date that far ahead, for clients that
    /// ignore `Max-Age`.
    pub expires: Option<u64>,
    /// `session-cookie-change-on-failure`: when the cookie's endpoint failed or is ejected and
    /// another one served, the cookie names the new one. Off (ingress-nginx's default), the
    /// client keeps its cookie and goes back to its endpoint once that recovers.
    pub change_on_failure: bool,
    /// `session-cookie-samesite`: `Strict`, `Lax` or `None`.
    pub same_site: Option<&'static str>,
    /// `session-cookie-secure`: `Secure` even over plain HTTP (it is always set over HTTPS,
    /// and with `SameSite=None`, which browsers accept only with it).
    pub secure: bool,
    /// `affinity-mode`.
    pub mode: AffinityMode,
}

/// `limit-rate` / `limit-rate-after`, as nginx's `limit_rate` and `limit_rate_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendRate {
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// Bytes of each response sent before the limit applies.
    pub after: u64,
}

/// `affinity-mode`: how sessions meet new endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AffinityMode {
    /// The cookie holds a session key hashed to an endpoint: adding endpoints moves about
    /// 1/n of the sessions to them (ingress-nginx's default).
    #[default]
    Balanced,
    /// The cookie names its endpoint: a session moves only when that endpoint leaves.
    Persistent,
}

/// CORS settings (`enable-cors`, `cors-allow-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins; `*` allows any.
    pub allow_origins: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub allow_credentials: bool,
    pub max_age: u64,
}

/// Users of an htpasswd Secret (`auth-secret`, key `auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// `auth-realm`.
    pub realm: String,
    /// user -> hash as found in the htpasswd file (bcrypt, apr1, {SHA}, crypt).
    pub users: BTreeMap<String, String>,
    /// The auth Secret is missing or unusable: every request is answered 503, as
    /// ingress-nginx answers a denied location. Dropping the routes instead would let a
    /// less specific route of the host serve the protected path without authentication.
    pub denied: bool,
}

/// Endpoint selection (`load-balance` annotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadBalance {
    #[default]
    RoundRobin,
    /// Power of two choices over peak-EWMA latency (`load-balance: ewma`).
    PeakEwma,
}

/// `auth-url` (an `http://` URL, with `$host`-style variables), `auth-method`,
/// `auth-signin`, `auth-signin-redirect-param`, `auth-response-headers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAuth {
    pub url: String,
    /// `GET` unless `auth-method` says otherwise.
    pub method: String,
    /// Where a 401 from the service sends the client (302), if set.
    pub signin: Option<String>,
    /// Query parameter of `signin` naming the page to come back to (`rd`).
    pub redirect_param: String,
    /// Headers of the service's 2xx answer copied onto the request going upstream.
    pub response_headers: Vec<String>,
    /// `auth-cache-key` and `auth-cache-duration`: answers kept per key and route.
    pub cache: Option<AuthCacheSpec>,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` the service gets, variables
    /// replaced per request; the request's path and query when unset.
    pub request_redirect: Option<String>,
    /// `auth-always-set-cookie`: the service's `Set-Cookie` goes on every answer to the
    /// client, not only on 2xx and redirects.
    pub always_set_cookie: bool,
    /// From the controller ConfigMap's `global-auth-*` keys, not the Ingress's own: routes in
    /// `no-auth-locations` skip it.
    pub global: bool,
    /// `auth-proxy-set-headers`: `(name, value)` set on every auth request (lower-case names;
    /// an empty value removes the header), read from the ConfigMap it names.
    pub proxy_set_headers: Vec<(String, String)>,
    /// That ConfigMap is missing or holds an invalid entry: every request is answered 503,
    /// as ingress-nginx denies the location, rather than asking the service without them.
    pub denied: bool,
}

/// How long answers of the auth service are kept, and under which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCacheSpec {
    /// The request values an answer is kept for (`auth-cache-key`).
    pub key: HashKey,
    /// Status codes kept and for how long (`auth-cache-duration`, `200 202 401 5m` unless
    /// set); `None` as the code stands for `any`.
    pub valid: Vec<(Option<u16>, std::time::Duration)>,
}

/// The key of `upstream-hash-by`: text and request values, concatenated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashKey {
    pub parts: Vec<HashPart>,
}

/// One piece of a [`HashKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashPart {
    Text(String),
    /// `$request_uri`: path and query as sent.
    RequestUri,
    /// `$uri`: the path without the query.
    Uri,
    /// `$remote_addr` / `$binary_remote_addr`: the client address.
    RemoteAddr,
    /// `$host`.
    Host,
    /// `$scheme`.
    Scheme,
    /// `$http_<name>`: a request header (lowercase, `-` for `_`).
    Header(String),
    /// `$cookie_<name>`.
    Cookie(String),
    /// `$arg_<name>`: a query parameter.
    Arg(String),
}

/// Certificates for TLS termination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Ordered: exact names first, then wildcards.
    pub certs: Vec<TlsCert>,
    /// `--default-ssl-certificate`, read (no `hosts`): for names no certificate serves, in
    /// place of the one the proxy started with.
    pub default: Option<TlsCert>,
}

/// A certificate from an Ingress `spec.tls` entry, and the SNI names it serves.
#[derive(Clone, Debug)]
pub struct TlsCert {
    pub origin: ObjectRef,
    /// The Secret the chain and key come from.
    pub secret: ObjectRef,
    /// `spec.tls[].hosts` turned into matchers; `Any` never appears here.
    pub hosts: Vec<HostMatch>,
    /// Parsed chain and key, checked to match each other.
    pub key: Arc<rustls::sign::CertifiedKey>,
}

/// Certificates compare by origin, names and chain; the key is checked to match the chain
/// when it is parsed, so an equal chain means an equal key.
impl PartialEq for TlsCert {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin
            && self.secret == other.secret
            && self.hosts == other.hosts
            && (Arc::ptr_eq(&self.key, &other.key) || self.key.cert == other.key.cert)
    }
}

impl Eq for TlsCert {}

/// A TLS passthrough host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughRoute {
    pub origin: ObjectRef,
    pub host: HostMatch,
    pub upstream: Arc<Upstream>,
    /// Send a PROXY protocol v2 header to the backend first.
    pub proxy_protocol: bool,
    pub load_balance: LoadBalance,
}

/// L4 protocol of a kernel-balanced service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Protocol {
    Tcp,
    Udp,
}

/// A VIP:port balanced by the XDP program over pod endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Service {
    pub origin: ObjectRef,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: L4Protocol,
    /// Pod endpoints; the same list is hashed into the same Maglev table on every node.
    pub backends: Vec<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let w = HostMatch::Wildcard("example.com".into());
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("a.b.example.com"));
        assert!(!w.matches(".example.com"));
        assert!(!w.matches("aexample.com"));
    }

    #[test]
    fn prefix_matches_by_segment() {
        let p = PathMatch::Prefix("/foo".into());
        assert!(p.matches("/foo"));
        assert!(p.matches("/foo/"));
        assert!(p.matches("/foo/bar"));
        assert!(!p.matches("/foobar"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
        let e = PathMatch::Exact("/foo".into());
        assert!(e.matches("/foo"));
        assert!(!e.matches("/foo/"));
    }
}

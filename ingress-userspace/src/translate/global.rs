//! The controller ConfigMap (`--configmap`, as ingress-nginx's flag of the same name): global
//! settings over the flags' values, and defaults for annotations an Ingress does not set.
//!
//! Global keys: `block-cidrs`, `use-http2`, `enable-underscores-in-headers`, the `hsts` family,
//! `limit-req-status-code`, `limit-conn-status-code`, `http-redirect-code`,
//! `no-tls-redirect-locations`, `no-auth-locations`, `disable-access-log`, `ssl-protocols`,
//! `ssl-ciphers`, `use-gzip` and the `gzip-*` keys, `enable-brotli` and the `brotli-*` keys; behind a load balancer `use-proxy-protocol`,
//! `use-forwarded-headers`, `enable-real-ip`, `proxy-real-ip-cidr`, `forwarded-for-header` and
//! `compute-full-forwarded-for`; connection reuse, over the flags of the same names: `keep-alive`,
//! `client-header-timeout`, `client-body-timeout`, `keep-alive-requests`,
//! `http2-max-concurrent-streams`, `large-client-header-buffers` and the `upstream-keepalive-*`
//! keys (`-connections`, `-timeout`, `-requests`, `-time`); the `global-auth-*` keys, an `auth-url`
//! for every Ingress;
//! `proxy-set-headers` and `add-headers`, naming ConfigMaps of headers ([`super::header_sets`]);
//! `hide-headers`, upstream headers clients never see; `allow-backend-server-header`, the
//! upstream's `Server` header passed on; `global-allowed-response-headers`, the headers the
//! `custom-headers` annotation may set; `block-user-agents` and `block-referers` (403), and
//! `skip-access-log-urls`, lists of strings and `~`/`~*` regexes as nginx's `map` takes them;
//! `ssl-reject-handshake`, no default certificate for names no host serves; the `ssl-session-*`
//! keys (tickets, cache, its size, timeout); `ssl-ecdh-curve`;
//! `generate-request-id` and `proxy-add-original-uri-header`, headers to upstreams;
//! `log-format-upstream` with `log-format-escape-json` / `-none`, the access log's lines;
//! `error-log-level`, the process's own log (over RUST_LOG while set); `worker-shutdown-timeout`,
//! the drain on SIGTERM (over `--drain-timeout`).
//!
//! Read key by key: a bad value is reported (an Event on the ConfigMap) and only that key is
//! ignored, so the flag's value or the built-in default stays in force. Keys this controller
//! does not implement are listed in one Event, so a migrated ConfigMap says what it lost.
use std::collections::{BTreeMap, BTreeSet};

use super::{
    annotations::{self, no_space_or_control, parse_bool, parse_in_range, Defaults, NGINX_PREFIX},
    header_sets, reason, Diagnostic,
};
use crate::{
    config::{NamespacedName, Settings},
    snapshot::{Global, LogEscape, LogLevel, MapSource, ObjectRef},
    store::ObjectCache,
};

/// Keys that give a default to the annotation of the same name (same syntax); an Ingress's
/// own annotation replaces it.
pub const DEFAULT_KEYS: &[&str] = &[
    "custom-http-errors",
    "denylist-source-range",
    "force-ssl-redirect",
    "limit-rate",
    "limit-rate-after",
    "load-balance",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "service-upstream",
    "ssl-redirect",
    "whitelist-source-range",
];

/// The `global-auth-*` keys: each stands for the `auth-*` annotation without its `global-`.
pub const GLOBAL_AUTH_KEYS: &[&str] = &[
    "global-auth-always-set-cookie",
    "global-auth-cache-duration",
    "global-auth-cache-key",
    "global-auth-method",
    "global-auth-request-redirect",
    "global-auth-response-headers",
    "global-auth-signin",
    "global-auth-signin-redirect-param",
    "global-auth-url",
];

/// ingress-nginx keys that size or shape nginx's own workers, buffers and hash tables: a
/// migrated ConfigMap carries them, and they have no counterpart to set here (the proxy
/// streams bodies, sizes its buffers itself and runs one worker per core), so they are
/// listed apart from the features ingressd lacks.
const NGINX_TUNING: &[&str] = &[
    "client-body-buffer-size",
    "client-header-buffer-size",
    "enable-multi-accept",
    "map-hash-bucket-size",
    "max-worker-connections",
    "max-worker-open-files",
    "proxy-buffer-size",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-headers-hash-bucket-size",
    "proxy-headers-hash-max-size",
    "proxy-max-temp-file-size",
    "reuse-port",
    "server-name-hash-bucket-size",
    "server-name-hash-max-size",
    "ssl-buffer-size",
    "variables-hash-bucket-size",
    "variables-hash-max-size",
    "worker-cpu-affinity",
    "worker-processes",
    "worker-rlimit-nofile",
];

/// Headers `hide-headers` may not remove: they frame or describe the body the client gets.
const HIDE_REFUSED: &[&str] = &[
    "content-encoding",
    "content-length",
    "content-type",
    "transfer-encoding",
];

/// Keys naming a ConfigMap of headers (`header_set`).
const HEADER_SET_KEYS: [&str; 2] = ["proxy-set-headers", "add-headers"];

/// What the controller ConfigMap contributes to a translation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerConfig {
    /// The flags' settings with the ConfigMap's keys over them.
    pub global: Global,
    /// Defaults for the annotations of every Ingress.
    pub defaults: Defaults,
    /// Bad values and ignored keys, on the ConfigMap.
    pub diagnostics: Vec<Diagnostic>,
    /// The header ConfigMaps its keys name, found or not: a change to one is a change to it.
    pub sources: BTreeSet<NamespacedName>,
    /// `global-allowed-response-headers`: the only headers a `custom-headers` ConfigMap may
    /// set, lower-case.
    pub allowed_response_headers: Vec<String>,
    /// Keys of the ConfigMap with an invalid value.
    pub invalid: usize,
}

/// Reads the ConfigMap `settings.controller_config` names; without one (or while it does not
/// exist) the flags' settings hold and annotations have no defaults.
pub fn read(objects: &ObjectCache, settings: &Settings) -> ControllerConfig {
    let mut out = ControllerConfig {
        global: settings.global.clone(),
        ..Default::default()
    };
    let Some(nn) = &settings.controller_config else {
        return out;
    };
    let Some(cm) = objects.config_map(&nn.namespace, &nn.name) else {
        return out;
    };
    let origin = ObjectRef {
        kind: "ConfigMap",
        namespace: nn.namespace.clone(),
        name: nn.name.clone(),
    };
    out.defaults.source = origin.to_string();
    let no_data = BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&no_data);
    // The other global-auth keys are checked alongside the URL (an annotation family reads
    // them only with one).
    let auth_url = data
        .get("global-auth-url")
        .filter(|url| check_default(&[("auth-url", url)]).is_ok());
    let (mut ignored, mut tuning) = (Vec::new(), Vec::new());
    for (key, value) in data {
        let result = if DEFAULT_KEYS.contains(&key.as_str()) {
            check_default(&[(key, value)]).map(|()| {
                out.defaults.values.insert(key.clone(), value.clone());
            })
        } else if let Some(name) = GLOBAL_AUTH_KEYS
            .contains(&key.as_str())
            .then(|| key.trim_start_matches("global-"))
        {
            let url = auth_url.map_or("http://auth.invalid/", String::as_str);
            check_default(&[("auth-url", url), (name, value)]).map(|()| {
                out.defaults
                    .global_auth
                    .insert(name.to_owned(), value.clone());
            })
        } else if HEADER_SET_KEYS.contains(&key.as_str()) {
            header_set(objects, nn, key, value.trim(), &mut out)
        } else if key == "retry-non-idempotent" {
            parse_bool(value.trim()).map(|b| out.defaults.retry_non_idempotent = b)
        } else if key == "global-allowed-response-headers" {
            annotations::parse_header_names(value).map(|names| out.allowed_response_headers = names)
        } else {
            match set_global(&mut out.global, key, value.trim()) {
                Some(r) => r,
                None => {
                    if NGINX_TUNING.contains(&key.as_str()) {
                        tuning.push(key.as_str());
                    } else {
                        ignored.push(ignored_key(key));
                    }
                    continue;
                }
            }
        };
        if let Err(m) = result {
            // A header ConfigMap that is missing or half wrong is reported, not a failure:
            // ingress-nginx's reload goes through without those headers too.
            if !HEADER_SET_KEYS.contains(&key.as_str()) {
                out.invalid += 1;
            }
            out.diagnostics.push(Diagnostic::new(
                origin.clone(),
                reason::INVALID_CONFIG_KEY,
                format!("key {key}: invalid value {value:?}: {m}; ignored"),
            ));
        }
    }
    if !ignored.is_empty() || !tuning.is_empty() {
        let mut message = Vec::new();
        if !ignored.is_empty() {
            message.push(format!("keys not used by ingressd: {}", ignored.join(", ")));
        }
        if !tuning.is_empty() {
            message.push(format!(
                "keys that tune nginx itself, with nothing to set here: {}",
                tuning.join(", ")
            ));
        }
        out.diagnostics.push(Diagnostic::new(
            origin,
            reason::CONFIG_KEY_IGNORED,
            message.join("; "),
        ));
    }
    out
}

/// `proxy-set-headers` or `add-headers`: the headers of the ConfigMap `value` names, each bad
/// entry reported on the controller ConfigMap; `Err` when there is no such ConfigMap.
fn header_set(
    objects: &ObjectCache,
    controller: &NamespacedName,
    key: &str,
    value: &str,
    out: &mut ControllerConfig,
) -> Result<(), String> {
    let nn = header_sets::reference(&controller.namespace, value)?;
    out.sources.insert(nn.clone());
    let set = header_sets::read(objects, &nn)?;
    let origin = ObjectRef {
        kind: "ConfigMap",
        namespace: controller.namespace.clone(),
        name: controller.name.clone(),
    };
    for problem in set.problems {
        out.diagnostics.push(Diagnostic::new(
            origin.clone(),
            reason::INVALID_CONFIG_KEY,
            format!("key {key}: ConfigMap {value}: {problem}; that header is ignored"),
        ));
    }
    if key == "proxy-set-headers" {
        out.global.proxy_set_headers = set.headers;
    } else {
        out.global.add_headers = set.headers;
    }
    Ok(())
}

/// Checks defaults the way an Ingress carrying just these annotations would be.
fn check_default(pairs: &[(&str, &str)]) -> Result<(), String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), (*v).to_owned()))
        .collect();
    annotations::parse("", Some(&map), &Defaults::default())
        .result
        .map(drop)
        .map_err(|e| e.reason)
}

/// Applies a global key; `None` when `key` is not one.
fn set_global(g: &mut Global, key: &str, value: &str) -> Option<Result<(), String>> {
    let r = match key {
        "block-cidrs" => annotations::parse_ranges(value).map(|n| g.block_cidrs = n),
        "hsts" => parse_bool(value).map(|b| g.hsts.enabled = b),
        "hsts-max-age" => {
            parse_in_range(value, 0..=u64::from(u32::MAX)).map(|n| g.hsts.max_age = n)
        }
        "hsts-include-subdomains" => parse_bool(value).map(|b| g.hsts.include_subdomains = b),
        "hsts-preload" => parse_bool(value).map(|b| g.hsts.preload = b),
        "limit-req-status-code" => parse_in_range(value, 400..=599).map(|c| g.limit_req_status = c),
        "limit-conn-status-code" => {
            parse_in_range(value, 400..=599).map(|c| g.limit_conn_status = c)
        }
        "http-redirect-code" => match value.parse::<u16>() {
            Ok(c @ (301 | 302 | 307 | 308)) => {
                g.http_redirect_code = c;
                Ok(())
            }
            _ => Err("expected 301, 302, 307 or 308".into()),
        },
        "no-tls-redirect-locations" => {
            parse_locations(value).map(|l| g.no_tls_redirect_locations = l)
        }
        "no-auth-locations" => parse_locations(value).map(|l| g.no_auth_locations = l),
        "disable-access-log" => parse_bool(value).map(|b| g.access_log = !b),
        "enable-access-log-for-default-backend" => {
            parse_bool(value).map(|b| g.access_log_default_backend = b)
        }
        "use-gzip" => parse_bool(value).map(|b| g.gzip.enabled = b),
        "gzip-level" => parse_in_range(value, 1..=9).map(|l| g.gzip.level = l),
        "gzip-min-length" => parse_in_range(value, 0..=u64::MAX).map(|n| g.gzip.min_length = n),
        "gzip-types" => parse_mime_types(value).map(|t| g.gzip.types = t),
        "gzip-disable" => parse_gzip_disable(value).map(|d| g.gzip.disable_for = d),
        "enable-brotli" => parse_bool(value).map(|b| g.brotli.enabled = b),
        "brotli-level" => parse_in_range(value, 0..=11).map(|l| g.brotli.level = l),
        "brotli-min-length" => parse_in_range(value, 0..=u64::MAX).map(|n| g.brotli.min_length = n),
        "brotli-types" => parse_mime_types(value).map(|t| g.brotli.types = t),
        "ssl-protocols" => {
            annotations::proxy_ssl::parse_protocols(value).map(|v| g.server_tls.versions = v)
        }
        "ssl-ciphers" => {
            annotations::proxy_ssl::parse_ciphers(value).map(|c| g.server_tls.tls12_suites = c)
        }
        "use-proxy-protocol" => parse_bool(value).map(|b| g.real_ip.proxy_protocol = b),
        "proxy-protocol-header-timeout" => {
            annotations::parse_time(value).map(|t| g.proxy_protocol_timeout = Some(t))
        }
        "use-forwarded-headers" => parse_bool(value).map(|b| g.real_ip.forwarded_headers = b),
        "enable-real-ip" => parse_bool(value).map(|b| g.real_ip.enable_real_ip = b),
        "compute-full-forwarded-for" => {
            parse_bool(value).map(|b| g.real_ip.compute_full_forwarded_for = b)
        }
        "proxy-real-ip-cidr" => match annotations::parse_ranges(value) {
            Ok(n) if n.is_empty() => Err("expected at least one CIDR".into()),
            r => r.map(|n| g.real_ip.trusted = n),
        },
        "forwarded-for-header" => http::HeaderName::from_bytes(value.as_bytes())
            .map(|h| g.real_ip.forwarded_for = h.as_str().to_owned())
            .map_err(|_| "not a header name".into()),
        "hide-headers" => annotations::parse_header_names(value).and_then(|names| {
            match names.iter().find(|n| HIDE_REFUSED.contains(&n.as_str())) {
                Some(n) => Err(format!("{n:?} frames the answer and cannot be hidden")),
                None => {
                    g.hide_headers = names;
                    Ok(())
                }
            }
        }),
        "client-header-timeout" => parse_secs(value, 1).map(|t| g.client_header_timeout = Some(t)),
        "client-body-timeout" => parse_secs(value, 1).map(|t| g.client_body_timeout = Some(t)),
        "enable-underscores-in-headers" => parse_bool(value).map(|b| g.underscores_in_headers = b),
        "use-http2" => parse_bool(value).map(|b| g.server_tls.http1_only = !b),
        "ssl-ecdh-curve" => parse_curves(value).map(|c| g.server_tls.kx_groups = c),
        "ssl-session-tickets" => parse_bool(value).map(|b| g.server_tls.sessions.tickets = b),
        "ssl-session-cache" => parse_bool(value).map(|b| g.server_tls.sessions.cache = b),
        // nginx: one megabyte holds about 4000 sessions.
        "ssl-session-cache-size" => annotations::proxy::parse_size(value).and_then(|b| {
            let entries = b.unwrap_or(0) / 256;
            if (1..=1 << 20).contains(&entries) {
                g.server_tls.sessions.cache_entries = entries as usize;
                Ok(())
            } else {
                Err("expected a size from 1k to 256m, such as 10m".into())
            }
        }),
        "ssl-session-timeout" => {
            annotations::parse_time(value).map(|t| g.server_tls.sessions.timeout = Some(t))
        }
        "allow-backend-server-header" => parse_bool(value).map(|b| g.backend_server_header = b),
        "keep-alive" => parse_secs(value, 0).map(|t| g.keep_alive.timeout = Some(t)),
        "keep-alive-requests" => {
            parse_in_range(value, 0..=u32::MAX as usize).map(|n| g.keep_alive.requests = Some(n))
        }
        "http2-max-concurrent-streams" => parse_in_range(value, 1..=u32::MAX)
            .map(|n| g.keep_alive.h2_max_concurrent_streams = Some(n)),
        "large-client-header-buffers" => {
            parse_header_buffers(value).map(|n| g.keep_alive.max_header_bytes = Some(n))
        }
        "upstream-keepalive-connections" => parse_in_range(value, 0..=u32::MAX as usize)
            .map(|n| g.keep_alive.upstream_connections = Some(n)),
        "upstream-keepalive-timeout" => {
            annotations::parse_time(value).map(|t| g.keep_alive.upstream_timeout = Some(t))
        }
        "upstream-keepalive-requests" => {
            parse_in_range(value, 0..=u64::MAX).map(|n| g.keep_alive.upstream_requests = Some(n))
        }
        "upstream-keepalive-time" => {
            annotations::parse_time(value).map(|t| g.keep_alive.upstream_time = Some(t))
        }
        "block-user-agents" => parse_map_sources(value).map(|l| g.block_user_agents = l),
        "block-referers" => parse_map_sources(value).map(|l| g.block_referers = l),
        "skip-access-log-urls" => parse_map_sources(value).map(|l| g.skip_access_log_urls = l),
        "ssl-reject-handshake" => parse_bool(value).map(|b| g.ssl_reject_handshake = b),
        "generate-request-id" => parse_bool(value).map(|b| g.generate_request_id = b),
        "proxy-add-original-uri-header" => parse_bool(value).map(|b| g.original_uri_header = b),
        "worker-shutdown-timeout" => {
            annotations::parse_time(value).map(|t| g.drain_timeout = Some(t))
        }
        "error-log-level" => parse_log_level(value).map(|l| g.error_log_level = Some(l)),
        "log-format-upstream" => super::log_format::parse(value).map(|f| g.log_format = Some(f)),
        // Keys are read in name order, so `-none` (which wins in ingress-nginx) comes last.
        "log-format-escape-json" => parse_bool(value).map(|b| {
            if b {
                g.log_escape = LogEscape::Json;
            }
        }),
        "log-format-escape-none" => parse_bool(value).map(|b| {
            if b {
                g.log_escape = LogEscape::None;
            }
        }),
        _ => return None,
    };
    Some(r)
}

/// A comma-separated list as ingress-nginx puts it into an nginx `map`: each entry a string
/// to equal, or after `~` (`~*`: ignoring case) a regex to find.
fn parse_map_sources(v: &str) -> Result<Vec<MapSource>, String> {
    let list = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let regex = |pattern: &str, ignore_case| {
                annotations::compile_pattern(pattern).map(|_| MapSource::Regex {
                    pattern: pattern.to_owned(),
                    ignore_case,
                })
            };
            if let Some(p) = s.strip_prefix("~*") {
                regex(p, true)
            } else if let Some(p) = s.strip_prefix('~') {
                regex(p, false)
            } else if s.chars().any(char::is_control) {
                Err(format!("{s:?} contains control characters"))
            } else {
                Ok(MapSource::Exact(s.to_owned()))
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    whole_set(list)
}

/// `list` if its regexes compile together as the proxy matches them, or why not.
fn whole_set(list: Vec<MapSource>) -> Result<Vec<MapSource>, String> {
    match MapSource::regex_set(&list) {
        Ok(_) => Ok(list),
        Err(e) => Err(format!("the regexes do not compile together: {e}")),
    }
}

/// nginx's `gzip_disable` as ingress-nginx writes it: one regex matched against `User-Agent`
/// ignoring case, or `msie6`, nginx's name for Internet Explorer 4 to 6; empty: none.
fn parse_gzip_disable(v: &str) -> Result<Vec<MapSource>, String> {
    let pattern = match v {
        "" => return Ok(Vec::new()),
        "msie6" => r"MSIE [4-6]\.",
        p => p,
    };
    annotations::compile_pattern(pattern)?;
    whole_set(vec![MapSource::Regex {
        pattern: pattern.to_owned(),
        ignore_case: true,
    }])
}

/// nginx's `large_client_header_buffers` (`4 8k`): the head may take that many buffers of that
/// size, so the product bounds it; between 8 KiB (the proxy's floor) and 4 MiB.
fn parse_header_buffers(v: &str) -> Result<usize, String> {
    let mut words = v.split_whitespace();
    let (Some(n), Some(size), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected a number and a size, such as 4 8k".into());
    };
    let n: u64 = parse_in_range(n, 1..=1024)?;
    let size = annotations::proxy::parse_size(size)?.ok_or("the size must not be 0")?;
    let total = n.saturating_mul(size);
    if !(8 << 10..=4 << 20).contains(&total) {
        return Err(format!("{total} bytes in all: must be between 8k and 4m"));
    }
    usize::try_from(total).map_err(|e| e.to_string())
}

/// nginx's `ssl_ecdh_curve`: `auto`, or OpenSSL group names joined by `:`. Groups rustls
/// lacks (`secp521r1`, `X448`) are accepted and not offered, as `ssl-protocols` takes TLS 1.1.
fn parse_curves(v: &str) -> Result<Option<Vec<rustls::NamedGroup>>, String> {
    use rustls::NamedGroup as G;
    if v == "auto" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for name in v.split(':').map(str::trim).filter(|n| !n.is_empty()) {
        let group = match name {
            "X25519" | "x25519" => Some(G::X25519),
            "prime256v1" | "secp256r1" | "P-256" => Some(G::secp256r1),
            "secp384r1" | "P-384" => Some(G::secp384r1),
            "X25519MLKEM768" => Some(G::X25519MLKEM768),
            "secp521r1" | "P-521" | "X448" | "x448" => None,
            _ => return Err(format!("unknown group {name:?}")),
        };
        if let Some(g) = group.filter(|g| !out.contains(g)) {
            out.push(g);
        }
    }
    if out.is_empty() {
        return Err(
            "no group this proxy offers (X25519, prime256v1, secp384r1, X25519MLKEM768)".into(),
        );
    }
    Ok(Some(out))
}

/// nginx's `error_log` levels.
fn parse_log_level(v: &str) -> Result<LogLevel, String> {
    Ok(match v {
        "debug" => LogLevel::Debug,
        "info" | "notice" => LogLevel::Info,
        "warn" => LogLevel::Warn,
        "error" | "crit" | "alert" | "emerg" => LogLevel::Error,
        _ => return Err("expected debug, info, notice, warn, error, crit, alert or emerg".into()),
    })
}

/// A whole number of seconds, as nginx's timeout keys take them, from `min` up to a day.
fn parse_secs(v: &str, min: u64) -> Result<std::time::Duration, String> {
    parse_in_range(v, min..=86_400).map(std::time::Duration::from_secs)
}

/// nginx's `gzip_types`: MIME types separated by spaces, or `*`.
fn parse_mime_types(v: &str) -> Result<Vec<String>, String> {
    let types: Vec<String> = v.split_whitespace().map(str::to_ascii_lowercase).collect();
    for t in &types {
        let ok = t == "*"
            || t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && !b.contains('/')
                    && t.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"/+-.*_".contains(&c))
            });
        if !ok {
            return Err(format!("{t:?} is not a MIME type"));
        }
    }
    if types.is_empty() {
        return Err("no MIME type".into());
    }
    Ok(types)
}

/// Comma-separated path prefixes, each absolute.
fn parse_locations(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            no_space_or_control(s)?;
            if s.starts_with('/') {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not an absolute path"))
            }
        })
        .collect()
}

/// An ignored key as listed, with what to do instead where there is something.
fn ignored_key(key: &str) -> String {
    if key.ends_with("-snippet") || key == "allow-snippet-annotations" {
        format!("{key} (snippets are never run)")
    } else {
        key.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Result<Global, String> {
        let mut g = Global::default();
        set_global(&mut g, key, value).unwrap_or_else(|| panic!("{key} is not global"))?;
        Ok(g)
    }

    #[test]
    fn load_balancer_keys_are_checked() {
        assert!(set("proxy-real-ip-cidr", " , ").is_err(), "trusting nobody");
        assert!(set("proxy-real-ip-cidr", "10.0.0.0/33").is_err());
        assert!(set("forwarded-for-header", "X Forwarded").is_err());
        assert!(set("use-forwarded-headers", "1").is_ok_and(|g| g.real_ip.forwarded_headers));
        assert!(set("disable-access-log", "false").is_ok_and(|g| g.access_log));
        assert!(set("disable-access-log", "true").is_ok_and(|g| !g.access_log));
        assert!(!Global::default().access_log_default_backend);
        assert!(set("enable-access-log-for-default-backend", "true")
            .is_ok_and(|g| g.access_log_default_backend));
        assert!(set("enable-access-log-for-default-backend", "maybe").is_err());
        assert!(set("forwarded-for-header", "X-Client-IP")
            .is_ok_and(|g| g.real_ip.forwarded_for == "x-client-ip"));
        assert!(set_global(&mut Global::default(), "client-body-buffer-size", "8k").is_none());
        assert!(set("client-body-timeout", "15")
            .is_ok_and(|g| g.client_body_timeout == Some(std::time::Duration::from_secs(15))));
        assert!(set("client-header-timeout", "10")
            .is_ok_and(|g| g.client_header_timeout == Some(std::time::Duration::from_secs(10))));
        assert!(set("client-header-timeout", "0").is_err());
        assert!(set("keep-alive", "-1").is_err());
        assert!(set("hide-headers", "X-Powered-By, server")
            .is_ok_and(|g| g.hide_headers == ["x-powered-by", "server"]));
        assert!(set("hide-headers", "Content-Length").is_err());
        assert!(set("allow-backend-server-header", "true").is_ok_and(|g| g.backend_server_header));
        assert!(set("allow-backend-server-header", "sometimes").is_err());
        assert!(set("use-http2", "false").is_ok_and(|g| g.server_tls.http1_only));
        assert!(set("ssl-reject-handshake", "true").is_ok_and(|g| g.ssl_reject_handshake));
        assert!(set("ssl-reject-handshake", "on").is_err());
        let sessions = |k: &str, v: &str| set(k, v).map(|g| g.server_tls.sessions);
        assert!(sessions("ssl-session-tickets", "false").is_ok_and(|s| !s.tickets));
        assert!(sessions("ssl-session-cache", "false").is_ok_and(|s| !s.cache));
        assert_eq!(
            sessions("ssl-session-cache-size", "10m").map(|s| s.cache_entries),
            Ok(40_960)
        );
        assert!(sessions("ssl-session-cache-size", "0").is_err());
        assert!(sessions("ssl-session-cache-size", "1g").is_err());
        assert_eq!(
            sessions("ssl-session-timeout", "10m").map(|s| s.timeout),
            Ok(Some(std::time::Duration::from_secs(600)))
        );
        assert!(sessions("ssl-session-timeout", "0").is_err());
        let curves = |v: &str| set("ssl-ecdh-curve", v).map(|g| g.server_tls.kx_groups);
        assert_eq!(curves("auto"), Ok(None));
        assert_eq!(
            curves("secp384r1:X448:prime256v1:P-384"),
            Ok(Some(vec![
                rustls::NamedGroup::secp384r1,
                rustls::NamedGroup::secp256r1
            ]))
        );
        assert!(curves("secp521r1").is_err(), "nothing left");
        assert!(curves("brainpoolP256r1").is_err());
        assert!(set("generate-request-id", "false").is_ok_and(|g| !g.generate_request_id));
        assert!(set("proxy-add-original-uri-header", "true").is_ok_and(|g| g.original_uri_header));
        assert!(
            set("enable-underscores-in-headers", "true").is_ok_and(|g| g.underscores_in_headers)
        );
        assert!(set("use-http2", "true").is_ok_and(|g| g.server_tls == Default::default()));
        assert!(set("hide-headers", "bad name").is_err());
        assert!(set("keep-alive", "75")
            .is_ok_and(|g| g.keep_alive.timeout == Some(std::time::Duration::from_secs(75))));
    }

    #[test]
    fn ssl_protocols_and_ciphers_as_nginx_writes_them() {
        use rustls::CipherSuite as C;
        let g = set("ssl-protocols", "TLSv1.3").expect("1.3 only");
        assert!(g.server_tls.versions.tls13 && !g.server_tls.versions.tls12);
        // ingress-nginx's default list: the versions rustls lacks are accepted, not offered.
        let g = set("ssl-protocols", "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3").expect("default");
        assert_eq!(g.server_tls, Default::default());
        assert!(set("ssl-protocols", "TLSv1.1").is_err(), "nothing left");
        assert!(set("ssl-protocols", "SSLv3").is_err());
        let g = set(
            "ssl-ciphers",
            "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256",
        )
        .expect("ciphers");
        assert_eq!(
            g.server_tls.tls12_suites,
            Some(vec![
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ])
        );
        assert!(
            set("ssl-ciphers", "AES128-SHA:DES-CBC3-SHA").is_err(),
            "none available"
        );
    }

    #[test]
    fn large_client_header_buffers() {
        let bytes =
            |v: &str| set("large-client-header-buffers", v).map(|g| g.keep_alive.max_header_bytes);
        assert_eq!(bytes("4 8k"), Ok(Some(32 << 10)));
        assert_eq!(bytes(" 8  16K "), Ok(Some(128 << 10)));
        assert_eq!(bytes("1 1m"), Ok(Some(1 << 20)));
        for bad in ["4", "4 8k 2", "x 8k", "0 8k", "4 0", "2 1k", "8 1m", "4 8q"] {
            assert!(bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_log_level() {
        let level = |v: &str| set("error-log-level", v).map(|g| g.error_log_level);
        assert_eq!(level("notice"), Ok(Some(LogLevel::Info)));
        assert_eq!(level("crit"), Ok(Some(LogLevel::Error)));
        assert_eq!(level("debug"), Ok(Some(LogLevel::Debug)));
        assert!(level("verbose").is_err());
        assert!(level("WARN").is_err(), "nginx's levels are lower-case");
        assert_eq!(
            set("worker-shutdown-timeout", "240s").map(|g| g.drain_timeout),
            Ok(Some(std::time::Duration::from_secs(240)))
        );
        assert!(set("worker-shutdown-timeout", "0s").is_err());
    }

    #[test]
    fn log_format_keys() {
        let g = set("log-format-upstream", "$remote_addr $status").expect("format");
        assert_eq!(g.log_format.map(|f| f.parts.len()), Some(3));
        assert!(set("log-format-upstream", "$ssl_cipher").is_err());
        let mut g = Global::default();
        for (k, v) in [
            ("log-format-escape-json", "true"),
            ("log-format-escape-none", "true"),
        ] {
            set_global(&mut g, k, v).expect("a key").expect("valid");
        }
        assert_eq!(
            g.log_escape,
            LogEscape::None,
            "-none wins, as in ingress-nginx"
        );
        assert!(
            set("log-format-escape-json", "true").is_ok_and(|g| g.log_escape == LogEscape::Json)
        );
        assert!(set("log-format-escape-json", "false")
            .is_ok_and(|g| g.log_escape == LogEscape::Default));
    }

    #[test]
    fn map_source_lists() {
        let g = set(
            "block-user-agents",
            " ~*curl/ , Mozilla/5.0 (X11; Linux), ~^Bot$,,",
        )
        .expect("list");
        assert_eq!(
            g.block_user_agents,
            [
                MapSource::Regex {
                    pattern: "curl/".into(),
                    ignore_case: true
                },
                MapSource::Exact("Mozilla/5.0 (X11; Linux)".into()),
                MapSource::Regex {
                    pattern: "^Bot$".into(),
                    ignore_case: false
                },
            ]
        );
        assert!(set("block-referers", "~(unclosed").is_err());
        // Each regex compiles alone, but not as the proxy wraps it: the `(?x)` comment eats
        // the closing parenthesis. Refused here, not dropped with the whole list later.
        assert!(set("block-user-agents", "~*badbot,~*(?x)evilbot#x").is_err());
        assert!(
            set("block-referers", "~").is_err(),
            "an empty regex matches everything"
        );
        assert!(set("skip-access-log-urls", "/ok,/bad\u{1}").is_err());
        assert!(set("skip-access-log-urls", "/healthz, ~^/metrics")
            .is_ok_and(|g| g.skip_access_log_urls.len() == 2));
        assert!(set("skip-access-log-urls", "").is_ok_and(|g| g.skip_access_log_urls.is_empty()));
    }

    #[test]
    fn gzip_keys() {
        assert!(set("use-gzip", "true").is_ok_and(|g| g.gzip.enabled));
        assert!(set("gzip-level", "0").is_err());
        assert!(set("gzip-level", "6").is_ok_and(|g| g.gzip.level == 6));
        assert!(set("gzip-min-length", "-1").is_err());
        let g = set("gzip-types", "Application/JSON  text/css").expect("types");
        assert_eq!(g.gzip.types, ["application/json", "text/css"]);
        assert!(set("gzip-types", "*").is_ok());
        assert!(set("gzip-types", "text").is_err());
        assert!(set("gzip-types", "text/plain;q=1").is_err());
        assert!(set("gzip-types", "  ").is_err());
        let g = set("gzip-disable", "msie6").expect("msie6");
        assert!(matches!(
            &g.gzip.disable_for[..],
            [MapSource::Regex {
                ignore_case: true,
                ..
            }]
        ));
        assert!(set("gzip-disable", "").is_ok_and(|g| g.gzip.disable_for.is_empty()));
        assert!(set("gzip-disable", "(unclosed").is_err());
        assert!(set("gzip-disable", "(?x)msie#6").is_err());
    }

    #[test]
    fn proxy_protocol_header_timeout() {
        let g = set("proxy-protocol-header-timeout", "2s").expect("2s");
        assert_eq!(
            g.proxy_protocol_timeout,
            Some(std::time::Duration::from_secs(2))
        );
        assert!(set("proxy-protocol-header-timeout", "1m").is_ok());
        assert!(set("proxy-protocol-header-timeout", "0s").is_err());
        assert!(set("proxy-protocol-header-timeout", "soon").is_err());
    }

    #[test]
    fn brotli_keys() {
        let g = set("enable-brotli", "true").expect("on");
        assert!(g.brotli.enabled && !g.gzip.enabled);
        assert_eq!(
            (g.brotli.level, g.brotli.min_length),
            (4, 20),
            "ingress-nginx's"
        );
        assert!(set("brotli-level", "12").is_err());
        assert!(set("brotli-level", "0").is_ok_and(|g| g.brotli.level == 0));
        assert!(set("brotli-min-length", "x").is_err());
        assert!(set("brotli-min-length", "1000").is_ok_and(|g| g.brotli.min_length == 1000));
        let g = set("brotli-types", "text/css").expect("types");
        assert_eq!(g.brotli.types, ["text/css"]);
        assert_eq!(
            g.gzip.types,
            crate::snapshot::Compression::gzip_default().types
        );
        assert!(set("brotli-types", "css").is_err());
    }
}

//! The request pipeline: framing check, routing, the annotation behaviours in
//! ingress-nginx's phase order, forwarding, and the response on its way back.
use std::{borrow::Cow, sync::Arc, time::Instant};

use http::{
    header, uri::Authority, uri::PathAndQuery, HeaderValue, Method, Request, Response, StatusCode,
    Version,
};
use hyper::body::Incoming;

use crate::snapshot::{PathMatch, RoutePolicy};

use super::{
    access_log::{AccessRecord, Completion},
    body::{RequestBody, ResponseBody},
    errors::{self, ProxyError},
    filters::{
        access, affinity, canary, client_cert, cookie_rewrite, cors, custom_errors, external_auth,
        hash, ratelimit, redirect, rewrite,
    },
    forward::{self, Destination},
    headers, limits,
    listener::ConnCtx,
    outbound,
    router::{normalize_host, Target},
    target,
    unread::ClientBody,
    upgrade,
    upstream::pool::ConnMode,
    ActiveConfig, Shared,
};

/// Handles one request from a client connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    // Only HTTP/2 streams count towards the connection's request limit: GOAWAY retires it
    // cleanly, where closing a keep-alive HTTP/1.1 connection races the client's next request.
    let active = conn.activity.start(req.version() == Version::HTTP_2);
    let config = shared.config.load_full();
    let request_id = headers::request_id(req.headers(), config.global.generate_request_id);
    // Behind a trusted load balancer its headers may name another client, scheme or port.
    let forwarded = config.global.real_ip.from_headers(&conn.fwd, req.headers());
    let fwd = forwarded.as_ref().unwrap_or(&conn.fwd);
    let client_version = req.version();
    let compression = config
        .global
        .compression
        .as_ref()
        .and_then(|c| c.wanted(req.method(), req.headers()));
    // Measured once, as received (before any header is dropped): the access log's
    // `$request_length` and ingress-nginx's `request_size` are the same figure.
    let request_bytes = super::log_format::request_length(&req);
    let record = config.global.logs(req.uri()).then(|| {
        Box::new(AccessRecord {
            method: Some(req.method().clone()),
            host: request_host(&req).into_owned(),
            path: req.uri().path().to_string(),
            version: req.version(),
            client: fwd.client_ip,
            request_id: request_id.clone(),
            upstream: None,
            upstream_name: None,
            main_upstream: None,
            ingress: None,
            upstream_start: None,
            upstream_status: None,
            earlier: Vec::new(),
            format: config.global.log_format.as_ref().map(|f| {
                (
                    f.clone(),
                    Box::new(f.capture(&req, fwd.https, request_bytes)),
                )
            }),
        })
    });
    // Dropped with this future if the client leaves before the response: logged as 499.
    let mut completion =
        Completion::pending(start, request_bytes, shared.metrics.unrouted(), record);
    completion.hold(active);
    let mut answered = Answered::default();
    let via = Via {
        conn: &conn,
        client: fwd,
    };
    let mut response = pipeline(
        &shared,
        via,
        &config,
        req,
        &request_id,
        &mut completion,
        &mut answered,
    )
    .await;
    if let Some(c) = compression {
        c.apply(&mut response);
    }
    headers::hide_upstream_private(response.headers_mut(), config.global.backend_server_header);
    config.global.add_headers.apply(response.headers_mut());
    if let Some(h) = answered.custom_headers {
        h.apply(response.headers_mut());
    }
    if let Some((c, origin)) = &answered.cors {
        cors::decorate(c, origin.as_ref(), response.headers_mut());
    }
    if fwd.https && answered.tls_host {
        // As ingress-nginx's `more_set_headers` in a TLS server: every answer, the proxy's
        // own included, and in place of one the upstream sent.
        if let Some(v) = &config.global.hsts {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
    }
    if client_version <= Version::HTTP_11 && response.version() != Version::HTTP_11 {
        *response.version_mut() = Version::HTTP_11;
    }
    if client_version == Version::HTTP_2 {
        // Flow control can stall an HTTP/2 stream while its connection stays writable.
        let timeout = shared.options.limits.client_send_timeout;
        response = response.map(|b| b.guard_client_stalls(timeout));
    }
    completion.respond_with(&response);
    match response.extensions_mut().remove::<upgrade::TunnelLog>() {
        Some(log) => log.hold(completion),
        None => response.body_mut().set_completion(completion),
    }
    response
}

/// What the pipeline found out about the route that answers, for the headers every answer
/// of it gets.
#[derive(Default)]
struct Answered<'c> {
    /// The host has TLS (HSTS).
    tls_host: bool,
    /// The route's `custom-headers`.
    custom_headers: Option<&'c super::HeaderSet>,
    /// The route's `enable-cors`, and the request's `Origin`: as ingress-nginx's
    /// `more_set_headers`, on every answer (a 401 or 429 a page script must be able to read
    /// too), except the preflight's own.
    cors: Option<(&'c crate::snapshot::Cors, Option<HeaderValue>)>,
}

/// The connection a request came on, and its client as the request's trusted forwarding
/// headers name it (the connection's own values otherwise).
struct Via<'a> {
    conn: &'a ConnCtx,
    client: &'a headers::ForwardedValues,
}

async fn pipeline<'c>(
    shared: &Shared,
    via: Via<'_>,
    config: &'c ActiveConfig,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    completion: &mut Completion,
    answered: &mut Answered<'c>,
) -> Response<ResponseBody> {
    let Via { conn, client } = via;
    // Every early answer below drops the body unread; it drains itself (HTTP/2).
    let version = req.version();
    let mut req = req.map(|b| ClientBody::new(b, version));
    if let Err(e) =
        limits::check_framing(&req, &conn.framing).and_then(|()| limits::check_method(req.method()))
    {
        return e.response();
    }
    if let Err(e) = target::check_host(&req) {
        tracing::debug!(reason = %e, "bad request");
        return ProxyError::BadRequest.response();
    }
    if !config.global.underscores_in_headers {
        headers::drop_underscored(req.headers_mut());
    }
    if config.global.refused_client(req.headers()) {
        return errors::status_response(StatusCode::FORBIDDEN);
    }
    if req.method() == Method::CONNECT {
        // Not a forward proxy: nothing behind an Ingress expects a tunnel request.
        return errors::status_response(StatusCode::METHOD_NOT_ALLOWED);
    }
    // Routes match the normalized path (as nginx's locations); the upstream still gets the
    // path as the client sent it unless a rewrite applies.
    let normalized = match target::normalize_path(req.uri().path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(p)) => Some(p),
        Err(e) => {
            tracing::debug!(reason = %e, "bad request");
            return ProxyError::BadRequest.response();
        }
    };
    let route_path = normalized.as_deref().unwrap_or(req.uri().path());
    let host = request_host(&req);
    if let Some(to) = config.routes.www_redirect(&host) {
        return redirect::www(to, client.https, shared.options.https_port, req.uri());
    }
    // ingress-nginx's `app-root` is a server-level rewrite: before any rule is chosen, so
    // it also holds where no rule of the Ingress carrying it takes `/`.
    if let Some(r) = redirect::app_root(config.routes.app_root(&host), route_path) {
        return r;
    }
    let matched = config.routes.find(&host, route_path);
    // ingress-nginx's default server keeps its requests (scanners, health checks by address)
    // out of the access log unless asked.
    let default_server = match &matched {
        Some(m) => m.default_server,
        None => !config.routes.serves(&host),
    };
    if default_server && !config.global.access_log_default_backend {
        completion.unlogged();
    }
    let Some(m) = matched else {
        // A defined host's unmatched path counts at its location `/`, as in ingress-nginx.
        let location = config.routes.unmatched(&host);
        completion.locate(location.map(|l| l.series(&shared.metrics)), req.method());
        return ProxyError::NotFound.response();
    };
    answered.tls_host = m.host_tls;
    let target: &Target = m.target;
    let policy = &target.spec.policy;
    // From here on a client that leaves is logged (499) against this route.
    completion.route(target.primary_metrics.clone(), &target.ingress, None);
    completion.locate(m.location.map(|l| l.series(&shared.metrics)), req.method());
    if !policy.access_log {
        completion.unlogged();
    }
    answered.custom_headers = target.custom_headers.as_ref();
    answered.cors = policy
        .cors
        .as_ref()
        .map(|c| (c, req.headers().get(header::ORIGIN).cloned()));
    if policy.rejected || policy.custom_headers.as_ref().is_some_and(|c| c.denied) {
        return errors::status_response(StatusCode::SERVICE_UNAVAILABLE);
    }

    // Rewrite phase: redirects. Behind a load balancer that terminated TLS, its
    // `X-Forwarded-Proto` says whether the client used HTTPS.
    if !client.https
        && !m
            .route
            .is_some_and(|r| config.global.no_tls_redirect(r.path.as_str()))
    {
        let (port, status) = (shared.options.https_port, config.global.http_redirect_code);
        // The Location names the host the client asked for: a trusted balancer's, if any.
        let forwarded = client
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(normalize_host);
        let to = forwarded.as_deref().unwrap_or(&host);
        if let Some(r) = redirect::ssl_redirect(policy, m.host_tls, to, req.uri(), port, status) {
            return r;
        }
    }
    // nginx judges the client certificate before any location runs; a plain-HTTP request
    // has none, so a host requiring one refuses it (rather than serving it unchecked).
    // The `ssl-client-*` headers for the upstream; `None`: the host does not ask.
    let client_cert_headers = match m.client_auth {
        None => None,
        // A TLS connection made for a host that does not ask (HTTP/2 clients reuse one for
        // every name its certificate covers) cannot show a certificate: 421 sends the
        // client to a connection of its own for this host, whose handshake will ask.
        Some(_) if conn.tls && !conn.client_cert_asked => {
            return errors::status_response(StatusCode::MISDIRECTED_REQUEST);
        }
        Some(check) => {
            let verdict = conn.client_verdict(&check.spec);
            match client_cert::decide(&check.spec, &verdict) {
                Ok(set) => Some(set),
                Err(r) => return *r,
            }
        }
    };
    if let Some(r) = redirect::fixed(policy) {
        return r;
    }
    // A CORS preflight is answered in the rewrite phase too, as ingress-nginx's `return 204`
    // is: before the rate limit and the access checks.
    if let Some((c, origin)) = &answered.cors {
        if req.method() == Method::OPTIONS {
            if let Some(r) = cors::preflight(c, origin.as_ref()) {
                answered.cors = None;
                return r;
            }
        }
    }
    let error_ctx = (!policy.custom_http_errors.is_empty()).then(|| ErrorContext {
        accept: req.headers().get(header::ACCEPT).cloned(),
        original_uri: req.uri().to_string(),
        host: req.headers().get(header::HOST).cloned().or_else(|| {
            let a = req.uri().authority()?;
            HeaderValue::from_str(a.as_str()).ok()
        }),
    });
    // The custom error page for `status`, if the route replaces it: for upstream answers
    // and for the proxy's own (a limit, a refusal, 502/503/504) alike, as nginx's
    // error_page covers both.
    let error_page = |status: StatusCode| {
        error_ctx
            .as_ref()
            .filter(|_| custom_errors::intercepts(&policy.custom_http_errors, status.as_u16()))
            .map(|ctx| {
                // Boxed: inline, this rare path's future (a whole upstream exchange) made
                // every request's future twice as large, and hyper copies that future
                // several times per request (for HTTP/2, into a task of its own).
                Box::pin(custom_error(
                    shared, config, target, status, ctx, request_id,
                ))
            })
    };
    let own_answer = |r: Response<ResponseBody>| async move {
        match error_page(r.status()) {
            Some(page) => page.await,
            None => r,
        }
    };
    let own_error = |e: ProxyError| own_answer(e.response());
    // Preaccess and access phases.
    if !ratelimit::allowed(&shared.limiter, policy, target.limit_zone, client.client_ip) {
        return own_answer(errors::status_response(config.global.limit_req_status)).await;
    }
    if let Some(max) = policy.limit_connections {
        if !ratelimit::exempt(policy, client.client_ip) {
            // A zone of its own: not the rate limit's buckets.
            let zone = target.limit_zone.rotate_left(1);
            match shared.conn_limiter.acquire(zone, client.client_ip, max) {
                Some(permit) => completion.hold_permit(permit),
                None => {
                    let r = errors::status_response(config.global.limit_conn_status);
                    return own_answer(r).await;
                }
            }
        }
    }
    // Access phase: source ranges, basic auth, `auth-url`. All must allow, or with
    // `satisfy: any` one allowing is enough (nginx's `satisfy any`: a module that neither
    // allows nor denies does not count; when some deny and none allows, a 401 wins).
    let any = policy.satisfy_any;
    let mut granted = false;
    let mut denial: Option<Response<ResponseBody>> = None;
    // A client named by trusted forwarding headers is known only now; a connection's own
    // client was checked at accept and is not scanned again per request.
    if client.client_ip != conn.fwd.client_ip && config.global.blocked(client.client_ip) {
        shared.metrics.blocked();
        return ProxyError::Forbidden.response();
    }
    let source_ok = access::source_allowed(policy, client.client_ip);
    if !source_ok {
        if !any {
            return own_error(ProxyError::Forbidden).await;
        }
        denial = Some(ProxyError::Forbidden.response());
    } else if any && !policy.allow_sources.is_empty() {
        granted = true;
    }
    if let Some(auth) = policy.basic_auth.as_ref().filter(|_| !granted) {
        if auth.denied {
            return errors::status_response(StatusCode::SERVICE_UNAVAILABLE);
        }
        if shared.auth.check(auth, req.headers()).await {
            granted = any;
        } else {
            let r = errors::unauthorized(&auth.realm);
            if !any {
                return own_answer(r).await;
            }
            denial = Some(r);
        }
    }
    // Headers of the auth service's answer, for the request going upstream.
    let mut auth_headers = Vec::new();
    let mut auth_cookies = Vec::new();
    // The global `auth-url` (controller ConfigMap) spares the routes in `no-auth-locations`.
    let auth_exempt = || {
        m.route
            .is_some_and(|r| config.global.no_auth(r.path.as_str()))
    };
    if let Some(ext) = policy
        .external_auth
        .as_ref()
        .filter(|ext| !(granted || (ext.global && auth_exempt())))
    {
        let host = request_host(&req).into_owned();
        let original = outbound::Original {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            host: &host,
            tls: client.https,
            client: client.client_ip,
        };
        // Kept answers are per route, as nginx's cache is per location.
        let scope = ext.cache.as_ref().map(|_| {
            let mut h = hash::Fnv::default();
            h.write(&target.limit_zone.to_le_bytes());
            h.write(m.route.map_or("", |r| r.path.as_str()).as_bytes());
            h.finish()
        });
        match external_auth::check(&shared.auth_client, ext, &original, scope).await {
            external_auth::Verdict::Allow { pass, cookies } => {
                auth_headers = pass;
                auth_cookies = cookies;
                granted = any;
            }
            external_auth::Verdict::Respond(r) => {
                if !any {
                    return own_answer(*r).await;
                }
                if denial
                    .as_ref()
                    .is_none_or(|d| d.status() != StatusCode::UNAUTHORIZED)
                {
                    denial = Some(*r);
                }
            }
        }
    }
    if let (false, Some(d)) = (granted, denial) {
        return own_answer(d).await;
    }
    if let Some(max) = policy.max_body_bytes {
        if headers::content_length(req.headers()).is_some_and(|n| n > max) {
            return own_error(ProxyError::PayloadTooLarge).await;
        }
    }

    // Upstream choice.
    let canary_spec = target.spec.canary.as_ref();
    let (upstream, metrics, on_canary) = match (&target.canary, canary_spec) {
        (Some(c), Some(spec))
            if !c.upstream.endpoints.is_empty()
                && canary::chooses_canary(
                    spec,
                    policy.affinity.as_ref(),
                    (&target.primary.tag, &c.upstream.tag),
                    req.headers(),
                ) =>
        {
            completion.canary_of(&target.primary.name);
            (&c.upstream, &c.metrics, true)
        }
        _ => (&target.primary, &target.primary_metrics, false),
    };
    // `default-backend`: the Ingress's own stand-in while its backend has no endpoint.
    let upstream = match &target.default_backend {
        Some(db) if upstream.endpoints.is_empty() && !db.endpoints.is_empty() => db,
        _ => upstream,
    };
    completion.route(metrics.clone(), &target.ingress, Some(&upstream.name));
    if upstream.endpoints.is_empty() {
        return own_error(ProxyError::NoEndpoints).await;
    }
    // An affinity session wins over `upstream-hash-by`, as ingress-nginx's sticky balancer
    // replaces its hash balancer.
    // On a route with a canary, cookies name the upstream holding the session; under
    // `legacy` the canary keeps none.
    let session = policy
        .affinity
        .as_ref()
        .filter(|_| !on_canary || canary_spec.is_some_and(|c| c.sticky))
        .map(|a| {
            let tag = canary_spec.map(|_| &*upstream.tag);
            affinity::Session::resolve(a, req.headers(), upstream, tag)
        });
    let preferred = match (&session, &policy.hash_by) {
        (Some(s), _) => s.preferred,
        (None, Some(key)) => {
            let h = hash::key(
                key,
                req.uri(),
                req.headers(),
                client.client_ip,
                client.https,
            );
            match policy.hash_subset {
                Some(size) => upstream.by_hash_subset(h, size),
                None => upstream.by_hash(h),
            }
        }
        (None, None) => None,
    };

    // The request as it goes upstream.
    let path_and_query = match (&policy.rewrite_target, m.route) {
        // A target equal to the path rewrites nothing in ingress-nginx (`buildProxyPass`): the
        // `rewrite-target: /` copied onto `path: /` keeps the request's path.
        (Some(t), Some(route)) if t != route.path.as_str() => {
            let (path, query) = rewrite::rewrite(&route.path, t, route_path, req.uri().query());
            let path = target::encode_path(&path);
            let pq = match query {
                Some(q) => PathAndQuery::try_from(format!("{path}?{}", target::encode_query(&q))),
                None => PathAndQuery::try_from(path.as_ref()),
            };
            match pq {
                Ok(pq) => pq,
                Err(_) => return errors::status_response(StatusCode::INTERNAL_SERVER_ERROR),
            }
        }
        _ => req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let upgrading = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    // A trusted balancer's `X-Forwarded-Host` is the host the upstream sees (ingress-nginx's
    // `$best_http_host`); routing went by the request's own.
    let authority = match &client.host {
        Some(h) => Authority::try_from(h.as_bytes()).ok(),
        None => req.uri().authority().cloned().or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        }),
    };
    // `$host` for a mirror: the host routed on, before `upstream-vhost` replaces it.
    let mirror_host = policy
        .mirror
        .as_ref()
        .map(|_| request_host(&req).into_owned());
    let (mut parts, body) = req.into_parts();
    // The authority of an absolute-form target (or HTTP/2's `:authority`) is what was
    // routed on, so it is also what the upstream sees as Host (RFC 9112 §3.2.2).
    let host_value = client.host.clone().or_else(|| {
        authority
            .as_ref()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned())
    });
    headers::remove_hop_by_hop(&mut parts.headers, upgrading);
    // The client's `100 Continue` came from here when its body was first read; an upstream
    // asked again would send one more, as nginx, which clears `Expect`, never has it.
    parts.headers.remove(header::EXPECT);
    headers::join_cookies(&mut parts.headers);
    if policy.basic_auth.is_some() {
        // The credentials were for this proxy, not the app: ingress-nginx clears the
        // header too, so a password never reaches (or is logged by) the upstream.
        parts.headers.remove(header::AUTHORIZATION);
    }
    if let Some(h) = &host_value {
        parts.headers.insert(header::HOST, h.clone());
    }
    headers::set_forwarded(&mut parts.headers, client, host_value.as_ref(), request_id);
    if config.global.original_uri_header {
        // `$request_uri`: what the client asked for, before any rewrite.
        let original = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(v) = HeaderValue::from_str(original) {
            parts.headers.insert(headers::X_ORIGINAL_URI.clone(), v);
        }
    }
    if let Some(ext) = &policy.external_auth {
        external_auth::set_response_headers(&mut parts.headers, ext, auth_headers);
    }
    if let Some(set) = client_cert_headers {
        client_cert::strip(&mut parts.headers);
        parts
            .headers
            .extend(set.into_iter().map(|(k, v)| (Some(k), v)));
    } else if policy.client_cert_off {
        client_cert::strip(&mut parts.headers);
        parts
            .headers
            .insert(client_cert::VERIFY, HeaderValue::from_static("NONE"));
    }
    let authority = match upstream_vhost(policy) {
        // `upstream-vhost`: the upstream sees this host; X-Forwarded-Host keeps the client's.
        Some((a, h)) => {
            parts.headers.insert(header::HOST, h);
            Some(a)
        }
        None => authority,
    };
    config.global.proxy_set_headers.apply(&mut parts.headers);
    if let Some(prefix) = policy
        .forwarded_prefix
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        parts.headers.insert(&headers::X_FORWARDED_PREFIX, prefix);
    }
    let tee = policy
        .mirror
        .as_ref()
        .zip(mirror_host)
        .and_then(|(mirror, host)| {
            let original = outbound::Original {
                method: &parts.method,
                uri: &parts.uri,
                headers: &parts.headers,
                host: &host,
                tls: client.https,
                client: client.client_ip,
            };
            let has_body = !body.is_end_stream();
            shared
                .mirrors
                .start(mirror, &original, has_body, &shared.metrics)
        });
    // nginx has two timers here, `client_body_timeout` on reading the body and
    // `proxy_send_timeout` on writing it on; streamed, the body's gaps are both.
    let body_gap = policy.timeouts.send.min(config.global.client_body_timeout);
    let (body, progress) = RequestBody::client(body, policy.max_body_bytes, body_gap);
    let body = body.with_tee(tee);
    let dest = Destination {
        path_and_query,
        authority,
        progress,
        mode: if upgrading {
            ConnMode::Upgrade
        } else {
            ConnMode::Pooled
        },
    };
    let fwd = match forward::send(
        shared,
        upstream,
        policy,
        preferred,
        Request::from_parts(parts, body),
        &dest,
        &mut |addr, before| completion.attempt(addr, before),
    )
    .await
    {
        Ok(f) => f,
        Err(e) => return own_error(e).await,
    };
    let mut response = fwd.response;
    let status = response.status();
    completion.upstream_answered(status.as_u16());

    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // Switching a connection that asked for nothing leaves the client waiting on a
            // protocol it never chose (HTTP/2 cannot switch at all): 502, as nginx answers
            // "upstream sent 101 to a request without Upgrade". The upstream connection is
            // dropped with the response, never pooled.
            tracing::warn!(upstream = %fwd.endpoint.addr, "upstream switched protocols without an upgrade request");
            return ProxyError::UpstreamFailed.response();
        };
        conn.framing.set_upgraded();
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let log = upgrade::TunnelLog::default();
        upgrade::spawn_tunnel(
            shared,
            client_upgrade,
            upstream_upgrade,
            policy.timeouts.read,
            log.clone(),
        );
        let (mut rparts, _) = response.into_parts();
        upgrade::switching_headers(&mut rparts.headers);
        rparts.extensions.insert(log);
        return Response::from_parts(rparts, ResponseBody::empty());
    }
    if let Some(page) = error_page(status) {
        drop(response);
        return page.await;
    }
    let (mut rparts, rbody) = response.into_parts();
    headers::remove_hop_by_hop(&mut rparts.headers, false);
    if status == StatusCode::NO_CONTENT || status.is_informational() {
        // These have no body whatever the upstream claims; an HTTP/2 client treats a
        // Content-Length on them as a framing error.
        rparts.headers.remove(header::CONTENT_LENGTH);
    }
    if let Some((from, to)) = &policy.redirect_rewrite {
        redirect::rewrite_upstream_redirects(&mut rparts.headers, from, to);
    }
    if let Some(rw) = &policy.cookie_rewrite {
        cookie_rewrite::apply(&mut rparts.headers, rw);
    }
    if let (Some(aff), Some(session)) = (&policy.affinity, &session) {
        if let Some(value) = session.cookie_after(aff, fwd.index, upstream) {
            let route_path = match m.route.map(|r| &r.path) {
                Some(PathMatch::Prefix(p) | PathMatch::Exact(p)) => p.as_str(),
                _ => "/",
            };
            if let Some(v) = affinity::set_cookie(aff, &value, route_path, conn.tls) {
                rparts.headers.append(header::SET_COOKIE, v);
            }
        }
    }
    if let Some(ext) = &policy.external_auth {
        external_auth::add_cookies(&mut rparts.headers, ext, status, auth_cookies);
    }
    // An upgradable connection never goes back to the pool.
    let pool_return = if upgrading { None } else { fwd.pool_return };
    let mut body = ResponseBody::upstream(rbody, policy.timeouts.read, pool_return)
        .answering(dest.progress.clone());
    if let Some(rate) = policy.limit_rate {
        body.limit_rate(rate);
    }
    Response::from_parts(rparts, body)
}

/// What a custom error page needs of the request it replaces the answer to.
struct ErrorContext {
    accept: Option<HeaderValue>,
    original_uri: String,
    /// The client's `Host` (`$best_http_host`): a shared error backend may answer per site.
    host: Option<HeaderValue>,
}

/// Replaces an intercepted answer with the default backend's answer for `status`.
async fn custom_error(
    shared: &Shared,
    config: &ActiveConfig,
    target: &Target,
    status: StatusCode,
    ctx: &ErrorContext,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    // The route's `default-backend` first, else the global one.
    let (db, db_policy) = match (&target.default_backend, config.routes.service_default()) {
        (Some(own), _) => (own, &target.spec.policy),
        (None, Some(global)) => (&global.primary, &global.spec.policy),
        (None, None) => return errors::status_response(status),
    };
    if db.endpoints.is_empty() {
        return errors::status_response(status);
    }
    let mut req_headers = http::HeaderMap::new();
    if let Some(a) = &ctx.accept {
        req_headers.insert(header::ACCEPT, a.clone());
    }
    let mut req = Request::new(RequestBody::empty());
    *req.headers_mut() = custom_errors::error_headers(
        status.as_u16(),
        &req_headers,
        &ctx.original_uri,
        target,
        request_id,
    );
    if let Some(h) = &ctx.host {
        req.headers_mut().insert(header::HOST, h.clone());
    }
    let dest = Destination {
        path_and_query: PathAndQuery::from_static("/"),
        authority: None,
        progress: None,
        mode: ConnMode::Pooled,
    };
    match forward::send(shared, db, db_policy, None, req, &dest, &mut |_, _| {}).await {
        Ok(f) => {
            let (mut parts, body) = f.response.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(
                parts,
                ResponseBody::upstream(body, db_policy.timeouts.read, f.pool_return),
            )
        }
        Err(e) => {
            tracing::debug!(error = %e, "default backend failed for a custom error page");
            errors::status_response(status)
        }
    }
}

/// The request's host, normalized (from the URI authority, else the `Host` header).
fn request_host<B>(req: &Request<B>) -> Cow<'_, str> {
    if let Some(a) = req.uri().authority() {
        return normalize_host(a.host());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map_or(Cow::Borrowed(""), normalize_host)
}

/// The `upstream-vhost` of a route as an HTTP/2 authority and a Host value (validated when
/// translated; a value that still fails here is left out).
fn upstream_vhost(policy: &RoutePolicy) -> Option<(Authority, HeaderValue)> {
    let v = policy.upstream_vhost.as_deref()?;
    Some((Authority::try_from(v).ok()?, HeaderValue::from_str(v).ok()?))
}

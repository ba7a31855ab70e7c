//! Sending a request to an upstream: endpoint choice, connect, retries and timeouts.
//!
//! Retries, as nginx's `proxy_next_upstream`: a connection that cannot be made goes to
//! another endpoint whatever the method. Once a request left, `proxy-next-upstream` (by
//! default `error timeout`) says which failures send it on, for idempotent methods unless
//! `non_idempotent` is listed. At most `max_attempts` tries in all; when every endpoint was
//! tried the round starts over, so one replica gets its tries too. A pooled connection found
//! closed before the request left is tried again on a fresh connection to the same endpoint
//! (nothing was sent), and so is an idempotent request whose pooled connection failed before
//! any response byte (the upstream closed the idle connection as we wrote). A request that
//! left goes again only with its whole body: a fixed one, or the client's if it passed to its
//! end within the replay limit (`replay.rs`) before the try failed.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{
    header, uri::Authority, uri::PathAndQuery, uri::Scheme, Method, Request, Response, Uri, Version,
};
use hyper::body::Incoming;

use crate::snapshot::{BackendProtocol, NextUpstream, RoutePolicy};

use super::{
    body::{BodyError, BodyProgress, RequestBody},
    errors::ProxyError,
    metrics::UpstreamErrorKind,
    replay::Replay,
    upstream::{
        balance::InFlight,
        pool::{Conn, ConnMode, ConnectError, PoolReturn},
        Endpoint, Tried, UpstreamState,
    },
    Shared,
};

/// Where the request goes on the wire, independent of the connection's protocol.
#[derive(Debug)]
pub(crate) struct Destination {
    /// Path and query sent upstream (after `rewrite-target`).
    pub path_and_query: PathAndQuery,
    /// The client's host, used as `:authority` towards HTTP/2 upstreams.
    pub authority: Option<Authority>,
    /// The client's body progress, if it has a body.
    pub progress: Option<Arc<BodyProgress>>,
    pub mode: ConnMode,
}

/// A response head from an upstream, and what must live as long as its body.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub response: Response<Incoming>,
    pub endpoint: Arc<Endpoint>,
    pub index: usize,
    /// Gives the HTTP/1.1 connection back to the pool when the body is done.
    pub pool_return: Option<PoolReturn>,
    pub _in_flight: InFlight,
}

enum SendFailure {
    /// The request never left: it can go again.
    Unsent(Box<Request<RequestBody>>),
    Failed(ProxyError),
}

/// What a request needs to go again after it left: a copy of its head, and its body as
/// kept while it passed (a fixed body is copied as it is).
struct Again {
    head: Request<RequestBody>,
    replay: Option<Arc<Replay>>,
}

impl Again {
    /// Taken before `req` leaves; `None` when its body is the client's and is not kept.
    fn of(req: &Request<RequestBody>) -> Option<Again> {
        let replay = req.body().replay();
        let body = match &replay {
            Some(_) => RequestBody::empty(),
            None => req.body().try_clone()?,
        };
        let mut head = Request::new(body);
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        Some(Again { head, replay })
    }

    /// The request to send again, once the try is over: `None` if the client's body did not
    /// pass whole (still coming, or past the replay limit).
    fn request(self) -> Option<Request<RequestBody>> {
        let Again { mut head, replay } = self;
        if let Some(r) = replay {
            *head.body_mut() = RequestBody::full(r.body()?);
        }
        Some(head)
    }
}

/// Whether a request that was sent may be sent again: as nginx's `proxy_next_upstream`,
/// every method but POST, PATCH and LOCK (WebDAV's PROPFIND is as safe as GET).
pub(crate) fn is_idempotent(m: &Method) -> bool {
    !matches!(*m, Method::POST | Method::PATCH) && m.as_str() != "LOCK"
}

/// Sends `req` to an endpoint of `upstream` (`preferred` first, e.g. from affinity), telling
/// `attempt` each endpoint it tries, with the status the try before it came to (an answer
/// passed over, or the 502/504 its failure was), as nginx's `$upstream_status` lists them.
///
/// One async fn on purpose: this future lives inside every request's, and a nested one per
/// endpoint would hold a second copy of the request in it. What a try leaves for the client
/// when no other try is left is kept small (an error, or a boxed answer on the rare
/// `proxy-next-upstream` status path).
pub(crate) async fn send(
    shared: &Shared,
    upstream: &UpstreamState,
    policy: &RoutePolicy,
    mut preferred: Option<usize>,
    mut req: Request<RequestBody>,
    dest: &Destination,
    attempt: &mut (dyn FnMut(SocketAddr, Option<u16>) + Send),
) -> Result<Forwarded, ProxyError> {
    let next = &policy.next_upstream;
    let idempotent = is_idempotent(req.method());
    // Only a request that left needs this: one whose connection could not be made goes to
    // the next endpoint whatever its method, as in nginx, so a POST meeting a pod that just
    // stopped is not a 502.
    let may_repeat = idempotent || next.non_idempotent;
    let deadline = next.timeout.map(|t| std::time::Instant::now() + t);
    if idempotent || (next.non_idempotent && next.after_send()) {
        req.body_mut().keep_for_replay();
    }
    let max_attempts = policy.max_attempts.max(1);
    let mut tried = Tried::default();
    let mut attempts = 0;
    let mut last_err = ProxyError::ConnectFailed;
    // An answer `proxy-next-upstream` passed over, given to the client if nothing follows.
    let mut last_answer: Option<Box<Forwarded>> = None;
    'endpoints: while attempts < max_attempts {
        if attempts > 0 && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        let mut pick = preferred
            .take()
            .or_else(|| upstream.pick(policy.load_balance, &tried));
        if pick.is_none() && !tried.is_empty() && policy.max_attempts != u32::MAX {
            // Every endpoint was tried and tries are left: start over, as ingress-nginx's
            // balancer does (one replica gets its 3 tries). "No limit" stops after one round,
            // or a dead Service would hold the request forever.
            tried = Tried::default();
            pick = upstream.pick(policy.load_balance, &tried);
        }
        let Some(idx) = pick else {
            break;
        };
        let before = (attempts > 0).then(|| match &last_answer {
            Some(fwd) => fwd.response.status().as_u16(),
            None => last_err.status().as_u16(),
        });
        tried.push(idx);
        attempts += 1;
        let Some(ep) = upstream.endpoints.get(idx) else {
            break;
        };
        attempt(ep.addr, before);
        // Counted from the pick, connect included: requests still dialing an endpoint are
        // load on it, or a burst would all pick the endpoint whose connections are not made
        // yet.
        let in_flight = InFlight::new(ep);
        let mut mode = dest.mode;
        // Once per endpoint, and once more on a fresh connection when a pooled one turns out
        // closed under the request.
        loop {
            let checkout = match shared
                .connector
                .checkout(
                    ep,
                    upstream.protocol,
                    upstream.tls.as_deref(),
                    policy.timeouts.connect,
                    mode,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    shared.metrics.upstream_error(e.kind());
                    upstream.failed(idx);
                    tracing::debug!(upstream = %upstream.name, endpoint = %ep.addr, error = %e, "upstream connect failed");
                    let go_on = match e {
                        ConnectError::Timeout => next.connect_timeout,
                        _ => next.connect_error,
                    };
                    last_err = e.proxy_error();
                    last_answer = None;
                    if go_on {
                        continue 'endpoints;
                    }
                    return Err(last_err);
                }
            };
            // A copy of a bodiless head, for the two cases that send a request again after
            // it left. First, an upstream may close an idle pooled connection (its
            // keep-alive timeout) just before we write to it, too late for hyper to have
            // seen the FIN: an idempotent request that then fails with no response goes once
            // more on a new connection, as nginx does for errors on its cached keep-alive
            // connections. Second, `proxy-next-upstream` conditions met after it was sent.
            // nginx does the first only while `error` is among those conditions: with
            // `proxy-next-upstream: off` such a request fails with 502 as any other.
            let resend_pooled = checkout.reused && idempotent && next.sent_error;
            let copy = (resend_pooled || (may_repeat && next.after_send()))
                .then(|| Again::of(&req))
                .flatten();
            let started = std::time::Instant::now();
            let result = send_on(
                checkout.conn,
                ep,
                upstream.protocol,
                req,
                dest,
                policy.timeouts.read,
            )
            .await;
            // Only now, with the try over, is it known whether the body passed whole.
            let copy = copy.and_then(Again::request);
            match (result, copy) {
                (Ok((response, pool_return)), copy) => {
                    let status = response.status().as_u16();
                    let fwd = Forwarded {
                        response,
                        endpoint: ep.clone(),
                        index: idx,
                        pool_return,
                        _in_flight: in_flight,
                    };
                    let Some(again) =
                        copy.filter(|_| may_repeat && next.statuses.contains(&status))
                    else {
                        upstream.succeeded(idx, started.elapsed());
                        return Ok(fwd);
                    };
                    if NextUpstream::status_is_failure(status) {
                        upstream.failed(idx);
                    } else {
                        upstream.succeeded(idx, started.elapsed());
                    }
                    tracing::debug!(upstream = %upstream.name, endpoint = %ep.addr, status, "proxy-next-upstream: trying the next endpoint");
                    last_answer = Some(Box::new(fwd));
                    req = again;
                    continue 'endpoints;
                }
                (Err(SendFailure::Unsent(r)), _) if checkout.reused && mode == ConnMode::Pooled => {
                    req = *r;
                    mode = ConnMode::Fresh;
                }
                (Err(SendFailure::Failed(ProxyError::UpstreamFailed)), Some(again))
                    if resend_pooled && mode == ConnMode::Pooled =>
                {
                    tracing::debug!(upstream = %upstream.name, endpoint = %ep.addr, "pooled connection closed under the request; sending it again on a new one");
                    req = again;
                    mode = ConnMode::Fresh;
                }
                (Err(SendFailure::Unsent(r)), _) => {
                    shared.metrics.upstream_error(UpstreamErrorKind::Protocol);
                    upstream.failed(idx);
                    last_err = ProxyError::UpstreamFailed;
                    last_answer = None;
                    // Nothing left: like a connection that could not be made.
                    if next.connect_error {
                        req = *r;
                        continue 'endpoints;
                    }
                    return Err(last_err);
                }
                (Err(SendFailure::Failed(e)), copy) => {
                    let (kind, go_on) = match e {
                        ProxyError::UpstreamTimeout => {
                            (Some(UpstreamErrorKind::Timeout), next.sent_timeout)
                        }
                        ProxyError::UpstreamFailed => {
                            (Some(UpstreamErrorKind::Protocol), next.sent_error)
                        }
                        _ => (None, false),
                    };
                    if let Some(kind) = kind {
                        shared.metrics.upstream_error(kind);
                        // A late answer is the route's read timeout meeting a slow path, not
                        // a sick endpoint: one Ingress's short timeout must not eject the
                        // Service's endpoints for every other Ingress.
                        if kind != UpstreamErrorKind::Timeout {
                            upstream.failed(idx);
                        }
                    }
                    match copy {
                        Some(again) if go_on && may_repeat => {
                            tracing::debug!(upstream = %upstream.name, endpoint = %ep.addr, error = %e, "proxy-next-upstream: trying the next endpoint");
                            last_err = e;
                            last_answer = None;
                            req = again;
                            continue 'endpoints;
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
    }
    match last_answer {
        Some(fwd) => Ok(*fwd),
        None => Err(last_err),
    }
}

async fn send_on(
    conn: Conn,
    ep: &Arc<Endpoint>,
    protocol: BackendProtocol,
    mut req: Request<RequestBody>,
    dest: &Destination,
    read_timeout: Duration,
) -> Result<(Response<Incoming>, Option<PoolReturn>), SendFailure> {
    match conn {
        Conn::H1(mut sender, reuse) => {
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = Uri::from(dest.path_and_query.clone());
            if !req.headers().contains_key(header::HOST) {
                // Only an HTTP/1.0 client may leave Host out, and HTTP/1.1 needs one: the
                // endpoint's address, as HTTP/2 upstreams get for `:authority`.
                if let Ok(h) = http::HeaderValue::from_str(&ep.addr.to_string()) {
                    req.headers_mut().insert(header::HOST, h);
                }
            }
            // nginx clears `TE` towards HTTP/1.1 upstreams (HTTP/2 ones keep `trailers`, which
            // gRPC servers require).
            req.headers_mut().remove(header::TE);
            if unknown_length_get(&req) {
                // hyper sends a GET or HEAD body of unknown length (a chunked one, or one from
                // HTTP/2 without content-length) as no body at all unless told to chunk it;
                // search APIs take their query in a GET body.
                req.headers_mut().insert(
                    header::TRANSFER_ENCODING,
                    http::HeaderValue::from_static("chunked"),
                );
            }
            let fut = sender.try_send_request(req);
            let response = wait(fut, read_timeout, dest.progress.as_deref()).await?;
            Ok((response, Some(PoolReturn::new(ep.clone(), sender, reuse))))
        }
        Conn::H2(mut sender, stream) => {
            *req.version_mut() = Version::HTTP_2;
            let scheme = match protocol {
                BackendProtocol::Http | BackendProtocol::Grpc => Scheme::HTTP,
                BackendProtocol::Https | BackendProtocol::Grpcs => Scheme::HTTPS,
            };
            let authority = match &dest.authority {
                Some(a) => a.clone(),
                None => Authority::try_from(ep.addr.to_string().as_str())
                    .map_err(|_| SendFailure::Failed(ProxyError::UpstreamFailed))?,
            };
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = Some(authority);
            parts.path_and_query = Some(dest.path_and_query.clone());
            *req.uri_mut() = Uri::from_parts(parts)
                .map_err(|_| SendFailure::Failed(ProxyError::UpstreamFailed))?;
            // `:authority` carries the host on HTTP/2.
            req.headers_mut().remove(header::HOST);
            let fut = sender.try_send_request(req);
            let response = wait(fut, read_timeout, dest.progress.as_deref()).await?;
            Ok((response, Some(PoolReturn::h2(ep.clone(), stream))))
        }
    }
}

/// A GET or HEAD request with a body whose length nothing states.
fn unknown_length_get(req: &Request<RequestBody>) -> bool {
    use http_body::Body as _;
    matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && !req.body().is_end_stream()
        && req.body().size_hint().exact().is_none()
        && !req.headers().contains_key(header::CONTENT_LENGTH)
}

/// Waits for the response head: `read_timeout` after the request body is fully sent (the body
/// itself is bounded by the send timeout between its chunks).
async fn wait<F>(
    fut: F,
    read_timeout: Duration,
    progress: Option<&BodyProgress>,
) -> Result<Response<Incoming>, SendFailure>
where
    F: std::future::Future<
        Output = Result<
            Response<Incoming>,
            hyper::client::conn::TrySendError<Request<RequestBody>>,
        >,
    >,
{
    tokio::pin!(fut);
    let mut frames = progress.map(|p| p.frames());
    let result = loop {
        match tokio::time::timeout(read_timeout, fut.as_mut()).await {
            Ok(r) => break r,
            // Still uploading, and the upload moved during this window: keep waiting.
            Err(_) if progress.is_some_and(|p| !p.finished() && Some(p.frames()) != frames) => {
                frames = progress.map(|p| p.frames());
            }
            Err(_) => return Err(SendFailure::Failed(ProxyError::UpstreamTimeout)),
        }
    };
    result.map_err(|mut e| match e.take_message() {
        Some(req) => SendFailure::Unsent(Box::new(req)),
        None => {
            let err = e.into_error();
            let cause = BodyError::find(&err).or_else(|| progress.and_then(|p| p.failure()));
            let mapped = match cause {
                Some(BodyError::TooLarge) => ProxyError::PayloadTooLarge,
                Some(BodyError::ClientTimeout) => ProxyError::ClientTimeout,
                Some(BodyError::ClientBody) => ProxyError::BadRequest,
                _ => ProxyError::UpstreamFailed,
            };
            tracing::debug!(error = %err, "upstream exchange failed");
            SendFailure::Failed(mapped)
        }
    })
}

//! Sending a request to an upstream: endpoint choice, connect, retries and timeouts.
//!
//! Retries: a connect failure is retried on a different endpoint, up to `max_attempts` tries,
//! only for idempotent methods. A pooled connection found closed before the request left is
//! retried once on a fresh connection to the same endpoint (nothing was sent). A request that
//! reached the upstream is not retried, with one exception: a bodiless idempotent request
//! whose pooled connection failed before any response byte (the upstream closed the idle
//! connection as we wrote) goes once more on a fresh connection.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{
    header, uri::Authority, uri::PathAndQuery, uri::Scheme, Method, Request, Response, Uri, Version,
};
use hyper::body::Incoming;

use crate::snapshot::{BackendProtocol, RoutePolicy};

use super::{
    body::{BodyError, BodyProgress, RequestBody},
    errors::ProxyError,
    metrics::UpstreamErrorKind,
    upstream::{
        balance::InFlight,
        pool::{Conn, ConnMode, PoolReturn},
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

/// Whether the request carries no body, so its head alone can be sent again.
fn is_bodiless(req: &Request<RequestBody>) -> bool {
    matches!(req.body(), RequestBody::Full { data: None })
}

/// A bodiless copy of the request head, to send again.
fn copy_head(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Whether a method may be repeated (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Sends `req` to an endpoint of `upstream` (`preferred` first, e.g. from affinity), telling
/// `attempt` each endpoint it tries.
pub(crate) async fn send(
    shared: &Shared,
    upstream: &UpstreamState,
    policy: &RoutePolicy,
    preferred: Option<usize>,
    mut req: Request<RequestBody>,
    dest: &Destination,
    attempt: &mut (dyn FnMut(SocketAddr) + Send),
) -> Result<Forwarded, ProxyError> {
    let idempotent = is_idempotent(req.method());
    let max_attempts = policy.max_attempts.max(1) as usize;
    let mut tried = Tried::default();
    let mut next = preferred;
    let mut last = ProxyError::ConnectFailed;
    while tried.len() < max_attempts {
        let Some(idx) = next
            .take()
            .or_else(|| upstream.pick(policy.load_balance, &tried))
        else {
            break;
        };
        tried.push(idx);
        let Some(ep) = upstream.endpoints.get(idx) else {
            break;
        };
        attempt(ep.addr);
        let mut mode = dest.mode;
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
                    last = e.proxy_error();
                    break;
                }
            };
            // An upstream may close an idle pooled connection (its keep-alive timeout) just
            // before we write to it, too late for hyper to have seen the FIN. A bodiless
            // idempotent request that then fails with no response is sent once more on a new
            // connection, as nginx does for errors on its cached keep-alive connections.
            let resend =
                (checkout.reused && idempotent && is_bodiless(&req)).then(|| copy_head(&req));
            let in_flight = InFlight::new(ep);
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
            match (result, resend) {
                (Ok((response, pool_return)), _) => {
                    upstream.succeeded(idx, started.elapsed());
                    return Ok(Forwarded {
                        response,
                        endpoint: ep.clone(),
                        index: idx,
                        pool_return,
                        _in_flight: in_flight,
                    });
                }
                (Err(SendFailure::Unsent(r)), _) if checkout.reused && mode == ConnMode::Pooled => {
                    req = *r;
                    mode = ConnMode::Fresh;
                }
                (Err(SendFailure::Failed(ProxyError::UpstreamFailed)), Some(again)) => {
                    tracing::debug!(upstream = %upstream.name, endpoint = %ep.addr, "pooled connection closed under the request; sending it again on a new one");
                    req = again;
                    mode = ConnMode::Fresh;
                }
                (Err(SendFailure::Unsent(_)), _) => {
                    shared.metrics.upstream_error(UpstreamErrorKind::Protocol);
                    upstream.failed(idx);
                    return Err(ProxyError::UpstreamFailed);
                }
                (Err(SendFailure::Failed(e)), _) => {
                    let kind = match e {
                        ProxyError::UpstreamTimeout => Some(UpstreamErrorKind::Timeout),
                        ProxyError::UpstreamFailed => Some(UpstreamErrorKind::Protocol),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        shared.metrics.upstream_error(kind);
                        upstream.failed(idx);
                    }
                    return Err(e);
                }
            }
        }
        if !idempotent {
            break;
        }
    }
    Err(last)
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
        Conn::H1(mut sender) => {
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = Uri::from(dest.path_and_query.clone());
            let fut = sender.try_send_request(req);
            let response = wait(fut, read_timeout, dest.progress.as_deref()).await?;
            Ok((response, Some(PoolReturn::new(ep.clone(), sender))))
        }
        Conn::H2(mut sender) => {
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
            Ok((response, None))
        }
    }
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
            let mapped = match BodyError::find(&err) {
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

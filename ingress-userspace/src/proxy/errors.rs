//! Every response the proxy makes up itself comes from here: a typed error (or a redirect)
//! mapped to a status and a short plain-text body, so the wording lives in one place.
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;

/// Why the proxy answered a request itself instead of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// No host, path, fallback or default backend matched.
    #[error("no route for this request")]
    NotFound,
    /// Malformed or smuggling-shaped framing; never forwarded.
    #[error("malformed request")]
    BadRequest,
    /// Source address refused by `whitelist-source-range` / `denylist-source-range`.
    #[error("source address not allowed")]
    Forbidden,
    /// `proxy-body-size` exceeded (declared or streamed).
    #[error("request body too large")]
    PayloadTooLarge,
    /// The client stopped sending its request body for longer than the send timeout.
    #[error("client request body timed out")]
    ClientTimeout,
    /// The upstream has no endpoint.
    #[error("upstream has no endpoint")]
    NoEndpoints,
    /// Every attempt to connect to an endpoint failed.
    #[error("upstream connect failed")]
    ConnectFailed,
    /// Connecting to the endpoint took longer than the connect timeout.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// The upstream did not answer within the read timeout.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream broke the exchange after the request was sent.
    #[error("upstream failed")]
    UpstreamFailed,
}

impl ProxyError {
    /// The status code sent to the client.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed | ProxyError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The response for this error.
    pub fn response(self) -> Response<ResponseBody> {
        let mut resp = status_response(self.status());
        if self == ProxyError::BadRequest {
            // The connection may carry a smuggled request behind this one: drop it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The short body used for a status the proxy answers itself.
pub fn status_body(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400 Bad Request\n",
        401 => "401 Authorization Required\n",
        403 => "403 Forbidden\n",
        404 => "404 Not Found\n",
        408 => "408 Request Timeout\n",
        413 => "413 Request Entity Too Large\n",
        500 => "500 Internal Server Error\n",
        502 => "502 Bad Gateway\n",
        503 => "503 Service Temporarily Unavailable\n",
        504 => "504 Gateway Timeout\n",
        _ => "",
    }
}

/// A plain-text response with the short body for `status` (or its reason phrase).
pub fn status_response(status: StatusCode) -> Response<ResponseBody> {
    let body: Bytes = match status_body(status) {
        "" => {
            let reason = status.canonical_reason().unwrap_or("");
            Bytes::from(format!("{} {}\n", status.as_u16(), reason))
        }
        text => Bytes::from_static(text.as_bytes()),
    };
    text_response(status, body)
}

/// A `text/plain` response with a fixed body.
pub fn text_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// 401 asking for basic credentials in `realm`.
pub fn unauthorized(realm: &str) -> Response<ResponseBody> {
    let mut resp = status_response(StatusCode::UNAUTHORIZED);
    let challenge = format!("Basic realm=\"{}\"", realm.replace(['"', '\\'], ""));
    let value = HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"Authentication Required\""));
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    resp
}

/// A redirect to `location` with `status` (301/302/307/308), with a short body.
pub fn redirect(status: StatusCode, location: &str) -> Response<ResponseBody> {
    let mut resp = status_response(status);
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        // A Location that cannot be a header value is a config error; do not send half of it.
        Err(_) => status_response(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_short_body() {
        for e in [
            ProxyError::NotFound,
            ProxyError::BadRequest,
            ProxyError::Forbidden,
            ProxyError::PayloadTooLarge,
            ProxyError::ClientTimeout,
            ProxyError::NoEndpoints,
            ProxyError::ConnectFailed,
            ProxyError::ConnectTimeout,
            ProxyError::UpstreamTimeout,
            ProxyError::UpstreamFailed,
        ] {
            assert!(!status_body(e.status()).is_empty(), "{e:?}");
        }
        assert_eq!(ProxyError::NoEndpoints.status(), 503);
        assert_eq!(ProxyError::ConnectFailed.status(), 502);
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
    }

    #[test]
    fn bad_location_is_not_sent() {
        assert_eq!(redirect(StatusCode::FOUND, "/ok").status(), 302);
        assert_eq!(redirect(StatusCode::FOUND, "/bad\nheader").status(), 500);
    }
}

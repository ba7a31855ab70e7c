//! One-off HTTP/1.1 exchanges with a URL outside the routing tables (the `auth-url` service,
//! the `mirror-target`): a new connection each, plain or TLS, closed after the answer.
use std::{net::IpAddr, sync::Arc};

use http::{header, uri::Scheme, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use rustls::{pki_types::ServerName, ClientConfig};
use tokio::net::TcpStream;

/// Sends `req` (absolute URI) on a new connection, with `Host` set to the URL's authority
/// unless it has one, and returns the answer's head. Over `https://`, `tls` decides what of
/// the peer's certificate is checked.
pub async fn exchange<B>(
    tls: &Arc<ClientConfig>,
    mut req: Request<B>,
) -> Result<Response<Incoming>, String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uri = req.uri().clone();
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let authority = uri.authority().ok_or("no host in the URL")?;
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if !req.headers().contains_key(header::HOST) {
        let host_value = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        req.headers_mut().insert(header::HOST, host_value);
    }
    *req.uri_mut() = uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    if https {
        let name = ServerName::try_from(bare.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        send_on(TokioIo::new(tls), req).await
    } else {
        send_on(TokioIo::new(tcp), req).await
    }
}

async fn send_on<T, B>(io: T, req: Request<B>) -> Result<Response<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // Ends with the answer: the sender is dropped after this one request.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// The client's request, as an `auth-url` check or a mirror copy is built from.
pub struct Original<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The request's host, as routed on.
    pub host: &'a str,
    pub tls: bool,
    pub client: IpAddr,
}

impl Original<'_> {
    /// `http` or `https`, as the client came.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The path and query the client asked for.
    pub fn request_uri(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The full URL the client asked for.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.host, self.request_uri())
    }

    /// The nginx variables `auth-url`, `auth-signin` and `mirror-target` may hold, replaced.
    pub fn expand(&self, template: &str) -> String {
        let escaped = super::filters::external_auth::escape(self.request_uri());
        template
            .replace("$escaped_request_uri", &escaped)
            .replace("$request_uri", self.request_uri())
            .replace("$best_http_host", self.host)
            .replace("$http_host", self.host)
            .replace("$host", self.host)
            .replace("$scheme", self.scheme())
    }
}

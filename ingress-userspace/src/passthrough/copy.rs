//! Userspace fallback: copies bytes both ways when the kernel splice is unavailable.
use std::time::Duration;

use tokio::net::TcpStream;

use super::splice::Ending;
use super::watch::Side;

/// Copy buffer per direction.
const BUF: usize = 64 * 1024;

/// Result of one copied connection.
#[derive(Clone, Copy, Debug)]
pub struct CopyReport {
    pub ending: Ending,
    /// Bytes client -> backend (ClientHello included) and backend -> client.
    pub client_bytes: u64,
    pub backend_bytes: u64,
}

/// Copies until both sides sent FIN (each FIN passed on with `shutdown`), or until an error,
/// after which both sockets are reset (SO_LINGER 0).
pub async fn copy(mut client: TcpStream, mut backend: TcpStream) -> CopyReport {
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, BUF, BUF).await {
        Ok((client_bytes, backend_bytes)) => CopyReport {
            ending: Ending::Graceful,
            client_bytes,
            backend_bytes,
        },
        Err(e) => {
            // Which socket failed is not reported; an error reading the backend is as likely.
            let side = if client.take_error().ok().flatten().is_some() {
                Side::Client
            } else {
                Side::Backend
            };
            tracing::debug!(error = %e, "passthrough copy ended with an error; resetting both sides");
            for s in [&client, &backend] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            CopyReport {
                ending: Ending::Reset(side),
                client_bytes: 0,
                backend_bytes: 0,
            }
        }
    }
}

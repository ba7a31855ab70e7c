//! An HTTP request sent to the HTTPS port (`http://host:443/`, a misconfigured health check):
//! answered with nginx's 400 "The plain HTTP request was sent to HTTPS port" instead of a
//! silent close, so whoever sent it can tell what is wrong.
use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const BODY: &str = "The plain HTTP request was sent to HTTPS port\n";
/// Longest time spent on one such connection, answer and lingering close together.
const LINGER: Duration = Duration::from_secs(2);
/// Most request bytes read and dropped while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// Whether a connection whose first byte is `first` (not a TLS record) looks like HTTP: request
/// methods are upper-case tokens.
pub fn looks_like_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Answers 400 and closes. The request is read and dropped, bounded, before the close: with
/// unread bytes in its receive queue Linux resets the connection, and the client may lose the
/// answer.
pub async fn refuse(mut stream: TcpStream) {
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = vec![0u8; 4096];
        // What the peek left in the queue, before answering.
        let _ = stream.try_read(&mut buf);
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_look_like_http_and_tls_does_not() {
        for m in ["GET", "POST", "HEAD", "OPTIONS", "PRI"] {
            assert!(looks_like_http(m.as_bytes()[0]), "{m}");
        }
        for first in [0x16u8, 0x80, 0x00, b'g', b' '] {
            assert!(!looks_like_http(first), "{first:#x}");
        }
    }
}

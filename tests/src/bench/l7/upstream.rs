//! The benchmark's upstream: HTTP/1.1 keep-alive, a fixed 13-byte body for every request,
//! written straight from a byte buffer (no HTTP library), so it costs as little as possible
//! of the core it shares with the load generator. Requests are assumed to have no body (the
//! benchmark only sends GETs); pipelined requests are answered in one write.
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The body of every response.
pub const BODY: &[u8] = b"Hello, world!";

/// The full response to one request.
pub fn response() -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        BODY.len()
    )
    .into_bytes();
    r.extend_from_slice(BODY);
    r
}

/// Largest request head accepted; beyond it the connection is closed.
const MAX_HEAD: usize = 64 * 1024;

/// Serves connections from `listener` forever.
pub async fn serve(listener: TcpListener) {
    let response: &'static [u8] = Box::leak(response().into_boxed_slice());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, response));
            }
            Err(e) => {
                eprintln!("upstream: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// Counts complete request heads at the start of `buf`: (heads, bytes consumed, whether one
/// asked to close the connection).
pub fn complete_heads(buf: &[u8]) -> (usize, usize, bool) {
    let (mut heads, mut consumed, mut close) = (0, 0, false);
    while let Some(end) = find(&buf[consumed..], b"\r\n\r\n") {
        let head = &buf[consumed..consumed + end];
        close |= asks_close(head);
        heads += 1;
        consumed += end + 4;
    }
    (heads, consumed, close)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn asks_close(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with(b"connection:") && find(&line, b"close").is_some()
    })
}

async fn connection(mut stream: TcpStream, response: &'static [u8]) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(4 * 1024);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (heads, consumed, close) = complete_heads(&buf);
        buf.drain(..consumed);
        if heads == 0 {
            if buf.len() > MAX_HEAD {
                return;
            }
            continue;
        }
        out.clear();
        for _ in 0..heads {
            out.extend_from_slice(response);
        }
        if stream.write_all(&out).await.is_err() || close {
            return;
        }
        if buf.capacity() > 64 * 1024 {
            buf.shrink_to(16 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pipelined_heads() {
        let two =
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /partial";
        let (n, used, close) = complete_heads(two);
        assert_eq!((n, close), (2, false));
        assert_eq!(&two[used..], b"GET /partial");
        let c = b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n";
        assert_eq!(complete_heads(c), (1, c.len(), true));
        assert_eq!(complete_heads(b""), (0, 0, false));
    }

    #[tokio::test]
    async fn answers_keep_alive_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let want = [response(), response()].concat();
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, want);
        server.abort();
    }
}

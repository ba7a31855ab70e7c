//! Fuzzes the smuggling guard's HTTP/1 stream scanner against hyper itself, the parser the
//! proxy serves with. The input is one client connection's bytes. hyper reads them one byte at
//! a time, so when it hands over request k it has read exactly to the end of head k. At that
//! point the scanner, fed the same bytes, must have stopped nowhere, be in no head, and expect
//! what hyper's request announces (no body, a `Content-Length` body of that size, or a
//! chunked body). If the two ever disagree on where a message ends, a head hidden in a body
//! (or a body taken for heads) could blind the guard. The scanner is fed twice, in the pieces
//! hyper's reads make and byte by byte, and both must agree.
#![no_main]

#[allow(dead_code)]
#[path = "../../ingress-userspace/src/proxy/framing.rs"]
mod framing;

use std::{
    cell::RefCell,
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use framing::{Chunked, Phase, Scanner};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, rt, service::service_fn, Request, Response};
use libfuzzer_sys::fuzz_target;

/// The connection's bytes, one per read, then EOF; writes are dropped.
struct OneByte {
    data: Rc<Vec<u8>>,
    pos: Rc<RefCell<usize>>,
}

impl rt::Read for OneByte {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        mut buf: rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut pos = self.pos.borrow_mut();
        if let Some(b) = self.data.get(*pos) {
            buf.put_slice(&[*b]);
            *pos += 1;
        }
        Poll::Ready(Ok(()))
    }
}

impl rt::Write for OneByte {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Two scanners over the same stream: fed in pieces, and byte by byte, and whether each
/// has seen a conflicting head (after which the proxy refuses the connection's requests).
#[derive(Default)]
struct Scanners {
    fed: usize,
    pieces: Scanner,
    bytes: Scanner,
    conflict: [bool; 2],
}

impl Scanners {
    fn catch_up(&mut self, data: &[u8], to: usize) {
        if to <= self.fed {
            return;
        }
        self.conflict[0] = self.pieces.feed(&data[self.fed..to]);
        for b in &data[self.fed..to] {
            self.conflict[1] = self.bytes.feed(std::slice::from_ref(b));
        }
        self.fed = to;
    }
}

/// What request `req`'s head announces, as hyper decided it.
fn announced(req: &Request<Incoming>) -> Phase {
    if req.headers().contains_key(http::header::TRANSFER_ENCODING) {
        return Phase::Chunked(Chunked::Start);
    }
    let len = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if len == 0 {
        Phase::Head
    } else {
        Phase::Body(len)
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() > 4096 {
        return;
    }
    let data = Rc::new(input.to_vec());
    let pos = Rc::new(RefCell::new(0usize));
    let scanners = Rc::new(RefCell::new(Scanners::default()));
    let svc = {
        let (data, pos, scanners) = (data.clone(), pos.clone(), scanners.clone());
        service_fn(move |req: Request<Incoming>| {
            let head_end = *pos.borrow();
            let mut s = scanners.borrow_mut();
            s.catch_up(&data, head_end);
            let want = announced(&req);
            assert_eq!(
                s.conflict[0], s.conflict[1],
                "the split changed the verdict"
            );
            // Once a conflict is seen every request of the connection is refused with 400,
            // and its bodies are never read: nothing more to compare.
            let compared = if s.conflict[0] {
                vec![]
            } else {
                vec![("in pieces", &s.pieces), ("byte by byte", &s.bytes)]
            };
            for (how, sc) in compared {
                assert!(
                    !sc.stopped(),
                    "{how}: stopped on a stream hyper reads, at {head_end}"
                );
                assert_eq!(
                    sc.expecting(),
                    Some(want),
                    "{how}: at the end of a head hyper parsed ({head_end} bytes)"
                );
            }
            drop(s);
            // A CONNECT answered 2xx would switch the connection; the proxy marks that.
            let refuse = req.method() == http::Method::CONNECT;
            async move {
                let _ = req.into_body().collect().await;
                let status = if refuse { 400 } else { 200 };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Empty::<Bytes>::new())
                        .expect("static response"),
                )
            }
        })
    };
    let io = OneByte {
        data: data.clone(),
        pos: pos.clone(),
    };
    let mut conn =
        std::pin::pin!(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
    let mut cx = Context::from_waker(Waker::noop());
    // Every read and write is ready at once, so the connection ends within a bounded number
    // of polls; a pending poll is only hyper handing work between its own parts.
    for _ in 0..(input.len() + 16) * 64 {
        if let Poll::Ready(_) = conn.as_mut().poll(&mut cx) {
            break;
        }
    }
    let mut s = scanners.borrow_mut();
    s.catch_up(&data, data.len());
    assert_eq!(
        s.conflict[0], s.conflict[1],
        "the split changed the verdict"
    );
    if !s.conflict[0] {
        assert_eq!(
            s.pieces.stopped(),
            s.bytes.stopped(),
            "the split changed the state"
        );
        if !s.pieces.stopped() {
            assert_eq!(
                s.pieces.expecting(),
                s.bytes.expecting(),
                "the split changed the state"
            );
        }
    }
});

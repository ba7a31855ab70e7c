//! A copy of a small request body kept as it streams to the upstream, so a request that
//! left can go again (another endpoint, or a fresh connection after a stale pooled one).
//! nginx can always resend because it reads the whole body first (`proxy_request_buffering
//! on`); ingressd streams it, and keeps at most [`REPLAY_LIMIT`] bytes for this.
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// Bodies up to this size can be sent again; the frames are shared with what was sent, so
/// the cost is holding them until the response head comes.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// The frames of a body seen so far, until it ends or grows past [`REPLAY_LIMIT`].
#[derive(Debug, Default)]
pub struct Replay {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    chunks: Vec<Bytes>,
    len: usize,
    complete: bool,
    /// Too large, or carried trailers: nothing kept.
    given_up: bool,
}

impl Replay {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Keeps a data frame as it passes.
    pub fn data(&self, d: &Bytes) {
        self.with(|s| {
            if s.given_up {
                return;
            }
            s.len += d.len();
            if s.len > REPLAY_LIMIT {
                s.give_up();
            } else {
                s.chunks.push(d.clone());
            }
        });
    }

    /// A frame that is not data (trailers): such a body is not sent again.
    pub fn other(&self) {
        self.with(State::give_up);
    }

    /// The body reached its end.
    pub fn finish(&self) {
        self.with(|s| s.complete = true);
    }

    /// The whole body, if it passed to its end within the limit.
    pub fn body(&self) -> Option<Bytes> {
        self.with(|s| {
            if !s.complete || s.given_up {
                return None;
            }
            if let [one] = s.chunks.as_slice() {
                return Some(one.clone());
            }
            let mut all = BytesMut::with_capacity(s.len);
            for c in &s.chunks {
                all.extend_from_slice(c);
            }
            Some(all.freeze())
        })
    }
}

impl State {
    fn give_up(&mut self) {
        self.given_up = true;
        self.chunks = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_body_within_the_limit_is_kept_in_order() {
        let r = Replay::default();
        r.data(&Bytes::from_static(b"hel"));
        assert_eq!(r.body(), None, "not at its end yet");
        r.data(&Bytes::from_static(b"lo"));
        r.finish();
        assert_eq!(r.body().as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn a_body_past_the_limit_or_with_trailers_is_not_kept() {
        let big = Replay::default();
        big.data(&Bytes::from(vec![0u8; REPLAY_LIMIT]));
        big.data(&Bytes::from_static(b"x"));
        big.finish();
        assert_eq!(big.body(), None);
        let trailers = Replay::default();
        trailers.data(&Bytes::from_static(b"x"));
        trailers.other();
        trailers.finish();
        assert_eq!(trailers.body(), None);
        let exact = Replay::default();
        exact.data(&Bytes::from(vec![1u8; REPLAY_LIMIT]));
        exact.finish();
        assert_eq!(exact.body().map(|b| b.len()), Some(REPLAY_LIMIT));
    }
}

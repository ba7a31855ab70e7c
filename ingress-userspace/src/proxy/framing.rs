//! Follows the inbound HTTP/1 byte stream as hyper reads it (heads, then each body by its own
//! framing) and spots a head with both `Content-Length` and `Transfer-Encoding`. hyper drops
//! the `Content-Length` of such a head before the request reaches the proxy, so the raw
//! header lines are the one place to see them together. Pure: [`super::limits::FramingGuard`]
//! feeds it what each read brings.

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest header line start we keep: a `Content-Length` line with its value and some
/// whitespace fits; a longer one of those fails closed.
const LINE: usize = 64;

/// Where the scanner is in the inbound HTTP/1 byte stream. Bodies are skipped by their own
/// framing, as hyper reads them, so header-looking lines inside a body are never taken for a
/// head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Lines of a request head (request line included).
    Head,
    /// This many more body bytes (Content-Length).
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunked),
}

/// hyper's chunked-body grammar, state by state (its `ChunkedState`), so that where the
/// scanner thinks a body ends is where hyper does. A looser reading would let text that
/// hyper takes as trailer bytes pass for a head of its own, and a large `Content-Length` in
/// it would make the scanner skip the real next head as a body. Whatever hyper refuses ends
/// the connection, so the scanner stops there too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// The first hex digit of a chunk size.
    Start,
    /// More hex digits, or whitespace, `;` or CR after them.
    Size(u64),
    /// Whitespace after the size.
    SizeLws(u64),
    /// A chunk extension, up to CR.
    Extension(u64),
    /// The LF ending a size line.
    SizeLf(u64),
    /// This many more chunk-data bytes.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// After the last chunk's size line (or a trailer line): CR, or a trailer's first byte.
    EndCr,
    /// A trailer line, up to CR (a bare LF does not end it).
    Trailer,
    /// The LF after a trailer line.
    TrailerLf,
    /// The LF ending the body.
    EndLf,
}

impl Chunked {
    /// The state after byte `b`; `None` where hyper refuses the body.
    fn step(self, b: u8) -> Option<Chunked> {
        use Chunked::*;
        let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
        Some(match (self, b) {
            (Start, b) => Size(hex(b)?),
            (Size(n), b) if b.is_ascii_hexdigit() => Size(n.checked_mul(16)?.checked_add(hex(b)?)?),
            (Size(n) | SizeLws(n), b' ' | b'\t') => SizeLws(n),
            (Size(n) | SizeLws(n), b';') => Extension(n),
            (Size(n) | SizeLws(n) | Extension(n), b'\r') => SizeLf(n),
            (Extension(_), b'\n') => return None,
            (Size(_) | SizeLws(_), _) => return None,
            (Extension(n), _) => Extension(n),
            (SizeLf(0), b'\n') => EndCr,
            (SizeLf(n), b'\n') => Data(n),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (EndCr, b'\r') => EndLf,
            (Trailer, b'\r') => TrailerLf,
            (EndCr | Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            // EndLf's LF is taken by the caller (the body ends); Data is skipped in bulk.
            (SizeLf(_) | DataCr | DataLf | TrailerLf | EndLf | Data(_), _) => return None,
        })
    }
}

/// Skips up to `n` body bytes of `data`: how many are still to come, and what follows them.
fn skip(n: u64, data: &[u8]) -> (u64, &[u8]) {
    let take = n.min(data.len() as u64);
    (n - take, &data[take as usize..])
}

/// Follows the HTTP/1 request stream (heads, then bodies by their framing) and spots a head
/// with both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug)]
pub(crate) struct Scanner {
    preface_seen: usize,
    /// Nothing more to check: HTTP/2, or a stream hyper itself refuses and closes.
    disabled: bool,
    phase: Phase,
    line: [u8; LINE],
    line_len: usize,
    /// The current line outgrew `line`; only its start is kept.
    long: bool,
    saw_cl: bool,
    saw_te: bool,
    /// The head's `Content-Length` value, when it parsed.
    cl: Option<u64>,
    conflict: bool,
    /// Bytes of a request head have arrived, and not yet its end.
    in_head: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            preface_seen: 0,
            disabled: false,
            phase: Phase::Head,
            line: [0; LINE],
            line_len: 0,
            long: false,
            saw_cl: false,
            saw_te: false,
            cl: None,
            conflict: false,
            in_head: false,
        }
    }
}

impl Scanner {
    /// Stops reading the stream as HTTP/1: what follows is another protocol's.
    pub(crate) fn stop(&mut self) {
        self.disabled = true;
    }

    /// Whether the scanner has stopped (HTTP/2, a switched protocol, or framing hyper
    /// refuses, after which hyper closes the connection).
    pub(crate) fn stopped(&self) -> bool {
        self.disabled
    }

    /// Bytes of a request head have arrived, and not yet its end.
    pub(crate) fn head_in_progress(&self) -> bool {
        self.in_head && !self.disabled
    }

    /// What the scanner expects next, with no line in progress, or `None` while a line of a
    /// head is: for the tests and the fuzz target's oracle, which compare it with where hyper
    /// is in the same stream.
    #[allow(dead_code)]
    pub(crate) fn expecting(&self) -> Option<Phase> {
        (self.line_len == 0 && !self.long && !self.in_head).then_some(self.phase)
    }

    /// Feeds bytes read from the client; true once a conflicting head was seen.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> bool {
        if self.disabled || self.conflict {
            return self.conflict;
        }
        if self.preface_seen < H2_PREFACE.len() {
            let n = data.len().min(H2_PREFACE.len() - self.preface_seen);
            if data[..n] == H2_PREFACE[self.preface_seen..self.preface_seen + n] {
                self.preface_seen += n;
                if self.preface_seen == H2_PREFACE.len() {
                    // HTTP/2: framing is binary and checked by the h2 codec.
                    self.disabled = true;
                    return false;
                }
            } else {
                self.preface_seen = H2_PREFACE.len();
            }
        }
        while !data.is_empty() && !self.disabled && !self.conflict {
            data = match self.phase {
                Phase::Head => self.lines(data),
                Phase::Body(n) => {
                    let (left, rest) = skip(n, data);
                    self.phase = if left == 0 {
                        Phase::Head
                    } else {
                        Phase::Body(left)
                    };
                    rest
                }
                Phase::Chunked(state) => self.chunked(state, data),
            };
        }
        self.conflict
    }

    /// Head lines, up to the end of the head or of `data`. Only the first
    /// `LINE` bytes of a line are kept; the rest is skipped to the line break.
    fn lines<'d>(&mut self, mut data: &'d [u8]) -> &'d [u8] {
        while !data.is_empty() {
            // Set per line, not per read: a read may end one head and start the next.
            self.in_head = true;
            let end = memchr::memchr(b'\n', data);
            let line = &data[..end.unwrap_or(data.len())];
            let take = line.len().min(LINE - self.line_len);
            for (dst, src) in self.line[self.line_len..self.line_len + take]
                .iter_mut()
                .zip(line)
            {
                *dst = src.to_ascii_lowercase();
            }
            self.line_len += take;
            self.long |= line.len() > take;
            let Some(end) = end else {
                return &[];
            };
            data = &data[end + 1..];
            self.end_line();
            if self.phase != Phase::Head || self.disabled || self.conflict {
                break;
            }
        }
        data
    }

    fn end_line(&mut self) {
        let line = &self.line[..self.line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && !self.long {
            self.end_head();
        } else {
            self.header(self.long);
        }
        self.line_len = 0;
        self.long = false;
    }

    fn header(&mut self, long: bool) {
        let line = &self.line[..self.line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"content-length:") {
            self.saw_cl = true;
            if long {
                // Padded past any real value: its body cannot be followed, so fail closed.
                self.conflict = true;
            }
            // A value that does not parse is one hyper refuses too (400, connection closed).
            self.cl = std::str::from_utf8(value.trim_ascii())
                .ok()
                .and_then(|v| v.parse().ok());
        } else if line.starts_with(b"transfer-encoding:") {
            self.saw_te = true;
        }
    }

    /// The empty line ending a head: what follows is decided by the head's framing, as hyper
    /// decides it.
    fn end_head(&mut self) {
        self.in_head = false;
        let (cl, te) = (self.saw_cl, self.saw_te);
        let len = self.cl.take();
        self.saw_cl = false;
        self.saw_te = false;
        self.phase = match (cl, te, len) {
            (true, true, _) => {
                self.conflict = true;
                Phase::Head
            }
            (_, true, _) => Phase::Chunked(Chunked::Start),
            (true, false, Some(0)) | (false, false, _) => Phase::Head,
            (true, false, Some(n)) => Phase::Body(n),
            (true, false, None) => {
                // hyper refuses this head; nothing after it is read as HTTP.
                self.disabled = true;
                Phase::Head
            }
        };
    }

    /// Follows a chunked body through `data`: what follows its end, or nothing.
    fn chunked<'d>(&mut self, mut state: Chunked, mut data: &'d [u8]) -> &'d [u8] {
        loop {
            if let Chunked::Data(n) = state {
                let (left, rest) = skip(n, data);
                data = rest;
                state = if left == 0 {
                    Chunked::DataCr
                } else {
                    Chunked::Data(left)
                };
            }
            let Some((&b, rest)) = data.split_first() else {
                self.phase = Phase::Chunked(state);
                return data;
            };
            data = rest;
            if state == Chunked::EndLf && b == b'\n' {
                self.phase = Phase::Head;
                return data;
            }
            match state.step(b) {
                Some(next) => state = next,
                None => {
                    // hyper refuses this body and closes the connection.
                    self.disabled = true;
                    return &[];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut s = Scanner::default();
        chunks.iter().any(|c| s.feed(c))
    }

    #[test]
    fn a_head_is_in_progress_from_its_first_byte_to_its_blank_line() {
        let mut s = Scanner::default();
        let steps: &[(&[u8], bool)] = &[
            (b"\r\n", false), // a stray line break before a request starts none
            (b"POST / HTTP/1.1\r\nHost: x\r\n", true),
            (b"Content-Length: 4\r\n\r\nab", false), // the body is not the head's
            (b"cd", false),
            (b"GET /next", true),
            (b" HTTP/1.1\r\n\r\nGET /third HTTP/1.1\r\n", true), // one ends, one starts
            (b"\r\n", false),
            (b"GET /fourth", true),
            (b" HTTP/1.1\r\n\r\n", false),
        ];
        for (bytes, in_head) in steps {
            s.feed(bytes);
            assert_eq!(
                s.in_head,
                *in_head,
                "after {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn flags_cl_and_te_in_one_block() {
        let req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(scan(&[req]));
        // Split at every position: the state machine must carry across reads.
        for i in 0..req.len() {
            assert!(scan(&[&req[..i], &req[i..]]), "split at {i}");
        }
        assert!(scan(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"
        ]));
    }

    #[test]
    fn separate_blocks_are_fine() {
        let two = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(!scan(&[two]));
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nX-Transfer-Encoding: x\r\n\r\n"
        ]));
    }

    /// Every way of splitting `data` in two reads gives `want`.
    fn scan_all_splits(data: &[u8], want: bool) {
        assert_eq!(scan(&[data]), want, "whole");
        for i in 0..data.len() {
            assert_eq!(scan(&[&data[..i], &data[i..]]), want, "split at {i}");
        }
    }

    #[test]
    fn header_lines_inside_bodies_are_body() {
        let body = b"Content-Length: 12\nTransfer-Encoding: chunked\n\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        let mut fixed = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        fixed.extend_from_slice(body);
        scan_all_splits(&fixed, false);
        let mut chunked =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n");
        scan_all_splits(&chunked, false);
        // The stream is followed past each body: a conflicting head after it is still caught.
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        for first in [&fixed, &chunked] {
            let mut two = first.clone();
            two.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            two.extend_from_slice(bad);
            scan_all_splits(&two, true);
        }
    }

    /// Trailers end at an empty CRLF line only, as hyper reads them: a bare LF line inside
    /// them does not end the body, so a head written after it is trailer bytes, and a
    /// conflicting head after the real end is still caught.
    #[test]
    fn trailers_end_where_hyper_ends_them() {
        let bad = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\nX-T: a\n\nGET /fake HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"
            .to_vec();
        stream.extend_from_slice(bad);
        scan_all_splits(&stream, true);
        // The same hidden text is never a head of its own, even when it conflicts.
        let hidden = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\n\
            GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        scan_all_splits(hidden, false);
        // No trailers: `0`, CRLF, CRLF, then the next head.
        let mut plain = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec();
        plain.extend_from_slice(bad);
        scan_all_splits(&plain, true);
    }

    /// Chunk framing hyper refuses (it closes the connection) stops the scanner, with no
    /// verdict on what follows; what hyper takes (whitespace and extensions after the size,
    /// upper-case hex) is followed to the body's end.
    #[test]
    fn chunk_framing_hyper_refuses_stops_the_scan() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "3\nabc\r\n0\r\n\r\n",     // bare LF after the size
            "3;ext\nabc\r\n0\r\n\r\n", // bare LF after an extension
            "3\r\nabcX\r\n0\r\n\r\n",  // data longer than its size
            "3\r\nabc\n0\r\n\r\n",     // bare LF after data
            "x\r\n0\r\n\r\n",          // no size digit
            "3 x\r\nabc\r\n0\r\n\r\n", // junk after the size's whitespace
            "0\r\nX: 1\rY\r\n\r\n",    // CR without LF in a trailer
            "0\r\n\rX",                // CR without LF at the end
            "11111111111111111\r\n",   // a size past 64 bits
        ] {
            let mut s = Scanner::default();
            s.feed(format!("{head}{body}").as_bytes());
            assert!(s.disabled, "{body:?}");
        }
        for body in [
            "A \t;a=\"b\"\r\n0123456789\r\n0\r\n\r\n",
            "0 \r\nT: 1\r\nU: 2\r\n\r\n",
        ] {
            let mut s = Scanner::default();
            s.feed(format!("{head}{body}").as_bytes());
            assert!(!s.disabled, "{body:?}");
            assert_eq!(s.expecting(), Some(Phase::Head), "{body:?}");
        }
    }

    #[test]
    fn a_padded_content_length_fails_closed() {
        let pad = " ".repeat(LINE);
        let req = format!("POST / HTTP/1.1\r\nContent-Length:{pad}2\r\n\r\nhi");
        assert!(scan(&[req.as_bytes()]));
    }

    #[test]
    fn h2_preface_disables() {
        let mut data = H2_PREFACE.to_vec();
        data.extend_from_slice(b"\ncontent-length:\ntransfer-encoding:\n");
        assert!(!scan(&[&data]));
    }
}

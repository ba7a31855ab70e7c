//! In-kernel splice: both sockets go into the `SPLICE_SOCKS` sockhash, where the
//! `sk_passthrough` stream-verdict program redirects every received skb to the peer's
//! egress. Userspace only watches for FIN/RST and tears down.
//!
//! Ordering rules this module keeps (each one loses or stalls bytes if broken):
//! - Peers are written before sockets; the backend goes in before the client, so the
//!   client's bytes (the peeked ClientHello first) always find their target. TLS is
//!   client-first, so the backend has nothing to send before it.
//! - After insertion each socket is "kicked" with a non-blocking recv: bytes that arrived
//!   before the verdict program was attached sit in the receive queue, and the sockmap recv
//!   path runs the verdict over them.
//! - A FIN is propagated (`shutdown(SHUT_WR)` on the peer) only once the peer has accepted
//!   every byte redirected to it: the kernel queues redirected skbs per socket and sends them
//!   from a worker, and a shutdown before that worker ran would drop them. The verdict
//!   program counts redirected bytes; sock_diag says what the peer socket has taken.
//! - A reset on one side resets the other (SO_LINGER 0, close).
use std::{
    collections::VecDeque,
    io,
    net::Shutdown,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, SockHash},
    programs::SkSkb,
    Ebpf, EbpfLoader,
};
use ingress_common::{
    counters::{Counter, Stat},
    maps as names,
    passthrough::SplicePeer,
};
use rustix::net::RecvFlags;
use thiserror::Error;
use tokio::{net::TcpStream, sync::mpsc};

use super::{
    sockdiag::{SockDiag, SockId},
    watch::{Event, Side, Watcher},
};

/// Name of the stream-verdict program in the kernel object.
pub const PROGRAM: &str = "sk_passthrough";
/// Receive and send buffer of each spliced socket (the kernel doubles it for overhead).
pub const SOCKET_BUFFER: usize = 4 << 20;
/// A FIN waits at most this long without progress for queued bytes to leave the peer: a
/// reader may pause (a paused download) as long as nginx's stream `proxy_timeout` lets an
/// idle connection live (600 s); only then are both sides reset.
const DRAIN_STALL: Duration = Duration::from_secs(600);
/// How often a FIN's drain is checked while the peer takes bytes, and once it has paused.
const DRAIN_POLL: Duration = Duration::from_millis(20);
const DRAIN_POLL_PAUSED: Duration = Duration::from_secs(1);

/// Why the kernel splice cannot be used.
#[derive(Debug, Error)]
pub enum SpliceError {
    #[error("loading the kernel object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("map {0} missing from the kernel object")]
    MissingMap(&'static str),
    #[error("program {PROGRAM} missing from the kernel object")]
    MissingProgram,
    #[error("map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("self-test failed: {0}")]
    SelfTest(String),
}

/// The loaded program and the two maps it uses.
pub struct KernelSplice {
    // Keeps the program and its attachment alive when this module loaded the object itself.
    _ebpf: Option<Ebpf>,
    socks: SockHash<MapData, u64>,
    peers: BpfHashMap<MapData, u64, SplicePeer>,
    /// The object's verdict counters, for the program's drop reasons.
    counters: Option<crate::maps::counters::Counters>,
}

impl std::fmt::Debug for KernelSplice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelSplice").finish_non_exhaustive()
    }
}

/// Loads the kernel object for the splice only and attaches the verdict program to the
/// sockhash. Maps of the XDP program are shrunk to one entry since it is not loaded here.
/// With a unified loader, call [`attach_kernel`] on its object instead.
pub fn load_kernel(kernel_log: bool) -> Result<KernelSplice, SpliceError> {
    let mut loader = EbpfLoader::new();
    crate::maps::kernel_log::configure(&mut loader, kernel_log);
    for map in [
        names::VIPS,
        "VIP_ADDRS",
        names::BACKENDS,
        names::MAGLEV,
        names::CONNTRACK,
        names::REPLY_NAT,
        names::VIP_STATS,
    ] {
        loader.map_max_entries(map, 1);
    }
    let mut ebpf = loader.load(crate::maps::OBJECT)?;
    if kernel_log {
        // A debugging aid: the splice works without it.
        if let Err(e) = crate::maps::kernel_log::spawn(&mut ebpf) {
            tracing::warn!(error = %e, "kernel log records unavailable");
        }
    }
    let mut kernel = attach_kernel(&mut ebpf)?;
    kernel._ebpf = Some(ebpf);
    Ok(kernel)
}

/// Takes SPLICE_SOCKS and SPLICE_PEERS out of an already loaded object, loads the verdict
/// program and attaches it to the sockhash. The program stays attached while `ebpf` lives.
/// The sockhash must not be pinned: its sockets die with the process.
pub fn attach_kernel(ebpf: &mut Ebpf) -> Result<KernelSplice, SpliceError> {
    let socks: SockHash<MapData, u64> = ebpf
        .take_map(names::SPLICE_SOCKS)
        .ok_or(SpliceError::MissingMap(names::SPLICE_SOCKS))?
        .try_into()?;
    let peers: BpfHashMap<MapData, u64, SplicePeer> = ebpf
        .take_map(names::SPLICE_PEERS)
        .ok_or(SpliceError::MissingMap(names::SPLICE_PEERS))?
        .try_into()?;
    let prog: &mut SkSkb = ebpf
        .program_mut(PROGRAM)
        .ok_or(SpliceError::MissingProgram)?
        .try_into()?;
    crate::maps::loader::retry_interrupted(
        || prog.load(),
        crate::maps::loader::verifier_interrupted,
        PROGRAM,
    )?;
    prog.attach(socks.fd())?;
    // Only the drop counts need it: the splice works without.
    let counters = crate::maps::counters::Counters::from_ebpf(ebpf)
        .inspect_err(|e| tracing::warn!(error = %e, "splice drop counters unavailable"))
        .ok();
    Ok(KernelSplice {
        _ebpf: None,
        socks,
        peers,
        counters,
    })
}

/// How a spliced connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Both sides sent FIN; each FIN was passed on after the bytes before it.
    Graceful,
    /// A reset (or socket error) on this side; the other side was reset too.
    Reset(Side),
    /// Bytes queued towards this side made no progress for a minute; both were reset.
    Stalled(Side),
}

/// Result of one splice.
#[derive(Clone, Copy, Debug)]
pub struct SpliceReport {
    pub ending: Ending,
    /// Bytes the kernel moved client -> backend (the ClientHello included).
    pub client_bytes: u64,
    /// Bytes the kernel moved backend -> client.
    pub backend_bytes: u64,
}

/// A splice that could not be set up. The streams are handed back for the userspace copy
/// unless they were lost on the way (then the connection is gone).
#[derive(Debug)]
pub struct SetupFailed {
    pub streams: Option<(TcpStream, TcpStream)>,
    pub error: SpliceError,
}

/// The kernel splice: maps, close watcher and sock_diag lookups.
#[derive(Debug)]
pub struct SpliceEngine {
    kernel: Mutex<KernelSplice>,
    watcher: Watcher,
    diag: SockDiag,
    next_conn: AtomicU64,
}

/// One socket of a pair.
struct Half {
    stream: std::net::TcpStream,
    id: SockId,
    /// Bytes userspace wrote to it before the splice (PROXY header).
    prelude: u64,
}

/// Cookie and addresses of a socket, as the maps and sock_diag know it.
fn sock_id(s: &TcpStream) -> io::Result<SockId> {
    Ok(SockId {
        local: s.local_addr()?,
        remote: s.peer_addr()?,
        cookie: socket2::SockRef::from(s).cookie()?,
    })
}

impl SpliceEngine {
    /// Loads the program and starts the close watcher; needs a tokio runtime.
    pub fn new() -> Result<Self, SpliceError> {
        Self::with_kernel(load_kernel(false)?)
    }

    /// An engine over an attached program (from [`load_kernel`] or [`attach_kernel`]).
    pub fn with_kernel(kernel: KernelSplice) -> Result<Self, SpliceError> {
        Ok(SpliceEngine {
            kernel: Mutex::new(kernel),
            watcher: Watcher::new()?,
            diag: SockDiag::open()?,
            next_conn: AtomicU64::new(1),
        })
    }

    fn kernel(&self) -> std::sync::MutexGuard<'_, KernelSplice> {
        // Every critical section is a handful of map syscalls; a poisoned lock still guards
        // consistent maps.
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes (and skbs) the verdict program dropped, by reason: (unpaired socket, peer gone).
    pub fn drops(&self) -> Option<(Counter, Counter)> {
        let k = self.kernel();
        let c = k.counters.as_ref()?;
        let unpaired = c.stat(Stat::DropSpliceUnpaired).ok()?;
        let peer_gone = c.stat(Stat::DropSplicePeerGone).ok()?;
        Some((unpaired, peer_gone))
    }

    /// Entries in (SPLICE_SOCKS, SPLICE_PEERS): two each per live splice, zero when idle.
    pub fn map_entries(&self) -> (usize, usize) {
        let k = self.kernel();
        (k.socks.keys().count(), k.peers.keys().count())
    }

    /// Splices `client` and `backend` until both sides closed or one reset. `backend_prelude`
    /// is what was written to the backend before (the PROXY header); the ClientHello must
    /// still be unread in `client`'s receive queue.
    pub async fn splice(
        &self,
        client: TcpStream,
        backend: TcpStream,
        backend_prelude: u64,
    ) -> Result<SpliceReport, SetupFailed> {
        let ids = sock_id(&client).and_then(|c| Ok((c, sock_id(&backend)?)));
        let (client_id, backend_id) = match ids {
            Ok(ids) => ids,
            Err(e) => {
                return Err(SetupFailed {
                    streams: Some((client, backend)),
                    error: e.into(),
                })
            }
        };
        // Out of tokio's reactor: spliced sockets must not wake a task per segment.
        let (client, backend) = match (client.into_std(), backend.into_std()) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                let error = c
                    .err()
                    .or(b.err())
                    .unwrap_or_else(|| io::Error::other("into_std"));
                return Err(SetupFailed {
                    streams: None,
                    error: error.into(),
                });
            }
        };
        for s in [&client, &backend] {
            size_buffers(s);
        }
        let client = Half {
            stream: client,
            id: client_id,
            prelude: 0,
        };
        let backend = Half {
            stream: backend,
            id: backend_id,
            prelude: backend_prelude,
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let error = match Armed::arm(self, conn, &client, &backend) {
            Ok(mut armed) => {
                let ending = armed.run().await;
                let (client_bytes, backend_bytes) = armed.counters();
                drop(armed);
                if ending != Ending::Graceful {
                    // Pass the reset on: closing with SO_LINGER 0 sends RST instead of FIN.
                    for s in [&client.stream, &backend.stream] {
                        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                    }
                }
                return Ok(SpliceReport {
                    ending,
                    client_bytes,
                    backend_bytes,
                });
            }
            Err(e) => e,
        };
        Err(SetupFailed {
            streams: give_back(client, backend),
            error,
        })
    }

    /// Loopback check run once at start: bytes both ways, a FIN each way, nothing left
    /// in the maps. Falling back is cheaper than shipping a splice that misbehaves.
    pub async fn self_test(&self) -> Result<(), SpliceError> {
        tokio::time::timeout(Duration::from_secs(5), self_test(self))
            .await
            .map_err(|_| SpliceError::SelfTest("timed out".into()))?
    }
}

/// Fixes both socket buffers of a spliced socket at [`SOCKET_BUFFER`]. Nothing reads a
/// spliced socket from userspace, so receive autotuning never grows its window, and the
/// kernel's redirect worker stalls whenever the peer's send buffer is full: with the
/// defaults the splice ran at half the speed of the userspace copy on loopback.
fn size_buffers(s: &std::net::TcpStream) {
    use rustix::net::sockopt as so;
    // The *_force variants pass the rmem_max/wmem_max caps (CAP_NET_ADMIN, which loading
    // BPF needs anyway); without it the capped setters still help.
    if so::set_socket_recv_buffer_size_force(s, SOCKET_BUFFER).is_err() {
        let _ = so::set_socket_recv_buffer_size(s, SOCKET_BUFFER);
    }
    if so::set_socket_send_buffer_size_force(s, SOCKET_BUFFER).is_err() {
        let _ = so::set_socket_send_buffer_size(s, SOCKET_BUFFER);
    }
}

/// Converts std streams back to tokio after a failed setup.
fn give_back(client: Half, backend: Half) -> Option<(TcpStream, TcpStream)> {
    let back = |s: std::net::TcpStream| TcpStream::from_std(s).ok();
    Some((back(client.stream)?, back(backend.stream)?))
}

/// Runs the verdict over whatever sits in the receive queue (sockmap recv path); nothing is
/// ever delivered to userspace, so any byte read here is a bug worth resetting for.
fn kick(half: &Half) -> io::Result<()> {
    let mut byte = [0u8; 1];
    match rustix::net::recv(&half.stream, &mut byte[..], RecvFlags::DONTWAIT) {
        Ok((0, _)) => Ok(()),
        Ok(_) => Err(io::Error::other("sockmap passed bytes to userspace")),
        Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Backend,
        Side::Backend => Side::Client,
    }
}

/// A pair in the maps and the close watcher; dropping it removes every entry.
struct Armed<'a> {
    engine: &'a SpliceEngine,
    conn: u64,
    client: &'a Half,
    backend: &'a Half,
    events: mpsc::UnboundedReceiver<Event>,
    /// Events that arrived while a FIN was being passed on.
    queued: VecDeque<Event>,
}

impl<'a> Armed<'a> {
    /// Watches both sockets, writes the peer entries, the backend, the client, and kicks
    /// both. On error everything done so far is undone (by Drop).
    fn arm(
        engine: &'a SpliceEngine,
        conn: u64,
        client: &'a Half,
        backend: &'a Half,
    ) -> Result<Self, SpliceError> {
        let events = engine
            .watcher
            .register(conn, &client.stream, &backend.stream)?;
        let armed = Armed {
            engine,
            conn,
            client,
            backend,
            events,
            queued: VecDeque::new(),
        };
        let (c, b) = (client.id.cookie, backend.id.cookie);
        {
            let mut k = engine.kernel();
            k.peers.insert(
                c,
                SplicePeer {
                    peer_cookie: b,
                    redirected: 0,
                },
                0,
            )?;
            k.peers.insert(
                b,
                SplicePeer {
                    peer_cookie: c,
                    redirected: 0,
                },
                0,
            )?;
            k.socks.insert(b, backend.stream.as_raw_fd(), 0)?;
            k.socks.insert(c, client.stream.as_raw_fd(), 0)?;
        }
        // Bytes that arrived before the verdict program was attached (the ClientHello).
        kick(backend)?;
        kick(client)?;
        Ok(armed)
    }

    fn half(&self, side: Side) -> &'a Half {
        match side {
            Side::Client => self.client,
            Side::Backend => self.backend,
        }
    }

    fn redirected(&self, side: Side) -> Result<u64, aya::maps::MapError> {
        self.engine
            .kernel()
            .peers
            .get(&self.half(side).id.cookie, 0)
            .map(|p| p.redirected)
    }

    /// Bytes moved (client -> backend, backend -> client).
    fn counters(&self) -> (u64, u64) {
        (
            self.redirected(Side::Client).unwrap_or(0),
            self.redirected(Side::Backend).unwrap_or(0),
        )
    }

    async fn next_event(&mut self) -> Option<Event> {
        match self.queued.pop_front() {
            Some(ev) => Some(ev),
            None => self.events.recv().await,
        }
    }

    /// Waits for hang-ups and passes them on until both directions are closed.
    async fn run(&mut self) -> Ending {
        let (mut client_done, mut backend_done) = (false, false);
        loop {
            // No event source left means the runtime is shutting down: reset, don't hang.
            let Some(ev) = self.next_event().await else {
                return Ending::Reset(Side::Client);
            };
            let from = self.half(ev.side);
            if !matches!(from.stream.take_error(), Ok(None)) {
                return Ending::Reset(ev.side);
            }
            let done = match ev.side {
                Side::Client => &mut client_done,
                Side::Backend => &mut backend_done,
            };
            if !*done {
                *done = true;
                if let Err(ending) = self.pass_fin(ev.side).await {
                    return ending;
                }
            }
            if client_done && backend_done {
                return Ending::Graceful;
            }
            // EPOLLHUP is level-triggered: re-arming after it would fire again at once. It
            // only follows our own shutdown of this socket, so the other side still reports.
            if ev.hup_or_err {
                continue;
            }
            if let Err(e) = self.engine.watcher.rearm(self.conn, ev.side, &from.stream) {
                tracing::warn!(error = %e, "re-arming the passthrough close watch failed");
                return Ending::Reset(ev.side);
            }
        }
    }

    /// `side` sent FIN: once its peer has taken every byte redirected to it, shut the peer's
    /// write side so the FIN follows them.
    async fn pass_fin(&mut self, side: Side) -> Result<(), Ending> {
        let (from, to) = (self.half(side), self.half(other(side)));
        // Settle the verdicts of everything received before the FIN.
        kick(from).map_err(|_| Ending::Reset(side))?;
        let mut last = None;
        let mut since = Instant::now();
        let mut delay = Duration::from_micros(50);
        loop {
            let redirected = self.redirected(side).map_err(|_| Ending::Reset(side))?;
            let expected = to.prelude + redirected;
            let written = self
                .engine
                .diag
                .bytes_written(to.id)
                .map_err(|_| Ending::Reset(other(side)))?;
            if written >= expected {
                break;
            }
            if last != Some(written) {
                last = Some(written);
                since = Instant::now();
            } else if since.elapsed() > DRAIN_STALL {
                tracing::warn!(
                    pending = expected - written,
                    "passthrough splice stalled before FIN; resetting"
                );
                return Err(Ending::Stalled(other(side)));
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                ev = self.events.recv() => match ev {
                    Some(ev) if ev.side != side && ev.hup_or_err
                        && !matches!(to.stream.take_error(), Ok(None)) => return Err(Ending::Reset(ev.side)),
                    Some(ev) => self.queued.push_back(ev),
                    None => return Err(Ending::Reset(side)),
                },
            }
            // A paused reader is polled once a second, not fifty times.
            let cap = if since.elapsed() > DRAIN_POLL_PAUSED {
                DRAIN_POLL_PAUSED
            } else {
                DRAIN_POLL
            };
            delay = (delay * 2).min(cap);
        }
        to.stream
            .shutdown(Shutdown::Write)
            .map_err(|_| Ending::Reset(other(side)))
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.engine
            .watcher
            .unregister(self.conn, &self.client.stream, &self.backend.stream);
        let mut k = self.engine.kernel();
        for cookie in [self.client.id.cookie, self.backend.id.cookie] {
            let _ = k.socks.remove(&cookie);
            let _ = k.peers.remove(&cookie);
        }
    }
}

async fn self_test(engine: &SpliceEngine) -> Result<(), SpliceError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |m: &str| SpliceError::SelfTest(m.to_string());
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let back = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut client = TcpStream::connect(front.local_addr()?).await?;
    let (proxy_client, _) = front.accept().await?;
    let proxy_backend = TcpStream::connect(back.local_addr()?).await?;
    let (mut server, _) = back.accept().await?;
    // Sent before the splice, like a peeked ClientHello.
    client.write_all(b"early").await?;
    let task = async {
        engine
            .splice(proxy_client, proxy_backend, 0)
            .await
            .map_err(|f| f.error)
    };
    let io = async {
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await?;
        if &buf != b"early" {
            return Err(fail("first bytes did not arrive"));
        }
        let payload = vec![0x5a; 256 * 1024];
        server.write_all(&payload).await?;
        server.shutdown().await?;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await?;
        if got != payload {
            return Err(fail("backend bytes or FIN did not arrive intact"));
        }
        client.write_all(b"late").await?;
        client.shutdown().await?;
        let mut tail = Vec::new();
        server.read_to_end(&mut tail).await?;
        if tail != b"late" {
            return Err(fail("client bytes or FIN did not arrive intact"));
        }
        Ok::<_, SpliceError>(())
    };
    let (report, io) = tokio::join!(task, io);
    io?;
    if report?.ending != Ending::Graceful {
        return Err(fail("splice did not end gracefully"));
    }
    if engine.map_entries() != (0, 0) {
        return Err(fail("map entries left behind"));
    }
    Ok(())
}

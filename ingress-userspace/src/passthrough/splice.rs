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
//! - The kernel queues redirected skbs without bound, so each direction has a credit
//!   (`SPLICE_CREDIT`): past it the verdict holds bytes in the sender's own receive queue,
//!   where they count against its buffer and TCP's window closes. Userspace, told through a
//!   ring buffer, relays the held bytes once the peer has taken every redirected one, then
//!   renews the credit. A reader slower than its sender costs [`CREDIT`] of queue, not
//!   the whole transfer; a fast pair relays a little once per [`CREDIT`].
use std::{
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
    maps::{HashMap as BpfHashMap, MapData, RingBuf, SockHash},
    programs::SkSkb,
    Ebpf, EbpfLoader,
};
use ingress_common::{
    counters::{Counter, Stat},
    maps as names,
    passthrough::{SpliceCredit, SplicePeer},
};
use rustix::net::{RecvFlags, SendFlags};
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
/// Bytes a direction may have redirected beyond what its peer has taken when the credit is
/// renewed: the most kernel queue a slow reader can pin, besides both socket buffers.
pub const CREDIT: u64 = 16 << 20;
/// How often a pair is checked for held bytes whose notice was lost (ring buffer full)...
const SWEEP: Duration = Duration::from_secs(5);
/// ...and how soon after a credit renewal, which can race with a hold that sees the old one.
const SWEEP_AFTER_RENEWAL: Duration = Duration::from_millis(20);
/// Bytes read per relay step.
const RELAY_CHUNK: usize = 256 * 1024;

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

impl SpliceError {
    /// The sockhash refused a socket that is no longer established (a client that sent its
    /// ClientHello and FIN at once, a backend that closed): the connection's own doing, any
    /// client can cause it, and the userspace copy serves it.
    pub fn socket_not_established(&self) -> bool {
        match self {
            SpliceError::Map(aya::maps::MapError::SyscallError(e)) => {
                e.io_error.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error())
            }
            SpliceError::Io(e) => e.kind() == io::ErrorKind::NotConnected,
            _ => false,
        }
    }
}

/// The loaded program and the maps it uses.
pub struct KernelSplice {
    // Keeps the program and its attachment alive when this module loaded the object itself.
    _ebpf: Option<Ebpf>,
    socks: SockHash<MapData, u64>,
    peers: BpfHashMap<MapData, u64, SplicePeer>,
    credit: BpfHashMap<MapData, u64, SpliceCredit>,
    /// Notices of held bytes; handed to the close watcher's thread.
    held: Option<RingBuf<MapData>>,
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
    let credit: BpfHashMap<MapData, u64, SpliceCredit> = ebpf
        .take_map(names::SPLICE_CREDIT)
        .ok_or(SpliceError::MissingMap(names::SPLICE_CREDIT))?
        .try_into()?;
    let held: RingBuf<MapData> = ebpf
        .take_map(names::SPLICE_HELD)
        .ok_or(SpliceError::MissingMap(names::SPLICE_HELD))?
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
        credit,
        held: Some(held),
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
    /// Bytes queued towards this side made no progress for [`DRAIN_STALL`]; both were reset.
    Stalled(Side),
    /// One side closed its direction and the other sent nothing for the half-open idle
    /// time; both were reset. Without it a peer that never closes (its kernel answers
    /// keepalive in FIN_WAIT2) holds the pair, its map entries and descriptors for good.
    HalfOpenIdle,
}

/// How long a pair may stay half-closed without a byte from the side still open: nginx's
/// stream `proxy_timeout` as ingress-nginx sets it (600 s), only once one side has closed,
/// since a quiet connection both sides keep open is theirs to keep.
pub const HALF_OPEN_IDLE: Duration = Duration::from_secs(600);

/// Since when a count of bytes moved has stood still (the half-open check of both engines).
#[derive(Debug, Default)]
pub(super) struct Quiet(Option<(Instant, u64)>);

impl Quiet {
    /// How long `moved` has stood at its value as of `now` (zero when it just changed).
    pub(super) fn for_how_long(&mut self, moved: u64, now: Instant) -> Duration {
        match self.0 {
            Some((since, before)) if before == moved => now - since,
            _ => {
                self.0 = Some((now, moved));
                Duration::ZERO
            }
        }
    }

    /// Forgets the count: watching starts over at the next call.
    pub(super) fn reset(&mut self) {
        self.0 = None;
    }
}

/// Result of one splice.
#[derive(Clone, Copy, Debug)]
pub struct SpliceReport {
    pub ending: Ending,
    /// Bytes moved client -> backend (the ClientHello included), by the kernel or relayed.
    pub client_bytes: u64,
    /// Bytes moved backend -> client.
    pub backend_bytes: u64,
    /// Of those, bytes the kernel held for userspace to relay (client -> backend, backend
    /// -> client).
    pub relayed: (u64, u64),
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
    pub fn with_kernel(mut kernel: KernelSplice) -> Result<Self, SpliceError> {
        let held = kernel.held.take();
        Ok(SpliceEngine {
            kernel: Mutex::new(kernel),
            watcher: Watcher::new(held)?,
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

    /// Bytes (and skbs) the verdict program held for userspace to relay, past a credit.
    pub fn held(&self) -> Option<Counter> {
        let k = self.kernel();
        k.counters.as_ref()?.stat(Stat::SpliceHeld).ok()
    }

    /// Entries in (SPLICE_SOCKS, SPLICE_PEERS, SPLICE_CREDIT): two each per live splice,
    /// zero when idle.
    pub fn map_entries(&self) -> (usize, usize, usize) {
        let k = self.kernel();
        (
            k.socks.keys().count(),
            k.peers.keys().count(),
            k.credit.keys().count(),
        )
    }

    /// Splices `client` and `backend` until both sides closed or one reset. `backend_prelude`
    /// is what was written to the backend before (the PROXY header); the ClientHello must
    /// still be unread in `client`'s receive queue.
    pub async fn splice(
        &self,
        client: TcpStream,
        backend: TcpStream,
        backend_prelude: u64,
        half_open_idle: Duration,
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
        let error = match Armed::arm(self, conn, &client, &backend, half_open_idle) {
            Ok(mut armed) => {
                let ending = armed.run().await;
                let (client_bytes, backend_bytes) = armed.counters();
                let relayed = (armed.flows[0].sent, armed.flows[1].sent);
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
                    relayed,
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

/// One direction of a pair, named by the side that sends: what userspace relays of it and
/// whether its FIN is owed to the peer.
#[derive(Default)]
struct Flow {
    /// The kernel holds bytes of this direction (a notice, or the sweep found some).
    held: bool,
    /// Held bytes read from the sender; `sent` of them are written to the peer.
    read: u64,
    sent: u64,
    /// Read but not yet written (`pending[offset..]`).
    pending: Vec<u8>,
    offset: usize,
    /// The sender sent FIN; a recv settles anything before it.
    fin: bool,
    kick: bool,
    /// The FIN was passed on: the direction is closed.
    done: bool,
    /// What the peer had taken when last seen, and since when, against a stall.
    last_written: Option<u64>,
    since: Option<Instant>,
    delay: Duration,
}

/// What a step of a flow left to do.
enum Step {
    /// Nothing until the next event.
    Idle,
    /// Waiting on the peer (or on the kernel's queue): try again after this long.
    Retry(Duration),
}

impl Flow {
    /// Notes whether the peer took bytes and says how long to wait; past [`DRAIN_STALL`]
    /// without progress the direction has stalled.
    fn wait(&mut self, written: u64) -> Result<Step, ()> {
        let now = Instant::now();
        if self.last_written != Some(written) || self.since.is_none() {
            self.last_written = Some(written);
            self.since = Some(now);
            self.delay = Duration::from_micros(50);
        }
        let since = self.since.map_or(Duration::ZERO, |s| now - s);
        if since > DRAIN_STALL {
            return Err(());
        }
        // A paused reader is polled once a second, not fifty times.
        let cap = if since > DRAIN_POLL_PAUSED {
            DRAIN_POLL_PAUSED
        } else {
            DRAIN_POLL
        };
        let delay = self.delay;
        self.delay = (self.delay * 2).min(cap);
        Ok(Step::Retry(delay))
    }

    fn settled(&mut self) -> Step {
        self.since = None;
        Step::Idle
    }
}

/// What `to` has taken, and whether that is all of its prelude plus `moved` bytes
/// (redirected and relayed): it must be before more relayed bytes or a FIN may follow.
fn taken(diag: &SockDiag, to: &Half, moved: u64) -> io::Result<(u64, bool)> {
    let written = diag.bytes_written(to.id)?;
    Ok((written, written >= to.prelude + moved))
}

fn index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Backend => 1,
    }
}

/// A pair in the maps and the close watcher; dropping it removes every entry.
struct Armed<'a> {
    engine: &'a SpliceEngine,
    conn: u64,
    client: &'a Half,
    backend: &'a Half,
    events: mpsc::UnboundedReceiver<Event>,
    /// Client -> backend, backend -> client.
    flows: [Flow; 2],
    /// See [`HALF_OPEN_IDLE`].
    half_open_idle: Duration,
}

impl<'a> Armed<'a> {
    /// Watches both sockets, writes the peer and credit entries, the backend, the client,
    /// and kicks both. On error everything done so far is undone (by Drop).
    fn arm(
        engine: &'a SpliceEngine,
        conn: u64,
        client: &'a Half,
        backend: &'a Half,
        half_open_idle: Duration,
    ) -> Result<Self, SpliceError> {
        let (c, b) = (client.id.cookie, backend.id.cookie);
        let events = engine
            .watcher
            .register(conn, (&client.stream, c), (&backend.stream, b))?;
        let armed = Armed {
            engine,
            conn,
            client,
            backend,
            events,
            flows: Default::default(),
            half_open_idle,
        };
        {
            let mut k = engine.kernel();
            for (from, to) in [(c, b), (b, c)] {
                let peer = SplicePeer {
                    peer_cookie: to,
                    ..SplicePeer::default()
                };
                k.peers.insert(from, peer, 0)?;
                let credit = SpliceCredit {
                    limit: CREDIT,
                    consumed: 0,
                };
                k.credit.insert(from, credit, 0)?;
            }
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

    fn entry(&self, side: Side) -> Result<SplicePeer, aya::maps::MapError> {
        self.engine
            .kernel()
            .peers
            .get(&self.half(side).id.cookie, 0)
    }

    /// Bytes moved (client -> backend, backend -> client).
    fn counters(&self) -> (u64, u64) {
        let moved = |side| {
            let redirected = self.entry(side).map_or(0, |p| p.redirected);
            redirected + self.flows[index(side)].sent
        };
        (moved(Side::Client), moved(Side::Backend))
    }

    /// Waits for hang-ups and held bytes, relays and passes FINs on until both directions
    /// are closed.
    async fn run(&mut self) -> Ending {
        let mut sweep_at = Instant::now() + SWEEP.min(self.half_open_idle);
        let mut retry: [Option<Instant>; 2] = [None, None];
        // Once one direction is closed: how long the other has moved no byte (redirected by
        // the verdict, or held for userspace).
        let mut half_open = Quiet::default();
        loop {
            let wake = retry.iter().flatten().fold(sweep_at, |a, &b| a.min(b));
            tokio::select! {
                ev = self.events.recv() => {
                    // No event source left means the runtime is shutting down: reset.
                    let Some(ev) = ev else {
                        return Ending::Reset(Side::Client);
                    };
                    if let Err(ending) = self.on_event(ev) {
                        return ending;
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if now >= sweep_at {
                sweep_at = now + SWEEP.min(self.half_open_idle);
                let closed = self.flows.iter().filter(|f| f.done).count();
                for side in [Side::Client, Side::Backend] {
                    let Ok(entry) = self.entry(side) else {
                        return Ending::Reset(side);
                    };
                    let flow = &mut self.flows[index(side)];
                    if !flow.done && entry.passed > flow.read {
                        flow.held = true;
                    }
                    if closed == 1 && !flow.done {
                        let moved = entry.redirected + entry.passed;
                        if half_open.for_how_long(moved, now) >= self.half_open_idle {
                            tracing::debug!("passthrough splice: half-closed and idle; resetting");
                            return Ending::HalfOpenIdle;
                        }
                    }
                }
            }
            for side in [Side::Client, Side::Backend] {
                retry[index(side)] = match self.step(side) {
                    Ok(Step::Idle) => None,
                    Ok(Step::Retry(after)) => Some(now + after),
                    Err(ending) => return ending,
                };
            }
            if self.flows.iter().any(|f| f.held) {
                // A renewal may have raced with a hold that saw the old credit.
                sweep_at = sweep_at.min(now + SWEEP_AFTER_RENEWAL);
            }
            if self.flows.iter().all(|f| f.done) {
                return Ending::Graceful;
            }
        }
    }

    fn on_event(&mut self, ev: Event) -> Result<(), Ending> {
        let from = self.half(ev.side);
        let flow = &mut self.flows[index(ev.side)];
        if ev.held {
            flow.held = !flow.done;
            return Ok(());
        }
        if !matches!(from.stream.take_error(), Ok(None)) {
            return Err(Ending::Reset(ev.side));
        }
        if !flow.fin {
            flow.fin = true;
            flow.kick = true;
        }
        // EPOLLHUP is level-triggered: re-arming after it would fire again at once. It
        // only follows our own shutdown of this socket, so the other side still reports.
        if !ev.hup_or_err {
            if let Err(e) = self.engine.watcher.rearm(self.conn, ev.side, &from.stream) {
                tracing::warn!(error = %e, "re-arming the passthrough close watch failed");
                return Err(Ending::Reset(ev.side));
            }
        }
        Ok(())
    }

    /// Moves one direction as far as it can go without waiting: held bytes to the peer once
    /// it has taken the redirected ones, the credit renewed once nothing is held, and the
    /// FIN passed on once the peer has taken everything.
    fn step(&mut self, side: Side) -> Result<Step, Ending> {
        let (from, to) = (self.half(side), self.half(other(side)));
        let (reset_from, reset_to) = (Ending::Reset(side), Ending::Reset(other(side)));
        let stalled = |()| {
            tracing::warn!("passthrough splice: the reader made no progress; resetting");
            Ending::Stalled(other(side))
        };
        let i = index(side);
        if self.flows[i].done {
            return Ok(Step::Idle);
        }
        loop {
            let entry = self.entry(side).map_err(|_| reset_from)?;
            let flow = &mut self.flows[i];
            if flow.offset < flow.pending.len() {
                // Held bytes come after every redirected one.
                let taken = taken(&self.engine.diag, to, entry.redirected + flow.sent);
                let (written, all) = taken.map_err(|_| reset_to)?;
                if !all {
                    return flow.wait(written).map_err(stalled);
                }
                let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
                match rustix::net::send(&to.stream, &flow.pending[flow.offset..], flags) {
                    Ok(n) => {
                        flow.offset += n;
                        flow.sent += n as u64;
                        flow.since = None;
                    }
                    Err(rustix::io::Errno::AGAIN) => return flow.wait(written).map_err(stalled),
                    Err(_) => return Err(reset_to),
                }
                continue;
            }
            if entry.passed > flow.read || flow.kick {
                let kicked = flow.kick;
                flow.kick = false;
                flow.pending.resize(RELAY_CHUNK, 0);
                flow.offset = 0;
                let got = rustix::net::recv(&from.stream, &mut flow.pending, RecvFlags::DONTWAIT);
                let n = match got {
                    Ok((n, _)) => n,
                    Err(rustix::io::Errno::AGAIN) => 0,
                    Err(_) => return Err(reset_from),
                };
                flow.pending.truncate(n);
                flow.read += n as u64;
                if n > 0 {
                    continue;
                }
                if entry.passed > flow.read {
                    // Counted by the verdict, not queued yet (the kernel's worker has it).
                    let read = flow.read;
                    return flow.wait(read).map_err(stalled);
                }
                if kicked {
                    // The FIN's wake-up can come before the verdict of the data in its own
                    // segment; the recv took the socket lock after that verdict, so only an
                    // entry read now counts those bytes before the FIN is passed on.
                    continue;
                }
            }
            if flow.held {
                // Caught up: redirect again, a credit ahead of what the peer has taken
                // (all of it, by now).
                flow.held = false;
                flow.pending = Vec::new();
                let credit = SpliceCredit {
                    limit: entry.redirected + CREDIT,
                    consumed: flow.sent,
                };
                let cookie = from.id.cookie;
                self.engine
                    .kernel()
                    .credit
                    .insert(cookie, credit, 0)
                    .map_err(|_| reset_from)?;
                let passed = self.entry(side).map_err(|_| reset_from)?.passed;
                let flow = &mut self.flows[i];
                if passed > flow.read {
                    flow.held = true;
                    continue;
                }
            }
            let flow = &mut self.flows[i];
            if !flow.fin {
                return Ok(flow.settled());
            }
            // The FIN follows every byte before it, redirected or relayed.
            let taken = taken(&self.engine.diag, to, entry.redirected + flow.sent);
            let (written, all) = taken.map_err(|_| reset_to)?;
            if !all {
                return flow.wait(written).map_err(stalled);
            }
            to.stream.shutdown(Shutdown::Write).map_err(|_| reset_to)?;
            flow.done = true;
            return Ok(flow.settled());
        }
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
            let _ = k.credit.remove(&cookie);
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
            .splice(proxy_client, proxy_backend, 0, HALF_OPEN_IDLE)
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
    if engine.map_entries() != (0, 0, 0) {
        return Err(fail("map entries left behind"));
    }
    Ok(())
}

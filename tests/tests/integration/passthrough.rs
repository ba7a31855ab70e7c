//! TLS passthrough end to end on loopback: real rustls clients verify the BACKEND's
//! certificate (test CA) through the front, with the kernel sockmap splice and with the
//! userspace copy.
use std::{sync::Arc, time::Duration};

use ingress::passthrough::{
    peek::PeekLimits,
    sni::{parse_client_hello, HelloParse},
    splice::SpliceEngine,
    Passthrough, PassthroughConfig,
};
use tests::passthrough::{
    capture_client_hello, connect, eventually, open_fd_targets, open_fds, open_sockets_on, pattern,
    route, snapshot, tls_over, BackendBehavior, BackendEnd, Chunked, Front, Pki, TlsBackend, STEP,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::timeout,
};

const PASS: &str = "pass.test";
const TERM: &str = "term.test";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Kernel,
    Userspace,
}

fn config(mode: Mode) -> PassthroughConfig {
    PassthroughConfig {
        userspace: mode == Mode::Userspace,
        ..PassthroughConfig::default()
    }
}

/// A CA, a backend for PASS (behaving as told), and a front with a terminator for TERM.
struct Setup {
    pki: Pki,
    backend: TlsBackend,
    front: Front,
}

async fn setup_with(
    mode: Mode,
    cfg: PassthroughConfig,
    behavior: BackendBehavior,
    bind: &str,
) -> Setup {
    setup_on(Passthrough::start(cfg).await, mode, behavior, bind).await
}

/// Like [`setup_with`] over an engine the caller started.
async fn setup_on(pt: Passthrough, mode: Mode, behavior: BackendBehavior, bind: &str) -> Setup {
    let pki = Pki::new();
    let proxy_protocol = behavior.expect_proxy;
    let backend = TlsBackend::start(pki.server_config(&[PASS, "*.wild.test"]), behavior).await;
    assert_eq!(
        pt.is_kernel_splice(),
        mode == Mode::Kernel,
        "engine choice for {mode:?}"
    );
    pt.apply(&snapshot(vec![
        route(PASS, &[backend.addr], proxy_protocol),
        route("*.wild.test", &[backend.addr], proxy_protocol),
    ]));
    let front = Front::start(Arc::new(pt), bind, Some(pki.server_config(&[TERM]))).await;
    Setup {
        pki,
        backend,
        front,
    }
}

async fn setup(mode: Mode) -> Setup {
    setup_with(
        mode,
        config(mode),
        BackendBehavior::default(),
        "127.0.0.1:0",
    )
    .await
}

/// Waits until the front has no spliced pair left in the maps and no socket open towards
/// the front or the backend.
async fn assert_clean(s: &Setup) {
    let ports = [s.front.addr.port(), s.backend.addr.port()];
    let pt = s.front.pt.clone();
    let clean = eventually(STEP, || {
        pt.map_entries().is_none_or(|e| e == (0, 0, 0)) && open_sockets_on(&ports) == 0
    })
    .await;
    assert!(
        clean,
        "left behind: map entries {:?}, sockets {}",
        pt.map_entries(),
        open_sockets_on(&ports)
    );
}

/// One echo round trip through the front, then a clean close; checks what the backend saw.
async fn echo_once(s: &mut Setup, sni: &str, payload: &[u8]) {
    let tcp = connect(s.front.addr).await;
    let mut tls = tls_over(tcp, sni, s.pki.client_config())
        .await
        .expect("handshake with the backend through the front");
    tls.write_all(payload).await.expect("write");
    let mut back = vec![0u8; payload.len()];
    timeout(STEP, tls.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, payload);
    tls.shutdown().await.expect("close_notify");
    let mut rest = Vec::new();
    timeout(STEP, tls.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .expect("read to end");
    assert_eq!(rest, b"BYE");
    let conn = s.backend.next().await;
    assert_eq!(conn.sni.as_deref(), Some(sni));
    assert_eq!(conn.end, BackendEnd::Eof);
    assert_eq!(conn.received, payload.len() as u64);
}

#[tokio::test]
async fn kernel_splice_self_test_passes() {
    let engine = SpliceEngine::new().expect("load the sk_skb program (needs root and BPF)");
    engine.self_test().await.expect("self-test");
    assert_eq!(engine.map_entries(), (0, 0, 0));
}

/// The socket cookie of `s` (SO_COOKIE), the key of the splice maps.
fn socket_cookie(s: &impl std::os::fd::AsRawFd) -> u64 {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid fd and an 8-byte out buffer with its length.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    cookie
}

/// Takes the socket with `cookie` out of whichever loaded SPLICE_SOCKS map holds it (tests
/// run in parallel, each engine with its own maps), as the kernel does when a socket closes
/// and as teardown does before the peer entries go.
fn remove_from_sockhash(cookie: u64) -> bool {
    let mut removed = false;
    for info in aya::maps::loaded_maps().flatten() {
        if info.name_as_str() != Some("SPLICE_SOCKS") {
            continue;
        }
        let Ok(data) = aya::maps::MapData::from_id(info.id()) else {
            continue;
        };
        let map = aya::maps::Map::SockHash(data);
        if let Ok(mut hash) = aya::maps::SockHash::<_, u64>::try_from(map) {
            removed |= hash.remove(&cookie).is_ok();
        }
    }
    removed
}

/// A client and a backend on loopback with the proxy's two ends of them: (client, proxy's
/// client socket, proxy's backend socket, backend).
async fn loopback_pair() -> (
    tokio::net::TcpStream,
    tokio::net::TcpStream,
    tokio::net::TcpStream,
    tokio::net::TcpStream,
) {
    let front = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let back = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let client = tokio::net::TcpStream::connect(front.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (proxy_client, _) = front.accept().await.expect("accept");
    let proxy_backend = tokio::net::TcpStream::connect(back.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = back.accept().await.expect("accept");
    (client, proxy_client, proxy_backend, server)
}

/// The running splice of a [`loopback_pair`].
type SpliceTask = tokio::task::JoinHandle<
    Result<ingress::passthrough::splice::SpliceReport, ingress::passthrough::splice::SetupFailed>,
>;

/// Splices the proxy's two sockets with `engine` and returns once a `ping` written by
/// `client` has reached `server` through it (the splice is armed by its first bytes).
async fn spliced(
    engine: &Arc<SpliceEngine>,
    proxy_client: tokio::net::TcpStream,
    proxy_backend: tokio::net::TcpStream,
    client: &mut tokio::net::TcpStream,
    server: &mut tokio::net::TcpStream,
) -> SpliceTask {
    let idle = ingress::passthrough::splice::HALF_OPEN_IDLE;
    spliced_with(engine, proxy_client, proxy_backend, client, server, idle).await
}

/// [`spliced`], with a pair left half-open reset after `half_open_idle`.
async fn spliced_with(
    engine: &Arc<SpliceEngine>,
    proxy_client: tokio::net::TcpStream,
    proxy_backend: tokio::net::TcpStream,
    client: &mut tokio::net::TcpStream,
    server: &mut tokio::net::TcpStream,
    half_open_idle: Duration,
) -> SpliceTask {
    let splice = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .splice(proxy_client, proxy_backend, 0, half_open_idle)
                .await
        }
    });
    client.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    timeout(STEP, server.read_exact(&mut buf))
        .await
        .expect("spliced in time")
        .expect("read");
    assert_eq!(&buf, b"ping");
    splice
}

/// Takes the entry of `cookie` out of whichever loaded SPLICE_PEERS map holds it.
fn remove_peer_entry(cookie: u64) -> bool {
    let mut removed = false;
    for info in aya::maps::loaded_maps().flatten() {
        if info.name_as_str() != Some("SPLICE_PEERS") {
            continue;
        }
        let Ok(data) = aya::maps::MapData::from_id(info.id()) else {
            continue;
        };
        let map = aya::maps::Map::HashMap(data);
        if let Ok(mut peers) = aya::maps::HashMap::<_, u64, [u64; 3]>::try_from(map) {
            removed |= peers.remove(&cookie).is_ok();
        }
    }
    removed
}

/// The verdict program's two drop branches, each counted and never delivered: a peer that
/// left the sockhash (`drop_splice_peer_gone`), and a socket without a peer entry
/// (`drop_splice_unpaired`). Both are windows of a teardown (or a socket closing) while
/// bytes still arrive; here they are opened on purpose by editing the maps.
#[tokio::test]
async fn kernel_splice_counts_bytes_whose_peer_is_gone() {
    let engine =
        Arc::new(SpliceEngine::new().expect("load the sk_skb program (needs root and BPF)"));
    let (mut client, proxy_client, proxy_backend, mut server) = loopback_pair().await;
    let backend_cookie = socket_cookie(&proxy_backend);
    let client_cookie = socket_cookie(&proxy_client);
    let splice = spliced(
        &engine,
        proxy_client,
        proxy_backend,
        &mut client,
        &mut server,
    )
    .await;
    let mut buf = [0u8; 4];
    let (unpaired_before, gone_before) = engine.drops().expect("drop counters");

    assert!(
        remove_from_sockhash(backend_cookie),
        "backend socket in a sockhash"
    );
    client.write_all(b"lost bytes").await.expect("write");
    let counted = eventually(STEP, || {
        engine
            .drops()
            .is_some_and(|(_, gone)| gone.bytes - gone_before.bytes == 10)
    })
    .await;
    let (unpaired, gone) = engine.drops().expect("drop counters");
    assert!(
        counted,
        "peer-gone bytes not counted: {gone:?} (before {gone_before:?})"
    );
    assert!(gone.packets > gone_before.packets);
    assert_eq!(unpaired, unpaired_before, "the client side is still paired");
    // Nothing reached the backend.
    let res = timeout(Duration::from_millis(200), server.read(&mut buf)).await;
    assert!(res.is_err(), "dropped bytes delivered: {res:?}");

    assert!(
        remove_peer_entry(client_cookie),
        "client entry in a peer map"
    );
    client.write_all(b"unpaired").await.expect("write");
    let counted = eventually(STEP, || {
        engine
            .drops()
            .is_some_and(|(u, _)| u.bytes - unpaired_before.bytes == 8)
    })
    .await;
    let (unpaired, _) = engine.drops().expect("drop counters");
    assert!(counted, "unpaired bytes not counted: {unpaired:?}");

    // Closing both ends still ends the splice and leaves no entry behind.
    drop(client);
    drop(server);
    let report = timeout(STEP, splice)
        .await
        .expect("splice ends in time")
        .expect("task");
    assert!(report.is_ok(), "splice setup failed");
    assert!(
        eventually(STEP, || engine.map_entries() == (0, 0, 0)).await,
        "entries left: {:?}",
        engine.map_entries()
    );
}

/// A reader slower than its sender pins at most a credit of kernel queue: past it the
/// verdict holds bytes in the sender's socket (whose TCP window then closes), and userspace
/// relays them, in order, once the reader drains. Without the credit the kernel queued the
/// backend's whole transfer for a client that did not read.
#[tokio::test]
async fn kernel_splice_holds_bytes_for_a_reader_that_does_not_read() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    const TOTAL: usize = 96 << 20;
    // What the sockets on the way may buffer besides the credit: the backend's send buffer,
    // the proxy's two spliced sockets (8 MiB each, doubled 4 MiB) and the client's receive
    // buffer, with room to spare.
    const BOUND: usize = ingress::passthrough::splice::CREDIT as usize + (40 << 20);
    let engine =
        Arc::new(SpliceEngine::new().expect("load the sk_skb program (needs root and BPF)"));
    let (mut client, proxy_client, proxy_backend, mut server) = loopback_pair().await;
    let splice = spliced(
        &engine,
        proxy_client,
        proxy_backend,
        &mut client,
        &mut server,
    )
    .await;
    let held_before = engine.held().expect("held counter");

    // Sequence numbers: a lost, repeated or reordered chunk shows.
    let data: Arc<Vec<u8>> = Arc::new(
        (0..(TOTAL / 8) as u64)
            .flat_map(|i| i.to_be_bytes())
            .collect(),
    );
    let accepted = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (data, accepted) = (data.clone(), accepted.clone());
        async move {
            for chunk in data.chunks(1 << 20) {
                server.write_all(chunk).await.expect("backend write");
                accepted.fetch_add(chunk.len(), SeqCst);
            }
            server.shutdown().await.expect("backend FIN");
            server
        }
    });
    // The client reads nothing for a while: the backend's writes must stall.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled_at = accepted.load(SeqCst);
    assert!(
        stalled_at < BOUND,
        "the backend handed over {stalled_at} bytes to a client that read nothing (bound {BOUND})"
    );
    assert!(
        stalled_at > ingress::passthrough::splice::CREDIT as usize,
        "the splice moved only {stalled_at} bytes before holding"
    );
    let held = engine.held().expect("held counter");
    assert!(held.bytes > held_before.bytes, "no byte was held");

    // Then it reads everything, intact and in order.
    let mut got = Vec::with_capacity(TOTAL);
    timeout(Duration::from_secs(60), client.read_to_end(&mut got))
        .await
        .expect("the transfer completes once the client reads")
        .expect("client read");
    assert_eq!(got.len(), TOTAL, "bytes lost or added");
    assert!(got == *data, "bytes reordered or corrupted");
    let mut server = writer.await.expect("writer");
    client.shutdown().await.expect("client FIN");
    let mut rest = Vec::new();
    timeout(STEP, server.read_to_end(&mut rest))
        .await
        .expect("FIN passed on")
        .expect("server read");
    let report = timeout(STEP, splice)
        .await
        .expect("splice ends in time")
        .expect("task")
        .expect("splice set up");
    assert_eq!(
        report.ending,
        ingress::passthrough::splice::Ending::Graceful
    );
    assert_eq!(report.backend_bytes, TOTAL as u64);
    assert!(report.relayed.1 > 0, "nothing was relayed: {report:?}");
    assert_eq!(engine.map_entries(), (0, 0, 0));
}

/// A pair one side closed is reset once the other sends nothing for the half-open idle
/// time: a client that never closes after the backend did (its kernel answers keepalive in
/// FIN_WAIT2) cannot hold the pair, its map entries and descriptors for good. Bytes it
/// still sends keep the pair.
#[tokio::test]
async fn kernel_splice_resets_a_half_open_pair_gone_quiet() {
    let engine =
        Arc::new(SpliceEngine::new().expect("load the sk_skb program (needs root and BPF)"));
    let (mut client, proxy_client, proxy_backend, mut server) = loopback_pair().await;
    let idle = Duration::from_secs(2);
    let splice = spliced_with(
        &engine,
        proxy_client,
        proxy_backend,
        &mut client,
        &mut server,
        idle,
    )
    .await;
    server.shutdown().await.expect("backend FIN");
    let mut rest = Vec::new();
    timeout(STEP, client.read_to_end(&mut rest))
        .await
        .expect("FIN passed on")
        .expect("client read");
    // Sending for three times the idle time (and more than a sweep past it) keeps the pair:
    // the bytes the verdict redirects count.
    let started = tokio::time::Instant::now();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        client.write_all(b"x").await.expect("write");
    }
    let mut six = [0u8; 6];
    timeout(STEP, server.read_exact(&mut six))
        .await
        .expect("bytes after the FIN in time")
        .expect("server read");
    assert!(
        !splice.is_finished(),
        "reset while the open side was sending"
    );
    let report = timeout(Duration::from_secs(20), splice)
        .await
        .expect("a quiet half-open pair is ended")
        .expect("task")
        .expect("splice set up");
    assert_eq!(
        report.ending,
        ingress::passthrough::splice::Ending::HalfOpenIdle
    );
    assert!(started.elapsed() >= Duration::from_millis(6000 + 2000));
    assert_eq!(engine.map_entries(), (0, 0, 0));
}

/// A client that sends its bytes and FIN before the splice is armed cannot enter the
/// sockhash (only established sockets may): the setup says so, distinctly from a real
/// failure (it is logged at debug: any client can cause it), and hands both streams back.
#[tokio::test]
async fn kernel_splice_refuses_a_socket_already_half_closed_and_hands_it_back() {
    let engine = SpliceEngine::new().expect("load the sk_skb program (needs root and BPF)");
    let (mut client, proxy_client, proxy_backend, _server) = loopback_pair().await;
    client.write_all(b"hello").await.expect("write");
    client.shutdown().await.expect("FIN");
    // Loopback delivers the FIN at once; the bytes stay unread.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failed = engine
        .splice(
            proxy_client,
            proxy_backend,
            0,
            ingress::passthrough::splice::HALF_OPEN_IDLE,
        )
        .await
        .expect_err("a half-closed socket is not spliced");
    assert!(
        failed.error.socket_not_established(),
        "not recognised: {}",
        failed.error
    );
    assert!(failed.streams.is_some(), "streams handed back for the copy");
    assert_eq!(engine.map_entries(), (0, 0, 0));
}

/// The unified-loader path: the object is loaded by someone else, the splice only takes its
/// maps and attaches the program; it works while that object lives, and reports its drop and
/// hold counters in `/metrics`.
#[tokio::test]
async fn kernel_splice_on_an_object_loaded_elsewhere() {
    let mut loader = aya::EbpfLoader::new();
    ingress::maps::kernel_log::configure(&mut loader, false);
    for map in [
        "VIPS",
        "VIP_ADDRS",
        "BACKENDS",
        "MAGLEV",
        "CONNTRACK",
        "REPLY_NAT",
        "VIP_STATS",
    ] {
        loader.map_max_entries(map, 1);
    }
    let mut ebpf = loader.load(ingress::maps::OBJECT).expect("load object");
    let kernel = ingress::passthrough::splice::attach_kernel(&mut ebpf).expect("attach");
    let pt = Passthrough::start_with_kernel(config(Mode::Kernel), Some(Ok(kernel))).await;
    assert!(
        pt.is_kernel_splice(),
        "self-test passed on the shared object"
    );
    assert_eq!(pt.map_entries(), Some((0, 0, 0)));
    let mut metrics = String::new();
    ingress::admin::MetricsSource::render(&pt, &mut metrics);
    for line in [
        "ingress_passthrough_splice_dropped_bytes_total{reason=\"peer_gone\"} 0",
        "ingress_passthrough_splice_held_bytes_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from {metrics}"
        );
    }
    drop(pt);
    drop(ebpf);
}

#[tokio::test]
async fn basic_passthrough_kernel_splice() {
    let mut s = setup(Mode::Kernel).await;
    echo_once(&mut s, PASS, b"hello through the kernel").await;
    echo_once(&mut s, "a.wild.test", &vec![7u8; 300_000]).await;
    assert_clean(&s).await;
}

#[tokio::test]
async fn basic_passthrough_userspace_copy() {
    let mut s = setup(Mode::Userspace).await;
    echo_once(&mut s, PASS, b"hello through userspace").await;
    echo_once(&mut s, "a.wild.test", &vec![7u8; 300_000]).await;
    assert_clean(&s).await;
}

#[tokio::test]
async fn unavailable_splice_falls_back_to_the_userspace_copy() {
    // The kernel side could not be had (here: its program missing); the splice was not
    // disabled by the operator, so the engine falls back by itself.
    let failed = Err(ingress::passthrough::splice::SpliceError::MissingProgram);
    let pt = Passthrough::start_with_kernel(config(Mode::Kernel), Some(failed)).await;
    let mut s = setup_on(
        pt,
        Mode::Userspace,
        BackendBehavior::default(),
        "127.0.0.1:0",
    )
    .await;
    echo_once(&mut s, PASS, b"through the fallback").await;
    assert_clean(&s).await;
}

#[tokio::test]
async fn non_passthrough_sni_is_terminated_with_the_hello_replayed() {
    let s = setup(Mode::Kernel).await;
    let tcp = connect(s.front.addr).await;
    // The client verifies a certificate for TERM: only the terminator holds one.
    let mut tls = tls_over(tcp, TERM, s.pki.client_config())
        .await
        .expect("handshake with the terminator");
    tls.write_all(b"ping").await.expect("write");
    let mut got = [0u8; 9];
    timeout(STEP, tls.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&got, b"TERM:ping");
    // A passthrough name is not served by the terminator, and vice versa.
    let tcp = connect(s.front.addr).await;
    let cfg = s.pki.client_config();
    assert!(
        tls_over(tcp, "unknown.wild2.test", cfg).await.is_err(),
        "terminator has no cert for it"
    );
}

/// A ClientHello without SNI is terminated (default certificate, routing by Host) unless a
/// host-less passthrough route exists, which then takes it.
#[tokio::test]
async fn no_sni_is_terminated_unless_a_hostless_route_exists() {
    let mut s = setup(Mode::Kernel).await;
    // Verifies the name given but does not send it as SNI.
    let no_sni = s.pki.client_config_with(|c| c.enable_sni = false);
    let tcp = connect(s.front.addr).await;
    let mut tls = tls_over(tcp, TERM, no_sni.clone())
        .await
        .expect("terminated without SNI");
    assert_eq!(exchange(&mut tls, b"ping", 9).await, b"TERM:ping");
    drop(tls);

    let mut hostless = route(PASS, &[s.backend.addr], false);
    hostless.host = ingress::snapshot::HostMatch::Any;
    s.front.pt.apply(&snapshot(vec![
        route(PASS, &[s.backend.addr], false),
        hostless,
    ]));
    let tcp = connect(s.front.addr).await;
    let mut tls = tls_over(tcp, PASS, no_sni)
        .await
        .expect("passed through to the backend without SNI");
    assert_eq!(exchange(&mut tls, b"hello", 5).await, b"hello");
    drop(tls);
    let conn = s.backend.next().await;
    assert_eq!(conn.sni, None, "the backend saw no SNI");
    assert_clean(&s).await;
}

/// Plain HTTP sent to the HTTPS port gets nginx's 400 and a clean close (the request is
/// read, so the close is a FIN, not a reset that could eat the answer); other non-TLS bytes
/// are closed without an answer, as before.
#[tokio::test]
async fn plain_http_on_the_https_port_gets_400() {
    let s = setup(Mode::Userspace).await;
    let mut tcp = connect(s.front.addr).await;
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: pass.test\r\nUser-Agent: probe\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("a clean close, not a reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\nThe plain HTTP request was sent to HTTPS port\n"),
        "{answer}"
    );
    drop(tcp);

    let mut tcp = connect(s.front.addr).await;
    tcp.write_all(b"\x00\x01\x02 not tls, not http")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = timeout(STEP, tcp.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    assert!(answer.is_empty(), "{answer:?}");
    drop(tcp);

    let mut text = String::new();
    s.front.pt.metrics().render(&mut text);
    assert!(text.contains("outcome=\"plain_http\"} 1"), "{text}");
    assert!(text.contains("outcome=\"rejected_hello\"} 1"), "{text}");
    assert_clean(&s).await;
}

/// Writes `payload` and reads `n` bytes back, within `STEP`.
async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    s: &mut S,
    payload: &[u8],
    n: usize,
) -> Vec<u8> {
    s.write_all(payload).await.expect("write");
    let mut got = vec![0u8; n];
    timeout(STEP, s.read_exact(&mut got))
        .await
        .expect("answer in time")
        .expect("read");
    got
}

async fn split_hello(mode: Mode, fragment: Option<usize>) {
    let mut s = setup(mode).await;
    let cfg = s.pki.client_config_with(|c| c.max_fragment_size = fragment);
    let hello = capture_client_hello(cfg.clone(), PASS);
    assert!(
        hello.len() > 1200,
        "post-quantum key share expected, hello is {} bytes",
        hello.len()
    );
    if fragment.is_some() {
        let records = count_records(&hello);
        assert!(records > 10, "hello spans {records} records");
    }
    let tcp = connect(s.front.addr).await;
    // 7-byte segments 2 ms apart for the whole first flight.
    let chunked = Chunked::new(tcp, 7, Duration::from_millis(2), hello.len());
    let mut tls = tls_over(chunked, PASS, cfg)
        .await
        .expect("handshake through a fragmented hello");
    tls.write_all(b"split").await.expect("write");
    let mut back = [0u8; 5];
    timeout(STEP, tls.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&back, b"split");
    tls.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    timeout(STEP, tls.read_to_end(&mut rest))
        .await
        .expect("in time")
        .expect("EOF");
    assert_eq!(s.backend.next().await.end, BackendEnd::Eof);
    assert_clean(&s).await;
}

fn count_records(mut b: &[u8]) -> usize {
    let mut n = 0;
    while b.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
        b = &b[(5 + len).min(b.len())..];
        n += 1;
    }
    n
}

#[tokio::test]
async fn clienthello_split_across_tcp_segments_kernel() {
    split_hello(Mode::Kernel, None).await;
}

#[tokio::test]
async fn clienthello_split_across_tcp_segments_userspace() {
    split_hello(Mode::Userspace, None).await;
}

#[tokio::test]
async fn clienthello_split_across_tls_records_and_segments() {
    split_hello(Mode::Kernel, Some(64)).await;
}

async fn concurrent(mode: Mode) {
    let s = setup(mode).await;
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (addr, cfg) = (s.front.addr, s.pki.client_config());
        tasks.push(tokio::spawn(async move {
            let payload: Vec<u8> = (0..64 * 1024).map(|j| pattern(i + j)).collect();
            let mut tls = tls_over(connect(addr).await, PASS, cfg)
                .await
                .expect("handshake");
            let (mut r, mut w) = tokio::io::split(&mut tls);
            let write = async {
                w.write_all(&payload).await.expect("write");
            };
            let read = async {
                let mut back = vec![0u8; payload.len()];
                timeout(STEP, r.read_exact(&mut back))
                    .await
                    .expect("in time")
                    .expect("read");
                back
            };
            let ((), back) = tokio::join!(write, read);
            assert_eq!(back, payload, "connection {i}");
            tls.shutdown().await.expect("shutdown");
            let mut rest = Vec::new();
            timeout(STEP, tls.read_to_end(&mut rest))
                .await
                .expect("in time")
                .expect("EOF");
            assert_eq!(rest, b"BYE");
        }));
    }
    for t in tasks {
        timeout(STEP * 3, t)
            .await
            .expect("client in time")
            .expect("client ok");
    }
    assert_clean(&s).await;
}

#[tokio::test]
async fn concurrent_connections_kernel() {
    concurrent(Mode::Kernel).await;
}

#[tokio::test]
async fn concurrent_connections_userspace() {
    concurrent(Mode::Userspace).await;
}

/// The client shuts its write side (close_notify + FIN); the backend still sends 4 MiB and
/// then closes. Every byte must arrive before the FIN: this is what the drain check guards.
async fn half_close(mode: Mode) {
    let tail = 4 << 20;
    let mut s = setup_with(
        mode,
        config(mode),
        BackendBehavior {
            tail,
            ..BackendBehavior::default()
        },
        "127.0.0.1:0",
    )
    .await;
    for _ in 0..5 {
        let mut tls = tls_over(connect(s.front.addr).await, PASS, s.pki.client_config())
            .await
            .expect("handshake");
        tls.write_all(b"half").await.expect("write");
        let mut back = [0u8; 4];
        timeout(STEP, tls.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("read");
        tls.shutdown().await.expect("shutdown write");
        let mut rest = Vec::new();
        timeout(STEP, tls.read_to_end(&mut rest))
            .await
            .expect("tail in time")
            .expect("tail");
        assert_eq!(rest.len(), 3 + tail, "tail length");
        assert_eq!(&rest[..3], b"BYE");
        assert!(
            rest[3..].iter().enumerate().all(|(i, &b)| b == pattern(i)),
            "tail intact"
        );
        assert_eq!(s.backend.next().await.end, BackendEnd::Eof);
    }
    assert_clean(&s).await;
}

#[tokio::test]
async fn half_close_kernel() {
    half_close(Mode::Kernel).await;
}

#[tokio::test]
async fn half_close_userspace() {
    half_close(Mode::Userspace).await;
}

/// Whether the front's `/metrics` shows `line` within a step.
async fn metrics_show(s: &Setup, line: &str) -> bool {
    eventually(STEP, || {
        let mut text = String::new();
        s.front.pt.metrics().render(&mut text);
        text.lines().any(|l| l == line)
    })
    .await
}

async fn client_reset(mode: Mode) {
    let mut s = setup(mode).await;
    let tcp = connect(s.front.addr).await;
    let mut tls = tls_over(tcp, PASS, s.pki.client_config())
        .await
        .expect("handshake");
    tls.write_all(b"x").await.expect("write");
    let mut b = [0u8; 1];
    timeout(STEP, tls.read_exact(&mut b))
        .await
        .expect("in time")
        .expect("read");
    let (tcp, _) = tls.into_inner();
    socket2::SockRef::from(&tcp)
        .set_linger(Some(Duration::ZERO))
        .expect("linger 0");
    drop(tcp);
    let conn = s.backend.next().await;
    assert_eq!(
        conn.end,
        BackendEnd::Error(std::io::ErrorKind::ConnectionReset),
        "the backend must see the reset"
    );
    assert_clean(&s).await;
    let line = "ingress_passthrough_endings_total{ending=\"client_reset\"} 1";
    assert!(metrics_show(&s, line).await, "{mode:?}: {line}");
    // The bytes before the reset count, the ClientHello and the one written after it.
    let mut text = String::new();
    s.front.pt.metrics().render(&mut text);
    let client_bytes = tests::metric(&text, "ingress_passthrough_bytes_total{from=\"client\"}");
    assert!(
        client_bytes > 1,
        "{mode:?}: client bytes before the reset: {client_bytes}"
    );
}

#[tokio::test]
async fn client_reset_propagates_kernel() {
    client_reset(Mode::Kernel).await;
}

#[tokio::test]
async fn client_reset_propagates_userspace() {
    client_reset(Mode::Userspace).await;
}

async fn backend_reset(mode: Mode) {
    let mut s = setup(mode).await;
    let mut tls = tls_over(connect(s.front.addr).await, PASS, s.pki.client_config())
        .await
        .expect("handshake");
    tls.write_all(b"RST!").await.expect("write");
    let mut buf = [0u8; 16];
    let res = timeout(STEP, tls.read(&mut buf))
        .await
        .expect("reset seen in time");
    let err = res.expect_err("the client must see an error, not data or a clean EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(s.backend.next().await.end, BackendEnd::ResetByBackend);
    assert_clean(&s).await;
    let line = "ingress_passthrough_endings_total{ending=\"backend_reset\"} 1";
    assert!(metrics_show(&s, line).await, "{mode:?}: {line}");
}

#[tokio::test]
async fn backend_reset_propagates_kernel() {
    backend_reset(Mode::Kernel).await;
}

#[tokio::test]
async fn backend_reset_propagates_userspace() {
    backend_reset(Mode::Userspace).await;
}

/// `connect_to`: the address the client dials (default: the front's own address).
async fn proxy_v2(bind: &str, connect_to: Option<std::net::IpAddr>) {
    let behavior = BackendBehavior {
        expect_proxy: true,
        ..BackendBehavior::default()
    };
    let mut s = setup_with(Mode::Kernel, config(Mode::Kernel), behavior, bind).await;
    let target =
        std::net::SocketAddr::new(connect_to.unwrap_or(s.front.addr.ip()), s.front.addr.port());
    let tcp = connect(target).await;
    let client_addr = tcp.local_addr().expect("client addr");
    let mut tls = tls_over(tcp, PASS, s.pki.client_config())
        .await
        .expect("handshake after the PROXY header");
    tls.write_all(b"pp").await.expect("write");
    let mut b = [0u8; 2];
    timeout(STEP, tls.read_exact(&mut b))
        .await
        .expect("in time")
        .expect("read");
    tls.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    timeout(STEP, tls.read_to_end(&mut rest))
        .await
        .expect("in time")
        .expect("EOF");
    assert_eq!(rest, b"BYE");
    let conn = s.backend.next().await;
    assert_eq!(
        conn.proxy,
        Some((client_addr, target)),
        "PROXY v2 addresses"
    );
    assert_eq!(conn.end, BackendEnd::Eof);
    assert_clean(&s).await;
}

#[tokio::test]
async fn proxy_protocol_v2_ipv4() {
    proxy_v2("127.0.0.1:0", None).await;
}

#[tokio::test]
async fn proxy_protocol_v2_ipv6() {
    proxy_v2("[::1]:0", None).await;
}

/// A dual-stack `[::]` listener (as ingressd binds) sees IPv4 clients as mapped addresses:
/// the header carries plain IPv4, and the FIN drain (sock_diag lookups) works on them.
#[tokio::test]
async fn proxy_protocol_v2_ipv4_client_on_dual_stack_listener() {
    proxy_v2("[::]:0", Some(std::net::Ipv4Addr::LOCALHOST.into())).await;
}

fn short_peek(mode: Mode, max_handshakes: usize) -> PassthroughConfig {
    PassthroughConfig {
        peek: PeekLimits {
            timeout: Duration::from_millis(400),
            ..PeekLimits::default()
        },
        max_handshakes,
        ..config(mode)
    }
}

/// Reads until EOF or error; true if the peer closed within `limit`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let start = tokio::time::Instant::now();
    loop {
        match timeout(limit.saturating_sub(start.elapsed()), tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn silent_and_partial_clients_time_out() {
    let mut s = setup_with(
        Mode::Kernel,
        short_peek(Mode::Kernel, 64),
        BackendBehavior::default(),
        "127.0.0.1:0",
    )
    .await;
    let mut silent = connect(s.front.addr).await;
    let mut partial = connect(s.front.addr).await;
    let hello = capture_client_hello(s.pki.client_config(), PASS);
    partial
        .write_all(&hello[..hello.len() / 2])
        .await
        .expect("write half");
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "silent client closed"
    );
    assert!(
        closed_within(&mut partial, Duration::from_secs(3)).await,
        "partial client closed"
    );
    drop((silent, partial));
    // Still serving.
    echo_once(&mut s, PASS, b"after timeouts").await;
    assert_clean(&s).await;
}

#[tokio::test]
async fn hostile_partial_hellos_are_bounded() {
    let mut s = setup_with(
        Mode::Kernel,
        short_peek(Mode::Kernel, 16),
        BackendBehavior::default(),
        "127.0.0.1:0",
    )
    .await;
    let hello = capture_client_hello(s.pki.client_config(), PASS);
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut c = connect(s.front.addr).await;
        c.write_all(&hello[..10]).await.expect("write");
        conns.push(c);
    }
    // 16 are being read; the rest were closed at once; all are closed after the timeout.
    let mut closed = 0;
    for c in &mut conns {
        if closed_within(c, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 200);
    drop(conns);
    echo_once(&mut s, PASS, b"still alive").await;
    // No descriptor of this process still points at a socket of the front or the backend.
    assert_clean(&s).await;
}

/// Idle connects take no ClientHello slot (a slot is taken once bytes arrive), and one
/// address cannot hold more than its share: neither locks other clients out.
#[tokio::test]
async fn idle_connects_and_one_busy_address_cannot_lock_others_out() {
    let cfg = PassthroughConfig {
        peek: PeekLimits {
            timeout: Duration::from_secs(3),
            ..PeekLimits::default()
        },
        max_handshakes: 4,
        max_handshakes_per_source: 2,
        ..config(Mode::Userspace)
    };
    let mut s = setup_with(
        Mode::Userspace,
        cfg,
        BackendBehavior::default(),
        "127.0.0.1:0",
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect(s.front.addr).await);
    }
    echo_once(&mut s, PASS, b"past idle connects").await;

    let hello = capture_client_hello(s.pki.client_config(), PASS);
    let mut partial = Vec::new();
    for _ in 0..2 {
        let mut c = connect(s.front.addr).await;
        c.write_all(&hello[..10]).await.expect("write");
        partial.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect(s.front.addr).await;
    third.write_all(&hello[..10]).await.expect("write");
    assert!(
        closed_within(&mut third, Duration::from_secs(1)).await,
        "a third pending hello from one address was kept"
    );
    // Another address still gets through: the busy one holds 2 of the 4 slots.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let tcp = timeout(STEP, sock.connect(s.front.addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut tls = tls_over(tcp, PASS, s.pki.client_config())
        .await
        .expect("handshake from another address");
    assert_eq!(exchange(&mut tls, b"other", 5).await, b"other");
    drop((tls, third, partial));
    // Plain HTTP to the HTTPS port holds its source's slots while its 400 lingers (up to 2 s,
    // here as long as the client keeps the connection): a third from the same address is
    // closed unanswered rather than taking one more slot of all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut plain = Vec::new();
    for _ in 0..2 {
        let mut c = connect(s.front.addr).await;
        c.write_all(b"G").await.expect("write");
        plain.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect(s.front.addr).await;
    third.write_all(b"G").await.expect("write");
    let mut got = Vec::new();
    let _ = timeout(Duration::from_secs(1), third.read_to_end(&mut got)).await;
    assert!(
        got.is_empty(),
        "a third plain-HTTP connection from one address was answered: {}",
        String::from_utf8_lossy(&got)
    );
    let mut answer = [0u8; 12];
    plain[0].read_exact(&mut answer).await.expect("400 answer");
    assert_eq!(&answer, b"HTTP/1.1 400");
    drop((third, plain, idle));
    assert_clean(&s).await;
}

/// A burst over the ClientHello cap waits for a slot instead of being closed: with every
/// slot held by a partial hello, a full one is served as soon as a holder leaves.
#[tokio::test]
async fn a_hello_over_the_cap_waits_for_a_slot() {
    let cfg = PassthroughConfig {
        peek: PeekLimits {
            timeout: Duration::from_secs(4),
            ..PeekLimits::default()
        },
        max_handshakes: 2,
        ..config(Mode::Kernel)
    };
    let mut s = setup_with(Mode::Kernel, cfg, BackendBehavior::default(), "127.0.0.1:0").await;
    let hello = capture_client_hello(s.pki.client_config(), PASS);
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = connect(s.front.addr).await;
        c.write_all(&hello[..10]).await.expect("write");
        holders.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tcp = connect(s.front.addr).await;
    let waiting = tokio::spawn(tls_over(tcp, PASS, s.pki.client_config()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the third hello was answered past a cap of 2"
    );
    drop(holders.pop());
    let mut tls = timeout(STEP, waiting)
        .await
        .expect("the waiting hello is served once a slot frees")
        .expect("task")
        .expect("handshake after waiting for a slot");
    assert_eq!(exchange(&mut tls, b"waited", 6).await, b"waited");
    drop((tls, holders));
    assert_eq!(s.backend.next().await.sni.as_deref(), Some(PASS));
    echo_once(&mut s, PASS, b"after the burst").await;
    assert_clean(&s).await;
}

/// Keep-alive timers (`tr` 2 in /proc/net/tcp) of the established IPv4 sockets whose local
/// port is `local` or whose remote port is `remote`.
fn keepalive_timers(local: u16, remote: u16) -> Vec<bool> {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ours = f.get(3) == Some(&"01")
                && (port(f[1]) == Some(local) || port(f[2]) == Some(remote));
            ours.then(|| f[5].starts_with("02:"))
        })
        .collect()
}

/// Both sockets of a passthrough pair carry TCP keep-alive: userspace never reads a spliced
/// pair, so only keep-alive notices a peer that vanished without a FIN or RST.
async fn keepalive_on_both_sides(mode: Mode) {
    let s = setup(mode).await;
    let tcp = connect(s.front.addr).await;
    let mut tls = tls_over(tcp, PASS, s.pki.client_config())
        .await
        .expect("handshake through the front");
    assert_eq!(exchange(&mut tls, b"ka", 2).await, b"ka");
    // A socket with bytes in flight shows its retransmit timer instead: wait until idle.
    let (front, backend) = (s.front.addr.port(), s.backend.addr.port());
    let armed = eventually(STEP, || keepalive_timers(front, backend) == [true, true]).await;
    assert!(
        armed,
        "{mode:?}: front-side and backend-side sockets: {:?}",
        keepalive_timers(front, backend)
    );
    drop(tls);
    assert_clean(&s).await;
}

#[tokio::test]
async fn keepalive_on_both_sides_kernel() {
    keepalive_on_both_sides(Mode::Kernel).await;
}

#[tokio::test]
async fn keepalive_on_both_sides_userspace() {
    keepalive_on_both_sides(Mode::Userspace).await;
}

#[tokio::test]
async fn oversized_hello_is_rejected() {
    let s = setup(Mode::Kernel).await;
    // Valid record headers, a ClientHello announcing 20000 bytes: refused before buffering.
    let mut c = connect(s.front.addr).await;
    c.write_all(&[22, 3, 1, 0, 4, 1, 0, 0x4e, 0x20])
        .await
        .expect("write");
    assert!(closed_within(&mut c, Duration::from_secs(2)).await);
    // 17 KiB of small valid-looking records that never complete the message.
    let mut c = connect(s.front.addr).await;
    let mut junk = vec![22, 3, 1, 0, 4, 1, 0, 0x3f, 0xf0];
    while junk.len() < 17 * 1024 {
        junk.extend([22, 3, 1, 0, 1, 0]);
    }
    let _ = c.write_all(&junk).await;
    assert!(closed_within(&mut c, Duration::from_secs(2)).await);
    assert_clean(&s).await;
}

/// The committed corpus: crafted malformed hellos and real rustls captures. Each file name
/// starts with the expected verdict. Every file is parsed, and sent to a live front, which
/// must close the connection (or route it) and keep serving.
#[tokio::test]
async fn clienthello_corpus_replay() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/clienthello");
    let mut s = setup_with(
        Mode::Kernel,
        short_peek(Mode::Kernel, 64),
        BackendBehavior::default(),
        "127.0.0.1:0",
    )
    .await;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "bin"));
    files.sort();
    assert!(files.len() >= 15, "corpus has {} files", files.len());
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        let bytes = std::fs::read(&path).expect("read corpus file");
        let verdict = parse_client_hello(&bytes);
        let mut parts = name.trim_end_matches(".bin").split("__");
        match (parts.next(), verdict.clone()) {
            (Some("found"), HelloParse::Found(h)) => {
                assert_eq!(Some(h.as_str()), parts.next(), "{name}")
            }
            (Some("nosni"), HelloParse::NoSni)
            | (Some("invalid"), HelloParse::Invalid(_))
            | (Some("incomplete"), HelloParse::Incomplete) => {}
            (want, got) => panic!("{name}: expected {want:?}, parser says {got:?}"),
        }
        let mut c = connect(s.front.addr).await;
        c.write_all(&bytes).await.expect("write corpus bytes");
        if matches!(verdict, HelloParse::Found(_) | HelloParse::NoSni) {
            // Routed to the backend or the terminator (no SNI: terminated with the default
            // certificate); the handshake goes no further.
            let _ = c.shutdown().await;
            assert!(
                closed_within(&mut c, Duration::from_secs(5)).await,
                "{name}: closed after EOF"
            );
        } else {
            assert!(
                closed_within(&mut c, Duration::from_secs(3)).await,
                "{name}: connection closed"
            );
        }
    }
    echo_once(&mut s, PASS, b"after the corpus").await;
    assert_clean(&s).await;
}

#[tokio::test]
async fn captured_rustls_hellos_parse_byte_by_byte() {
    let pki = Pki::new();
    let cases = [
        (pki.client_config(), "pass.test"),
        (
            pki.client_config_with(|c| c.max_fragment_size = Some(100)),
            "Mixed.Case.Test",
        ),
        (
            pki.client_config_with(|c| c.enable_sni = false),
            "nosni.test",
        ),
    ];
    for (cfg, sni) in cases {
        let no_sni = !cfg.enable_sni;
        let hello = capture_client_hello(cfg, sni);
        for end in 0..hello.len() {
            assert_eq!(
                parse_client_hello(&hello[..end]),
                HelloParse::Incomplete,
                "{sni} prefix {end}"
            );
        }
        let want = if no_sni {
            HelloParse::NoSni
        } else {
            HelloParse::Found(sni.to_ascii_lowercase())
        };
        assert_eq!(parse_client_hello(&hello), want);
    }
}

/// More than 2,000 spliced connections (a quarter reset by the client), run in a child
/// process of this test binary so that its file descriptor count is not disturbed by the
/// other tests running in parallel here.
#[tokio::test]
async fn no_leaks_after_thousands_of_connections() {
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::process::Command::new(exe)
        .args([
            "passthrough::leak_check_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PASSTHROUGH_LEAK_CHILD", "1")
        .kill_on_drop(true)
        .output();
    let out = timeout(Duration::from_secs(300), out)
        .await
        .expect("child in time")
        .expect("run child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "leak check failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

/// The body of `no_leaks_after_thousands_of_connections`, alone in its process.
#[tokio::test]
#[ignore = "run in a child process by no_leaks_after_thousands_of_connections"]
async fn leak_check_child() {
    assert_eq!(
        std::env::var("PASSTHROUGH_LEAK_CHILD").as_deref(),
        Ok("1"),
        "run through the parent test"
    );
    let mut s = setup(Mode::Kernel).await;
    // Warm up (lazy statics, runtime threads), then take the baseline.
    echo_once(&mut s, PASS, b"warm up").await;
    assert_clean(&s).await;
    let fds_before = open_fds();
    let targets_before = open_fd_targets();
    let total = 2048usize;
    let batch = 32usize;
    let mut done = 0;
    while done < total {
        let mut tasks = Vec::new();
        for i in 0..batch {
            let (addr, cfg) = (s.front.addr, s.pki.client_config());
            tasks.push(tokio::spawn(async move {
                let mut tls = tls_over(connect(addr).await, PASS, cfg)
                    .await
                    .expect("handshake");
                let msg = format!("conn {}", done + i);
                tls.write_all(msg.as_bytes()).await.expect("write");
                let mut back = vec![0u8; msg.len()];
                timeout(STEP, tls.read_exact(&mut back))
                    .await
                    .expect("in time")
                    .expect("read");
                assert_eq!(back, msg.as_bytes());
                if i % 4 == 0 {
                    // A quarter end abruptly.
                    let (tcp, _) = tls.into_inner();
                    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                } else {
                    tls.shutdown().await.expect("shutdown");
                    let mut rest = Vec::new();
                    timeout(STEP, tls.read_to_end(&mut rest))
                        .await
                        .expect("in time")
                        .expect("EOF");
                }
            }));
        }
        for t in tasks {
            timeout(STEP * 3, t)
                .await
                .expect("in time")
                .expect("client ok");
        }
        done += batch;
    }
    // Drain the backend's reports so its channel holds nothing.
    while s.backend.conns.try_recv().is_ok() {}
    assert_clean(&s).await;
    // A descriptor still being closed by a task that has not run yet goes away; a leaked
    // one stays.
    let settled = eventually(STEP, || open_fds() <= fds_before).await;
    let fds_after = open_fds();
    println!(
        "fds before {fds_before}, after {fds_after}, map entries {:?}",
        s.front.pt.map_entries()
    );
    let extra: Vec<String> = open_fd_targets()
        .into_iter()
        .filter(|t| !targets_before.contains(t))
        .collect();
    assert!(
        settled,
        "fds grew from {fds_before} to {fds_after} over {total} connections; new: {extra:?}"
    );
}

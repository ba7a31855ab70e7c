//! The two TLS endpoints: a backend that, after the handshake, streams N bytes or answers
//! small requests, and clients that connect from 127.0.0.2 (so the backend can tell a direct
//! connection from a proxied one), verify the backend's certificate, and read.
//!
//! Protocol after the TLS handshake: the client sends 9 bytes, an op and a big-endian u64.
//! The backend answers one byte, `d` if the TCP peer is the client itself (127.0.0.2) and `p`
//! if a proxy connected, then:
//! - `D n`: n bytes, then close_notify and FIN;
//! - `R n`: for every byte received, n bytes back, until the client's EOF.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use rustls::{pki_types::ServerName, ClientConfig, ServerConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
    time::timeout,
};

use super::{
    cpu::ThreadClock,
    meter::{Meter, Usage},
};

/// Source address of every client connection.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Bound on setup steps (connect, handshake, command).
const STEP: Duration = Duration::from_secs(10);
/// Largest response of the request/response op.
pub const MAX_RESPONSE: u64 = 64 * 1024;
/// Write size of the streaming backend.
const CHUNK: usize = 256 * 1024;

/// The backend: one thread, one single-threaded runtime.
pub struct Backend {
    pub addr: SocketAddr,
    /// Its thread's CPU clock.
    pub clock: ThreadClock,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Backend {
    /// Listens on 127.0.0.1:0 in a thread pinned to `cpu`.
    pub fn start(cfg: Arc<ServerConfig>, cpu: usize) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let (clock_tx, clock_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pt-backend".into())
            .spawn(move || {
                let _ = crate::bench::pin_to_cpu(cpu);
                let _ = clock_tx.send(ThreadClock::current());
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => return,
                            accepted = listener.accept() => {
                                let Ok((tcp, peer)) = accepted else { continue };
                                let acceptor = acceptor.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = serve(tcp, peer, acceptor).await {
                                        eprintln!("backend: connection from {peer}: {e:#}");
                                    }
                                });
                            }
                        }
                    }
                });
            })?;
        let clock = clock_rx
            .recv_timeout(STEP)
            .ok()
            .flatten()
            .context("backend thread clock")?;
        Ok(Backend {
            addr,
            clock,
            stop,
            thread: Some(thread),
        })
    }
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = timeout(STEP, acceptor.accept(tcp))
        .await
        .context("handshake timed out")??;
    let mut cmd = [0u8; 9];
    timeout(STEP, tls.read_exact(&mut cmd))
        .await
        .context("command timed out")??;
    let arg = u64::from_be_bytes(cmd[1..9].try_into()?);
    let marker = if peer.ip() == IpAddr::V4(CLIENT_IP) {
        b'd'
    } else {
        b'p'
    };
    tls.write_all(&[marker]).await?;
    match cmd[0] {
        b'D' => {
            let chunk = vec![0x5au8; CHUNK];
            let mut left = arg;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                tls.write_all(&chunk[..n]).await?;
                left -= n as u64;
            }
        }
        b'R' => {
            ensure!(arg <= MAX_RESPONSE, "response size {arg} too big");
            let response = vec![0x5au8; arg as usize];
            tls.flush().await?;
            let mut buf = [0u8; 64];
            loop {
                let n = tls.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    tls.write_all(&response).await?;
                }
                tls.flush().await?;
            }
        }
        op => bail!("unknown op {op}"),
    }
    tls.shutdown().await?;
    Ok(())
}

/// What a client run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Plaintext payload bytes received (downloads) or round trips completed (RR).
    pub amount: u64,
    pub usage: Usage,
    /// The TLS cipher suite negotiated (the same on every path).
    pub suite: String,
}

/// Which peer answered, by the backend's marker.
fn check_marker(marker: u8, expect_direct: bool) -> Result<()> {
    match (marker, expect_direct) {
        (b'd', true) | (b'p', false) => Ok(()),
        (b'd', false) => bail!("the backend saw the client itself: the proxy was bypassed"),
        (b'p', true) => bail!("the backend saw a proxy on the direct path"),
        (m, _) => bail!("bad marker byte {m}"),
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(target: SocketAddr, sni: &str, cfg: Arc<ClientConfig>) -> Result<Tls> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(CLIENT_IP), 0))?;
    let tcp = timeout(STEP, sock.connect(target))
        .await
        .context("connect timed out")??;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_string())?;
    let tls = timeout(
        STEP,
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .context("TLS handshake timed out")?
    .context("TLS handshake (the backend's certificate is verified)")?;
    Ok(tls)
}

fn suite(tls: &Tls) -> String {
    tls.get_ref()
        .1
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default()
}

/// Runs `job` on a new thread pinned to `cpu` with a single-threaded runtime.
fn on_client_thread<T: Send + 'static>(
    cpu: usize,
    job: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>>>>
        + Send
        + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name("pt-client".into())
        .spawn(move || {
            crate::bench::pin_to_cpu(cpu)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(job())
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// `conns` connections through `target` each download `bytes_each`; the window runs from the
/// first command (all handshakes done) to the last byte. Every byte count is checked.
#[allow(clippy::too_many_arguments)]
pub fn download(
    target: SocketAddr,
    sni: &'static str,
    cfg: Arc<ClientConfig>,
    conns: usize,
    bytes_each: u64,
    expect_direct: bool,
    meter: Meter,
    cpu: usize,
    limit: Duration,
) -> Result<Measured> {
    on_client_thread(cpu, move || {
        Box::pin(async move {
            let mut streams = Vec::with_capacity(conns);
            for _ in 0..conns {
                streams.push(connect(target, sni, cfg.clone()).await?);
            }
            let suite = suite(&streams[0]);
            let start = meter.snap()?;
            let tasks: Vec<_> = streams
                .into_iter()
                .map(|mut tls| {
                    tokio::spawn(async move {
                        let mut cmd = [0u8; 9];
                        cmd[0] = b'D';
                        cmd[1..].copy_from_slice(&bytes_each.to_be_bytes());
                        tls.write_all(&cmd).await?;
                        tls.flush().await?;
                        let mut marker = [0u8; 1];
                        tls.read_exact(&mut marker).await?;
                        check_marker(marker[0], expect_direct)?;
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut got = 0u64;
                        loop {
                            let n = tls.read(&mut buf).await.context(
                                "reading the body (EOF without close_notify is an error)",
                            )?;
                            if n == 0 {
                                break;
                            }
                            got += n as u64;
                        }
                        ensure!(got == bytes_each, "got {got} of {bytes_each} bytes");
                        Ok::<_, anyhow::Error>(got)
                    })
                })
                .collect();
            let mut amount = 0;
            let all = async {
                for t in tasks {
                    amount += t.await??;
                }
                Ok::<_, anyhow::Error>(())
            };
            timeout(limit, all)
                .await
                .with_context(|| format!("downloads not done within {limit:?}"))??;
            let end = meter.snap()?;
            Ok(Measured {
                amount,
                usage: start.until(&end),
                suite,
            })
        })
    })
}

/// One connection through `target`: 1-byte requests, `response`-byte responses, one at a
/// time, for `duration` (the handshake is outside the window).
#[allow(clippy::too_many_arguments)]
pub fn request_response(
    target: SocketAddr,
    sni: &'static str,
    cfg: Arc<ClientConfig>,
    response: u64,
    duration: Duration,
    expect_direct: bool,
    meter: Meter,
    cpu: usize,
) -> Result<Measured> {
    ensure!(
        (1..=MAX_RESPONSE).contains(&response),
        "response size must be 1..={MAX_RESPONSE}"
    );
    on_client_thread(cpu, move || {
        Box::pin(async move {
            let mut tls = connect(target, sni, cfg).await?;
            let suite = suite(&tls);
            let mut cmd = [0u8; 9];
            cmd[0] = b'R';
            cmd[1..].copy_from_slice(&response.to_be_bytes());
            tls.write_all(&cmd).await?;
            tls.flush().await?;
            let mut marker = [0u8; 1];
            timeout(STEP, tls.read_exact(&mut marker))
                .await
                .context("marker timed out")??;
            check_marker(marker[0], expect_direct)?;
            let mut buf = vec![0u8; response as usize];
            let start = meter.snap()?;
            let t0 = Instant::now();
            let mut round_trips = 0u64;
            let run = async {
                while t0.elapsed() < duration {
                    // Check the clock every 64 round trips only.
                    for _ in 0..64 {
                        tls.write_all(b"x").await?;
                        tls.flush().await?;
                        tls.read_exact(&mut buf).await?;
                        round_trips += 1;
                    }
                }
                Ok::<_, anyhow::Error>(())
            };
            timeout(duration + STEP, run)
                .await
                .context("request/response stalled")??;
            let end = meter.snap()?;
            tls.shutdown().await?;
            let mut rest = Vec::new();
            match timeout(STEP, tls.read_to_end(&mut rest))
                .await
                .context("closing timed out")?
            {
                // A proxy that closes both sides on the client's FIN drops close_notify.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e.into()),
            }
            ensure!(rest.is_empty(), "unexpected bytes after the last response");
            Ok(Measured {
                amount: round_trips,
                usage: start.until(&end),
                suite,
            })
        })
    })
}

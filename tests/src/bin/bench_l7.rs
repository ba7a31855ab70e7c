//! `cargo xtask bench l7`: the L7 proxy (ingressd) against nginx and HAProxy, configured
//! equivalently (one upstream, keep-alive to it, access log off, the same forwarding headers,
//! TLS 1.3 with the same ECDSA P-256 certificate), each pinned to core 1 with one worker;
//! load generator and upstream on core 0. Four workloads: keep-alive HTTP/1.1 GETs (wrk),
//! keep-alive HTTPS GETs (wrk), new full TLS handshakes with one GET each (own generator,
//! resumption disabled), and HTTP/2 GETs over TLS, several streams per connection (h2load). Measured in interleaved rounds; medians printed with the proxies' CPU
//! time per request (utime+stime of the whole process tree from /proc) and ratios.
//!
//! Usage: bench_l7 [--rounds N] [--duration SECS] [--connections N] [--pause SECS]
//!   [--workloads http,https,handshake,h2] [--proxies ingressd,nginx,haproxy]
//!   [--ingressd PATH] [--baseline-ingressd PATH] [--ingressd-threads N] [--markdown FILE]
//!   [--perf-dir DIR] [--hold SECS]
//!
//! `--baseline-ingressd` adds a second ingressd binary (e.g. built from an older commit) as
//! one more proxy in the same interleaved rounds: before/after numbers from one run.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use tests::bench::l7::{
    cpu,
    h2load::{self, H2Report},
    handshake::{self, ClientTls, LoadReport},
    peers::{self, free_ports, output_bounded, Certs, Proc, HOST},
    stats::{median, paired_ratios},
    upstream::{self, BODY},
    wrk::{self, WrkReport},
};

const LOAD_CPU: usize = 0;
const PROXY_CPU: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Http,
    Https,
    Handshake,
    /// HTTP/2 over TLS (ALPN h2), `H2_STREAMS` concurrent streams per connection.
    H2,
}

/// Concurrent streams per HTTP/2 connection in the h2 workload: a browser-like multiplexed
/// load, where a proxy can answer several streams per read and write.
const H2_STREAMS: usize = 10;

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Http,
        Workload::Https,
        Workload::Handshake,
        Workload::H2,
    ];

    fn key(self) -> &'static str {
        match self {
            Workload::Http => "http",
            Workload::Https => "https",
            Workload::Handshake => "handshake",
            Workload::H2 => "h2",
        }
    }

    fn title(self, o: &Opts) -> String {
        let (c, d) = (o.connections, o.duration.as_secs_f64());
        match self {
            Workload::Http => format!(
                "HTTP/1.1 keep-alive GET, 13-byte body (wrk -t1 -c{c} -d{d}s)"
            ),
            Workload::Https => format!(
                "HTTPS keep-alive GET, TLS 1.3, ECDSA P-256 (wrk -t1 -c{c} -d{d}s)"
            ),
            Workload::Handshake => format!(
                "new full TLS 1.3 handshake + 1 GET per connection, ECDSA P-256, X25519, no resumption ({c} connections, {d}s)"
            ),
            Workload::H2 => format!(
                "HTTP/2 GETs over TLS 1.3, {c} connections x {H2_STREAMS} streams (h2load -t1 -c{c} -m{H2_STREAMS} -D{d})"
            ),
        }
    }

    /// The issue's CPU target against nginx, where it sets one.
    fn cpu_target(self) -> Option<f64> {
        match self {
            Workload::Http | Workload::Https => Some(0.6),
            Workload::Handshake => Some(0.5),
            Workload::H2 => None,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Handshake => "hs/s",
            _ => "req/s",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Ingressd,
    /// Another ingressd binary (`--baseline-ingressd`), for before/after comparisons.
    IngressdBaseline,
    Nginx,
    Haproxy,
}

impl Peer {
    fn key(self) -> &'static str {
        match self {
            Peer::Ingressd => "ingressd",
            Peer::IngressdBaseline => "ingressd-baseline",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
        }
    }
}

struct Opts {
    rounds: usize,
    duration: Duration,
    connections: usize,
    pause: Duration,
    workloads: Vec<Workload>,
    peers: Vec<Peer>,
    ingressd: Option<PathBuf>,
    baseline: Option<PathBuf>,
    ingressd_threads: usize,
    markdown: Option<PathBuf>,
    perf_dir: Option<PathBuf>,
    /// Keep everything running this long after the checks, for manual probing, then exit.
    hold: Option<Duration>,
}

const USAGE: &str =
    "usage: bench_l7 [--rounds N] [--duration SECS] [--connections N] [--pause SECS]
  [--workloads http,https,handshake] [--proxies ingressd,nginx,haproxy]
  [--ingressd PATH] [--baseline-ingressd PATH] [--ingressd-threads N] [--markdown FILE]
  [--perf-dir DIR] [--hold SECS]";

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut o = Opts {
            rounds: 3,
            duration: Duration::from_secs(5),
            connections: 64,
            pause: Duration::from_secs(1),
            workloads: Workload::ALL.to_vec(),
            peers: vec![Peer::Ingressd, Peer::Nginx, Peer::Haproxy],
            ingressd: None,
            baseline: None,
            ingressd_threads: 1,
            markdown: None,
            perf_dir: None,
            hold: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let secs = |v: &str| -> Result<Duration> {
                let s: f64 = v.parse().with_context(|| format!("bad {flag} {v:?}"))?;
                if !(0.0..=3600.0).contains(&s) {
                    bail!("{flag} out of range: {v}");
                }
                Ok(Duration::from_secs_f64(s))
            };
            match flag.as_str() {
                "--rounds" => o.rounds = value.parse().context("bad --rounds")?,
                "--duration" => o.duration = secs(value)?,
                "--pause" => o.pause = secs(value)?,
                "--connections" => o.connections = value.parse().context("bad --connections")?,
                "--ingressd-threads" => {
                    o.ingressd_threads = value.parse().context("bad --ingressd-threads")?
                }
                "--ingressd" => o.ingressd = Some(value.into()),
                "--baseline-ingressd" => o.baseline = Some(value.into()),
                "--markdown" => o.markdown = Some(value.into()),
                "--perf-dir" => o.perf_dir = Some(value.into()),
                "--hold" => o.hold = Some(secs(value)?),
                "--workloads" => {
                    o.workloads = value
                        .split(',')
                        .map(|w| {
                            Workload::ALL
                                .into_iter()
                                .find(|x| x.key() == w)
                                .with_context(|| format!("unknown workload {w:?}"))
                        })
                        .collect::<Result<_>>()?
                }
                "--proxies" => {
                    o.peers = value
                        .split(',')
                        .map(|p| {
                            [Peer::Ingressd, Peer::Nginx, Peer::Haproxy]
                                .into_iter()
                                .find(|x| x.key() == p)
                                .with_context(|| format!("unknown proxy {p:?}"))
                        })
                        .collect::<Result<_>>()?
                }
                _ => bail!("unknown flag {flag}\n{USAGE}"),
            }
        }
        if o.rounds == 0 || o.connections == 0 || o.connections > 10_000 {
            bail!("--rounds must be >= 1 and --connections in 1..=10000");
        }
        if o.duration < Duration::from_secs(1) || o.duration.subsec_nanos() != 0 {
            bail!("--duration must be a whole number of seconds, at least 1 (wrk's -d)");
        }
        if o.baseline.is_some() && !o.peers.contains(&Peer::IngressdBaseline) {
            o.peers.insert(1, Peer::IngressdBaseline);
        }
        if o.workloads.is_empty() || o.peers.is_empty() {
            bail!("nothing to measure");
        }
        Ok(o)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs nginx, haproxy and wrk if missing, without letting the packages start their
/// system services (a temporary policy-rc.d answering "forbidden").
fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = ["nginx", "haproxy", "wrk"]
        .into_iter()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing {}", missing.join(" "));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let install = || -> Result<bool> {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        let (s, _, err) = output_bounded(c, Duration::from_secs(600))?;
        if !s.success() {
            eprintln!("apt-get install failed: {err}");
        }
        Ok(s.success())
    };
    let result = (|| -> Result<()> {
        if !install()? {
            let mut c = Command::new("apt-get");
            c.arg("update");
            output_bounded(c, Duration::from_secs(600))?;
            if !install()? {
                bail!("apt-get install {} failed", missing.join(" "));
            }
        }
        Ok(())
    })();
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result
}

/// The ingressd binary: `--ingressd`, else built (a no-op when fresh) next to this binary so
/// the measured proxy is the current source, not a stale build.
fn locate_ingressd(o: &Opts) -> Result<PathBuf> {
    if let Some(p) = &o.ingressd {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    if !release {
        eprintln!("WARNING: not a release build; the numbers mean nothing (use --release)");
    }
    let target = dir.parent().context("target dir")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "==> building ingressd ({})",
        if release { "release" } else { "debug" }
    );
    let mut c = Command::new(cargo);
    c.current_dir(root)
        .args(["build", "-p", "ingress-userspace", "--bin", "ingressd"])
        .env("CARGO_TARGET_DIR", target);
    if release {
        c.arg("--release");
    }
    let (s, _, err) = output_bounded(c, Duration::from_secs(1800))?;
    if !s.success() {
        bail!("building ingressd failed:\n{err}");
    }
    Ok(dir.join("ingressd"))
}

/// The bpffs pin directory given to an ingressd instance (it pins nothing without
/// `--xdp-interface`).
fn pin_dir(peer: Peer) -> PathBuf {
    PathBuf::from("/sys/fs/bpf").join(tests::netns::owned("benchl7", peer.key()))
}

/// One proxy, started and verified.
struct Running {
    peer: Peer,
    proc: Proc,
    http: SocketAddr,
    https: SocketAddr,
    command: String,
}

fn logfile(dir: &Path, name: &str) -> Result<(Stdio, Stdio)> {
    let f = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Ok((f.try_clone()?.into(), f.into()))
}

fn tail(dir: &Path, name: &str) -> String {
    let s = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn taskset(cpu: usize, program: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu.to_string()).arg(program);
    c
}

fn describe(c: &Command) -> String {
    let mut s: String = c
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={} ", k.to_str()?, v?.to_str()?)))
        .collect();
    s.push_str(&c.get_program().to_string_lossy());
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn start_peer(
    peer: Peer,
    o: &Opts,
    dir: &Path,
    upstream_port: u16,
    certs: &Certs,
    ingressd_bin: &Path,
) -> Result<Running> {
    let p = free_ports(3)?;
    let (http, https, admin) = (p[0], p[1], p[2]);
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (cmd, ready) = match peer {
        Peer::Ingressd | Peer::IngressdBaseline => {
            let bin = match (peer, &o.baseline) {
                (Peer::IngressdBaseline, Some(b)) => b.as_path(),
                (Peer::IngressdBaseline, None) => bail!("--baseline-ingressd not given"),
                _ => ingressd_bin,
            };
            let mdir = dir.join(format!("manifests-{}", peer.key()));
            std::fs::create_dir_all(&mdir)?;
            std::fs::write(
                mdir.join("bench.json"),
                serde_json::to_vec_pretty(&peers::ingressd_manifests(upstream_port, certs))?,
            )?;
            let mut c = taskset(PROXY_CPU, bin);
            c.arg("run")
                .arg("--manifests")
                .arg(&mdir)
                .args(["--http-addr", &format!("127.0.0.1:{http}")])
                .args(["--https-addr", &format!("127.0.0.1:{https}")])
                .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
                .args(["--access-log", "false"])
                .args(["--pin-dir", &pin_dir(peer).display().to_string()])
                .env("TOKIO_WORKER_THREADS", o.ingressd_threads.to_string());
            // As nginx's `keepalive` and `keepalive_requests` below: the h2 workload has
            // 640 requests in flight, and HTTP/2 clients stay on their connections. Builds
            // older than these flags (a --baseline-ingressd) run with their defaults.
            let flags = run_help(bin);
            if flags.contains("--upstream-keepalive-connections") {
                c.args(["--upstream-keepalive-connections", "1024"])
                    .args(["--keep-alive-requests", "0"]);
            }
            // nginx and HAProxy are not configured to add one.
            if flags.contains("--hsts") {
                c.args(["--hsts", "false"]);
            }
            (c, Some(addr(admin)))
        }
        Peer::Nginx => {
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, peers::nginx_conf(dir, http, https, upstream_port))?;
            let mut c = taskset(PROXY_CPU, Path::new("nginx"));
            c.arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("nginx-error.log"));
            c.arg("-c").arg(&conf);
            (c, None)
        }
        Peer::Haproxy => {
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(&cfg, peers::haproxy_cfg(dir, http, https, upstream_port))?;
            let mut c = taskset(PROXY_CPU, Path::new("haproxy"));
            c.arg("-f").arg(&cfg).arg("-db");
            (c, None)
        }
    };
    let command = describe(&cmd);
    let mut cmd = cmd;
    let (out, err) = logfile(dir, peer.key())?;
    cmd.stdout(out).stderr(err).stdin(Stdio::null());
    let mut proc = Proc::spawn(peer.key(), cmd)?;
    let wait = Duration::from_secs(20);
    let started = (|| -> Result<()> {
        proc.wait_listening(addr(http), wait)?;
        proc.wait_listening(addr(https), wait)?;
        if let Some(admin) = ready {
            wait_ready(&mut proc, admin, wait)?;
        }
        Ok(())
    })();
    if let Err(e) = started {
        bail!(
            "{e:#}\n--- {} log ---\n{}",
            peer.key(),
            tail(dir, peer.key())
        );
    }
    Ok(Running {
        peer,
        proc,
        http: addr(http),
        https: addr(https),
        command,
    })
}

/// Waits for ingressd's `/readyz` to answer 200 (the first snapshot is live).
fn wait_ready(proc: &mut Proc, admin: SocketAddr, timeout: Duration) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_alive()?;
        let ok = (|| -> std::io::Result<bool> {
            let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r.starts_with("HTTP/1.1 200"))
        })()
        .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("ingressd not ready on {admin}/readyz after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One real request per protocol through the proxy: status 200 and the upstream's body, over
/// TLS 1.3 with a full handshake and certificate verification for `HOST`.
fn sanity(rt: &tokio::runtime::Runtime, r: &Running, tls: &ClientTls) -> Result<String> {
    let (plain, secure) = rt.block_on(async {
        let t = Duration::from_secs(10);
        let plain = tokio::time::timeout(t, handshake::exchange(r.http, None, HOST)).await;
        let secure = tokio::time::timeout(t, handshake::exchange(r.https, Some(tls), HOST)).await;
        (plain, secure)
    });
    let plain = plain.context("HTTP check timed out")??;
    let secure = secure.context("HTTPS check timed out")??;
    for (what, x) in [("HTTP", &plain), ("HTTPS", &secure)] {
        if x.status != 200 || x.body != BODY {
            bail!(
                "{}: {what} check got status {} body {:?}\n{}",
                r.peer.key(),
                x.status,
                String::from_utf8_lossy(&x.body),
                x.head
            );
        }
    }
    let info = secure.tls.context("no TLS info")?;
    if info.version != "TLSv1_3" || !info.full() {
        bail!("{}: unexpected TLS session {info:?}", r.peer.key());
    }
    Ok(format!(
        "{}: HTTP 200 + body OK; HTTPS 200 + body OK ({}, {}, {}, {} handshake)",
        r.peer.key(),
        info.version,
        info.cipher,
        info.group,
        info.kind
    ))
}

/// One measurement.
#[derive(Clone, Debug, Default)]
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    count: u64,
    /// Proxy CPU per request or handshake, µs (utime+stime).
    cpu_us: f64,
    /// The same from schedstat (finer, live threads only).
    sched_us: f64,
    errors: u64,
    error_note: String,
    /// Busy fraction of the load core and the proxy core during the run.
    busy: [f64; 2],
    /// Handshake generator CPU per handshake, µs (0 for wrk runs).
    client_us: f64,
}

/// `program args..` on the load core, in a private mount namespace whose /etc/hosts resolves
/// HOST to 127.0.0.1, so the generator sends the real SNI and Host (nothing on the host is
/// changed); unshare and sh exec in place, so the pid stays the generator's.
fn generator_command(hosts: &Path, program: &str, args: &[String]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && cpu=\"$1\" && shift && exec taskset -c \"$cpu\" \"$@\"")
        .arg(hosts)
        .arg(LOAD_CPU.to_string())
        .arg(program)
        .args(args);
    c
}

fn wrk_command(o: &Opts, hosts: &Path, url: &str) -> Command {
    let args = [
        "-t1".to_string(),
        format!("-c{}", o.connections),
        format!("-d{}s", o.duration.as_secs()),
        "--latency".into(),
        "--timeout".into(),
        "5s".into(),
        url.into(),
    ];
    generator_command(hosts, "wrk", &args)
}

/// `ingressd run --help` of this binary (empty if it cannot say), to see which flags it takes.
fn run_help(bin: &Path) -> String {
    Command::new(bin)
        .args(["run", "--help"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

fn h2load_command(o: &Opts, hosts: &Path, url: &str, log: &Path) -> Command {
    let args = [
        "-t1".to_string(),
        format!("-c{}", o.connections),
        format!("-m{H2_STREAMS}"),
        format!("-D{}", o.duration.as_secs()),
        format!("--log-file={}", log.display()),
        url.into(),
    ];
    generator_command(hosts, "h2load", &args)
}

fn handshake_command(o: &Opts, addr: SocketAddr, ca: &Path) -> Result<Command> {
    let exe = std::env::current_exe()?;
    let mut c = taskset(LOAD_CPU, &exe);
    c.arg("__handshakes")
        .arg(addr.to_string())
        .arg(ca)
        .arg(o.duration.as_millis().to_string())
        .arg(o.connections.to_string());
    Ok(c)
}

fn measure(r: &Running, w: Workload, o: &Opts, hosts: &Path, ca: &Path) -> Result<Sample> {
    let pid = r.proc.pid();
    let bound = o.duration + Duration::from_secs(30);
    let before = cpu::sample(pid)?;
    let cores_before = cpu::core_times();
    let mut s = match w {
        Workload::Http | Workload::Https => {
            let url = match w {
                Workload::Http => format!("http://{HOST}:{}/", r.http.port()),
                _ => format!("https://{HOST}:{}/", r.https.port()),
            };
            let (status, out, err) = output_bounded(wrk_command(o, hosts, &url), bound)?;
            if !status.success() {
                bail!("wrk failed ({status}): {err}{out}");
            }
            let rep: WrkReport = wrk::parse(&out).map_err(|e| anyhow::anyhow!(e))?;
            let mut note = String::new();
            if rep.errors() > 0 {
                note = format!(
                    "socket errors connect/read/write/timeout {:?}, non-2xx/3xx {}",
                    rep.socket_errors, rep.non_2xx_3xx
                );
            }
            Sample {
                rate: rep.requests_per_sec,
                p50_us: rep.p50_us,
                p99_us: rep.p99_us,
                count: rep.requests,
                errors: rep.errors(),
                error_note: note,
                ..Default::default()
            }
        }
        Workload::H2 => {
            let url = format!("https://{HOST}:{}/", r.https.port());
            let log = hosts.with_file_name("h2load.log");
            let (status, out, err) = output_bounded(h2load_command(o, hosts, &url, &log), bound)?;
            if !status.success() {
                bail!("h2load failed ({status}): {err}{out}");
            }
            let rep: H2Report = h2load::parse(&out).map_err(|e| anyhow::anyhow!(e))?;
            if rep.protocol != "h2" {
                bail!("h2load negotiated {:?}, not h2", rep.protocol);
            }
            let (p50, p99) = h2load::latencies(&std::fs::read_to_string(&log)?)
                .map_err(|e| anyhow::anyhow!(e))?;
            let errors = rep.failed + rep.non_2xx_3xx;
            Sample {
                rate: rep.requests_per_sec,
                p50_us: f64::from(p50),
                p99_us: f64::from(p99),
                count: rep.succeeded,
                errors,
                error_note: if errors > 0 {
                    format!("failed {}, non-2xx/3xx {}", rep.failed, rep.non_2xx_3xx)
                } else {
                    String::new()
                },
                ..Default::default()
            }
        }
        Workload::Handshake => {
            let (status, out, err) = output_bounded(handshake_command(o, r.https, ca)?, bound)?;
            if !status.success() {
                bail!("handshake generator failed ({status}): {err}");
            }
            let rep = LoadReport::from_json(&out)
                .with_context(|| format!("generator output {out:?} {err}"))?;
            Sample {
                rate: rep.rate(),
                p50_us: f64::from(rep.p50_us),
                p99_us: f64::from(rep.p99_us),
                count: rep.completed,
                errors: rep.errors + rep.not_full,
                error_note: rep.first_error.unwrap_or_default(),
                client_us: rep.client_cpu_us as f64 / rep.completed.max(1) as f64,
                ..Default::default()
            }
        }
    };
    let after = cpu::sample(pid)?;
    let busy = cpu::busy_between(&cores_before, &cpu::core_times());
    s.busy = [
        busy.get(LOAD_CPU).copied().unwrap_or(0.0),
        busy.get(PROXY_CPU).copied().unwrap_or(0.0),
    ];
    let (stat_us, sched_us) = after.since(&before);
    let n = s.count.max(1) as f64;
    s.cpu_us = stat_us / n;
    s.sched_us = sched_us / n;
    Ok(s)
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

/// A table as aligned text or Markdown.
fn render(header: &[&str], rows: &[Vec<String>], markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            header.iter().map(|_| "---|").collect::<String>()
        );
        for r in rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        return out;
    }
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = width[i])
                } else {
                    format!("{c:>w$}", w = width[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Medians of one proxy's samples in one workload.
#[derive(Clone, Copy, Debug)]
struct Med {
    rate: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
    sched: f64,
}

fn medians(samples: &[Sample]) -> Med {
    let m = |f: fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    Med {
        rate: m(|s| s.rate),
        p50: m(|s| s.p50_us),
        p99: m(|s| s.p99_us),
        cpu: m(|s| s.cpu_us),
        sched: m(|s| s.sched_us),
    }
}

fn report(o: &Opts, peers_run: &[Peer], results: &[Vec<Vec<Sample>>], markdown: bool) -> String {
    let mut out = String::new();
    for (wi, w) in o.workloads.iter().enumerate() {
        let meds: Vec<Med> = results[wi].iter().map(|s| medians(s)).collect();
        let find = |p: Peer| peers_run.iter().position(|x| *x == p).map(|i| meds[i]);
        let (nginx, haproxy) = (find(Peer::Nginx), find(Peer::Haproxy));
        let unit = w.unit();
        let per = if *w == Workload::Handshake {
            "hs"
        } else {
            "req"
        };
        let cpu_h = format!("CPU us/{per}");
        let sched_h = format!("(schedstat) us/{per}");
        let header = [
            "proxy",
            unit,
            "p50",
            "p99",
            cpu_h.as_str(),
            sched_h.as_str(),
            "rate vs nginx",
            "CPU vs nginx",
            "p99 vs nginx",
            "rate vs HAProxy",
            "CPU vs HAProxy",
            "p99 vs HAProxy",
        ];
        let mut rows = Vec::new();
        for (pi, p) in peers_run.iter().enumerate() {
            let m = meds[pi];
            let errs: u64 = results[wi][pi].iter().map(|s| s.errors).sum();
            let vs = |b: Option<Med>| match b {
                Some(b) => [
                    ratio(m.rate, b.rate),
                    ratio(m.cpu, b.cpu),
                    ratio(m.p99, b.p99),
                ],
                None => ["n/a".into(), "n/a".into(), "n/a".into()],
            };
            let [rn, cn, pn] = vs(nginx);
            let [rh, ch, ph] = vs(haproxy);
            let name = if errs > 0 {
                format!("{} ({errs} errors)", p.key())
            } else {
                p.key().to_string()
            };
            rows.push(vec![
                name,
                format!("{:.0}", m.rate),
                fmt_us(m.p50),
                fmt_us(m.p99),
                format!("{:.1}", m.cpu),
                format!("{:.1}", m.sched),
                rn,
                cn,
                pn,
                rh,
                ch,
                ph,
            ]);
        }
        if markdown {
            let _ = writeln!(out, "\n### {}\n", w.title(o));
        } else {
            let _ = writeln!(
                out,
                "\n== {} — median of {} rounds ==",
                w.title(o),
                o.rounds
            );
        }
        out.push_str(&render(&header, &rows, markdown));
        if let (Some(i), Some(b)) = (find(Peer::Ingressd), find(Peer::IngressdBaseline)) {
            let _ = writeln!(
                out,
                "{}ingressd vs ingressd-baseline: {unit} {}, CPU {}, p99 {}",
                if markdown { "\n" } else { "" },
                ratio(i.rate, b.rate),
                ratio(i.cpu, b.cpu),
                ratio(i.p99, b.p99),
            );
            let rounds = |p: Peer| {
                let pi = peers_run.iter().position(|x| *x == p);
                pi.map(|pi| results[wi][pi].iter().map(|s| s.cpu_us).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            if let Some((m, lo, hi)) =
                paired_ratios(&rounds(Peer::Ingressd), &rounds(Peer::IngressdBaseline))
            {
                let _ = writeln!(
                    out,
                    "{}CPU ratio within each round (the two ran back to back): median {m:.3}x, range {lo:.3}x-{hi:.3}x",
                    if markdown { "\n" } else { "  " },
                );
            }
        }
        if let (Some(i), Some(n), Some(cpu_target)) = (find(Peer::Ingressd), nginx, w.cpu_target())
        {
            let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
            let _ = writeln!(
                out,
                "{}targets for ingressd: CPU <= {cpu_target}x nginx: {} ({:.2}x); p99 <= nginx: {} ({:.2}x); {unit} >= nginx: {} ({:.2}x)",
                if markdown { "\n" } else { "" },
                verdict(i.cpu <= cpu_target * n.cpu),
                i.cpu / n.cpu,
                verdict(i.p99 <= n.p99),
                i.p99 / n.p99,
                verdict(i.rate >= n.rate),
                i.rate / n.rate,
            );
        }
    }
    out
}

fn raw_report(o: &Opts, peers_run: &[Peer], results: &[Vec<Vec<Sample>>]) -> String {
    let mut out = String::new();
    for (wi, w) in o.workloads.iter().enumerate() {
        for (pi, p) in peers_run.iter().enumerate() {
            let cells: Vec<String> = results[wi][pi]
                .iter()
                .map(|s| {
                    format!(
                        "{:.0} {} p50 {} p99 {} cpu {:.1}/{:.1}us busy {:.0}%/{:.0}%{}{}",
                        s.rate,
                        w.unit(),
                        fmt_us(s.p50_us),
                        fmt_us(s.p99_us),
                        s.cpu_us,
                        s.sched_us,
                        s.busy[0] * 100.0,
                        s.busy[1] * 100.0,
                        if s.client_us > 0.0 {
                            format!(" client {:.0}us", s.client_us)
                        } else {
                            String::new()
                        },
                        if s.errors > 0 {
                            format!(" ERRORS {}: {}", s.errors, s.error_note)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            let _ = writeln!(out, "{:<9} {:<8} {}", w.key(), p.key(), cells.join(" | "));
        }
    }
    out
}

/// Profiles ingressd under each workload with perf (cpu-clock, DWARF call graphs), writing
/// `<dir>/ingressd-<workload>.data` and a flat report `.txt` next to it.
fn profile(o: &Opts, r: &Running, dir: &Path, hosts: &Path, ca: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for w in &o.workloads {
        let data = dir.join(format!("ingressd-{}.data", w.key()));
        let secs = o.duration.as_secs().saturating_sub(1).max(1);
        let mut c = taskset(LOAD_CPU, Path::new("perf"));
        c.args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "1999",
            "--call-graph",
            "dwarf,16384",
        ])
        .arg("-p")
        .arg(r.proc.pid().to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", &secs.to_string()]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut perf = Proc::spawn("perf", c)?;
        std::thread::sleep(Duration::from_millis(300));
        let s = measure(r, *w, o, hosts, ca)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while perf.check_alive().is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(perf);
        let mut rep = Command::new("perf");
        rep.arg("report").arg("-i").arg(&data).args([
            "--no-children",
            "--sort",
            "dso,symbol",
            "--stdio",
            "-g",
            "none",
            "--percent-limit",
            "0.5",
        ]);
        let (_, txt, _) = output_bounded(rep, Duration::from_secs(600))?;
        let txt_path = data.with_extension("txt");
        std::fs::write(&txt_path, &txt)?;
        eprintln!(
            "    perf {}: {:.0} {} during the profile; {} and {}",
            w.key(),
            s.rate,
            w.unit(),
            data.display(),
            txt_path.display()
        );
    }
    Ok(())
}

/// `bench_l7 __upstream ADDR`: the fixed-response upstream (run pinned by the parent).
fn child_upstream(args: &[String]) -> Result<()> {
    let addr: SocketAddr = args.first().context("__upstream ADDR")?.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(addr).await?;
        upstream::serve(l).await;
        Ok(())
    })
}

/// `bench_l7 __handshakes ADDR CA_PEM DURATION_MS CONNECTIONS`: the handshake load generator;
/// prints one JSON report line.
fn child_handshakes(args: &[String]) -> Result<()> {
    let [addr, ca, ms, conns] = args else {
        bail!("__handshakes ADDR CA_PEM DURATION_MS CONNECTIONS");
    };
    let addr: SocketAddr = addr.parse()?;
    let ca = std::fs::read(ca)?;
    let duration = Duration::from_millis(ms.parse()?);
    let conns: usize = conns.parse()?;
    let tls = ClientTls::new(handshake::client_config(&ca)?, HOST)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let before = cpu::sample(std::process::id())?;
    let mut rep = rt.block_on(handshake::load(
        addr,
        tls,
        HOST.to_string(),
        BODY,
        conns,
        duration,
        Duration::from_secs(10),
    ));
    rep.client_cpu_us = cpu::sample(std::process::id())?.since(&before).0 as u64;
    println!("{}", rep.to_json());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__upstream") => return child_upstream(&args[2..]),
        Some("__handshakes") => return child_handshakes(&args[2..]),
        _ => {}
    }
    let o = Opts::parse(&args[1..])?;
    let cmdline = args.join(" ");
    ensure_packages()?;
    // The orchestration itself stays off the proxies' core.
    // Best effort, as before: an unpinned run is still a run.
    let _ = tests::bench::pin_to_cpu(LOAD_CPU);
    let ingressd_bin = locate_ingressd(&o)?;
    let dir = tempfile::Builder::new().prefix("bench-l7-").tempdir()?;
    let d = dir.path();

    let certs = Certs::generate()?;
    std::fs::write(d.join("ca.crt"), &certs.ca_pem)?;
    std::fs::write(d.join("tls.crt"), &certs.cert_pem)?;
    std::fs::write(d.join("tls.key"), &certs.key_pem)?;
    std::fs::write(
        d.join("haproxy.pem"),
        format!("{}{}", certs.cert_pem, certs.key_pem),
    )?;
    let hosts = d.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {HOST}\n"))?;
    let ca = d.join("ca.crt");

    let up_port = free_ports(1)?[0];
    let up_addr = SocketAddr::from(([127, 0, 0, 1], up_port));
    let mut up_cmd = taskset(LOAD_CPU, &std::env::current_exe()?);
    up_cmd.arg("__upstream").arg(up_addr.to_string());
    let mut upstream = Proc::spawn("upstream", up_cmd)?;
    upstream.wait_listening(up_addr, Duration::from_secs(10))?;

    eprintln!(
        "==> starting {}",
        o.peers
            .iter()
            .map(|p| p.key())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut running = Vec::new();
    for p in &o.peers {
        running.push(start_peer(*p, &o, d, up_port, &certs, &ingressd_bin)?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = ClientTls::new(handshake::client_config(certs.ca_pem.as_bytes())?, HOST)?;
    let mut checks = Vec::new();
    for r in &running {
        let line = sanity(&rt, r, &tls)?;
        eprintln!("    {line}");
        checks.push(line);
    }
    let threads =
        |pid: u32| std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let mut setup = String::new();
    for r in &running {
        let tree = cpu::process_tree(r.proc.pid())?;
        let _ = writeln!(
            setup,
            "{}: {} (processes {}, threads {})",
            r.peer.key(),
            r.command,
            tree.len(),
            tree.iter().map(|p| threads(*p)).sum::<usize>()
        );
    }
    if let Some(hold) = o.hold {
        eprint!("{setup}");
        for r in &running {
            eprintln!(
                "    {} pid {} http {} https {}",
                r.peer.key(),
                r.proc.pid(),
                r.http,
                r.https
            );
        }
        eprintln!(
            "==> holding for {hold:?} (hosts file {}), then exiting",
            hosts.display()
        );
        std::thread::sleep(hold);
        return Ok(());
    }
    let load_start = loadavg();
    eprintln!(
        "==> {} rounds x {} workloads x {} proxies, {:?} each; load average {load_start}",
        o.rounds,
        o.workloads.len(),
        running.len(),
        o.duration
    );

    // results[workload][peer] = samples.
    let mut results = vec![vec![Vec::<Sample>::new(); running.len()]; o.workloads.len()];
    let mut loads = Vec::new();
    for round in 1..=o.rounds {
        loads.push(loadavg());
        for (wi, w) in o.workloads.iter().enumerate() {
            for (pi, r) in running.iter_mut().enumerate() {
                r.proc.check_alive()?;
                upstream.check_alive()?;
                let s = measure(r, *w, &o, &hosts, &ca)
                    .with_context(|| format!("{} {} round {round}", r.peer.key(), w.key()))?;
                eprintln!(
                    "    round {round} {:<9} {:<8} {:>8.0} {} p50 {:>7} p99 {:>7} cpu {:>6.1}us/{} core{LOAD_CPU} {:>3.0}% core{PROXY_CPU} {:>3.0}%{}",
                    w.key(),
                    r.peer.key(),
                    s.rate,
                    w.unit(),
                    fmt_us(s.p50_us),
                    fmt_us(s.p99_us),
                    s.cpu_us,
                    if *w == Workload::Handshake { "hs" } else { "req" },
                    s.busy[0] * 100.0,
                    s.busy[1] * 100.0,
                    if s.errors > 0 { format!("  ERRORS {}: {}", s.errors, s.error_note) } else { String::new() }
                );
                results[wi][pi].push(s);
                std::thread::sleep(o.pause);
            }
        }
    }
    let load_end = loadavg();
    let peers_run: Vec<Peer> = running.iter().map(|r| r.peer).collect();

    let mut text = String::new();
    let _ = writeln!(text, "\ncommand: {cmdline}");
    let _ = writeln!(
        text,
        "cores: proxies on {PROXY_CPU} (taskset), load generator + upstream on {LOAD_CPU}; load average at start {load_start}, per round [{}], at end {load_end}",
        loads.join("; ")
    );
    text.push_str(&setup);
    text.push_str(&report(&o, &peers_run, &results, false));
    let _ = writeln!(text, "\nper round (rate, p50, p99, proxy CPU stat/schedstat per request, busy load core/proxy core, generator CPU per handshake):");
    text.push_str(&raw_report(&o, &peers_run, &results));
    println!("{text}");

    if let Some(path) = &o.markdown {
        let mut md = String::new();
        let _ = writeln!(md, "Command: `{cmdline}`\n");
        let _ = writeln!(
            md,
            "Proxies pinned to core {PROXY_CPU}, load generator and upstream on core {LOAD_CPU}. Load average at start {load_start}, per round [{}], at end {load_end}.\n",
            loads.join("; ")
        );
        let _ = writeln!(md, "```\n{setup}{}\n```", checks.join("\n"));
        md.push_str(&report(&o, &peers_run, &results, true));
        let _ = writeln!(
            md,
            "\nPer round:\n\n```\n{}```",
            raw_report(&o, &peers_run, &results)
        );
        std::fs::write(path, md)?;
        eprintln!("==> wrote {}", path.display());
    }

    if let Some(pd) = &o.perf_dir {
        if let Some(r) = running.iter().find(|r| r.peer == Peer::Ingressd) {
            eprintln!("==> profiling ingressd");
            profile(&o, r, pd, &hosts, &ca)?;
        }
    }
    drop(running);
    drop(upstream);
    for p in [Peer::Ingressd, Peer::IngressdBaseline] {
        // ingressd pins nothing without --xdp-interface; remove the directory if it made one.
        let _ = std::fs::remove_dir_all(pin_dir(p));
    }
    Ok(())
}

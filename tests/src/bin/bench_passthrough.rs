//! `cargo xtask bench passthrough`: TLS passthrough by SNI on one loopback topology. A client
//! sends a real ClientHello for `passthrough.bench.test` and downloads a body from a TLS
//! backend through: ingressd's in-kernel sockmap splice, ingressd's userspace copy (the
//! fallback), nginx `stream` + `ssl_preread`, HAProxy `mode tcp` on `req.ssl_sni` with
//! `option splice-auto` (alone, and with splicing forced), and no proxy at all (the ceiling).
//! Proxies are pinned to CPU 1 with one worker/thread each; client and backend (rustls, one
//! thread each) to CPU 0. Cases: one connection, N concurrent connections, and small
//! request/response round trips on one connection. Rounds are interleaved (the path order
//! rotates each round) and each sample waits for a quiet machine (no `bench_l7`, little other
//! load); medians printed with throughput, proxy CPU per GB (its processes' utime+stime),
//! system CPU per GB (/proc/stat user+nice+system+irq+softirq: kernel splicing runs in
//! softirq and kworkers, not in the proxy), the same split by exact per-task clocks, and
//! ratios.
//!
//! Usage: bench_passthrough [--rounds N] [--single-mib N] [--multi-mib N] [--conns N]
//!   [--rr-secs S] [--rr-response BYTES] [--pause S] [--cases single,multi,rr]
//!   [--paths kernel,userspace,nginx,haproxy-auto,haproxy,direct] [--ingressd PATH]
//!   [--wait-mins M] [--quiet-cpus X] [--markdown FILE]
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use clap::Parser as _;
use rustls::ClientConfig;
use tests::{
    bench::passthrough::{
        cpu::loadavg,
        meter::{Meter, Usage},
        peers::{self, free_ports, Engine, Proc, HOST},
        traffic::{self, Backend, Measured},
    },
    passthrough::Pki,
};

const LOAD_CPU: usize = 0;
const PROXY_CPU: usize = 1;
const MIB: u64 = 1 << 20;

const USAGE: &str =
    "usage: bench_passthrough [--rounds N] [--single-mib N] [--multi-mib N] [--conns N]
  [--rr-secs S] [--rr-response BYTES] [--pause S] [--cases single,multi,rr]
  [--paths kernel,userspace,nginx,haproxy-auto,haproxy,direct] [--ingressd PATH]
  [--wait-mins M] [--quiet-cpus X] [--markdown FILE]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Kernel,
    Userspace,
    Nginx,
    HaproxyAuto,
    Haproxy,
    Direct,
}

impl Path {
    const ALL: [Path; 6] = [
        Path::Kernel,
        Path::Userspace,
        Path::Nginx,
        Path::HaproxyAuto,
        Path::Haproxy,
        Path::Direct,
    ];

    fn key(self) -> &'static str {
        match self {
            Path::Kernel => "kernel",
            Path::Userspace => "userspace",
            Path::Nginx => "nginx",
            Path::HaproxyAuto => "haproxy-auto",
            Path::Haproxy => "haproxy",
            Path::Direct => "direct",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Path::Kernel => "ingressd, in-kernel sockmap splice",
            Path::Userspace => "ingressd, userspace copy (fallback)",
            Path::Nginx => "nginx stream + ssl_preread",
            Path::HaproxyAuto => "HAProxy mode tcp, splice-auto only",
            Path::Haproxy => "HAProxy mode tcp, splice forced",
            Path::Direct => "direct to backend (ceiling)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Single,
    Multi,
    Rr,
}

impl Case {
    const ALL: [Case; 3] = [Case::Single, Case::Multi, Case::Rr];

    fn key(self) -> &'static str {
        match self {
            Case::Single => "single",
            Case::Multi => "multi",
            Case::Rr => "rr",
        }
    }
}

struct Opts {
    rounds: usize,
    single_bytes: u64,
    multi_bytes: u64,
    conns: usize,
    rr_duration: Duration,
    rr_response: u64,
    pause: Duration,
    cases: Vec<Case>,
    paths: Vec<Path>,
    ingressd: Option<PathBuf>,
    wait: Duration,
    quiet_cpus: f64,
    markdown: Option<PathBuf>,
}

fn parse_list<T: Copy>(value: &str, all: &[T], key: impl Fn(T) -> &'static str) -> Result<Vec<T>> {
    value
        .split(',')
        .map(|v| {
            all.iter()
                .copied()
                .find(|x| key(*x) == v)
                .with_context(|| format!("unknown item {v:?}\n{USAGE}"))
        })
        .collect()
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut o = Opts {
            rounds: 5,
            single_bytes: 1024 * MIB,
            multi_bytes: 256 * MIB,
            conns: 16,
            rr_duration: Duration::from_secs(3),
            rr_response: 1,
            pause: Duration::from_millis(500),
            cases: Case::ALL.to_vec(),
            paths: Path::ALL.to_vec(),
            ingressd: None,
            wait: Duration::from_secs(30 * 60),
            quiet_cpus: 0.25,
            markdown: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let v = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let num = |v: &str| -> Result<f64> {
                let n: f64 = v.parse().with_context(|| format!("bad {flag} {v:?}"))?;
                ensure!(n.is_finite() && n >= 0.0, "{flag} out of range: {v}");
                Ok(n)
            };
            match flag.as_str() {
                "--rounds" => o.rounds = num(v)? as usize,
                "--single-mib" => o.single_bytes = num(v)? as u64 * MIB,
                "--multi-mib" => o.multi_bytes = num(v)? as u64 * MIB,
                "--conns" => o.conns = num(v)? as usize,
                "--rr-secs" => o.rr_duration = Duration::from_secs_f64(num(v)?),
                "--rr-response" => o.rr_response = num(v)? as u64,
                "--pause" => o.pause = Duration::from_secs_f64(num(v)?),
                "--wait-mins" => o.wait = Duration::from_secs_f64(num(v)? * 60.0),
                "--quiet-cpus" => o.quiet_cpus = num(v)?,
                "--cases" => o.cases = parse_list(v, &Case::ALL, Case::key)?,
                "--paths" => o.paths = parse_list(v, &Path::ALL, Path::key)?,
                "--ingressd" => o.ingressd = Some(v.into()),
                "--markdown" => o.markdown = Some(v.into()),
                _ => bail!("unknown flag {flag}\n{USAGE}"),
            }
        }
        ensure!(o.rounds >= 1 && o.rounds <= 100, "--rounds in 1..=100");
        ensure!(o.conns >= 1 && o.conns <= 1000, "--conns in 1..=1000");
        ensure!(
            o.single_bytes >= MIB && o.multi_bytes >= MIB,
            "sizes of at least 1 MiB"
        );
        ensure!(
            o.rr_duration >= Duration::from_millis(100)
                && o.rr_duration <= Duration::from_secs(600),
            "--rr-secs in 0.1..=600"
        );
        ensure!(
            (1..=traffic::MAX_RESPONSE).contains(&o.rr_response),
            "--rr-response in 1..={}",
            traffic::MAX_RESPONSE
        );
        ensure!(
            !o.cases.is_empty() && !o.paths.is_empty(),
            "nothing to measure"
        );
        Ok(o)
    }
}

/// The topology: the backend, and each path's address and proxy.
struct Lab {
    backend: Backend,
    client: Arc<ClientConfig>,
    targets: Vec<(Path, SocketAddr, Option<Proc>)>,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start(o: &Opts) -> Result<Lab> {
        let pki = Pki::new();
        let backend = Backend::start(pki.server_config(&[HOST]), LOAD_CPU)?;
        let client = pki.client_config();
        let dir = tempfile::Builder::new().prefix("bench-pt-").tempdir()?;
        let ports = free_ports(9)?;
        let at = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
        let (exe, prefix) = match &o.ingressd {
            Some(p) => (p.clone(), vec![]),
            None => (std::env::current_exe()?, vec!["__ingressd".to_string()]),
        };
        let manifests = dir.path().join("manifests");
        peers::write_manifests(&manifests, backend.addr)?;
        let mut targets = Vec::new();
        for &p in &o.paths {
            let (addr, proc) = match p {
                Path::Kernel | Path::Userspace => {
                    let (engine, base) = if p == Path::Kernel {
                        (Engine::Kernel, 0)
                    } else {
                        (Engine::Userspace, 3)
                    };
                    let https = at(base);
                    let proc = peers::ingressd(
                        &exe,
                        &prefix,
                        dir.path(),
                        &manifests,
                        https,
                        (ports[base + 1], ports[base + 2]),
                        engine,
                        PROXY_CPU,
                    )?;
                    (https, Some(proc))
                }
                Path::Nginx => (
                    at(6),
                    Some(peers::nginx(dir.path(), at(6), backend.addr, PROXY_CPU)?),
                ),
                Path::HaproxyAuto | Path::Haproxy => {
                    let (port, forced) = if p == Path::Haproxy {
                        (at(7), true)
                    } else {
                        (at(8), false)
                    };
                    let proc = peers::haproxy(dir.path(), port, backend.addr, forced, PROXY_CPU)?;
                    (port, Some(proc))
                }
                Path::Direct => (backend.addr, None),
            };
            if let Some(proc) = &proc {
                eprintln!(
                    "==> {} on {addr}, pids {:?}, log {}",
                    proc.name,
                    proc.pids,
                    proc.log.display()
                );
            }
            targets.push((p, addr, proc));
        }
        Ok(Lab {
            backend,
            client,
            targets,
            _dir: dir,
        })
    }

    /// Pipe fds held by the proxy of `p` (HAProxy keeps the pipes it spliced through).
    fn pipes(&self, p: Path) -> Option<usize> {
        self.targets
            .iter()
            .find(|(q, _, _)| *q == p)
            .and_then(|(_, _, proc)| proc.as_ref())
            .map(|proc| peers::pipe_fds(&proc.pids))
    }

    fn target(&mut self, p: Path) -> Result<(SocketAddr, Meter)> {
        let (_, addr, proc) = self
            .targets
            .iter_mut()
            .find(|(q, _, _)| *q == p)
            .context("path not started")?;
        let proxy_pids = match proc {
            Some(proc) => {
                proc.check_alive()?;
                proc.pids.clone()
            }
            None => vec![],
        };
        Ok((
            *addr,
            Meter {
                proxy_pids,
                backend: self.backend.clock,
            },
        ))
    }

    fn run(&mut self, p: Path, case: Case, o: &Opts, single: u64) -> Result<Measured> {
        let (addr, meter) = self.target(p)?;
        let direct = p == Path::Direct;
        let limit = Duration::from_secs(600);
        match case {
            Case::Single => traffic::download(
                addr,
                HOST,
                self.client.clone(),
                1,
                single,
                direct,
                meter,
                LOAD_CPU,
                limit,
            ),
            Case::Multi => traffic::download(
                addr,
                HOST,
                self.client.clone(),
                o.conns,
                o.multi_bytes,
                direct,
                meter,
                LOAD_CPU,
                limit,
            ),
            Case::Rr => traffic::request_response(
                addr,
                HOST,
                self.client.clone(),
                o.rr_response,
                o.rr_duration,
                direct,
                meter,
                LOAD_CPU,
            ),
        }
        .with_context(|| format!("{} / {}", p.title(), case.key()))
    }
}

/// Per-round figures of one path in one case.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    amount: u64,
    usage: Usage,
}

impl Sample {
    fn gb(&self) -> f64 {
        self.amount as f64 / 1e9
    }
    fn gbps(&self) -> f64 {
        self.amount as f64 * 8.0 / self.usage.elapsed / 1e9
    }
    fn per_gb(&self, secs: f64) -> f64 {
        secs / self.gb()
    }
    fn rate(&self) -> f64 {
        self.amount as f64 / self.usage.elapsed
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and range of one figure over rounds.
#[derive(Clone, Copy, Debug)]
struct Stat {
    med: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Stat {
        let v: Vec<f64> = samples.iter().map(f).collect();
        Stat {
            med: median(v.clone()),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
    fn show(&self, prec: usize) -> String {
        format!(
            "{:.p$} ({:.p$}–{:.p$})",
            self.med,
            self.min,
            self.max,
            p = prec
        )
    }
}

/// Medians of one path in one case.
struct Row {
    path: Path,
    rate: Stat,
    gbps: Stat,
    proxy: Stat,
    system: Stat,
    endpoints: Stat,
    kthreads: Stat,
    softirq: Stat,
    rest: Stat,
    attributed: Stat,
}

impl Row {
    /// Per GB for downloads, per round trip (in µs) for RR.
    fn of(path: Path, case: Case, s: &[Sample]) -> Row {
        let per = move |x: &Sample, secs: f64| match case {
            Case::Rr => secs / x.amount as f64 * 1e6,
            _ => x.per_gb(secs),
        };
        Row {
            path,
            rate: Stat::of(s, Sample::rate),
            gbps: Stat::of(s, Sample::gbps),
            proxy: Stat::of(s, |x| per(x, x.usage.proxy)),
            system: Stat::of(s, |x| per(x, x.usage.system)),
            endpoints: Stat::of(s, |x| per(x, x.usage.endpoints)),
            kthreads: Stat::of(s, |x| per(x, x.usage.kthreads)),
            softirq: Stat::of(s, |x| per(x, x.usage.softirq)),
            attributed: Stat::of(s, |x| {
                per(x, x.usage.proxy + x.usage.endpoints + x.usage.kthreads)
            }),
            rest: Stat::of(s, |x| {
                per(
                    x,
                    x.usage.system - x.usage.proxy - x.usage.endpoints - x.usage.kthreads,
                )
            }),
        }
    }
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn find(rows: &[Row], p: Path) -> Option<&Row> {
    rows.iter().find(|r| r.path == p)
}

fn throughput_tables(out: &mut String, title: &str, rows: &[Row]) {
    let med = |p: Path, f: fn(&Row) -> f64| find(rows, p).map(f);
    let (d, h, u) = (Path::Direct, Path::Haproxy, Path::Userspace);
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "| path | Gbit/s median (min–max) | × direct | × HAProxy | × fallback | proxy CPU-s/GB | system CPU-s/GB median (min–max) | system − direct | system CPU/GB × HAProxy | bytes per system CPU-s × fallback |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let g = r.gbps.med;
        let s = r.system.med;
        let net = med(d, |x| x.system.med)
            .filter(|_| r.path != Path::Direct)
            .map_or("–".into(), |ds| format!("{:+.3}", s - ds));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.3} | {} | {} | {} | {} |",
            r.path.title(),
            r.gbps.show(2),
            ratio(g, med(d, |x| x.gbps.med)),
            ratio(g, med(h, |x| x.gbps.med)),
            ratio(g, med(u, |x| x.gbps.med)),
            r.proxy.med,
            r.system.show(3),
            net,
            ratio(s, med(h, |x| x.system.med)),
            med(u, |x| x.system.med).map_or("–".into(), |us| ratio(us, Some(s))),
        );
    }
    let _ = writeln!(
        out,
        "\nWhere the CPU went (CPU-s/GB, medians): endpoints = client + backend threads (TLS both ways; softirq work that ran on their stacks is charged to them too); proxy = its processes; kthreads = kworker + ksoftirqd (the sockmap redirect's send side runs in a kworker); attributed = the sum of those three, from exact per-task clocks; system = /proc/stat (tick-sampled); rest = system − attributed (other processes, softirq on idle CPUs, tick-sampling error, which can be negative); softirq = ticks in softirq context, whoever ran.\n"
    );
    let _ = writeln!(
        out,
        "| path | endpoints | proxy | kthreads | attributed | system | rest | softirq |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.path.title(),
            r.endpoints.med,
            r.proxy.med,
            r.kthreads.med,
            r.attributed.med,
            r.system.med,
            r.rest.med,
            r.softirq.med
        );
    }
    let _ = writeln!(out);
}

fn rr_table(out: &mut String, title: &str, rows: &[Row]) {
    let med = |p: Path, f: fn(&Row) -> f64| find(rows, p).map(f);
    let per_cpu = |r: &Row| 1e6 / r.system.med;
    let (d, h, u) = (Path::Direct, Path::Haproxy, Path::Userspace);
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "| path | round trips/s median (min–max) | × direct | × HAProxy | × fallback | µs per round trip | round trips per system CPU-s | × HAProxy | × fallback | system CPU-µs per round trip | proxy CPU-µs per round trip |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let rate = r.rate.med;
        let pc = per_cpu(r);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {:.0} | {} | {} | {:.2} | {:.2} |",
            r.path.title(),
            r.rate.show(0),
            ratio(rate, med(d, |x| x.rate.med)),
            ratio(rate, med(h, |x| x.rate.med)),
            ratio(rate, med(u, |x| x.rate.med)),
            1e6 / rate,
            pc,
            ratio(pc, find(rows, h).map(per_cpu)),
            ratio(pc, find(rows, u).map(per_cpu)),
            r.system.med,
            r.proxy.med,
        );
    }
    let _ = writeln!(
        out,
        "\nCPU-µs per round trip by where it ran (medians; attributed = endpoints + proxy + kthreads from exact per-task clocks; /proc/stat's tick sampling undercounts this sleep/wake-heavy load, hence negative rest):\n\n| path | endpoints | proxy | kthreads | attributed | system | rest | round trips per attributed CPU-s |\n|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            r.path.title(),
            r.endpoints.med,
            r.proxy.med,
            r.kthreads.med,
            r.attributed.med,
            r.system.med,
            r.rest.med,
            1e6 / r.attributed.med
        );
    }
    let _ = writeln!(out);
}

/// The targets, each with its numbers.
fn verdicts(out: &mut String, cases: &[(Case, Vec<Row>)], conns: usize) {
    let _ = writeln!(out, "### Targets\n");
    let mut line = |ok: bool, text: String| {
        let _ = writeln!(out, "- {} {text}", if ok { "MET" } else { "MISSED" });
    };
    for (case, rows) in cases {
        let label = match case {
            Case::Single => "1 connection".to_string(),
            Case::Multi => format!("{conns} connections"),
            Case::Rr => continue,
        };
        let get = |p| find(rows, p);
        if let (Some(k), Some(d)) = (get(Path::Kernel), get(Path::Direct)) {
            let r = k.gbps.med / d.gbps.med;
            line(
                r >= 0.95,
                format!(
                    "{label}: sockmap splice {:.2} Gbit/s = {r:.3}× direct {:.2} (target ≥ 0.95×)",
                    k.gbps.med, d.gbps.med
                ),
            );
        }
        if let (Some(k), Some(h)) = (get(Path::Kernel), get(Path::Haproxy)) {
            let r = k.system.med / h.system.med;
            line(
                r <= 0.6,
                format!(
                    "{label}: sockmap splice {:.3} system CPU-s/GB = {r:.2}× HAProxy-splice's {:.3} (target ≤ 0.6×; by exact per-task clocks {:.3} vs {:.3} = {:.2}×)",
                    k.system.med, h.system.med, k.attributed.med, h.attributed.med,
                    k.attributed.med / h.attributed.med
                ),
            );
        }
        if let (Some(k), Some(u)) = (get(Path::Kernel), get(Path::Userspace)) {
            let r = u.system.med / k.system.med;
            line(
                r >= 2.0,
                format!(
                    "{label}: sockmap splice moves {r:.2}× the bytes per system CPU-second of the userspace fallback ({:.3} vs {:.3} CPU-s/GB; target ≥ 2×; by exact per-task clocks {:.2}×)",
                    k.system.med, u.system.med, u.attributed.med / k.attributed.med
                ),
            );
        }
        if let (Some(u), Some(n)) = (get(Path::Userspace), get(Path::Nginx)) {
            line(
                u.gbps.med > n.gbps.med,
                format!(
                    "{label}: userspace fallback {:.2} Gbit/s vs nginx stream {:.2} (target: faster)",
                    u.gbps.med, n.gbps.med
                ),
            );
            line(
                u.system.med < n.system.med,
                format!(
                    "{label}: userspace fallback {:.3} system CPU-s/GB vs nginx stream {:.3} (target: cheaper)",
                    u.system.med, n.system.med
                ),
            );
        }
    }
    let _ = writeln!(out);
}

/// CPUs busy on average over `window` (what other processes on the machine use).
fn background_busy(window: Duration) -> Result<f64> {
    let a = tests::bench::passthrough::cpu::SystemCpu::read()?;
    std::thread::sleep(window);
    let b = tests::bench::passthrough::cpu::SystemCpu::read()?;
    Ok(a.busy_secs_until(&b).0 / window.as_secs_f64())
}

/// Holds each sample until the machine is quiet.
struct Gate {
    deadline: Instant,
    quiet_cpus: f64,
    /// CPUs busy in the second before each sample.
    backgrounds: Vec<f64>,
    /// Samples taken above `quiet_cpus` because the budget ran out.
    noisy: usize,
    /// Samples that overlapped bench_l7 (budget or retries exhausted).
    contended: usize,
}

impl Gate {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits until bench_l7 is gone and the machine's other load is at most `quiet_cpus`,
    /// or the budget is spent.
    fn wait_quiet(&mut self) -> Result<()> {
        let mut said = false;
        loop {
            let left = self.left();
            if !left.is_zero() && !peers::wait_until_gone("bench_l7", Duration::from_secs(30), left)
            {
                eprintln!("==> bench_l7 still running; wait budget spent, measuring anyway");
            }
            let busy = background_busy(Duration::from_secs(1))?;
            if busy <= self.quiet_cpus {
                self.backgrounds.push(busy);
                return Ok(());
            }
            if self.left().is_zero() {
                self.backgrounds.push(busy);
                self.noisy += 1;
                return Ok(());
            }
            if !said {
                eprintln!(
                    "==> machine busy ({busy:.2} CPUs by others); waiting for ≤ {:.2}",
                    self.quiet_cpus
                );
                said = true;
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__ingressd") {
        // The real ingressd entry point, so the bench needs no second binary.
        let cli = ingress::cli::Cli::parse_from(
            std::iter::once("ingressd".to_string()).chain(args[2..].iter().cloned()),
        );
        ingress::telemetry::init(
            cli.log_format,
            matches!(&cli.command, ingress::cli::Command::Run(r) if r.kernel_log),
        );
        return ingress::app::main(cli);
    }
    let o = Opts::parse(&args[1..])?;
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    ensure!(root, "run as root: the sockmap splice loads BPF");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        cpus >= 2,
        "needs CPUs 0 and 1 (client+backend vs proxy); this process may use {cpus}"
    );
    let needs_nginx = o.paths.contains(&Path::Nginx);
    let needs_haproxy = o.paths.contains(&Path::Haproxy) || o.paths.contains(&Path::HaproxyAuto);
    let mut pkgs = vec![];
    if needs_nginx {
        pkgs.extend(["nginx", "libnginx-mod-stream"]);
    }
    if needs_haproxy {
        pkgs.push("haproxy");
    }
    peers::ensure_packages(&pkgs)?;
    // Every thread of this process (client, backend) inherits CPU 0.
    tests::bench::pin_to_cpu(LOAD_CPU)?;
    let mut lab = Lab::start(&o)?;

    // Warm-up, and a check that every path works and really goes through its proxy.
    let mut suite = String::new();
    for &p in &o.paths {
        let m = lab.run(p, Case::Single, &o, 64 * MIB)?;
        suite = m.suite.clone();
        eprintln!(
            "==> warm-up {:<40} {:6.2} Gbit/s ({})",
            p.title(),
            m.amount as f64 * 8.0 / m.usage.elapsed / 1e9,
            m.suite
        );
    }

    // The machine is shared: wait for the L7 benchmark (same two cores) to be gone and for
    // the rest of the machine to be quiet before each sample, within one overall budget.
    let wait_deadline = Instant::now() + o.wait;
    let mut gate = Gate {
        deadline: wait_deadline,
        quiet_cpus: o.quiet_cpus,
        backgrounds: Vec::new(),
        noisy: 0,
        contended: 0,
    };
    let load_before = loadavg();
    let started = Instant::now();

    let mut samples: Vec<(Case, Path, Sample)> = Vec::new();
    for round in 0..o.rounds {
        for &case in &o.cases {
            let mut order = o.paths.clone();
            let n = order.len();
            order.rotate_left(round % n);
            for p in order {
                let mut tries = 0;
                let m = loop {
                    std::thread::sleep(o.pause);
                    gate.wait_quiet()?;
                    let m = lab.run(p, case, &o, o.single_bytes)?;
                    tries += 1;
                    // A sample that overlapped the L7 benchmark is retaken once it is gone.
                    if peers::processes_matching("bench_l7").is_empty() {
                        break m;
                    }
                    if tries >= 3 || gate.left().is_zero() {
                        gate.contended += 1;
                        break m;
                    }
                    eprintln!("==> bench_l7 started during this sample; retaking it");
                };
                let s = Sample {
                    amount: m.amount,
                    usage: m.usage,
                };
                match case {
                    Case::Rr => eprintln!(
                        "round {}/{} {:<6} {:<40} {:9.0} rt/s  system {:.2} CPU-µs/rt  proxy {:.2}",
                        round + 1,
                        o.rounds,
                        case.key(),
                        p.title(),
                        s.rate(),
                        s.usage.system / s.amount as f64 * 1e6,
                        s.usage.proxy / s.amount as f64 * 1e6
                    ),
                    _ => eprintln!(
                        "round {}/{} {:<6} {:<40} {:6.2} Gbit/s  system {:.3} CPU-s/GB  proxy {:.3}  endpoints {:.3}  kthreads {:.3}",
                        round + 1,
                        o.rounds,
                        case.key(),
                        p.title(),
                        s.gbps(),
                        s.per_gb(s.usage.system),
                        s.per_gb(s.usage.proxy),
                        s.per_gb(s.usage.endpoints),
                        s.per_gb(s.usage.kthreads)
                    ),
                }
                samples.push((case, p, s));
            }
        }
    }
    let load_after = loadavg();

    let mut out = String::new();
    let cmdline = args[1..].join(" ");
    let _ = writeln!(
        out,
        "## TLS passthrough: throughput and CPU\n\nCommand: `cargo xtask bench passthrough {cmdline}` (= `cargo run --release -p tests --bin bench_passthrough -- {cmdline}`)\n"
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "- Linux {}, {cpus} CPUs ({model}); load average before {load_before}, after {load_after}; {} rounds in {:.0} s{}",
        kernel.trim(),
        o.rounds,
        started.elapsed().as_secs_f64(),
        if gate.contended > 0 { format!("; bench_l7 WAS RUNNING during {} samples", gate.contended) } else { "; bench_l7 not running during any kept sample".into() }
    );
    let bg = &gate.backgrounds;
    let _ = writeln!(
        out,
        "- Background (the second before each sample, nothing of this benchmark running): median {:.2}, max {:.2} CPUs busy; each sample waited for ≤ {:.2}{}. Whatever else runs is inside the system figures.",
        median(bg.clone()),
        bg.iter().copied().fold(0.0, f64::max),
        o.quiet_cpus,
        if gate.noisy > 0 { format!(" ({} samples ran without reaching it: wait budget spent)", gate.noisy) } else { String::new() }
    );
    let _ = writeln!(
        out,
        "- Pinning: each proxy on CPU {PROXY_CPU} (ingressd: 1 tokio worker; nginx: worker_processes 1; HAProxy: nbthread 1); client and backend threads on CPU {LOAD_CPU}. The kernel does the sockmap redirect in softirq and kworker context on the CPU the bytes arrive on, which on loopback is the sender's: CPU {LOAD_CPU}, shared with the TLS endpoints."
    );
    let pipes = |p| lab.pipes(p).map_or("–".to_string(), |n| n.to_string());
    let _ = writeln!(
        out,
        "- HAProxy 2.6 runs twice: `option splice-auto` alone, and with `option splice-request` + `option splice-response` added (forced). Pipe fds held after the run (HAProxy keeps the pipes it spliced through): splice-auto {}, forced {}. \"× HAProxy\" compares with the forced-splice row.",
        pipes(Path::HaproxyAuto),
        pipes(Path::Haproxy)
    );
    let _ = writeln!(
        out,
        "- TLS 1.3 ({suite}), ECDSA P-256 backend certificate for {HOST} from a test CA, verified by the client through every path; client and backend are rustls (aws-lc-rs), one thread each, so the encryption cost is theirs and the same on every path. The client connects from 127.0.0.2; the backend checks whether it saw the client itself or a proxy."
    );
    let _ = writeln!(
        out,
        "- Windows start after the TLS handshakes (and the proxies' SNI routing); GB = 10^9 plaintext bytes. Single: 1 connection × {} MiB. Multi: {} connections × {} MiB. RR: 1 connection, 1-byte requests, {}-byte responses, one at a time, {:.1} s.",
        o.single_bytes / MIB,
        o.conns,
        o.multi_bytes / MIB,
        o.rr_response,
        o.rr_duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- Proxy CPU = utime+stime of all its processes and threads (CPU-time clocks). System CPU = /proc/stat user+nice+system+irq+softirq deltas over both CPUs, so it includes the TLS endpoints, the kernel's splice work and anything else running; \"system − direct\" is what the proxy path adds.\n"
    );
    let mut per_case = Vec::new();
    for &case in &o.cases {
        let rows: Vec<Row> = o
            .paths
            .iter()
            .map(|&p| {
                let s: Vec<Sample> = samples
                    .iter()
                    .filter(|(c, q, _)| *c == case && *q == p)
                    .map(|(_, _, s)| *s)
                    .collect();
                Row::of(p, case, &s)
            })
            .collect();
        match case {
            Case::Single => throughput_tables(
                &mut out,
                &format!("1 connection, {} MiB download", o.single_bytes / MIB),
                &rows,
            ),
            Case::Multi => throughput_tables(
                &mut out,
                &format!(
                    "{} concurrent connections, {} MiB each",
                    o.conns,
                    o.multi_bytes / MIB
                ),
                &rows,
            ),
            Case::Rr => rr_table(
                &mut out,
                &format!(
                    "Request/response on one connection (1-byte request, {}-byte response)",
                    o.rr_response
                ),
                &rows,
            ),
        }
        per_case.push((case, rows));
    }
    verdicts(&mut out, &per_case, o.conns);
    println!("{out}");
    if let Some(path) = &o.markdown {
        std::fs::write(path, &out).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("==> wrote {}", path.display());
    }
    Ok(())
}

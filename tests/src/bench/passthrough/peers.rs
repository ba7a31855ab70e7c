//! The proxies under test, each a child process in the foreground with its own config in a
//! temp dir, listening on loopback, pinned to one CPU, and stopped by a guard (and by
//! PR_SET_PDEATHSIG if this process dies without running it).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The SNI the passthrough routes match.
pub const HOST: &str = "passthrough.bench.test";

/// A proxy process tree, killed when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
    /// The root and its descendants (nginx: master + worker), found once it is up.
    pub pids: Vec<u32>,
    /// bpffs directory to remove after the process is gone.
    pin_dir: Option<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` pinned to `cpu`, output to `log`.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        cpu: usize,
        log: &Path,
        pin_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        // SAFETY: between fork and exec only async-signal-safe syscalls (prctl,
        // sched_setaffinity) run, on memory prepared before the fork.
        #[allow(unsafe_code)]
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            cmd.pre_exec(move || {
                // The spawning thread is the bench's main thread, alive for the whole run.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0
                    || libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name,
            pids: vec![child.id()],
            child: Some(child),
            log: log.to_path_buf(),
            pin_dir,
        })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "{} exited ({status}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_text()
                );
            }
        }
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections (and `ready` holds), then records the
    /// process tree.
    pub fn wait_listening(
        &mut self,
        addr: SocketAddr,
        limit: Duration,
        mut ready: impl FnMut(&Proc) -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() && ready(self)?
            {
                break;
            }
            if start.elapsed() > limit {
                bail!(
                    "{} not ready on {addr} after {limit:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // nginx forks its worker after binding; give it a moment to appear.
        std::thread::sleep(Duration::from_millis(200));
        self.pids = crate::bench::passthrough::cpu::process_tree(self.pids[0]);
        Ok(())
    }

    /// CPU seconds of the whole tree so far.
    pub fn cpu_secs(&self) -> f64 {
        crate::bench::passthrough::cpu::tree_cpu_secs(&self.pids)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = self.pin_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `n` distinct free loopback ports (bound, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(ls
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// nginx `stream` with `ssl_preread`, routing the bench SNI to `backend`.
pub fn nginx(dir: &Path, listen: SocketAddr, backend: SocketAddr, cpu: usize) -> Result<Proc> {
    let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
    if !module.exists() {
        bail!(
            "{} missing (apt-get install libnginx-mod-stream)",
            module.display()
        );
    }
    let d = dir.display();
    let conf = format!(
        r#"load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
stream {{
    map $ssl_preread_server_name $pt_backend {{
        {HOST} {backend};
        default 127.0.0.1:9;
    }}
    server {{
        listen {listen};
        ssl_preread on;
        # Pass a client's FIN on instead of closing both sides, as the other proxies do.
        proxy_half_close on;
        proxy_pass $pt_backend;
    }}
}}
"#,
        module = module.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-c")
        .arg(&path);
    let mut p = Proc::spawn("nginx", cmd, cpu, &dir.join("nginx.out"), None)?;
    p.wait_listening(listen, Duration::from_secs(10), |_| Ok(true))?;
    Ok(p)
}

/// HAProxy `mode tcp`, routing on `req.ssl_sni`, with `option splice-auto`, and when
/// `forced` also `option splice-request` + `option splice-response` (splice every transfer:
/// on loopback HAProxy 2.6's splice-auto heuristic was seen never to engage).
pub fn haproxy(
    dir: &Path,
    listen: SocketAddr,
    backend: SocketAddr,
    forced: bool,
    cpu: usize,
) -> Result<Proc> {
    let force = if forced {
        "    option splice-request\n    option splice-response\n"
    } else {
        ""
    };
    let conf = format!(
        r#"global
    nbthread 1
    maxconn 4096

defaults
    mode tcp
    option splice-auto
{force}    timeout connect 5s
    timeout client 120s
    timeout server 120s

frontend pt
    bind {listen}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req.ssl_hello_type 1 }}
    use_backend b if {{ req.ssl_sni -i {HOST} }}

backend b
    server s1 {backend}
"#
    );
    let tag = if forced { "forced" } else { "auto" };
    let path = dir.join(format!("haproxy-{tag}.cfg"));
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    let name = if forced {
        "haproxy (forced splice)"
    } else {
        "haproxy (splice-auto)"
    };
    let mut p = Proc::spawn(
        name,
        cmd,
        cpu,
        &dir.join(format!("haproxy-{tag}.out")),
        None,
    )?;
    p.wait_listening(listen, Duration::from_secs(10), |_| Ok(true))?;
    Ok(p)
}

/// Pipe file descriptors held by `pids` (HAProxy keeps the pipes it spliced through).
pub fn pipe_fds(pids: &[u32]) -> usize {
    pids.iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .flat_map(|d| d.flatten())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// Manifests for `ingressd run --manifests`: the default IngressClass, a Service with a
/// static endpoint, and an ssl-passthrough Ingress for [`HOST`].
pub fn write_manifests(dir: &Path, backend: SocketAddr) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let head =
        crate::ingressd::class_and_service_yaml("tls-backend", &backend.to_string(), "https", 443);
    let ingress = crate::ingressd::passthrough_ingress_yaml(HOST, "tls-backend", 443);
    std::fs::write(dir.join("passthrough.yaml"), head + &ingress)?;
    Ok(())
}

/// Which passthrough engine an ingressd must report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Kernel,
    Userspace,
}

impl Engine {
    /// The start-up log line naming the engine.
    pub fn log_marker(self) -> &'static str {
        match self {
            Engine::Kernel => "TLS passthrough: in-kernel sockmap splice",
            Engine::Userspace => "TLS passthrough: userspace copy",
        }
    }
}

/// Runs `ingressd run --manifests` (the binary `exe` with `prefix` arguments before `run`)
/// on loopback, waits for /readyz and the log line naming `engine`.
#[allow(clippy::too_many_arguments)]
pub fn ingressd(
    exe: &Path,
    prefix: &[String],
    dir: &Path,
    manifests: &Path,
    https: SocketAddr,
    ports: (u16, u16),
    engine: Engine,
    cpu: usize,
) -> Result<Proc> {
    let tag = match engine {
        Engine::Kernel => "kernel",
        Engine::Userspace => "userspace",
    };
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(crate::netns::owned("benchpt", tag));
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.1));
    let mut cmd = Command::new(exe);
    cmd.args(prefix)
        .arg("run")
        .arg("--manifests")
        .arg(manifests)
        .arg("--https-addr")
        .arg(https.to_string())
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{}", ports.0))
        .arg("--admin-addr")
        .arg(admin.to_string())
        .arg("--pin-dir")
        .arg(&pin_dir)
        .arg("--access-log")
        .arg("false")
        .arg("--drain-timeout")
        .arg("1s")
        .env("RUST_LOG", "info")
        // One runtime worker, like nginx's one worker and HAProxy's one thread (tokio would
        // pick one anyway from the single-CPU affinity).
        .env("TOKIO_WORKER_THREADS", "1");
    if engine == Engine::Userspace {
        cmd.arg("--passthrough-userspace");
    }
    let name = match engine {
        Engine::Kernel => "ingressd (kernel splice)",
        Engine::Userspace => "ingressd (userspace copy)",
    };
    let mut p = Proc::spawn(
        name,
        cmd,
        cpu,
        &dir.join(format!("ingressd-{tag}.log")),
        Some(pin_dir),
    )?;
    p.wait_listening(https, Duration::from_secs(30), |p| {
        let log = p.log_text();
        if log.contains("TLS passthrough:") && !log.contains(engine.log_marker()) {
            bail!("{} picked another engine; log:\n{log}", p.name);
        }
        Ok(log.contains(engine.log_marker()) && readyz(admin))
    })?;
    Ok(p)
}

/// GET /readyz answers 200.
fn readyz(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.take(4096).read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

/// Whether a dpkg package is installed.
pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the missing packages without letting them start system services (a temporary
/// policy-rc.d answering "forbidden" unless one exists).
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing {}", missing.join(" "));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = install()
        || (Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success())
            && install());
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    if !ok {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

/// Pids of other processes whose command line mentions `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(needle))
            })
        })
        .collect()
}

/// Waits (polling every `every`) until no process mentions `needle`, up to `limit`; returns
/// whether it is clear.
pub fn wait_until_gone(needle: &str, every: Duration, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let pids = processes_matching(needle);
        if pids.is_empty() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        eprintln!(
            "==> {needle} is running (pids {pids:?}); waiting ({:.0}s so far, up to {:.0}s)",
            start.elapsed().as_secs_f64(),
            limit.as_secs_f64()
        );
        std::thread::sleep(every);
    }
}

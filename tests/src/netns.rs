//! Network namespaces and veth pairs that tests create and always delete, even on panic.
use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

/// Runs a command line (split on whitespace), failing with its stderr.
pub fn sh(cmd: &str) -> Result<String> {
    let mut parts = cmd.split_whitespace();
    let prog = parts.next().context("empty command")?;
    let out = Command::new(prog)
        .args(parts)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with a clear reason when this process cannot run privileged tests.
pub fn require_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("privileged test: needs root (BPF, XDP, network namespaces); run via `cargo xtask test` as root");
    }
    if !std::path::Path::new("/sys/fs/bpf").exists() {
        bail!("privileged test: bpffs is not mounted at /sys/fs/bpf");
    }
    sh("ip netns list").context("privileged test: iproute2 `ip netns` unavailable")?;
    Ok(())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The name of a namespace or pin directory this process creates: `xit-<tag>-<pid>-<suffix>`.
/// Guards delete them on drop; a run killed before that leaves them behind, and
/// `cargo xtask test` removes those whose pid is gone (its parser lives in xtask/src/test.rs).
pub fn owned(tag: &str, suffix: &str) -> String {
    debug_assert!(
        !tag.contains('-'),
        "the pid is found by position: no '-' in the tag"
    );
    format!("xit-{tag}-{}-{suffix}", std::process::id())
}

/// Like [`owned`], with a suffix unique in this process.
pub fn owned_unique(tag: &str) -> String {
    owned(tag, &SEQ.fetch_add(1, Ordering::Relaxed).to_string())
}

/// A named network namespace, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates a namespace with loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = owned_unique(prefix);
        sh(&format!("ip netns add {name}"))?;
        let ns = NetNs { name };
        ns.run("ip link set lo up")?;
        Ok(ns)
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, cmd: &str) -> Result<String> {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// Moves the calling thread into this namespace until the guard drops. Sockets created
    /// meanwhile stay in the namespace.
    pub fn enter(&self) -> Result<NsGuard> {
        let home = File::open("/proc/thread-self/ns/net").context("opening current netns")?;
        let target =
            File::open(format!("/var/run/netns/{}", self.name)).context("opening netns")?;
        setns(&target)?;
        Ok(NsGuard { home })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

fn setns(f: &File) -> Result<()> {
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Returns the thread to its original namespace on drop.
pub struct NsGuard {
    home: File,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = setns(&self.home);
    }
}

/// Runs `f` on a fresh thread inside `ns` and returns its result.
pub fn in_ns<T: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || -> Result<T> {
        let target = File::open(&path).context("opening netns")?;
        setns(&target)?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// An address added to `lo` of this namespace for one test, removed on drop: a local address
/// that is not loopback (for what refuses loopback, such as ExternalName Services).
pub struct LoAddress {
    pub ip: std::net::IpAddr,
}

impl LoAddress {
    /// Adds `ip`/32 to `lo`, replacing a copy left by an interrupted run.
    pub fn add(ip: std::net::IpAddr) -> Result<Self> {
        require_privileges()?;
        let _ = sh(&format!("ip addr del {ip}/32 dev lo"));
        sh(&format!("ip addr add {ip}/32 dev lo"))?;
        Ok(LoAddress { ip })
    }
}

impl Drop for LoAddress {
    fn drop(&mut self) {
        let _ = sh(&format!("ip addr del {}/32 dev lo", self.ip));
    }
}

//! Runs code on a thread holding exactly a given set of capabilities, the way a root container
//! with `capabilities: {drop: [ALL], add: [...]}` holds them: effective, permitted and
//! bounding sets all reduced to the set, inheritable empty, uid still 0. Linux keeps
//! credentials per thread, so the rest of the test process keeps its own.
use std::{fs::File, io, path::Path, thread};

use anyhow::{anyhow, bail, Context, Result};

/// Kubernetes capability names (without `CAP_`) and their numbers (linux/capability.h).
const NAMES: &[(&str, u32)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

/// The number of a capability named as in a Kubernetes securityContext (`BPF` or `CAP_BPF`).
pub fn number(name: &str) -> Option<u32> {
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A capability set as the 64-bit mask `/proc/*/status` shows.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1u64 << c))
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> Result<u32> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?;
    Ok(text.trim().parse()?)
}

fn thread_set(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} line"))?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

/// The calling thread's effective set.
pub fn effective() -> Result<u64> {
    thread_set("CapEff:")
}

/// The calling thread's permitted set: a thread can only keep capabilities it holds.
pub fn permitted() -> Result<u64> {
    thread_set("CapPrm:")
}

/// Reduces the calling thread to exactly `keep` (bounding set first, while CAP_SETPCAP is
/// still held), then checks the result. Irreversible for the thread.
fn restrict_current_thread(keep: &[u32]) -> Result<()> {
    let missing = mask(keep) & !permitted()?;
    if missing != 0 {
        bail!("this process does not hold the capabilities {missing:#x} it should keep");
    }
    for cap in 0..=last_cap()? {
        if keep.contains(&cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and changes only this thread.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            bail!(
                "dropping capability {cap} from the bounding set: {}",
                io::Error::last_os_error()
            );
        }
    }
    let mut data = [CapData::default(); 2];
    for &cap in keep {
        let slot = &mut data[(cap / 32) as usize];
        slot.effective |= 1 << (cap % 32);
        slot.permitted |= 1 << (cap % 32);
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset with a v3 header reads two CapData structs; pid 0 is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        bail!("capset: {}", io::Error::last_os_error());
    }
    let now = effective()?;
    if now != mask(keep) {
        bail!(
            "effective set is {now:#x} after capset, wanted {:#x}",
            mask(keep)
        );
    }
    Ok(())
}

/// Runs `f` on a new thread that first enters the network namespace at `netns` (a path such as
/// `/var/run/netns/x`, entered while still fully privileged) and then drops to exactly `keep`.
pub fn run_with<T: Send>(
    keep: &[u32],
    netns: Option<&Path>,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            if let Some(path) = netns {
                let ns = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                // SAFETY: setns on a valid namespace fd affects only the calling thread.
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET)
                };
                if rc != 0 {
                    bail!("setns: {}", io::Error::last_os_error());
                }
            }
            restrict_current_thread(keep)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("thread with reduced capabilities panicked"))?
    })
}

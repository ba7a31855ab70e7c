//! CPU time from /proc: system-wide busy time (/proc/stat), a process tree's utime+stime,
//! one thread's, and the kernel's worker threads (kworker, ksoftirqd), where the sockmap
//! redirect work runs.
use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};

/// Clock ticks per second of the utime/stime fields (`sysconf(_SC_CLK_TCK)`).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The aggregate `cpu` line of /proc/stat, in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemCpu {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl SystemCpu {
    /// Reads /proc/stat now.
    pub fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Self::parse(&text)
    }

    /// Parses the first (`cpu `) line of /proc/stat text.
    pub fn parse(text: &str) -> Result<Self> {
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no aggregate cpu line in /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse::<u64>())
            .collect::<Result<_, _>>()
            .context("bad /proc/stat cpu line")?;
        if v.len() < 8 {
            bail!("short /proc/stat cpu line: {line}");
        }
        Ok(SystemCpu {
            user: v[0],
            nice: v[1],
            system: v[2],
            idle: v[3],
            iowait: v[4],
            irq: v[5],
            softirq: v[6],
            steal: v[7],
        })
    }

    /// user+nice+system+irq+softirq: time the CPUs spent working (guest time is already
    /// inside user; steal and idle are not work done here).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    /// Busy seconds between `self` (earlier) and `later`, and the softirq part of them.
    pub fn busy_secs_until(&self, later: &SystemCpu) -> (f64, f64) {
        let t = clk_tck();
        (
            later.busy().saturating_sub(self.busy()) as f64 / t,
            later.softirq.saturating_sub(self.softirq) as f64 / t,
        )
    }
}

/// Fields of /proc/PID/stat after the command name: (ppid, utime, stime, comm).
fn parse_stat(text: &str) -> Option<(u32, u64, u64, String)> {
    let f = ingress::proxy::process_stats::StatLine::parse(text)?;
    Some((
        f.field(4)?,
        f.field(14)?,
        f.field(15)?,
        f.comm().to_string(),
    ))
}

fn stat_of(path: &str) -> Option<(u32, u64, u64, String)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// CPU seconds (utime+stime, nanosecond-exact) of process `pid` and all its threads, through
/// its CPU-time clock; 0 if it is gone.
pub fn process_cpu_secs(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: plain syscalls writing into locals.
    #[allow(unsafe_code)]
    unsafe {
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            return 0.0;
        }
        clock_secs(clock)
    }
}

/// CPU seconds of the calling thread.
pub fn this_thread_cpu_secs() -> f64 {
    clock_secs(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// A thread's CPU-time clock, to read from other threads.
#[derive(Clone, Copy, Debug)]
pub struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    /// The calling thread's clock.
    pub fn current() -> Option<Self> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid for the calling thread; the result goes into
        // a local.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        (rc == 0).then_some(ThreadClock(clock))
    }

    /// CPU seconds of that thread so far (0 once it has exited).
    pub fn secs(&self) -> f64 {
        clock_secs(self.0)
    }
}

fn clock_secs(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local timespec.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Every process: pid -> (ppid, ticks, comm).
fn all_processes() -> HashMap<u32, (u32, u64, String)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, u, s, comm)) = stat_of(&format!("/proc/{pid}/stat")) {
            out.insert(pid, (ppid, u + s, comm));
        }
    }
    out
}

/// `root` and all its descendants.
pub fn process_tree(root: u32) -> Vec<u32> {
    let all = all_processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            all.iter()
                .filter(|(_, (ppid, _, _))| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// CPU seconds summed over `pids`.
pub fn tree_cpu_secs(pids: &[u32]) -> f64 {
    pids.iter().map(|p| process_cpu_secs(*p)).sum()
}

/// Ticks of each kernel worker thread (kworker*, ksoftirqd*), by pid.
#[derive(Clone, Debug, Default)]
pub struct KernelThreads(HashMap<u32, u64>);

impl KernelThreads {
    /// Reads every kworker and ksoftirqd thread now.
    pub fn read() -> Self {
        KernelThreads(
            all_processes()
                .into_iter()
                .filter(|(_, (ppid, _, comm))| {
                    *ppid == 2 && (comm.starts_with("kworker") || comm.starts_with("ksoftirqd"))
                })
                .map(|(pid, (_, ticks, _))| (pid, ticks))
                .collect(),
        )
    }

    /// Seconds they ran between `self` (earlier) and `later`; a worker born in between counts
    /// from zero, one that died in between is lost (rare, and only shortens the figure).
    pub fn secs_until(&self, later: &KernelThreads) -> f64 {
        let ticks: u64 = later
            .0
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.0.get(pid).copied().unwrap_or(0)))
            .sum();
        ticks as f64 / clk_tck()
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_and_pid_stat() {
        let s =
            SystemCpu::parse("cpu  10 1 20 300 4 5 6 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n").unwrap();
        assert_eq!(s.busy(), 10 + 1 + 20 + 5 + 6);
        assert!(SystemCpu::parse("intr 1 2\n").is_err());
        let line = "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 0 0 20 0 1 0 5 0 0";
        let (ppid, u, s, comm) = parse_stat(line).unwrap();
        assert_eq!((ppid, u, s, comm.as_str()), (7, 11, 22, "a b) c"));
    }
}

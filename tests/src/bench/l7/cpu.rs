//! CPU time of a process tree from `/proc`: utime+stime (clock ticks, all threads, from
//! `/proc/PID/stat`) summed over the process and its descendants, and, as a finer cross-check,
//! the scheduler's run time of every live thread (`/proc/PID/task/TID/schedstat`, ns).
use std::{fs, io};

/// CPU used so far by a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// utime + stime of every process in the tree, in microseconds (tick resolution).
    pub stat_us: u64,
    /// Scheduler run time of every live thread in the tree, in nanoseconds.
    pub sched_ns: u64,
}

impl CpuSample {
    /// CPU used between `earlier` and `self`: (stat µs, schedstat µs).
    pub fn since(&self, earlier: &CpuSample) -> (f64, f64) {
        (
            self.stat_us.saturating_sub(earlier.stat_us) as f64,
            self.sched_ns.saturating_sub(earlier.sched_ns) as f64 / 1000.0,
        )
    }
}

/// Fields of `/proc/PID/stat` the benchmark needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// User time, clock ticks.
    pub utime: u64,
    /// System time, clock ticks.
    pub stime: u64,
}

/// Parses a `/proc/PID/stat` line (fields 4, 14 and 15 of proc(5)).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let f = ingress::proxy::process_stats::StatLine::parse(text)?;
    Some(Stat {
        ppid: f.field(4)?,
        utime: f.field(14)?,
        stime: f.field(15)?,
    })
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `root` and every live descendant of it.
pub fn process_tree(root: u32) -> io::Result<Vec<u32>> {
    let mut parent_of = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(s) = read_stat(pid) {
            parent_of.push((pid, s.ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    Ok(tree)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn sched_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU used so far by `root` and its descendants.
pub fn sample(root: u32) -> io::Result<CpuSample> {
    let hz = clock_ticks_per_second();
    let mut out = CpuSample::default();
    let mut found = false;
    for pid in process_tree(root)? {
        if let Some(s) = read_stat(pid) {
            found |= pid == root;
            out.stat_us += (s.utime + s.stime) * 1_000_000 / hz;
            out.sched_ns += sched_ns(pid);
        }
    }
    if !found {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {root} is gone"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "4242 (nginx: worker (x) ) S 4241 4241 4241 0 -1 4194624 100 0 0 0 \
                    1234 567 0 0 20 0 1 0 100 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 4241,
                utime: 1234,
                stime: 567
            })
        );
        assert_eq!(parse_stat("12 (x) S"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_has_cpu_and_is_in_its_tree() {
        let me = std::process::id();
        // Burn a little CPU so both counters move from zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let s = sample(me).unwrap();
        assert!(s.sched_ns > 0);
        assert!(process_tree(me).unwrap().contains(&me));
        assert!(sample(u32::MAX - 1).is_err());
    }
}

/// Busy and total jiffies of one CPU from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the `cpuN` lines of `/proc/stat` (idle and iowait count as not busy).
pub fn parse_core_times(text: &str) -> Vec<CoreTimes> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            CoreTimes {
                busy: total.saturating_sub(idle),
                total,
            }
        })
        .collect()
}

/// Per-CPU times now.
pub fn core_times() -> Vec<CoreTimes> {
    parse_core_times(&fs::read_to_string("/proc/stat").unwrap_or_default())
}

/// Busy fraction (0..=1) of each CPU between two [`core_times`] readings.
pub fn busy_between(before: &[CoreTimes], after: &[CoreTimes]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.total.saturating_sub(b.total);
            if total == 0 {
                0.0
            } else {
                a.busy.saturating_sub(b.busy) as f64 / total as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod core_tests {
    use super::*;

    #[test]
    fn per_core_busy() {
        let a = parse_core_times(
            "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1",
        );
        let b = parse_core_times(
            "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 55 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 90 0 0 0 0 0 0\nintr 1",
        );
        assert_eq!(a.len(), 2);
        assert_eq!(busy_between(&a, &b), vec![1.0, 0.0]);
        assert!(!core_times().is_empty());
    }
}

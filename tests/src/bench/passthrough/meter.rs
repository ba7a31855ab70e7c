//! One measurement window: wall time, and CPU time of the whole system, the proxy's process
//! tree, the kernel's worker threads, and the two TLS endpoints (client and backend).
use std::time::Instant;

use anyhow::Result;

use super::cpu::{this_thread_cpu_secs, tree_cpu_secs, KernelThreads, SystemCpu, ThreadClock};

/// What to read at each end of a window. Snapshots are taken on the client thread.
#[derive(Clone, Debug)]
pub struct Meter {
    /// The proxy's processes (empty for the direct path).
    pub proxy_pids: Vec<u32>,
    /// The backend thread's CPU clock.
    pub backend: ThreadClock,
}

/// The counters at one instant.
#[derive(Clone, Debug)]
pub struct Snap {
    at: Instant,
    system: SystemCpu,
    proxy: f64,
    kthreads: KernelThreads,
    backend: f64,
    client: f64,
}

/// CPU and wall seconds spent in a window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub elapsed: f64,
    /// System-wide busy time (user+nice+system+irq+softirq of /proc/stat).
    pub system: f64,
    /// Its softirq part (ticks that landed in softirq context, whoever was running).
    pub softirq: f64,
    /// utime+stime of the proxy's processes, all threads.
    pub proxy: f64,
    /// kworker and ksoftirqd threads.
    pub kthreads: f64,
    /// Client thread + backend thread (TLS and socket I/O of both ends).
    pub endpoints: f64,
}

impl Meter {
    /// Reads every counter; call it on the client thread.
    pub fn snap(&self) -> Result<Snap> {
        let kthreads = KernelThreads::read();
        let proxy = tree_cpu_secs(&self.proxy_pids);
        let backend = self.backend.secs();
        let client = this_thread_cpu_secs();
        let system = SystemCpu::read()?;
        Ok(Snap {
            at: Instant::now(),
            system,
            proxy,
            kthreads,
            backend,
            client,
        })
    }
}

impl Snap {
    /// The window from `self` to `later`.
    pub fn until(&self, later: &Snap) -> Usage {
        let (system, softirq) = self.system.busy_secs_until(&later.system);
        Usage {
            elapsed: later.at.duration_since(self.at).as_secs_f64(),
            system,
            softirq,
            proxy: (later.proxy - self.proxy).max(0.0),
            kthreads: self.kthreads.secs_until(&later.kthreads),
            endpoints: (later.backend - self.backend).max(0.0)
                + (later.client - self.client).max(0.0),
        }
    }
}

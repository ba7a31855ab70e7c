//! Log records of the kernel programs (aya-log), off unless `--kernel-log` is given.
//!
//! The programs test a load-time constant (`AYA_LOG_LEVEL` in `.rodata`) before each log
//! statement; loaded with it at 0 the verifier removes the statements, so a production load
//! pays nothing. With it on, records go through a ring buffer to the `log` facade, which the
//! tracing subscriber picks up under targets `ingress::programs::*`.
use aya::{Ebpf, EbpfLoader};
use aya_log::{EbpfLogger, Level};
use thiserror::Error;

/// The global the kernel programs read their log level from (aya-log's contract).
const LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";
/// The tracing target prefix of kernel records (the module path inside the BPF object).
pub const TARGET: &str = "ingress::programs";

static OFF: u8 = 0;
static ALL: u8 = Level::Trace as u8;

/// Sets the kernel log level of `loader`: every statement on, or all of them compiled out.
/// Every load of the object must call this: aya-log's default level logs everything.
pub fn configure(loader: &mut EbpfLoader<'_>, enabled: bool) {
    loader.override_global(LEVEL_GLOBAL, if enabled { &ALL } else { &OFF }, true);
}

/// Failure to start forwarding kernel log records.
#[derive(Debug, Error)]
pub enum KernelLogError {
    #[error("kernel log ring buffer: {0}")]
    Logger(#[from] aya_log::Error),
}

/// How often the ring buffer is drained. Polling (rather than epoll on its fd) keeps this
/// free of `unsafe` fd registration; records wait at most this long, and the 128 KiB ring
/// holds far more than a debugging session produces in that time.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Takes the log ring buffer out of `ebpf` and forwards its records until the runtime stops.
/// Must run inside a tokio runtime.
pub fn spawn(ebpf: &mut Ebpf) -> Result<tokio::task::JoinHandle<()>, KernelLogError> {
    let mut logger = EbpfLogger::init(ebpf)?;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            logger.flush();
        }
    }))
}

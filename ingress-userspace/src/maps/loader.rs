//! Loads the kernel object, adopts or creates the pinned maps, attaches the XDP program through
//! pinned links, and takes it all down again.
//!
//! Pin layout under the pin directory (default `/sys/fs/bpf/ingressd`):
//! `maps_v<MAPS_VERSION>/<MAP>` and `links/xdp_<ifname>`. A new process adopts maps of the same
//! version and swaps its program into existing links (`bpf_link_update`), so the XDP path keeps
//! forwarding across restarts. Maps of another version are never adopted: they are removed
//! once the links point at the new program.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLinkId,
        ProgramError, ProgramFd, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use ingress_common::{conntrack::buckets_for, l4::MAGLEV_RING_SIZE, maps as names};
use thiserror::Error;
use tracing::{info, warn};

use super::{counters::Counters, writer::AyaMapWriter, MapError, OBJECT};

/// Name of the XDP program in the object.
pub const XDP_PROGRAM: &str = "xdp_lb";
/// Room in EDGE_DESTS for guarded listeners, besides one entry per VIP.
pub const EDGE_LISTENER_SLOTS: u32 = 256;
/// The programs the XDP program tail-calls, by their `JUMPS` slot.
pub const JUMP_PROGRAMS: &[(u32, &str)] = &[
    (names::JUMP_ICMP, "xdp_icmp"),
    (names::JUMP_TOO_BIG, "xdp_too_big"),
    (names::JUMP_FLOW, "xdp_flow"),
    (names::JUMP_EDGE, "xdp_edge"),
];

/// A loader failure, with the step that failed.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("loading the BPF object (is this root with bpffs mounted at /sys/fs/bpf?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("{step}: {source}")]
    Program {
        step: String,
        source: aya::programs::ProgramError,
    },
    #[error("{step}: {source}")]
    Io {
        step: String,
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Link {
        step: String,
        source: aya::programs::links::LinkError,
    },
    #[error("{step}: {source}")]
    Pin {
        step: String,
        source: aya::pin::PinError,
    },
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("unknown interface {0}")]
    UnknownInterface(String),
}

/// How to load.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// Where to pin maps and links; `None` loads private, unpinned maps (tests).
    pub pin_dir: Option<PathBuf>,
    pub max_vips: u32,
    pub conntrack_entries: u32,
    /// Turn on the kernel programs' log statements (see [`super::kernel_log`]).
    pub kernel_log: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            pin_dir: None,
            max_vips: names::DEFAULT_MAX_VIPS,
            conntrack_entries: names::DEFAULT_CONNTRACK_ENTRIES,
            kernel_log: false,
        }
    }
}

/// The loaded object and what is attached.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// Interface name -> attach mode, and the link this process still holds (a freshly pinned
    /// link is handed to bpffs and not held).
    attached: BTreeMap<String, (XdpMode, Option<XdpLinkId>)>,
    /// Pinned maps adopted with another capacity than this process asked for.
    resized: Vec<CapacityMismatch>,
}

/// A pinned map whose capacity differs from the one asked for: the pinned map is kept (its
/// state is live traffic), so the new size only takes effect after `ingressd cleanup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapacityMismatch {
    pub map: &'static str,
    pub pinned: u32,
    pub wanted: u32,
}

/// Compares the capacity of each pinned map in `wanted` with the requested one.
fn capacity_mismatches(maps: &Path, wanted: &[(&'static str, u32)]) -> Vec<CapacityMismatch> {
    wanted
        .iter()
        .filter_map(|(map, want)| {
            let info = aya::maps::MapInfo::from_pin(maps.join(map)).ok()?;
            (info.max_entries() != *want).then_some(CapacityMismatch {
                map,
                pinned: info.max_entries(),
                wanted: *want,
            })
        })
        .collect()
}

/// Directory of the maps of the current layout version.
pub fn maps_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("maps_v{}", names::MAPS_VERSION))
}

fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

fn link_path(pin_dir: &Path, ifname: &str) -> PathBuf {
    links_dir(pin_dir).join(format!("xdp_{ifname}"))
}

fn io_err(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let step = step.into();
    move |source| LoadError::Io { step, source }
}

/// Maps that belong to the L4 path and are pinned so they survive restarts. Counters are
/// pinned too so `ingressd inspect` and `bpftool` read the live values.
const PINNED_MAPS: &[&str] = &[
    names::VIPS,
    names::VIP_ADDRS,
    names::VIP_FILTER,
    names::BACKENDS,
    names::BACKEND_HOPS,
    names::MAGLEV,
    names::CONNTRACK,
    names::REPLY_NAT,
    names::LB_CONFIG,
    names::STATS,
    names::VIP_STATS,
    names::EDGE_DESTS,
    names::EDGE_FILTER,
    names::EDGE_CONFIG,
    names::BLOCK_V4,
    names::BLOCK_V6,
    names::SYN_RATE,
    names::RETIRED,
    // Pinned so its slot outlives this process: the kernel empties a program array when its
    // last user reference goes, and the pinned link keeps forwarding after an exit.
    names::JUMPS,
    // The tail-called programs read what xdp_lb left here; while a restart swaps programs,
    // an old xdp_lb tail-calls a new xdp_flow, so both must see one map.
    names::SCRATCH,
];

/// Whether `ifname` is a virtual device (veth, bridge, tunnel): sysfs files those under
/// `/sys/devices/virtual`.
fn is_virtual(ifname: &str) -> bool {
    std::fs::canonicalize(format!("/sys/class/net/{ifname}"))
        .is_ok_and(|p| p.starts_with("/sys/devices/virtual"))
}

/// The XDP program `name` of the object.
fn xdp_program<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, LoadError> {
    ebpf.program(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program {
            step: "program type".into(),
            source,
        })
}

/// Loads (verifies) the XDP program `name` of the object.
fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, LoadError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program {
            step: "program type".into(),
            source,
        })?;
    retry_interrupted(|| prog.load(), verifier_interrupted, name).map_err(|source| {
        LoadError::Program {
            step: format!("verifying {name}"),
            source,
        }
    })?;
    Ok(prog)
}

/// Whether a program load failed only because the verifier was interrupted: it gives up with
/// EAGAIN when a signal arrives for the process while it works (SIGCHLD of a child, in a
/// process with a handler for it), and only a retry helps.
pub(crate) fn verifier_interrupted(e: &ProgramError) -> bool {
    matches!(e, ProgramError::LoadError { io_error, .. }
        if io_error.raw_os_error() == Some(libc::EAGAIN))
}

/// Runs `load` until it succeeds, fails for another reason than `interrupted`, or was
/// interrupted `LOAD_TRIES` times in a row.
pub(crate) fn retry_interrupted<T, E>(
    mut load: impl FnMut() -> Result<T, E>,
    interrupted: impl Fn(&E) -> bool,
    name: &str,
) -> Result<T, E> {
    let mut tries = 0;
    loop {
        match load() {
            Err(e) if interrupted(&e) && tries < LOAD_TRIES => {
                tries += 1;
                warn!(
                    program = name,
                    tries, "verifier interrupted by a signal; loading again"
                );
            }
            other => return other,
        }
    }
}

/// Loads of one program tried while the verifier keeps being interrupted.
const LOAD_TRIES: u32 = 5;

/// A descriptor of the loaded program `prog` (named `name`) that outlives the borrow of the
/// object it came from.
fn owned_fd(prog: &Xdp, name: &str) -> Result<ProgramFd, LoadError> {
    prog.fd()
        .map_err(|source| LoadError::Program {
            step: format!("{name} fd"),
            source,
        })?
        .try_clone()
        .map_err(io_err(format!("{name} fd")))
}

/// Loads the programs the XDP program tail-calls and puts each in its `JUMPS` slot.
fn load_jumps(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let map_err = |op| {
        move |source| MapError::Map {
            op,
            map: names::JUMPS,
            source,
        }
    };
    let mut fds = Vec::with_capacity(JUMP_PROGRAMS.len() + 1);
    // xdp_flow hands packets back to the (already loaded) forwarding program.
    fds.push((
        names::JUMP_LB,
        owned_fd(xdp_program(ebpf, XDP_PROGRAM)?, XDP_PROGRAM)?,
    ));
    for &(slot, name) in JUMP_PROGRAMS {
        fds.push((slot, owned_fd(load_xdp(ebpf, name)?, name)?));
    }
    let map = ebpf
        .map_mut(names::JUMPS)
        .ok_or(MapError::Missing(names::JUMPS))?;
    let mut jumps = aya::maps::ProgramArray::try_from(map).map_err(map_err("open"))?;
    for (slot, fd) in &fds {
        jumps.set(*slot, fd, 0).map_err(map_err("set slot"))?;
    }
    Ok(())
}

impl Datapath {
    /// Loads the object, adopting pinned maps of the current layout version if present.
    pub fn load(opts: &LoaderOptions) -> Result<Self, LoadError> {
        Self::load_object(opts, OBJECT)
    }

    /// Like [`Datapath::load`] with another build of the kernel object (benchmarks time two
    /// builds side by side in one process).
    pub fn load_object(opts: &LoaderOptions, object: &[u8]) -> Result<Self, LoadError> {
        raise_memlock();
        let mut loader = EbpfLoader::new();
        super::kernel_log::configure(&mut loader, opts.kernel_log);
        // Two ring slots per array element (see ingress_common::maps::MAGLEV).
        let ring_entries = opts.max_vips.saturating_mul(MAGLEV_RING_SIZE).div_ceil(2);
        let sizes = [
            (names::VIPS, opts.max_vips),
            (names::VIP_ADDRS, opts.max_vips),
            (names::VIP_STATS, opts.max_vips),
            // Every VIP may be guarded, besides the listeners.
            (
                names::EDGE_DESTS,
                opts.max_vips.saturating_add(EDGE_LISTENER_SLOTS),
            ),
            (names::MAGLEV, ring_entries),
            (names::CONNTRACK, buckets_for(opts.conntrack_entries)),
            (names::REPLY_NAT, buckets_for(opts.conntrack_entries)),
        ];
        for (map, entries) in sizes {
            loader.map_max_entries(map, entries);
        }
        let mut paths = Vec::new();
        let mut resized = Vec::new();
        if let Some(dir) = &opts.pin_dir {
            let maps = maps_dir(dir);
            resized = capacity_mismatches(&maps, &sizes);
            for m in &resized {
                warn!(
                    map = m.map,
                    pinned = m.pinned,
                    wanted = m.wanted,
                    "pinned map kept at its old capacity (it holds live state); run `ingressd cleanup` and restart to resize"
                );
            }
            std::fs::create_dir_all(&maps)
                .map_err(io_err(format!("creating {}", maps.display())))?;
            for name in PINNED_MAPS {
                paths.push((*name, maps.join(name)));
            }
        }
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object)?;
        load_xdp(&mut ebpf, XDP_PROGRAM)?;
        load_jumps(&mut ebpf)?;
        Ok(Datapath {
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            attached: BTreeMap::new(),
            resized,
        })
    }

    /// Pinned maps adopted with another capacity than asked for (also logged at load).
    pub fn capacity_mismatches(&self) -> &[CapacityMismatch] {
        &self.resized
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn xdp(&self) -> Result<&Xdp, LoadError> {
        xdp_program(&self.ebpf, XDP_PROGRAM)
    }

    fn xdp_mut(&mut self) -> Result<&mut Xdp, LoadError> {
        self.ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(LoadError::MissingProgram(XDP_PROGRAM))?
            .try_into()
            .map_err(|source| LoadError::Program {
                step: "program type".into(),
                source,
            })
    }

    /// Attaches to `ifname`: swaps this program into an existing pinned link (no gap in
    /// forwarding), or attaches natively, falling back to generic mode with a log line. A
    /// pinned link that cannot take the program (its interface was deleted and made again)
    /// is removed and the program attached afresh.
    pub fn attach(&mut self, ifname: &str, generic_only: bool) -> Result<XdpMode, LoadError> {
        let pin_dir = self.pin_dir.clone();
        if let Some(dir) = &pin_dir {
            let path = link_path(dir, ifname);
            if path.exists() {
                match self.swap_into_pinned(&path, ifname) {
                    Ok(mode) => return Ok(mode),
                    Err(error) => {
                        warn!(interface = ifname, %error, "pinned xdp link unusable; removing it and attaching afresh");
                        std::fs::remove_file(&path)
                            .map_err(io_err(format!("removing {}", path.display())))?;
                    }
                }
            }
        }
        let prog = self.xdp_mut()?;
        let (id, mode) = if generic_only {
            let id = prog
                .attach(ifname, XdpMode::Skb)
                .map_err(|source| LoadError::Program {
                    step: format!("attaching to {ifname}"),
                    source,
                })?;
            (id, XdpMode::Skb)
        } else {
            match prog.attach(ifname, XdpMode::Driver) {
                Ok(id) => {
                    if is_virtual(ifname) {
                        warn!(
                            interface = ifname,
                            "native XDP on a virtual interface: a veth forwards the frames XDP sends out of it only if its peer runs an XDP program or has GRO on; if L4 traffic does not flow (kind and some VM setups), run with --xdp-generic"
                        );
                    }
                    (id, XdpMode::Driver)
                }
                Err(aya::programs::ProgramError::UnknownInterface { name }) => {
                    return Err(LoadError::UnknownInterface(name));
                }
                Err(err) => {
                    warn!(interface = ifname, error = %err, "native XDP unavailable, attaching in generic (skb) mode");
                    let id =
                        prog.attach(ifname, XdpMode::Skb)
                            .map_err(|source| LoadError::Program {
                                step: format!("attaching to {ifname}"),
                                source,
                            })?;
                    (id, XdpMode::Skb)
                }
            }
        };
        let mut held = Some(id);
        if let (Some(dir), Some(id)) = (&pin_dir, held.take()) {
            let link = prog.take_link(id).map_err(|source| LoadError::Program {
                step: "taking link".into(),
                source,
            })?;
            let fd_link = FdLink::try_from(link).map_err(|source| LoadError::Link {
                step: format!("link of {ifname} is not a bpf_link"),
                source,
            })?;
            std::fs::create_dir_all(links_dir(dir)).map_err(io_err("creating links dir"))?;
            let path = link_path(dir, ifname);
            fd_link.pin(&path).map_err(|source| LoadError::Pin {
                step: format!("pinning {}", path.display()),
                source,
            })?;
        }
        info!(interface = ifname, mode = ?mode, "xdp program attached");
        self.attached.insert(ifname.to_string(), (mode, held));
        Ok(mode)
    }

    /// Swaps this program into the link pinned at `path` (`bpf_link_update`).
    fn swap_into_pinned(&mut self, path: &Path, ifname: &str) -> Result<XdpMode, LoadError> {
        let pinned = PinnedLink::from_pin(path).map_err(|source| LoadError::Link {
            step: format!("opening {}", path.display()),
            source,
        })?;
        let link =
            aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned)).map_err(|source| {
                LoadError::Link {
                    step: "adopting xdp link".into(),
                    source,
                }
            })?;
        let id = self
            .xdp_mut()?
            .attach_to_link(link)
            .map_err(|source| LoadError::Program {
                step: format!("updating link on {ifname}"),
                source,
            })?;
        info!(
            interface = ifname,
            "xdp program swapped into the existing pinned link"
        );
        self.attached
            .insert(ifname.to_string(), (XdpMode::Default, Some(id)));
        Ok(XdpMode::Default)
    }

    /// Removes the pinned links of interfaces not in `keep` (dropped from
    /// `--xdp-interface` since the last run), which would otherwise keep forwarding with an
    /// old program. Returns the interfaces detached.
    pub fn detach_others(&mut self, keep: &[String]) -> Result<Vec<String>, LoadError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(Vec::new());
        };
        let Ok(entries) = std::fs::read_dir(links_dir(&dir)) else {
            return Ok(Vec::new());
        };
        let mut gone = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(ifname) = name.strip_prefix("xdp_") else {
                continue;
            };
            if keep.iter().any(|k| k == ifname) {
                continue;
            }
            warn!(
                interface = ifname,
                "detaching xdp from an interface no longer configured"
            );
            self.detach(ifname)?;
            gone.push(ifname.to_string());
        }
        Ok(gone)
    }

    /// Detaches from `ifname` (removing its pinned link).
    pub fn detach(&mut self, ifname: &str) -> Result<(), LoadError> {
        if let Some((_, Some(id))) = self.attached.remove(ifname) {
            self.xdp_mut()?
                .detach(id)
                .map_err(|source| LoadError::Program {
                    step: format!("detaching from {ifname}"),
                    source,
                })?;
        }
        // The pin is the last reference to a pinned link: removing it detaches.
        if let Some(dir) = &self.pin_dir {
            let path = link_path(dir, ifname);
            if path.exists() {
                std::fs::remove_file(&path)
                    .map_err(io_err(format!("removing {}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Interfaces this process attached to, and how.
    pub fn attached(&self) -> impl Iterator<Item = (&str, XdpMode)> {
        self.attached.iter().map(|(k, (m, _))| (k.as_str(), *m))
    }

    /// Takes the L4 maps for writing.
    pub fn map_writer(&mut self) -> Result<AyaMapWriter, LoadError> {
        Ok(AyaMapWriter::from_ebpf(&mut self.ebpf)?)
    }

    /// Takes the edge protection maps out of the object (once).
    pub fn edge_writer(&mut self) -> Result<super::edge::AyaEdgeWriter, LoadError> {
        Ok(super::edge::AyaEdgeWriter::from_ebpf(&mut self.ebpf)?)
    }

    /// Opens readers for the counters.
    pub fn counters(&self) -> Result<Counters, LoadError> {
        Ok(Counters::from_ebpf(&self.ebpf)?)
    }

    /// The loaded object, read-only (inspection, tests).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The loaded object, for programs other than XDP (passthrough).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Removes maps pinned under older layout versions (call once links use this program).
    pub fn remove_stale_versions(&self) -> Result<(), LoadError> {
        let Some(dir) = &self.pin_dir else {
            return Ok(());
        };
        let current = maps_dir(dir);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_maps = entry.file_name().to_string_lossy().starts_with("maps_v");
            if is_maps && path != current {
                warn!(path = %path.display(), "removing maps of an older layout version");
                std::fs::remove_dir_all(&path)
                    .map_err(io_err(format!("removing {}", path.display())))?;
            }
        }
        Ok(())
    }
}

/// Detaches every pinned link and removes everything pinned under `pin_dir`
/// (`ingressd cleanup`). Idempotent.
pub fn cleanup(pin_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    if !pin_dir.exists() {
        return Ok(removed);
    }
    // Removing the last reference to a pinned bpf_link detaches it.
    remove_tree(pin_dir, &mut removed)?;
    Ok(removed)
}

fn remove_tree(path: &Path, removed: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(path).map_err(io_err(format!("reading {}", path.display())))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            remove_tree(&p, removed)?;
        } else {
            std::fs::remove_file(&p).map_err(io_err(format!("removing {}", p.display())))?;
            removed.push(p);
        }
    }
    std::fs::remove_dir(path).map_err(io_err(format!("removing {}", path.display())))?;
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (hence CAP_SYS_RESOURCE in the
/// DaemonSet); newer ones use memory cgroups and ignore it. Best effort.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, fully initialised struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}

#[cfg(test)]
mod tests {
    use super::is_virtual;

    #[test]
    fn interrupted_loads_are_retried_a_bounded_number_of_times() {
        use super::{retry_interrupted, LOAD_TRIES};
        let eagain = || std::io::Error::from_raw_os_error(libc::EAGAIN);
        let is_eagain = |e: &std::io::Error| e.raw_os_error() == Some(libc::EAGAIN);
        let mut calls = 0;
        let r = retry_interrupted(
            || {
                calls += 1;
                if calls < 3 {
                    Err(eagain())
                } else {
                    Ok(calls)
                }
            },
            is_eagain,
            "p",
        );
        assert_eq!(r.ok(), Some(3));
        let mut calls = 0;
        let r: Result<(), _> = retry_interrupted(
            || {
                calls += 1;
                Err(eagain())
            },
            is_eagain,
            "p",
        );
        assert!(r.is_err());
        assert_eq!(calls, LOAD_TRIES + 1);
        let mut calls = 0;
        let r: Result<(), _> = retry_interrupted(
            || {
                calls += 1;
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            },
            is_eagain,
            "p",
        );
        assert!(r.is_err());
        assert_eq!(calls, 1, "a verifier rejection is not retried");
    }

    #[test]
    fn loopback_is_virtual_and_unknown_names_are_not() {
        assert!(is_virtual("lo"));
        assert!(!is_virtual("no-such-interface0"));
    }
}

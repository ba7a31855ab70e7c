//! Reads the per-CPU counters and sums them across CPUs.
use std::os::fd::AsFd;

use aya::maps::{MapData, PerCpuArray};
use ingress_common::{
    counters::{Counter, Stat},
    maps as names,
};

use super::MapError;

/// Read handles on the counter maps (shared with the running program).
pub struct Counters {
    stats: PerCpuArray<MapData, Counter>,
    vip_stats: PerCpuArray<MapData, Counter>,
}

/// A handle on the per-CPU counter map `name` of a loaded object, which keeps its own.
pub(super) fn open(
    ebpf: &aya::Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<MapData, Counter>, MapError> {
    let map = ebpf.map(name).ok_or(MapError::Missing(name))?;
    let aya::maps::Map::PerCpuArray(d) = map else {
        return Err(MapError::Missing(name));
    };
    // A second handle from a duplicated fd: reopening by id would need CAP_SYS_ADMIN, which
    // the DaemonSet does not grant.
    let fd = d
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| MapError::Mmap { map: name, source })?;
    let data = MapData::from_fd(fd).map_err(|source| MapError::Map {
        op: "open",
        map: name,
        source,
    })?;
    PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).map_err(|source| MapError::Map {
        op: "open",
        map: name,
        source,
    })
}

fn sum(values: &aya::maps::PerCpuValues<Counter>) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

impl Counters {
    /// Opens the counters of a loaded object.
    pub fn from_ebpf(ebpf: &aya::Ebpf) -> Result<Self, MapError> {
        Ok(Counters {
            stats: open(ebpf, names::STATS)?,
            vip_stats: open(ebpf, names::VIP_STATS)?,
        })
    }

    /// Opens pinned counters (for `ingressd inspect`).
    pub fn from_pins(maps_dir: &std::path::Path) -> Result<Self, MapError> {
        let pin = |name: &'static str| -> Result<PerCpuArray<MapData, Counter>, MapError> {
            let data = MapData::from_pin(maps_dir.join(name)).map_err(|source| MapError::Map {
                op: "open pinned",
                map: name,
                source,
            })?;
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).map_err(|source| {
                MapError::Map {
                    op: "open",
                    map: name,
                    source,
                }
            })
        };
        Ok(Counters {
            stats: pin(names::STATS)?,
            vip_stats: pin(names::VIP_STATS)?,
        })
    }

    /// Every verdict and drop reason with its totals.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>, MapError> {
        Stat::ALL
            .iter()
            .map(|s| {
                let v = self
                    .stats
                    .get(&(*s as u32), 0)
                    .map_err(|source| MapError::Map {
                        op: "read",
                        map: names::STATS,
                        source,
                    })?;
                Ok((*s, sum(&v)))
            })
            .collect()
    }

    /// One counter's total.
    pub fn stat(&self, s: Stat) -> Result<Counter, MapError> {
        let v = self
            .stats
            .get(&(s as u32), 0)
            .map_err(|source| MapError::Map {
                op: "read",
                map: names::STATS,
                source,
            })?;
        Ok(sum(&v))
    }

    /// Totals for one VIP id.
    pub fn vip(&self, vip_id: u32) -> Result<Counter, MapError> {
        let v = self
            .vip_stats
            .get(&vip_id, 0)
            .map_err(|source| MapError::Map {
                op: "read",
                map: names::VIP_STATS,
                source,
            })?;
        Ok(sum(&v))
    }
}

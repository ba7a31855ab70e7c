//! The edge protection maps: protected destinations, their prefilter, the blocked source
//! prefixes and the SYN rate setting. [`EdgeWriter`] is the seam the edge applier talks to;
//! [`AyaEdgeWriter`] writes the loaded maps, [`FakeEdgeWriter`] keeps them in memory.
use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use ingress_common::{
    edge::{EdgeConfig, EdgeDest},
    l4::VipKey,
    maps as names,
};
use ipnet::IpNet;

use super::MapError;

/// Writes the edge maps; each call is one update.
pub trait EdgeWriter: Send {
    /// Writes the SYN rate setting.
    fn write_config(&mut self, cfg: &EdgeConfig) -> Result<(), MapError>;
    /// The protected destinations the map holds now.
    fn read_dests(&self) -> Result<Vec<(VipKey, EdgeDest)>, MapError>;
    /// Adds or updates a protected destination.
    fn put_dest(&mut self, key: &VipKey, dest: &EdgeDest) -> Result<(), MapError>;
    /// Removes a protected destination.
    fn remove_dest(&mut self, key: &VipKey) -> Result<(), MapError>;
    /// Makes the prefilter bitmap equal `words`, writing only words that differ.
    fn write_filter(&mut self, words: &[u64]) -> Result<(), MapError>;
    /// The blocked prefixes the tries hold now.
    fn read_blocked(&self) -> Result<BTreeSet<IpNet>, MapError>;
    /// Blocks a prefix (already truncated to its length).
    fn block(&mut self, net: &IpNet) -> Result<(), MapError>;
    /// Unblocks a prefix.
    fn unblock(&mut self, net: &IpNet) -> Result<(), MapError>;
}

fn map_err(op: &'static str, map: &'static str) -> impl Fn(aya::maps::MapError) -> MapError {
    move |source| MapError::Map { op, map, source }
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<T, MapError> {
    let map = ebpf.take_map(name).ok_or(MapError::Missing(name))?;
    T::try_from(map).map_err(map_err("open", name))
}

/// The edge maps of a loaded object.
pub struct AyaEdgeWriter {
    config: Array<MapData, EdgeConfig>,
    dests: HashMap<MapData, VipKey, EdgeDest>,
    filter: Array<MapData, u64>,
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
}

impl AyaEdgeWriter {
    /// Takes the edge maps out of a loaded object.
    pub fn from_ebpf(ebpf: &mut aya::Ebpf) -> Result<Self, MapError> {
        Ok(AyaEdgeWriter {
            config: take(ebpf, names::EDGE_CONFIG)?,
            dests: take(ebpf, names::EDGE_DESTS)?,
            filter: take(ebpf, names::EDGE_FILTER)?,
            v4: take(ebpf, names::BLOCK_V4)?,
            v6: take(ebpf, names::BLOCK_V6)?,
        })
    }
}

impl AyaEdgeWriter {
    /// Opens the edge maps pinned in `maps` (a `maps_v<N>` directory), for inspection.
    pub fn from_pins(maps: &std::path::Path) -> Result<Self, MapError> {
        use aya::maps::Map;
        let open = |name: &'static str| {
            MapData::from_pin(maps.join(name)).map_err(map_err("open pinned", name))
        };
        let conv = |name: &'static str| map_err("open", name);
        Ok(AyaEdgeWriter {
            config: Array::try_from(Map::Array(open(names::EDGE_CONFIG)?))
                .map_err(conv(names::EDGE_CONFIG))?,
            dests: HashMap::try_from(Map::HashMap(open(names::EDGE_DESTS)?))
                .map_err(conv(names::EDGE_DESTS))?,
            filter: Array::try_from(Map::Array(open(names::EDGE_FILTER)?))
                .map_err(conv(names::EDGE_FILTER))?,
            v4: LpmTrie::try_from(Map::LpmTrie(open(names::BLOCK_V4)?))
                .map_err(conv(names::BLOCK_V4))?,
            v6: LpmTrie::try_from(Map::LpmTrie(open(names::BLOCK_V6)?))
                .map_err(conv(names::BLOCK_V6))?,
        })
    }

    /// The SYN rate setting as written.
    pub fn config(&self) -> Result<EdgeConfig, MapError> {
        self.config
            .get(&0, 0)
            .map_err(map_err("read", names::EDGE_CONFIG))
    }
}

impl EdgeWriter for AyaEdgeWriter {
    fn write_config(&mut self, cfg: &EdgeConfig) -> Result<(), MapError> {
        self.config
            .set(0, cfg, 0)
            .map_err(map_err("update", names::EDGE_CONFIG))
    }

    fn read_dests(&self) -> Result<Vec<(VipKey, EdgeDest)>, MapError> {
        self.dests
            .iter()
            .map(|e| e.map_err(map_err("iterate", names::EDGE_DESTS)))
            .collect()
    }

    fn put_dest(&mut self, key: &VipKey, dest: &EdgeDest) -> Result<(), MapError> {
        self.dests
            .insert(key, dest, 0)
            .map_err(map_err("update", names::EDGE_DESTS))
    }

    fn remove_dest(&mut self, key: &VipKey) -> Result<(), MapError> {
        self.dests
            .remove(key)
            .map_err(map_err("delete", names::EDGE_DESTS))
    }

    fn write_filter(&mut self, words: &[u64]) -> Result<(), MapError> {
        super::writer::write_bitmap(&mut self.filter, words, names::EDGE_FILTER)
    }

    fn read_blocked(&self) -> Result<BTreeSet<IpNet>, MapError> {
        let mut out = BTreeSet::new();
        for k in self.v4.keys() {
            let k = k.map_err(map_err("iterate", names::BLOCK_V4))?;
            let addr = std::net::Ipv4Addr::from(k.data());
            if let Ok(n) = ipnet::Ipv4Net::new(addr, k.prefix_len() as u8) {
                out.insert(IpNet::V4(n));
            }
        }
        for k in self.v6.keys() {
            let k = k.map_err(map_err("iterate", names::BLOCK_V6))?;
            let addr = std::net::Ipv6Addr::from(k.data());
            if let Ok(n) = ipnet::Ipv6Net::new(addr, k.prefix_len() as u8) {
                out.insert(IpNet::V6(n));
            }
        }
        Ok(out)
    }

    fn block(&mut self, net: &IpNet) -> Result<(), MapError> {
        let len = u32::from(net.prefix_len());
        match net {
            IpNet::V4(n) => self
                .v4
                .insert(&Key::new(len, n.addr().octets()), 1, 0)
                .map_err(map_err("update", names::BLOCK_V4)),
            IpNet::V6(n) => self
                .v6
                .insert(&Key::new(len, n.addr().octets()), 1, 0)
                .map_err(map_err("update", names::BLOCK_V6)),
        }
    }

    fn unblock(&mut self, net: &IpNet) -> Result<(), MapError> {
        let len = u32::from(net.prefix_len());
        match net {
            IpNet::V4(n) => self
                .v4
                .remove(&Key::new(len, n.addr().octets()))
                .map_err(map_err("delete", names::BLOCK_V4)),
            IpNet::V6(n) => self
                .v6
                .remove(&Key::new(len, n.addr().octets()))
                .map_err(map_err("delete", names::BLOCK_V6)),
        }
    }
}

/// In-memory edge maps, for tests without root.
#[derive(Debug, Default)]
pub struct FakeEdgeWriter {
    pub config: EdgeConfig,
    /// Keyed by (family, address words, port, protocol), as the kernel's hash would tell
    /// them apart.
    pub dests: BTreeMap<VipKey, EdgeDest>,
    pub filter: Vec<u64>,
    pub blocked: BTreeSet<IpNet>,
    /// Number of map updates and deletes, to check that an unchanged apply writes nothing.
    pub writes: usize,
    /// Capacity of the destination map, if limited.
    pub max_dests: Option<usize>,
}

impl EdgeWriter for FakeEdgeWriter {
    fn write_config(&mut self, cfg: &EdgeConfig) -> Result<(), MapError> {
        self.config = *cfg;
        self.writes += 1;
        Ok(())
    }

    fn read_dests(&self) -> Result<Vec<(VipKey, EdgeDest)>, MapError> {
        Ok(self.dests.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn put_dest(&mut self, key: &VipKey, dest: &EdgeDest) -> Result<(), MapError> {
        if let Some(max) = self.max_dests {
            if self.dests.len() >= max && !self.dests.contains_key(key) {
                return Err(MapError::OutOfRange {
                    what: "guarded destination",
                    index: max as u32,
                    capacity: max as u32,
                });
            }
        }
        self.dests.insert(*key, *dest);
        self.writes += 1;
        Ok(())
    }

    fn remove_dest(&mut self, key: &VipKey) -> Result<(), MapError> {
        self.dests.remove(key);
        self.writes += 1;
        Ok(())
    }

    fn write_filter(&mut self, words: &[u64]) -> Result<(), MapError> {
        if self.filter.len() != words.len() {
            self.filter = vec![0; words.len()];
        }
        for (cur, w) in self.filter.iter_mut().zip(words) {
            if cur != w {
                *cur = *w;
                self.writes += 1;
            }
        }
        Ok(())
    }

    fn read_blocked(&self) -> Result<BTreeSet<IpNet>, MapError> {
        Ok(self.blocked.clone())
    }

    fn block(&mut self, net: &IpNet) -> Result<(), MapError> {
        self.blocked.insert(*net);
        self.writes += 1;
        Ok(())
    }

    fn unblock(&mut self, net: &IpNet) -> Result<(), MapError> {
        self.blocked.remove(net);
        self.writes += 1;
        Ok(())
    }
}

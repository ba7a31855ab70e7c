//! Read-only views of the pinned maps of a running (or exited) `ingressd`, for
//! `ingressd inspect` and the kernel metrics.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use aya::maps::{Array, HashMap, Map, MapData};
use ingress_common::{
    conntrack::{is_live, Bucket, FlowKey, FlowNat},
    l4::{Backend, LbConfig, RetiredKey, VipKey, VipMeta, MAGLEV_RING_SIZE},
    maps as names,
};

use super::{counters::Counters, loader::maps_dir, writer::MmapRing, MapError};

fn open(dir: &Path, name: &'static str) -> Result<MapData, MapError> {
    MapData::from_pin(dir.join(name)).map_err(|source| MapError::Map {
        op: "open pinned",
        map: name,
        source,
    })
}

/// The L4 state as pinned.
pub struct PinnedMaps {
    pub dir: PathBuf,
    vips: HashMap<MapData, VipKey, VipMeta>,
    backends: Array<MapData, Backend>,
    config: Array<MapData, LbConfig>,
    conntrack: Array<MapData, Bucket<FlowNat>>,
    ring: MmapRing,
    pub counters: Counters,
}

/// One VIP as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipView {
    pub key: VipKey,
    pub meta: VipMeta,
    /// Backends in the ring, with the number of ring slots each owns.
    pub spread: Vec<(Backend, u32)>,
}

impl PinnedMaps {
    /// Opens the maps pinned under `pin_dir` (current layout version).
    pub fn open(pin_dir: &Path) -> Result<Self, MapError> {
        let dir = maps_dir(pin_dir);
        let err = |name: &'static str| {
            move |source| MapError::Map {
                op: "open",
                map: name,
                source,
            }
        };
        let ring_data = open(&dir, names::MAGLEV)?;
        let slots = ring_data.info().map_err(err(names::MAGLEV))?.max_entries() * 2;
        Ok(PinnedMaps {
            vips: HashMap::try_from(Map::HashMap(open(&dir, names::VIPS)?))
                .map_err(err(names::VIPS))?,
            backends: Array::try_from(Map::Array(open(&dir, names::BACKENDS)?))
                .map_err(err(names::BACKENDS))?,
            config: Array::try_from(Map::Array(open(&dir, names::LB_CONFIG)?))
                .map_err(err(names::LB_CONFIG))?,
            conntrack: Array::try_from(Map::Array(open(&dir, names::CONNTRACK)?))
                .map_err(err(names::CONNTRACK))?,
            ring: MmapRing::new(ring_data, slots)?,
            counters: Counters::from_pins(&dir)?,
            dir,
        })
    }

    /// Node settings.
    pub fn config(&self) -> Result<LbConfig, MapError> {
        self.config.get(&0, 0).map_err(|source| MapError::Map {
            op: "read",
            map: names::LB_CONFIG,
            source,
        })
    }

    /// Every VIP with its Maglev spread.
    pub fn vips(&self) -> Result<Vec<VipView>, MapError> {
        let mut out = Vec::new();
        let words = self.ring.words();
        for entry in self.vips.iter() {
            let (key, meta) = entry.map_err(|source| MapError::Map {
                op: "iterate",
                map: names::VIPS,
                source,
            })?;
            let start = meta.id as usize * MAGLEV_RING_SIZE as usize;
            let mut owned: BTreeMap<u32, u32> = BTreeMap::new();
            for w in words.iter().skip(start).take(MAGLEV_RING_SIZE as usize) {
                *owned.entry(w.load(Ordering::Relaxed)).or_default() += 1;
            }
            let mut spread = Vec::new();
            for (id, n) in owned {
                if id == 0 {
                    continue;
                }
                let b = self.backends.get(&id, 0).map_err(|source| MapError::Map {
                    op: "read",
                    map: names::BACKENDS,
                    source,
                })?;
                spread.push((b, n));
            }
            out.push(VipView { key, meta, spread });
        }
        out.sort_by_key(|v| v.meta.id);
        Ok(out)
    }

    /// The used slots of the conntrack table, bucket by bucket (a bucket that cannot be read
    /// is skipped).
    fn flows(&self) -> impl Iterator<Item = (FlowKey, FlowNat)> + '_ {
        self.conntrack.iter().filter_map(Result::ok).flat_map(|b| {
            b.tags
                .into_iter()
                .zip(b.slots)
                .filter(|(tag, _)| is_live(*tag))
                .map(|(_, s)| (s.key, s.value))
        })
    }

    /// The backends marked as gone from a UDP VIP (`RetiredKey`), in no order.
    pub fn retired(&self) -> Result<Vec<RetiredKey>, MapError> {
        let err = |source| MapError::Map {
            op: "iterate",
            map: names::RETIRED,
            source,
        };
        let map: HashMap<MapData, RetiredKey, u32> =
            HashMap::try_from(Map::HashMap(open(&self.dir, names::RETIRED)?)).map_err(err)?;
        map.keys().map(|k| k.map_err(err)).collect()
    }

    /// Number of conntrack entries, counting at most `limit`.
    pub fn conntrack_count(&self, limit: usize) -> usize {
        self.flows().take(limit).count()
    }

    /// Up to `limit` conntrack entries.
    pub fn conntrack(&self, limit: usize) -> Vec<(FlowKey, FlowNat)> {
        self.flows().take(limit).collect()
    }
}

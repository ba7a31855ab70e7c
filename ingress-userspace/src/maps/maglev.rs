//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table in which every
//! backend owns an almost equal share of slots, and removing one backend moves only the
//! slots it owned (plus a few). Computed here, read by the kernel with one array lookup.

/// 64-bit FNV-1a followed by a splitmix64 finaliser: stable across machines and releases,
/// which is what makes every node build the same table.
fn hash(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds a table of `size` slots (a prime) over `names`, returning for each slot the index
/// of its backend in `names`. `names` must be sorted and unique so every node agrees.
/// Returns an empty table when there are no backends.
pub fn table(names: &[impl AsRef<[u8]>], size: u32) -> Vec<u32> {
    let n = names.len();
    if n == 0 || size < 2 {
        return Vec::new();
    }
    let m = u64::from(size);
    let perm: Vec<(u64, u64)> = names
        .iter()
        .map(|name| {
            let offset = hash(0x6d61_676c_6576_3031, name.as_ref()) % m;
            let skip = hash(0x736b_6970_7365_6564, name.as_ref()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut entry = vec![u32::MAX; size as usize];
    let mut filled = 0u32;
    'fill: loop {
        for (i, &(offset, skip)) in perm.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingress_common::l4::MAGLEV_RING_SIZE;

    fn names(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn distribution_within_one_percent() {
        for n in [2usize, 3, 7, 10, 33, 100] {
            let t = table(&names(n), MAGLEV_RING_SIZE);
            let mut counts = vec![0u64; n];
            for &i in &t {
                counts[i as usize] += 1;
            }
            let ideal = f64::from(MAGLEV_RING_SIZE) / n as f64;
            for c in counts {
                let dev = (c as f64 - ideal).abs() / ideal;
                assert!(
                    dev <= 0.01,
                    "n={n}: {c} slots vs ideal {ideal:.1} ({:.3}%)",
                    dev * 100.0
                );
            }
        }
    }

    #[test]
    fn removing_one_backend_moves_about_one_nth() {
        for n in [3usize, 5, 10, 20] {
            let all = names(n);
            let before = table(&all, MAGLEV_RING_SIZE);
            let removed = n / 2;
            let rest: Vec<String> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != removed)
                .map(|(_, s)| s.clone())
                .collect();
            let after = table(&rest, MAGLEV_RING_SIZE);
            let mut moved = 0u64;
            for (slot, &b) in before.iter().enumerate() {
                let old = &all[b as usize];
                let new = &rest[after[slot] as usize];
                if old != new {
                    moved += 1;
                    continue;
                }
            }
            let frac = moved as f64 / f64::from(MAGLEV_RING_SIZE);
            let ideal = 1.0 / n as f64;
            // Maglev moves the removed backend's slots plus a small excess.
            assert!(
                frac >= ideal * 0.99 && frac <= ideal * 1.25,
                "n={n}: moved {frac:.4}, ideal {ideal:.4}"
            );
            // Every slot of a surviving backend that moved went... only slots of the removed one must move.
            let owned_by_removed = before.iter().filter(|&&b| b as usize == removed).count();
            assert!(moved as usize >= owned_by_removed);
        }
    }

    #[test]
    fn deterministic_and_empty() {
        assert_eq!(table(&names(4), 13), table(&names(4), 13));
        assert!(table(&Vec::<String>::new(), MAGLEV_RING_SIZE).is_empty());
        let t = table(&names(1), 13);
        assert!(t.iter().all(|&i| i == 0));
    }
}

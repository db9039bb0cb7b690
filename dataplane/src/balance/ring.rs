//! A consistent-hash ring over a backend's endpoints, and the stable hash
//! it and sticky-session ids use: the same key must reach the same
//! endpoint on every replica and after every table swap, so the hash is a
//! fixed algorithm (FNV-1a, then a 64-bit finalizer so nearby keys spread),
//! and ring points depend only on endpoint addresses.

use std::hash::Hasher;
use std::net::SocketAddr;

/// Points per endpoint: enough that each endpoint's share of the ring is
/// within a few percent of 1/n.
const POINTS_PER_ENDPOINT: u32 = 160;

/// A stable 64-bit hash of `bytes`.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    mix(h.finish())
}

/// Finishes a hash accumulated by the caller (several parts).
pub(crate) fn mix(mut x: u64) -> u64 {
    // MurmurHash3's fmix64.
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The stable id of an endpoint, as sticky cookies carry it.
pub fn endpoint_id(addr: SocketAddr) -> u64 {
    hash64(addr.to_string().as_bytes())
}

/// Ring points, sorted: (position, endpoint index).
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn new(addrs: impl Iterator<Item = SocketAddr>) -> Self {
        let mut points = Vec::new();
        for (i, addr) in addrs.enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            let name = addr.to_string();
            for p in 0..POINTS_PER_ENDPOINT {
                let mut h = fnv::FnvHasher::default();
                h.write(name.as_bytes());
                h.write(&p.to_le_bytes());
                points.push((mix(h.finish()), i));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Endpoint indices clockwise from `key` (with repeats: each endpoint
    /// has many points).
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < key);
        self.points[start..]
            .iter()
            .chain(&self.points[..start])
            .map(|(_, i)| *i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080)))
            .collect()
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned (FNV-1a 64, then MurmurHash3's fmix64): changing it would
        // move every session on upgrade.
        assert_eq!(hash64(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(
            endpoint_id("10.0.0.1:8080".parse().unwrap()),
            0xe8c7_2115_6ed5_2b14
        );
        assert_eq!(hash64(b"/cart"), hash64(b"/cart"));
        assert_ne!(hash64(b"/cart"), hash64(b"/carts"));
    }

    #[test]
    fn adding_an_endpoint_moves_about_one_nth_of_the_keys_and_only_to_it() {
        let four = Ring::new(addrs(4).into_iter());
        let five = Ring::new(addrs(5).into_iter());
        let keys = 20_000u32;
        let mut moved = 0;
        for k in 0..keys {
            let key = hash64(&k.to_le_bytes());
            let before = four.walk(key).next().unwrap();
            let after = five.walk(key).next().unwrap();
            if before != after {
                assert_eq!(after, 4, "a key moved between old endpoints");
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(keys);
        assert!((0.15..0.25).contains(&share), "{share}");
    }

    #[test]
    fn shares_are_even() {
        let ring = Ring::new(addrs(4).into_iter());
        let mut counts = [0u32; 4];
        for k in 0..40_000u32 {
            counts[ring.walk(hash64(&k.to_le_bytes())).next().unwrap()] += 1;
        }
        for c in counts {
            assert!((8_000..12_000).contains(&c), "{counts:?}");
        }
    }
}

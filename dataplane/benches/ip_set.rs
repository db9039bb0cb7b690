//! IP access list lookup cost against list size.
//!
//! `IpSet::contains` runs on every request of a rule with an allow or deny
//! list, and lists come from users (an Ingress annotation, or
//! `--allowlist-source-range` for every path): a lookup must not grow
//! linearly with the list. Each family is measured at 10, 1,000 and 10,000
//! ranges that do not merge, for a hit and for a miss that falls between
//! two ranges (the deepest search).
//!
//! Kept short, like `lookup`: `cargo bench -p portico-dataplane --bench
//! ip_set`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portico_dataplane::request::forwarded::{IpNet, IpSet, parse_range};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// Range `i` of a family, every other block left out so none merge: the
/// set keeps all `n`.
fn range(v6: bool, i: usize) -> String {
    if v6 {
        format!("2001:db8:{:x}::/48", 2 * i)
    } else {
        format!("10.{}.{}.0/24", i / 128, (i % 128) * 2)
    }
}

/// An address in range `i` (`hit`) or in the gap after it.
fn address(v6: bool, i: usize, hit: bool) -> IpAddr {
    let block = 2 * i + usize::from(!hit);
    let s = if v6 {
        format!("2001:db8:{block:x}::1")
    } else {
        format!("10.{}.{}.1", block / 256, block % 256)
    };
    s.parse().expect("a valid address")
}

fn contains(c: &mut Criterion) {
    for (family, v6) in [("v4", false), ("v6", true)] {
        let mut group = c.benchmark_group(format!("ip_set/{family}"));
        for n in SIZES {
            let nets: Vec<IpNet> = (0..n)
                .map(|i| parse_range(&range(v6, i)).expect("a valid range"))
                .collect();
            let set = IpSet::new(&nets);
            let mid = n / 2;
            for (name, ip, expected) in [
                ("hit", address(v6, mid, true), true),
                ("miss", address(v6, mid, false), false),
            ] {
                // A bench of the wrong answer is worthless.
                assert_eq!(set.contains(ip), expected, "{family}/{n}/{name}: {ip}");
                group.bench_with_input(BenchmarkId::new(name, n), &ip, |b, ip| {
                    b.iter(|| set.contains(black_box(*ip)))
                });
            }
        }
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = contains
}
criterion_main!(benches);

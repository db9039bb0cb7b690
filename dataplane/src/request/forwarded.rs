//! Whose word the proxy takes for the client's address and scheme.
//!
//! By default a request's `X-Forwarded-*` headers are the client's own
//! claims and are replaced with what this proxy saw (ingress-nginx's
//! default, `use-forwarded-headers: false`). A peer in `--trusted-proxies`
//! is another proxy in front: the client address is then read from its
//! `X-Forwarded-For` as nginx's `real_ip_recursive on` does, the rightmost
//! entry that is not itself a trusted proxy.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;

pub use ipnet::IpNet;

use crate::headers::X_FORWARDED_FOR;

/// At most this many `X-Forwarded-For` entries are read per request, from
/// the right: the work a request can cause is bounded whatever it sends.
/// A chain of trusted proxies longer than this yields the last one read.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// The longest entry parsed as an address: `[` an IPv6 address `]:65535`
/// fits; anything longer is malformed without being looked at.
const MAX_ENTRY: usize = 64;

/// The address a request is attributed to: for logs, load balancing by
/// client and (later) client policies. The port is known for a connection's
/// own peer (or PROXY protocol source); an `X-Forwarded-For` entry rarely
/// carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl ClientAddr {
    /// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4
    /// clients) become plain IPv4, so ranges and logs see one form.
    pub fn new(ip: IpAddr, port: Option<u16>) -> Self {
        Self {
            ip: ip.to_canonical(),
            port,
        }
    }
}

impl From<SocketAddr> for ClientAddr {
    fn from(a: SocketAddr) -> Self {
        Self::new(a.ip(), Some(a.port()))
    }
}

/// `ip:port` (`[ip]:port` for IPv6) when the port is known, else `ip`.
impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

/// A `--trusted-proxies` entry that is neither a CIDR range nor an address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not a CIDR range (10.0.0.0/8, fd00::/8) or an IP address")]
pub struct RangeError {
    pub value: String,
}

/// Parses a trusted range: CIDR (`10.0.0.0/8`) or one address (`10.0.0.1`,
/// as `/32` or `/128`). Host bits are cleared, as nginx's
/// `set_real_ip_from` does.
pub fn parse_range(s: &str) -> Result<IpNet, RangeError> {
    let s = s.trim();
    IpNet::from_str(s)
        .map(|n| n.trunc())
        .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
        .map_err(|_| RangeError {
            value: s.to_owned(),
        })
}

/// A set of CIDR ranges as sorted, merged intervals per address family: a
/// lookup is a binary search whatever the list's length. The one set
/// behind `--trusted-proxies` and the IP access lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net.trunc() {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merge(v4, |x| x.saturating_add(1)),
            v6: merge(v6, |x| x.saturating_add(1)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in the set; an IPv4-mapped IPv6 address (a
    /// dual-stack listener's view of an IPv4 client) as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
            // The last range starting at or below x is the only candidate.
            let i = ranges.partition_point(|(start, _)| *start <= x);
            i > 0 && ranges[i - 1].1 >= x
        }
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

/// Sorts intervals and merges the overlapping and adjacent ones (`next`:
/// the successor of an end, saturating).
fn merge<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: fn(T) -> T) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= next(last.1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The peers whose forwarding headers are believed (`--trusted-proxies`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    ranges: IpSet,
}

impl TrustedProxies {
    pub fn new(ranges: impl IntoIterator<Item = IpNet>) -> Self {
        let ranges: Vec<IpNet> = ranges.into_iter().collect();
        Self {
            ranges: IpSet::new(&ranges),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is in a trusted range; `false` at once when none is
    /// configured (the default).
    pub fn contains(&self, ip: IpAddr) -> bool {
        !self.ranges.is_empty() && self.ranges.contains(ip)
    }

    /// The client behind `peer`, a trusted proxy: walking `X-Forwarded-For`
    /// from the right (several headers read as one list, in order), the
    /// first entry not in a trusted range; all trusted: the leftmost. A
    /// malformed entry ends the walk at the last good address (the peer
    /// itself if the rightmost entry is malformed); empty entries are
    /// skipped; at most [`MAX_FORWARDED_HOPS`] entries are read.
    pub fn client_behind(&self, peer: ClientAddr, headers: &HeaderMap) -> ClientAddr {
        let mut client = peer;
        let mut read = 0;
        for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            for entry in value.as_bytes().rsplit(|b| *b == b',') {
                read += 1;
                if read > MAX_FORWARDED_HOPS {
                    return client;
                }
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                let Some(addr) = parse_entry(entry) else {
                    return client;
                };
                client = addr;
                if !self.contains(addr.ip) {
                    return client;
                }
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`. Anything else
/// (`unknown`, an obfuscated RFC 7239 node, garbage) is `None`.
fn parse_entry(entry: &[u8]) -> Option<ClientAddr> {
    if entry.len() > MAX_ENTRY {
        return None;
    }
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(ClientAddr::new(ip, None));
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Some(ClientAddr::new(sa.ip(), Some(sa.port())));
    }
    let v6 = s.strip_prefix('[')?.strip_suffix(']')?;
    Ipv6Addr::from_str(v6)
        .ok()
        .map(|ip| ClientAddr::new(IpAddr::V6(ip), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn range_sets_find_addresses_by_binary_search() {
        let nets: Vec<IpNet> = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.0.2.7/32",
            "192.0.2.8/31",
            "2001:db8::/32",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let set = IpSet::new(&nets);
        // Nested and adjacent ranges merged.
        assert_eq!(set.v4.len(), 2, "{set:?}");
        for (ip, inside) in [
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("9.255.255.255", false),
            ("192.0.2.6", false),
            ("192.0.2.7", true),
            ("192.0.2.9", true),
            ("192.0.2.10", false),
            ("2001:db8::1", true),
            ("2001:db9::", false),
            // An IPv4-mapped IPv6 address is its IPv4 address.
            ("::ffff:10.2.3.4", true),
        ] {
            assert_eq!(set.contains(ip.parse().unwrap()), inside, "{ip}");
        }
        assert!(IpSet::new(&[] as &[IpNet]).is_empty());
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(IpSet::new(&[all]).contains("255.255.255.255".parse().unwrap()));
        assert!(!IpSet::new(&[all]).contains("::1".parse().unwrap()));
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| parse_range(r).unwrap()))
    }

    fn peer(s: &str) -> ClientAddr {
        ClientAddr::from(s.parse::<SocketAddr>().unwrap())
    }

    /// The client `headers` (each one an `X-Forwarded-For` value) name.
    fn behind(t: &TrustedProxies, p: &str, values: &[&[u8]]) -> String {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_bytes(v).unwrap());
        }
        t.client_behind(peer(p), &h).to_string()
    }

    #[test]
    fn ranges_parse_as_cidr_or_address() {
        assert_eq!(
            parse_range("10.0.0.0/8").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_eq!(
            parse_range(" 10.1.2.3/8 ").unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "host bits cleared"
        );
        assert_eq!(
            parse_range("192.0.2.1").unwrap(),
            "192.0.2.1/32".parse().unwrap()
        );
        assert_eq!(parse_range("::1").unwrap(), "::1/128".parse().unwrap());
        assert_eq!(
            parse_range("fd00::/8").unwrap(),
            "fd00::/8".parse().unwrap()
        );
        for bad in ["", "10.0.0.0/33", "10.0.0", "example.com", "10.0.0.0/", "*"] {
            let e = parse_range(bad).unwrap_err();
            assert_eq!(e.value, bad.trim(), "{bad:?}");
        }
    }

    #[test]
    fn nothing_is_trusted_by_default() {
        let t = TrustedProxies::default();
        assert!(!t.contains("127.0.0.1".parse().unwrap()));
        assert!(!t.contains("::".parse().unwrap()));
    }

    #[test]
    fn mapped_ipv4_matches_ipv4_ranges() {
        let t = trusted(&["10.0.0.0/8"]);
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!t.contains("::ffff:11.1.2.3".parse().unwrap()));
        assert_eq!(
            ClientAddr::from("[::ffff:10.1.2.3]:80".parse::<SocketAddr>().unwrap()).to_string(),
            "10.1.2.3:80"
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let p = "10.0.0.9:5000";
        for (values, want) in [
            // No header: the peer itself.
            (&[][..], "10.0.0.9:5000"),
            (&[&b"203.0.113.7"[..]], "203.0.113.7"),
            // A client's own claims sit left of what the first proxy saw.
            (&[&b"198.51.100.1, 203.0.113.7"[..]], "203.0.113.7"),
            // Trusted hops are walked over.
            (
                &[&b"198.51.100.1, 203.0.113.7, 10.0.0.2, 10.9.9.9"[..]],
                "203.0.113.7",
            ),
            // All trusted: the leftmost.
            (&[&b"10.0.0.3, 10.0.0.2"[..]], "10.0.0.3"),
            // Several headers are one list, in order.
            (
                &[&b"198.51.100.1"[..], b"203.0.113.7, 10.0.0.2"],
                "203.0.113.7",
            ),
            (
                &[&b"203.0.113.7"[..], b"10.0.0.2", b"10.0.0.3"],
                "203.0.113.7",
            ),
            // Spaces and empty entries.
            (&[&b"  203.0.113.7 ,, 10.0.0.2,  "[..]], "203.0.113.7"),
            // Ports and IPv6 in every spelling.
            (&[&b"203.0.113.7:4711"[..]], "203.0.113.7:4711"),
            (&[&b"2001:db8::1"[..]], "2001:db8::1"),
            (&[&b"[2001:db8::1]"[..]], "2001:db8::1"),
            (&[&b"[2001:db8::1]:4711"[..]], "[2001:db8::1]:4711"),
            (&[&b"2001:db8::1, fd00::1"[..]], "2001:db8::1"),
            (&[&b"::ffff:203.0.113.7"[..]], "203.0.113.7"),
        ] {
            assert_eq!(behind(&t, p, values), want, "{values:?}");
        }
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_at_the_last_good_address() {
        let t = trusted(&["10.0.0.0/8"]);
        let p = "10.0.0.9:5000";
        for (value, want) in [
            (&b"garbage"[..], "10.0.0.9:5000"),
            (b"203.0.113.7, unknown", "10.0.0.9:5000"),
            (b"203.0.113.7, garbage, 10.0.0.2", "10.0.0.2"),
            (b"203.0.113.7, 10.0.0.2, 10.0.0.300", "10.0.0.9:5000"),
            (b"[2001:db8::1", "10.0.0.9:5000"),
            (b"2001:db8::1]", "10.0.0.9:5000"),
            (b"203.0.113.7:99999", "10.0.0.9:5000"),
            (b"1.2.3.4 5.6.7.8", "10.0.0.9:5000"),
            (b"_hidden, 10.0.0.2", "10.0.0.2"),
            // obs-text: not UTF-8.
            (b"\xff\xfe, 10.0.0.2", "10.0.0.2"),
        ] {
            assert_eq!(
                behind(&t, p, &[value]),
                want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn oversized_values_are_read_only_from_the_right_and_only_so_far() {
        let t = trusted(&["10.0.0.0/8"]);
        let p = "10.0.0.9:5000";
        // A long entry is malformed without being parsed.
        let long = format!("203.0.113.7, {}", "9".repeat(100_000));
        assert_eq!(behind(&t, p, &[long.as_bytes()]), "10.0.0.9:5000");
        // Thousands of trusted hops: only the rightmost are read.
        let mut chain = vec!["203.0.113.7"; 1];
        chain.extend(std::iter::repeat_n("10.0.0.1", 10_000));
        chain.push("10.0.0.2");
        let value = chain.join(", ");
        assert_eq!(behind(&t, p, &[value.as_bytes()]), "10.0.0.1");
        // Within the bound, the walk reaches the client.
        let mut chain = vec!["203.0.113.7"];
        chain.extend(std::iter::repeat_n("10.0.0.1", MAX_FORWARDED_HOPS - 1));
        let value = chain.join(",");
        assert_eq!(behind(&t, p, &[value.as_bytes()]), "203.0.113.7");
        // Empty entries count against the bound too.
        let value = format!("203.0.113.7{}", ",".repeat(10_000));
        assert_eq!(behind(&t, p, &[value.as_bytes()]), "10.0.0.9:5000");
    }
}

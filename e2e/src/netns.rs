//! The network namespace the upstreams listen in.
//!
//! The API server refuses loopback addresses in EndpointSlices, and tests
//! may send traffic only to 127.0.0.0/8 or into namespaces they create
//! themselves, never to this machine's own (possibly private-range)
//! address. So each test process creates `portico-e2e-<pid>`: a veth pair
//! with the host side on 198.18.x.1/30 and the namespace side on
//! 198.18.x.2/30 (198.18.0.0/15 is the benchmarking range, RFC 2544), `lo`
//! up inside. Upstreams bind their sockets from a thread that has entered
//! the namespace; a socket stays in the namespace it was made in, so tokio
//! serves it as usual, and portico, in the root namespace, reaches it
//! through the veth.
//!
//! The namespace outlives the process (its name is a bind mount); the next
//! test process deletes every `portico-e2e-*` whose process is gone, and
//! the veth goes with it.

use std::collections::HashSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};
use nix::sched::{CloneFlags, setns};

const PREFIX: &str = "portico-e2e-";
/// 198.18.0.0/15: 2^17 addresses, 2^15 subnets of four.
const RANGE_START: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const SUBNETS: u32 = 1 << 15;

/// This process's namespace, created on first use.
pub struct UpstreamNetns {
    name: String,
    /// The namespace side of the veth: where upstreams listen.
    pub ip: Ipv4Addr,
}

/// One per test process: every upstream of every test in it shares it.
static NETNS: OnceLock<Result<UpstreamNetns, String>> = OnceLock::new();

impl UpstreamNetns {
    /// This process's namespace, created on the first call. An error says
    /// why it could not be created; there is no fallback address.
    pub fn get() -> anyhow::Result<&'static Self> {
        NETNS
            .get_or_init(|| Self::create().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| {
                anyhow!(
                    "cannot create the network namespace the e2e upstreams listen in \
                     (the e2e tests need root and iproute2's `ip`): {e}"
                )
            })
    }

    /// A TCP listener on `self.ip`, port 0, inside the namespace.
    pub fn bind(&self) -> anyhow::Result<tokio::net::TcpListener> {
        let path = Path::new("/run/netns").join(&self.name);
        let ip = self.ip;
        // A thread of its own enters the namespace and ends with the bind,
        // so no other thread (tokio's included) ever leaves the root one.
        let listener = std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
            let ns = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", path.display()))?;
            let listener = std::net::TcpListener::bind((ip, 0))
                .with_context(|| format!("binding {ip}:0 in {}", path.display()))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow!("the thread binding in {} panicked", self.name))??;
        Ok(tokio::net::TcpListener::from_std(listener)?)
    }

    fn create() -> anyhow::Result<Self> {
        remove_stale()?;
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}");
        // At most 15 bytes (IFNAMSIZ - 1): a pid has at most 7 digits.
        let veth = format!("pe2e-{pid}");
        if Path::new("/run/netns").join(&name).exists() {
            // Left by an earlier process that had this pid.
            ip(&["netns", "delete", &name])?;
        }
        let subnet = free_subnet(pid)?;
        let host_ip = Ipv4Addr::from(RANGE_START + subnet * 4 + 1);
        let ns_ip = Ipv4Addr::from(RANGE_START + subnet * 4 + 2);
        ip(&["netns", "add", &name])?;
        if let Err(e) = connect(&name, &veth, host_ip, ns_ip) {
            let _ = ip(&["netns", "delete", &name]);
            return Err(e.context(format!("connecting {name} to the root namespace")));
        }
        Ok(Self { name, ip: ns_ip })
    }
}

/// The veth pair between the root namespace (`veth`, `host_ip`) and
/// `name` (`eth0`, `ns_ip`), both ends up, and `lo` up inside.
fn connect(name: &str, veth: &str, host_ip: Ipv4Addr, ns_ip: Ipv4Addr) -> anyhow::Result<()> {
    ip(&[
        "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name,
    ])?;
    ip(&["addr", "add", &format!("{host_ip}/30"), "dev", veth])?;
    ip(&["link", "set", veth, "up"])?;
    ip(&[
        "-n",
        name,
        "addr",
        "add",
        &format!("{ns_ip}/30"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", name, "link", "set", "eth0", "up"])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes the `portico-e2e-*` namespaces whose process has exited. One
/// that will not go is reported and left: [`free_subnet`] steers clear of
/// its addresses.
fn remove_stale() -> anyhow::Result<()> {
    let list = ip(&["netns", "list"])?;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && let Err(e) = ip(&["netns", "delete", name])
        {
            eprintln!("leaving the stale namespace {name}: {e:#}");
        }
    }
    Ok(())
}

/// The index of a /30 in 198.18.0.0/15 that no interface of the root
/// namespace has an address in: the pid's own, unless two pids share it.
fn free_subnet(pid: u32) -> anyhow::Result<u32> {
    let used: HashSet<u32> = root_addresses()?
        .into_iter()
        .map(u32::from)
        .filter(|a| (RANGE_START..RANGE_START + SUBNETS * 4).contains(a))
        .map(|a| (a - RANGE_START) / 4)
        .collect();
    (0..SUBNETS)
        .map(|i| (pid + i) % SUBNETS)
        .find(|s| !used.contains(s))
        .context("every /30 of 198.18.0.0/15 is in use")
}

/// The IPv4 addresses of this (the root) namespace's interfaces.
fn root_addresses() -> anyhow::Result<Vec<Ipv4Addr>> {
    let json = ip(&["-j", "-4", "addr", "show"])?;
    let links: serde_json::Value = serde_json::from_str(&json).context("parsing `ip -j addr`")?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().into_iter().flatten())
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .collect())
}

/// Runs `ip ARGS`; its stdout, or an error with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_range(ip: Ipv4Addr) -> bool {
        (RANGE_START..RANGE_START + SUBNETS * 4).contains(&u32::from(ip))
    }

    /// Upstreams listen inside the namespace on 198.18.0.0/15, on an address
    /// no root-namespace interface has, and answer through the veth.
    #[tokio::test]
    async fn upstreams_listen_inside_the_namespace_and_answer_through_the_veth() {
        let upstream = crate::Upstream::start("in-ns").await.unwrap();
        let std::net::IpAddr::V4(addr) = upstream.addr.ip() else {
            panic!("upstream on {}", upstream.addr);
        };
        assert!(in_range(addr), "upstream on {addr}");
        let root = root_addresses().unwrap();
        assert!(!root.contains(&addr), "{addr} is in the root namespace");
        let host_side = Ipv4Addr::from(u32::from(addr) - 1);
        assert!(root.contains(&host_side), "no {host_side} on the veth");
        let uri: http::Uri = format!("http://{}/x", upstream.addr).parse().unwrap();
        assert_eq!(crate::upstream::plain_get(&uri).await.unwrap(), "in-ns /x");
        let listed = ip(&["netns", "list"]).unwrap();
        assert!(
            listed.contains(&format!("{PREFIX}{}", std::process::id())),
            "{listed}"
        );
    }

    /// A namespace left by a process that has exited is deleted.
    #[test]
    fn stale_namespaces_are_removed() {
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let name = format!("{PREFIX}{}", gone.id());
        ip(&["netns", "add", &name]).unwrap();
        remove_stale().unwrap();
        let listed = ip(&["netns", "list"]).unwrap();
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{name} still listed:\n{listed}"
        );
    }
}

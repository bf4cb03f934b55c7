//! IPv4 neighbour (ARP) entries of a namespace, from `/proc/net/arp`, and
//! how long its neighbour resolution may hold a packet.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// `ATF_COM`: the entry has a link-layer address.
const ATF_COM: u32 = 0x2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub device: String,
    /// Whether the neighbour answered (a link-layer address is known).
    pub resolved: bool,
}

pub fn parse(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.first()?.parse().ok()?;
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            Some(Neighbour {
                addr,
                device: (*f.get(5)?).to_owned(),
                resolved: flags & ATF_COM != 0,
            })
        })
        .collect()
}

/// The IPv6 neighbour table of the calling thread's namespace, as
/// `ip -j -6 neigh show` prints it (there is no `/proc` file for it).
pub fn read_v6_here() -> Vec<Neighbour> {
    in_netns::output(None, "ip", &["-j", "-6", "neigh", "show"])
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|j| parse_v6(&j))
        .unwrap_or_default()
}

fn parse_v6(json: &serde_json::Value) -> Vec<Neighbour> {
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let states = n["state"].as_array()?;
            let unresolved = states
                .iter()
                .any(|s| matches!(s.as_str(), Some("INCOMPLETE" | "FAILED" | "NONE")));
            Some(Neighbour {
                addr: n["dst"].as_str()?.parse().ok()?,
                device: n["dev"].as_str()?.to_owned(),
                resolved: !unresolved,
            })
        })
        .collect()
}

/// The kernel's floor for a neighbour's `retrans_time` (`HZ / 100`).
const RETRANS_FLOOR: Duration = Duration::from_millis(10);

/// How long one device's neighbour settings let a packet wait for an
/// address that nobody answers: the kernel sends `mcast_solicit` +
/// `app_solicit` solicitations, one each `retrans_time_ms`, then drops what
/// it queued (`NEIGH_FAILED`). `dir` is the device's
/// `/proc/sys/net/ipv{4,6}/neigh/DEV`.
fn resolution_limit_of(dir: &Path) -> Option<Duration> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let solicitations = read("mcast_solicit")? + read("app_solicit").unwrap_or(0);
    let retrans = Duration::from_millis(read("retrans_time_ms")?).max(RETRANS_FLOOR);
    Some(retrans * u32::try_from(solicitations).unwrap_or(u32::MAX))
}

/// The longest the calling thread's namespace holds a packet for a
/// neighbour being resolved, over its devices' IPv4 and IPv6 settings
/// (`root` is `/proc/sys/net`).
fn resolution_limit_under(root: &Path) -> Option<Duration> {
    ["ipv4", "ipv6"]
        .iter()
        .filter_map(|family| std::fs::read_dir(root.join(family).join("neigh")).ok())
        .flatten()
        .flatten()
        .filter_map(|dev| resolution_limit_of(&dev.path()))
        .max()
}

/// How long each namespace's neighbour resolution may hold a packet, read
/// from inside it when first asked, and again once a read is older than
/// [`ResolutionLimits::FRESH`].
#[derive(Default)]
pub struct ResolutionLimits {
    read: HashMap<u32, (Instant, Option<Duration>)>,
}

impl ResolutionLimits {
    const FRESH: Duration = Duration::from_secs(1);

    /// The limit in namespace `netns`, opened by `path` (asked only when
    /// it must be read); none if it can't be entered.
    pub fn of(&mut self, netns: u32, path: impl FnOnce() -> Option<PathBuf>) -> Option<Duration> {
        if let Some((at, limit)) = self.read.get(&netns) {
            if at.elapsed() < Self::FRESH {
                return *limit;
            }
        }
        let limit = path().and_then(|p| {
            in_netns::call(&p, || resolution_limit_under(Path::new("/proc/sys/net")))
                .ok()
                .flatten()
        });
        self.read.insert(netns, (Instant::now(), limit));
        limit
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    #[test]
    fn resolution_limit_is_the_slowest_devices_solicitations() {
        let root = std::env::temp_dir().join(format!("pathtrace-neigh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = |family: &str, name: &str, mcast: u64, app: u64, retrans_ms: u64| {
            let dir = root.join(family).join("neigh").join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for (file, v) in [
                ("mcast_solicit", mcast),
                ("app_solicit", app),
                ("ucast_solicit", 3),
                ("retrans_time_ms", retrans_ms),
            ] {
                std::fs::write(dir.join(file), format!("{v}\n")).expect("write");
            }
        };
        dev("ipv4", "default", 3, 0, 1000);
        dev("ipv4", "r1", 3, 0, 1500);
        dev("ipv6", "r1", 2, 1, 1000);
        dev("ipv6", "lo", 3, 0, 0);
        let limit = super::resolution_limit_under(&root);
        assert_eq!(limit, Some(Duration::from_millis(4500)));
        assert_eq!(
            super::resolution_limit_of(&root.join("ipv6/neigh/lo")),
            Some(Duration::from_millis(30)),
            "retrans_time has the kernel's floor"
        );
        assert_eq!(
            super::resolution_limit_under(Path::new("/nonexistent")),
            None
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn ndp_table() {
        let json: serde_json::Value = serde_json::from_str(
            r#"[{"dst":"2001:db8:20::1","dev":"s0","lladdr":"02:00:00:00:00:01","state":["STALE"]},
            {"dst":"2001:db8:20::9","dev":"s0","state":["FAILED"]}]"#,
        )
        .expect("json");
        let n = super::parse_v6(&json);
        assert_eq!(n.len(), 2);
        assert!(n[0].resolved && !n[1].resolved);
        assert_eq!(
            n[0].addr,
            "2001:db8:20::1".parse::<std::net::IpAddr>().expect("ip")
        );
    }

    #[test]
    fn arp_table() {
        let text =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0\n\
192.0.2.77       0x1         0x0         00:00:00:00:00:00     *        a0\n";
        let n = super::parse(text);
        assert_eq!(n.len(), 2);
        assert!(n[0].resolved);
        assert!(!n[1].resolved);
        assert_eq!(n[1].device, "a0");
    }
}

/// The neighbour a namespace needed for a destination: the route's gateway,
/// else the destination itself, on the route's device, and its state in the
/// neighbour table (`FAILED`, `INCOMPLETE`, …), as `ip -j route get` and
/// `ip -j neigh show` say (IPv4's ARP and IPv6's NDP alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub addr: IpAddr,
    pub device: String,
    pub state: Option<String>,
}

/// [`NextHop`] for `dst` in the namespace at `path` (the caller's own when `None`).
pub fn next_hop(path: Option<&std::path::Path>, dst: IpAddr) -> Option<NextHop> {
    let dst_s = dst.to_string();
    let route = in_netns::output(path, "ip", &["-j", "route", "get", &dst_s]).ok()?;
    let route: serde_json::Value = serde_json::from_str(&route).ok()?;
    let (addr, device) = next_hop_of(&route, dst)?;
    let addr_s = addr.to_string();
    let neigh = in_netns::output(
        path,
        "ip",
        &["-j", "neigh", "show", "to", &addr_s, "dev", &device],
    )
    .ok();
    let state = neigh
        .and_then(|n| serde_json::from_str::<serde_json::Value>(&n).ok())
        .and_then(|n| state_of(&n));
    Some(NextHop {
        addr,
        device,
        state,
    })
}

fn next_hop_of(route: &serde_json::Value, dst: IpAddr) -> Option<(IpAddr, String)> {
    let r = route.as_array()?.first()?;
    let device = r["dev"].as_str()?.to_owned();
    let addr = r["gateway"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(dst);
    Some((addr, device))
}

fn state_of(neigh: &serde_json::Value) -> Option<String> {
    let states: Vec<&str> = neigh
        .as_array()?
        .first()?
        .get("state")?
        .as_array()?
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    (!states.is_empty()).then(|| states.join(","))
}

#[cfg(test)]
mod next_hop_tests {
    use super::*;

    #[test]
    fn the_gateway_else_the_destination_and_its_state() {
        let dst: IpAddr = "198.51.100.77".parse().expect("ip");
        let via: serde_json::Value = serde_json::from_str(
            r#"[{"dst":"198.51.100.77","gateway":"192.0.2.254","dev":"a0","prefsrc":"192.0.2.1","flags":[],"uid":0,"cache":[]}]"#,
        )
        .expect("json");
        assert_eq!(
            next_hop_of(&via, dst),
            Some(("192.0.2.254".parse().expect("ip"), "a0".into()))
        );
        let direct: serde_json::Value = serde_json::from_str(
            r#"[{"dst":"2001:db8:1::77","dev":"a0","prefsrc":"2001:db8:1::1"}]"#,
        )
        .expect("json");
        let v6: IpAddr = "2001:db8:1::77".parse().expect("ip");
        assert_eq!(next_hop_of(&direct, v6), Some((v6, "a0".into())));
        let failed: serde_json::Value =
            serde_json::from_str(r#"[{"dst":"2001:db8:1::77","dev":"a0","state":["FAILED"]}]"#)
                .expect("json");
        assert_eq!(state_of(&failed).as_deref(), Some("FAILED"));
        assert_eq!(state_of(&serde_json::json!([])), None);
    }
}

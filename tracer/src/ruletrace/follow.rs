//! Following the packet: rule tracing starts by itself in each network
//! namespace a traced packet enters that has firewall rules.
use std::{collections::HashSet, net::IpAddr};

use super::{watch::ArmRefused, NetnsTarget, RuleWatch, MAX_ARMED};
use crate::{names::NetnsNames, netfilter, track::Packet};

/// At most this many namespaces are armed before the first packet.
pub const START_BOUND: usize = 16;
/// At most this many namespaces are looked at for that.
const START_LOOK: usize = 256;
/// Threads that look at them side by side.
const LOOKERS: usize = 4;

/// How near the calling thread's namespace is to the flow's destinations,
/// when it is on the flow's likely path: it holds one of `dsts` (0), routes
/// to one over a link it is on (1), through a gateway (2) or only by its
/// default route (3); or it forwards packets (routing, or bridging through
/// iptables as a hypervisor's bridge does) with no route to them (4).
/// `None`: off the likely path.
fn nearness(dsts: &[IpAddr]) -> Option<u8> {
    // Not by binding a socket: in a namespace without a single route the
    // kernel lets a socket bind any IPv4 address.
    if !dsts.is_empty() {
        let v4 = crate::evidence::link::v4_addrs();
        let holds = |a: &IpAddr| match a {
            IpAddr::V4(a) => v4.iter().any(|(_, have, _)| have == a),
            IpAddr::V6(_) => std::net::UdpSocket::bind((*a, 0)).is_ok(),
        };
        if dsts.iter().any(holds) {
            return Some(0);
        }
    }
    let on = |f: &str| std::fs::read_to_string(f).is_ok_and(|s| s.trim() != "0");
    let forwards = on("/proc/sys/net/ipv4/ip_forward")
        || on("/proc/sys/net/ipv6/conf/all/forwarding")
        || on("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !forwards {
        return None;
    }
    if dsts.is_empty() {
        return Some(4);
    }
    let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
    let by_route = dsts
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) => route_kind(&routes, *v4),
            IpAddr::V6(_) => None,
        })
        .min();
    Some(by_route.unwrap_or(4))
}

/// 1 for a link route to `dst`, 2 through a gateway, 3 the default route,
/// in a `/proc/net/route` table (longest prefix wins).
fn route_kind(table: &str, dst: std::net::Ipv4Addr) -> Option<u8> {
    crate::evidence::link::best_route(table, dst).map(|r| match (r.len, r.via_gateway) {
        (0, _) => 3,
        (_, true) => 2,
        (_, false) => 1,
    })
}

#[derive(Debug, Default)]
pub struct Follow {
    enabled: bool,
    /// Namespaces seen in hops, each considered once.
    seen: HashSet<u32>,
    queue: Vec<u32>,
    /// Namespaces armed by following (not up front).
    followed: HashSet<u32>,
    /// Namespaces with rules that the run ended before arming.
    never_armed: HashSet<u32>,
    bound_said: bool,
}

impl Follow {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    /// Notes a namespace a hop was seen in.
    pub fn saw(&mut self, netns: u32) {
        if self.enabled && netns != 0 && self.seen.insert(netns) {
            self.queue.push(netns);
        }
    }

    /// Arms rule tracing in the namespaces seen since the last call that
    /// have rules; returns one line per namespace armed or refused.
    pub fn arm_new(&mut self, watch: &mut RuleWatch, names: &mut NetnsNames) -> Vec<String> {
        let mut said = Vec::new();
        for ino in std::mem::take(&mut self.queue) {
            if watch.is_armed(ino) {
                continue;
            }
            let Some(path) = names.path(ino) else {
                log::debug!("netns {ino}: no process or /run/netns entry opens it");
                continue;
            };
            names.resolve(ino);
            let label = names
                .name(ino)
                .map_or_else(|| format!("netns:{ino}"), str::to_owned);
            match netfilter::has_rules(Some(&path)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    log::debug!("netns {label}: can't list its rules: {e}");
                    continue;
                }
            }
            let target = NetnsTarget {
                path: Some(path),
                inode: ino,
                label: label.clone(),
            };
            match watch.arm(&target) {
                Ok(()) => {
                    self.followed.insert(ino);
                    said.push(format!(
                        "followed the packet into {label}: rule tracing started there"
                    ));
                }
                Err(ArmRefused::Already) => {}
                Err(ArmRefused::Bound) => {
                    if !std::mem::replace(&mut self.bound_said, true) {
                        said.push(format!(
                            "rule tracing runs in {MAX_ARMED} namespaces, the most it arms; \
                             not following into {label} or further namespaces"
                        ));
                    }
                }
            }
        }
        said
    }

    /// Arms rule tracing, before the first packet, in the namespaces on the
    /// flow's likely path that have rules: those that forward (routers,
    /// Docker hosts, guests running Docker, hypervisors whose bridges pass
    /// frames through iptables) or hold a destination address of the
    /// filters, the [`START_BOUND`] nearest to the destinations (see
    /// [`nearness`]) when there are more. Returns their names, and one line
    /// when some were left for following.
    pub fn arm_likely(
        &mut self,
        watch: &mut RuleWatch,
        names: &mut NetnsNames,
        dsts: &[IpAddr],
    ) -> (Vec<String>, Option<String>) {
        if !self.enabled {
            return (Vec::new(), None);
        }
        let mut known = names.known_paths();
        known.sort_unstable_by_key(|(ino, _)| *ino);
        known.retain(|(ino, _)| !watch.is_armed(*ino));
        known.truncate(START_LOOK);
        // One visit to each namespace, a few namespaces at a time.
        let paths: Vec<&std::path::Path> = known.iter().map(|(_, p)| p.as_path()).collect();
        let looks = in_netns::call_each(&paths, LOOKERS, || {
            let near = nearness(dsts)?;
            netfilter::has_rules_here().ok()?.then_some(near)
        });
        let mut likely: Vec<(u8, u32, std::path::PathBuf)> = known
            .into_iter()
            .zip(looks)
            .filter_map(|((ino, path), look)| Some((look.ok().flatten()?, ino, path)))
            .collect();
        likely.sort_by_key(|(near, ino, _)| (*near, *ino));
        let left = likely.len().saturating_sub(START_BOUND);
        let targets: Vec<NetnsTarget> = likely
            .into_iter()
            .take(START_BOUND)
            .map(|(_, ino, path)| {
                names.resolve(ino);
                let label = names
                    .name(ino)
                    .map_or_else(|| format!("netns:{ino}"), str::to_owned);
                NetnsTarget {
                    path: Some(path),
                    inode: ino,
                    label,
                }
            })
            .collect();
        let armed = watch.arm_all(&targets);
        self.seen.extend(targets.iter().map(|t| t.inode));
        let bound = (left > 0).then(|| {
            format!(
                "{} namespaces with rules are on the flow's likely path, more than the {START_BOUND} \
                 armed before the first packet: the nearest to the destination are armed, the \
                 other {left} when a packet enters them",
                armed.len() + left
            )
        });
        (armed, bound)
    }

    /// At the end of the run: the namespaces seen but not yet considered
    /// that have rules (looked at, not armed), so that packets which passed
    /// them say their rules went untraced.
    pub fn ended_before_arming(&mut self, names: &mut NetnsNames) {
        for ino in std::mem::take(&mut self.queue) {
            let has_rules = names
                .path(ino)
                .is_some_and(|path| netfilter::has_rules(Some(&path)).unwrap_or(false));
            if has_rules {
                self.never_armed.insert(ino);
            }
        }
    }

    /// Marks the namespaces `p` passed through before following armed them.
    pub fn mark_late(&self, watch: &RuleWatch, p: &mut Packet) {
        for &ino in &self.never_armed {
            if !watch.is_armed(ino)
                && p.hops.iter().any(|h| h.netns == ino)
                && !p.rules_late.contains(&ino)
            {
                p.rules_late.push(ino);
            }
        }
        for &ino in &self.followed {
            let Some(armed) = watch.armed_at(ino) else {
                continue;
            };
            let before = p.hops.iter().any(|h| h.netns == ino && h.t_ns < armed);
            let has_rules = p.hops.iter().any(|h| h.netns == ino && h.rule.is_some());
            if before && !has_rules && !p.rules_late.contains(&ino) {
                p.rules_late.push(ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_route_is_nearer_than_a_gateway_and_the_default_route() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     r0\tA07100CB\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0\n\
                     r2\t00643360\tFE0200C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     r1\t00000000\tFE0200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        let at = |a: &str| route_kind(table, a.parse().expect("address"));
        assert_eq!(at("203.0.113.161"), Some(1), "on r0's link");
        assert_eq!(at("96.51.100.7"), Some(2), "through a gateway");
        assert_eq!(at("192.0.2.9"), Some(3), "the default route only");
        assert_eq!(route_kind("", "192.0.2.9".parse().expect("address")), None);
    }
}

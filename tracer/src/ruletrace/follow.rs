//! Following the packet: rule tracing starts by itself in each network
//! namespace a traced packet enters that has firewall rules.
use std::{collections::HashSet, net::IpAddr};

use super::{watch::ArmRefused, NetnsTarget, RuleWatch, MAX_ARMED};
use crate::{
    names::{in_netns, NetnsNames},
    netfilter,
    track::Packet,
};

/// At most this many namespaces are armed before the first packet.
pub const START_BOUND: usize = 16;
/// At most this many namespaces are looked at for that.
const START_LOOK: usize = 256;

/// Whether the calling thread's namespace forwards packets (routing, or
/// bridging through iptables as a hypervisor's bridge does), or holds one
/// of `addrs`.
fn on_likely_path(addrs: &[IpAddr]) -> bool {
    let on = |f: &str| std::fs::read_to_string(f).is_ok_and(|s| s.trim() != "0");
    on("/proc/sys/net/ipv4/ip_forward")
        || on("/proc/sys/net/ipv6/conf/all/forwarding")
        || on("/proc/sys/net/bridge/bridge-nf-call-iptables")
        || addrs
            .iter()
            .any(|a| std::net::UdpSocket::bind((*a, 0)).is_ok())
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
    /// filters. Returns their names.
    pub fn arm_likely(
        &mut self,
        watch: &mut RuleWatch,
        names: &mut NetnsNames,
        dsts: &[IpAddr],
    ) -> Vec<String> {
        if !self.enabled {
            return Vec::new();
        }
        let mut known = names.known_paths();
        known.sort_unstable_by_key(|(ino, _)| *ino);
        let mut armed = Vec::new();
        for (ino, path) in known.into_iter().take(START_LOOK) {
            if armed.len() >= START_BOUND || watch.is_armed(ino) {
                continue;
            }
            let likely = in_netns(&path, || on_likely_path(dsts)).unwrap_or(false);
            if !likely || !netfilter::has_rules(Some(&path)).unwrap_or(false) {
                continue;
            }
            names.resolve(ino);
            let label = names
                .name(ino)
                .map_or_else(|| format!("netns:{ino}"), str::to_owned);
            let target = NetnsTarget {
                path: Some(path),
                inode: ino,
                label: label.clone(),
            };
            if watch.arm(&target).is_ok() {
                self.seen.insert(ino);
                armed.push(label);
            }
        }
        armed
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

//! What a diagnosis may say about a packet, gathered once.
use std::collections::HashMap;

use super::{manager::firewalld_zone, Manager};
use crate::{
    events::{HopKind, RuleHit},
    model::IcmpError,
    names::View,
    names::{in_netns, Containers},
    ruletrace::deciding_rule,
    track::{FateKind, Packet},
};

pub struct Facts {
    pub fate: FateKind,
    pub reason: Option<String>,
    pub rule: Option<RuleHit>,
    /// IP forwarding in the namespace where the packet died, when it matters.
    pub forwarding: Option<bool>,
    /// A TCP segment with ACK set whose last hop was an arrival.
    pub silent_tcp: bool,
    /// TCP flags as the packet left its sender.
    pub tcp_flags: u8,
    /// The packet answers a request (it goes the other way).
    pub reply: bool,
    pub icmp: Option<IcmpError>,
    /// Who manages the deciding rule's table.
    pub manager: Option<Manager>,
    /// Dropped by iptables run on a bridged frame (br_netfilter).
    pub bridged: bool,
    values: HashMap<&'static str, String>,
}

/// "container web", "namespace NAME" or "the host".
pub(super) fn place(view: &mut View, netns: u32) -> String {
    if let Some(c) = view.netns.container(netns) {
        return format!("container {c}");
    }
    match view.netns_name(netns) {
        Some(n) if n == "host" => "the host".into(),
        Some(n) => format!("namespace {n}"),
        None => format!("namespace {netns}"),
    }
}

/// What a REJECT answers with: (outcome word, what the client gets, errno).
fn reject_reply(text: &str, v6: bool) -> (&'static str, &'static str, &'static str) {
    let t = text.to_ascii_lowercase();
    let icmp = if v6 { "an ICMPv6" } else { "an ICMP" };
    if t.contains("tcp-reset") || t.contains("tcp reset") {
        ("refused", "a TCP reset", "ECONNREFUSED")
    } else if t.contains("admin-prohibited") || t.contains("adm-prohibited") {
        if v6 {
            ("prohibited", "an ICMPv6 admin-prohibited", "EACCES")
        } else {
            ("prohibited", "an ICMP admin-prohibited", "EHOSTUNREACH")
        }
    } else if t.contains("host-prohibited") || t.contains("net-prohibited") {
        ("prohibited", "an ICMP host-prohibited", "EHOSTUNREACH")
    } else if t.contains("host-unreachable") || t.contains("addr-unreachable") {
        ("unreachable", "a host-unreachable", "EHOSTUNREACH")
    } else if t.contains("net-unreachable") || t.contains("no-route") {
        ("unreachable", "a net-unreachable", "ENETUNREACH")
    } else {
        let _ = icmp;
        if v6 {
            ("refused", "an ICMPv6 port-unreachable", "ECONNREFUSED")
        } else {
            ("refused", "an ICMP port-unreachable", "ECONNREFUSED")
        }
    }
}

/// What the kernel does when nothing listens: TCP answers with a reset, UDP
/// with an ICMP port-unreachable (within the ICMP rate limit), anything
/// else with nothing at all.
pub(super) fn no_socket_answer(proto: u8, v6: bool, client: &str) -> String {
    match (proto, v6) {
        (6, _) => format!("the kernel answered {client} with a TCP reset"),
        (17 | 136, false) => format!(
            "the kernel answers {client} with an ICMP port-unreachable, as its ICMP rate limit allows"
        ),
        (17 | 136, true) => format!(
            "the kernel answers {client} with an ICMPv6 port-unreachable, as its ICMP rate limit allows"
        ),
        _ => format!("the kernel freed it without answering {client}"),
    }
}

/// The deciding rule's names and numbers, for advice templates.
fn rule_values(r: &RuleHit, manager: Manager, v: &mut HashMap<&'static str, String>) {
    v.insert("rule_phrase", r.phrase());
    v.insert("at_rule", format!(" at {}", r.phrase()));
    v.insert("chain", r.chain.clone());
    v.insert("table", r.table.clone());
    v.insert("family", r.family.clone());
    // Docker's and ufw's chains are edited with the iptables that wrote them.
    let flavour = Manager::iptables_flavour(r).unwrap_or(manager);
    v.insert("tool", flavour.iptables_tool(&r.family).to_owned());
    v.insert("manager", manager.name().to_owned());
    if let Some(i) = r.index {
        v.insert("index", i.to_string());
        if r.chain == "DOCKER-USER" && !r.policy {
            v.insert("docker_user_index", i.to_string());
        }
    }
    if let Some(h) = r.handle {
        v.insert("handle", h.to_string());
    }
    if let Some(z) = firewalld_zone(&r.chain) {
        v.insert("zone", z.to_owned());
    }
    v.insert(
        "manager_note",
        format!("{} seems to manage this table. ", manager.name()),
    );
}

/// Whether a dropped packet died in an `ip` hook that a bridge ran for it
/// (br_netfilter): an `ip` verdict nested in a `bridge` hook of the same
/// namespace (fentry and kprobe tiers), or `br_nf_*` frames on the drop's
/// stack (tracepoint tier).
fn bridged_drop(p: &Packet, view: &View) -> bool {
    use crate::model::Family;
    let Some(at) = p.fate.at.and_then(|i| p.hops.get(i)) else {
        return false;
    };
    let in_ns = || p.hops.iter().filter(|h| h.netns == at.netns);
    let bridge_hook = in_ns().any(|h| h.hook_family() == Some(Family::Bridge));
    let ip_drop = in_ns().any(|h| {
        h.hook_family() == Some(Family::Ipv4) && h.verdict == Some(crate::model::Verdict::Drop)
    }) || deciding_rule(p).is_some_and(|r| r.family == "ip");
    let br_nf_stack = view.syms.as_ref().is_some_and(|syms| {
        at.stack
            .iter()
            .filter_map(|&a| syms.symbolize(a).map(|(n, _)| n))
            .any(|n| n.starts_with("br_nf_"))
    });
    (bridge_hook && ip_drop) || br_nf_stack
}

impl Facts {
    pub fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    pub fn build(p: &Packet, view: &mut View, containers: &Containers, reply: bool) -> Self {
        let at = p.fate.at.and_then(|i| p.hops.get(i));
        let first = p.hops.iter().find_map(|h| h.tuple);
        let last = p.hops.iter().rev().find_map(|h| h.tuple);
        let reason = at.and_then(|h| view.reason(h));
        let rule = deciding_rule(p).cloned();
        let mut v: HashMap<&'static str, String> = HashMap::new();
        let client = first
            .map(|t| t.saddr.to_string())
            .unwrap_or_else(|| "the sender".into());
        let proto = first.map(|t| t.proto_name()).unwrap_or_else(|| "ip".into());
        let (final_addr, final_port) = last
            .map(|t| (t.daddr.to_string(), t.dport))
            .unwrap_or_default();
        let container = containers
            .with_ip(&final_addr)
            .map(|c| c.name.clone())
            .or_else(|| {
                p.hops
                    .iter()
                    .rev()
                    .find_map(|h| view.netns.container(h.netns).map(str::to_owned))
            });
        let published = first.and_then(|t| containers.publishing(t.dport, &proto));
        let mut target = first
            .map(|t| format!("{}:{}", t.daddr, t.dport))
            .unwrap_or_default();
        match (&container, published) {
            (_, Some((c, pb))) => {
                target.push_str(&format!(
                    " (published port {} → container {}:{}",
                    pb.public, c.name, pb.private
                ));
                if let Some(ip) = &c.ip {
                    target.push_str(&format!(", {ip}:{}", pb.private));
                }
                target.push(')');
                v.insert(
                    "published_note",
                    format!(
                        " (published port {} → {}:{})",
                        pb.public, c.name, pb.private
                    ),
                );
            }
            (Some(c), None) if first.map(|t| t.daddr.to_string()) != Some(final_addr.clone()) => {
                target.push_str(&format!(
                    " (DNAT to container {c}, {final_addr}:{final_port})"
                ));
            }
            _ if first.is_some_and(|t| t.daddr.to_string() != final_addr) => {
                target.push_str(&format!(" (DNAT to {final_addr}:{final_port})"));
            }
            _ => {}
        }
        v.entry("published_note").or_default();
        v.insert("at_rule", String::new());
        let netns = at.map(|h| h.netns).unwrap_or(0);
        let where_ = place(view, netns);
        let mut forwarding = None;
        if reason.as_deref() == Some("IP_INADDRERRORS") {
            let ifname = at.map(|h| h.ifname.clone()).unwrap_or_default();
            forwarding = view.netns.path(netns).and_then(|path| {
                in_netns(&path, || {
                    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"))
                        .ok()
                })
                .flatten()
                .map(|s| s.trim() != "0")
            });
        }
        let last_real = p.hops.iter().rev().find(|h| h.kind != HopKind::NfRule);
        let silent_tcp = last_real.is_some_and(|h| {
            h.kind == HopKind::Rx
                && h.tuple.is_some_and(|t| t.proto == 6)
                && h.tcp_flags & 0x10 != 0
        });
        if let Some(h) = last_real {
            v.insert("last_place", place(view, h.netns));
        }
        let last_hop = last_real
            .map(|h| {
                format!(
                    "{} on {} in {}",
                    h.kind.as_str(),
                    if h.ifname.is_empty() { "-" } else { &h.ifname },
                    place(view, h.netns)
                )
            })
            .unwrap_or_default();
        v.insert("client", client.clone());
        v.insert("target", target);
        v.insert("proto", proto);
        v.insert("final_addr", final_addr);
        v.insert("final_port", final_port.to_string());
        v.insert("where", where_);
        v.insert(
            "ifname",
            at.map(|h| h.ifname.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into()),
        );
        v.insert(
            "hook",
            p.fate
                .hook
                .map(|h| h.as_str().to_owned())
                .unwrap_or_else(|| "an unknown hook".into()),
        );
        v.insert(
            "reason",
            reason.clone().unwrap_or_else(|| "no reason given".into()),
        );
        v.insert(
            "location",
            at.and_then(|h| view.location(h))
                .unwrap_or_else(|| "an unknown place".into()),
        );
        v.insert("last_hop", last_hop);
        let v6 = first.is_some_and(|t| t.saddr.is_ipv6());
        v.insert(
            "no_socket_answer",
            no_socket_answer(first.map(|t| t.proto).unwrap_or(0), v6, &client),
        );
        v.insert("l3", if v6 { "ip6" } else { "ip" }.into());
        v.insert("fw_family", if v6 { "ipv6" } else { "ipv4" }.into());
        let manager = rule.as_ref().map(|r| {
            let walked = p.hops.iter().filter_map(|h| h.rule.as_deref());
            let m = Manager::of(r, walked);
            rule_values(r, m, &mut v);
            if m == Manager::Firewalld && !v.contains_key("zone") {
                // firewalld's last reject sits in filter_INPUT, after the
                // zone chains the packet went through.
                let zone = p
                    .hops
                    .iter()
                    .filter_map(|h| h.rule.as_deref())
                    .filter(|h| h.netns == r.netns && h.table == r.table)
                    .find_map(|h| firewalld_zone(&h.chain));
                if let Some(z) = zone {
                    v.insert("zone", z.to_owned());
                }
            }
            let (word, reply_kind, errno) = reject_reply(r.text.as_deref().unwrap_or_default(), v6);
            v.insert("reject_word", word.into());
            v.insert("reject_reply", reply_kind.into());
            v.insert("reject_errno", errno.into());
            m
        });
        let icmp = p.hops.iter().rev().find_map(|h| h.icmp);
        if let Some(e) = icmp {
            v.insert("icmp", e.to_string());
            let q = e.quoted;
            v.insert(
                "quoted",
                format!(
                    "{}:{} → {}:{} ({})",
                    q.saddr,
                    q.sport,
                    q.daddr,
                    q.dport,
                    q.proto_name()
                ),
            );
        }
        let tcp_flags = p
            .hops
            .iter()
            .find(|h| h.tuple.is_some())
            .map(|h| h.tcp_flags)
            .unwrap_or(0);
        let bridged = p.fate.kind == FateKind::Dropped && bridged_drop(p, view);
        Self {
            fate: p.fate.kind,
            reason,
            rule,
            forwarding,
            silent_tcp,
            tcp_flags,
            reply,
            icmp,
            manager,
            bridged,
            values: v,
        }
    }

    /// Facts from explicit values, for tests.
    #[cfg(test)]
    pub fn from_parts(
        fate: FateKind,
        reason: Option<&str>,
        rule: Option<RuleHit>,
        values: &[(&'static str, &str)],
    ) -> Self {
        let manager = rule
            .as_ref()
            .map(|r| Manager::of(r, std::iter::empty::<&RuleHit>()));
        Self {
            fate,
            reason: reason.map(str::to_owned),
            rule,
            forwarding: None,
            silent_tcp: false,
            tcp_flags: 0,
            reply: false,
            icmp: None,
            manager,
            bridged: false,
            values: values.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        }
    }

    /// Sets the rule-derived values (names, numbers, manager), for tests.
    #[cfg(test)]
    pub fn set_rule_values(&mut self, r: &RuleHit) {
        let m = Manager::of(r, std::iter::empty::<&RuleHit>());
        rule_values(r, m, &mut self.values);
        let v6 = false;
        let (word, kind, errno) = reject_reply(r.text.as_deref().unwrap_or_default(), v6);
        self.values.insert("reject_word", word.into());
        self.values.insert("reject_reply", kind.into());
        self.values.insert("reject_errno", errno.into());
        self.rule = Some(r.clone());
        self.manager = Some(m);
    }

    #[cfg(test)]
    pub fn with_forwarding(mut self, on: bool) -> Self {
        self.forwarding = Some(on);
        self
    }
}

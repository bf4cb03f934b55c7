//! What a diagnosis may say about a packet, gathered once.
use std::collections::HashMap;

use crate::{
    events::{HopKind, RuleHit},
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

fn fix_commands(r: &RuleHit, client: &str) -> (String, String) {
    let iptables = r.text.as_deref().is_some_and(|t| t.starts_with("-A "));
    let tool = if r.family == "ip6" {
        "ip6tables"
    } else {
        "iptables"
    };
    match (iptables, r.index, r.handle) {
        (true, Some(i), _) => (
            format!("{tool} -t {} -D {} {i}", r.table, r.chain),
            format!(
                "{tool} -t {} -I {} {i} -s {client} -j ACCEPT",
                r.table, r.chain
            ),
        ),
        (_, _, Some(h)) => (
            format!(
                "nft delete rule {} {} {} handle {h}",
                r.family, r.table, r.chain
            ),
            format!(
                "nft insert rule {} {} {} position {h} ip saddr {client} accept",
                r.family, r.table, r.chain
            ),
        ),
        _ => (
            "remove the rule".into(),
            format!("accept {client} before it"),
        ),
    }
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

    pub fn build(p: &Packet, view: &mut View, containers: &Containers) -> Self {
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
        if let Some(r) = &rule {
            let (del, ins) = fix_commands(r, &client);
            v.insert("rule_phrase", r.phrase());
            v.insert("chain", r.chain.clone());
            v.insert("table", r.table.clone());
            v.insert("delete_cmd", del);
            v.insert("insert_cmd", ins);
        }
        let bridged = p.fate.kind == FateKind::Dropped && bridged_drop(p, view);
        Self {
            fate: p.fate.kind,
            reason,
            rule,
            forwarding,
            silent_tcp,
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
        Self {
            fate,
            reason: reason.map(str::to_owned),
            rule,
            forwarding: None,
            silent_tcp: false,
            bridged: false,
            values: values.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        }
    }

    #[cfg(test)]
    pub fn with_forwarding(mut self, on: bool) -> Self {
        self.forwarding = Some(on);
        self
    }
}

//! NAT read off a packet's hops. Hairpin NAT: a namespace that DNATs the packet
//! and sends it back out of the interface it came in on, its source left
//! as the client. The server then answers the client directly on their
//! shared LAN, from an address the client never called, and the client
//! resets that answer: the connection never forms.
use std::net::{IpAddr, Ipv4Addr};

use super::{
    fact::{Fact, Values},
    nat_rules::{met, nat_rules, Masquerade, Met, NatRules},
};
use crate::{
    events::HopKind,
    evidence::{
        dnat_rules::{DnatSet, Field, NatMatch, Right},
        Evidence,
    },
    model::Tuple,
    names::View,
    track::Packet,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hairpin {
    pub netns: u32,
    pub device: String,
    /// The LAN on that device (`192.0.2.0/24`), or the client alone.
    pub lan: String,
}

fn network(addr: Ipv4Addr, len: u32) -> Ipv4Addr {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ipv4Addr::from(u32::from(addr) & mask)
}

/// The network on `device` in `netns` that holds `client` (`192.0.2.0/24`),
/// else the client's address alone.
fn lan_of(view: &mut View, netns: u32, device: &str, client: IpAddr) -> String {
    match (client, view.netns.path(netns)) {
        (IpAddr::V4(c), Some(path)) => in_netns::call(&path, || {
            crate::evidence::link::v4_net_of(device)
                .filter(|(a, len)| network(*a, *len) == network(c, *len))
                .or_else(|| routed_net(c))
        })
        .ok()
        .flatten()
        .map(|(a, len)| format!("{}/{len}", network(a, len))),
        _ => None,
    }
    .unwrap_or_else(|| client.to_string())
}

/// The network of the calling thread's namespace's route to `client`,
/// when it is a route of its own (not the default).
fn routed_net(client: Ipv4Addr) -> Option<(Ipv4Addr, u32)> {
    let table = std::fs::read_to_string("/proc/thread-self/net/route").ok()?;
    let route = crate::evidence::link::best_route(&table, client)?;
    (route.len > 0).then_some((client, route.len))
}

/// A request that a router forwarded with its source unchanged: answers to
/// it must find their own way back to the client's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmasqueraded {
    pub netns: u32,
    /// The devices it came in and left by.
    pub in_dev: String,
    pub out_dev: String,
    /// The flow as it left the router.
    pub sent: Tuple,
    /// Who writes the router's rules, as the packet met them there.
    pub met: Met,
}

/// The routers on `p`'s path that forwarded it (in by one device, out by
/// another) with the client's address still its source, in path order.
pub fn unmasqueraded(p: &Packet) -> Vec<Unmasqueraded> {
    let Some(client) = p.hops.iter().find_map(|h| h.tuple).map(|t| t.saddr) else {
        return Vec::new();
    };
    let mut out: Vec<Unmasqueraded> = Vec::new();
    for (i, rx) in p.hops.iter().enumerate() {
        if rx.kind != HopKind::Rx || out.iter().any(|u| u.netns == rx.netns) {
            continue;
        }
        let Some(tx) = p.hops[i + 1..]
            .iter()
            .find(|tx| tx.kind == HopKind::Tx && tx.netns == rx.netns && tx.ifindex != rx.ifindex)
        else {
            continue;
        };
        let Some(sent) = tx.tuple.filter(|t| t.saddr == client) else {
            continue;
        };
        out.push(Unmasqueraded {
            netns: rx.netns,
            in_dev: rx.ifname.to_string(),
            out_dev: tx.ifname.to_string(),
            sent,
            met: met(p.hops.iter().filter_map(|h| h.rule.as_deref()), rx.netns),
        });
    }
    out
}

/// Of the routers that forwarded a request unmasqueraded (`routers`, in
/// path order), the one that must masquerade it for a reply that died in
/// `died_in`: the last before that namespace, the nearest to it that still
/// knows the way back to the client (the reply reaches it by its own link).
pub fn to_masquerade(routers: &[Unmasqueraded], died_in: u32) -> Option<&Unmasqueraded> {
    let before = routers
        .iter()
        .position(|u| u.netns == died_in)
        .unwrap_or(routers.len());
    routers[..before].last()
}

/// The facts of a reply that died where `u`'s router did not masquerade.
pub fn masquerade_values(u: &Unmasqueraded, view: &mut View, v: &mut Values) {
    let router = super::facts::place(view, u.netns);
    v.set(Fact::RouterRunIn, format!(" in {router}"));
    v.set(Fact::Router, router);
    v.set(
        Fact::MasqNet,
        lan_of(view, u.netns, &u.in_dev, u.sent.saddr),
    );
    v.set(Fact::MasqDev, u.out_dev.clone());
    let path = view.netns.path(u.netns);
    match nat_rules(path.as_deref(), u.met, u.sent.daddr.is_ipv6()) {
        NatRules::Iptables(tool) => v.set(Fact::MasqTool, tool),
        NatRules::Nft(n) => {
            let from = lan_of(view, u.netns, &u.in_dev, u.sent.saddr);
            v.set(
                Fact::NatNft,
                n.command(&Masquerade {
                    from: &from,
                    out_dev: Some(&u.out_dev),
                    daddr: u.sent.daddr,
                    proto: u.sent.proto_name(),
                    dport: u.sent.dport,
                }),
            );
        }
    }
    v.set(
        Fact::MasqFlow,
        format!(
            "-d {} -p {} --dport {}",
            u.sent.daddr,
            u.sent.proto_name(),
            u.sent.dport
        ),
    );
}

/// Hairpin NAT in `p`'s path, with its facts set in `v`.
pub fn hairpin(p: &Packet, view: &mut View, v: &mut Values) -> Option<Hairpin> {
    let first = p.hops.iter().find_map(|h| h.tuple)?;
    let last = p.hops.iter().rev().find_map(|h| h.tuple)?;
    if first.daddr == last.daddr || first.saddr != last.saddr {
        return None;
    }
    let (_, rx) = p.hops.iter().enumerate().find(|(i, rx)| {
        rx.kind == HopKind::Rx
            && p.hops[i + 1..].iter().any(|tx| {
                tx.kind == HopKind::Tx && tx.netns == rx.netns && tx.ifindex == rx.ifindex
            })
    })?;
    // The answer bypasses the router only when the server reaches the
    // client on its own link; through a gateway (a router with two subnets
    // on one interface) it comes back through the router, which undoes
    // the DNAT.
    let server = p.hops.iter().rev().find(|h| h.tuple.is_some())?.netns;
    let server_path = view.netns.path(server);
    if let Some(hop) = crate::evidence::neigh::next_hop(server_path.as_deref(), first.saddr) {
        if hop.addr != first.saddr {
            return None;
        }
    }
    let lan = lan_of(view, rx.netns, &rx.ifname, first.saddr);
    v.set(Fact::HairpinDev, rx.ifname.to_string());
    v.set(Fact::HairpinNet, lan.clone());
    let met = met(p.hops.iter().filter_map(|h| h.rule.as_deref()), rx.netns);
    let path = view.netns.path(rx.netns);
    match nat_rules(path.as_deref(), met, first.saddr.is_ipv6()) {
        NatRules::Iptables(tool) => v.set(Fact::Tool, tool),
        NatRules::Nft(n) => v.set(
            Fact::NatNft,
            n.command(&Masquerade {
                from: &lan,
                out_dev: None,
                daddr: last.daddr,
                proto: last.proto_name(),
                dport: last.dport,
            }),
        ),
    }
    super::facts::set_place(view, rx.netns, v);
    Some(Hairpin {
        netns: rx.netns,
        device: rx.ifname.to_string(),
        lan,
    })
}

/// A conntrack entry older than the DNAT rule that now matches its flow:
/// NAT is decided at a connection's first packet, so the entry carries no
/// DNAT, and its packets never meet the rule until the entry goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleNat {
    pub netns: u32,
    /// The rule that would DNAT the flow now, in words.
    pub rule: String,
}

/// A stale entry where `p` ended, with its facts set in `v`: the packet's
/// hops there show an entry without DNAT, no nat rule was traversed for it
/// (packets of known entries skip the nat chains), and a DNAT rule in that
/// namespace's ruleset matches the packet.
pub fn stale_nat(
    p: &Packet,
    view: &mut View,
    evidence: &mut Evidence,
    v: &mut Values,
) -> Option<StaleNat> {
    let end = p.fate.at.and_then(|i| p.hops.get(i)).or(p.hops.last())?;
    let netns = end.netns;
    let here = || p.hops.iter().filter(|h| h.netns == netns);
    if here().any(|h| h.rule.as_deref().is_some_and(|r| r.table == "nat")) {
        return None;
    }
    let tuple = here().filter_map(|h| h.tuple).next_back()?;
    let path = view.netns.path(netns)?;
    // The hops' own record, else the table (the stack may have let go of
    // the entry before the drop, and the tracepoint tier sees no hook).
    let entry = match here().filter_map(|h| h.ct.as_deref()).next_back() {
        Some(ct) if ct.info.is_reply() => return None,
        Some(ct) => ct.entry.clone()?,
        None => in_netns::call(&path, || crate::evidence::conntrack::find_here(&tuple))
            .ok()
            .flatten()?,
    };
    if entry.dnat().is_some() {
        return None;
    }
    let arrived_on = here()
        .find(|h| h.kind == HopKind::Rx)
        .map(|h| h.ifname.to_string());
    let rules = evidence.nat.of(netns, &path)?;
    let rule = dnat_rule_matching(rules, &tuple, arrived_on.as_deref())?;
    let o = entry.original;
    let family = if o.saddr.is_ipv6() { " -f ipv6" } else { "" };
    v.set(
        Fact::CtEntry,
        format!(
            "{} {} → {}",
            o.proto_name(),
            endpoint(o.saddr, o.sport),
            endpoint(o.daddr, o.dport)
        ),
    );
    v.set(Fact::NatRule, rule.clone());
    v.set(
        Fact::CtDelete,
        format!(
            "conntrack -D{family} -p {} --orig-src {} --orig-dst {} --orig-port-src {} --orig-port-dst {}",
            o.proto_name(),
            o.saddr,
            o.daddr,
            o.sport,
            o.dport
        ),
    );
    super::facts::set_place(view, netns, v);
    Some(StaleNat { netns, rule })
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    crate::model::Endpoint { addr, port }.to_string()
}

/// The first rule of a table with a nat chain that DNATs (or redirects)
/// and whose matches on protocol, destination address and port and input
/// interface all hold for `t` (other matches are not judged), in words.
fn dnat_rule_matching(rules: &DnatSet, t: &Tuple, iif: Option<&str>) -> Option<String> {
    rules
        .iter()
        .find(|r| {
            r.matches
                .iter()
                .all(|m| judged_holds(m, t, iif).unwrap_or(true))
        })
        .map(|r| {
            format!(
                "the DNAT rule in chain {} of table {} {} (handle {})",
                r.chain, r.family, r.table, r.handle
            )
        })
}

/// Whether one nft `match` holds for `t`; `None` for what is not judged.
fn judged_holds(m: &NatMatch, t: &Tuple, iif: Option<&str>) -> Option<bool> {
    if m.proto.is_some_and(|p| p != t.proto) {
        return Some(false);
    }
    let r = &m.right;
    let hit = match m.field? {
        Field::Dport => value_holds(r, &t.dport.to_string())?,
        Field::Daddr => value_holds(r, &t.daddr.to_string())?,
        Field::Saddr => value_holds(r, &t.saddr.to_string())?,
        Field::L4proto => value_holds(r, &t.proto_name())? || *r == Right::Num(u64::from(t.proto)),
        Field::Iifname => value_holds(r, iif?)?,
    };
    Some(hit == m.eq)
}

/// Whether one nft `match`, as `nft -j` prints it, holds for `t`; `None`
/// for what is not judged.
pub(super) fn match_holds(m: &serde_json::Value, t: &Tuple, iif: Option<&str>) -> Option<bool> {
    judged_holds(&NatMatch::from_json(m)?, t, iif)
}

/// Whether an nft right-hand side (a value, a prefix, a range or an
/// anonymous set of them) holds `want`, compared as text or as addresses.
fn value_holds(right: &Right, want: &str) -> Option<bool> {
    Some(match right {
        Right::Set(set) => set.iter().any(|x| value_holds(x, want) == Some(true)),
        Right::Addr(a) => want.parse::<IpAddr>().ok() == Some(*a),
        Right::Text(s) => **s == *want || s.strip_suffix('*').is_some_and(|p| want.starts_with(p)),
        Right::Num(n) => want.parse::<u64>().ok() == Some(*n),
        Right::Prefix(cidr) => super::sets::in_prefix(cidr, want.parse().ok()?),
        Right::Range(lo, hi) => {
            let n: u64 = want.parse().ok()?;
            *lo <= n && n <= *hi
        }
        Right::Other => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(dport: u16, proto: u8) -> Tuple {
        Tuple {
            saddr: "192.0.2.1".parse().expect("ip"),
            daddr: "192.0.2.254".parse().expect("ip"),
            sport: 40123,
            dport,
            proto,
        }
    }

    #[test]
    fn a_dnat_rule_matches_by_address_port_protocol_and_interface() {
        // As `nft -j list ruleset` prints iptables-nft's DNAT rules (the
        // target as `xt`), and Docker's with `! -i docker0`.
        let ruleset = crate::evidence::dnat_rules::read(
            r#"{"nftables":[
            {"chain":{"family":"ip","table":"nat","name":"PREROUTING","type":"nat","hook":"prerouting"}},
            {"chain":{"family":"ip","table":"filter","name":"INPUT","type":"filter","hook":"input"}},
            {"rule":{"family":"ip","table":"filter","chain":"INPUT","handle":9,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":5300}},{"xt":{"type":"target","name":"DNAT"}}]}},
            {"rule":{"family":"ip","table":"nat","chain":"PREROUTING","handle":2,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"192.0.2.254"}},{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":5300}},{"counter":{}},{"xt":{"type":"target","name":"DNAT"}}]}},
            {"rule":{"family":"ip","table":"nat","chain":"DOCKER","handle":5,"expr":[{"match":{"op":"!=","left":{"meta":{"key":"iifname"}},"right":"docker0"}},{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"set":[80,{"range":[8000,8100]}]}}},{"dnat":{"addr":"172.17.0.2","port":80}}]}}
            ]}"#
            .as_bytes(),
        )
        .expect("the NAT rules");
        let udp = dnat_rule_matching(&ruleset, &tuple(5300, 17), Some("r0")).expect("a rule");
        assert!(
            udp.contains("chain PREROUTING of table ip nat (handle 2)"),
            "{udp}"
        );
        assert_eq!(
            dnat_rule_matching(&ruleset, &tuple(5301, 17), Some("r0")),
            None
        );
        let tcp = dnat_rule_matching(&ruleset, &tuple(8092, 6), Some("eth0")).expect("a rule");
        assert!(tcp.contains("chain DOCKER"), "{tcp}");
        assert_eq!(
            dnat_rule_matching(&ruleset, &tuple(8092, 6), Some("docker0")),
            None
        );
        assert_eq!(
            dnat_rule_matching(&ruleset, &tuple(8200, 6), Some("eth0")),
            None
        );
    }
}

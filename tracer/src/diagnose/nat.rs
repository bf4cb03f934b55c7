//! Hairpin NAT read off a packet's hops: a namespace that DNATs the packet
//! and sends it back out of the interface it came in on, its source left
//! as the client. The server then answers the client directly on their
//! shared LAN, from an address the client never called, and the client
//! resets that answer: the connection never forms.
use std::net::{IpAddr, Ipv4Addr};

use super::{
    fact::{Fact, Values},
    Manager,
};
use crate::{events::HopKind, names::View, track::Packet};

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

/// Hairpin NAT in `p`'s path, with its facts set in `v`.
pub fn hairpin(p: &Packet, view: &mut View, v: &mut Values) -> Option<Hairpin> {
    let first = p.hops.iter().find_map(|h| h.tuple)?;
    let last = p.hops.iter().rev().find_map(|h| h.tuple)?;
    if first.daddr == last.daddr || first.saddr != last.saddr {
        return None;
    }
    let (rx_i, rx) = p.hops.iter().enumerate().find(|(i, rx)| {
        rx.kind == HopKind::Rx
            && p.hops[i + 1..].iter().any(|tx| {
                tx.kind == HopKind::Tx && tx.netns == rx.netns && tx.ifindex == rx.ifindex
            })
    })?;
    let _ = rx_i;
    let lan = match (first.saddr, view.netns.path(rx.netns)) {
        (IpAddr::V4(client), Some(path)) => {
            in_netns::call(&path, || crate::evidence::link::v4_net_of(&rx.ifname))
                .ok()
                .flatten()
                .filter(|(a, len)| network(*a, *len) == network(client, *len))
                .map(|(a, len)| format!("{}/{len}", network(a, len)))
        }
        _ => None,
    }
    .unwrap_or_else(|| first.saddr.to_string());
    let tool = p
        .hops
        .iter()
        .filter_map(|h| h.rule.as_deref())
        .find(|r| r.netns == rx.netns && r.table == "nat")
        .and_then(Manager::iptables_flavour)
        .unwrap_or(Manager::Iptables);
    v.set(Fact::HairpinDev, rx.ifname.clone());
    v.set(Fact::HairpinNet, lan.clone());
    v.set(
        Fact::Tool,
        tool.iptables_tool(if first.saddr.is_ipv4() { "ip" } else { "ip6" }),
    );
    super::facts::set_place(view, rx.netns, v);
    Some(Hairpin {
        netns: rx.netns,
        device: rx.ifname.clone(),
        lan,
    })
}

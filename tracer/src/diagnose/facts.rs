//! What a diagnosis may say about a packet, gathered once.
use std::{net::IpAddr, sync::Arc};

use super::{
    clash::{nat_clash, NatClash},
    fact::{Fact, Values},
    manager::{firewalld_policy, firewalld_zone, proxmox_guest},
    nat::{hairpin, masquerade_values, stale_nat, Hairpin, StaleNat, Unmasqueraded},
    sets::{set_ban, SetBan},
    Manager,
};
use crate::{
    events::{Hop, HopKind, RuleHit},
    evidence::{policy, programs, programs::Attached, Evidence, Extras, Seen},
    model::{IcmpError, Tuple},
    names::Containers,
    names::View,
    ruletrace::deciding_rule,
    track::{FateKind, Packet},
};

/// Kernel drop reasons for a packet routing found no way for.
pub const NO_ROUTE: &[&str] = &["IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS"];

pub struct Facts {
    pub fate: FateKind,
    pub reason: Option<String>,
    /// The kernel gave no reason; `reason` is inferred from where it freed
    /// the packet.
    pub reason_inferred: bool,
    /// An ICMP error the stack handled and then freed as a drop: kernels
    /// before 5.17 free ICMPv6 errors that way at `icmpv6_rcv`.
    pub icmp_freed_after_use: bool,
    /// The kernel reports drop reasons (it said `NOT_SPECIFIED` where the
    /// reason was inferred).
    pub kernel_has_reasons: bool,
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
    /// The kernel's own state where the packet died or was last seen,
    /// read when it settled (counters against their start values).
    pub seen: Option<Arc<Seen>>,
    /// The deciding rule names the client's own address (a ban of this
    /// host), rather than covering other traffic too.
    pub rule_names_client: bool,
    /// The deciding rule looked the client up in an nftables set.
    pub set_ban: Option<SetBan>,
    /// Sent back out of the interface it came in on after DNAT, source
    /// unchanged: the reply will bypass the NAT.
    pub hairpin: Option<Hairpin>,
    /// It ended where a conntrack entry older than a DNAT rule kept it.
    pub stale_nat: Option<StaleNat>,
    /// A reply that died for want of a route, to a request a router
    /// forwarded without masquerading it.
    pub masquerade: Option<Unmasqueraded>,
    /// Dropped as conntrack refused its entry: NATed to a tuple another
    /// connection holds.
    pub nat_clash: Option<NatClash>,
    /// The tc or XDP program that dropped it.
    pub program: Option<Attached>,
    pub(super) values: Values,
}

/// "container web", "namespace NAME" or "the host".
pub(super) fn place(view: &mut View, netns: u32) -> String {
    view.resolve_netns(netns);
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
    } else if v6 {
        ("refused", "an ICMPv6 port-unreachable", "ECONNREFUSED")
    } else {
        ("refused", "an ICMP port-unreachable", "ECONNREFUSED")
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

/// Whether `text` (a rule in iptables or nft syntax) matches on `addr`
/// as its source, alone (`/32`, `/128` or no prefix).
fn names_source(text: &str, addr: IpAddr) -> bool {
    let host = addr.to_string();
    let full = if addr.is_ipv4() { "/32" } else { "/128" };
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(2).any(|w| {
        matches!(w[0], "-s" | "--source" | "saddr")
            && (w[1] == host || w[1] == format!("{host}{full}"))
    })
}

/// The deciding rule's names and numbers, for advice templates.
fn rule_values(r: &RuleHit, manager: Manager, v: &mut Values) {
    v.set(Fact::RulePhrase, r.phrase());
    v.set(Fact::AtRule, format!(" at {}", r.phrase()));
    v.set(Fact::Chain, r.chain.clone());
    v.set(Fact::Table, r.table.clone());
    v.set(Fact::Family, r.family.to_string());
    // Docker's and ufw's chains are edited with the iptables that wrote them.
    let flavour = Manager::iptables_flavour(r).unwrap_or(manager);
    v.set(Fact::Tool, flavour.iptables_tool(r.family));
    v.set(Fact::Manager, manager.name());
    if let Some(i) = r.index {
        v.set(Fact::Index, i.to_string());
        if r.chain == "DOCKER-USER" && !r.policy {
            v.set(Fact::DockerUserIndex, i.to_string());
        }
    }
    if let Some(h) = r.handle {
        v.set(Fact::Handle, h.to_string());
    }
    if let Some(z) = firewalld_zone(&r.chain) {
        v.set(Fact::Zone, z);
    }
    if let Some(id) = proxmox_guest(&r.chain) {
        v.set(Fact::GuestId, id);
    }
    v.set(
        Fact::ManagerNote,
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
    }) || deciding_rule(p).is_some_and(|r| r.family == Family::Ipv4);
    let br_nf_stack = view.syms.as_ref().is_some_and(|syms| {
        at.stack
            .iter()
            .filter_map(|&a| syms.symbolize(a).map(|(n, _)| n))
            .any(|n| n.starts_with("br_nf_"))
    });
    (bridge_hook && ip_drop) || br_nf_stack
}

/// The target as the client asked for it, and what DNAT made of it.
fn target_values(
    first: Tuple,
    last: Option<Tuple>,
    containers: &Containers,
    view: &mut View,
    p: &Packet,
    v: &mut Values,
) {
    let proto = first.proto_name();
    let (final_addr, final_port) = last
        .map(|t| (t.daddr.to_string(), t.dport))
        .unwrap_or_default();
    // Addresses repeat across hosts (every Docker host's first container
    // is 172.17.0.2): a container is the packet's only if the packet
    // entered its namespace or its Docker host's, or where it runs is not
    // known.
    let passed = |c: &crate::names::Container| {
        let entered = |ns: u32| p.hops.iter().any(|h| h.netns == ns);
        c.netns.is_some_and(entered) || c.host_netns.is_none_or(entered)
    };
    let container = containers
        .by_netns
        .values()
        .find(|c| c.ip.as_deref() == Some(final_addr.as_str()) && passed(c))
        .map(|c| c.name.clone())
        .or_else(|| {
            p.hops
                .iter()
                .rev()
                .find_map(|h| view.netns.container(h.netns).map(str::to_owned))
        });
    // The container publishing the port the client asked for, when the
    // packet was DNATed to it (another host may publish the same port).
    let published = containers
        .publishing(first.dport, &proto)
        .find(|(c, _)| c.ip.as_deref() == Some(final_addr.as_str()) && passed(c));
    let ep = |addr, port| crate::model::Endpoint { addr, port }.to_string();
    let final_ep = last.map(|t| ep(t.daddr, t.dport)).unwrap_or_default();
    let mut target = ep(first.daddr, first.dport);
    v.set(Fact::PublishedNote, "");
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
            v.set(
                Fact::PublishedNote,
                format!(
                    " (published port {} → {}:{})",
                    pb.public, c.name, pb.private
                ),
            );
        }
        (Some(c), None) if first.daddr.to_string() != final_addr => {
            target.push_str(&format!(" (DNAT to container {c}, {final_ep})"));
        }
        _ if first.daddr.to_string() != final_addr || first.dport != final_port => {
            target.push_str(&format!(" (DNAT to {final_ep})"));
            v.set(
                Fact::PublishedNote,
                format!(" (DNAT from {})", ep(first.daddr, first.dport)),
            );
        }
        _ => {}
    }
    v.set(Fact::Target, target);
    v.set(Fact::Proto, proto);
    v.set(Fact::FinalAddr, final_addr);
    v.set(Fact::FinalPort, final_port.to_string());
    v.set(Fact::OrigAddr, first.daddr.to_string());
    v.set(Fact::OrigPort, first.dport.to_string());
}

/// `{where}`, and `{run_in}` for a command run there ("" on the host).
pub(super) fn set_place(view: &mut View, netns: u32, v: &mut Values) {
    let where_ = place(view, netns);
    v.set(
        Fact::RunIn,
        if where_ == "the host" {
            String::new()
        } else {
            format!(" in {where_}")
        },
    );
    v.set(Fact::Where, where_);
}

/// Where the packet died (or was last seen), in words and names.
fn place_values(p: &Packet, at: Option<&Hop>, view: &mut View, v: &mut Values) {
    set_place(view, at.map(|h| h.netns).unwrap_or(0), v);
    v.set(
        Fact::Ifname,
        at.map(|h| h.ifname.to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into()),
    );
    v.set(
        Fact::Hook,
        p.fate
            .hook
            .map(|h| h.as_str().to_owned())
            .unwrap_or_else(|| "an unknown hook".into()),
    );
    v.set(
        Fact::Location,
        at.and_then(|h| view.location(h))
            .unwrap_or_else(|| "an unknown place".into()),
    );
    let last_real = p.hops.iter().rev().find(|h| h.kind != HopKind::NfRule);
    if let Some(h) = last_real {
        v.set(Fact::LastPlace, place(view, h.netns));
        v.set(
            Fact::LastHop,
            format!(
                "{} on {} in {}",
                h.kind.as_str(),
                if h.ifname.is_empty() { "-" } else { &h.ifname },
                place(view, h.netns)
            ),
        );
    }
}

/// IP forwarding for a packet that arrived on `ifname` in namespace
/// `netns`, when it can be read: IPv4 checks the arriving device's
/// setting, IPv6 the namespace's (`all`).
fn forwarding_of(view: &mut View, netns: u32, ifname: &str, v6: bool) -> Option<bool> {
    let path = view.netns.path(netns)?;
    let file = if v6 {
        "/proc/sys/net/ipv6/conf/all/forwarding".to_owned()
    } else {
        format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding")
    };
    in_netns::call(&path, || std::fs::read_to_string(&file).ok())
        .ok()
        .flatten()
        .map(|s| s.trim() != "0")
}

/// The counters that rose, as evidence: "TcpExt.ListenOverflows +3, …".
fn counters_phrase(seen: &Seen, names: &[&str]) -> String {
    let shown: Vec<String> = names
        .iter()
        .filter(|n| seen.rose(n) > 0)
        .map(|n| format!("{n} +{}", seen.rose(n)))
        .collect();
    shown.join(", ")
}

/// The one router a namespace learnt on `dev`: where the request came
/// from, so a route back through it reaches the client.
fn route_back(seen: &Seen, client: IpAddr, dev: &str) -> Option<String> {
    let candidates: Vec<IpAddr> = seen
        .now
        .neighbours
        .iter()
        .filter(|n| n.resolved && n.device == dev && n.addr != client)
        .filter(|n| n.addr.is_ipv6() == client.is_ipv6())
        .map(|n| n.addr)
        .collect();
    // An IPv6 router is known by its link-local address too: its global
    // one names it better.
    let link_local = |a: &IpAddr| matches!(a, IpAddr::V6(v) if v.is_unicast_link_local());
    let global = candidates.iter().any(|a| !link_local(a));
    let mut routers = candidates.iter().filter(|a| !(global && link_local(a)));
    let gw = routers.next()?;
    routers
        .next()
        .is_none()
        .then(|| format!("ip route add {client} via {gw} dev {dev}"))
}

/// Facts from the namespace's own state (see [`crate::evidence`]).
fn evidence_values(
    seen: &Seen,
    (final_addr, final_port, proto): (Option<IpAddr>, u16, u8),
    no_socket: bool,
    v: &mut Values,
) {
    let rose = counters_phrase(seen, &crate::evidence::counters::KEPT);
    if !rose.is_empty() {
        v.set(Fact::CountersRose, rose);
    }
    if let Some((count, max)) = seen.now.conntrack {
        v.set(Fact::ConntrackCount, count.to_string());
        v.set(Fact::ConntrackMax, max.to_string());
        v.set(
            Fact::ConntrackMaxNew,
            (max.max(count) * 2).max(1024).to_string(),
        );
    }
    let on_port: Vec<_> = seen
        .now
        .bound
        .iter()
        .filter(|b| b.port == final_port && b.proto == proto)
        .collect();
    if let Some(addr) = final_addr {
        // A socket on `::` takes IPv4 too, unless it is IPv6-only, which
        // /proc does not say: the kernel finding no socket for an IPv4
        // packet says it. A socket bound to an interface the packet did
        // not arrive by (it was refused) is elsewhere, whatever its address.
        let v6_only = |b: &crate::evidence::Bound| {
            no_socket && addr.is_ipv4() && b.addr.is_ipv6() && b.addr.is_unspecified()
        };
        if !on_port.is_empty()
            && !on_port
                .iter()
                .any(|b| b.takes(addr) && !v6_only(b) && b.device.is_none())
        {
            let list: Vec<String> = on_port
                .iter()
                .map(|b| match v6_only(b) {
                    true => format!("{} for IPv6", b.endpoint()),
                    false => b.endpoint(),
                })
                .collect();
            v.set(Fact::OtherListeners, list.join(", "));
        }
        if proto == 17 {
            if let Some(b) = on_port.iter().find(|b| b.takes(addr)) {
                v.set(Fact::UdpSocket, b.endpoint());
            }
        }
        if let Some(q) = on_port
            .iter()
            .filter(|b| b.takes(addr))
            .find_map(|b| b.accept_queue)
        {
            v.set(Fact::AcceptQueue, format!("{q} connections waiting"));
        }
    }
}

/// Where a packet started, ended and had its fate decided.
#[derive(Clone, Copy)]
struct Ends<'a> {
    /// The hop that decided the fate.
    at: Option<&'a Hop>,
    /// Its headers as it left, and as last seen (after NAT).
    first: Option<Tuple>,
    last: Option<Tuple>,
    /// The last hop that is the packet's own (not a rule trace).
    last_real: Option<&'a Hop>,
}

impl<'a> Ends<'a> {
    fn of(p: &'a Packet) -> Self {
        Self {
            at: p.fate.at.and_then(|i| p.hops.get(i)),
            first: p.hops.iter().find_map(|h| h.tuple),
            last: p.hops.iter().rev().find_map(|h| h.tuple),
            last_real: p.hops.iter().rev().find(|h| h.kind != HopKind::NfRule),
        }
    }
}

/// The drop's reason as the kernel told it, or, on a kernel that tells
/// none, as inferred from where it freed the packet (then `true`).
/// The drop's reason: the kernel's, else (a kernel without reasons, or one
/// that said only `NOT_SPECIFIED`) inferred from where it freed the packet.
fn reason_of(ends: Ends<'_>, view: &mut View) -> (Option<String>, bool) {
    let told = ends.at.and_then(|h| view.reason(h));
    if told.as_deref().is_some_and(|r| r != UNSPECIFIED) {
        return (told, false);
    }
    let inferred = ends
        .at
        .filter(|h| h.kind == HopKind::Drop)
        .and_then(|h| inferred_reason(h, ends.last, view));
    match inferred {
        Some(r) => (Some(r), true),
        None => (told, false),
    }
}

/// What the kernel says of a drop it gives no specific reason for.
pub const UNSPECIFIED: &str = "NOT_SPECIFIED";

fn reason_phrase(reason: Option<&str>, inferred: bool, kernel_has_reasons: bool) -> String {
    match (reason, inferred) {
        (Some(r), true) if kernel_has_reasons => format!(
            "{r}, inferred from where the kernel freed it: the kernel said only {UNSPECIFIED}"
        ),
        (Some(r), true) => format!(
            "{r}, inferred from where the kernel freed it: this kernel reports no drop reasons"
        ),
        (Some(r), false) => r.to_owned(),
        (None, _) => "no reason given".into(),
    }
}

/// A routing drop's facts: a route to the destination where none was
/// found, the policy rule that took the packet, a link it was too big for.
fn routing_values(
    ends: Ends<'_>,
    view: &mut View,
    evidence: &mut Evidence,
    reason: Option<&str>,
    forwarding: Option<bool>,
    unruled: bool,
    v: &mut Values,
) {
    let (Some(at), Some(last)) = (ends.at, ends.last) else {
        return;
    };
    let no_route = matches!(reason, Some("IP_INNOROUTES" | "IP_OUTNOROUTES"))
        || (reason == Some("IP_INADDRERRORS") && forwarding != Some(false));
    if no_route {
        route_to(view, at.netns, last.daddr, evidence, v);
    }
    let routing_drop = no_route
        || view
            .location(at)
            .is_some_and(|l| l.starts_with("ip_error") || l.starts_with("dst_discard"));
    if routing_drop && unruled {
        let path = view.netns.path(at.netns);
        if let Some(pr) = policy::policy_route(path.as_deref(), last.saddr, last.daddr, &at.ifname)
        {
            v.set(Fact::PolicyRule, pr.rule);
            v.set(Fact::PolicyTable, pr.table);
            v.set(Fact::PolicyVerdict, pr.verdict);
            v.set(
                Fact::PolicyHedge,
                if pr.sure {
                    ""
                } else {
                    " (if the packet matched that rule's selectors, which pathtrace does not see on the packet; no rule it can judge sends it where it died)"
                },
            );
        } else if let Some(route) = policy::discard_route(path.as_deref(), last.daddr) {
            v.set(Fact::DiscardRoute, route);
        }
    }
    if reason == Some("PKT_TOO_BIG") {
        too_big_values(at, Some(last), view, v);
    }
    if reason == Some("IP_RPFILTER") {
        let path = view.netns.path(at.netns);
        let back = crate::evidence::neigh::next_hop(path.as_deref(), last.saddr).map(|n| n.device);
        v.set(
            Fact::RouteBackDev,
            match back {
                Some(dev) => format!(
                    "the route back to {} leaves by {dev}, not {}",
                    last.saddr, at.ifname
                ),
                None => format!("there is no route back to {}", last.saddr),
            },
        );
    }
    if matches!(
        reason,
        Some("NEIGH_FAILED" | "NEIGH_QUEUEFULL" | "NEIGH_DEAD")
    ) {
        v.set(Fact::Neighbour, last.daddr.to_string());
        v.set(Fact::NeighDevice, at.ifname.to_string());
        v.set(Fact::NeighState, " was not read");
        let path = view.netns.path(at.netns);
        if let Some(n) = crate::evidence::neigh::next_hop(path.as_deref(), last.daddr) {
            v.set(Fact::Neighbour, n.addr.to_string());
            v.set(Fact::NeighDevice, n.device);
            v.set(
                Fact::NeighState,
                n.state
                    .map(|s| format!(" holds it as {s}"))
                    .unwrap_or_else(|| " has no entry for it".into()),
            );
        }
    }
}

/// An ICMP error's facts: what it says, the flow it quotes, and how
/// iptables and nft match a fragmentation-needed.
fn icmp_values(e: IcmpError, v: &mut Values) {
    v.set(Fact::QuotedSender, e.quoted.saddr.to_string());
    let (ipt, nft) = if e.version == 6 {
        (
            "-p ipv6-icmp --icmpv6-type packet-too-big",
            "icmpv6 type packet-too-big",
        )
    } else {
        (
            "-p icmp --icmp-type fragmentation-needed",
            "icmp type destination-unreachable icmp code frag-needed",
        )
    };
    v.set(Fact::IcmpMatchIpt, ipt);
    v.set(Fact::IcmpMatchNft, nft);
    v.set(
        Fact::TooBigIcmp,
        if e.version == 6 {
            "ICMPv6 packet-too-big"
        } else {
            "ICMP fragmentation-needed"
        },
    );
    v.set(Fact::Icmp, e.to_string());
    let q = e.quoted;
    v.set(
        Fact::Quoted,
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

/// Before drop reasons, an ICMPv6 error the stack handled is freed at
/// `icmpv6_rcv` as if dropped.
fn icmpv6_freed_after_use(p: &Packet, ends: Ends<'_>, view: &View) -> bool {
    p.fate.kind == FateKind::Dropped
        && view.reasons.is_empty()
        && ends
            .at
            .and_then(|h| view.location(h))
            .is_some_and(|l| l.starts_with("icmpv6_rcv"))
}

/// The state of the namespace where the packet died, or was last seen
/// (`no_socket`: the kernel found no socket for it).
fn look(
    fate: FateKind,
    ends: Ends<'_>,
    no_socket: bool,
    view: &mut View,
    evidence: &mut Evidence,
) -> Option<Arc<Seen>> {
    let h = if fate == FateKind::Dropped {
        ends.at
    } else {
        ends.last_real.or(ends.at)
    }?;
    let path = view.netns.path(h.netns)?;
    let extras = Extras {
        socket_devices: no_socket,
        v6_neighbours: ends.first.is_some_and(|t| t.saddr.is_ipv6()),
    };
    evidence.look(h.netns, &path, extras)
}

/// Facts from what the namespace showed: a route back, the counters, the
/// sockets (`no_socket`: the kernel found none for the packet).
fn seen_values(s: &Seen, ends: Ends<'_>, no_socket: bool, v: &mut Values) {
    if let (Some(c), Some(h)) = (ends.first.map(|t| t.saddr), ends.last_real) {
        if let Some(r) = route_back(s, c, &h.ifname) {
            v.set(Fact::RouteBack, r);
        }
    }
    let flow = (
        ends.last.map(|t| t.daddr),
        ends.last.map(|t| t.dport).unwrap_or(0),
        ends.last.map(|t| t.proto).unwrap_or(0),
    );
    evidence_values(s, flow, no_socket, v);
}

/// Who sent the packet and where to, where it ended, and why in words;
/// whether it is IPv6.
fn flow_values(
    p: &Packet,
    containers: &Containers,
    view: &mut View,
    (reason, inferred): (Option<&str>, bool),
    v: &mut Values,
) -> bool {
    let ends = Ends::of(p);
    let client = ends
        .first
        .map(|t| t.saddr.to_string())
        .unwrap_or_else(|| "the sender".into());
    v.set(Fact::Client, client.clone());
    v.set(Fact::Proto, "ip");
    if let Some(f) = ends.first {
        target_values(f, ends.last, containers, view, p, v);
    }
    v.set(Fact::AtRule, "");
    place_values(p, ends.at, view, v);
    v.set(
        Fact::Reason,
        reason_phrase(reason, inferred, !view.reasons.is_empty()),
    );
    let v6 = ends.first.is_some_and(|t| t.saddr.is_ipv6());
    v.set(
        Fact::NoSocketAnswer,
        no_socket_answer(ends.first.map(|t| t.proto).unwrap_or(0), v6, &client),
    );
    v.set(Fact::L3, if v6 { "ip6" } else { "ip" });
    v.set(Fact::FwFamily, if v6 { "ipv6" } else { "ipv4" });
    v6
}

/// Why conntrack called the packet INVALID, when a rule dropped it for that.
fn invalid_why(
    rule: Option<&RuleHit>,
    ends: Ends<'_>,
    tcp_flags: u8,
    view: &mut View,
    v: &mut Values,
) {
    let (Some(r), Some(at), Some(t)) = (rule, ends.at, ends.last) else {
        return;
    };
    if !r
        .text
        .as_deref()
        .is_some_and(|x| x.to_ascii_lowercase().contains("invalid"))
    {
        return;
    }
    v.set(Fact::InvalidWhy, "it had no state that fits this packet");
    if let Some(why) = view.netns.path(at.netns).and_then(|path| {
        in_netns::call(&path, || {
            crate::evidence::conntrack::why_invalid_here(&t, tcp_flags)
        })
        .ok()
    }) {
        v.set(Fact::InvalidWhy, why);
    }
}

/// What besides the deciding rule may have stopped the packet.
struct Culprits {
    set_ban: Option<SetBan>,
    hairpin: Option<Hairpin>,
    stale_nat: Option<StaleNat>,
    masquerade: Option<Unmasqueraded>,
    program: Option<Attached>,
}

/// A set that bans the client, a hairpin, a stale NAT entry, a router that
/// did not masquerade the request (`request`) this reply answers, a tc or
/// XDP program.
#[expect(
    clippy::too_many_arguments,
    reason = "the packet, what is known of its end, and the two caches it is judged with"
)]
fn culprits(
    p: &Packet,
    rule: Option<&RuleHit>,
    reason: Option<&str>,
    reply: bool,
    request: &[Unmasqueraded],
    view: &mut View,
    evidence: &mut Evidence,
    v: &mut Values,
) -> Culprits {
    let ends = Ends::of(p);
    let dropped = p.fate.kind == FateKind::Dropped;
    let set_ban = rule.zip(ends.first.map(|t| t.saddr)).and_then(|(r, a)| {
        // The port as the rule saw it (after any DNAT before it).
        let dport = r.tuple.or(ends.last).map(|t| t.dport);
        set_ban(r, a, dport, view, v)
    });
    let hairpin = hairpin(p, view, v);
    // Only a drop no rule decided (the flow ended where its old entry
    // kept it): the check reads the namespace's ruleset.
    let stale_nat = (dropped && !reply && rule.is_none() && reason != Some("NETFILTER_DROP"))
        .then(|| stale_nat(p, view, evidence, v))
        .flatten();
    let masquerade = ends
        .at
        .filter(|_| reply && dropped && NO_ROUTE.contains(&reason.unwrap_or_default()))
        .and_then(|h| super::nat::to_masquerade(request, h.netns))
        .cloned();
    if let Some(u) = &masquerade {
        masquerade_values(u, view, v);
    }
    let programs = if dropped {
        ends.at
            .map(|h| dropping_programs(h, reason, view))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if let (Some(f), Some(l)) = (ends.first, ends.last) {
        program_values(&programs, f.saddr, l, v);
    }
    let program = programs.into_iter().next();
    Culprits {
        set_ban,
        hairpin,
        stale_nat,
        masquerade,
        program,
    }
}

/// A NAT clash, looked for only where no rule decided a drop and
/// conntrack's `insert_failed` rose in that namespace while tracing.
fn clash_of(
    p: &Packet,
    no_rule: bool,
    seen: Option<&Seen>,
    view: &mut View,
    v: &mut Values,
) -> Option<NatClash> {
    let refused = seen.is_some_and(|s| s.rose("conntrack.insert_failed") > 0);
    (p.fate.kind == FateKind::Dropped && no_rule && refused)
        .then(|| nat_clash(p, view, v))
        .flatten()
}

impl Facts {
    pub fn get(&self, f: Fact) -> Option<&str> {
        self.values.get(f)
    }

    pub fn build(
        p: &Packet,
        view: &mut View,
        containers: &Containers,
        reply: bool,
        request: &[Unmasqueraded],
        evidence: &mut Evidence,
    ) -> Self {
        let ends = Ends::of(p);
        let (reason, inferred) = reason_of(ends, view);
        let rule = deciding_rule(p).cloned();
        let mut v = Values::default();
        let v6 = flow_values(p, containers, view, (reason.as_deref(), inferred), &mut v);
        let netns = ends.at.map(|h| h.netns).unwrap_or(0);
        let forwarding = (reason.as_deref() == Some("IP_INADDRERRORS"))
            .then(|| {
                let ifname = ends.at.map(|h| h.ifname.to_string()).unwrap_or_default();
                forwarding_of(view, netns, &ifname, v6)
            })
            .flatten();
        let silent_tcp = ends.last_real.is_some_and(|h| {
            h.kind == HopKind::Rx
                && h.tuple.is_some_and(|t| t.proto == 6)
                && h.tcp_flags & 0x10 != 0
        });
        let manager = rule.as_ref().map(|r| rule_facts(p, r, v6, &mut v));
        routing_values(
            ends,
            view,
            evidence,
            reason.as_deref(),
            forwarding,
            rule.is_none(),
            &mut v,
        );
        let icmp = p.hops.iter().rev().find_map(|h| h.icmp.as_deref().copied());
        if let Some(e) = icmp {
            icmp_values(e, &mut v);
        }
        let icmp_freed_after_use =
            icmp.is_some() && reason.is_none() && icmpv6_freed_after_use(p, ends, view);
        let tcp_flags = p
            .hops
            .iter()
            .find(|h| h.tuple.is_some())
            .map_or(0, |h| h.tcp_flags);
        let bridged = p.fate.kind == FateKind::Dropped && bridged_drop(p, view);
        let client_addr = ends.first.map(|t| t.saddr);
        let rule_names_client = rule.as_ref().is_some_and(|r| {
            client_addr.is_some_and(|a| r.text.as_deref().is_some_and(|t| names_source(t, a)))
        });
        invalid_why(rule.as_ref(), ends, tcp_flags, view, &mut v);
        let c = culprits(
            p,
            rule.as_ref(),
            reason.as_deref(),
            reply,
            request,
            view,
            evidence,
            &mut v,
        );
        let no_socket = reason.as_deref() == Some("NO_SOCKET");
        let seen = wants_evidence(p.fate.kind, reason.as_deref(), rule.is_some(), tcp_flags)
            .then(|| look(p.fate.kind, ends, no_socket, view, evidence))
            .flatten();
        if let Some(s) = &seen {
            seen_values(s, ends, no_socket, &mut v);
        }
        let nat_clash = clash_of(p, rule.is_none(), seen.as_deref(), view, &mut v);
        Self {
            fate: p.fate.kind,
            reason,
            reason_inferred: inferred,
            icmp_freed_after_use,
            kernel_has_reasons: !view.reasons.is_empty(),
            rule,
            forwarding,
            silent_tcp,
            tcp_flags,
            reply,
            icmp,
            manager,
            bridged,
            seen,
            rule_names_client,
            set_ban: c.set_ban,
            hairpin: c.hairpin,
            stale_nat: c.stale_nat,
            masquerade: c.masquerade,
            nat_clash,
            program: c.program,
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
        let mut v = Values::default();
        for (k, val) in values {
            let f = Fact::from_name(k).unwrap_or_else(|| panic!("no fact named {k}"));
            v.set(f, *val);
        }
        Self {
            fate,
            reason: reason.map(str::to_owned),
            reason_inferred: false,
            icmp_freed_after_use: false,
            kernel_has_reasons: true,
            rule,
            forwarding: None,
            silent_tcp: false,
            tcp_flags: 0,
            reply: false,
            icmp: None,
            manager,
            bridged: false,
            seen: None,
            rule_names_client: false,
            set_ban: None,
            hairpin: None,
            stale_nat: None,
            masquerade: None,
            nat_clash: None,
            program: None,
            values: v,
        }
    }

    /// Sets the rule-derived values (names, numbers, manager), for tests.
    #[cfg(test)]
    pub fn set_rule_values(&mut self, r: &RuleHit) {
        let m = Manager::of(r, std::iter::empty::<&RuleHit>());
        rule_values(r, m, &mut self.values);
        let (word, kind, errno) = reject_reply(r.text.as_deref().unwrap_or_default(), false);
        self.values.set(Fact::RejectWord, word);
        self.values.set(Fact::RejectReply, kind);
        self.values.set(Fact::RejectErrno, errno);
        if let Some(a) = self.values.get(Fact::Client).and_then(|c| c.parse().ok()) {
            self.rule_names_client = r.text.as_deref().is_some_and(|t| names_source(t, a));
        }
        self.rule = Some(r.clone());
        self.manager = Some(m);
    }

    #[cfg(test)]
    pub fn with_forwarding(mut self, on: bool) -> Self {
        self.forwarding = Some(on);
        self
    }

    #[cfg(test)]
    pub fn with_seen(mut self, seen: Seen) -> Self {
        self.seen = Some(Arc::new(seen));
        self
    }
}

/// A route from namespace `netns` to `dst`, built from what the namespaces
/// hold: the one that holds `dst`, and its address on a link `netns` shares.
fn route_to(view: &mut View, netns: u32, dst: IpAddr, evidence: &mut Evidence, v: &mut Values) {
    let owner = evidence.owner(netns, dst, || find_owner(view, netns, dst));
    if let Some(o) = owner {
        v.set(Fact::Owner, o.place);
        if let Some(r) = o.route {
            v.set(Fact::RouteTo, r);
        }
    }
}

/// Asks the known namespaces (at most 256) which holds `dst`, and how
/// `netns` reaches it when they share a link.
fn find_owner(view: &mut View, netns: u32, dst: IpAddr) -> Option<crate::evidence::Owner> {
    use crate::evidence::link;
    /// At most this many namespaces are asked whether they hold the address.
    const LOOK: usize = 256;
    let here = view
        .netns
        .path(netns)
        .and_then(|p| in_netns::call(&p, link::addrs).ok())?;
    let mut known = view.netns.known_paths();
    known.sort_unstable_by_key(|(ino, _)| *ino);
    // Addresses repeat across namespaces (containers, labs): a holder on a
    // link this namespace shares is the one it can route to; the first
    // holder, failing that. At most [`HOLDERS`] holders are looked at.
    const HOLDERS: usize = 8;
    let mut first: Option<(u32, Option<(IpAddr, String)>)> = None;
    let mut seen = 0;
    for (ino, path) in known
        .into_iter()
        .filter(|(ino, _)| *ino != netns)
        .take(LOOK)
    {
        if in_netns::call(&path, || link::holds(dst)).ok() != Some(true) {
            continue;
        }
        let there = in_netns::call(&path, link::addrs).unwrap_or_default();
        let next = link::adjacent(&here, &there, dst);
        if next.is_some() {
            first = Some((ino, next));
            break;
        }
        first.get_or_insert((ino, None));
        seen += 1;
        if seen >= HOLDERS {
            break;
        }
    }
    let (ino, next) = first?;
    Some(crate::evidence::Owner {
        place: place(view, ino),
        route: next.map(|(via, dev)| format!("ip route add {dst} via {via} dev {dev}")),
    })
}

/// The reason a kernel with drop reasons would give for a drop it gave
/// none for, from the function that freed the packet (and, for
/// `ip_forward`, whether the packet was larger than its next link's MTU).
fn inferred_reason(at: &Hop, last: Option<Tuple>, view: &mut View) -> Option<String> {
    let location = view.location(at)?;
    if let Some(r) = crate::kernel::drop_reason::reason_by_location(&location) {
        return Some(r.to_owned());
    }
    // tc's ingress hook, inlined into the receive path on older kernels:
    // a tc program on the device is what frees packets there.
    if location.starts_with("__netif_receive_skb_core") {
        let path = view.netns.path(at.netns);
        return (!programs::tc(path.as_deref(), &at.ifname, "ingress").is_empty())
            .then(|| "TC_INGRESS".to_owned());
    }
    // A route input error, freed where the receive path finishes (before
    // 5.17 reasons): reverse-path filtering, when it is strict on that
    // device and the route back to the source leaves by another.
    if location.starts_with("ip_rcv_finish") {
        let path = view.netns.path(at.netns)?;
        let src = last?.saddr;
        let strict = in_netns::call(&path, || {
            let rp = |dev: &str| {
                std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"))
                    .ok()
                    .and_then(|v| v.trim().parse::<u8>().ok())
                    .unwrap_or(0)
            };
            rp("all").max(rp(&at.ifname)) == 1
        })
        .ok()?;
        let back = crate::evidence::neigh::next_hop(Some(&path), src)?;
        return (strict && back.device != at.ifname.as_str()).then(|| "IP_RPFILTER".to_owned());
    }
    if !location.starts_with("ip_forward") {
        return None;
    }
    let IpAddr::V4(dst) = last?.daddr else {
        return None;
    };
    let (_, mtu) = view.netns.path(at.netns).and_then(|p| {
        in_netns::call(&p, || crate::evidence::link::out_link(IpAddr::V4(dst)))
            .ok()
            .flatten()
    })?;
    (at.len > mtu).then(|| "PKT_TOO_BIG".to_owned())
}

/// What a packet too big for its next link did not fit: the MTU of the
/// device its namespace routes it out of.
fn too_big_values(at: &Hop, last: Option<Tuple>, view: &mut View, v: &mut Values) {
    v.set(Fact::PktLen, at.len.to_string());
    let link = last.map(|t| t.daddr).and_then(|dst| {
        view.netns.path(at.netns).and_then(|p| {
            in_netns::call(&p, || crate::evidence::link::out_link(dst))
                .ok()
                .flatten()
        })
    });
    let v6 = last.is_some_and(|t| t.daddr.is_ipv6());
    v.set(
        Fact::TooBigIcmp,
        if v6 {
            "ICMPv6 packet-too-big"
        } else {
            "ICMP fragmentation-needed"
        },
    );
    v.set(
        Fact::MtuPhrase,
        match link {
            Some((dev, mtu)) => format!("the {mtu}-byte MTU of {dev}"),
            None => "the MTU of its next link".to_owned(),
        },
    );
}

/// The tc or XDP program attached where the packet was dropped, when the
/// drop came from one: a `TC_INGRESS`/`TC_EGRESS` reason, or a free inside
/// the XDP paths (`do_xdp_generic`, `netif_receive_generic_xdp`, a veth's
/// XDP receive), which give no reason.
fn dropping_programs(at: &Hop, reason: Option<&str>, view: &mut View) -> Vec<Attached> {
    let path = view.netns.path(at.netns);
    let path = path.as_deref();
    let mut tc = match reason {
        Some("TC_INGRESS") => programs::tc(path, &at.ifname, "ingress"),
        Some("TC_EGRESS") => programs::tc(path, &at.ifname, "egress"),
        _ => Vec::new(),
    };
    if !tc.is_empty() {
        // In the order the kernel runs them.
        tc.sort_by_key(|p| p.pref);
        return tc;
    }
    let in_xdp = reason == Some("XDP")
        || view.location(at).is_some_and(|l| {
            // A veth's XDP receive is inlined into its NAPI poll on older kernels.
            l.split('+')
                .next()
                .is_some_and(|f| f.contains("xdp") || f.starts_with("veth_poll"))
        });
    in_xdp
        .then(|| programs::xdp(path, &at.ifname))
        .flatten()
        .into_iter()
        .collect()
}

/// The program's facts, and the commands that bypass or remove it.
///
/// Several tc filters on one hook: the kernel does not say which dropped,
/// so all are named, the bypass goes ahead of the first, and none is
/// offered for removal.
fn program_values(progs: &[Attached], client: IpAddr, flow: Tuple, v: &mut Values) {
    let Some(prog) = progs.first() else {
        return;
    };
    let kind = if prog.hook.starts_with("tc ") {
        " BPF"
    } else {
        ""
    };
    let which = match progs {
        [one] => format!(
            "the {}{kind} program {} (id {})",
            one.hook, one.name, one.id
        ),
        _ => {
            let list: Vec<String> = progs
                .iter()
                .map(|p| format!("{} (id {}, pref {})", p.name, p.id, p.pref.unwrap_or(0)))
                .collect();
            format!(
                "one of the {} {}{kind} programs {} (the kernel does not say which)",
                progs.len(),
                prog.hook,
                list.join(", ")
            )
        }
    };
    v.set(Fact::ProgWhich, which);
    if progs.len() > 1 {
        v.set(Fact::ProgDev, prog.dev.clone());
        v.set(Fact::ProgHook, prog.hook.clone());
        bypass_values(prog, client, flow, v);
        return;
    }
    v.set(Fact::ProgName, prog.name.clone());
    v.set(Fact::ProgId, prog.id.to_string());
    v.set(Fact::ProgHook, prog.hook.clone());
    v.set(Fact::ProgDev, prog.dev.clone());
    let dev = &prog.dev;
    if let Some(direction) = prog.hook.strip_prefix("tc ") {
        bypass_values(prog, client, flow, v);
        v.set(
            Fact::ProgRemove,
            format!(
                "tc filter del dev {dev} {direction} pref {}",
                prog.pref.unwrap_or(0)
            ),
        );
    } else {
        let mode = match prog.hook.as_str() {
            "XDP (generic)" => "xdpgeneric",
            "XDP (native)" => "xdpdrv",
            "XDP (offloaded)" => "xdpoffload",
            _ => "xdp",
        };
        v.set(
            Fact::ProgRemove,
            format!("ip link set dev {dev} {mode} off"),
        );
    }
}

/// A tc filter ahead of `prog` that lets this flow alone pass, where the
/// kernel has tc's `pass` action.
fn bypass_values(prog: &Attached, client: IpAddr, flow: Tuple, v: &mut Values) {
    let Some(direction) = prog.hook.strip_prefix("tc ") else {
        return;
    };
    let dev = &prog.dev;
    let bypass_pref = prog
        .pref
        .filter(|p| *p > 1 && programs::tc_pass_available());
    if let Some(pref) = bypass_pref {
        let (l3, m, host) = if client.is_ipv4() {
            ("ip", "ip", 32)
        } else {
            ("ipv6", "ip6", 128)
        };
        let ports = if matches!(flow.proto, 6 | 17 | 132) {
            format!(" match {m} dport {} 0xffff", flow.dport)
        } else {
            String::new()
        };
        v.set(
                Fact::ProgBypass,
                format!(
                    "tc filter add dev {dev} {direction} pref {} protocol {l3} u32 match {m} src {client}/{host} match {m} dst {}/{host} match {m} protocol {} 0xff{ports} action pass",
                    pref - 1,
                    flow.daddr,
                    flow.proto
                ),
            );
    }
}

/// Whether the namespace's own state is worth reading for this packet:
/// a loss the kernel gives no rule for, or a SYN "consumed" where a full
/// accept queue also consumes it.
fn wants_evidence(fate: FateKind, reason: Option<&str>, has_rule: bool, tcp_flags: u8) -> bool {
    let worth = match fate {
        FateKind::Dropped => !has_rule,
        FateKind::Delivered => tcp_flags & 0x12 == 0x02,
        FateKind::Unknown => true,
        FateKind::Forwarded => false,
    };
    worth && !reason.is_some_and(|r| super::TEARDOWN_REASONS.contains(&r))
}

/// The deciding rule's facts; returns who manages its table.
fn rule_facts(p: &Packet, r: &RuleHit, v6: bool, v: &mut Values) -> Manager {
    let walked = p.hops.iter().filter_map(|h| h.rule.as_deref());
    let m = Manager::of(r, walked);
    rule_values(r, m, v);
    let walked_chains = || {
        p.hops
            .iter()
            .filter_map(|h| h.rule.as_deref())
            .filter(|h| h.netns == r.netns && h.table == r.table)
            .map(|h| h.chain.as_str())
    };
    if m == Manager::Firewalld && !v.has(Fact::Zone) {
        // Traffic between zones is a policy's: a zone's rich rule would not
        // open it. A rule in a zone's chain is that zone's, though the packet
        // passed built-in policies' chains (allow-host-ipv6) first.
        let forwarded = r.chain.contains("FWD") || r.chain.contains("FORWARD");
        let pol = firewalld_policy(&r.chain).or_else(|| {
            walked_chains()
                .filter(|c| forwarded && c.contains("_FWD_"))
                .find_map(firewalld_policy)
        });
        if let Some(pol) = pol {
            v.set(Fact::Policy, pol);
        }
    }
    if m == Manager::Proxmox && !v.has(Fact::GuestId) {
        if let Some(id) = walked_chains().find_map(proxmox_guest) {
            v.set(Fact::GuestId, id);
        }
    }
    if m == Manager::Firewalld && !v.has(Fact::Zone) && !v.has(Fact::Policy) {
        // firewalld's last reject sits in filter_INPUT, after the
        // zone chains the packet went through.
        let zone = p
            .hops
            .iter()
            .filter_map(|h| h.rule.as_deref())
            .filter(|h| h.netns == r.netns && h.table == r.table)
            .find_map(|h| firewalld_zone(&h.chain));
        if let Some(z) = zone {
            v.set(Fact::Zone, z);
        }
    }
    let (word, reply_kind, errno) = reject_reply(r.text.as_deref().unwrap_or_default(), v6);
    v.set(Fact::RejectWord, word);
    v.set(Fact::RejectReply, reply_kind);
    v.set(Fact::RejectErrno, errno);
    m
}

#[cfg(test)]
mod tests {
    use super::names_source;

    #[test]
    fn a_rule_names_the_client_only_as_its_own_source() {
        let a = "192.0.2.9".parse().expect("ip");
        assert!(names_source("-A DOCKER-USER -s 192.0.2.9/32 -j DROP", a));
        assert!(names_source("ip saddr 192.0.2.9 drop", a));
        assert!(!names_source("-A INPUT -s 192.0.2.0/24 -j DROP", a));
        assert!(!names_source("-A INPUT -d 192.0.2.9/32 -j DROP", a));
        assert!(!names_source("-A INPUT -p tcp -j REJECT", a));
    }
}

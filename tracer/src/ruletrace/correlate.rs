//! Attaching rule hits to the packet they belong to.
use std::{
    collections::{HashMap, HashSet},
    ops::RangeInclusive,
};

use super::RuleWatch;
use crate::{
    events::{Hop, HopKind, RuleHit},
    model::Hook,
    model::{Tuple, Verdict},
    track::{Fate, Packet},
};

/// Rule events come over netlink with no kernel timestamp, only bounds (on
/// the same monotonic clock as the hops' `t_ns`): queued after its socket was
/// last seen empty, received when read. A packet claims those whose bounds
/// meet the span from a little before its first hop to a while after its last.
const BEFORE_NS: u64 = 50_000_000;
const AFTER_NS: u64 = 2_000_000_000;

fn same_flow(a: &Tuple, b: &Tuple) -> bool {
    a.saddr == b.saddr
        && a.daddr == b.daddr
        && a.sport == b.sport
        && a.dport == b.dport
        && a.proto == b.proto
}

/// Whether the kernel may have traced `r` within `span`.
fn traced_within(span: &RangeInclusive<u64>, r: &RuleHit) -> bool {
    r.received_ns >= *span.start() && r.queued_after_ns <= *span.end()
}

/// Moves the rule hits that belong to `p` out of the watch and into its
/// path, as `nf_rule` hops placed just after the packet entered the
/// namespace where the rules ran.
pub fn attach(watch: &mut RuleWatch, p: &mut Packet) {
    let ip_ids: HashSet<u16> = p.hops.iter().filter_map(|h| h.ip_id).collect();
    let window = window_of(&p.hops);
    let mine = watch.take(&ip_ids, |r| belongs(&p.hops, &window, r));
    log::debug!(
        "packet {}: ip ids {ip_ids:?}, {} rule hits attached, {:?}",
        p.id,
        mine.len(),
        watch
    );
    place(p, mine);
    p.fate = Fate::of(&p.hops);
}

/// When the kernel may have traced a packet with these hops.
fn window_of(hops: &[Hop]) -> RangeInclusive<u64> {
    let first_ns = hops.iter().map(|h| h.t_ns).min().unwrap_or(0);
    let last_ns = hops.iter().map(|h| h.t_ns).max().unwrap_or(0);
    first_ns.saturating_sub(BEFORE_NS)..=last_ns.saturating_add(AFTER_NS)
}

/// Whether rule hit `r` belongs to the packet with these hops. Its IPv4 id
/// is looked for among the hops in the namespace where the rules ran: a
/// packet whose skb address a later packet reused (its own free unseen)
/// can carry that packet's hops elsewhere, and must not take its hits.
fn belongs(hops: &[Hop], window: &RangeInclusive<u64>, r: &RuleHit) -> bool {
    let tuples: Vec<Tuple> = hops.iter().filter_map(|h| h.tuple).collect();
    let ip_ids: HashSet<u16> = hops
        .iter()
        .filter(|h| h.netns == r.netns)
        .filter_map(|h| h.ip_id)
        .collect();
    hops.iter().any(|h| h.netns == r.netns)
        && traced_within(window, r)
        && r.tuple
            .is_some_and(|t| tuples.iter().any(|pt| same_flow(pt, &t)))
        && match (r.ip_id, ip_ids.is_empty()) {
            (Some(id), false) => ip_ids.contains(&id),
            _ => true,
        }
}

/// Gives each hit a time just after the `nf_hook` hop of its hook (fentry
/// and kprobe tiers) or else just after the packet entered the namespace,
/// keeping the order the kernel reported them in. Regular chains have no
/// hook of their own: they take the hook of the base chain that jumped there.
fn place(p: &mut Packet, hits: Vec<RuleHit>) {
    let mut added = Vec::new();
    let mut walk_hook: HashMap<(u32, u32), Hook> = HashMap::new();
    for (n, mut hit) in hits.into_iter().enumerate() {
        let walk = (hit.netns, hit.trace_id);
        match hit.hook {
            Some(h) => {
                walk_hook.insert(walk, h);
            }
            None => hit.hook = walk_hook.get(&walk).copied(),
        }
        let in_ns = |h: &&Hop| h.netns == hit.netns;
        let anchor = p
            .hops
            .iter()
            .filter(in_ns)
            .find(|h| h.kind == HopKind::NfHook && hit.hook.is_some() && h.hook == hit.hook)
            .or_else(|| p.hops.iter().filter(in_ns).find(|h| h.kind == HopKind::Rx))
            .or_else(|| p.hops.iter().find(in_ns));
        let Some(anchor) = anchor else { continue };
        let mut hop = anchor.clone();
        hop.kind = HopKind::NfRule;
        hop.t_ns = anchor.t_ns + 1 + n as u64;
        hop.hook = hit.hook;
        hop.verdict = match hit.verdict {
            Verdict::Accept | Verdict::Drop => Some(hit.verdict.clone()),
            _ => None,
        };
        hop.tuple = hit.tuple.or(anchor.tuple);
        hop.reason_raw = 0;
        hop.location = 0;
        hop.stack = Box::default();
        hop.bytes = None;
        hop.rule = Some(Box::new(hit));
        added.push(hop);
    }
    p.hops.extend(added);
    p.hops.sort_by_key(|h| h.t_ns);
}

/// The rule that decided a dropped packet's fate, if rule tracing saw it.
pub fn deciding_rule(p: &Packet) -> Option<&RuleHit> {
    p.hops
        .iter()
        .rev()
        .filter_map(|h| h.rule.as_deref())
        .find(|r| r.is_drop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(queued_after_ns: u64, received_ns: u64) -> RuleHit {
        RuleHit {
            received_ns,
            queued_after_ns,
            ..RuleHit::for_test("DOCKER-USER", Verdict::Drop)
        }
    }

    fn tuple(saddr: &str, daddr: &str, sport: u16, dport: u16) -> Tuple {
        Tuple {
            saddr: saddr.parse().expect("address"),
            daddr: daddr.parse().expect("address"),
            sport,
            dport,
            proto: 6,
        }
    }

    fn hop(t_s: u64, kind: HopKind, netns: u32, ip_id: u16, t: Tuple) -> Hop {
        Hop {
            ip_id: Some(ip_id),
            tuple: Some(t),
            ..Hop::for_test(t_s * 1_000_000_000, kind, netns, 2, "eth0")
        }
    }

    /// Seen in compare_points_at_forward_docker_user under load: a packet
    /// of flow B delivered into the container (its free unseen) kept its
    /// skb address open; the blocked client's SYN, reusing that address,
    /// added its last hop in the client's namespace to B's packet. B's
    /// packet then claimed that SYN's nat hits in the Docker host (same ip
    /// id, same tuple, somewhere on B's path), and A's path lacked them.
    #[test]
    fn a_hit_belongs_to_the_packet_with_its_ip_id_in_the_namespace_it_ran_in() {
        let (client, dock, ctr) = (306, 439, 515);
        let a_pre = tuple("192.0.2.9", "192.0.2.25", 40000, 8092);
        let a_post = tuple("192.0.2.9", "198.51.100.2", 40000, 80);
        let b_pre = tuple("192.0.2.134", "192.0.2.25", 41000, 8092);
        let b_post = tuple("192.0.2.134", "198.51.100.2", 41000, 80);
        let b = vec![
            hop(10, HopKind::Rx, dock, 6727, b_pre),
            hop(10, HopKind::Rx, ctr, 6727, b_post),
            hop(11, HopKind::Consume, client, 56898, a_pre),
        ];
        let a = vec![
            hop(11, HopKind::Tx, client, 56898, a_pre),
            hop(11, HopKind::Rx, dock, 56898, a_pre),
            hop(11, HopKind::Drop, dock, 56898, a_post),
        ];
        let nat = RuleHit {
            netns: dock,
            table: "nat".into(),
            tuple: Some(a_pre),
            ip_id: Some(56898),
            received_ns: 11 * 1_000_000_000 + 1_000,
            queued_after_ns: 11 * 1_000_000_000,
            ..RuleHit::for_test("PREROUTING", Verdict::Jump("DOCKER".into()))
        };
        assert!(belongs(&a, &window_of(&a), &nat));
        assert!(
            !belongs(&b, &window_of(&b), &nat),
            "B's packet took A's nat hit"
        );
    }

    #[test]
    fn a_hit_read_late_still_belongs_to_the_packet_it_was_queued_during() {
        let s = 1_000_000_000;
        let span = 10 * s..=12 * s;
        // Read promptly.
        assert!(traced_within(&span, &hit(10 * s, 10 * s + 1_000)));
        // Queued while the packet passed, read 3 s later: a watcher busy
        // listing a table (seconds under emulation) reads late.
        assert!(traced_within(&span, &hit(11 * s, 15 * s)));
        // Queued after the span ended, or read before it began: another packet's.
        assert!(!traced_within(&span, &hit(13 * s, 14 * s)));
        assert!(!traced_within(&span, &hit(8 * s, 9 * s)));
    }
}

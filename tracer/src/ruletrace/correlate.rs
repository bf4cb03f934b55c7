//! Attaching rule hits to the packet they belong to.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use super::RuleWatch;
use crate::{
    events::{Hop, HopKind, RuleHit, Tuple, Verdict},
    kernel::Hook,
    track::{Fate, Packet},
};

/// Events arrive over netlink, not with kernel timestamps: accept those
/// received from a little before the packet's first event to its settling.
const SLACK: Duration = Duration::from_millis(50);

fn same_flow(a: &Tuple, b: &Tuple) -> bool {
    a.saddr == b.saddr
        && a.daddr == b.daddr
        && a.sport == b.sport
        && a.dport == b.dport
        && a.proto == b.proto
}

/// Moves the rule hits that belong to `p` out of the watch and into its
/// path, as `nf_rule` hops placed just after the packet entered the
/// namespace where the rules ran.
pub fn attach(watch: &mut RuleWatch, p: &mut Packet) {
    let tuples: Vec<Tuple> = p.hops.iter().filter_map(|h| h.tuple).collect();
    let ip_ids: HashSet<u16> = p.hops.iter().filter_map(|h| h.ip_id).collect();
    let netns: HashSet<u32> = p.hops.iter().map(|h| h.netns).collect();
    let from = p.first_seen.checked_sub(SLACK).unwrap_or(p.first_seen);
    let belongs = |r: &RuleHit| {
        netns.contains(&r.netns)
            && r.received >= from
            && r.tuple
                .is_some_and(|t| tuples.iter().any(|pt| same_flow(pt, &t)))
            && match (r.ip_id, ip_ids.is_empty()) {
                (Some(id), false) => ip_ids.contains(&id),
                _ => true,
            }
    };
    let mine = watch.take(&ip_ids, belongs);
    place(p, mine);
    p.fate = Fate::of(&p.hops);
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
        hop.verdict = match hit.verdict.as_str() {
            "ACCEPT" => Some(Verdict::Accept),
            "DROP" => Some(Verdict::Drop),
            _ => None,
        };
        hop.tuple = hit.tuple.or(anchor.tuple);
        hop.reason_raw = 0;
        hop.location = 0;
        hop.stack.clear();
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

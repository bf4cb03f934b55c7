//! A namespace with iptables-legacy and nftables rules both: the kernel
//! runs both on the same hooks (in the order they were registered), so a
//! packet meets the rules of one and then, if it survives, the other's.
use super::{deciding_rule, RuleWatch};
use crate::{names::NetnsNames, track::Packet};

/// Notes, on a packet a rule dropped in a namespace where both engines are
/// traced, which engine decided and what the other one did with it.
pub fn note_engines(watch: &RuleWatch, p: &mut Packet, names: &mut NetnsNames) {
    let Some(decider) = deciding_rule(p) else {
        return;
    };
    if !watch.traces_both_engines(decider.netns) {
        return;
    }
    let other_is_legacy = !decider.legacy;
    let other = if other_is_legacy {
        "iptables-legacy"
    } else {
        "nftables"
    };
    let seen = p
        .hops
        .iter()
        .filter_map(|h| h.rule.as_deref())
        .rfind(|r| r.netns == decider.netns && r.legacy == other_is_legacy);
    let ns = names
        .name(decider.netns)
        .map_or_else(|| format!("netns:{}", decider.netns), str::to_owned);
    let what_other_did = match seen {
        Some(r) => format!(
            "{other} saw it too: its last decision was {} ({})",
            r.phrase(),
            r.verdict
        ),
        None => format!(
            "{other}'s rules there did not see it (their hook runs after, or none of them matched)"
        ),
    };
    let note = format!(
        "{ns} has iptables-legacy and nftables rules: {} decided ({}); {what_other_did}",
        decider.engine(),
        decider.phrase()
    );
    p.notes.push(note);
}

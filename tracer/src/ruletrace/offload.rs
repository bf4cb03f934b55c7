//! Flows offloaded to an nftables flowtable: once a `flow add @ft` rule
//! has taken an established connection, the flowtable's ingress hook
//! forwards its packets itself (the hook steals them), so they skip the
//! prerouting, forward and postrouting hooks, and every rule there.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    events::HopKind,
    model::{Family, Verdict},
    names::NetnsNames,
    netfilter::{flowtables, Flowtable},
    track::Packet,
};

/// How long a namespace's list of flowtables is reused.
const FLOWTABLES_KEPT: Duration = Duration::from_secs(1);

/// Flowtables by namespace, listed when a packet needs them.
#[derive(Debug, Default)]
pub struct Offloads {
    listed: HashMap<u32, (Instant, Vec<Flowtable>)>,
}

/// The flowtable named by a rule's text (`flow add @ft`, `flow offload @ft`).
fn flowtable_in_rule(text: &str) -> Option<&str> {
    let (_, rest) = text
        .split_once("flow add @")
        .or_else(|| text.split_once("flow offload @"))?;
    rest.split_whitespace().next()
}

impl Offloads {
    fn of(&mut self, netns: u32, names: &mut NetnsNames) -> &[Flowtable] {
        let fresh = self
            .listed
            .get(&netns)
            .is_some_and(|(at, _)| at.elapsed() < FLOWTABLES_KEPT);
        if !fresh {
            let found = names
                .path(netns)
                .map(|path| flowtables(Some(&path)))
                .transpose()
                .unwrap_or_else(|e| {
                    log::debug!("netns {netns}: listing flowtables: {e}");
                    None
                })
                .unwrap_or_default();
            self.listed.insert(netns, (Instant::now(), found));
        }
        self.listed.get(&netns).map_or(&[], |(_, f)| f.as_slice())
    }

    /// Notes where `p` was offloaded (the netdev ingress hook stole it on a
    /// flowtable's device and the namespace sent it on), and where a rule
    /// hands its flow to a flowtable.
    pub fn note(&mut self, p: &mut Packet, names: &mut NetnsNames) {
        let mut notes = Vec::new();
        for (i, h) in p.hops.iter().enumerate() {
            let stolen_at_ingress = h.kind == HopKind::NfHook
                && h.hook_family() == Some(Family::Netdev)
                && h.verdict == Some(Verdict::Stolen);
            let sent_on = p.hops[i + 1..]
                .iter()
                .any(|n| n.netns == h.netns && n.kind == HopKind::Tx);
            if !stolen_at_ingress || !sent_on {
                continue;
            }
            let ns = names
                .name(h.netns)
                .map_or_else(|| format!("netns:{}", h.netns), str::to_owned);
            let by = self
                .of(h.netns, names)
                .iter()
                .find(|f| f.devices.iter().any(|d| *d == *h.ifname))
                .map(Flowtable::phrase);
            notes.push(match by {
                Some(by) => format!(
                    "offloaded in {ns} by {by} (on {}): the flow is established, so its \
                     packets there skip the prerouting, forward and postrouting hooks and \
                     their rules",
                    h.ifname
                ),
                None => format!(
                    "offloaded in {ns} at {}'s ingress hook (a flowtable, gone by now): \
                     its packets there skip the prerouting, forward and postrouting hooks",
                    h.ifname
                ),
            });
        }
        for r in p.hops.iter().filter_map(|h| h.rule.as_deref()) {
            let Some(ft) = r.text.as_deref().and_then(flowtable_in_rule) else {
                continue;
            };
            let ns = names
                .name(r.netns)
                .map_or_else(|| format!("netns:{}", r.netns), str::to_owned);
            let note = format!(
                "{} in {ns} offloads this flow to flowtable {ft} once it is established: \
                 from then on its packets skip the forward hook there",
                r.phrase()
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        p.notes.extend(notes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flowtable_a_rule_adds_to_is_read_from_its_text() {
        assert_eq!(
            flowtable_in_rule("ip protocol tcp flow add @ft counter"),
            Some("ft")
        );
        assert_eq!(flowtable_in_rule("flow offload @fast"), Some("fast"));
        assert_eq!(flowtable_in_rule("tcp dport 22 accept"), None);
    }
}

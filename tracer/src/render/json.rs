//! JSON Lines: the [`Record`]s of a trace, built from packets and hops.
use super::{
    records::{
        Flow, HopRecord, OutcomeGroup, PacketRecord, PacketReport, Record, RuleFields, StatsRecord,
        SummaryRecord,
    },
    Stats,
};
use crate::names::View;
use crate::{
    diagnose::{Outcomes, Report},
    events::{Hop, RuleHit},
    ruletrace::deciding_rule,
    track::Packet,
};

pub fn hop(packet: u64, hop: &Hop, view: &View) -> Record {
    let rule = hop.rule.as_deref();
    Record::Hop(HopRecord {
        packet,
        t_ns: hop.t_ns,
        netns: hop.netns,
        netns_name: view.netns_name(hop.netns),
        netns_kind: view.netns_kind(hop.netns),
        ifname: hop.ifname.to_string(),
        ifindex: hop.ifindex,
        kind: hop.kind.as_str(),
        hook: hop.hook.map(|h| h.as_str()),
        family: match rule {
            Some(r) => Some(r.family),
            None => hop.hook_family(),
        }
        .map(|f| f.as_str().to_owned()),
        verdict: match rule {
            Some(r) => Some(r.verdict.clone()),
            None => hop.verdict.clone(),
        },
        reason: view.reason(hop),
        location: view.location(hop),
        flow: hop.tuple.into(),
        tcp_flags: hop.tcp_flags,
        icmp: hop.icmp.as_deref().copied(),
        len: hop.len,
        rule: rule.map(|r| RuleFields {
            table: r.table.clone(),
            chain: r.chain.clone(),
            rule_handle: r.handle,
            rule_index: r.index,
            rule: r.text.clone(),
            policy: r.policy,
        }),
        ct: hop.ct.as_deref().map(|c| Box::new(c.into())),
    })
}

fn packet_record(p: &Packet, view: &View) -> PacketRecord {
    let at = p.fate.at.and_then(|i| p.hops.get(i));
    let first = p.hops.iter().find_map(|h| h.tuple);
    let last = p.hops.iter().rev().find_map(|h| h.tuple);
    let r = deciding_rule(p);
    PacketRecord {
        packet: p.id,
        fate: p.fate.kind.as_str(),
        hook: p.fate.hook.map(|h| h.as_str()),
        reason: at.and_then(|h| view.reason(h)),
        location: at.and_then(|h| view.location(h)),
        netns: at.map(|h| h.netns),
        netns_name: at.and_then(|h| view.netns_name(h.netns)),
        netns_kind: at.and_then(|h| view.netns_kind(h.netns)),
        ifname: at.map(|h| h.ifname.to_string()),
        flow: first.into(),
        final_flow: (last != first).then(|| Flow::from(last)),
        table: r.map(|r| r.table.clone()),
        chain: r.map(|r| r.chain.clone()),
        rule_index: r.and_then(|r| r.index),
        rule: r.and_then(|r| r.text.clone()),
        policy: r.map(|r| r.policy),
        rule_engine: r.map(RuleHit::engine),
        hops: p.hops.len(),
        filter: p.hops.first().map(|h| h.filter),
        rules_late: p
            .rules_late
            .iter()
            .map(|&ino| {
                view.netns_name(ino)
                    .unwrap_or_else(|| format!("netns:{ino}"))
            })
            .collect(),
        notes: p.notes.clone(),
        report: None,
    }
}

pub fn packet(p: &Packet, view: &View) -> Record {
    Record::Packet(packet_record(p, view))
}

pub fn stats(s: &Stats) -> Record {
    Record::Stats(StatsRecord {
        tier: s.tier,
        events: s.events,
        lost: s.lost,
        packets: Some(s.packets),
        sent: Some(s.sent),
        undecodable: Some(s.bad),
        evicted: Some(s.evicted),
        rule_overflows: Some(s.rule_overflows),
        settled_early: Some(s.settled_early),
        drops: None,
        unprinted: None,
    })
}

/// The `packet` record with its direction and plain-language diagnosis.
pub fn packet_with(p: &Packet, view: &View, report: &Report) -> Record {
    let mut rec = packet_record(p, view);
    let container = p
        .hops
        .iter()
        .rev()
        .find_map(|h| view.netns.container(h.netns))
        .map(str::to_owned);
    rec.report = Some(PacketReport {
        direction: report.direction.as_str(),
        diagnosis: report.diagnosis.clone(),
        container,
    });
    Record::Packet(rec)
}

/// The exit-time `summary` record: verdicts grouped, and connections.
pub fn summary(o: &Outcomes) -> Record {
    Record::Summary(SummaryRecord {
        outcomes: o
            .groups()
            .into_iter()
            .map(|(d, n)| OutcomeGroup {
                cause: d.cause,
                message: d.message,
                advice: d.advice,
                packets: n,
            })
            .collect(),
        connections: o.connections(),
    })
}

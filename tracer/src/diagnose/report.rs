//! Per-packet reports: direction, diagnosis, and the running outcomes.
use std::collections::HashMap;

use super::{diagnose, nat::Unmasqueraded, settled_fate, Diagnosis, Fact, Facts, Outcomes};
use crate::{
    evidence::Evidence,
    model::{Flows, Tuple},
    names::Containers,
    names::View,
    track::Packet,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Reply,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Reply => "reply",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub direction: Direction,
    pub diagnosis: Diagnosis,
}

pub struct Reporter {
    /// Every flow's filter, as the kernel holds it.
    filter: tracer_common::Filter,
    pub containers: Containers,
    pub outcomes: Outcomes,
    evidence: Evidence,
    /// Requests a router forwarded with their source unchanged, by their
    /// flow as it reached the server: a reply that dies for want of a
    /// route back is then explained by the router that did not masquerade.
    unmasqueraded: HashMap<Tuple, Vec<Unmasqueraded>>,
}

/// At most this many requests are remembered for their replies.
const REMEMBERED: usize = 4096;

/// Whether the sender's own send failed: netfilter dropped a datagram
/// (not a TCP segment, which TCP resends) on its way out of the namespace
/// that sent it, and the kernel's `nf_hook` answers such a drop with
/// `EPERM` to the sending call.
fn refused_at_send(p: &Packet, sender: u32, facts: &Facts) -> bool {
    let at_sender = p
        .fate
        .at
        .and_then(|i| p.hops.get(i))
        .is_some_and(|h| h.netns == sender);
    let leaving = matches!(facts.get(Fact::Hook), Some("OUTPUT" | "POSTROUTING"));
    let by_netfilter = facts.rule.is_some() || facts.reason.as_deref() == Some("NETFILTER_DROP");
    p.fate.kind == crate::track::FateKind::Dropped
        && p.hops
            .iter()
            .find_map(|h| h.tuple)
            .is_some_and(|t| t.proto != 6)
        && at_sender
        && leaving
        && by_netfilter
}

impl Reporter {
    pub fn new(flows: &Flows, containers: Containers, evidence: Evidence) -> Self {
        // Matched forward only (`terms_match`): replies are told apart.
        let filter = tracer_common::Filter::from(flows);
        Self {
            filter,
            containers,
            outcomes: Outcomes::default(),
            evidence,
            unmasqueraded: HashMap::new(),
        }
    }

    /// Whether a packet the filter matches is still a reply: a filter
    /// that matches both ways (`host X and tcp port P`) matches answers
    /// too. A SYN-ACK answers; so does a packet going the other way of a
    /// connection whose requests were seen first.
    fn answers(&self, first: Option<&crate::events::Hop>) -> bool {
        first.is_some_and(|h| {
            h.tuple.is_some_and(|t| {
                (t.proto == 6 && h.tcp_flags & 0x12 == 0x12)
                    || self.outcomes.has_requests(&t.reversed())
            })
        })
    }

    /// Diagnoses a settled packet; where its free says otherwise, the
    /// cause decides its fate (see [`settled_fate`]).
    pub fn packet(&mut self, p: &mut Packet, view: &mut View) -> Report {
        let first = p.hops.iter().find(|h| h.tuple.is_some());
        let last = p.hops.iter().rev().find(|h| h.tuple.is_some());
        let forward = first
            .and_then(|h| h.tuple)
            .is_some_and(|t| crate::model::terms_match(&self.filter, &t));
        let direction = if first.is_none() || (forward && !self.answers(first)) {
            Direction::Request
        } else {
            Direction::Reply
        };
        if direction == Direction::Request {
            let routers = super::nat::unmasqueraded(p);
            if let (false, Some(t)) = (routers.is_empty(), last.and_then(|h| h.tuple)) {
                if self.unmasqueraded.len() >= REMEMBERED {
                    self.unmasqueraded.clear();
                }
                self.unmasqueraded.insert(t, routers);
            }
        }
        let request = match direction {
            Direction::Reply => first
                .and_then(|h| h.tuple)
                .and_then(|t| self.unmasqueraded.get(&t.reversed()))
                .map(Vec::as_slice)
                .unwrap_or_default(),
            Direction::Request => &[],
        };
        let facts = Facts::build(
            p,
            view,
            &self.containers,
            direction == Direction::Reply,
            request,
            &mut self.evidence,
        );
        let diagnosis = diagnose(&facts);
        if let Some(kind) = settled_fate(&diagnosis.cause) {
            p.fate.kind = kind;
        }
        match (direction, first, last) {
            (Direction::Request, Some(f), _) => {
                let place = facts.get(Fact::Where).unwrap_or_default().to_owned();
                if let Some(t) = f.tuple {
                    if refused_at_send(p, f.netns, &facts) && diagnosis.cause != "reject" {
                        self.outcomes.refused_at_send(t);
                    }
                    self.outcomes
                        .request(t, f.netns, p.fate.kind, &diagnosis, place);
                }
            }
            (Direction::Reply, Some(f), Some(l)) => {
                let origin = super::facts::place(view, f.netns);
                let icmp = p.hops.iter().rev().find_map(|h| h.icmp.as_deref().copied());
                if let Some(t) = l.tuple {
                    let reply = super::outcome::ReplySeen {
                        last: t,
                        last_netns: l.netns,
                        flags: f.tcp_flags,
                        icmp,
                        origin,
                    };
                    self.outcomes.reply(reply, p.fate.kind, &diagnosis);
                }
            }
            _ => {}
        }
        Report {
            direction,
            diagnosis,
        }
    }
}

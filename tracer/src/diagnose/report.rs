//! Per-packet reports: direction, diagnosis, and the running outcomes.
use super::{diagnose, settled_fate, Diagnosis, Fact, Facts, Outcomes};
use crate::{evidence::Evidence, model::Flows, names::Containers, names::View, track::Packet};

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
        }
    }

    /// Diagnoses a settled packet; where its free says otherwise, the
    /// cause decides its fate (see [`settled_fate`]).
    pub fn packet(&mut self, p: &mut Packet, view: &mut View) -> Report {
        let first = p.hops.iter().find(|h| h.tuple.is_some());
        let last = p.hops.iter().rev().find(|h| h.tuple.is_some());
        let forward = first
            .and_then(|h| h.tuple)
            .is_some_and(|t| crate::model::terms_match(&self.filter, &t));
        let direction = if forward || first.is_none() {
            Direction::Request
        } else {
            Direction::Reply
        };
        let facts = Facts::build(
            p,
            view,
            &self.containers,
            direction == Direction::Reply,
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
                    self.outcomes
                        .request(t, f.netns, p.fate.kind, &diagnosis, place);
                }
            }
            (Direction::Reply, Some(f), Some(l)) => {
                let origin = super::facts::place(view, f.netns);
                let icmp = p.hops.iter().rev().find_map(|h| h.icmp);
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

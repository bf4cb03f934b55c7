//! Connections, seen from the client: connected, refused (and by whom) or
//! timed out (and where the packets stopped); and the packet verdicts
//! grouped by distinct outcome.
use std::collections::BTreeMap;

use serde::Serialize;

use super::Diagnosis;
use crate::{model::Tuple, track::FateKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionOutcome {
    Connected,
    Refused,
    TimedOut,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub client: String,
    pub server: String,
    pub proto: String,
    pub outcome: ConnectionOutcome,
    pub explanation: String,
    pub requests: usize,
    pub replies: usize,
}

const TCP_RST: u8 = 0x04;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

struct Reply {
    flags: u8,
    origin: String,
}

#[derive(Clone)]
struct Request {
    diag: Diagnosis,
    /// Where the request's fate was decided.
    place: String,
}

/// What one connection needs for its verdict: bounded, however many
/// packets it has.
#[derive(Default)]
struct ConnState {
    requests: usize,
    all_failed: bool,
    first_netns: Option<u32>,
    last: Option<Request>,
    /// The last request a REJECT or a missing listener answered.
    refuser: Option<Request>,
    replies: usize,
    /// The first replies, enough to tell refused from connected.
    kept_replies: Vec<(Reply, u32, FateKind)>,
}

const KEPT_REPLIES: usize = 16;
/// Connections and verdict groups kept; more are counted, not kept.
const MAX_CONNECTIONS: usize = 4096;
const MAX_GROUPS: usize = 1024;

/// Client address and port, server address and port, protocol.
type Key = (String, String, u8);

#[derive(Default)]
pub struct Outcomes {
    conns: BTreeMap<Key, ConnState>,
    groups: Vec<(Diagnosis, u64)>,
    /// Packets of connections or verdicts beyond the caps.
    pub uncounted: u64,
}

fn ep(addr: std::net::IpAddr, port: u16) -> String {
    if addr.is_ipv6() {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

impl Outcomes {
    /// A packet going from the client to the server, `first` as it left.
    pub fn request(
        &mut self,
        first: Tuple,
        first_netns: u32,
        fate: FateKind,
        diag: &Diagnosis,
        place: String,
    ) {
        self.group(diag);
        let key = (
            ep(first.saddr, first.sport),
            ep(first.daddr, first.dport),
            first.proto,
        );
        let Some(c) = self.conn(key) else { return };
        if c.requests == 0 {
            c.all_failed = true;
            c.first_netns = Some(first_netns);
        }
        c.requests += 1;
        c.all_failed &= matches!(fate, FateKind::Dropped | FateKind::Unknown);
        let req = Request {
            diag: diag.clone(),
            place,
        };
        if matches!(diag.cause.as_str(), "reject" | "no_socket") {
            c.refuser = Some(req.clone());
        }
        c.last = Some(req);
    }

    fn conn(&mut self, key: Key) -> Option<&mut ConnState> {
        if self.conns.len() >= MAX_CONNECTIONS && !self.conns.contains_key(&key) {
            self.uncounted += 1;
            return None;
        }
        Some(self.conns.entry(key).or_default())
    }

    /// A reply, `last` as it arrived (addresses are the client's view once
    /// NAT is undone), from `origin`: where its first hop was.
    pub fn reply(
        &mut self,
        last: Tuple,
        last_netns: u32,
        flags: u8,
        origin: String,
        fate: FateKind,
        diag: &Diagnosis,
    ) {
        self.group(diag);
        let key = (
            ep(last.daddr, last.dport),
            ep(last.saddr, last.sport),
            last.proto,
        );
        let Some(c) = self.conn(key) else { return };
        c.replies += 1;
        if c.kept_replies.len() < KEPT_REPLIES {
            c.kept_replies
                .push((Reply { flags, origin }, last_netns, fate));
        }
    }

    fn group(&mut self, diag: &Diagnosis) {
        if let Some((_, n)) = self.groups.iter_mut().find(|(d, _)| d == diag) {
            *n += 1;
        } else if self.groups.len() < MAX_GROUPS {
            self.groups.push((diag.clone(), 1));
        } else {
            self.uncounted += 1;
        }
    }

    /// Distinct verdicts, most frequent first.
    pub fn groups(&self) -> Vec<(Diagnosis, u64)> {
        let mut g = self.groups.clone();
        g.sort_by_key(|g| std::cmp::Reverse(g.1));
        g
    }

    pub fn connections(&self) -> Vec<Connection> {
        self.conns
            .iter()
            .filter(|(_, s)| s.requests > 0)
            .map(|((client, server, proto), s)| {
                let (outcome, explanation) = explain(s);
                Connection {
                    client: client.clone(),
                    server: server.clone(),
                    proto: crate::model::proto_name(*proto),
                    outcome,
                    explanation,
                    requests: s.requests,
                    replies: s.replies,
                }
            })
            .collect()
    }
}

/// A reply reached the client when it left the host towards it, or ended
/// in the namespace the requests came from.
fn arrived(s: &ConnState) -> Vec<&Reply> {
    s.kept_replies
        .iter()
        .filter(|(_, netns, fate)| {
            matches!(fate, FateKind::Forwarded | FateKind::Delivered)
                || s.first_netns == Some(*netns)
        })
        .map(|(r, _, _)| r)
        .collect()
}

fn explain(s: &ConnState) -> (ConnectionOutcome, String) {
    let arrived = arrived(s);
    if let Some(rst) = arrived.iter().find(|r| r.flags & TCP_RST != 0) {
        let origin = s
            .refuser
            .as_ref()
            .map(|r| r.place.clone())
            .unwrap_or_else(|| rst.origin.clone());
        let why = s
            .refuser
            .as_ref()
            .or(s.last.as_ref())
            .map(|r| r.diag.message.clone())
            .unwrap_or_default();
        return (
            ConnectionOutcome::Refused,
            format!("connection refused: the reset came from {origin}. {why}"),
        );
    }
    if arrived
        .iter()
        .any(|r| r.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK)
    {
        return (
            ConnectionOutcome::Connected,
            "connected: the server answered".into(),
        );
    }
    if arrived.is_empty() {
        let stop = s
            .last
            .as_ref()
            .map(|r| r.diag.message.clone())
            .unwrap_or_default();
        let note = if s.replies > 0 {
            format!(" ({} replies were sent but never reached it)", s.replies)
        } else {
            String::new()
        };
        if s.all_failed {
            return (
                ConnectionOutcome::TimedOut,
                format!("timed out: no reply reached the client{note}. {stop}"),
            );
        }
        return (
            ConnectionOutcome::Unknown,
            format!("no reply seen{note}. {stop}"),
        );
    }
    (ConnectionOutcome::Connected, "the server answered".into())
}

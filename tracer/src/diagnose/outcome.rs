//! Connections, seen from the client: connected, refused (and by whom) or
//! timed out (and where the packets stopped); and the packet verdicts
//! grouped by distinct outcome.
use std::collections::BTreeMap;

use serde::Serialize;

use super::Diagnosis;
use crate::{events::Tuple, track::FateKind};

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

struct Request {
    fate: FateKind,
    diag: Diagnosis,
    /// Where the request's fate was decided.
    place: String,
    first_netns: u32,
}

#[derive(Default)]
struct ConnState {
    requests: Vec<Request>,
    replies: Vec<(Reply, u32, FateKind)>,
}

/// Client address and port, server address and port, protocol.
type Key = (String, String, u8);

#[derive(Default)]
pub struct Outcomes {
    conns: BTreeMap<Key, ConnState>,
    groups: Vec<(Diagnosis, u64)>,
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
        let req = Request {
            fate,
            diag: diag.clone(),
            place,
            first_netns,
        };
        self.conns.entry(key).or_default().requests.push(req);
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
        let reply = Reply { flags, origin };
        self.conns
            .entry(key)
            .or_default()
            .replies
            .push((reply, last_netns, fate));
    }

    fn group(&mut self, diag: &Diagnosis) {
        match self.groups.iter_mut().find(|(d, _)| d == diag) {
            Some((_, n)) => *n += 1,
            None => self.groups.push((diag.clone(), 1)),
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
            .filter(|(_, s)| !s.requests.is_empty())
            .map(|((client, server, proto), s)| {
                let (outcome, explanation) = explain(s);
                Connection {
                    client: client.clone(),
                    server: server.clone(),
                    proto: crate::filter::proto_name(*proto),
                    outcome,
                    explanation,
                    requests: s.requests.len(),
                    replies: s.replies.len(),
                }
            })
            .collect()
    }
}

/// A reply reached the client when it left the host towards it, or ended
/// in the namespace the requests came from.
fn arrived(s: &ConnState) -> Vec<&Reply> {
    s.replies
        .iter()
        .filter(|(_, netns, fate)| {
            matches!(fate, FateKind::Forwarded | FateKind::Delivered)
                || s.requests.iter().any(|r| r.first_netns == *netns)
        })
        .map(|(r, _, _)| r)
        .collect()
}

fn explain(s: &ConnState) -> (ConnectionOutcome, String) {
    let arrived = arrived(s);
    if let Some(rst) = arrived.iter().find(|r| r.flags & TCP_RST != 0) {
        let refuser = s
            .requests
            .iter()
            .rev()
            .find(|r| matches!(r.diag.cause.as_str(), "reject" | "no_socket"));
        let origin = refuser
            .map(|r| r.place.clone())
            .unwrap_or_else(|| rst.origin.clone());
        let why = refuser
            .or(s.requests.last())
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
            .requests
            .last()
            .map(|r| r.diag.message.clone())
            .unwrap_or_default();
        let lost_replies = s.replies.len();
        let note = if lost_replies > 0 {
            format!(" ({lost_replies} replies were sent but never reached it)")
        } else {
            String::new()
        };
        let all_failed = s
            .requests
            .iter()
            .all(|r| matches!(r.fate, FateKind::Dropped | FateKind::Unknown));
        if all_failed {
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

//! Connections, seen from the client: connected, refused (a reset or an
//! ICMP port-unreachable, and by whom), unreachable or prohibited (an ICMP
//! error, with its code) or timed out (and where the requests or the
//! replies stopped); and the packet verdicts grouped by distinct outcome.
use std::collections::BTreeMap;

use serde::Serialize;

use super::Diagnosis;
use crate::{
    model::{IcmpError, IcmpMeaning, Tuple},
    track::FateKind,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionOutcome {
    Connected,
    Refused,
    Unreachable,
    Prohibited,
    TimedOut,
    /// Connected, then the data stopped: replies died after the handshake.
    Stalled,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub client: String,
    pub server: String,
    pub proto: String,
    pub outcome: ConnectionOutcome,
    /// What the client's socket reported: `ECONNREFUSED`, `EHOSTUNREACH`,
    /// `ETIMEDOUT`, …; none when it connected or it is not known.
    pub client_error: Option<&'static str>,
    pub explanation: String,
    pub requests: usize,
    pub replies: usize,
}

const TCP_RST: u8 = 0x04;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A reply as the reporter saw it.
pub struct ReplySeen {
    /// Its headers as it arrived (the client's view once NAT is undone).
    pub last: Tuple,
    pub last_netns: u32,
    /// TCP flags as it left.
    pub flags: u8,
    pub icmp: Option<IcmpError>,
    /// Where its first hop was.
    pub origin: String,
}

struct Reply {
    flags: u8,
    icmp: Option<IcmpError>,
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
    /// Why the replies that died on their way back died: the most precise
    /// account, told once for the connection however often they were resent.
    reply_drop: Option<Diagnosis>,
    replies_dropped: u64,
    /// Why the client's last requests died, when they died of a cause that
    /// stops a connection midway; cleared by a request that got through.
    request_drop: Option<Diagnosis>,
    /// Netfilter dropped a datagram of its as it left the client's own
    /// namespace: the client's send failed with `EPERM`.
    refused_at_send: bool,
}

/// Whether a request or reply that died of `cause` after the handshake
/// stalls the connection: not a segment refused by a socket that already
/// closed, and not a drop of no known cause.
fn stalls(cause: &str) -> bool {
    !matches!(
        cause,
        "dropped" | "teardown" | "no_socket" | "listener_elsewhere"
    )
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
        if fate != FateKind::Dropped {
            c.request_drop = None;
        } else if stalls(&diag.cause) {
            c.request_drop = Some(diag.clone());
        }
        c.all_failed &= matches!(fate, FateKind::Dropped | FateKind::Unknown)
            || super::causes::connection_fails(&diag.cause);
        let req = Request {
            diag: diag.clone(),
            place,
        };
        if matches!(diag.cause.as_str(), "reject" | "no_socket" | "no_route") {
            c.refuser = Some(req.clone());
        }
        // A request last seen on its way (still queued when tracing
        // stopped) says less than one whose end is known before it.
        if diag.cause != "vanished" || c.last.is_none() {
            c.last = Some(req);
        }
    }

    /// The client's own send of flow `t` failed (see `refused_at_send` in
    /// the reporter).
    pub fn refused_at_send(&mut self, t: Tuple) {
        let key = (ep(t.saddr, t.sport), ep(t.daddr, t.dport), t.proto);
        if let Some(c) = self.conn(key) {
            c.refused_at_send = true;
        }
    }

    /// Whether requests of flow `t` (as it left its client) were seen.
    pub fn has_requests(&self, t: &Tuple) -> bool {
        let key = (ep(t.saddr, t.sport), ep(t.daddr, t.dport), t.proto);
        self.conns.get(&key).is_some_and(|c| c.requests > 0)
    }

    fn conn(&mut self, key: Key) -> Option<&mut ConnState> {
        if self.conns.len() >= MAX_CONNECTIONS && !self.conns.contains_key(&key) {
            self.uncounted += 1;
            return None;
        }
        Some(self.conns.entry(key).or_default())
    }

    /// A reply; an ICMP error belongs to the flow it quotes. A reply that
    /// died is counted with its connection, not grouped packet by packet:
    /// a server resends an unanswered SYN-ACK, and each copy dies the same way.
    pub fn reply(&mut self, r: ReplySeen, fate: FateKind, diag: &Diagnosis) {
        // A socket freeing what it queued when it closes is no loss.
        let fate = if diag.cause == "teardown" {
            FateKind::Delivered
        } else {
            fate
        };
        if fate != FateKind::Dropped {
            self.group(diag);
        }
        // An error about a request quotes client → server; one about a
        // reply (a router's fragmentation-needed or unreachable), server →
        // client: that one goes to the server, and never reaches the client.
        let mut to_server = false;
        let key = match r.icmp {
            Some(e) => {
                let (a, b) = (
                    ep(e.quoted.saddr, e.quoted.sport),
                    ep(e.quoted.daddr, e.quoted.dport),
                );
                if self
                    .conns
                    .contains_key(&(b.clone(), a.clone(), e.quoted.proto))
                {
                    to_server = true;
                    (b, a, e.quoted.proto)
                } else {
                    (a, b, e.quoted.proto)
                }
            }
            None => (
                ep(r.last.daddr, r.last.dport),
                ep(r.last.saddr, r.last.sport),
                r.last.proto,
            ),
        };
        let Some(c) = self.conn(key) else { return };
        c.replies += 1;
        // The most precise account wins: one that names the rule, and so its manager.
        if fate == FateKind::Dropped {
            c.replies_dropped += 1;
            if c.reply_drop.as_ref().is_none_or(|d| d.manager.is_none()) || diag.manager.is_some() {
                c.reply_drop = Some(diag.clone());
            }
        }
        if c.kept_replies.len() < KEPT_REPLIES && !to_server {
            let reply = Reply {
                flags: r.flags,
                icmp: r.icmp,
                origin: r.origin,
            };
            c.kept_replies.push((reply, r.last_netns, fate));
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

    /// Distinct verdicts, most frequent first; the replies that died count
    /// once per connection, under its most precise account.
    pub fn groups(&self) -> Vec<(Diagnosis, u64)> {
        let mut g = self.groups.clone();
        for c in self.conns.values() {
            let Some(d) = &c.reply_drop else { continue };
            match g.iter_mut().find(|(seen, _)| seen == d) {
                Some((_, n)) => *n += c.replies_dropped,
                None => g.push((d.clone(), c.replies_dropped)),
            }
        }
        g.sort_by_key(|g| std::cmp::Reverse(g.1));
        g
    }

    pub fn connections(&self) -> Vec<Connection> {
        self.conns
            .iter()
            .filter(|(_, s)| s.requests > 0)
            .map(|((client, server, proto), s)| {
                let (outcome, client_error, explanation) = explain(s, *proto);
                Connection {
                    client: client.clone(),
                    server: server.clone(),
                    proto: crate::model::proto_name(*proto),
                    outcome,
                    client_error,
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
            *fate != FateKind::Dropped
                && (matches!(fate, FateKind::Forwarded | FateKind::Delivered)
                    || s.first_netns == Some(*netns))
        })
        .map(|(r, _, _)| r)
        .collect()
}

type Explained = (ConnectionOutcome, Option<&'static str>, String);

fn explain(s: &ConnState, proto: u8) -> Explained {
    let arrived = arrived(s);
    let why = why(s);
    if s.refused_at_send && arrived.is_empty() {
        return (
            ConnectionOutcome::Prohibited,
            Some("EPERM"),
            format!(
                "prohibited: the client's own namespace dropped its datagram as it left, so its send failed with EPERM.{why}"
            ),
        );
    }
    answered_by_icmp(s, &arrived, &why, proto)
        .or_else(|| answered(s, &arrived, &why))
        .unwrap_or_else(|| unanswered(s))
}

/// The refusal's (or last request's) own account, after the outcome that
/// leads the line: without the outcome's word, which need not be repeated.
fn why(s: &ConnState) -> String {
    s.refuser
        .as_ref()
        .or(s.last.as_ref())
        .map(|r| {
            let m = r.diag.message.as_str();
            let m = ["refused: ", "prohibited: ", "unreachable: "]
                .iter()
                .find_map(|w| m.strip_prefix(w))
                .unwrap_or(m);
            format!(" {m}")
        })
        .unwrap_or_default()
}

/// An ICMP error reached the client.
fn answered_by_icmp(s: &ConnState, arrived: &[&Reply], why: &str, proto: u8) -> Option<Explained> {
    let (r, e) = arrived.iter().find_map(|r| r.icmp.map(|e| (r, e)))?;
    if proto == 17 && !e.reported_to_udp() {
        return Some((
            ConnectionOutcome::TimedOut,
            Some("ETIMEDOUT"),
            format!(
                "timed out: {e} from {} reached the client, but a UDP socket takes it as a soft error and reports nothing (unless it set IP_RECVERR): the client sees no answer.{why}",
                s.refuser.as_ref().map(|q| q.place.as_str()).unwrap_or(&r.origin)
            ),
        ));
    }
    let outcome = match e.meaning() {
        IcmpMeaning::Refused => ConnectionOutcome::Refused,
        IcmpMeaning::Prohibited => ConnectionOutcome::Prohibited,
        _ => ConnectionOutcome::Unreachable,
    };
    let word = match outcome {
        ConnectionOutcome::Refused => "connection refused",
        ConnectionOutcome::Prohibited => "prohibited",
        _ => "unreachable",
    };
    let origin = s
        .refuser
        .as_ref()
        .map(|q| q.place.as_str())
        .unwrap_or(&r.origin);
    Some((
        outcome,
        Some(e.errno_name()),
        format!(
            "{word}: {e} from {origin} reached the client, whose socket reports {}.{why}",
            e.errno_name()
        ),
    ))
}

/// The server's answer reached the client: a handshake, a reset, or
/// another reply.
fn answered(s: &ConnState, arrived: &[&Reply], why: &str) -> Option<Explained> {
    let rst = arrived.iter().find(|r| r.flags & TCP_RST != 0);
    // A handshake that completed is a connection, whatever ended it later.
    if arrived
        .iter()
        .any(|r| r.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK)
    {
        // Replies that died of a known cause after the handshake stalled it,
        // and so did the client's own segments dying after it; one freed
        // with no known cause, or refused by a socket the client already
        // closed, did not.
        if let Some(d) = s
            .reply_drop
            .as_ref()
            .filter(|d| stalls(&d.cause))
            .or(s.request_drop.as_ref())
        {
            return Some((
                ConnectionOutcome::Stalled,
                None,
                format!("connected, then stalled: {}", d.message),
            ));
        }
        let later = rst
            .map(|r| format!("; a TCP reset from {} ended the connection later", r.origin))
            .unwrap_or_default();
        return Some((
            ConnectionOutcome::Connected,
            None,
            format!("connected: the server answered{later}"),
        ));
    }
    if let Some(rst) = rst {
        let origin = s
            .refuser
            .as_ref()
            .map(|q| q.place.as_str())
            .unwrap_or(&rst.origin);
        return Some((
            ConnectionOutcome::Refused,
            Some("ECONNREFUSED"),
            format!("connection refused: a TCP reset from {origin} reached the client.{why}"),
        ));
    }
    (!arrived.is_empty()).then(|| {
        (
            ConnectionOutcome::Connected,
            None,
            "the server answered".into(),
        )
    })
}

/// No answer reached the client: why, as far as the packets tell.
fn unanswered(s: &ConnState) -> Explained {
    if let Some(d) = &s.reply_drop {
        let none = match s.replies {
            1 => "its one reply never reached the client".to_owned(),
            n => format!("none of its {n} replies reached the client"),
        };
        let explanation = if d.cause == "reply_dropped" {
            format!("timed out: {}; {none}", d.message)
        } else {
            format!("timed out: the server answered, but {none}. {}", d.message)
        };
        return (ConnectionOutcome::TimedOut, Some("ETIMEDOUT"), explanation);
    }
    let stop = s
        .last
        .as_ref()
        .map(|r| r.diag.message.clone())
        .unwrap_or_default();
    if let Some(r) = &s.refuser {
        return (
            ConnectionOutcome::TimedOut,
            Some("ETIMEDOUT"),
            format!(
                "timed out: the request was answered with a refusal in {}, but the answer never reached the client. {}",
                r.place, r.diag.message
            ),
        );
    }
    let note = if s.replies > 0 {
        format!(" ({} replies were sent but never reached it)", s.replies)
    } else {
        String::new()
    };
    if s.all_failed {
        return (
            ConnectionOutcome::TimedOut,
            Some("ETIMEDOUT"),
            format!("timed out: no reply reached the client{note}. {stop}"),
        );
    }
    (
        ConnectionOutcome::Unknown,
        None,
        format!("no reply seen{note}. {stop}"),
    )
}

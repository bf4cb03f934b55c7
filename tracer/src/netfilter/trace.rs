//! Decoding `NFT_MSG_TRACE` events and the packet headers they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use serde::Serialize;

use super::attrs::{self, AttrIter};
use super::netlink::{self, NFNL_SUBSYS_NFTABLES};
use super::RuleInfo;

pub const NFT_MSG_TRACE: u16 = libc::NFT_MSG_TRACE as u16;

const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// What a trace event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceKind {
    /// A rule matched (its verdict may be `Continue`).
    Rule,
    /// No rule decided: the base chain's policy did.
    Policy,
    /// The end of a chain was reached without a rule deciding: an implicit
    /// return from a regular chain, or (just before a `Policy` event) the end
    /// of a base chain. The kernel reports this as a rule event without a
    /// handle (verdict continue), or as a return event.
    Return,
}

use crate::model::{Tuple, Verdict};

/// One rule or policy decision seen by nf_tables (or iptables-legacy) tracing.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEvent {
    /// Per-packet trace id (nftables); 0 for iptables-legacy.
    pub id: u32,
    /// Family of the table (NFPROTO_*: 1 inet, 2 ip, 10 ip6, 7 bridge, 5 netdev).
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub kind: TraceKind,
    pub rule_handle: Option<u64>,
    pub verdict: Option<Verdict>,
    /// Raw policy verdict code for `TraceKind::Policy`.
    pub policy: Option<u32>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub mark: Option<u32>,
    /// The packet's protocol family (NFPROTO_IPV4/IPV6) in inet/bridge tables.
    pub nfproto: Option<u32>,
    #[serde(skip)]
    pub network_header: Vec<u8>,
    #[serde(skip)]
    pub transport_header: Vec<u8>,
    pub tuple: Option<Tuple>,
    /// NF_INET_* hook of the chain (0 prerouting … 4 postrouting, 5 ingress);
    /// None for a regular (non-base) chain or when unknown.
    pub hook: Option<u8>,
    /// Rule position and text, when known (filled by iptables-legacy tracing
    /// or by [`super::RuleBook::annotate`]).
    pub rule: Option<RuleInfo>,
    /// How many changes to this event's table the trace socket had seen
    /// when the kernel traced it: the rule book lists a table again for an
    /// event that comes after a change, so positions and text are those of
    /// the moment of the hit.
    #[serde(skip)]
    pub rules_gen: u64,
    #[serde(skip)]
    pub received: Instant,
}

/// A change to the ruleset, as the kernel announces it to `NFNLGRP_NFTABLES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesetNotice {
    /// A table, or a chain or rule of it, was added or deleted.
    Changed { family: u8, table: String },
    /// A transaction was committed, by this process.
    Committed {
        pid: Option<u32>,
        comm: Option<String>,
    },
}

/// One message of the trace socket, which hears traces and ruleset changes
/// in the order the kernel sent them.
#[derive(Debug)]
pub enum TraceMessage {
    Event(Box<TraceEvent>),
    Notice(RulesetNotice),
}

const NFT_MSG_NEWTABLE: u16 = libc::NFT_MSG_NEWTABLE as u16;
const NFT_MSG_DELTABLE: u16 = libc::NFT_MSG_DELTABLE as u16;
const NFT_MSG_NEWCHAIN: u16 = libc::NFT_MSG_NEWCHAIN as u16;
const NFT_MSG_DELCHAIN: u16 = libc::NFT_MSG_DELCHAIN as u16;
const NFT_MSG_NEWRULE: u16 = libc::NFT_MSG_NEWRULE as u16;
const NFT_MSG_DELRULE: u16 = libc::NFT_MSG_DELRULE as u16;
const NFT_MSG_NEWGEN: u16 = libc::NFT_MSG_NEWGEN as u16;
/// The table's name is attribute 1 of tables, chains and rules alike.
const NFTA_OBJECT_TABLE: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;

/// Decodes one datagram read from the trace socket, in order: the
/// `NFT_MSG_TRACE` events, and the changes that move rules (tables, chains,
/// rules; sets and their elements don't). Undecodable traces are logged.
pub fn trace_messages(buf: &[u8], received: Instant) -> impl Iterator<Item = TraceMessage> + '_ {
    netlink::messages(buf).into_iter().filter_map(move |m| {
        if m.kind >> 8 != NFNL_SUBSYS_NFTABLES {
            return None;
        }
        let (family, attrs) = m.nf()?;
        match m.kind & 0xff {
            NFT_MSG_TRACE => {
                let ev = decode_trace(family, attrs, received);
                if ev.is_none() {
                    log::debug!("netfilter: undecodable trace message");
                }
                ev.map(|ev| TraceMessage::Event(Box::new(ev)))
            }
            NFT_MSG_NEWTABLE | NFT_MSG_DELTABLE | NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN
            | NFT_MSG_NEWRULE | NFT_MSG_DELRULE => {
                let table = attrs::find(attrs, NFTA_OBJECT_TABLE).map(attrs::string)?;
                Some(TraceMessage::Notice(RulesetNotice::Changed {
                    family,
                    table,
                }))
            }
            NFT_MSG_NEWGEN => Some(TraceMessage::Notice(RulesetNotice::Committed {
                pid: attrs::find(attrs, NFTA_GEN_PROC_PID).and_then(attrs::be32),
                comm: attrs::find(attrs, NFTA_GEN_PROC_NAME).map(attrs::string),
            })),
            _ => None,
        }
    })
}

/// The `NFT_MSG_TRACE` events of one datagram, in order.
pub fn trace_events(buf: &[u8], received: Instant) -> impl Iterator<Item = TraceEvent> + '_ {
    trace_messages(buf, received).filter_map(|m| match m {
        TraceMessage::Event(ev) => Some(*ev),
        TraceMessage::Notice(_) => None,
    })
}

/// Decodes the attributes of an `NFT_MSG_TRACE` message (after `nfgenmsg`).
pub fn decode_trace(family: u8, buf: &[u8], received: Instant) -> Option<TraceEvent> {
    let mut ev = TraceEvent {
        id: 0,
        family,
        table: String::new(),
        chain: String::new(),
        kind: TraceKind::Rule,
        rule_handle: None,
        verdict: None,
        policy: None,
        iif: None,
        oif: None,
        mark: None,
        nfproto: None,
        network_header: Vec::new(),
        transport_header: Vec::new(),
        tuple: None,
        hook: None,
        rule: None,
        rules_gen: 0,
        received,
    };
    let mut kind = None;
    let mut it = AttrIter::new(buf);
    for (k, p) in it.by_ref() {
        match k {
            NFTA_TRACE_TABLE => ev.table = attrs::string(p),
            NFTA_TRACE_CHAIN => ev.chain = attrs::string(p),
            NFTA_TRACE_RULE_HANDLE => ev.rule_handle = attrs::be64(p),
            NFTA_TRACE_TYPE => kind = attrs::be32(p),
            NFTA_TRACE_VERDICT => ev.verdict = decode_verdict(p),
            NFTA_TRACE_ID => ev.id = attrs::be32(p)?,
            NFTA_TRACE_NETWORK_HEADER => ev.network_header = p.to_vec(),
            NFTA_TRACE_TRANSPORT_HEADER => ev.transport_header = p.to_vec(),
            NFTA_TRACE_IIF => ev.iif = attrs::be32(p),
            NFTA_TRACE_OIF => ev.oif = attrs::be32(p),
            NFTA_TRACE_MARK => ev.mark = attrs::be32(p),
            NFTA_TRACE_NFPROTO => ev.nfproto = attrs::be32(p),
            NFTA_TRACE_POLICY => ev.policy = attrs::be32(p),
            _ => {}
        }
    }
    if it.malformed() {
        log::debug!("netfilter: truncated attribute in a trace message");
    }
    ev.kind = match kind? {
        1 => TraceKind::Policy,
        2 => TraceKind::Return,
        3 if ev.rule_handle.is_none() => TraceKind::Return,
        3 => TraceKind::Rule,
        _ => return None,
    };
    if ev.kind == TraceKind::Policy && ev.verdict.is_none() {
        ev.verdict = ev.policy.map(|p| Verdict::from_code(p as i32, None));
    }
    ev.tuple = tuple_from_headers(&ev.network_header, &ev.transport_header);
    Some(ev)
}

fn decode_verdict(p: &[u8]) -> Option<Verdict> {
    let code = attrs::find(p, NFTA_VERDICT_CODE).and_then(attrs::be32)? as i32;
    let chain = attrs::find(p, NFTA_VERDICT_CHAIN).map(attrs::string);
    Some(Verdict::from_code(code, chain))
}

/// Decodes addresses, protocol and ports from an IPv4/IPv6 network header and
/// a transport header. nft traces carry the transport header apart; NFLOG
/// payloads have it inline (pass an empty `transport`). IPv6 extension headers
/// are not walked.
pub fn tuple_from_headers(net: &[u8], transport: &[u8]) -> Option<Tuple> {
    let version = net.first().map(|b| b >> 4)?;
    let (src, dst, proto, hdr_len): (IpAddr, IpAddr, u8, usize) = match version {
        4 if net.len() >= 20 => {
            let ihl = usize::from(net[0] & 0x0f) * 4;
            let s: [u8; 4] = net[12..16].try_into().ok()?;
            let d: [u8; 4] = net[16..20].try_into().ok()?;
            (
                Ipv4Addr::from(s).into(),
                Ipv4Addr::from(d).into(),
                net[9],
                ihl.max(20),
            )
        }
        6 if net.len() >= 40 => {
            let s: [u8; 16] = net[8..24].try_into().ok()?;
            let d: [u8; 16] = net[24..40].try_into().ok()?;
            (
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                net[6],
                40,
            )
        }
        _ => return None,
    };
    let l4 = if transport.is_empty() {
        net.get(hdr_len..).unwrap_or(&[])
    } else {
        transport
    };
    // Only the first fragment (offset 0) carries the ports.
    let first_fragment = version != 4 || u16::from_be_bytes([net[6], net[7]]) & 0x1fff == 0;
    let ports = first_fragment && tracer_common::has_ports(proto) && l4.len() >= 4;
    let (sp, dp) = if ports {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    } else {
        (0, 0)
    };
    Some(Tuple {
        saddr: src,
        daddr: dst,
        sport: sp,
        dport: dp,
        proto,
    })
}

/// A per-packet id for legacy events (the kernel gives none): FNV-1a over
/// the addresses, IPv4 id or IPv6 flow label, protocol and ports. It stays
/// the same across hooks unless NAT rewrites the packet.
pub fn packet_id(net: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    };
    match net.first().map(|b| b >> 4) {
        Some(4) if net.len() >= 20 => {
            eat(&net[4..6]);
            eat(&net[9..10]);
            eat(&net[12..20]);
            let ihl = usize::from(net[0] & 0x0f) * 4;
            eat(net.get(ihl..ihl + 4).unwrap_or(&[]));
        }
        Some(6) if net.len() >= 40 => {
            eat(&[net[1] & 0x0f, net[2], net[3], net[6]]);
            eat(&net[8..40]);
            eat(net.get(40..44).unwrap_or(&[]));
        }
        _ => eat(net),
    }
    h
}

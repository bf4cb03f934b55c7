//! nftables / iptables rule tracing over netlink.
//!
//! Names the firewall rule that decided a packet's fate:
//!
//! - [`RuleTracer`] creates, in one network namespace, an `inet` table
//!   "pathtrace" owned by its netlink socket (`NFT_TABLE_F_OWNER`: the kernel
//!   deletes it when the socket closes, even if the process is killed). Its
//!   chains, at priority -350 on prerouting and output, `meta nftrace set 1`
//!   packets matching a [`FlowFilter`](crate::model::FlowFilter). Every later nf_tables chain (those
//!   of iptables-nft included) then reports each matching rule, each policy
//!   decision and each implicit return as an `NFT_MSG_TRACE` event, decoded
//!   here into a [`TraceEvent`].
//! - [`RuleBook`] turns (family, table, chain, rule handle) into the rule's
//!   1-based position in its chain and its text: iptables syntax for tables
//!   iptables-nft manages, nft syntax otherwise.
//! - [`LegacyTracer`] does the same for iptables-legacy, through `-j TRACE`
//!   rules in the raw table and nfnetlink_log.
//!
//! Use from tokio: the tracers implement `AsRawFd` with a socket that stays
//! the same for their lifetime, and `read_pending` never blocks and reads
//! until the socket is empty:
//!
//! ```ignore
//! let t = RuleTracer::start(netns, &filters)?;
//! // SAFETY: the fd stays open and the same while the AsyncFd owns `t`.
//! let mut afd = unsafe { AsyncFd::register_with_interest(t, Interest::READABLE) }?;
//! let mut book = RuleBook::new(netns);
//! loop {
//!     let mut guard = afd.readable_mut().await?;
//!     let events = guard.get_inner_mut().read_pending()?;
//!     guard.clear_ready();
//!     for mut ev in events {
//!         book.annotate(&mut ev); // rule index and text (runs nft/iptables-nft-save on a cache miss)
//!     }
//! }
//! ```

mod attrs;
mod dump;
mod expr;
mod flowtable;
mod legacy;
mod legacy_rules;
mod netlink;
mod nflog;
mod rules;
mod socket;
mod table;
mod texts;
mod trace;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use dump::TABLE_NAME;
pub use dump::{
    has_rules, has_rules_here, nat_tables_at, ruleset_generation, sweep_leftovers, NatTables,
};
pub use flowtable::{flowtables, Flowtable};
pub use legacy::{legacy_sweep, LegacyTracer};
pub use rules::{parse_iptables_save, parse_nft_text, RuleBook};
pub use table::{RuleTracer, RulesetChange};
pub use trace::{tuple_from_headers, TraceEvent, TraceKind};

pub const NFPROTO_INET: u8 = libc::NFPROTO_INET as u8;
pub const NFPROTO_IPV4: u8 = libc::NFPROTO_IPV4 as u8;
pub const NFPROTO_ARP: u8 = libc::NFPROTO_ARP as u8;
pub const NFPROTO_NETDEV: u8 = libc::NFPROTO_NETDEV as u8;
pub const NFPROTO_BRIDGE: u8 = libc::NFPROTO_BRIDGE as u8;
pub const NFPROTO_IPV6: u8 = libc::NFPROTO_IPV6 as u8;

/// A rule's position and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// 1-based position in its chain, as `iptables -L --line-numbers` counts.
    pub index: u32,
    /// `-A CHAIN …` for iptables tables, nft syntax otherwise.
    pub text: String,
    /// True when `text` is in iptables syntax.
    pub iptables: bool,
}

/// Errors of rule tracing.
#[derive(Debug, thiserror::Error)]
pub enum NfError {
    #[error("netlink: {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused {what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] in_netns::Error),
    #[error("netlink: timed out {0}")]
    Timeout(&'static str),
    #[error("trace filter: {0}")]
    Filter(String),
    #[error("{0}")]
    Other(String),
}

/// Decodes one netlink datagram (one `recv`: possibly several messages) the
/// way the tracers' `read_pending` do, for fuzzing and tests: each
/// `NFT_MSG_TRACE` message as [`RuleTracer`] does, each iptables-legacy
/// `TRACE:` NFLOG packet as [`LegacyTracer`] does. Only the state the tracers
/// keep is left out: pathtrace's own nftables events are returned too,
/// headers are not copied between events of one packet, chain hooks are not
/// looked up, and no legacy rule is listed (legacy rule events get
/// placeholder text). Never panics, whatever the bytes.
pub fn decode_datagram(buf: &[u8]) -> Vec<TraceEvent> {
    let received = std::time::Instant::now();
    let unlisted = legacy_rules::SavedTable::default();
    let comment =
        crate::kernel::owner::TagKind::RuleComment.tag(crate::kernel::owner::Owner::current());
    trace::trace_events(buf, received)
        .chain(nflog::trace_packets(buf).filter_map(|(family, p, pkt)| {
            legacy::trace_event(family, &p, pkt, &unlisted, &comment, received)
        }))
        .collect()
}

/// nft's name for a table family.
pub fn family_name(family: u8) -> &'static str {
    crate::model::Family::from_nfproto(family).as_str()
}

/// Name of an NF_INET_* hook number ("prerouting", …), for inet/ip/ip6/bridge
/// tables; netdev tables use 0 ingress and 1 egress.
pub fn hook_name(family: u8, hook: u8) -> &'static str {
    match (family, hook) {
        (NFPROTO_NETDEV, 0) => "ingress",
        (NFPROTO_NETDEV, 1) => "egress",
        (_, 0) => "prerouting",
        (_, 1) => "input",
        (_, 2) => "forward",
        (_, 3) => "output",
        (_, 4) => "postrouting",
        (_, 5) => "ingress",
        _ => "unknown",
    }
}

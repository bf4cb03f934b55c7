//! The owned `inet pathtrace` table that sets `nftrace`, and the trace socket.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::attrs::AttrWriter;
use super::dump::{self, *};
use super::netlink::{NFNLGRP_NFTABLES, NFNLGRP_NFTRACE, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use super::socket::{BatchItem, NlSocket};
use super::trace::{trace_messages, RulesetNotice, TraceEvent, TraceMessage};
use super::{expr, ns, NfError, NFPROTO_INET};
use crate::kernel::owner::{Owner, TagKind};
use crate::model::FlowFilter;

/// Priority of the chains: after defrag (-400), before raw (-300).
pub const CHAIN_PRIORITY: i32 = -350;
const NF_INET_PRE_ROUTING: u32 = libc::NF_INET_PRE_ROUTING as u32;
const NF_INET_LOCAL_OUT: u32 = libc::NF_INET_LOCAL_OUT as u32;
const TRACE_RCVBUF: libc::c_int = 16 * 1024 * 1024;

/// The trace socket's receive buffer; `PATHTRACE_NFT_RCVBUF` shrinks it, so
/// tests can make the kernel overflow it (ENOBUFS) on purpose.
fn trace_rcvbuf() -> libc::c_int {
    std::env::var("PATHTRACE_NFT_RCVBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &libc::c_int| n > 0)
        .unwrap_or(TRACE_RCVBUF)
}
const CTL_TIMEOUT: Duration = Duration::from_secs(3);
const HOOK_REFRESH: Duration = Duration::from_secs(1);
const MAX_PACKETS: usize = 4096;

/// Traces nf_tables rule decisions for packets matching some filters, in one
/// network namespace. The table lives exactly as long as this value (and the
/// process): the kernel deletes it when the owning socket closes.
#[derive(Debug)]
pub struct RuleTracer {
    ctl: NlSocket,
    trace: NlSocket,
    table: String,
    /// Whether the kernel deletes the table with `ctl` (Linux 5.12+); if
    /// not, dropping the tracer deletes it.
    owned: bool,
    overflows: u64,
    hooks: HashMap<(u8, String), ChainHooks>,
    packets: HashMap<u32, Packet>,
    buf: Vec<u8>,
    /// Changes to each table heard so far (see [`TraceEvent::rules_gen`]).
    changes: HashMap<(u8, String), u64>,
    /// Bumped when the socket overflowed: a change may have been lost, so
    /// every table counts as changed.
    lost_changes: u64,
    /// Tables changed in the transaction not yet committed.
    uncommitted: Vec<(u8, String)>,
    /// Changes committed since [`RuleTracer::take_changes`] was last called.
    committed: Vec<RulesetChange>,
}

/// Tables changed by one committed transaction, and who committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetChange {
    /// `(family, table)`.
    pub tables: Vec<(u8, String)>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// Hook of each chain of a table (None: regular chain), and when it was listed.
type ChainHooks = (HashMap<String, Option<u8>>, Instant);

/// What the first event of a packet's chain walk told about the packet.
#[derive(Debug)]
struct Packet {
    tuple: Option<crate::model::Tuple>,
    iif: Option<u32>,
    oif: Option<u32>,
    mark: Option<u32>,
    seen: Instant,
}

/// The batch that creates the trace table `name`; `owned`: deleted by the
/// kernel with this socket (`NFT_TABLE_F_OWNER`, Linux 5.12+).
fn table_items(name: &str, rules: &[Vec<expr::Expr>], owned: bool) -> Vec<BatchItem> {
    let mut t = AttrWriter::new();
    t.put_str(NFTA_TABLE_NAME, name);
    if owned {
        t.put_be32(NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
    }
    let mut items = vec![BatchItem {
        kind: NFT_MSG_NEWTABLE,
        flags: NLM_F_CREATE | NLM_F_EXCL,
        family: NFPROTO_INET,
        attrs: t.into_bytes(),
        what: format!("creating table inet {name}"),
    }];
    for (chain, hook) in [
        ("prerouting", NF_INET_PRE_ROUTING),
        ("output", NF_INET_LOCAL_OUT),
    ] {
        let mut c = AttrWriter::new();
        c.put_str(NFTA_CHAIN_TABLE, name)
            .put_str(NFTA_CHAIN_NAME, chain)
            .nest(NFTA_CHAIN_HOOK, |w| {
                w.put_be32(NFTA_HOOK_HOOKNUM, hook)
                    .put_be32(NFTA_HOOK_PRIORITY, CHAIN_PRIORITY as u32);
            })
            .put_str(NFTA_CHAIN_TYPE, "filter");
        items.push(BatchItem {
            kind: NFT_MSG_NEWCHAIN,
            flags: NLM_F_CREATE,
            family: NFPROTO_INET,
            attrs: c.into_bytes(),
            what: format!("creating chain {chain}"),
        });
        for (i, r) in rules.iter().enumerate() {
            let mut w = AttrWriter::new();
            w.put_str(NFTA_RULE_TABLE, name)
                .put_str(NFTA_RULE_CHAIN, chain)
                .nest(NFTA_RULE_EXPRESSIONS, |w| expr::encode(w, r));
            items.push(BatchItem {
                kind: NFT_MSG_NEWRULE,
                flags: NLM_F_CREATE | NLM_F_APPEND,
                family: NFPROTO_INET,
                attrs: w.into_bytes(),
                what: format!("adding trace rule {} to chain {chain}", i + 1),
            });
        }
    }
    items
}

impl RuleTracer {
    /// Creates the owned trace table in `netns` (None: the current namespace)
    /// and subscribes to trace events. See the module documentation.
    pub fn start(netns: Option<&Path>, filters: &[FlowFilter]) -> Result<Self, NfError> {
        // PATHTRACE_NFT_UNOWNED takes the pre-5.12 path, for tests.
        Self::start_with(
            netns,
            filters,
            std::env::var_os("PATHTRACE_NFT_UNOWNED").is_none(),
        )
    }

    /// [`Self::start`], with an unowned table (the pre-5.12 path) unless `try_owned`.
    pub(crate) fn start_with(
        netns: Option<&Path>,
        filters: &[FlowFilter],
        try_owned: bool,
    ) -> Result<Self, NfError> {
        let rules = expr::rules_for(filters)?;
        let (ctl, trace, table, owned) = ns::with_netns(netns, || {
            let mut ctl = NlSocket::open(false)?;
            ctl.set_rcv_timeout(CTL_TIMEOUT)?;
            if let Err(e) = dump::sweep(&mut ctl) {
                log::warn!("netfilter: sweeping leftover tables: {e}");
            }
            // Listen before the rules exist, so the first packets aren't missed.
            let trace = NlSocket::open(true)?;
            trace.set_rcvbuf(trace_rcvbuf());
            trace.add_membership(NFNLGRP_NFTRACE)?;
            // Ruleset changes come on the same socket, in order with the
            // traces: a hit is named with the rules as they were then.
            trace.add_membership(NFNLGRP_NFTABLES)?;
            let pid_table = TagKind::NftTable.tag(Owner::current());
            let (mut table, mut owned) = if try_owned {
                (TABLE_NAME.to_string(), true)
            } else {
                (pid_table.clone(), false)
            };
            let mut res = ctl.batch(&table_items(&table, &rules, owned));
            // EEXIST: a table of that name; EPERM: owned by another socket.
            let taken = |e: &NfError| {
                matches!(e, NfError::Kernel { source, .. }
                if matches!(source.raw_os_error(), Some(libc::EEXIST | libc::EPERM)))
            };
            // EINVAL: a kernel before 5.12, without owned tables.
            let no_owner = |e: &NfError| {
                matches!(e, NfError::Kernel { source, .. }
                if source.raw_os_error() == Some(libc::EINVAL))
            };
            if owned && res.as_ref().is_err_and(|e| taken(e) || no_owner(e)) {
                owned = !res.as_ref().is_err_and(no_owner);
                table = pid_table;
                log::info!(
                    "netfilter: using table {table} ({})",
                    if owned {
                        "the default name is taken"
                    } else {
                        "this kernel has no owned tables: deleted on exit, or by the next run after a kill"
                    }
                );
                res = ctl.batch(&table_items(&table, &rules, owned));
            }
            res?;
            Ok((ctl, trace, table, owned))
        })?;
        Ok(Self {
            ctl,
            trace,
            table,
            owned,
            overflows: 0,
            hooks: HashMap::new(),
            packets: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
            changes: HashMap::new(),
            lost_changes: 0,
            uncommitted: Vec::new(),
            committed: Vec::new(),
        })
    }

    /// Name of the table this tracer owns (normally "pathtrace").
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The trace socket (non-blocking), to wait on with tokio's `AsyncFd`.
    pub fn as_raw_fd(&self) -> RawFd {
        self.trace.as_raw_fd()
    }

    /// How many times the trace socket overflowed (events were lost).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Reads every pending trace event without blocking. Events of
    /// pathtrace's own tables are left out.
    pub fn read_pending(&mut self) -> Result<Vec<TraceEvent>, NfError> {
        let mut out = Vec::new();
        loop {
            let n = match self.trace.recv(&mut self.buf, true) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.overflows += 1;
                    self.lost_changes += 1;
                    log::warn!(
                        "netfilter: trace socket overflowed ({} times): events were lost",
                        self.overflows
                    );
                    continue;
                }
                Err(source) => {
                    return Err(NfError::Io {
                        op: "recv(trace socket)",
                        source,
                    })
                }
            };
            let received = Instant::now();
            let buf = std::mem::take(&mut self.buf);
            for m in trace_messages(&buf[..n], received) {
                let mut ev = match m {
                    TraceMessage::Event(ev) => *ev,
                    TraceMessage::Notice(n) => {
                        self.heard(n);
                        continue;
                    }
                };
                if ev.family == NFPROTO_INET && dump::is_ours(&ev.table) {
                    continue;
                }
                self.fill_packet(&mut ev);
                ev.hook = self.chain_hook(ev.family, &ev.table, &ev.chain);
                let key = (ev.family, ev.table.clone());
                ev.rules_gen = self.changes.get(&key).copied().unwrap_or(0) + self.lost_changes;
                out.push(ev);
            }
            self.buf = buf;
        }
        Ok(out)
    }

    /// Counts a ruleset change (pathtrace's own tables left out).
    fn heard(&mut self, n: RulesetNotice) {
        match n {
            RulesetNotice::Changed { family, table } => {
                if family == NFPROTO_INET && dump::is_ours(&table) {
                    return;
                }
                self.hooks.remove(&(family, table.clone()));
                let key = (family, table);
                *self.changes.entry(key.clone()).or_default() += 1;
                if !self.uncommitted.contains(&key) {
                    self.uncommitted.push(key);
                }
            }
            RulesetNotice::Committed { pid, comm } => {
                if !self.uncommitted.is_empty() && self.committed.len() < 64 {
                    self.committed.push(RulesetChange {
                        tables: std::mem::take(&mut self.uncommitted),
                        pid,
                        comm,
                    });
                }
                self.uncommitted.clear();
            }
        }
    }

    /// The transactions that changed other tables than pathtrace's since
    /// the last call.
    pub fn take_changes(&mut self) -> Vec<RulesetChange> {
        std::mem::take(&mut self.committed)
    }

    /// The kernel sends the packet (headers, interfaces) only with the first
    /// event of each base-chain walk: copy it to the later events of that id.
    fn fill_packet(&mut self, ev: &mut TraceEvent) {
        if ev.tuple.is_some() {
            if self.packets.len() >= MAX_PACKETS {
                let now = Instant::now();
                self.packets
                    .retain(|_, p| now.duration_since(p.seen) < Duration::from_secs(2));
                if self.packets.len() >= MAX_PACKETS {
                    self.packets.clear();
                }
            }
            let p = Packet {
                tuple: ev.tuple,
                iif: ev.iif,
                oif: ev.oif,
                mark: ev.mark,
                seen: ev.received,
            };
            self.packets.insert(ev.id, p);
        } else if let Some(p) = self.packets.get(&ev.id) {
            ev.tuple = p.tuple;
            ev.iif = ev.iif.or(p.iif);
            ev.oif = ev.oif.or(p.oif);
            ev.mark = ev.mark.or(p.mark);
        }
    }

    /// Hook of a chain (None for a regular chain), from a cache refreshed at
    /// most once a second per table when the chain is unknown.
    pub fn chain_hook(&mut self, family: u8, table: &str, chain: &str) -> Option<u8> {
        let key = (family, table.to_string());
        if let Some((chains, at)) = self.hooks.get(&key) {
            if let Some(h) = chains.get(chain) {
                return *h;
            }
            if at.elapsed() < HOOK_REFRESH {
                return None;
            }
        }
        let chains = match dump::chains(&mut self.ctl, family, table) {
            Ok(c) => c.into_iter().map(|c| (c.name, c.hook)).collect(),
            Err(e) => {
                log::debug!("netfilter: listing chains of {table}: {e}");
                HashMap::new()
            }
        };
        let hook = chains.get(chain).copied().flatten();
        self.hooks.insert(key, (chains, Instant::now()));
        hook
    }
}

impl AsRawFd for RuleTracer {
    fn as_raw_fd(&self) -> RawFd {
        self.trace.as_raw_fd()
    }
}

impl Drop for RuleTracer {
    fn drop(&mut self) {
        if !self.owned {
            if let Err(e) = dump::delete_table(&mut self.ctl, NFPROTO_INET, &self.table) {
                log::warn!("netfilter: deleting table {}: {e}", self.table);
            }
        }
    }
}

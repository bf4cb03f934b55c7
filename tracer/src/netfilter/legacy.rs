//! iptables-legacy tracing: `-j TRACE` rules in the raw table, and the
//! `TRACE: table:chain:type:rulenum` messages nfnetlink_log delivers.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::legacy_rules::{self, iptables, iptables_save, parse_save, SavedTable};
use super::nflog::{self, NflogPacket, TracePrefix, TRACE_GROUP};
use super::nflog::{logger_path, read_logger, restore_loggers};
use super::socket::NlSocket;
use super::trace::{packet_id, tuple_from_headers, TraceEvent, TraceKind};
use super::{ns, NfError, RuleInfo};
use crate::kernel::owner::{Owner, TagKind};
use crate::model::FlowFilter;
use crate::model::Verdict;

pub use legacy_rules::legacy_sweep;

const NFLOG_RCVBUF: libc::c_int = 8 * 1024 * 1024;
const REFRESH_EVERY: Duration = Duration::from_millis(300);
const NFLOG_LOGGER: &str = "nfnetlink_log";

/// Traces iptables-legacy rule decisions in one network namespace. Its TRACE
/// rules are removed, and the namespace's loggers restored, on drop.
#[derive(Debug)]
pub struct LegacyTracer {
    netns: Option<PathBuf>,
    sock: NlSocket,
    /// (family, chain, match arguments) of each TRACE rule added.
    inserted: Vec<(u8, &'static str, Vec<String>)>,
    saved_loggers: Vec<(u8, String)>,
    comment: String,
    overflows: u64,
    tables: HashMap<(u8, String), (SavedTable, Instant)>,
    buf: Vec<u8>,
}

impl LegacyTracer {
    /// Binds nfnetlink_log as the logger of the families the filters need,
    /// listens on nflog group 0, then inserts the TRACE rules.
    pub fn start(netns: Option<&Path>, filters: &[FlowFilter]) -> Result<Self, NfError> {
        let owner = Owner::current();
        let specs = legacy_rules::trace_rule_specs(filters, owner)?;
        let mut families: Vec<u8> = specs.iter().map(|(f, _)| *f).collect();
        families.sort_unstable();
        families.dedup();
        let (sock, saved_loggers) = ns::with_netns(netns, || {
            let saved: Vec<(u8, String)> = families
                .iter()
                .filter_map(|pf| read_logger(*pf).map(|l| (*pf, l)))
                .collect();
            let res = (|| {
                let mut sock = NlSocket::open(false)?;
                sock.set_rcv_timeout(Duration::from_secs(3))?;
                for pf in &families {
                    nflog::bind_pf(&mut sock, *pf)?;
                    if read_logger(*pf).is_some_and(|l| l != NFLOG_LOGGER) {
                        std::fs::write(logger_path(*pf), NFLOG_LOGGER)
                            .map_err(|e| NfError::Other(format!("setting nf_log/{pf}: {e}")))?;
                    }
                }
                nflog::bind_group(&mut sock, TRACE_GROUP)?;
                sock.set_rcvbuf(NFLOG_RCVBUF);
                sock.set_nonblocking(true)?;
                Ok(sock)
            })();
            if res.is_err() {
                restore_loggers(&saved);
            }
            res.map(|s| (s, saved))
        })?;
        let mut me = Self {
            netns: netns.map(Path::to_path_buf),
            sock,
            inserted: Vec::new(),
            saved_loggers,
            comment: TagKind::RuleComment.tag(owner),
            overflows: 0,
            tables: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
        };
        for (family, spec) in specs {
            for chain in ["PREROUTING", "OUTPUT"] {
                let mut args: Vec<&str> = vec!["-w", "-t", "raw", "-I", chain];
                args.extend(spec.iter().map(String::as_str));
                args.extend(["-j", "TRACE"]);
                // On failure `me` is dropped, which removes what was added.
                ns::run(netns, iptables(family), &args)?;
                me.inserted.push((family, chain, spec.clone()));
            }
        }
        Ok(me)
    }

    /// The nflog socket (non-blocking), for tokio's `AsyncFd`.
    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    #[cfg(test)]
    pub(crate) fn raw_socket(&self) -> &NlSocket {
        &self.sock
    }

    /// Reads every pending TRACE message without blocking.
    pub fn read_pending(&mut self) -> Result<Vec<TraceEvent>, NfError> {
        let mut out = Vec::new();
        loop {
            let n = match self.sock.recv(&mut self.buf, true) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.overflows += 1;
                    log::warn!(
                        "netfilter: nflog socket overflowed ({} times)",
                        self.overflows
                    );
                    continue;
                }
                Err(source) => {
                    return Err(NfError::Io {
                        op: "recv(nflog socket)",
                        source,
                    })
                }
            };
            let received = Instant::now();
            let buf = std::mem::take(&mut self.buf);
            for (family, prefix, pkt) in nflog::trace_packets(&buf[..n]) {
                if let Some(ev) = self.event(family, &prefix, pkt, received) {
                    out.push(ev);
                }
            }
            self.buf = buf;
        }
        Ok(out)
    }

    /// The table's rules, listed again when `chain` has fewer than `need`.
    fn saved_table(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        need: u32,
    ) -> Option<&SavedTable> {
        let key = (family, table.to_string());
        let stale = match self.tables.get(&key) {
            None => true,
            Some((t, at)) => {
                let known = t.rules.get(chain).map_or(0, Vec::len);
                (known < need as usize
                    || !t.policies.contains_key(chain) && !t.user_chains.contains(chain))
                    && at.elapsed() >= REFRESH_EVERY
            }
        };
        if stale {
            match ns::run(self.netns.as_deref(), iptables_save(family), &["-t", table]) {
                Ok(out) => {
                    self.tables
                        .insert(key.clone(), (parse_save(&out), Instant::now()));
                }
                Err(e) => log::warn!("netfilter: {e}"),
            }
        }
        self.tables.get(&key).map(|(t, _)| t)
    }

    fn event(
        &mut self,
        family: u8,
        p: &TracePrefix,
        pkt: NflogPacket,
        received: Instant,
    ) -> Option<TraceEvent> {
        let need = if p.kind == "rule" {
            p.rulenum
        } else {
            p.rulenum.saturating_sub(1)
        };
        let saved = self
            .saved_table(family, &p.table, &p.chain, need)
            .cloned()
            .unwrap_or_default();
        trace_event(family, p, pkt, &saved, &self.comment, received)
    }
}

/// Turns one TRACE packet into an event, with the rules of its table as
/// `iptables-save` listed them. None for pathtrace's own TRACE rules (those
/// whose comment is `comment`).
pub(super) fn trace_event(
    family: u8,
    p: &TracePrefix,
    pkt: NflogPacket,
    saved: &SavedTable,
    comment: &str,
    received: Instant,
) -> Option<TraceEvent> {
    let line = usize::try_from(p.rulenum)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| saved.rules.get(&p.chain)?.get(i));
    // xt_TRACE calls any unconditional rule with a standard target at the
    // end of a chain "policy"/"return": a real rule when it is listed.
    let kind = match (p.kind.as_str(), line) {
        ("rule", _) | (_, Some(_)) => TraceKind::Rule,
        ("policy", None) => TraceKind::Policy,
        _ => TraceKind::Return,
    };
    let (verdict, policy, rule) = match kind {
        TraceKind::Rule => {
            let text = line
                .cloned()
                .unwrap_or_else(|| format!("# rule {} of {}", p.rulenum, p.chain));
            if text
                .split_whitespace()
                .any(|w| w.trim_matches('"') == comment)
            {
                return None; // one of our own TRACE rules
            }
            let v = legacy_rules::verdict_of_rule(&text, &saved.user_chains);
            (
                Some(v),
                None,
                Some(RuleInfo {
                    index: p.rulenum,
                    text,
                    iptables: true,
                }),
            )
        }
        TraceKind::Policy => {
            let v = saved
                .policies
                .get(&p.chain)
                .map(|t| legacy_rules::verdict_of_target(t, &saved.user_chains));
            let code = v.as_ref().map(|v| u32::from(*v == Verdict::Accept));
            (v, code, None)
        }
        TraceKind::Return => (Some(Verdict::Return), None, None),
    };
    let tuple = tuple_from_headers(&pkt.payload, &[]);
    Some(TraceEvent {
        id: packet_id(&pkt.payload),
        family,
        table: p.table.clone(),
        chain: p.chain.clone(),
        kind,
        rule_handle: None,
        verdict,
        policy,
        iif: pkt.iif,
        oif: pkt.oif,
        mark: pkt.mark,
        nfproto: Some(u32::from(family)),
        network_header: pkt.payload,
        transport_header: Vec::new(),
        tuple,
        hook: pkt.hook,
        rule,
        rules_gen: 0,
        received,
    })
}

impl AsRawFd for LegacyTracer {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Drop for LegacyTracer {
    fn drop(&mut self) {
        for (family, chain, spec) in self.inserted.drain(..) {
            let mut args: Vec<&str> = vec!["-w", "-t", "raw", "-D", chain];
            args.extend(spec.iter().map(String::as_str));
            args.extend(["-j", "TRACE"]);
            if let Err(e) = ns::run(self.netns.as_deref(), iptables(family), &args) {
                log::warn!("netfilter: removing a TRACE rule: {e}");
            }
        }
        let saved = std::mem::take(&mut self.saved_loggers);
        if let Err(e) = ns::with_netns(self.netns.as_deref(), || {
            restore_loggers(&saved);
            Ok(())
        }) {
            log::warn!("netfilter: restoring loggers: {e}");
        }
    }
}

//! A firewall rule's decision about a packet, as a hop payload.
use std::time::Instant;

use crate::model::{Family, Hook, Tuple, Verdict};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHit {
    pub netns: u32,
    /// Traced by iptables-legacy's `TRACE` (else by nftables, which
    /// iptables-nft's rules are).
    pub legacy: bool,
    pub table: String,
    pub family: Family,
    pub chain: String,
    pub hook: Option<Hook>,
    pub handle: Option<u64>,
    /// 1-based position in the chain, as `iptables -L --line-numbers` counts.
    pub index: Option<u32>,
    /// The rule in the syntax of the tool that manages its table.
    pub text: Option<String>,
    /// `ACCEPT`, `DROP`, `JUMP DOCKER-USER`, `RETURN`, `CONTINUE`, …
    pub verdict: Verdict,
    /// The chain's policy decided, not a rule.
    pub policy: bool,
    pub tuple: Option<Tuple>,
    /// IPv4 identification of the packet this walk traced.
    pub ip_id: Option<u16>,
    pub trace_id: u32,
    pub received: Instant,
    /// When it was received, on the kernel's monotonic clock (the clock of
    /// the eBPF events' `t_ns`).
    pub received_ns: u64,
    /// The last moment its socket was seen empty, on the same clock: the
    /// kernel traced the rule between this and `received_ns`. A watcher busy
    /// naming rules (listing a table can take seconds) receives late, so
    /// `received_ns` alone may be long after the packet passed.
    pub queued_after_ns: u64,
}

impl RuleHit {
    /// Rule 1 (handle 3) of `chain` in table ip filter, deciding `verdict`,
    /// received now, with nothing else known: for unit tests to fill in the
    /// rest.
    #[cfg(test)]
    pub fn for_test(chain: &str, verdict: Verdict) -> Self {
        Self {
            netns: 1,
            legacy: false,
            table: "filter".into(),
            family: Family::Ipv4,
            chain: chain.into(),
            hook: None,
            handle: Some(3),
            index: Some(1),
            text: None,
            verdict,
            policy: false,
            tuple: None,
            ip_id: None,
            trace_id: 7,
            received: Instant::now(),
            received_ns: 0,
            queued_after_ns: 0,
        }
    }

    /// `rule 1 of chain DOCKER-USER in table ip filter: -A DOCKER-USER …`
    pub fn phrase(&self) -> String {
        if self.policy {
            return format!(
                "the policy of chain {} in table {} {} ({})",
                self.chain, self.family, self.table, self.verdict
            );
        }
        let idx = self
            .index
            .map(|i| format!("rule {i}"))
            .unwrap_or_else(|| "a rule".into());
        let text = self
            .text
            .as_ref()
            .map(|t| format!(": {t}"))
            .unwrap_or_default();
        format!(
            "{idx} of chain {} in table {} {}{text}",
            self.chain, self.family, self.table
        )
    }

    /// The rule engine that traced it, as admins call it.
    pub fn engine(&self) -> &'static str {
        if self.legacy {
            "iptables-legacy"
        } else {
            "nftables"
        }
    }

    /// Whether this decision ended the packet.
    pub fn is_drop(&self) -> bool {
        self.verdict.is_drop()
    }
}

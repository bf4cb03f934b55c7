//! Turning a packet's path into a verdict in plain words, with advice.
//!
//! The known causes live in [`causes::CAUSES`] as data: a condition, a
//! message and advice, with `{placeholders}` naming a [`Fact`] and filled
//! from [`Facts`].
mod causes;
mod clash;
mod fact;
mod facts;
mod manager;
mod nat;
mod nat_rules;
mod outcome;
mod report;
mod sets;

pub use causes::{settled_fate, Advice, Cause, Condition, CAUSES, TEARDOWN_REASONS};
pub use fact::Fact;
pub use facts::Facts;
pub use manager::Manager;
pub use outcome::{Connection, ConnectionOutcome, Outcomes};
pub use report::{Direction, Report, Reporter};

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub cause: String,
    pub message: String,
    pub advice: Option<String>,
    /// The tool that manages the deciding rule's table, when one decided.
    pub manager: Option<Manager>,
}

/// Fills a message: a fact without a value shows as its `{name}`, so a
/// message is never lost.
pub fn fill_message(template: &str, facts: &Facts) -> String {
    fact::fill(template, &facts.values).unwrap_or_else(|| {
        let mut out = template.to_owned();
        for f in Fact::ALL {
            if let Some(v) = facts.values.get(*f) {
                out = out.replace(&format!("{{{}}}", f.name()), v);
            }
        }
        out
    })
}

/// Added to a message whose cause rests on a reason pathtrace inferred.
pub const INFERRED_NOTE: &str = " (this kernel reports no drop reasons: the cause is inferred from the function that freed the packet)";
/// The same where the kernel gave only `NOT_SPECIFIED`.
pub const UNSPECIFIED_NOTE: &str = " (the kernel said only NOT_SPECIFIED: the cause is inferred from the function that freed the packet)";
/// Added to a drop's message when iptables ran on a bridged frame.
pub const BRIDGED_NOTE: &str = " (bridged traffic: br_netfilter, bridge-nf-call-iptables=1, passed this frame through iptables on the bridge)";
const BRIDGED_ADVICE: &str = "If that bridge's frames should not meet iptables, turn br_netfilter off for it (sysctl -w net.bridge.bridge-nf-call-iptables=0) or accept bridged traffic first (-m physdev --physdev-is-bridged -j ACCEPT).";

pub fn diagnose(facts: &Facts) -> Diagnosis {
    let cause = CAUSES
        .iter()
        .find(|c| c.when.holds(facts))
        .unwrap_or(&causes::FALLBACK);
    let mut message = fill_message(cause.message, facts);
    let mut advice = cause
        .advice
        .iter()
        .filter(|a| (a.by.is_none() || a.by == facts.manager) && (a.when)(facts))
        .find_map(|a| fact::fill(a.text, &facts.values));
    // A rule named by the kernel's own trace needs no inferred reason.
    if facts.reason_inferred && facts.rule.is_none() && !message.contains("inferred from where") {
        message.push_str(if facts.kernel_has_reasons {
            UNSPECIFIED_NOTE
        } else {
            INFERRED_NOTE
        });
    }
    // Proxmox's own firewall works through br_netfilter: never advise it off.
    if facts.bridged && facts.manager != Some(Manager::Proxmox) {
        message.push_str(BRIDGED_NOTE);
        advice = Some(format!(
            "{}{BRIDGED_ADVICE}",
            advice.map(|a| a + " ").unwrap_or_default()
        ));
    }
    Diagnosis {
        cause: cause.id.to_owned(),
        message,
        advice,
        manager: facts.manager,
    }
}

#[cfg(test)]
mod tests;

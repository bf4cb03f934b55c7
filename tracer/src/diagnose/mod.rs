//! Turning a packet's path into a verdict in plain words, with advice.
//!
//! The known causes live in [`causes::CAUSES`] as data: a condition, a
//! message and advice, with `{placeholders}` filled from [`Facts`].
mod causes;
mod facts;
mod manager;
mod outcome;
mod report;

pub use causes::{Advice, Cause, Condition, CAUSES, TEARDOWN_REASONS};
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

/// Fills `{name}` placeholders from the facts; unknown names stay as they are.
pub fn fill(template: &str, facts: &Facts) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let key = &after[..close];
                match facts.get(key) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether a `{name}` was left unfilled.
fn has_placeholder(text: &str) -> bool {
    text.find('{').is_some_and(|open| {
        text[open..].find('}').is_some_and(|close| {
            let key = &text[open + 1..open + close];
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    })
}

/// The first cause whose condition holds.
/// Added to a drop's message when iptables ran on a bridged frame.
pub const BRIDGED_NOTE: &str = " (bridged traffic: br_netfilter, bridge-nf-call-iptables=1, passed this frame through iptables on the bridge)";
const BRIDGED_ADVICE: &str = "If that bridge's frames should not meet iptables, turn br_netfilter off for it (sysctl -w net.bridge.bridge-nf-call-iptables=0) or accept bridged traffic first (-m physdev --physdev-is-bridged -j ACCEPT).";

pub fn diagnose(facts: &Facts) -> Diagnosis {
    let cause = CAUSES
        .iter()
        .find(|c| c.when.holds(facts))
        .unwrap_or(&causes::FALLBACK);
    let mut message = fill(cause.message, facts);
    let mut advice = cause
        .advice
        .iter()
        .filter(|a| a.by.is_none() || a.by == facts.manager)
        .map(|a| fill(a.text, facts))
        .find(|text| !has_placeholder(text));
    if facts.bridged {
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

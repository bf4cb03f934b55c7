//! Turning a packet's path into a verdict in plain words, with advice.
//!
//! The known causes live in [`causes::CAUSES`] as data: a condition, a
//! message and advice, with `{placeholders}` filled from [`Facts`].
mod causes;
mod facts;
mod outcome;
mod report;

pub use causes::{Cause, Condition, CAUSES};
pub use facts::Facts;
pub use outcome::{Connection, ConnectionOutcome, Outcomes};
pub use report::{Direction, Report, Reporter};

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub cause: String,
    pub message: String,
    pub advice: Option<String>,
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
    let mut advice = (!cause.advice.is_empty()).then(|| fill(cause.advice, facts));
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
    }
}

#[cfg(test)]
mod tests;

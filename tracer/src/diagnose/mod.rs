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
pub fn diagnose(facts: &Facts) -> Diagnosis {
    let cause = CAUSES
        .iter()
        .find(|c| c.when.holds(facts))
        .unwrap_or(&causes::FALLBACK);
    Diagnosis {
        cause: cause.id.to_owned(),
        message: fill(cause.message, facts),
        advice: (!cause.advice.is_empty()).then(|| fill(cause.advice, facts)),
    }
}

#[cfg(test)]
mod tests;

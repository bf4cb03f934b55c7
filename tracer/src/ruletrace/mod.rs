//! Rule-level tracing glued to packet paths: one watcher thread per network
//! namespace reads nftables (and iptables-legacy) trace events, names each
//! rule, and hands [`RuleHit`]s to the session, which attaches them to the
//! packets they belong to (by namespace, headers and time).
mod correlate;
mod engines;
mod follow;
mod offload;
mod watch;

pub use correlate::{attach, deciding_rule};
pub use engines::note_engines;
pub use follow::Follow;
pub use offload::Offloads;
pub use watch::{NetnsTarget, RuleWatch, MAX_ARMED};

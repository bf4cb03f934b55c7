//! Ring-buffer records: checked decoding into owned [`Hop`]s.
mod captured;
mod clock;
mod conntrack;
mod decode;
mod reader;
mod rule;

pub use captured::{decode_bytes, BytesRecord, Captured, Pending};
pub use clock::{instant_at, monotonic_at, monotonic_ns};
pub use conntrack::{decode_conntrack, CtRecord};
pub use decode::{decode, DecodeError, Hop, HopKind};
pub use reader::{Counters, EventReader, BATCH};
pub use rule::RuleHit;

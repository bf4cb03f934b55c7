//! Ring-buffer records: checked decoding into owned [`Hop`]s.
mod captured;
mod conntrack;
mod decode;
mod reader;
mod rule;

pub use captured::{decode_bytes, BytesRecord, Captured, Pending};
pub use conntrack::{decode_conntrack, CtRecord};
pub use decode::{decode, DecodeError, Hop, HopKind};
pub use reader::{Counters, EventReader, BATCH};
pub use rule::{monotonic_ns, RuleHit};

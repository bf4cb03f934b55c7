//! Ring-buffer records: checked decoding into owned [`Hop`]s.
mod decode;
mod reader;
mod rule;

pub use decode::{decode, DecodeError, Hop, HopKind};
pub use reader::{Counters, EventReader};
pub use rule::{monotonic_ns, RuleHit};

//! Ring-buffer records: checked decoding into owned [`Hop`]s.
mod decode;
mod reader;

pub use decode::{decode, DecodeError, Hop, HopKind, Tuple, Verdict};
pub use reader::{Counters, EventReader};

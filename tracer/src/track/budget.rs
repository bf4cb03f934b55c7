//! What the tracker may hold open. Packets wait in userspace until their
//! fate is known; a packet whose events were lost (a full ring under a
//! flood) never ends and waits until it idles out, so a flood would hold
//! thousands of them. The budget bounds them by count and by bytes.
use std::mem::size_of;

use super::Open;
use crate::events::Hop;

/// Packets followed at once in userspace.
pub const MAX_OPEN: usize = 8_192;

/// Bytes the open packets may cost (see [`open_bytes`]): about 2,300
/// packets of up to eight hops, what a stream of 23,000 packets a second
/// holds in its 100 ms grace period.
pub const MAX_OPEN_BYTES: usize = 4 << 20;

/// Hop slots a new packet gets: a forwarded packet's path has about seven.
pub(super) const FIRST_SLOTS: usize = 8;

/// The bounds on the tracker's open packets; beyond either, the oldest
/// settle early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub packets: usize,
    pub bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            packets: MAX_OPEN,
            bytes: MAX_OPEN_BYTES,
        }
    }
}

/// What one open packet costs: its entries in the tracker's two maps (at
/// their own size; the maps' spare room is not counted), its hop slots and
/// what its hops hold on the heap.
pub(super) fn open_bytes(slots: usize, heap: usize) -> usize {
    size_of::<((u64, u64), Open)>()
        + size_of::<(u64, (u64, u64))>()
        + slots * size_of::<Hop>()
        + heap
}

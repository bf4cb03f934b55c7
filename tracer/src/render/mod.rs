//! Output: text for people (colour only on a TTY) and JSON Lines for scripts.
pub mod json;
pub mod pcapng;
pub mod prometheus;
pub mod records;
pub mod text;

use crate::model::Tier;

/// Exit-time totals, printed as the `stats` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub tier: Tier,
    pub packets: u64,
    pub events: u64,
    /// Events the kernel wrote to the ring buffer.
    pub sent: u64,
    /// Events the kernel could not hand over (ring buffer full).
    pub lost: u64,
    /// Records that failed to decode.
    pub bad: u64,
    /// Tracked packets evicted from the full tracking map.
    pub evicted: u64,
    /// Rule-trace messages the kernel could not deliver (socket overflow).
    pub rule_overflows: u64,
}

//! Everything pathtrace prints: text for people (colour only on a TTY) and
//! JSON Lines for scripts, for the trace, `compare` and `drops`; pcap-ng and
//! Prometheus's exposition. Renderers read settled, named facts through
//! `&View` and look nothing up themselves.
pub mod compare;
pub mod drops;
pub mod json;
pub mod pcapng;
pub mod prometheus;
pub mod records;
pub mod text;
mod trace;

pub use trace::{PacketSink, Printer};

/// How output is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Text for people, with or without colour.
    Text { color: bool },
    /// One JSON record a line ([`records::Record`]).
    Json,
}

impl Format {
    /// The text's painter (no colour for JSON).
    pub fn style(self) -> text::Style {
        match self {
            Self::Text { color } => text::Style { color },
            Self::Json => text::Style { color: false },
        }
    }
}

/// Where text and JSON go: standard output, or standard error while
/// `--pcap -` has standard output.
pub fn text_out(pcap: Option<&std::path::Path>) -> std::io::BufWriter<Box<dyn std::io::Write>> {
    std::io::BufWriter::new(if pcap.is_some_and(pcapng::is_stdout) {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout().lock())
    })
}

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
    /// Packets settled before their end or grace was over: the tracker's
    /// bound on open packets (`track::Budget`) was reached.
    pub settled_early: u64,
}

//! One tracing run, as the steps a packet takes:
//! - [`startup`]: the programs loaded with the run's flows, rule tracing
//!   armed, then what names and explains packets (the loading is shared by
//!   trace, compare and drops);
//! - [`read`]: a ring record becomes a hop, completed from its kernel
//!   stack, and joins its packet in the tracker;
//! - [`run`]: the loop, which waits on the events, the tick, the deadline
//!   and the signals;
//! - [`settle`]: a packet whose fate is known is finished once (rules, late
//!   marks, names, diagnosis, capture) and handed to the
//!   [`PacketSink`](crate::render::PacketSink), which only reads.
mod read;
mod run;
mod settle;
mod startup;

use std::{path::PathBuf, time::Duration};

pub use read::enrich;
pub use run::run;
pub use startup::{load_programs, view};

use crate::{
    diagnose::Reporter,
    events::EventReader,
    loader::{LoadOptions, Tracer},
    model::Flows,
    names::{EngineLookup, View},
    render::{pcapng::PcapWriter, Format, Stats},
    ruletrace::{Follow, NetnsTarget, Offloads, RuleWatch},
    signals::StopSignals,
};

pub struct TraceOptions {
    pub filters: Flows,
    pub format: Format,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub load: LoadOptions,
    /// Namespaces to trace firewall rules in; empty: no rule tracing.
    pub rule_netns: Vec<NetnsTarget>,
    /// Start rule tracing in each namespace a packet enters that has rules.
    pub follow: bool,
    /// Docker-compatible engine API sockets, asked for container names.
    pub engine_sockets: Vec<PathBuf>,
    /// `engine_sockets` came from --docker-socket or DOCKER_HOST: engines
    /// found through their processes in this namespace are not asked.
    pub engines_pinned: bool,
    /// Also write pcap-ng here (`-`: standard output).
    pub pcap: Option<PathBuf>,
}

/// Everything a running trace holds. Fields drop in this order: the
/// packets and names first, the rule watchers and programs last.
struct Session {
    intake: read::Intake,
    reporter: Reporter,
    engines: EngineLookup,
    view: View,
    signals: StopSignals,
    follow: Follow,
    offloads: Offloads,
    rules: RuleWatch,
    warnings: startup::Warnings,
    reader: EventReader,
    tracer: Tracer,
    pcap: Option<PcapWriter<Box<dyn std::io::Write + Send>>>,
    stats: Stats,
}

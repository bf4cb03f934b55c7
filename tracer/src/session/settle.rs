//! Settling: a packet whose fate is known is finished once — its rule
//! hits, the namespaces where its rules were traced late, the names its
//! output shows, its diagnosis, its capture — and handed to the sink.
use std::time::{Duration, Instant};

use super::Session;
use crate::{
    diagnose::Reporter,
    error::Error,
    names::View,
    render::{pcapng::PcapWriter, PacketSink, Stats},
    ruletrace::{self, Follow, Offloads, RuleWatch},
    track::Packet,
};

/// How long settled packets may wait in the sink during one batch...
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// ...after its first packets, which go out one by one (few writes at
/// any rate: a batch is one tick's packets).
const FLUSH_EACH_FIRST: usize = 64;

/// What finishes a packet, borrowed from the session for one batch.
struct Settle<'a, S: PacketSink> {
    rules: &'a mut RuleWatch,
    follow: &'a Follow,
    offloads: &'a mut Offloads,
    reporter: &'a mut Reporter,
    view: &'a mut View,
    pcap: &'a mut Option<PcapWriter<Box<dyn std::io::Write + Send>>>,
    sink: &'a mut S,
    stats: &'a mut Stats,
}

/// Looks up, once, the name of every namespace `p`'s output shows.
fn name(p: &Packet, view: &mut View) {
    for h in &p.hops {
        view.resolve_netns(h.netns);
    }
    for &ino in &p.rules_late {
        view.resolve_netns(ino);
    }
}

impl<S: PacketSink> Settle<'_, S> {
    /// Finishes `p`; whether the sink has had all it wants.
    fn packet(&mut self, mut p: Packet) -> Result<bool, Error> {
        ruletrace::attach(self.rules, &mut p);
        self.follow.mark_late(self.rules, &mut p);
        ruletrace::note_engines(self.rules, &mut p, &mut self.view.netns);
        self.offloads.note(&mut p, &mut self.view.netns);
        self.stats.packets += 1;
        name(&p, self.view);
        let report = self.reporter.packet(&mut p, self.view);
        let view: &View = self.view;
        if let Some(w) = self.pcap.as_mut() {
            w.packet(&p, view).map_err(Error::Output)?;
        }
        self.sink.packet(&p, view, &report).map_err(Error::Output)
    }
}

impl Session {
    /// Settles `packets` in order; whether the sink has had all it wants
    /// (the rest are then left).
    pub(super) fn settle<S: PacketSink>(
        &mut self,
        packets: Vec<Packet>,
        sink: &mut S,
    ) -> Result<bool, Error> {
        if !packets.is_empty() {
            log::debug!(
                "settling {} packets, {} containers known",
                packets.len(),
                self.reporter.containers.by_netns.len()
            );
        }
        let mut settle = Settle {
            rules: &mut self.rules,
            follow: &self.follow,
            offloads: &mut self.offloads,
            reporter: &mut self.reporter,
            view: &mut self.view,
            pcap: &mut self.pcap,
            sink,
            stats: &mut self.stats,
        };
        let mut flushed = Instant::now();
        for (i, p) in packets.into_iter().enumerate() {
            if settle.packet(p)? {
                return Ok(true);
            }
            // A diagnosis may read a namespace's state (slowly, the first
            // time on a big ruleset): what is settled is not held back
            // behind it.
            if i < FLUSH_EACH_FIRST || flushed.elapsed() >= FLUSH_EVERY {
                settle.sink.flush().map_err(Error::Output)?;
                flushed = Instant::now();
            }
        }
        Ok(false)
    }
}

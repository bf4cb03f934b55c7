//! The loop: events in, packets settled on each tick, until the sink has
//! all it wants, the duration is up or a signal arrives; then what is
//! still open is settled and the totals are given.
use std::time::{Duration, Instant};

use super::{Session, TraceOptions};
use crate::{
    error::Error,
    events::{instant_at, BATCH},
    render::{PacketSink, Stats},
    track::SOURCE_WAIT,
};

/// How long a run, told to stop, waits at least (if they are behind) for
/// the rule watchers and engine lookups to hand over what they have.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// How often packets are settled and rule tracing follows them.
const TICK: Duration = Duration::from_millis(50);

/// Batches of events a tick reads at most before it settles packets.
const PENDING_BATCHES: usize = 64;

/// Traces until the count or duration is reached, or a signal arrives.
pub async fn run<S: PacketSink>(opts: &TraceOptions, sink: &mut S) -> Result<Stats, Error> {
    let mut s = Session::start(opts)?;
    let mut done = s.watch(opts.duration, sink).await?;
    if !done {
        done = s.read_rest(sink).await?;
    }
    if !done {
        s.wind_down(sink).await?;
    }
    s.finish(sink)
}

/// Resolves at `deadline` (never without one).
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a tick's reading of the waiting records came to.
enum Pending {
    /// The sink has had all it wants.
    SinkDone,
    /// Every batch the ring's thread had sent is taken in.
    AllRead,
    /// Batches are still waiting (a flood).
    Behind,
}

/// Up to when (monotonic ns) everything the kernel wrote has been taken
/// in: when the ring's thread last began a pass that emptied the ring, if
/// everything it sent since was read, and at least as far as the latest
/// hop taken in (a flood never lets the ring empty).
fn read_horizon(emptied_ns: u64, newest_ns: u64, all_read: bool) -> u64 {
    if all_read {
        emptied_ns.max(newest_ns)
    } else {
        newest_ns
    }
}

/// Until when a run stopped at `stopped` waits for its other sources: as
/// long as its open packets would have waited while running ([`SOURCE_WAIT`]
/// past the `newest` hop), never more than that after the stop, and
/// [`EXIT_WAIT`] at least; with no packet open, only [`EXIT_WAIT`].
fn exit_deadline(stopped: Instant, newest: Instant, any_open: bool) -> Instant {
    let least = stopped + EXIT_WAIT;
    if !any_open {
        return least;
    }
    (newest + SOURCE_WAIT).clamp(least, stopped + SOURCE_WAIT)
}

impl Session {
    /// The select loop; whether the sink ended it.
    async fn watch<S: PacketSink>(
        &mut self,
        duration: Option<Duration>,
        sink: &mut S,
    ) -> Result<bool, Error> {
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                r = self.reader.next_batch(|b| self.intake.record(
                    b, &mut self.stats, &mut self.view, &mut self.follow, &mut self.engines,
                )) => {
                    r.map_err(|e| Error::Runtime(format!("reading events: {e}")))?;
                    if self.settle_early(sink)? {
                        return Ok(true);
                    }
                }
                _ = tick.tick() => {
                    if self.tick(sink)? {
                        return Ok(true);
                    }
                }
                _ = until(deadline) => return Ok(false),
                _ = self.signals.recv() => return Ok(false),
            }
        }
    }

    /// Takes in what the kernel wrote and nobody has read yet (bounded:
    /// under a flood the kernel refills the ring as fast as it empties), a
    /// batch at a time: whether the sink has had all it wants, or else
    /// whether every batch waiting was read.
    fn read_pending<S: PacketSink>(&mut self, sink: &mut S) -> Result<Pending, Error> {
        for _ in 0..PENDING_BATCHES {
            let n = self.reader.drain_now(BATCH, |b| {
                self.intake.record(
                    b,
                    &mut self.stats,
                    &mut self.view,
                    &mut self.follow,
                    &mut self.engines,
                )
            });
            if self.settle_early(sink)? {
                return Ok(Pending::SinkDone);
            }
            if n < BATCH {
                return Ok(Pending::AllRead);
            }
        }
        Ok(Pending::Behind)
    }

    /// At the end: takes in what the kernel wrote until now, a batch at a
    /// time; whether the sink has had all it wants.
    async fn read_rest<S: PacketSink>(&mut self, sink: &mut S) -> Result<bool, Error> {
        while self
            .reader
            .last(BATCH, |b| {
                self.intake.record(
                    b,
                    &mut self.stats,
                    &mut self.view,
                    &mut self.follow,
                    &mut self.engines,
                )
            })
            .await
            .is_some()
        {
            if self.settle_early(sink)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Settles the packets the tracker's bound settled early, so that they
    /// are not held while more events are read.
    fn settle_early<S: PacketSink>(&mut self, sink: &mut S) -> Result<bool, Error> {
        let early = self.intake.tracker.take_early();
        if early.is_empty() {
            return Ok(false);
        }
        self.settle(early, sink)
    }

    /// Follows packets into new namespaces, then settles the packets whose
    /// every source has caught up; whether the sink has had all it wants.
    fn tick<S: PacketSink>(&mut self, sink: &mut S) -> Result<bool, Error> {
        for line in self.follow.arm_new(&mut self.rules, &mut self.view.netns) {
            eprintln!("pathtrace: {line}");
        }
        let notices = self.rules.take_notices();
        for line in notices.into_iter().chain(self.rules.let_go_of_gone()) {
            eprintln!("pathtrace: {line}");
        }
        self.warnings.say(&self.rules);
        // The rule watchers' progress before `poll`: what they handed over
        // before marking it is then in the channel.
        let rules_horizon = self.rules.caught_up_to();
        self.rules.poll();
        self.take_engine_answers();
        let horizon = [rules_horizon, self.engines.caught_up_to()]
            .into_iter()
            .flatten()
            .min();
        // Packets are judged as of the moment up to which everything the
        // kernel wrote has been taken in: a packet is idle only if nothing
        // of it was written, not if nothing was read yet (pathtrace or its
        // ring's thread ran late).
        let emptied = self.reader.emptied_ns();
        let all_read = match self.read_pending(sink)? {
            Pending::SinkDone => return Ok(true),
            Pending::AllRead => true,
            Pending::Behind => false,
        };
        let read_to = read_horizon(emptied, self.intake.tracker.newest_ns(), all_read);
        let settled = self
            .intake
            .settled(instant_at(read_to), horizon, &mut self.view.netns);
        if self.settle(settled, sink)? {
            return Ok(true);
        }
        sink.flush().map_err(Error::Output)?;
        if let Some(w) = self.pcap.as_mut() {
            w.flush().map_err(Error::Output)?;
        }
        Ok(false)
    }

    /// Takes in the container names the engine lookups found since last asked.
    fn take_engine_answers(&mut self) {
        for found in self.engines.answers() {
            self.reporter.containers.merge(found);
            self.view.netns.set_containers(&self.reporter.containers);
        }
    }

    /// At a stop: lets the rule watchers hand over what the kernel already
    /// sent, and the engine lookups their answers, then settles every open
    /// packet. Open packets wait as they would have while running, up to
    /// [`SOURCE_WAIT`] past the newest hop, and at least [`EXIT_WAIT`]
    /// (a slow engine API or a first rule listing takes seconds); a second
    /// signal ends the wait.
    async fn wind_down<S: PacketSink>(&mut self, sink: &mut S) -> Result<(), Error> {
        self.follow.ended_before_arming(&mut self.view.netns);
        let stopped = Instant::now();
        let deadline = exit_deadline(
            stopped,
            instant_at(self.intake.tracker.newest_ns()),
            self.intake.tracker.open_count() > 0,
        );
        log::debug!(
            "stop: {} packets open, waiting at most {:?}",
            self.intake.tracker.open_count(),
            deadline.saturating_duration_since(stopped)
        );
        loop {
            self.take_engine_answers();
            if !self.sources_behind(stopped) || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = self.signals.recv() => break,
            }
        }
        log::debug!(
            "stop: waited {:?}; sources still behind: {}",
            stopped.elapsed(),
            self.sources_behind(stopped)
        );
        self.rules.poll();
        let open = self.intake.tracker.flush();
        self.settle(open, sink)?;
        Ok(())
    }

    /// Whether a rule watcher has not handed over what the kernel sent
    /// before `stopped`, or an engine lookup is unanswered.
    fn sources_behind(&self, stopped: Instant) -> bool {
        self.rules.caught_up_to().is_some_and(|h| h < stopped)
            || self.engines.caught_up_to().is_some()
    }

    /// The totals, the capture's end and the sink's closing output.
    fn finish<S: PacketSink>(mut self, sink: &mut S) -> Result<Stats, Error> {
        for line in self.rules.take_notices() {
            eprintln!("pathtrace: {line}");
        }
        let counters = self.tracer.counters();
        self.stats.lost = counters.lost;
        self.stats.sent = counters.sent;
        self.stats.evicted = self.tracer.evicted();
        self.stats.rule_overflows = self.rules.overflows();
        self.stats.settled_early = self.intake.tracker.settled_early();
        if let Some(w) = self.pcap.as_mut() {
            w.flush().map_err(Error::Output)?;
        }
        sink.finish(&self.reporter.outcomes, &self.stats, &self.view)
            .map_err(Error::Output)?;
        Ok(std::mem::take(&mut self.stats))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{exit_deadline, read_horizon};

    #[test]
    fn a_stop_waits_for_names_as_long_as_the_open_packets_would_have() {
        let stop = Instant::now();
        let s = Duration::from_secs;
        // A packet seen just before the stop waits its full time.
        assert_eq!(exit_deadline(stop, stop - s(1), true), stop + s(4));
        // Long-quiet packets still get the least wait…
        assert_eq!(exit_deadline(stop, stop - s(60), true), stop + s(2));
        // …and none waits longer after the stop than it would have before.
        assert_eq!(exit_deadline(stop, stop + s(1), true), stop + s(5));
        // Nothing open: the least wait.
        assert_eq!(exit_deadline(stop, stop, false), stop + s(2));
    }

    #[test]
    fn packets_are_judged_as_of_what_was_read_not_of_the_clock() {
        // All read: as of the ring's last emptying, or a later hop read in
        // the same pass.
        assert_eq!(read_horizon(5_000, 3_000, true), 5_000);
        assert_eq!(read_horizon(5_000, 6_000, true), 6_000);
        // Batches still waiting: only as far as the latest hop taken in,
        // however long ago the ring was last found empty.
        assert_eq!(read_horizon(5_000, 3_000, false), 3_000);
        // Nothing read yet: nothing is idle.
        assert_eq!(read_horizon(0, 0, true), 0);
    }
}

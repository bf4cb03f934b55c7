//! Grouping hops into packets, and deciding each packet's fate.
mod budget;
mod fate;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

pub use budget::{Budget, MAX_OPEN, MAX_OPEN_BYTES};
pub use fate::{Fate, FateKind};

use crate::events::{Hop, HopKind};

/// Hops kept for one packet.
pub const MAX_HOPS: usize = 256;

/// One packet's path through the kernel, in time order.
#[derive(Clone, Debug)]
pub struct Packet {
    /// 1-based number in this run.
    pub id: u64,
    pub hops: Vec<Hop>,
    pub fate: Fate,
    /// Namespaces where rule tracing started only after this packet passed
    /// (pathtrace followed it there): its rule hops there are missing.
    pub rules_late: Vec<u32>,
    /// Odd states its path met, one sentence each: a flow offloaded to a
    /// flowtable, a namespace with iptables-legacy and nftables rules both.
    pub notes: Vec<String>,
}

struct Open {
    id: u64,
    hops: Vec<Hop>,
    /// What the hops hold on the heap (see [`Hop::heap_bytes`]).
    heap: usize,
    ended: Option<Instant>,
    last_seen: Instant,
}

impl Open {
    /// What this packet costs the tracker, in bytes (see [`Budget`]).
    fn bytes(&self) -> usize {
        budget::open_bytes(self.hops.capacity(), self.heap)
    }

    /// The namespace whose stack the packet is in, when its last hop left
    /// it there: received, or between netfilter hooks, and not yet queued
    /// to a device. The kernel may hold it there while it resolves the
    /// next hop's link-layer address.
    fn held_in(&self) -> Option<u32> {
        let last = self.hops.iter().max_by_key(|h| h.t_ns)?;
        matches!(last.kind, HopKind::Rx | HopKind::NfHook | HopKind::NfRule).then_some(last.netns)
    }
}

/// Collects hops by packet identity and hands back packets once their fate is
/// settled: a short grace period after the free (late `nf_hook_slow` returns
/// arrive after the drop), or after being idle for too long. What it holds
/// open is bounded by a [`Budget`]: beyond it, the oldest packets settle
/// early, with what is known of them, and are counted.
pub struct Tracker {
    open: HashMap<(u64, u64), Open>,
    /// The open packets by number, which is their order of first sight.
    by_age: BTreeMap<u64, (u64, u64)>,
    /// Packets consumed right as a veth handed them to its peer's
    /// namespace, by the device they were handed to: the peer's XDP copies
    /// such a packet into a new one and frees the original.
    handed_off: HashMap<(u32, u32), (u64, u64)>,
    next_id: u64,
    /// How long after its free a packet waits for late events.
    pub grace: Duration,
    idle: Duration,
    budget: Budget,
    /// What the open packets cost, in bytes (see [`Budget`]).
    bytes: usize,
    /// Packets the budget settled early, not yet handed back.
    early: Vec<Packet>,
    settled_early: u64,
    /// The latest `t_ns` of the hops taken in.
    newest_ns: u64,
}

/// How long a packet waits at most for its events from other sources.
pub const SOURCE_WAIT: Duration = Duration::from_secs(5);

/// How long a packet with no end waits for one, at least.
pub const IDLE: Duration = Duration::from_millis(3500);

/// How much later than its own bound the kernel may let a held packet go
/// (its timers run late under load).
pub const HOLD_SLACK: Duration = Duration::from_millis(500);

impl Default for Tracker {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), IDLE)
    }
}

impl Tracker {
    pub fn new(grace: Duration, idle: Duration) -> Self {
        Self::with_budget(grace, idle, Budget::default())
    }

    pub fn with_budget(grace: Duration, idle: Duration, budget: Budget) -> Self {
        Self {
            open: HashMap::new(),
            by_age: BTreeMap::new(),
            handed_off: HashMap::new(),
            next_id: 1,
            grace,
            idle,
            budget,
            bytes: 0,
            early: Vec::new(),
            settled_early: 0,
            newest_ns: 0,
        }
    }

    /// Takes in `hop`, which happened `at` (its `t_ns`, as an `Instant`).
    pub fn push(&mut self, hop: Hop, at: Instant) {
        self.newest_ns = self.newest_ns.max(hop.t_ns);
        let key = (hop.skb, hop.track_id);
        if !self.open.contains_key(&key) {
            self.continue_copy(key, &hop);
        }
        let next_id = &mut self.next_id;
        let by_age = &mut self.by_age;
        let mut before = None;
        let open = self.open.entry(key).or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            by_age.insert(id, key);
            before = Some(0);
            Open {
                id,
                hops: Vec::with_capacity(budget::FIRST_SLOTS),
                heap: 0,
                ended: None,
                last_seen: at,
            }
        });
        let before = before.unwrap_or_else(|| open.bytes());
        open.last_seen = open.last_seen.max(at);
        if open.hops.len() >= MAX_HOPS {
            // No real path is this long: settle it with what it has.
            open.ended.get_or_insert(at);
            self.bytes = self.bytes + open.bytes() - before;
            return;
        }
        if matches!(hop.kind, HopKind::Drop | HopKind::Consume) {
            open.ended = Some(at);
        }
        let handoff = hop.kind == HopKind::Consume
            && open
                .hops
                .last()
                .is_some_and(|h| h.kind == HopKind::Tx && h.netns != hop.netns);
        let place = (hop.netns, hop.ifindex);
        open.heap += hop.heap_bytes();
        open.hops.push(hop);
        self.bytes = self.bytes + open.bytes() - before;
        if handoff {
            self.handed_off.insert(place, key);
        }
        self.keep_to_budget();
    }

    /// Settles the oldest packets early while the open ones are over the
    /// budget (one packet alone is kept: [`MAX_HOPS`] bounds it).
    fn keep_to_budget(&mut self) {
        while self.open.len() > self.budget.packets
            || (self.bytes > self.budget.bytes && self.open.len() > 1)
        {
            let Some((_, &oldest)) = self.by_age.first_key_value() else {
                break;
            };
            let settled = self.finish(vec![oldest]);
            self.settled_early += settled.len() as u64;
            self.early.extend(settled);
        }
    }

    /// Packets settled early by the [`Budget`] since last asked (also handed
    /// back, first, by [`Tracker::settled_after`]): the caller settles them
    /// between batches of events, so they are not held for long.
    pub fn take_early(&mut self) -> Vec<Packet> {
        std::mem::take(&mut self.early)
    }

    /// How many packets the [`Budget`] settled early, in all.
    pub fn settled_early(&self) -> u64 {
        self.settled_early
    }

    /// What the open packets cost, in bytes (see [`Budget`]).
    pub fn open_bytes(&self) -> usize {
        self.bytes
    }

    /// A new packet that starts where a handed-off packet was consumed,
    /// with its headers, is that packet's copy: it goes on under the new
    /// identity, so the path is one packet with one fate.
    fn continue_copy(&mut self, key: (u64, u64), hop: &Hop) {
        let Some(&old) = self.handed_off.get(&(hop.netns, hop.ifindex)) else {
            return;
        };
        let same = self.open.get(&old).is_some_and(|o| {
            let last_tuple = o.hops.iter().rev().find_map(|h| h.tuple);
            last_tuple.is_some() && last_tuple == hop.tuple
        });
        if !same {
            return;
        }
        self.handed_off.remove(&(hop.netns, hop.ifindex));
        if let Some(mut o) = self.open.remove(&old) {
            o.ended = None;
            self.by_age.insert(o.id, key);
            self.open.insert(key, o);
        }
    }

    /// The latest kernel time (`t_ns`) of the hops taken in so far.
    pub fn newest_ns(&self) -> u64 {
        self.newest_ns
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Packets whose fate is settled at `now`, oldest first, after those
    /// the [`Budget`] settled early (events lost in a flood never end
    /// their packets).
    pub fn settled(&mut self, now: Instant) -> Vec<Packet> {
        self.settled_after(now, None, |_| None)
    }

    /// Like [`Tracker::settled`], but a packet also waits until
    /// `events_in_until` (what another source of its events, such as rule
    /// tracing, has handed over) has passed its end, for at most
    /// [`SOURCE_WAIT`]: a watcher listing a namespace's rules for the first
    /// time takes seconds under emulation. A packet whose last hop left it
    /// inside a namespace's stack, which may hold it while a neighbour is
    /// resolved, waits out `hold` of that namespace (plus [`HOLD_SLACK`]) if
    /// that is longer than [`IDLE`]: settled earlier, its drop would start a
    /// second packet.
    pub fn settled_after(
        &mut self,
        now: Instant,
        events_in_until: Option<Instant>,
        mut hold: impl FnMut(u32) -> Option<Duration>,
    ) -> Vec<Packet> {
        let (grace, idle) = (self.grace, self.idle);
        let caught_up = |t: Instant| {
            events_in_until.is_none_or(|h| h > t) || now.duration_since(t) >= SOURCE_WAIT
        };
        let mut settles = |o: &Open| match o.ended {
            Some(end) => now.duration_since(end) >= grace && caught_up(end),
            None => {
                let quiet = now.duration_since(o.last_seen);
                quiet >= idle
                    && o.held_in()
                        .and_then(&mut hold)
                        .is_none_or(|h| quiet >= h + HOLD_SLACK)
                    && caught_up(o.last_seen)
            }
        };
        let mut done: HashSet<_> = self
            .open
            .iter()
            .filter(|(_, o)| settles(o))
            .map(|(k, _)| *k)
            .collect();
        self.after_requests(&mut done);
        let mut out = self.take_early();
        out.extend(self.finish(done.into_iter().collect()));
        out
    }

    /// Keeps back from `done` the drops that answer a packet still open
    /// (one that ends where the drop started, going the other way): an answer that died is told after its request, which
    /// says what happened to it on the way (a router that did not
    /// masquerade it), and not before: both settle together, within [`IDLE`].
    fn after_requests(&self, done: &mut HashSet<(u64, u64)>) {
        let ends_in_drop = |k: &(u64, u64)| {
            self.open
                .get(k)
                .is_some_and(|o| o.hops.last().is_some_and(|h| h.kind == HopKind::Drop))
        };
        // Most ticks settle no drop: then nothing is kept back.
        if !done.iter().any(ends_in_drop) {
            return;
        }
        let pending: HashSet<crate::model::Tuple> = self
            .open
            .iter()
            .filter(|(k, _)| !done.contains(k))
            .filter_map(|(_, o)| o.hops.iter().rev().find_map(|h| h.tuple))
            .collect();
        if pending.is_empty() {
            return;
        }
        done.retain(|k| {
            !self.open.get(k).is_some_and(|o| {
                o.hops.last().is_some_and(|h| h.kind == HopKind::Drop)
                    && o.hops
                        .iter()
                        .find_map(|h| h.tuple)
                        .is_some_and(|t| pending.contains(&t.reversed()))
            })
        });
    }

    /// Every open packet, settled or not (at exit).
    pub fn flush(&mut self) -> Vec<Packet> {
        let all: Vec<_> = self.open.keys().copied().collect();
        let mut out = self.take_early();
        out.extend(self.finish(all));
        out
    }

    /// Takes `keys` out of the open packets, in order of first sight.
    fn finish(&mut self, keys: Vec<(u64, u64)>) -> Vec<Packet> {
        if !self.handed_off.is_empty() {
            let keys: HashSet<_> = keys.iter().copied().collect();
            self.handed_off.retain(|_, k| !keys.contains(k));
        }
        let mut out: Vec<Packet> = keys
            .into_iter()
            .filter_map(|k| self.open.remove(&k))
            .map(|o| {
                self.bytes -= o.bytes();
                self.by_age.remove(&o.id);
                let hops = tidy(o.hops);
                let fate = Fate::of(&hops);
                Packet {
                    id: o.id,
                    hops,
                    fate,
                    rules_late: Vec::new(),
                    notes: Vec::new(),
                }
            })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }
}

/// Sorts by time, folds consecutive `rx` hops on one device (a packet put
/// back into the receive path where it was) into one, and gives hops where
/// the kernel had already detached the device (a socket consuming the
/// packet) the namespace and device of the hop before: a packet only changes
/// namespace at a device hop, and a detached packet's socket or stale device
/// pointer may name another namespace.
fn tidy(mut hops: Vec<Hop>) -> Vec<Hop> {
    hops.sort_by_key(|h| h.t_ns);
    for i in 1..hops.len() {
        if hops[i].ifindex == 0 {
            hops[i].netns = hops[i - 1].netns;
            hops[i].ifindex = hops[i - 1].ifindex;
            hops[i].ifname = hops[i - 1].ifname;
        }
    }
    hops.dedup_by(|later, earlier| {
        later.kind == HopKind::Rx
            && earlier.kind == HopKind::Rx
            && later.netns == earlier.netns
            && later.ifindex == earlier.ifindex
    });
    hops
}

#[cfg(test)]
mod tests;

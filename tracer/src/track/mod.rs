//! Grouping hops into packets, and deciding each packet's fate.
mod fate;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

pub use fate::{Fate, FateKind};

use crate::events::{Hop, HopKind};

/// Packets followed at once in userspace.
pub const MAX_OPEN: usize = 8_192;
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
    ended: Option<Instant>,
    first_seen: Instant,
    last_seen: Instant,
}

impl Open {
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
/// arrive after the drop), or after being idle for too long.
pub struct Tracker {
    open: HashMap<(u64, u64), Open>,
    /// Packets consumed right as a veth handed them to its peer's
    /// namespace, by the device they were handed to: the peer's XDP copies
    /// such a packet into a new one and frees the original.
    handed_off: HashMap<(u32, u32), (u64, u64)>,
    next_id: u64,
    /// How long after its free a packet waits for late events.
    pub grace: Duration,
    idle: Duration,
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
        Self {
            open: HashMap::new(),
            handed_off: HashMap::new(),
            next_id: 1,
            grace,
            idle,
        }
    }

    pub fn push(&mut self, hop: Hop, now: Instant) {
        let key = (hop.skb, hop.track_id);
        if !self.open.contains_key(&key) {
            self.continue_copy(key, &hop);
        }
        let next_id = &mut self.next_id;
        let open = self.open.entry(key).or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            Open {
                id,
                hops: Vec::with_capacity(8),
                ended: None,
                first_seen: now,
                last_seen: now,
            }
        });
        open.last_seen = now;
        if open.hops.len() >= MAX_HOPS {
            // No real path is this long: settle it with what it has.
            open.ended.get_or_insert(now);
            return;
        }
        if matches!(hop.kind, HopKind::Drop | HopKind::Consume) {
            open.ended = Some(now);
        }
        let handoff = hop.kind == HopKind::Consume
            && open
                .hops
                .last()
                .is_some_and(|h| h.kind == HopKind::Tx && h.netns != hop.netns);
        let place = (hop.netns, hop.ifindex);
        open.hops.push(hop);
        if handoff {
            self.handed_off.insert(place, key);
        }
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
            self.open.insert(key, o);
        }
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Packets whose fate is settled at `now`, oldest first. Beyond
    /// [`MAX_OPEN`] packets (events lost in a flood never end theirs), the
    /// oldest are settled early, with what is known of them.
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
            events_in_until.is_none_or(|h| h >= t) || now.duration_since(t) >= SOURCE_WAIT
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
        let mut done: Vec<_> = self
            .open
            .iter()
            .filter(|(_, o)| settles(o))
            .map(|(k, _)| *k)
            .collect();
        self.after_requests(&mut done);
        let excess = (self.open.len() - done.len()).saturating_sub(MAX_OPEN);
        if excess > 0 {
            let settling: HashSet<_> = done.iter().copied().collect();
            let mut oldest: Vec<_> = self
                .open
                .iter()
                .filter(|(k, _)| !settling.contains(k))
                .map(|(k, o)| (o.first_seen, *k))
                .collect();
            oldest.sort_unstable();
            done.extend(oldest.into_iter().take(excess).map(|(_, k)| k));
        }
        self.finish(done)
    }

    /// Keeps back from `done` the drops that answer a packet still open
    /// (one that ends where the drop started, going the other way): an answer that died is told after its request, which
    /// says what happened to it on the way (a router that did not
    /// masquerade it), and not before: both settle together, within [`IDLE`].
    fn after_requests(&self, done: &mut Vec<(u64, u64)>) {
        let ends_in_drop = |k: &(u64, u64)| {
            self.open
                .get(k)
                .is_some_and(|o| o.hops.last().is_some_and(|h| h.kind == HopKind::Drop))
        };
        if !done.iter().any(ends_in_drop) {
            return;
        }
        let settling: HashSet<&(u64, u64)> = done.iter().collect();
        let pending: HashSet<crate::model::Tuple> = self
            .open
            .iter()
            .filter(|(k, _)| !settling.contains(k))
            .filter_map(|(_, o)| o.hops.iter().rev().find_map(|h| h.tuple))
            .collect();
        drop(settling);
        if pending.is_empty() {
            return;
        }
        done.retain(|k| {
            !(ends_in_drop(k)
                && self.open.get(k).is_some_and(|o| {
                    o.hops
                        .iter()
                        .find_map(|h| h.tuple)
                        .is_some_and(|t| pending.contains(&t.reversed()))
                }))
        });
    }

    /// Every open packet, settled or not (at exit).
    pub fn flush(&mut self) -> Vec<Packet> {
        let all: Vec<_> = self.open.keys().copied().collect();
        self.finish(all)
    }

    fn finish(&mut self, keys: Vec<(u64, u64)>) -> Vec<Packet> {
        if !self.handed_off.is_empty() {
            let finishing: HashSet<&(u64, u64)> = keys.iter().collect();
            self.handed_off.retain(|_, k| !finishing.contains(k));
        }
        let mut out: Vec<Packet> = keys
            .into_iter()
            .filter_map(|k| self.open.remove(&k))
            .map(|o| {
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
            hops[i].ifname = hops[i - 1].ifname.clone();
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

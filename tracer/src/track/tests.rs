use std::{
    mem::size_of,
    time::{Duration, Instant},
};

use super::*;
use crate::model::{Hook, Verdict};

fn hop(t: u64, kind: HopKind, netns: u32, ifindex: u32) -> Hop {
    Hop::for_test(t, kind, netns, ifindex, &format!("if{ifindex}"))
}

#[test]
fn drop_ends_the_packet_after_the_grace_period() {
    let mut t = Tracker::new(Duration::from_millis(100), Duration::from_secs(2));
    let now = Instant::now();
    t.push(hop(1, HopKind::Tx, 1, 2), now);
    t.push(hop(2, HopKind::Rx, 2, 3), now);
    let mut d = hop(4, HopKind::Drop, 2, 3);
    d.hook = Some(Hook::Forward);
    t.push(d, now);
    assert!(t.settled(now).is_empty(), "still in its grace period");
    // A late nf_hook_slow return sorts before the drop by its entry time.
    let mut nf = hop(3, HopKind::NfHook, 2, 3);
    nf.verdict = Some(Verdict::Drop);
    nf.hook = Some(Hook::Forward);
    t.push(nf, now + Duration::from_millis(10));
    let done = t.settled(now + Duration::from_millis(150));
    assert_eq!(done.len(), 1);
    let p = &done[0];
    assert_eq!(p.id, 1);
    assert_eq!(p.fate.kind, FateKind::Dropped);
    assert_eq!(p.fate.hook, Some(Hook::Forward));
    let kinds: Vec<_> = p.hops.iter().map(|h| h.kind).collect();
    assert_eq!(
        kinds,
        [HopKind::Tx, HopKind::Rx, HopKind::NfHook, HopKind::Drop]
    );
}

#[test]
fn rx_pairs_fold_and_consume_after_rx_is_delivery() {
    let mut t = Tracker::default();
    let now = Instant::now();
    for h in [
        hop(1, HopKind::Tx, 1, 2),
        hop(2, HopKind::Rx, 2, 3),
        hop(3, HopKind::Rx, 2, 3),
        hop(4, HopKind::Consume, 2, 3),
    ] {
        t.push(h, now);
    }
    let p = t.flush().pop().expect("one packet");
    assert_eq!(p.hops.len(), 3);
    assert_eq!(p.fate.kind, FateKind::Delivered);
}

#[test]
fn consume_after_tx_is_forwarding_and_silence_is_unknown() {
    let mut t = Tracker::new(Duration::from_millis(100), Duration::from_secs(2));
    let now = Instant::now();
    t.push(hop(1, HopKind::Rx, 1, 2), now);
    t.push(hop(2, HopKind::Tx, 1, 3), now);
    t.push(hop(3, HopKind::Consume, 1, 3), now);
    assert_eq!(t.flush()[0].fate.kind, FateKind::Forwarded);

    let mut other = hop(1, HopKind::Rx, 1, 2);
    other.skb = 0x2000;
    t.push(other, now);
    assert!(t.settled(now + Duration::from_secs(1)).is_empty());
    let idle = t.settled(now + Duration::from_secs(3));
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].fate.kind, FateKind::Unknown);
    assert_eq!(
        idle[0].id, 2,
        "packets are numbered in order of first sight"
    );
}

#[test]
fn a_hop_without_a_device_inherits_the_namespace_before_it() {
    let mut t = Tracker::default();
    let now = Instant::now();
    t.push(hop(1, HopKind::Rx, 5, 9), now);
    let mut c = hop(2, HopKind::Consume, 0, 0);
    c.ifname = Default::default();
    t.push(c, now);
    let p = t.flush().pop().expect("one packet");
    let last = p.hops.last().expect("hops");
    assert_eq!(
        (last.netns, last.ifindex, last.ifname.as_str()),
        (5, 9, "if9")
    );
}

#[test]
fn beyond_the_cap_the_oldest_packets_settle_early() {
    let mut t = Tracker::with_budget(
        Duration::from_millis(100),
        IDLE,
        Budget {
            packets: MAX_OPEN,
            bytes: usize::MAX,
        },
    );
    let now = Instant::now();
    for i in 0..(MAX_OPEN as u64 + 10) {
        let mut h = hop(i, HopKind::Rx, 1, 2);
        h.skb = 0x10_000 + i;
        t.push(h, now + Duration::from_nanos(i));
    }
    assert_eq!(t.open_count(), MAX_OPEN, "never more open than the cap");
    let early = t.settled(now);
    assert_eq!(early.len(), 10, "only the excess settles");
    assert_eq!(
        early.iter().map(|p| p.id).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>(),
        "the oldest first"
    );
    assert_eq!(t.settled_early(), 10);
    assert_eq!(t.open_count(), MAX_OPEN);
}

#[test]
fn open_packets_are_bounded_by_bytes_and_the_excess_is_counted() {
    // Room for about 10 packets of 8 hop slots each.
    let one = budget::open_bytes(budget::FIRST_SLOTS, 0);
    let bytes = 10 * one + one / 2;
    let mut t = Tracker::with_budget(
        Duration::from_millis(100),
        IDLE,
        Budget {
            packets: MAX_OPEN,
            bytes,
        },
    );
    let now = Instant::now();
    for i in 0..25u64 {
        let mut h = hop(i, HopKind::Rx, 1, 2);
        h.skb = 0x10_000 + i;
        t.push(h, now);
        assert!(t.open_bytes() <= bytes, "within the budget after each hop");
    }
    assert_eq!(t.open_count(), 10);
    assert_eq!(t.settled_early(), 15);
    // Settled early, they come back between batches, the oldest first...
    let early = t.take_early();
    assert_eq!(
        early.iter().map(|p| p.id).collect::<Vec<_>>(),
        (1..=15).collect::<Vec<_>>()
    );
    assert!(early.iter().all(|p| p.fate.kind == FateKind::Unknown));
    // ...and a packet that grows past its first slots pushes out another.
    let mut long = hop(100, HopKind::Tx, 1, 3);
    for n in 0..=budget::FIRST_SLOTS as u64 {
        long.t_ns = 100 + n;
        long.skb = 0x10_000 + 24;
        t.push(long.clone(), now);
    }
    assert!(t.open_bytes() <= bytes);
    assert_eq!(t.settled_early(), 16);
    assert_eq!(t.settled(now).len(), 1, "the packet it pushed out");
    let all = t.flush();
    assert_eq!(all.len(), 9);
    assert_eq!(
        all.last().map(|p| p.hops.len()),
        Some(2 + budget::FIRST_SLOTS)
    );
    assert_eq!(
        t.open_bytes(),
        0,
        "what the tracker holds is all given back"
    );
}

#[test]
fn a_hop_is_compact() {
    // A packet in flight holds several: see `Budget`.
    assert!(size_of::<Hop>() <= 200, "{} bytes", size_of::<Hop>());
}

#[test]
fn an_ended_packet_waits_for_a_slow_source_up_to_its_bound() {
    let mut t = Tracker::default();
    let now = Instant::now();
    t.push(hop(1, HopKind::Rx, 1, 2), now);
    t.push(hop(2, HopKind::Drop, 1, 2), now);
    let later = |ms| now + Duration::from_millis(ms);
    // A rule watcher still listing a namespace's rules has handed over
    // nothing past the packet's start.
    let behind = Some(now - Duration::from_millis(1));
    assert!(
        t.settled_after(later(2000), behind, |_| None).is_empty(),
        "waits past idle"
    );
    assert_eq!(
        t.settled_after(later(2000), Some(later(1)), |_| None).len(),
        1
    );

    // A source behind by nothing at all: a lookup that this packet's own
    // last hop asked for, pending from that hop's time.
    t.push(hop(5, HopKind::Drop, 1, 2), now);
    assert!(
        t.settled_after(later(2000), Some(now), |_| None).is_empty(),
        "an answer asked for at the packet's end has not passed it"
    );
    assert_eq!(
        t.settled_after(later(2000), Some(later(1)), |_| None).len(),
        1
    );

    t.push(hop(3, HopKind::Rx, 1, 2), now);
    t.push(hop(4, HopKind::Drop, 1, 2), now);
    assert!(t.settled_after(later(4900), behind, |_| None).is_empty());
    assert_eq!(
        t.settled_after(later(5000), behind, |_| None).len(),
        1,
        "at most SOURCE_WAIT"
    );
}

#[test]
fn a_packet_left_in_a_stack_waits_out_that_namespaces_neighbour_hold() {
    let mut t = Tracker::default();
    let now = Instant::now();
    let later = |ms| now + Duration::from_millis(ms);
    // Forwarded by namespace 2, then held there for its neighbour (4.5 s).
    t.push(hop(1, HopKind::Tx, 1, 2), now);
    t.push(hop(2, HopKind::Rx, 2, 3), now);
    // Queued to a device in namespace 1: no neighbour holds it any more.
    let mut queued = hop(1, HopKind::Tx, 1, 2);
    queued.skb = 0x2000;
    t.push(queued, now);
    let mut asked = Vec::new();
    let mut hold = |netns| {
        asked.push(netns);
        (netns == 2).then_some(Duration::from_millis(4500))
    };
    let idle = t.settled_after(later(3600), None, &mut hold);
    assert_eq!(idle.len(), 1, "the packet on a device settles at IDLE");
    assert_eq!(idle[0].hops.len(), 1);
    assert!(t.settled_after(later(4900), None, &mut hold).is_empty());
    let held = t.settled_after(later(5000), None, &mut hold);
    assert_eq!(held.len(), 1, "the held packet, after its hold and slack");
    assert_eq!(held[0].hops.len(), 2);
    assert!(asked.iter().all(|&n| n == 2), "asked only for 2: {asked:?}");

    // A hold shorter than IDLE, or none known, leaves IDLE in charge.
    t.push(hop(3, HopKind::Rx, 2, 3), later(5000));
    assert!(t
        .settled_after(later(8400), None, |_| Some(Duration::from_secs(1)))
        .is_empty());
    assert_eq!(t.settled_after(later(8500), None, |_| None).len(), 1);
}

#[test]
fn the_rules_traced_in_a_hook_keep_its_drop_verdict_as_the_fate() {
    let mut nf = hop(1, HopKind::NfHook, 1, 2);
    nf.verdict = Some(Verdict::Drop);
    nf.hook = Some(Hook::Forward);
    let mut rule = nf.clone();
    rule.kind = HopKind::NfRule;
    rule.t_ns = 2;
    let drop = hop(3, HopKind::Drop, 1, 2);
    let fate = Fate::of(&[hop(0, HopKind::Rx, 1, 2), nf, rule, drop]);
    assert_eq!(fate.kind, FateKind::Dropped);
    assert_eq!(
        fate.hook,
        Some(Hook::Forward),
        "the hook whose rule dropped it"
    );
}

#[test]
fn a_copy_made_at_a_veth_handoff_goes_on_as_the_same_packet() {
    let mut t = Tracker::default();
    let now = Instant::now();
    let tuple = Some(crate::model::Tuple {
        saddr: "192.0.2.1".parse().expect("ip"),
        daddr: "198.51.100.2".parse().expect("ip"),
        sport: 40000,
        dport: 8080,
        proto: 6,
    });
    let with = |mut h: Hop, skb: u64| {
        h.tuple = tuple;
        h.skb = skb;
        h
    };
    t.push(with(hop(1, HopKind::Rx, 1, 2), 0xa), now);
    t.push(with(hop(2, HopKind::Tx, 1, 3), 0xa), now);
    // The peer's XDP copies it: the original is consumed on the peer...
    t.push(with(hop(3, HopKind::Consume, 5, 9), 0xa), now);
    // ...and the copy, a new skb, is dropped there.
    t.push(with(hop(4, HopKind::Drop, 5, 9), 0xb), now);
    let all = t.flush();
    assert_eq!(all.len(), 1, "one packet: {all:#?}");
    assert_eq!(all[0].fate.kind, FateKind::Dropped);
    assert_eq!(all[0].hops.len(), 4);
}

#[test]
fn a_dropped_answer_waits_for_the_request_it_answers() {
    let mut t = Tracker::new(Duration::from_millis(100), Duration::from_secs(2));
    let now = Instant::now();
    let flow = crate::model::Tuple {
        saddr: "192.0.2.66".parse().expect("ip"),
        daddr: "203.0.113.200".parse().expect("ip"),
        sport: 41374,
        dport: 5374,
        proto: 17,
    };
    let with = |mut h: Hop, skb: u64, tuple: crate::model::Tuple| {
        h.skb = skb;
        h.tuple = Some(tuple);
        h
    };
    // A datagram taken by its socket (no end of its own), then its answer,
    // dropped on the way back.
    t.push(with(hop(1, HopKind::Tx, 1, 2), 0x1000, flow), now);
    t.push(with(hop(2, HopKind::Rx, 2, 3), 0x1000, flow), now);
    t.push(
        with(hop(3, HopKind::Tx, 2, 3), 0x2000, flow.reversed()),
        now,
    );
    t.push(
        with(hop(4, HopKind::Drop, 3, 4), 0x2000, flow.reversed()),
        now,
    );
    assert!(
        t.settled(now + Duration::from_millis(500)).is_empty(),
        "the answer waits for its request"
    );
    let done = t.settled(now + Duration::from_secs(3));
    let ids: Vec<u64> = done.iter().map(|p| p.id).collect();
    assert_eq!(ids, [1, 2], "the request first, then its answer");
}

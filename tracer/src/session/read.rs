//! Reading: a ring record becomes a hop (or bytes waiting for their hop),
//! its interface is named and a drop completed from its kernel stack while
//! both still exist, and it joins its packet in the tracker.
use std::time::Instant;

use crate::{
    events::{decode, decode_bytes, decode_conntrack, instant_at, Hop, HopKind, Pending},
    evidence::neigh::ResolutionLimits,
    kernel::hook_infer,
    names::{EngineLookup, NetnsNames, View},
    render::Stats,
    ruletrace::Follow,
    track::{Packet, Tracker},
};

/// Kernel helpers that free a list of packets one by one. Before 6.3
/// (commit a4650da2a2d6, "net: fix call location in kfree_skb_list_reason")
/// they called `kfree_skb_reason()` per packet, so the drop's location is
/// inside them (on Debian 12's 6.1, `kfree_skb_list_reason+0x…` for a packet
/// to a device without carrier), not in the function that gave up the packet.
const LIST_FREES: &[&str] = &["kfree_skb_list_reason", "kfree_skb_list"];

/// Names the hop's interface, and completes a drop from its kernel stack:
/// the function that gave up the packet when a list-freeing helper freed
/// it, and the netfilter hook.
pub fn enrich(hop: &mut Hop, view: &mut View) {
    view.name_interface(hop);
    if hop.kind != HopKind::Drop {
        return;
    }
    let Some(syms) = view.syms.as_ref() else {
        return;
    };
    let name_of = |a: u64| syms.symbolize(a).map(|(n, _)| n);
    if let Some(helper) = name_of(hop.location).filter(|n| LIST_FREES.contains(n)) {
        // The frame after the helper's own is the return address into its caller.
        let caller = hop
            .stack
            .iter()
            .skip_while(|&&a| name_of(a) != Some(helper))
            .nth(1);
        if let Some(&caller) = caller {
            hop.location = caller;
        }
    }
    if hop.hook.is_some() {
        return;
    }
    let names: Vec<&str> = hop.stack.iter().filter_map(|&a| name_of(a)).collect();
    hop.hook = hook_infer::infer(&names).map(|h| h.hook);
}

/// The hops read so far, grouped into packets, and the captured bytes
/// waiting for their hop.
#[derive(Default)]
pub(super) struct Intake {
    pending: Pending,
    pub tracker: Tracker,
    /// How long each namespace may hold a packet for a neighbour.
    holds: ResolutionLimits,
}

impl Intake {
    /// The packets settled at `now` (see [`Tracker::settled_after`]); a
    /// packet waiting in a namespace's stack waits out that namespace's
    /// neighbour resolution, read from inside it through `names`.
    pub fn settled(
        &mut self,
        now: Instant,
        events_in_until: Option<Instant>,
        names: &mut NetnsNames,
    ) -> Vec<Packet> {
        let holds = &mut self.holds;
        self.tracker.settled_after(now, events_in_until, |netns| {
            holds.of(netns, || names.path(netns))
        })
    }

    /// Takes one ring record; the namespaces its hop entered are noted for
    /// rule tracing and container names.
    pub fn record(
        &mut self,
        bytes: &[u8],
        stats: &mut Stats,
        view: &mut View,
        follow: &mut Follow,
        engines: &mut EngineLookup,
    ) {
        if let Some(r) = decode_bytes(bytes) {
            self.pending.insert(r);
            return;
        }
        if let Some(r) = decode_conntrack(bytes) {
            self.pending.insert_ct(r);
            return;
        }
        stats.events += 1;
        match decode(bytes) {
            Ok(mut hop) => {
                self.pending.attach(&mut hop);
                enrich(&mut hop, view);
                let at = instant_at(hop.t_ns);
                follow.saw(hop.netns);
                engines.saw(hop.netns, at);
                self.tracker.push(hop, at);
            }
            Err(e) => {
                stats.bad += 1;
                log::debug!("undecodable event: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::{drop_reason::DropReasons, kallsyms::Kallsyms},
        names::{Interfaces, NetnsNames},
    };

    fn drop_at(location: u64, stack: Vec<u64>) -> Hop {
        Hop {
            t_ns: 1,
            skb: 0x1000,
            track_id: 7,
            kind: HopKind::Drop,
            netns: 1,
            ifindex: 2,
            ifname: "r1".into(),
            hook: None,
            nf_family: 0,
            verdict: None,
            retval: 0,
            reason_raw: 0,
            location,
            tuple: None,
            tcp_flags: 0,
            ip_id: None,
            len: 60,
            filter: 0,
            stack: stack.into(),
            rule: None,
            icmp: None,
            bytes: None,
            ct: None,
        }
    }

    #[test]
    fn a_packet_freed_through_kfree_skb_list_is_located_in_the_caller() {
        // As Debian 12's 6.1 reports a packet to a device without carrier.
        let syms = Kallsyms::parse(
            "ffffffff81a00000 T kfree_skb_reason\n\
             ffffffff81a00200 T kfree_skb_list_reason\n\
             ffffffff81a00400 T skb_dump\n\
             ffffffff81b00000 T __dev_queue_xmit\n\
             ffffffff81b01000 T dev_queue_xmit_nit\n",
        )
        .expect("kallsyms");
        let mut view = View {
            reasons: DropReasons::default(),
            syms: Some(syms),
            netns: NetnsNames::default(),
            interfaces: Interfaces::new(),
        };
        let mut hop = drop_at(
            0xffffffff81a00230,
            vec![0xffffffff81a00050, 0xffffffff81a00230, 0xffffffff81b00456],
        );
        enrich(&mut hop, &mut view);
        assert_eq!(
            view.location(&hop).as_deref(),
            Some("__dev_queue_xmit+0x456")
        );
        // A drop located anywhere else keeps its location.
        let mut other = drop_at(0xffffffff81b00010, vec![0xffffffff81b00010]);
        enrich(&mut other, &mut view);
        assert_eq!(other.location, 0xffffffff81b00010);
    }
}

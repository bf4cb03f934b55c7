//! Turning the kernel's fixed-layout records ([`Event`], [`DropEvent`]) into
//! an owned [`Hop`].
use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use tracer_common::{record_kind, verdict, DropEvent, Event, EventKind, HOOK_NONE};

use crate::model::{Family, Hook, IcmpError, IfName, Tuple, Verdict};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record is {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
    #[error("ring record of unknown kind {0:#x}")]
    UnknownRecord(u32),
    #[error("event record has unknown kind {0}")]
    UnknownKind(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopKind {
    Rx,
    Tx,
    NfHook,
    Drop,
    Consume,
    /// A firewall rule or chain policy decided (from rule tracing, not eBPF).
    NfRule,
}

impl HopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rx => "rx",
            Self::Tx => "tx",
            Self::NfHook => "nf_hook",
            Self::Drop => "drop",
            Self::Consume => "deliver",
            Self::NfRule => "nf_rule",
        }
    }
}

/// One packet at one point in the kernel, decoded but not yet named.
///
/// Packets in flight hold a few of these each (see `track::Budget`), so
/// what most hops lack is boxed: a drop's kernel stack, an ICMP error,
/// captured bytes, a conntrack change, a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub t_ns: u64,
    pub skb: u64,
    pub track_id: u64,
    pub kind: HopKind,
    pub netns: u32,
    pub ifindex: u32,
    /// Filled by the reader from (`netns`, `ifindex`): see `names::Interfaces`.
    pub ifname: IfName,
    pub hook: Option<Hook>,
    pub nf_family: u8,
    pub verdict: Option<Verdict>,
    pub retval: i32,
    pub reason_raw: u32,
    pub location: u64,
    pub tuple: Option<Tuple>,
    pub tcp_flags: u8,
    /// IPv4 identification (None for IPv6 or no header).
    pub ip_id: Option<u16>,
    pub len: u32,
    pub filter: u8,
    /// A drop's kernel stack (empty for other hops).
    pub stack: Box<[u64]>,
    /// For [`HopKind::NfRule`]: the rule and its verdict.
    pub rule: Option<Box<super::RuleHit>>,
    /// An ICMP error, with the flow it quotes.
    pub icmp: Option<Box<IcmpError>>,
    /// The packet's first bytes at this hop (`--pcap` only).
    pub bytes: Option<Box<super::Captured>>,
    /// The packet's conntrack entry, where it changed since the last hop.
    pub ct: Option<Box<crate::model::Conntrack>>,
}

impl Hop {
    /// A 60-byte packet's hop with nothing but its kind and place, for unit
    /// tests to fill in the rest.
    #[cfg(test)]
    pub fn for_test(t_ns: u64, kind: HopKind, netns: u32, ifindex: u32, ifname: &str) -> Self {
        Self {
            t_ns,
            skb: 0x1000,
            track_id: 7,
            kind,
            netns,
            ifindex,
            ifname: ifname.into(),
            hook: None,
            nf_family: 0,
            verdict: None,
            retval: 0,
            reason_raw: 0,
            location: 0,
            tuple: None,
            tcp_flags: 0,
            ip_id: None,
            len: 60,
            filter: 0,
            stack: Box::default(),
            rule: None,
            icmp: None,
            bytes: None,
            ct: None,
        }
    }

    /// What the hop holds on the heap, beyond its own size (a rule's
    /// strings aside: rules join a packet when it settles, after tracking).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of_val;
        size_of_val(&*self.stack)
            + self.rule.as_deref().map_or(0, size_of_val)
            + self.icmp.as_deref().map_or(0, size_of_val)
            + self
                .bytes
                .as_deref()
                .map_or(0, |b| size_of_val(b) + b.data.capacity())
            + self.ct.as_deref().map_or(0, size_of_val)
    }

    /// The family of the netfilter hook of an `nf_hook` hop.
    pub fn hook_family(&self) -> Option<Family> {
        (self.kind == HopKind::NfHook).then(|| Family::from_nfproto(self.nf_family))
    }
}

fn addr(version: u8, b: &[u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// Reads a `T` from the start of `bytes`, which must be exactly its size.
fn record<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if bytes.len() != want {
        return Err(DecodeError::Size {
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: the length was checked, T is a plain-old-data record of the
    // shared layout, and read_unaligned copes with any alignment of the slot.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record. Never trusts the length or the kind.
pub fn decode(bytes: &[u8]) -> Result<Hop, DecodeError> {
    let tag = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Size {
            got: bytes.len(),
            want: size_of::<Event>(),
        })?;
    match tag {
        record_kind::HOP => decode_event(&record::<Event>(bytes)?, Box::default()),
        record_kind::DROP => {
            let d = record::<DropEvent>(bytes)?;
            let n = (d.stack_len as usize).min(d.stack.len());
            decode_event(&d.event, d.stack[..n].into())
        }
        other => Err(DecodeError::UnknownRecord(other)),
    }
}

fn decode_event(ev: &Event, stack: Box<[u64]>) -> Result<Hop, DecodeError> {
    let kind = match EventKind::from_u8(ev.kind) {
        Some(EventKind::Rx) => HopKind::Rx,
        Some(EventKind::Tx) => HopKind::Tx,
        Some(EventKind::NfHook) => HopKind::NfHook,
        Some(EventKind::Drop) => HopKind::Drop,
        Some(EventKind::Consume) => HopKind::Consume,
        None => return Err(DecodeError::UnknownKind(ev.kind)),
    };
    let tuple = matches!(ev.ip_version, 4 | 6).then(|| Tuple {
        saddr: addr(ev.ip_version, &ev.saddr),
        daddr: addr(ev.ip_version, &ev.daddr),
        sport: ev.sport,
        dport: ev.dport,
        proto: ev.proto,
    });
    let icmp = (tuple.is_some() && ev.quoted.proto != 0).then(|| {
        Box::new(IcmpError {
            version: ev.ip_version,
            ty: ev.icmp_type,
            code: ev.icmp_code,
            quoted: Tuple {
                saddr: addr(ev.ip_version, &ev.quoted.saddr),
                daddr: addr(ev.ip_version, &ev.quoted.daddr),
                sport: ev.quoted.sport,
                dport: ev.quoted.dport,
                proto: ev.quoted.proto,
            },
        })
    });
    let verdict = match ev.verdict {
        verdict::ACCEPT => Some(Verdict::Accept),
        verdict::DROP => Some(Verdict::Drop),
        verdict::STOLEN => Some(Verdict::Stolen),
        _ => None,
    };
    Ok(Hop {
        t_ns: ev.ts_ns,
        skb: ev.skb,
        track_id: ev.track_id,
        kind,
        netns: ev.netns,
        ifindex: ev.ifindex,
        ifname: IfName::default(),
        hook: if ev.hook == HOOK_NONE {
            None
        } else {
            Hook::from_nf_inet(ev.hook)
        },
        nf_family: ev.nf_family,
        verdict,
        retval: ev.retval,
        reason_raw: ev.reason,
        location: ev.location,
        tuple,
        tcp_flags: ev.tcp_flags,
        ip_id: (ev.ip_version == 4).then_some(ev.ip_id),
        len: ev.len,
        filter: ev.filter,
        stack,
        rule: None,
        icmp,
        bytes: None,
        ct: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: the records are repr(C) plain old data without padding.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn sample() -> Event {
        // SAFETY: Event is plain old data; all zeros is a valid value.
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.record = record_kind::HOP;
        ev.ts_ns = 42;
        ev.skb = 0xffff_8880_0000_1000;
        ev.kind = EventKind::Rx as u8;
        ev.hook = HOOK_NONE;
        ev.ip_version = 4;
        ev.proto = 6;
        ev.saddr[..4].copy_from_slice(&[192, 0, 2, 9]);
        ev.daddr[..4].copy_from_slice(&[192, 0, 2, 25]);
        ev.sport = 40000;
        ev.dport = 8092;
        ev.ifindex = 3;
        ev
    }

    fn drop_sample() -> DropEvent {
        // SAFETY: DropEvent is plain old data; all zeros is a valid value.
        let mut d: DropEvent = unsafe { std::mem::zeroed() };
        d.event = sample();
        d.event.record = record_kind::DROP;
        d.event.kind = EventKind::Drop as u8;
        d.event.reason = 12;
        d.stack_len = 2;
        d.stack[0] = 1;
        d.stack[1] = 2;
        d
    }

    #[test]
    fn decodes_a_hop_without_a_stack() {
        let hop = decode(&bytes_of(&sample())).expect("decodes");
        assert_eq!(hop.kind, HopKind::Rx);
        assert_eq!((hop.ifindex, hop.ifname.as_str()), (3, ""));
        assert!(hop.stack.is_empty());
        let t = hop.tuple.expect("has a tuple");
        assert_eq!(t.saddr.to_string(), "192.0.2.9");
        assert_eq!(t.daddr.to_string(), "192.0.2.25");
        assert_eq!(
            (t.sport, t.dport, t.proto_name().as_str()),
            (40000, 8092, "tcp")
        );
    }

    #[test]
    fn decodes_a_drop_and_its_stack() {
        let hop = decode(&bytes_of(&drop_sample())).expect("decodes");
        assert_eq!(hop.kind, HopKind::Drop);
        assert_eq!(hop.reason_raw, 12);
        assert_eq!(hop.hook, None);
        assert_eq!(*hop.stack, [1, 2]);
    }

    #[test]
    fn decodes_ipv6_and_nf_hook() {
        let mut ev = sample();
        ev.kind = EventKind::NfHook as u8;
        ev.hook = 2;
        ev.verdict = verdict::ACCEPT;
        ev.ip_version = 6;
        ev.saddr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let hop = decode(&bytes_of(&ev)).expect("decodes");
        assert_eq!(hop.hook, Some(Hook::Forward));
        assert_eq!(hop.verdict, Some(Verdict::Accept));
        assert_eq!(hop.tuple.expect("tuple").saddr.to_string(), "2001:db8::1");
    }

    #[test]
    fn rejects_wrong_sizes_and_unknown_records() {
        let bytes = bytes_of(&sample());
        assert!(matches!(
            decode(&bytes[..100]),
            Err(DecodeError::Size { .. })
        ));
        assert!(matches!(decode(&bytes[..2]), Err(DecodeError::Size { .. })));
        // A drop's tag on a record of a hop's size is not a drop.
        let mut ev = sample();
        ev.record = record_kind::DROP;
        assert!(matches!(
            decode(&bytes_of(&ev)),
            Err(DecodeError::Size { .. })
        ));
        let mut ev = sample();
        ev.record = 7;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::UnknownRecord(7)));
        let mut ev = sample();
        ev.kind = 99;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::UnknownKind(99)));
        let mut d = drop_sample();
        d.stack_len = 200;
        assert_eq!(
            decode(&bytes_of(&d)).expect("decodes").stack.len(),
            d.stack.len()
        );
        let mut ev = sample();
        ev.ip_version = 0;
        assert_eq!(decode(&bytes_of(&ev)).expect("decodes").tuple, None);
    }
}

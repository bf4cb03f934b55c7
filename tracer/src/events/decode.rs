//! Turning the kernel's fixed-layout [`Event`] into an owned [`Hop`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{verdict, Event, EventKind, HOOK_NONE};

use crate::model::{Family, Hook, IcmpError, Tuple, Verdict};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record is {got} bytes, expected at least {want}")]
    Short { got: usize, want: usize },
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub t_ns: u64,
    pub skb: u64,
    pub track_id: u64,
    pub kind: HopKind,
    pub netns: u32,
    pub ifindex: u32,
    pub ifname: String,
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
    pub stack: Vec<u64>,
    /// For [`HopKind::NfRule`]: the rule and its verdict.
    pub rule: Option<Box<super::RuleHit>>,
    /// An ICMP error, with the flow it quotes.
    pub icmp: Option<IcmpError>,
    /// The packet's first bytes at this hop (`--pcap` only).
    pub bytes: Option<super::Captured>,
}

impl Hop {
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

/// Decodes one ring-buffer record. Never trusts the length or the kind.
pub fn decode(bytes: &[u8]) -> Result<Hop, DecodeError> {
    let want = std::mem::size_of::<Event>();
    if bytes.len() < want {
        return Err(DecodeError::Short {
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: the length was checked, Event is plain old data, and
    // read_unaligned copes with any alignment of the ring-buffer slot.
    let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
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
    let icmp = (tuple.is_some() && ev.quoted.proto != 0).then(|| IcmpError {
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
    });
    let name_len = ev
        .ifname
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(ev.ifname.len());
    let verdict = match ev.verdict {
        verdict::ACCEPT => Some(Verdict::Accept),
        verdict::DROP => Some(Verdict::Drop),
        verdict::STOLEN => Some(Verdict::Stolen),
        _ => None,
    };
    let stack_len = (ev.stack_len as usize).min(ev.stack.len());
    Ok(Hop {
        t_ns: ev.ts_ns,
        skb: ev.skb,
        track_id: ev.track_id,
        kind,
        netns: ev.netns,
        ifindex: ev.ifindex,
        ifname: String::from_utf8_lossy(&ev.ifname[..name_len]).into_owned(),
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
        stack: ev.stack[..stack_len].to_vec(),
        rule: None,
        icmp,
        bytes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ev: &Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain old data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        }
        .to_vec()
    }

    fn sample() -> Event {
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.ts_ns = 42;
        ev.skb = 0xffff_8880_0000_1000;
        ev.kind = EventKind::Drop as u8;
        ev.hook = HOOK_NONE;
        ev.ip_version = 4;
        ev.proto = 6;
        ev.saddr[..4].copy_from_slice(&[192, 0, 2, 9]);
        ev.daddr[..4].copy_from_slice(&[192, 0, 2, 25]);
        ev.sport = 40000;
        ev.dport = 8092;
        ev.ifname[..4].copy_from_slice(b"eth0");
        ev.reason = 12;
        ev.stack_len = 2;
        ev.stack[0] = 1;
        ev.stack[1] = 2;
        ev
    }

    #[test]
    fn decodes_a_drop() {
        let hop = decode(&raw(&sample())).expect("decodes");
        assert_eq!(hop.kind, HopKind::Drop);
        assert_eq!(hop.ifname, "eth0");
        assert_eq!(hop.hook, None);
        assert_eq!(hop.stack, vec![1, 2]);
        let t = hop.tuple.expect("has a tuple");
        assert_eq!(t.saddr.to_string(), "192.0.2.9");
        assert_eq!(t.daddr.to_string(), "192.0.2.25");
        assert_eq!(
            (t.sport, t.dport, t.proto_name().as_str()),
            (40000, 8092, "tcp")
        );
    }

    #[test]
    fn decodes_ipv6_and_nf_hook() {
        let mut ev = sample();
        ev.kind = EventKind::NfHook as u8;
        ev.hook = 2;
        ev.verdict = verdict::ACCEPT;
        ev.ip_version = 6;
        ev.saddr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let hop = decode(&raw(&ev)).expect("decodes");
        assert_eq!(hop.hook, Some(Hook::Forward));
        assert_eq!(hop.verdict, Some(Verdict::Accept));
        assert_eq!(hop.tuple.expect("tuple").saddr.to_string(), "2001:db8::1");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let bytes = raw(&sample());
        assert!(matches!(
            decode(&bytes[..100]),
            Err(DecodeError::Short { .. })
        ));
        let mut ev = sample();
        ev.kind = 99;
        assert_eq!(decode(&raw(&ev)), Err(DecodeError::UnknownKind(99)));
        let mut ev = sample();
        ev.stack_len = 200;
        assert_eq!(
            decode(&raw(&ev)).expect("decodes").stack.len(),
            ev.stack.len()
        );
        let mut ev = sample();
        ev.ip_version = 0;
        assert_eq!(decode(&raw(&ev)).expect("decodes").tuple, None);
    }
}

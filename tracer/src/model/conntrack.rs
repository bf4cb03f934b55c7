//! A packet's conntrack entry as the kernel held it at one hop: its state
//! for this packet, its status, and the two directions' tuples, from which
//! the NAT mapping follows.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer};

use super::Tuple;

/// `enum ip_conntrack_info`: what the entry says of this packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtInfo {
    Established,
    Related,
    New,
    EstablishedReply,
    RelatedReply,
    /// `notrack`: conntrack was told to leave the packet alone.
    Untracked,
    Other(u8),
}

impl CtInfo {
    pub fn from_raw(v: u8) -> Self {
        match v {
            0 => Self::Established,
            1 => Self::Related,
            2 => Self::New,
            3 => Self::EstablishedReply,
            4 => Self::RelatedReply,
            7 => Self::Untracked,
            v => Self::Other(v),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Related => "related",
            Self::New => "new",
            Self::EstablishedReply => "established_reply",
            Self::RelatedReply => "related_reply",
            Self::Untracked => "untracked",
            Self::Other(_) => "unknown",
        }
    }

    /// The packet goes in the reply direction of its entry.
    pub fn is_reply(&self) -> bool {
        matches!(self, Self::EstablishedReply | Self::RelatedReply)
    }
}

/// `enum ip_conntrack_status` bits, by name.
pub const STATUS_BITS: &[(u32, &str)] = &[
    (0, "expected"),
    (1, "seen_reply"),
    (2, "assured"),
    (3, "confirmed"),
    (4, "src_nat"),
    (5, "dst_nat"),
    (6, "seq_adjust"),
    (7, "src_nat_done"),
    (8, "dst_nat_done"),
    (9, "dying"),
    (10, "fixed_timeout"),
    (11, "template"),
    (13, "helper"),
    (14, "offload"),
    (15, "hw_offload"),
];

const SEEN_REPLY: u32 = 1 << 1;
const CONFIRMED: u32 = 1 << 3;
const SRC_NAT: u32 = 1 << 4;
const DST_NAT: u32 = 1 << 5;
const OFFLOAD: u32 = 1 << 14;

/// `enum tcp_conntrack`, by value.
const TCP_STATES: &[&str] = &[
    "none",
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait",
    "close_wait",
    "last_ack",
    "time_wait",
    "close",
    "syn_sent2",
];

/// The entry at one hop; `entry` is `None` for a packet without one
/// (`notrack`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conntrack {
    pub info: CtInfo,
    pub entry: Option<CtEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub status: u32,
    pub tcp_state: u8,
    pub mark: u32,
    pub zone: u16,
    pub original: Tuple,
    pub reply: Tuple,
}

/// An address and port one side of a NAT mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One rewrite the entry applies to its original direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    pub from: Endpoint,
    pub to: Endpoint,
}

impl CtEntry {
    pub fn status_names(&self) -> Vec<&'static str> {
        STATUS_BITS
            .iter()
            .filter(|(bit, _)| self.status & (1 << bit) != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    pub fn tcp_state_name(&self) -> Option<&'static str> {
        (self.original.proto == 6)
            .then(|| TCP_STATES.get(self.tcp_state as usize).copied())
            .flatten()
    }

    pub fn confirmed(&self) -> bool {
        self.status & CONFIRMED != 0
    }

    pub fn seen_reply(&self) -> bool {
        self.status & SEEN_REPLY != 0
    }

    pub fn offloaded(&self) -> bool {
        self.status & OFFLOAD != 0
    }

    /// Whether any NAT was set up for the entry (decided at its first packet).
    pub fn natted(&self) -> bool {
        self.status & (SRC_NAT | DST_NAT) != 0
    }

    /// Destination NAT: where the original direction was sent, and where it goes.
    pub fn dnat(&self) -> Option<Mapping> {
        let from = Endpoint {
            addr: self.original.daddr,
            port: self.original.dport,
        };
        let to = Endpoint {
            addr: self.reply.saddr,
            port: self.reply.sport,
        };
        (self.status & DST_NAT != 0 && from != to).then_some(Mapping { from, to })
    }

    /// Source NAT: the original direction's source, and what it becomes.
    pub fn snat(&self) -> Option<Mapping> {
        let from = Endpoint {
            addr: self.original.saddr,
            port: self.original.sport,
        };
        let to = Endpoint {
            addr: self.reply.daddr,
            port: self.reply.dport,
        };
        (self.status & SRC_NAT != 0 && from != to).then_some(Mapping { from, to })
    }
}

/// Decodes a raw `struct nf_conntrack_tuple` (see
/// [`tracer_common::CT_TUPLE_LEN`]); `None` for families other than IPv4 and IPv6.
pub fn decode_tuple(raw: &[u8; tracer_common::CT_TUPLE_LEN]) -> Option<Tuple> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let l3num = u16::from_ne_bytes([raw[18], raw[19]]);
    let addr = |at: usize| -> Option<IpAddr> {
        let b: [u8; 16] = raw[at..at + 16].try_into().ok()?;
        match l3num {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(b))),
            _ => None,
        }
    };
    let proto = raw[38];
    // ICMP's id and type/code sit where ports do: not ports.
    let ports = matches!(proto, 6 | 17 | 132 | 136 | 33);
    let port = |at: usize| {
        if ports {
            u16::from_be_bytes([raw[at], raw[at + 1]])
        } else {
            0
        }
    };
    Some(Tuple {
        saddr: addr(0)?,
        daddr: addr(20)?,
        sport: port(16),
        dport: port(36),
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> [u8; 40] {
        let mut r = [0u8; 40];
        r[..4].copy_from_slice(&src);
        r[16..18].copy_from_slice(&sport.to_be_bytes());
        r[18..20].copy_from_slice(&2u16.to_ne_bytes());
        r[20..24].copy_from_slice(&dst);
        r[36..38].copy_from_slice(&dport.to_be_bytes());
        r[38] = proto;
        r
    }

    #[test]
    fn a_dnat_entry_maps_the_published_address_to_the_backend() {
        let e = CtEntry {
            status: CONFIRMED | DST_NAT | SEEN_REPLY,
            tcp_state: 3,
            mark: 0,
            zone: 0,
            original: decode_tuple(&raw([198, 51, 100, 9], 40000, [203, 0, 113, 1], 8092, 6))
                .expect("a tuple"),
            reply: decode_tuple(&raw([192, 0, 2, 2], 80, [198, 51, 100, 9], 40000, 6))
                .expect("a tuple"),
        };
        let m = e.dnat().expect("a dnat mapping");
        assert_eq!(m.from.to_string(), "203.0.113.1:8092");
        assert_eq!(m.to.to_string(), "192.0.2.2:80");
        assert_eq!(e.snat(), None);
        assert_eq!(e.tcp_state_name(), Some("established"));
        assert_eq!(e.status_names(), vec!["seen_reply", "confirmed", "dst_nat"]);
    }

    #[test]
    fn other_families_are_not_decoded_and_icmp_has_no_ports() {
        let mut r = raw([192, 0, 2, 1], 7, [192, 0, 2, 2], 0x0800, 1);
        assert_eq!(decode_tuple(&r).map(|t| (t.sport, t.dport)), Some((0, 0)));
        r[18..20].copy_from_slice(&7u16.to_ne_bytes());
        assert_eq!(decode_tuple(&r), None);
    }
}

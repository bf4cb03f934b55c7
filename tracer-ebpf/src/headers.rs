//! Reading the IP and transport headers of an `sk_buff`, and matching them
//! against the configured filters.
use crate::probe;
use tracer_common::{addr_words, filter_flags, icmp, Config, Filter, Quoted, Tracked, MAX_FILTERS};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Where the network header starts at a given hook.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3At {
    /// On receive, the link-layer header was already pulled: `skb->data`.
    Data,
    /// Elsewhere `skb->network_header` is set and current.
    NetworkHeader,
}

#[derive(Clone, Copy, Default)]
pub struct Headers {
    pub ip_version: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    pub ip_id: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub quoted: Quoted,
}

#[inline(always)]
unsafe fn rd<T>(addr: u64) -> T {
    unsafe { probe::read(addr) }
}

/// The address of the network header, 0 when there is none.
#[inline(always)]
pub unsafe fn l3_addr(cfg: &Config, skb: u64, at: L3At) -> u64 {
    let o = &cfg.offsets;
    match at {
        L3At::Data => unsafe { rd::<u64>(skb + o.skb_data as u64) },
        L3At::NetworkHeader => {
            let nh = unsafe { rd::<u16>(skb + o.skb_network_header as u64) };
            if nh == 0xffff {
                return 0;
            }
            let head = unsafe { rd::<u64>(skb + o.skb_head as u64) };
            head + nh as u64
        }
    }
}

/// Fills `h` (in a map, off the small BPF stack) from the `sk_buff`.
#[inline(always)]
pub unsafe fn read_headers(cfg: &Config, skb: u64, at: L3At, h: &mut Headers) {
    let o = &cfg.offsets;
    *h = Headers::default();
    let protocol = u16::from_be(unsafe { rd::<u16>(skb + o.skb_protocol as u64) });
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return;
    }
    let l3 = unsafe { l3_addr(cfg, skb, at) };
    if l3 == 0 {
        return;
    }
    let first = unsafe { rd::<u8>(l3) };
    let l4;
    match first >> 4 {
        4 => {
            let mut ip = [0u8; 20];
            unsafe { probe::read_into(l3, &mut ip) };
            h.ip_version = 4;
            h.proto = ip[9];
            h.ip_id = u16::from_be_bytes([ip[4], ip[5]]);
            h.saddr[..4].copy_from_slice(&ip[12..16]);
            h.daddr[..4].copy_from_slice(&ip[16..20]);
            let frag_off = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            if frag_off != 0 {
                return;
            }
            l4 = l3 + ((first & 0x0f) as u64) * 4;
        }
        6 => {
            h.ip_version = 6;
            unsafe {
                h.proto = rd::<u8>(l3 + 6);
                probe::read_into(l3 + 8, &mut h.saddr);
                probe::read_into(l3 + 24, &mut h.daddr);
            }
            l4 = l3 + 40;
        }
        _ => return,
    }
    match h.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => {
            let mut l4h = [0u8; 14];
            unsafe { probe::read_into(l4, &mut l4h) };
            {
                h.sport = u16::from_be_bytes([l4h[0], l4h[1]]);
                h.dport = u16::from_be_bytes([l4h[2], l4h[3]]);
                if h.proto == IPPROTO_TCP {
                    h.tcp_flags = l4h[13];
                }
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => unsafe { read_quoted(l4, h) },
        _ => {}
    }
}

/// For an ICMP error, the type, code and the flow of the packet it quotes
/// (its IP header and first 8 bytes); other ICMP messages are left as they are.
#[inline(always)]
unsafe fn read_quoted(l4: u64, h: &mut Headers) {
    let mut icmph = [0u8; 2];
    unsafe { probe::read_into(l4, &mut icmph) };
    if !icmp::is_error(h.proto, icmph[0]) {
        return;
    }
    h.icmp_type = icmph[0];
    h.icmp_code = icmph[1];
    let inner = l4 + 8;
    let first = unsafe { rd::<u8>(inner) };
    let q = &mut h.quoted;
    let ports_at = match (h.ip_version, first >> 4) {
        (4, 4) => unsafe {
            q.proto = rd::<u8>(inner + 9);
            probe::read_into(inner + 12, &mut q.saddr[..4]);
            probe::read_into(inner + 16, &mut q.daddr[..4]);
            inner + ((first & 0x0f) as u64) * 4
        },
        (6, 6) => unsafe {
            q.proto = rd::<u8>(inner + 6);
            probe::read_into(inner + 8, &mut q.saddr);
            probe::read_into(inner + 24, &mut q.daddr);
            inner + 40
        },
        _ => return,
    };
    if matches!(q.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE) {
        let ports = unsafe { rd::<[u8; 4]>(ports_at) };
        q.sport = u16::from_be_bytes([ports[0], ports[1]]);
        q.dport = u16::from_be_bytes([ports[2], ports[3]]);
    }
}

#[inline(always)]
fn within(addr: &[u8; 16], net: &[u64; 2], mask: &[u64; 2]) -> bool {
    let a = addr_words(addr);
    (a[0] & mask[0]) == net[0] && (a[1] & mask[1]) == net[1]
}

/// A flow to match, borrowed from [`Headers`] (its own, or the one an ICMP
/// error quotes) so nothing is copied on the BPF stack.
#[derive(Clone, Copy)]
struct Flow<'a> {
    ip_version: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    saddr: &'a [u8; 16],
    daddr: &'a [u8; 16],
}

impl Flow<'_> {
    #[inline(always)]
    fn matches_one(&self, f: &Filter, reverse: bool) -> bool {
        let (saddr, daddr, sport, dport) = if reverse {
            (self.daddr, self.saddr, self.dport, self.sport)
        } else {
            (self.saddr, self.daddr, self.sport, self.dport)
        };
        if f.flags & filter_flags::PROTO != 0 && self.proto != f.proto {
            return false;
        }
        if f.flags & (filter_flags::SRC | filter_flags::DST) != 0 && self.ip_version != f.ip_version
        {
            return false;
        }
        if f.flags & filter_flags::SRC != 0 && !within(saddr, &f.saddr, &f.smask) {
            return false;
        }
        if f.flags & filter_flags::DST != 0 && !within(daddr, &f.daddr, &f.dmask) {
            return false;
        }
        if f.flags & filter_flags::SPORT != 0 && sport != f.sport {
            return false;
        }
        if f.flags & filter_flags::DPORT != 0 && dport != f.dport {
            return false;
        }
        true
    }
}

impl Headers {
    /// Whether these headers belong to another packet than the one last seen
    /// in `t` (the `sk_buff` was freed without a tracepoint and reused): one
    /// going the other way, of another protocol, or an IPv4 packet with
    /// another identification. NAT does none of these.
    #[inline(always)]
    pub fn is_other_packet(&self, t: &Tracked) -> bool {
        if t.proto == 0 {
            return false;
        }
        if self.proto != t.proto {
            return true;
        }
        if self.ip_version == 4 && t.ip_version == 4 && self.ip_id != t.ip_id {
            return true;
        }
        let swapped_addrs =
            self.saddr == t.daddr && self.daddr == t.saddr && self.saddr != self.daddr;
        let swapped_ports = self.sport != 0
            && self.sport != self.dport
            && self.sport == t.dport
            && self.dport == t.sport;
        swapped_addrs || swapped_ports
    }

    #[inline(always)]
    pub fn remember_in(&self, t: &mut Tracked) {
        t.proto = self.proto;
        t.ip_id = self.ip_id;
        t.ip_version = self.ip_version;
        t.sport = self.sport;
        t.dport = self.dport;
        t.saddr = self.saddr;
        t.daddr = self.daddr;
    }

    #[inline(always)]
    fn flow(&self) -> Flow<'_> {
        Flow {
            ip_version: self.ip_version,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
            saddr: &self.saddr,
            daddr: &self.daddr,
        }
    }

    /// The flow an ICMP error quotes, in the direction of the packet that
    /// caused it.
    #[inline(always)]
    fn quoted_flow(&self) -> Flow<'_> {
        Flow {
            ip_version: self.ip_version,
            proto: self.quoted.proto,
            sport: self.quoted.sport,
            dport: self.quoted.dport,
            saddr: &self.quoted.saddr,
            daddr: &self.quoted.daddr,
        }
    }

    /// Index of the first filter this packet matches. An ICMP error answers
    /// the flow it quotes, so it matches where replies are followed and the
    /// quoted packet matches.
    #[inline(always)]
    pub fn matches(&self, cfg: &Config) -> Option<u32> {
        if self.ip_version == 0 {
            return None;
        }
        let mut i = 0usize;
        while i < MAX_FILTERS {
            if (i as u32) >= cfg.n_filters {
                break;
            }
            let f = &cfg.filters[i];
            let bidir = f.flags & filter_flags::BIDIR != 0;
            let own = self.flow();
            if own.matches_one(f, false) || (bidir && own.matches_one(f, true)) {
                return Some(i as u32);
            }
            if bidir && self.quoted.proto != 0 {
                let q = self.quoted_flow();
                if q.matches_one(f, false) || q.matches_one(f, true) {
                    return Some(i as u32);
                }
            }
            i += 1;
        }
        None
    }
}

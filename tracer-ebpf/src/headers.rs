//! Reading the IP and transport headers of an `sk_buff`, and matching them
//! against the configured filters.
use crate::{probe, skb};
use tracer_common::{has_ports, icmp, ports, Config, FlowFields, Quoted, Tracked};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_TCP: u8 = 6;

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
    /// [`ports`]: whether `sport` and `dport` were read.
    pub ports: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub quoted: Quoted,
    /// The fields the filter reads, own and quoted, kept here in map memory.
    view: FlowFields,
    quoted_view: FlowFields,
}

#[inline(always)]
unsafe fn rd<T>(addr: u64) -> T {
    unsafe { probe::read(addr) }
}

/// The address of the network header, 0 when there is none. `BTF`: `skb`
/// is a pointer the verifier knows as `struct sk_buff *`.
#[inline(always)]
pub unsafe fn l3_addr<const BTF: bool>(cfg: &Config, skb: u64, at: L3At) -> u64 {
    let o = &cfg.offsets;
    match at {
        L3At::Data => unsafe { skb::member::<u64, BTF>(skb, &skb::DATA, o.skb_data) },
        L3At::NetworkHeader => {
            let nh =
                unsafe { skb::member::<u16, BTF>(skb, &skb::NETWORK_HEADER, o.skb_network_header) };
            if nh == 0xffff {
                return 0;
            }
            let head = unsafe { skb::member::<u64, BTF>(skb, &skb::HEAD, o.skb_head) };
            if head == 0 {
                return 0;
            }
            head + nh as u64
        }
    }
}

/// Where the network header of an IPv4 or IPv6 packet is, 0 for other
/// packets and when there is none.
#[inline(always)]
unsafe fn l3_of<const BTF: bool>(cfg: &Config, skb: u64, at: L3At) -> u64 {
    let o = &cfg.offsets;
    let protocol =
        u16::from_be(unsafe { skb::member::<u16, BTF>(skb, &skb::PROTOCOL, o.skb_protocol) });
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return 0;
    }
    unsafe { l3_addr::<BTF>(cfg, skb, at) }
}

/// Whether the packet could match a filter, judged from its IP header alone
/// (addresses, version, protocol): for the packets a filter doesn't name,
/// this is all that is read. ICMP errors answer to the flow they quote, and
/// ports need the transport header: both are left to [`Headers::matches`].
#[inline(always)]
pub unsafe fn could_match<const BTF: bool>(cfg: &Config, skb: u64, at: L3At) -> bool {
    let l3 = unsafe { l3_of::<BTF>(cfg, skb, at) };
    if l3 == 0 {
        return false;
    }
    let mut ip = [0u8; 20];
    unsafe { probe::read_into(l3, &mut ip) };
    let version = ip[0] >> 4;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    let proto = match version {
        4 => {
            saddr[..4].copy_from_slice(&ip[12..16]);
            daddr[..4].copy_from_slice(&ip[16..20]);
            ip[9]
        }
        6 => {
            unsafe {
                probe::read_into(l3 + 8, &mut saddr);
                probe::read_into(l3 + 24, &mut daddr);
            }
            ip[6]
        }
        _ => return false,
    };
    if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
        return true;
    }
    let Some(view) = crate::maps::PROBE_VIEW.get_ptr_mut(0) else {
        return true;
    };
    let view = unsafe { &mut *view };
    *view = FlowFields {
        ip_version: version,
        proto,
        ports: ports::UNKNOWN,
        _pad: 0,
        sport: 0,
        dport: 0,
        saddr,
        daddr,
    };
    let Some(scratch) = crate::maps::MATCH_SCRATCH.get_ptr_mut(0) else {
        return true;
    };
    cfg.filter
        .first_match(crate::maps::filter_shape(), view, view, false, unsafe {
            &mut *scratch
        })
        .is_some()
}

/// Fills `h` (in a map, off the small BPF stack) from the `sk_buff`.
#[inline(always)]
pub unsafe fn read_headers<const BTF: bool>(cfg: &Config, skb: u64, at: L3At, h: &mut Headers) {
    *h = Headers::default();
    unsafe { read_fields::<BTF>(cfg, skb, at, h) };
    h.view = h.flow();
    h.quoted_view = h.quoted_flow();
}

#[inline(always)]
unsafe fn read_fields<const BTF: bool>(cfg: &Config, skb: u64, at: L3At, h: &mut Headers) {
    let l3 = unsafe { l3_of::<BTF>(cfg, skb, at) };
    if l3 == 0 {
        return;
    }
    let mut ip = [0u8; 20];
    unsafe { probe::read_into(l3, &mut ip) };
    let first = ip[0];
    let l4;
    match first >> 4 {
        4 => {
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
            h.proto = ip[6];
            unsafe {
                probe::read_into(l3 + 8, &mut h.saddr);
                probe::read_into(l3 + 24, &mut h.daddr);
            }
            l4 = l3 + 40;
        }
        _ => return,
    }
    match h.proto {
        p if has_ports(p) => {
            let mut l4h = [0u8; 14];
            unsafe { probe::read_into(l4, &mut l4h) };
            {
                h.sport = u16::from_be_bytes([l4h[0], l4h[1]]);
                h.dport = u16::from_be_bytes([l4h[2], l4h[3]]);
                h.ports = ports::KNOWN;
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
    if has_ports(q.proto) {
        let ports = unsafe { rd::<[u8; 4]>(ports_at) };
        q.sport = u16::from_be_bytes([ports[0], ports[1]]);
        q.dport = u16::from_be_bytes([ports[2], ports[3]]);
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
    fn flow(&self) -> FlowFields {
        FlowFields {
            ip_version: self.ip_version,
            proto: self.proto,
            ports: self.ports,
            _pad: 0,
            sport: self.sport,
            dport: self.dport,
            saddr: self.saddr,
            daddr: self.daddr,
        }
    }

    /// The flow an ICMP error quotes, in the direction of the packet that
    /// caused it.
    #[inline(always)]
    fn quoted_flow(&self) -> FlowFields {
        let q = &self.quoted;
        FlowFields {
            ip_version: self.ip_version,
            proto: q.proto,
            ports: if has_ports(q.proto) {
                ports::KNOWN
            } else {
                ports::NONE
            },
            _pad: 0,
            sport: q.sport,
            dport: q.dport,
            saddr: q.saddr,
            daddr: q.daddr,
        }
    }

    /// The flow of the first term this packet matches. An ICMP error answers
    /// the flow it quotes, so it matches where replies are followed and the
    /// quoted packet matches.
    #[inline(always)]
    pub fn matches(&self, cfg: &Config) -> Option<u32> {
        if self.ip_version == 0 {
            return None;
        }

        let scratch = crate::maps::MATCH_SCRATCH.get_ptr_mut(0)?;
        cfg.filter
            .first_match(
                crate::maps::filter_shape(),
                &self.view,
                &self.quoted_view,
                self.quoted.proto != 0,
                unsafe { &mut *scratch },
            )
    }
}

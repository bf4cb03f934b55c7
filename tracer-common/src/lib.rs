//! The one layout shared by pathtrace's kernel programs and its userspace.
//!
//! Every struct is `#[repr(C)]`, has no `bool` and no implicit padding, and has
//! its size pinned by a compile-time assertion so both sides agree.
#![no_std]

use core::mem::size_of;

mod filter;
pub mod names;
pub use filter::*;

/// Where in the kernel an event was recorded.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `net:netif_receive_skb`: the packet arrived on a device.
    Rx = 1,
    /// `net:net_dev_queue` / `net:net_dev_start_xmit`: the packet leaves through a device.
    Tx = 2,
    /// `nf_hook_slow` returned: one netfilter hook decided.
    NfHook = 3,
    /// `kfree_skb`: the kernel dropped the packet.
    Drop = 4,
    /// `consume_skb`: the kernel freed the packet after using it.
    Consume = 5,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Rx,
            2 => Self::Tx,
            3 => Self::NfHook,
            4 => Self::Drop,
            5 => Self::Consume,
            _ => return None,
        })
    }
}

/// Netfilter verdicts as `nf_hook_slow` reports them.
pub mod verdict {
    pub const NONE: u8 = 0;
    pub const ACCEPT: u8 = 1;
    pub const DROP: u8 = 2;
    pub const STOLEN: u8 = 3;
}

/// Sentinel for "no netfilter hook known".
pub const HOOK_NONE: u8 = 0xff;
/// Frames of kernel stack captured with each drop, for hook inference.
pub const STACK_DEPTH: usize = 24;
pub const IFNAMSIZ: usize = 16;

/// Kinds of ring records. Every record starts with its kind as a `u32`,
/// and each kind has a size of its own, so a reader checks both before it
/// decodes.
pub mod record_kind {
    /// An [`Event`](super::Event): one hop.
    pub const HOP: u32 = 0x5048_4f50;
    /// A [`DropEvent`](super::DropEvent): a drop and the kernel stack that dropped.
    pub const DROP: u32 = 0x5044_5250;
    /// A [`PacketBytes`](super::PacketBytes) record (`--pcap`).
    pub const PACKET_BYTES: u32 = 0x5042_5954;
    /// A [`ConnTrack`](super::ConnTrack) record: the packet's conntrack entry.
    pub const CONNTRACK: u32 = 0x5043_5453;
}

/// One packet seen at one point in the kernel: a small fixed record. The
/// interface is named by userspace from (`netns`, `ifindex`); only drops
/// carry a kernel stack ([`DropEvent`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// [`record_kind::HOP`], or [`record_kind::DROP`] at the head of a [`DropEvent`].
    pub record: u32,
    pub netns: u32,
    pub ts_ns: u64,
    /// `sk_buff` address: identity of the packet while it lives.
    pub skb: u64,
    /// Time the packet was first matched; with `skb` it names one packet.
    pub track_id: u64,
    /// Drop/consume location (a kernel text address), 0 when unknown.
    pub location: u64,
    pub ifindex: u32,
    /// Raw `enum skb_drop_reason` value (0 when unknown).
    pub reason: u32,
    /// `nf_hook_slow` return value, as signed.
    pub retval: i32,
    pub len: u32,
    pub kind: u8,
    /// `NF_INET_*` hook number, or [`HOOK_NONE`].
    pub hook: u8,
    /// One of [`verdict`].
    pub verdict: u8,
    /// 4 or 6; 0 when the packet had no IP header we could read.
    pub ip_version: u8,
    pub proto: u8,
    /// `NFPROTO_*` of an `nf_hook` event.
    pub nf_family: u8,
    /// Index of the filter that first matched this packet.
    pub filter: u8,
    pub tcp_flags: u8,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 identification field (0 for IPv6): tells apart packets of one flow.
    pub ip_id: u16,
    /// ICMP or ICMPv6 type of an error message (then [`Quoted`] is filled).
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The packet an ICMP error answers, from the header it quotes.
    pub quoted: Quoted,
}
const _: () = assert!(size_of::<Event>() == 144);

/// A drop: its [`Event`] and the kernel stack it happened on, for hook
/// inference.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DropEvent {
    pub event: Event,
    /// Number of valid frames in `stack`.
    pub stack_len: u32,
    pub _pad: u32,
    pub stack: [u64; STACK_DEPTH],
}
const _: () = assert!(size_of::<DropEvent>() == 144 + 8 + 8 * STACK_DEPTH);

/// The IP header and first 8 bytes an ICMP error quotes: the flow it belongs
/// to. `proto` is 0 when the packet is not an ICMP error.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quoted {
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<Quoted>() == 40);

/// ICMP and ICMPv6 error types, whose body quotes the packet they answer.
pub mod icmp {
    pub const V4_DEST_UNREACH: u8 = 3;
    pub const V4_TIME_EXCEEDED: u8 = 11;
    pub const V4_PARAMETER_PROBLEM: u8 = 12;
    pub const V6_DEST_UNREACH: u8 = 1;
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    pub const V6_TIME_EXCEEDED: u8 = 3;
    pub const V6_PARAMETER_PROBLEM: u8 = 4;

    /// Whether `ty` is an error type for `proto` (1: ICMP, 58: ICMPv6).
    #[inline(always)]
    pub fn is_error(proto: u8, ty: u8) -> bool {
        match proto {
            1 => matches!(
                ty,
                V4_DEST_UNREACH | V4_TIME_EXCEEDED | V4_PARAMETER_PROBLEM
            ),
            58 => matches!(
                ty,
                V6_DEST_UNREACH | V6_PACKET_TOO_BIG | V6_TIME_EXCEEDED | V6_PARAMETER_PROBLEM
            ),
            _ => false,
        }
    }
}

/// Struct member byte offsets, read from the running kernel's BTF at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub skb_protocol: u32,
    pub skb_network_header: u32,
    pub skb_mac_header: u32,
    pub dev_name: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub sk_net: u32,
    pub hook_state_hook: u32,
    pub hook_state_pf: u32,
    pub hook_state_in: u32,
    pub hook_state_out: u32,
    pub hook_state_net: u32,
    /// Size in bytes of `nf_hook_state.hook` (1 from 5.14, 4 before).
    pub hook_state_hook_size: u32,
    /// `sk_buff.tail`: the end of the linear data, as an offset from `head`
    /// (64-bit kernels).
    pub skb_tail: u32,
    /// The conntrack members below are 0 when the kernel has no conntrack
    /// (or its module's BTF was not loaded at start): no [`ConnTrack`] records.
    /// `sk_buff._nfct`: the entry's address, with its `ip_conntrack_info` in the low 3 bits.
    pub skb_nfct: u32,
    pub ct_status: u32,
    /// `nf_conn.tuplehash[0].tuple`; the reply tuple is `ct_tuple_stride` further.
    pub ct_tuple: u32,
    pub ct_tuple_stride: u32,
    /// `nf_conn.mark`, 0 without `CONFIG_NF_CONNTRACK_MARK`.
    pub ct_mark: u32,
    /// `nf_conn.proto.tcp.state`.
    pub ct_tcp_state: u32,
    /// `nf_conn.zone.id`, 0 without `CONFIG_NF_CONNTRACK_ZONES`.
    pub ct_zone: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Offsets>() == 112);

/// Everything the kernel programs read from the `CONFIG` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    pub offsets: Offsets,
    pub filter: Filter,
    /// [`config_flags`].
    pub flags: u32,
}

pub mod config_flags {
    /// Count drops in the per-CPU `DROP_COUNTS` map.
    pub const COUNT_DROPS: u32 = 1 << 0;
    /// With [`COUNT_DROPS`]: count only, write no drop events.
    pub const COUNT_ONLY: u32 = 1 << 1;
    /// Before each rx, tx and drop event of a followed packet, write its
    /// first bytes as a [`PacketBytes`](super::PacketBytes) record (`--pcap`).
    pub const CAPTURE_BYTES: u32 = 1 << 2;
    /// Follow every drop, whatever the filter (`pathtrace drops`).
    pub const ALL_DROPS: u32 = 1 << 3;
    /// Write a followed packet's conntrack entry where it changes
    /// ([`ConnTrack`](super::ConnTrack) records): traces, not `drops`.
    pub const CONNTRACK: u32 = 1 << 4;
}

/// Bytes of a followed packet copied per hop, from its network header.
pub const SNAP_LEN: usize = 128;

/// The first bytes of a followed packet at one hop. It stands on its own:
/// `skb` and `ts_ns` equal those of the hop's [`Event`], which the kernel
/// writes right after it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketBytes {
    /// [`record_kind::PACKET_BYTES`].
    pub kind: u32,
    /// Valid bytes in `data`: at most `orig_len`, [`SNAP_LEN`] and the
    /// linear part of the `sk_buff` from the network header.
    pub cap_len: u32,
    pub ts_ns: u64,
    pub skb: u64,
    /// The packet's length from its network header.
    pub orig_len: u32,
    pub _pad: u32,
    pub data: [u8; SNAP_LEN],
}
const _: () = assert!(size_of::<PacketBytes>() == 32 + SNAP_LEN);
const _: () = assert!(size_of::<PacketBytes>() != size_of::<Event>());
const _: () = assert!(size_of::<PacketBytes>() != size_of::<DropEvent>());

/// Key of the per-CPU `DROP_COUNTS` map: one row of `pathtrace drops --top`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub location: u64,
    pub reason: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub _pad: u32,
    pub ifname: [u8; IFNAMSIZ],
}
const _: () = assert!(size_of::<DropKey>() == 40);
const _: () = assert!(size_of::<Config>() == size_of::<Offsets>() + size_of::<Filter>() + 8);

/// Value of the `TRACKED` map, keyed by `sk_buff` address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracked {
    pub track_id: u64,
    pub filter: u32,
    /// The headers at the last hop, to tell NAT from a reused `sk_buff`.
    pub proto: u8,
    pub _pad: [u8; 3],
    pub sport: u16,
    pub dport: u16,
    /// IPv4 identification (IPv6: 0): the same `sk_buff` carrying a new
    /// packet of the same flow changes it, NAT never does.
    pub ip_id: u16,
    pub ip_version: u8,
    pub _pad1: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The conntrack entry, its status and `ip_conntrack_info` when the last
    /// [`ConnTrack`] record was written: a record is written only on change.
    pub ct: u64,
    pub ct_status: u32,
    pub ctinfo: u8,
    pub _pad2: [u8; 3],
}
const _: () = assert!(size_of::<Tracked>() == 72);

/// `struct nf_conntrack_tuple` as the kernel lays it out (unchanged since
/// 2.6): source address, port/ICMP id, `l3num`; destination address,
/// port/ICMP type and code, `protonum`, `dir`.
pub const CT_TUPLE_LEN: usize = 40;

/// A followed packet's conntrack entry at one hop, written before the hop's
/// [`Event`] (same `skb` and `ts_ns`) when it changed since the last hop.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnTrack {
    /// [`record_kind::CONNTRACK`].
    pub kind: u32,
    /// `enum ip_conntrack_info`: 7 with no entry is `IP_CT_UNTRACKED`.
    pub ctinfo: u8,
    /// `enum tcp_conntrack` for TCP entries.
    pub tcp_state: u8,
    pub zone: u16,
    pub ts_ns: u64,
    pub skb: u64,
    /// Whether the packet has an entry at all (0: none).
    pub has_entry: u32,
    /// `nf_conn.status` (`enum ip_conntrack_status` bits).
    pub status: u32,
    pub mark: u32,
    pub _pad: u32,
    /// The original and reply direction's tuples, raw ([`CT_TUPLE_LEN`]).
    pub original: [u8; CT_TUPLE_LEN],
    pub reply: [u8; CT_TUPLE_LEN],
}
const _: () = assert!(size_of::<ConnTrack>() == 120);
const _: () = assert!(size_of::<ConnTrack>() != size_of::<Event>());
const _: () = assert!(size_of::<ConnTrack>() != size_of::<PacketBytes>());

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events that did not fit in the ring buffer.
    pub const LOST: u32 = 0;
    /// Events written to the ring buffer.
    pub const SENT: u32 = 1;
    /// Packets that started being tracked.
    pub const TRACKED: u32 = 2;
    /// Packets that stopped being tracked because they were freed (or their
    /// `sk_buff` was reused). Tracked − untracked − live entries = evicted.
    pub const UNTRACKED: u32 = 3;
    /// `nf_hook_slow` exits whose frame belonged to another `sk_buff` (the
    /// call was interleaved, not nested): that verdict is not reported.
    pub const NF_STACK_MISMATCH: u32 = 4;
    /// Per-CPU `nf_hook_slow` stacks that overflowed (a kretprobe missed)
    /// and were reset.
    pub const NF_STACK_RESET: u32 = 5;
    pub const COUNT: u32 = 6;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are repr(C), Copy, contain only integers and have no padding.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::DropEvent {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::Tracked {}
    unsafe impl aya::Pod for super::PacketBytes {}
    unsafe impl aya::Pod for super::ConnTrack {}
}

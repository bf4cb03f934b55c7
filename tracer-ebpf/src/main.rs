//! pathtrace's kernel programs.
//!
//! Every program funnels into [`record`]: it decides whether the `sk_buff` is
//! a packet we follow (already tracked, or matching a filter now), and if so
//! writes one [`Event`] to the ring buffer. Struct offsets come from userspace
//! (read from the running kernel's BTF), so nothing here assumes one kernel.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod conntrack;
mod headers;
mod maps;
mod names;
mod probe;
mod skb;

use aya_log_ebpf::debug;
use aya_ebpf::{
    helpers::{bpf_get_stack, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use tracer_common::{
    config_flags, counter, record_kind, verdict, Config, DropEvent, DropKey, Event,
    EventKind, PacketBytes, Tracked, HOOK_NONE, SNAP_LEN,
};

use crate::{
    headers::{could_match, l3_addr, read_headers, Headers, L3At},
    maps::{bump, live, live_add, CONFIG, EVENTS, NF_DEPTH, NF_STACK, SCRATCH, TRACKED},
};

/// What one program knows beyond the `sk_buff` itself.
#[derive(Clone, Copy)]
pub struct Extra {
    kind: EventKind,
    location: u64,
    reason: u32,
    hook: u8,
    nf_family: u8,
    verdict: u8,
    retval: i32,
    /// When the hop happened; 0 until [`record`] sets it (netfilter events:
    /// when the hook was entered).
    ts_ns: u64,
    /// For netfilter events: the device and namespace from `nf_hook_state`.
    state_dev: u64,
    state_net: u64,
}

impl Extra {
    const fn new(kind: EventKind) -> Self {
        Self {
            kind,
            location: 0,
            reason: 0,
            hook: HOOK_NONE,
            nf_family: 0,
            verdict: verdict::NONE,
            retval: 0,
            ts_ns: 0,
            state_dev: 0,
            state_net: 0,
        }
    }
}

/// Reads the `T` at `base + off` (a struct member); zero when it faults.
#[inline(always)]
unsafe fn read<T>(base: u64, off: u32) -> T {
    unsafe { probe::read(base + off as u64) }
}

#[inline(always)]
unsafe fn netns_of_net(cfg: &Config, net: u64) -> u32 {
    unsafe { read::<u32>(net, cfg.offsets.net_ns_inum) }
}

/// The packet's entry in `TRACKED`, when anything is tracked at all.
#[inline(always)]
fn tracked_entry(skb: u64) -> Option<*mut Tracked> {
    if !live() {
        return None;
    }
    TRACKED.get_ptr_mut(&skb)
}

/// Takes the packet out of `TRACKED`.
#[inline(always)]
fn untrack(skb: u64) {
    if TRACKED.remove(&skb).is_ok() {
        live_add(u64::MAX);
        bump(counter::UNTRACKED);
    }
}

/// Whether a packet not in `TRACKED` needs a closer look: every drop when
/// all drops are followed, else those a filter could match (judged from the
/// IP header alone). Most packets end here, before any map but `CONFIG`.
#[inline(always)]
unsafe fn worth_a_look<const BTF: bool>(cfg: &Config, skb: u64, at: L3At, drop: bool) -> bool {
    (drop && all_drops(cfg)) || unsafe { could_match::<BTF>(cfg, skb, at) }
}

#[inline(always)]
fn all_drops(cfg: &Config) -> bool {
    cfg.flags & config_flags::ALL_DROPS != 0
}

/// Follows the packet when `TRACKED` says so, or starts tracking it when a
/// filter matches. Returns `None` for packets we don't follow. Callers turn
/// away untracked packets that are not [`worth_a_look`] first.
#[inline(always)]
unsafe fn classify<const BTF: bool>(
    cfg: &Config,
    skb: u64,
    at: L3At,
    drop: bool,
    hdr: &mut Headers,
) -> Option<Tracked> {
    // Headers first, then the entry: one path through the header reader
    // for the verifier to walk, whether the packet is tracked or not.
    unsafe { read_headers::<BTF>(cfg, skb, at, hdr) };
    if let Some(t) = tracked_entry(skb) {
        let t = unsafe { &mut *t };
        if hdr.ip_version == 0 {
            return Some(*t);
        }
        if !hdr.is_other_packet(t) {
            hdr.remember_in(t);
            return Some(*t);
        }
        // The sk_buff was freed without a tracepoint and reused.
        untrack(skb);
    }
    let all_drops = drop && all_drops(cfg);
    let filter = match hdr.matches(cfg) {
        Some(i) => i,
        None if all_drops => 0,
        None => return None,
    };
    let mut tracked = Tracked {
        track_id: unsafe { bpf_ktime_get_ns() },
        filter,
        ..Tracked::default()
    };
    hdr.remember_in(&mut tracked);
    if !drop {
        live_add(1);
        let _ = TRACKED.insert(&skb, &tracked, 0);
        bump(counter::TRACKED);
    }
    Some(tracked)
}

/// The device a hop happened on, and its network namespace (from the
/// device, else from the socket).
#[inline(always)]
unsafe fn device_and_netns(cfg: &Config, skb: u64, extra: &Extra) -> (u64, u32) {
    let o = &cfg.offsets;
    unsafe {
        let dev = if extra.state_dev != 0 {
            extra.state_dev
        } else {
            read::<u64>(skb, o.skb_dev)
        };
        let mut netns = if extra.state_net != 0 {
            netns_of_net(cfg, extra.state_net)
        } else {
            0
        };
        if netns == 0 && dev != 0 {
            netns = netns_of_net(cfg, read::<u64>(dev, o.dev_nd_net));
        }
        if netns == 0 {
            let sk = read::<u64>(skb, o.skb_sk);
            if sk != 0 {
                netns = netns_of_net(cfg, read::<u64>(sk, o.sk_net));
            }
        }
        (dev, netns)
    }
}

/// What an event says about the packet and where it is, read from the live
/// `sk_buff`.
#[derive(Clone, Copy, Default)]
pub struct Snapshot {
    track_id: u64,
    filter: u32,
    hdr: Headers,
    netns: u32,
    ifindex: u32,
    len: u32,
    ifname: [u8; 16],
}

/// Fills `snap` (in a map) in place; `snap.hdr` is already read.
#[inline(always)]
unsafe fn snapshot(cfg: &Config, skb: u64, extra: &Extra, tracked: &Tracked, snap: &mut Snapshot) {
    let o = &cfg.offsets;
    let (dev, netns) = unsafe { device_and_netns(cfg, skb, extra) };
    snap.track_id = tracked.track_id;
    snap.filter = tracked.filter;
    snap.netns = netns;
    snap.ifindex = unsafe { read::<u32>(dev, o.dev_ifindex) };
    snap.len = unsafe { read::<u32>(skb, o.skb_len) };
    snap.ifname = [0; 16];
    // Events name no interface (userspace does, from the index); only the
    // drop counters keep the name in their key.
    if dev != 0 && cfg.flags & config_flags::COUNT_DROPS != 0 {
        unsafe { probe::read_into(dev + o.dev_name as u64, &mut snap.ifname) };
    }
}

/// Records a hop of `skb` when it is a packet we follow.
#[inline(always)]
unsafe fn record<C: EbpfContext>(ctx: &C, skb: u64, at: L3At, mut extra: Extra) -> u32 {
    let followed = tracked_entry(skb).is_some();
    // A free of a packet we never saw travel is not a path.
    if !followed && extra.kind == EventKind::Consume {
        return 0;
    }
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    let drop = extra.kind == EventKind::Drop;
    if !followed && !unsafe { worth_a_look::<true>(cfg, skb, at, drop) } {
        return 0;
    }
    let terminal = matches!(extra.kind, EventKind::Drop | EventKind::Consume);
    let Some(snap) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let snap = unsafe { &mut *snap };
    let found = if extra.kind == EventKind::Consume {
        // The last hop of a packet we follow: whatever the sk_buff holds
        // now, this free ends its path.
        unsafe { read_headers::<true>(cfg, skb, at, &mut snap.hdr) };
        tracked_entry(skb).map(|t| unsafe { *t })
    } else {
        unsafe { classify::<true>(cfg, skb, at, drop, &mut snap.hdr) }
    };
    let Some(tracked) = found else {
        return 0;
    };
    if terminal && followed {
        untrack(skb);
    }
    unsafe { snapshot(cfg, skb, &extra, &tracked, snap) };
    if extra.ts_ns == 0 {
        extra.ts_ns = unsafe { bpf_ktime_get_ns() };
    }
    if extra.kind != EventKind::Consume {
        unsafe { conntrack::note(cfg, skb, extra.ts_ns, &tracked) };
    }
    if cfg.flags & config_flags::CAPTURE_BYTES != 0
        && matches!(extra.kind, EventKind::Rx | EventKind::Tx | EventKind::Drop)
    {
        unsafe { capture(cfg, skb, at, snap.len, extra.ts_ns) };
    }
    unsafe { emit(ctx, cfg, skb, &extra, snap) }
}

/// Writes the first [`SNAP_LEN`] bytes of a followed packet, from its
/// network header, with its length from there (`len`: `skb->len`, which
/// counts from `skb->data`), as a record of its own tied to the hop's event
/// by `skb` and `ts_ns`. Only the linear part is copied: bytes in page
/// fragments (GRO, large sends) are left out, the length still counts them.
#[inline(always)]
unsafe fn capture(cfg: &Config, skb: u64, at: L3At, len: u32, ts_ns: u64) {
    let o = &cfg.offsets;
    let l3 = unsafe { l3_addr::<true>(cfg, skb, at) };
    if l3 == 0 {
        return;
    }
    let data = unsafe { read::<u64>(skb, o.skb_data) };
    let orig_len = if l3 >= data {
        len.saturating_sub((l3 - data) as u32)
    } else {
        len.saturating_add((data - l3) as u32)
    };
    let tail = unsafe { read::<u64>(skb, o.skb_head) + read::<u32>(skb, o.skb_tail) as u64 };
    let linear = if tail > l3 { tail - l3 } else { 0 };
    let cap_len = orig_len.min(SNAP_LEN as u32).min(linear.min(u32::MAX as u64) as u32);
    if cap_len == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<PacketBytes>(0) else {
        bump(counter::LOST);
        return;
    };
    let p = entry.as_mut_ptr();
    unsafe {
        (*p).kind = record_kind::PACKET_BYTES;
        (*p).cap_len = cap_len;
        (*p).ts_ns = ts_ns;
        (*p).skb = skb;
        (*p).orig_len = orig_len;
        (*p)._pad = 0;
        // The data area is followed by skb_shared_info inside the same
        // allocation, so a fixed-size read past a short packet stays inside
        // it; userspace keeps only `cap_len` bytes.
        probe::read_into(l3, &mut (*p).data);
    }
    entry.submit(0);
}

/// Counts a drop (for `drops --top`) and writes one event, from what
/// `snap` holds: nothing here reads the `sk_buff`, which may be freed.
#[inline(always)]
unsafe fn emit<C: EbpfContext>(ctx: &C, cfg: &Config, skb: u64, extra: &Extra, snap: &Snapshot) -> u32 {
    if extra.kind == EventKind::Drop && cfg.flags & config_flags::COUNT_DROPS != 0 {
        let key = DropKey {
            location: extra.location,
            reason: extra.reason,
            netns: snap.netns,
            ifindex: snap.ifindex,
            ifname: snap.ifname,
            ..DropKey::default()
        };
        maps::count_drop(&key);
        if cfg.flags & config_flags::COUNT_ONLY != 0 {
            return 0;
        }
    }
    let ok = if extra.kind == EventKind::Drop {
        match EVENTS.reserve::<DropEvent>(0) {
            Some(mut entry) => {
                let d = entry.as_mut_ptr();
                unsafe {
                    fill(&mut (*d).event, record_kind::DROP, skb, extra, snap);
                    (*d)._pad = 0;
                    (*d).stack_len = 0;
                    let n = bpf_get_stack(
                        ctx.as_ptr(),
                        (*d).stack.as_mut_ptr() as *mut _,
                        core::mem::size_of_val(&(*d).stack) as u32,
                        0,
                    );
                    if n > 0 {
                        (*d).stack_len = n as u32 / 8;
                    }
                }
                entry.submit(0);
                true
            }
            None => false,
        }
    } else {
        match EVENTS.reserve::<Event>(0) {
            Some(mut entry) => {
                unsafe { fill(&mut *entry.as_mut_ptr(), record_kind::HOP, skb, extra, snap) };
                entry.submit(0);
                true
            }
            None => false,
        }
    };
    if ok {
        bump(counter::SENT);
    } else {
        bump(counter::LOST);
        debug!(ctx, "ring buffer full: an event was lost");
    }
    0
}

/// Writes every field of `ev` (ring memory: nothing may be left unset).
#[inline(always)]
unsafe fn fill(ev: *mut Event, record: u32, skb: u64, extra: &Extra, snap: &Snapshot) {
    let hdr = &snap.hdr;
    unsafe {
        (*ev).record = record;
        (*ev).netns = snap.netns;
        // Set by `record` (netfilter events: when the hook was entered).
        (*ev).ts_ns = extra.ts_ns;
        (*ev).skb = skb;
        (*ev).track_id = snap.track_id;
        (*ev).location = extra.location;
        (*ev).ifindex = snap.ifindex;
        (*ev).reason = extra.reason;
        (*ev).retval = extra.retval;
        (*ev).len = snap.len;
        (*ev).kind = extra.kind as u8;
        (*ev).hook = extra.hook;
        (*ev).verdict = extra.verdict;
        (*ev).ip_version = hdr.ip_version;
        (*ev).proto = hdr.proto;
        (*ev).nf_family = extra.nf_family;
        (*ev).filter = snap.filter as u8;
        (*ev).tcp_flags = hdr.tcp_flags;
        (*ev).sport = hdr.sport;
        (*ev).dport = hdr.dport;
        (*ev).ip_id = hdr.ip_id;
        (*ev).icmp_type = hdr.icmp_type;
        (*ev).icmp_code = hdr.icmp_code;
        (*ev).saddr = hdr.saddr;
        (*ev).daddr = hdr.daddr;
        (*ev).quoted = hdr.quoted;
    }
}

// ---- tracepoint tier: device hops and frees -------------------------------

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: BtfTracePointContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    unsafe { record(&ctx, skb, L3At::Data, Extra::new(EventKind::Rx)) }
}

#[btf_tracepoint(function = "net_dev_queue")]
pub fn net_dev_queue(ctx: BtfTracePointContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    unsafe {
        record(
            &ctx,
            skb,
            L3At::NetworkHeader,
            Extra::new(EventKind::Tx),
        )
    }
}

#[inline(always)]
fn on_drop(ctx: &BtfTracePointContext, with_reason: bool) -> u32 {
    let skb: u64 = ctx.arg(0);
    let mut extra = Extra::new(EventKind::Drop);
    extra.location = ctx.arg(1);
    if with_reason {
        extra.reason = ctx.arg::<u64>(2) as u32;
    }
    unsafe { record(ctx, skb, L3At::NetworkHeader, extra) }
}

/// `kfree_skb(skb, location, reason, …)`: kernels from 5.17 (and 5.15.58).
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> u32 {
    on_drop(&ctx, true)
}

/// `kfree_skb(skb, location)` on kernels without drop reasons.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_noreason(ctx: BtfTracePointContext) -> u32 {
    on_drop(&ctx, false)
}

#[btf_tracepoint(function = "consume_skb")]
pub fn consume_skb(ctx: BtfTracePointContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    unsafe {
        record(
            &ctx,
            skb,
            L3At::NetworkHeader,
            Extra::new(EventKind::Consume),
        )
    }
}

// ---- nf_hook_slow tiers: fentry/fexit and kprobe/kretprobe ----------------

/// `nf_hook_slow` entered: push a frame on this CPU's stack. Calls nest
/// (br_netfilter runs the IPv4 hooks inside the bridge hook, on the same
/// `sk_buff`; a softirq can interrupt a hook in process context), and
/// kretprobe has no arguments, so the stack, not the `sk_buff` or the task,
/// pairs each exit with its entry. Everything the exit reports is read here:
/// after a DROP the `sk_buff` is freed.
#[inline(always)]
unsafe fn nf_enter<const BTF: bool>(skb: u64, state: u64) -> u32 {
    let Some(stack) = NF_STACK.get_ptr_mut(0) else {
        return 0;
    };
    let stack = unsafe { &mut *stack };
    let depth = stack.depth;
    // A lost kretprobe would leave a frame behind for good; start over.
    if depth >= NF_DEPTH as u64 {
        stack.depth = 0;
        bump(counter::NF_STACK_RESET);
        return 0;
    }
    stack.depth = depth + 1;
    let Some(frame) = stack.frames.get_mut(depth as usize & (NF_DEPTH - 1)) else {
        return 0;
    };
    frame.skb = skb;
    frame.followed = 0;
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    if tracked_entry(skb).is_none()
        && !unsafe { could_match::<BTF>(cfg, skb, L3At::NetworkHeader) }
    {
        return 0;
    }
    let Some(tracked) = (unsafe {
        classify::<BTF>(
            cfg,
            skb,
            L3At::NetworkHeader,
            false,
            &mut frame.snap.hdr,
        )
    }) else {
        return 0;
    };
    let o = &cfg.offsets;
    let mut extra = Extra::new(EventKind::NfHook);
    unsafe {
        extra.hook = if o.hook_state_hook_size == 1 {
            read::<u8>(state, o.hook_state_hook)
        } else {
            read::<u32>(state, o.hook_state_hook) as u8
        };
        extra.nf_family = read::<u8>(state, o.hook_state_pf);
        let indev = read::<u64>(state, o.hook_state_in);
        extra.state_dev = if indev != 0 {
            indev
        } else {
            read::<u64>(state, o.hook_state_out)
        };
        extra.state_net = read::<u64>(state, o.hook_state_net);
        extra.ts_ns = bpf_ktime_get_ns();
        snapshot(cfg, skb, &extra, &tracked, &mut frame.snap);
    }
    frame.extra = extra;
    frame.followed = 1;
    0
}

/// `nf_hook_slow` returned `retval`: pop this call's frame and report its
/// verdict. `skb` is known to fexit (a frame for another `sk_buff` is not
/// this call's: leave the stack alone), not to kretprobe (None).
#[inline(always)]
unsafe fn nf_exit<C: EbpfContext>(ctx: &C, skb: Option<u64>, retval: i32) -> u32 {
    let Some(stack) = NF_STACK.get_ptr_mut(0) else {
        return 0;
    };
    let stack = unsafe { &mut *stack };
    let depth = stack.depth;
    if depth == 0 || depth > NF_DEPTH as u64 {
        return 0;
    }
    let depth = depth - 1;
    let Some(frame) = stack.frames.get_mut(depth as usize & (NF_DEPTH - 1)) else {
        return 0;
    };
    if skb.is_some_and(|s| s != frame.skb) {
        bump(counter::NF_STACK_MISMATCH);
        return 0;
    }
    stack.depth = depth;
    if frame.followed == 0 {
        return 0;
    }
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    // The frame lives in the map: it is updated in place, not copied to
    // the (small) BPF stack.
    frame.extra.retval = retval;
    frame.extra.verdict = match retval {
        1 => verdict::ACCEPT,
        0 => verdict::STOLEN,
        _ => verdict::DROP,
    };
    // Accepted, the sk_buff lives on, and a NAT hook may have rewritten it.
    if retval == 1 {
        unsafe { read_headers::<false>(cfg, frame.skb, L3At::NetworkHeader, &mut frame.snap.hdr) };
        if let Some(t) = tracked_entry(frame.skb) {
            let last = unsafe { *t };
            unsafe { conntrack::note(cfg, frame.skb, frame.extra.ts_ns, &last) };
        }
    }
    unsafe { emit(ctx, cfg, frame.skb, &frame.extra, &frame.snap) }
}

#[fentry(function = "nf_hook_slow")]
pub fn nf_hook_slow_fentry(ctx: FEntryContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    let state: u64 = ctx.arg(1);
    unsafe { nf_enter::<true>(skb, state) }
}

#[fexit(function = "nf_hook_slow")]
pub fn nf_hook_slow_fexit(ctx: FExitContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(4);
    unsafe { nf_exit(&ctx, Some(skb), ret as i32) }
}

#[kprobe]
pub fn nf_hook_slow_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(skb), Some(state)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    unsafe { nf_enter::<false>(skb, state) }
}

#[kretprobe]
pub fn nf_hook_slow_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    unsafe { nf_exit(&ctx, None, ret as i32) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

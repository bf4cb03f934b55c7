//! Maps shared by all programs. Userspace may resize them before loading.
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{counter, Config, DropKey, Tracked};

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// `sk_buff` address → packet identity, for packets we follow.
#[map]
pub static TRACKED: LruHashMap<u64, Tracked> = LruHashMap::with_max_entries(16384, 0);

/// Entries put in `TRACKED` minus entries taken out, over all CPUs. While it
/// is 0 nothing is followed and no program looks in `TRACKED`. The LRU's own
/// evictions leave it too high, which only costs lookups, never a missed packet.
#[map]
pub static LIVE: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `delta` (wrapping: `u64::MAX` takes one away) to `LIVE`.
#[inline(always)]
pub fn live_add(delta: u64) {
    if let Some(v) = LIVE.get_ptr_mut(0) {
        // The plain atomic add every kernel's verifier accepts (BPF_XADD);
        // core's atomics don't exist on this target.
        unsafe {
            core::arch::asm!(
                "lock *(u64 *)({0} + 0) += {1}",
                in(reg) v,
                in(reg) delta,
                options(nostack),
            )
        };
    }
}

/// Whether any packet may be in `TRACKED`.
#[inline(always)]
pub fn live() -> bool {
    LIVE.get(0).is_some_and(|v| *v != 0)
}

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// `nf_hook_slow` calls in progress on one CPU, innermost last. A power of
/// two: indices are masked with `NF_DEPTH - 1`, which older verifiers can
/// bound where they lose track of a subtraction.
pub const NF_DEPTH: usize = 4;
const _: () = assert!(NF_DEPTH.is_power_of_two());

#[derive(Clone, Copy)]
pub struct NfFrame {
    pub skb: u64,
    /// 1 when the `sk_buff` is a packet we follow and `snap`/`extra` are set.
    pub followed: u8,
    pub extra: crate::Extra,
    pub snap: crate::Snapshot,
}

pub struct NfStack {
    pub depth: u64,
    pub frames: [NfFrame; NF_DEPTH],
}

#[map]
pub static NF_STACK: PerCpuArray<NfStack> = PerCpuArray::with_max_entries(1, 0);

/// The fields [`crate::headers::could_match`] gives the filter, in map
/// memory (see [`tracer_common::FlowFields`]).
#[map]
pub static PROBE_VIEW: PerCpuArray<tracer_common::FlowFields> = PerCpuArray::with_max_entries(1, 0);

/// The shape of the filter in `CONFIG`, as read-only globals the loader
/// sets: the verifier reads them as constants (see [`tracer_common::Shape`]).
#[unsafe(no_mangle)]
pub static FILTER_ATOMS: aya_ebpf::Global<u32> = aya_ebpf::Global::new(0);
#[unsafe(no_mangle)]
pub static FILTER_TERMS: aya_ebpf::Global<u32> = aya_ebpf::Global::new(0);
#[unsafe(no_mangle)]
pub static FILTER_BIDIR: aya_ebpf::Global<u32> = aya_ebpf::Global::new(0);

#[inline(always)]
pub fn filter_shape() -> tracer_common::Shape {
    tracer_common::Shape {
        atoms: FILTER_ATOMS.load(),
        terms: FILTER_TERMS.load(),
        bidir: FILTER_BIDIR.load() != 0,
    }
}

/// Which filter atoms hold for the packet being judged (see
/// [`tracer_common::MatchScratch`]).
#[map]
pub static MATCH_SCRATCH: PerCpuArray<tracer_common::MatchScratch> =
    PerCpuArray::with_max_entries(1, 0);

/// Room for one event's [`crate::Snapshot`] outside the 512-byte BPF stack.
#[map]
pub static SCRATCH: PerCpuArray<crate::Snapshot> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(v) = COUNTERS.get_ptr_mut(index) {
        unsafe { *v += 1 };
    }
}

/// Drops per (reason, location, device, namespace), for `drops --top`.
#[map]
pub static DROP_COUNTS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

#[inline(always)]
pub fn count_drop(key: &DropKey) {
    match DROP_COUNTS.get_ptr_mut(key) {
        Some(v) => unsafe { *v += 1 },
        None => {
            let _ = DROP_COUNTS.insert(key, &1, 0);
        }
    }
}

//! Maps shared by all programs. Userspace may resize them before loading.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{counter, Config, DropKey, Tracked};

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// `sk_buff` address → packet identity, for packets we follow.
#[map]
pub static TRACKED: LruHashMap<u64, Tracked> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// What `nf_hook_slow` was entered with, until it returns.
#[derive(Clone, Copy)]
pub struct NfEntry {
    pub track_id: u64,
    pub filter: u32,
    pub state: u64,
    pub ts_ns: u64,
}

#[map]
pub static NF_ENTRY: LruHashMap<u64, NfEntry> = LruHashMap::with_max_entries(4096, 0);

/// kretprobe has no arguments: remember the `sk_buff` per task.
#[map]
pub static NF_KPROBE_SKB: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

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
            let _ = DROP_COUNTS.insert(key, 1, 0);
        }
    }
}

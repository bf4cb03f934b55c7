//! The `sk_buff` members every program reads before it knows whether the
//! packet is one we follow: its protocol and where its network header is.
//!
//! tp_btf and fentry programs get `skb` as a pointer the verifier knows the
//! type of, so they can load these members directly (checked against the
//! kernel's BTF, faults turned into zeros by the kernel) instead of calling
//! `bpf_probe_read_kernel` for each. That needs offsets the verifier knows:
//! the loader writes them into these read-only globals before loading, and
//! the verifier reads frozen read-only data as constants. kprobes get a bare
//! address, and read through the helper at the offsets in `Config`.
use aya_ebpf::Global;

use crate::probe;

#[unsafe(no_mangle)]
pub static SKB_PROTOCOL: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static SKB_NETWORK_HEADER: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static SKB_HEAD: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static SKB_DATA: Global<u32> = Global::new(0);

pub use {
    SKB_DATA as DATA, SKB_HEAD as HEAD, SKB_NETWORK_HEADER as NETWORK_HEADER,
    SKB_PROTOCOL as PROTOCOL,
};

/// The `T` member of `skb`: a direct load at `constant` when `BTF` (the
/// verifier types `skb`), else a probe read at `offset`.
#[inline(always)]
pub unsafe fn member<T: Copy, const BTF: bool>(skb: u64, constant: &Global<u32>, offset: u32) -> T {
    if BTF {
        let off = constant.load() as u64;
        unsafe { core::ptr::read_volatile((skb + off) as *const T) }
    } else {
        unsafe { probe::read(skb + offset as u64) }
    }
}

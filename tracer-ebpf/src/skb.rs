//! The `sk_buff` members every program reads before it knows whether the
//! packet is one we follow: its protocol and where its network header is;
//! and what a counted drop's key reads: the device, its index and name, and
//! the namespace (of the device, else of the socket).
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

#[unsafe(no_mangle)]
pub static SKB_DEV: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static SKB_SK: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static DEV_IFINDEX: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static DEV_NAME: Global<u32> = Global::new(0);
/// `net_device.nd_net.net`.
#[unsafe(no_mangle)]
pub static DEV_NET: Global<u32> = Global::new(0);
/// `sock.__sk_common.skc_net.net`.
#[unsafe(no_mangle)]
pub static SK_NET: Global<u32> = Global::new(0);
/// `net.ns.inum`.
#[unsafe(no_mangle)]
pub static NET_INUM: Global<u32> = Global::new(0);

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

/// The `T` at `constant` (plus `extra`) in the object `ptr` points to: a
/// direct load, for pointers the verifier knows the type of (tp_btf
/// arguments, and pointers loaded from their members).
#[inline(always)]
pub unsafe fn field<T: Copy>(ptr: u64, constant: &Global<u32>, extra: u64) -> T {
    let off = constant.load() as u64 + extra;
    unsafe { core::ptr::read_volatile((ptr + off) as *const T) }
}

/// The namespace inode of the `struct net` at `net`; 0 for none.
#[inline(always)]
unsafe fn inum(net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    unsafe { field(net, &NET_INUM, 0) }
}

/// A drop's device (0 for none), its index and name, and its namespace
/// (the device's, else the socket's), by direct loads (`skb` from a tp_btf
/// argument).
#[inline(always)]
pub unsafe fn drop_place(skb: u64) -> (u32, [u8; 16], u32) {
    let (mut ifindex, mut name, mut netns) = (0, [0u8; 16], 0);
    unsafe {
        let dev: u64 = field(skb, &SKB_DEV, 0);
        if dev != 0 {
            ifindex = field(dev, &DEV_IFINDEX, 0);
            let lo: u64 = field(dev, &DEV_NAME, 0);
            let hi: u64 = field(dev, &DEV_NAME, 8);
            name[..8].copy_from_slice(&lo.to_ne_bytes());
            name[8..].copy_from_slice(&hi.to_ne_bytes());
            netns = inum(field(dev, &DEV_NET, 0));
        }
        if netns == 0 {
            let sk: u64 = field(skb, &SKB_SK, 0);
            if sk != 0 {
                netns = inum(field(sk, &SK_NET, 0));
            }
        }
    }
    (ifindex, name, netns)
}

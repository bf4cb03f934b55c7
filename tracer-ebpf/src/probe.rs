//! Branch-free reads of kernel memory. `bpf_probe_read_kernel` zero-fills
//! its destination when the read faults, so its return value needs no check:
//! skipping that branch keeps the verifier's state count (and older kernels'
//! one-million-instruction budget) low.
use core::mem::MaybeUninit;

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;

/// Reads a `T` at `addr`; zero when the read faults.
#[inline(always)]
pub unsafe fn read<T>(addr: u64) -> T {
    let mut v = MaybeUninit::<T>::zeroed();
    unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        );
        v.assume_init()
    }
}

/// Fills `dst` from `addr`; zeros when the read faults.
#[inline(always)]
pub unsafe fn read_into(addr: u64, dst: &mut [u8]) {
    unsafe {
        bpf_probe_read_kernel(dst.as_mut_ptr().cast(), dst.len() as u32, addr as *const _);
    }
}

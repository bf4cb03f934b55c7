//! The benchmark's floor: a program that does nothing. `pathtrace-bench`
//! loads it once on each tracepoint pathtrace attaches to, so what the
//! kernel spends running an empty program there is measured beside
//! pathtrace's own programs.
#![no_std]
#![no_main]

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

/// Loaded under whichever tracepoint name the benchmark gives it.
#[btf_tracepoint(function = "kfree_skb")]
pub fn floor(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

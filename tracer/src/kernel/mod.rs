//! Kernel facts read at run time: BTF, kallsyms, drop reasons, hook inference,
//! and the locked-memory limit old kernels charge BPF maps to.

pub mod btf;
pub mod drop_reason;
pub mod hook_infer;
pub mod kallsyms;
pub mod memlock;
pub mod owner;

/// Hands the pages of freed heap memory back to the kernel, after a large
/// parse is dropped; glibc's allocator otherwise keeps them resident for
/// reuse.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident set size in kB (0 when unknown), for diagnostics.
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

//! Kernel facts read at run time: BTF, kallsyms, drop reasons, hook inference,
//! and the locked-memory limit old kernels charge BPF maps to.

pub mod btf;
pub mod drop_reason;
pub mod hook_infer;
pub mod kallsyms;
pub mod memlock;

/// Whether process `pid` exists (signal 0 checks without sending; EPERM
/// means it exists under another user).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

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

//! Kernel facts read at run time: BTF, kallsyms, drop reasons, hook inference,
//! and the locked-memory limit old kernels charge BPF maps to.

pub mod btf;
pub mod drop_reason;
pub mod hook_infer;
pub mod kallsyms;
pub mod memlock;

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

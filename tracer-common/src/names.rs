//! The names that tie userspace to the eBPF object: its maps, programs and
//! read-only globals, as the object's symbols spell them. The eBPF crate
//! checks at build time that each of its items carries the name given here;
//! the loader and the bench look them up by these constants.

/// Maps (`#[map]` statics).
pub mod map {
    /// The run's [`crate::Config`], one entry.
    pub const CONFIG: &str = "CONFIG";
    /// The event ring buffer.
    pub const EVENTS: &str = "EVENTS";
    /// `sk_buff` address → [`crate::Tracked`].
    pub const TRACKED: &str = "TRACKED";
    /// How many entries `TRACKED` holds, over all CPUs.
    pub const LIVE: &str = "LIVE";
    /// Per-CPU counters, indexed by [`crate::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    pub const NF_STACK: &str = "NF_STACK";
    pub const PROBE_VIEW: &str = "PROBE_VIEW";
    pub const MATCH_SCRATCH: &str = "MATCH_SCRATCH";
    pub const SCRATCH: &str = "SCRATCH";
    /// Per-CPU drop counts by [`crate::DropKey`], for `drops --top`.
    pub const DROP_COUNTS: &str = "DROP_COUNTS";
    /// aya-log's ring buffer (made by `aya-log-ebpf`, not by this crate).
    pub const AYA_LOGS: &str = "AYA_LOGS";

    /// Every map the object holds.
    pub const ALL: [&str; 11] = [
        CONFIG,
        EVENTS,
        TRACKED,
        LIVE,
        COUNTERS,
        NF_STACK,
        PROBE_VIEW,
        MATCH_SCRATCH,
        SCRATCH,
        DROP_COUNTS,
        AYA_LOGS,
    ];
}

/// Programs (the entry points' function names).
pub mod program {
    /// `tp_btf` on `kfree_skb`, kernels that pass a drop reason (5.17+).
    pub const KFREE_SKB: &str = "kfree_skb";
    /// `tp_btf` on `kfree_skb`, kernels without a drop reason.
    pub const KFREE_SKB_NOREASON: &str = "kfree_skb_noreason";
    pub const CONSUME_SKB: &str = "consume_skb";
    pub const NETIF_RECEIVE_SKB: &str = "netif_receive_skb";
    pub const NET_DEV_QUEUE: &str = "net_dev_queue";
    pub const NF_HOOK_SLOW_FENTRY: &str = "nf_hook_slow_fentry";
    pub const NF_HOOK_SLOW_FEXIT: &str = "nf_hook_slow_fexit";
    pub const NF_HOOK_SLOW_KPROBE: &str = "nf_hook_slow_kprobe";
    pub const NF_HOOK_SLOW_KRETPROBE: &str = "nf_hook_slow_kretprobe";

    /// The programs on `nf_hook_slow` (the fentry and kprobe tiers).
    pub const ON_NF_HOOK_SLOW: [&str; 4] = [
        NF_HOOK_SLOW_FENTRY,
        NF_HOOK_SLOW_FEXIT,
        NF_HOOK_SLOW_KPROBE,
        NF_HOOK_SLOW_KRETPROBE,
    ];

    /// Whether a program name as the kernel reports it (cut to 15 bytes,
    /// `BPF_OBJ_NAME_LEN` less its NUL) is one of [`ON_NF_HOOK_SLOW`].
    pub fn on_nf_hook_slow(kernel_name: &str) -> bool {
        !kernel_name.is_empty() && ON_NF_HOOK_SLOW.iter().any(|p| p.starts_with(kernel_name))
    }
}

/// Read-only globals the loader sets before loading (the verifier reads
/// them as constants).
pub mod global {
    /// `sk_buff` member offsets, for direct loads.
    pub const SKB_PROTOCOL: &str = "SKB_PROTOCOL";
    pub const SKB_NETWORK_HEADER: &str = "SKB_NETWORK_HEADER";
    pub const SKB_HEAD: &str = "SKB_HEAD";
    pub const SKB_DATA: &str = "SKB_DATA";
    /// The filter's shape ([`crate::Shape`]).
    pub const FILTER_ATOMS: &str = "FILTER_ATOMS";
    pub const FILTER_TERMS: &str = "FILTER_TERMS";
    pub const FILTER_BIDIR: &str = "FILTER_BIDIR";
}

/// `a == b`, usable in a `const` (the eBPF crate's build-time checks).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_cut_names_on_nf_hook_slow() {
        assert!(program::on_nf_hook_slow("nf_hook_slow_fe"));
        assert!(program::on_nf_hook_slow("nf_hook_slow_kr"));
        assert!(!program::on_nf_hook_slow("kfree_skb"));
        assert!(!program::on_nf_hook_slow(""));
        assert!(same("CONFIG", map::CONFIG) && !same("CONFIG", map::LIVE));
    }
}

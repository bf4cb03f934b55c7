//! The one root gate for tests: a test that needs root fails loudly without
//! it, so no test passes by skipping.

/// Whether this process runs with euid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Panics, naming `test`, unless this process runs as root.
pub fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root (real eBPF, namespaces, Docker): run it as root, e.g. `cargo xtask test`"
    );
}

//! `RLIMIT_MEMLOCK` for BPF maps. Before Linux 5.11 the kernel charges each
//! map and program to the locked-memory limit of the process creating it
//! (from 5.11, to its memory cgroup instead), and refuses with `EPERM` beyond
//! it: on Debian 11's 5.10, with the usual 64 KiB or 8 MiB limit, the ring
//! buffer alone is refused.

/// What the limit is after [`raise_for_bpf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memlock {
    /// The kernel doesn't charge BPF memory to it (5.11 and later).
    NotCharged,
    Unlimited,
    /// Raised as far as allowed without `CAP_SYS_RESOURCE`: to the hard limit.
    Limited {
        bytes: u64,
    },
}

/// Whether kernel `release` (`uname -r`) charges BPF memory to `RLIMIT_MEMLOCK`.
pub fn charges_memlock(release: &str) -> bool {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 11),
        _ => false,
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn get() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `r`.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    r
}

fn set(cur: u64, max: u64) -> bool {
    let r = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: setrlimit reads one rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) == 0 }
}

/// On a kernel that charges BPF memory to `RLIMIT_MEMLOCK`, raises this
/// process's limit: to unlimited where allowed (root, `CAP_SYS_RESOURCE`),
/// else the soft limit to the hard one. Only this process's limit changes.
pub fn raise_for_bpf() -> Memlock {
    if !charges_memlock(&release()) {
        return Memlock::NotCharged;
    }
    if set(libc::RLIM_INFINITY, libc::RLIM_INFINITY) {
        return Memlock::Unlimited;
    }
    let now = get();
    set(now.rlim_max, now.rlim_max);
    let after = get();
    if after.rlim_cur == libc::RLIM_INFINITY {
        Memlock::Unlimited
    } else {
        Memlock::Limited {
            bytes: after.rlim_cur,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_before_5_11_charge_bpf_memory_to_memlock() {
        assert!(charges_memlock("5.10.0-46-amd64"));
        assert!(charges_memlock("4.19.0-27-amd64"));
        assert!(!charges_memlock("5.11.0"));
        assert!(!charges_memlock("6.1.0-57-amd64"));
        assert!(!charges_memlock("6.18.0"));
        assert!(!charges_memlock(""));
    }
}

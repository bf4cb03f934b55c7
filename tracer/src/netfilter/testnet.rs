//! Test helpers for the rule tracer: waiting on its socket and collecting its
//! events. The namespaces come from [`lab::topo::Pair`].

use std::time::{Duration, Instant};

use super::{RuleTracer, TraceEvent};

pub use lab::topo::{Pair as Lab, PAIR_A_ADDR as A_ADDR, PAIR_B_ADDR as B_ADDR};

/// Waits until `fd` is readable or `timeout` passes.
pub fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Collects events for up to `timeout`, stopping early once `done` holds.
pub fn collect(
    t: &mut RuleTracer,
    timeout: Duration,
    done: impl Fn(&[TraceEvent]) -> bool,
) -> Vec<TraceEvent> {
    let end = Instant::now() + timeout;
    let mut all = Vec::new();
    while Instant::now() < end {
        if wait_readable(t.as_raw_fd(), Duration::from_millis(100)) {
            all.extend(t.read_pending().expect("read_pending"));
            if done(&all) {
                break;
            }
        }
    }
    all
}

/// A process that is not pathtrace (`sleep`), to own a pid that a stale tag
/// names; killed by its pid and reaped when dropped.
pub struct OtherProcess(std::process::Child);

impl OtherProcess {
    pub fn start() -> Self {
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        Self(child)
    }

    /// Its owner as `/proc` tells it, with the real start time.
    pub fn owner(&self) -> crate::kernel::owner::Owner {
        let pid = self.0.id();
        let start = crate::kernel::owner::proc_stat(pid).map(|s| s.start);
        assert!(start.is_some(), "no /proc/{pid}/stat for sleep");
        crate::kernel::owner::Owner { pid, start }
    }
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

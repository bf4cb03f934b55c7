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

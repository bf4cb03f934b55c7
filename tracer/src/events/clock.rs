//! The kernel's monotonic clock, which the hops' `t_ns` read
//! (`bpf_ktime_get_ns`), and `Instant`s on it.
use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Now on CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `at` on the monotonic clock of [`monotonic_ns`].
pub fn monotonic_at(at: Instant) -> u64 {
    monotonic_ns().saturating_sub(at.elapsed().as_nanos() as u64)
}

/// The `Instant` of `ns` on the monotonic clock (`Instant` reads the same
/// clock, so one pair of readings maps the one onto the other).
pub fn instant_at(ns: u64) -> Instant {
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
    let &(at, base) = BASE.get_or_init(|| (Instant::now(), monotonic_ns()));
    if ns >= base {
        at.checked_add(Duration::from_nanos(ns - base))
            .unwrap_or(at)
    } else {
        at.checked_sub(Duration::from_nanos(base - ns))
            .unwrap_or(at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn an_instant_keeps_its_place_among_others_on_the_monotonic_clock() {
        let earlier = Instant::now() - Duration::from_secs(2);
        let later = earlier + Duration::from_secs(1);
        let (e, l) = (super::monotonic_at(earlier), super::monotonic_at(later));
        assert!(e < l && l < super::monotonic_ns());
        assert!(super::instant_at(e) < super::instant_at(l));
        assert!(super::instant_at(l) < Instant::now());
    }
}

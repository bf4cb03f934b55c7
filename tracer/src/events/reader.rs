//! Reading the `EVENTS` ring buffer and the per-CPU `COUNTERS`.
use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::counter;

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd, which stays open and
        // unchanged for as long as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { ring })
    }

    /// Waits until the kernel has written something, then hands every
    /// pending record to `each`. Returns how many it handed over.
    /// At most [`BATCH`] records, so that a flood can't keep the caller
    /// from its other work (settling packets, signals) for long.
    pub async fn next_batch(&mut self, mut each: impl FnMut(&[u8])) -> std::io::Result<usize> {
        let mut guard = self.ring.readable_mut().await?;
        let n = drain(guard.get_inner_mut(), &mut each, BATCH);
        if n < BATCH {
            guard.clear_ready();
        }
        Ok(n)
    }

    /// Hands over what is pending without waiting, at most `max` records.
    pub fn drain_now(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> usize {
        drain(self.ring.get_mut(), &mut each, max)
    }
}

/// Records handed over per wake-up at most.
pub const BATCH: usize = 4096;

fn drain(ring: &mut RingBuf<MapData>, each: &mut impl FnMut(&[u8]), max: usize) -> usize {
    let mut n = 0;
    while n < max {
        let Some(item) = ring.next() else { break };
        each(&item);
        n += 1;
    }
    n
}

/// Totals of the kernel side's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events the kernel could not write: the ring buffer was full.
    pub lost: u64,
    pub sent: u64,
    pub tracked: u64,
    pub untracked: u64,
    /// `nf_hook_slow` verdicts not reported because their call could not be
    /// paired with its return (interleaved calls, a missed kretprobe).
    pub nf_unpaired: u64,
}

impl Counters {
    pub fn read(map: &PerCpuArray<MapData, u64>) -> Self {
        let sum = |i: u32| {
            map.get(&i, 0)
                .map(|v| v.iter().copied().sum::<u64>())
                .unwrap_or(0)
        };
        Self {
            lost: sum(counter::LOST),
            sent: sum(counter::SENT),
            tracked: sum(counter::TRACKED),
            untracked: sum(counter::UNTRACKED),
            nf_unpaired: sum(counter::NF_STACK_MISMATCH) + sum(counter::NF_STACK_RESET),
        }
    }
}

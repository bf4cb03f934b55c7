//! Reading the `EVENTS` ring buffer and the per-CPU `COUNTERS`.
//!
//! A thread of its own empties the ring into batches as the kernel fills
//! it, so that the loop that settles, names and prints packets can take a
//! while (a first look at a namespace, a burst of packets to settle)
//! without the ring filling up behind it. What that thread holds is
//! bounded: when the loop falls further behind, the thread waits, the ring
//! fills and the kernel counts what it could not write, so the lost count
//! stays the kernel's own.
//!
//! The thread also says up to when the ring is read: the start of its
//! last pass that found the ring empty, published after that pass's
//! batches were sent. What the kernel wrote before then is in the batches,
//! however late the thread or the loop ran.
use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::sync::mpsc;
use tracer_common::counter;

use super::monotonic_ns;

/// Records copied out of the ring, one after the other, each after its length.
struct Batch {
    bytes: Vec<u8>,
    records: usize,
}

impl Batch {
    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(BATCH_RECORDS * 160),
            records: 0,
        }
    }

    fn push(&mut self, record: &[u8]) {
        self.bytes
            .extend_from_slice(&(record.len() as u32).to_ne_bytes());
        self.bytes.extend_from_slice(record);
        self.records += 1;
    }

    fn each(&self, each: &mut impl FnMut(&[u8])) -> usize {
        let mut rest = self.bytes.as_slice();
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_ne_bytes(*len) as usize;
            let Some((record, tail)) = tail.split_at_checked(len) else {
                break;
            };
            each(record);
            rest = tail;
        }
        self.records
    }
}

/// Records per batch handed from the ring's thread to the loop.
const BATCH_RECORDS: usize = 512;
/// Batches waiting for the loop at most (about 1 MiB of events, as much
/// as the ring holds): beyond that the ring's thread waits and the ring
/// itself buffers. Each batch in flight is resident memory: 48 of them
/// measured 21.7 MiB peak RSS under a flood, 16 of them 19.3 MiB, with
/// the same highest lossless rate (`cargo xtask bench --only traced`).
const IN_FLIGHT: usize = 16;
/// How long records gather in the ring between reads while they flow: the
/// kernel wakes the reader for each record written to an empty ring, and a
/// wake-up costs more than reading a record. The default ring holds about
/// ten times this long of events at 100,000 packets a second.
const GATHER: Duration = Duration::from_millis(1);
/// How often the ring's thread, waiting for records, checks that it
/// should stop.
const STOP_CHECK: Duration = Duration::from_millis(20);
/// Records the ring's thread still takes after being told to stop: under
/// a flood the kernel refills the ring as fast as it empties.
const LAST_RECORDS: usize = 64 * 4096;

pub struct EventReader {
    batches: mpsc::Receiver<Batch>,
    stop: Arc<AtomicBool>,
    emptied: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        let (tx, batches) = mpsc::channel(IN_FLIGHT);
        let stop = Arc::new(AtomicBool::new(false));
        let emptied = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let emptied = Arc::clone(&emptied);
            std::thread::Builder::new()
                .name("pathtrace-ring".into())
                .spawn(move || empty_ring(ring, &tx, &stop, &emptied))?
        };
        Ok(Self {
            batches,
            stop,
            emptied,
            thread: Some(thread),
        })
    }

    /// When (on the monotonic clock of the hops' `t_ns`) the ring's thread
    /// last started a pass that emptied the ring: every record the kernel
    /// wrote before then has been sent to the batches. 0 before the first.
    pub fn emptied_ns(&self) -> u64 {
        self.emptied.load(Ordering::Acquire)
    }

    /// Waits until records have arrived, then hands them to `each`, and
    /// what else is waiting up to [`BATCH`] records. Returns how many it
    /// handed over.
    pub async fn next_batch(&mut self, mut each: impl FnMut(&[u8])) -> std::io::Result<usize> {
        let Some(first) = self.batches.recv().await else {
            return Err(std::io::Error::other("the ring buffer's reader stopped"));
        };
        let mut n = first.each(&mut each);
        while n < BATCH {
            let Ok(b) = self.batches.try_recv() else {
                break;
            };
            n += b.each(&mut each);
        }
        Ok(n)
    }

    /// Hands over what has arrived without waiting, about `max` records
    /// at most (whole batches).
    pub fn drain_now(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Ok(b) = self.batches.try_recv() else {
                break;
            };
            n += b.each(&mut each);
        }
        n
    }

    /// At the end: tells the ring's thread to stop, and hands over what
    /// the kernel wrote until now, about `max` records per call; `None`
    /// once all of it was handed over.
    pub async fn last(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> Option<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let mut n = 0;
        while n < max {
            match self.batches.recv().await {
                Some(b) => n += b.each(&mut each),
                None if n > 0 => break,
                None => {
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                    return None;
                }
            }
        }
        Some(n)
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Records handed over per call of [`EventReader::next_batch`] at most, so
/// that a flood can't keep the caller from its other work (settling
/// packets, signals) for long.
pub const BATCH: usize = 4096;

/// The ring's thread: copies records out in batches until told to stop
/// (then once more, bounded) or the loop is gone.
fn empty_ring(
    mut ring: RingBuf<MapData>,
    tx: &mpsc::Sender<Batch>,
    stop: &AtomicBool,
    emptied: &AtomicU64,
) {
    let fd = ring.as_raw_fd();
    loop {
        let started = monotonic_ns();
        let stopping = stop.load(Ordering::Relaxed);
        let max = if stopping { LAST_RECORDS } else { usize::MAX };
        let mut taken = 0;
        loop {
            let mut batch = Batch::new();
            while batch.records < BATCH_RECORDS && taken < max {
                let Some(item) = ring.next() else { break };
                batch.push(&item);
                taken += 1;
            }
            let full = batch.records == BATCH_RECORDS;
            if batch.records > 0 && tx.blocking_send(batch).is_err() {
                return;
            }
            if !full || taken >= max {
                break;
            }
        }
        if stopping {
            return;
        }
        // The pass ended on an empty ring, its batches sent.
        emptied.store(started, Ordering::Release);
        if taken > 0 {
            std::thread::sleep(GATHER);
        } else {
            wait_readable(fd, STOP_CHECK);
        }
    }
}

fn wait_readable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; the ring's fd
    // stays open while the ring is alive.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
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

//! Loading the embedded eBPF object, choosing a tier the kernel allows, and
//! attaching its programs. Links are owned by the returned [`Tracer`] and
//! vanish with it (or with the process, whatever kills it).
mod attach;
mod gate;
mod kretprobe;
mod object;
mod offsets;
mod tier;

use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProgramError,
    Ebpf,
};
use kretprobe::Kretprobe;
use tracer_common::{names::map, DropKey, Filter};

pub use tier::TierRequest;

use crate::{
    events::{Counters, EventReader},
    kernel::btf::{BtfError, KernelBtf},
    model::Tier,
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "pathtrace was built without its eBPF object: run `cargo xtask build-ebpf`, then rebuild"
    )]
    NoObject,
    #[error("reading kernel BTF: {0}")]
    Btf(#[from] BtfError),
    #[error("aya could not read kernel BTF (/sys/kernel/btf/vmlinux): {0}")]
    AyaBtf(String),
    #[error("loading the eBPF object: {0}")]
    Object(aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("tier {tier} can't run on this kernel: {why}")]
    TierUnavailable { tier: Tier, why: String },
    #[error(
        "the kernel refused creating BPF maps: before Linux 5.11 they count against the \
         locked-memory limit (RLIMIT_MEMLOCK), {kib} KiB for this process, which needs \
         CAP_SYS_RESOURCE to raise it; run pathtrace as root or with CAP_SYS_RESOURCE, or \
         raise the limit before starting it (`ulimit -l unlimited` as root)"
    )]
    Memlock { kib: u64 },
}

/// The event ring's default size: about 6,900 hop records (152 bytes each
/// with the ring's own header), 1,000 packets' worth at 7 hops each.
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;
/// Packets followed at once by default. A packet is tracked only while it
/// is in flight (microseconds to a socket queue's worth); 4096 entries are
/// about 0.5 MiB of kernel memory.
pub const DEFAULT_TRACKED_MAX: u32 = 4096;

/// What to attach and how big to make the buffers.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub tier: TierRequest,
    /// Attach the device-hop and consume tracepoints (off for `drops`).
    pub hops: bool,
    pub ring_bytes: u32,
    pub tracked_max: u32,
    /// [`tracer_common::config_flags`]: the run-wide switches.
    pub config_flags: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            tier: TierRequest::Auto,
            hops: true,
            ring_bytes: DEFAULT_RING_BYTES,
            tracked_max: DEFAULT_TRACKED_MAX,
            config_flags: 0,
        }
    }
}

pub struct Tracer {
    ebpf: Ebpf,
    pub tier: Tier,
    /// Better tiers that were tried and refused, with the kernel's reason.
    pub refused: Vec<(Tier, String)>,
    counters: PerCpuArray<MapData, u64>,
    /// Held for its Drop, which detaches and deletes the tracefs event.
    _kretprobe: Option<Kretprobe>,
}

/// Passes the kernel programs' `aya-log` records to this process's logger
/// (`RUST_LOG=debug`), from a task of the running tokio runtime.
fn forward_kernel_logs(ebpf: &mut Ebpf) {
    use tokio::io::{unix::AsyncFd, Interest};
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            log::debug!("kernel logs unavailable: {e}");
            return;
        }
    };
    let _guard = runtime.enter();
    // SAFETY: the logger owns its ring buffer's fd, which stays open and
    // unchanged for as long as the AsyncFd owns the logger.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            log::debug!("kernel logs unavailable: {e}");
            return;
        }
    };
    runtime.spawn(async move {
        while let Ok(mut ready) = fd.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}

impl Tracer {
    /// Loads, configures and attaches everything for one run, with the
    /// kernel BTF the run parsed once. aya reads no BTF of its own: the
    /// object has no CO-RE relocations (offsets come from [`tracer_common::Config`]), and
    /// attach targets come from `attach::attach_btf`.
    pub fn load(
        opts: &LoadOptions,
        filter: &Filter,
        kernel: &KernelBtf,
    ) -> Result<Self, LoadError> {
        if !object::embedded() {
            return Err(LoadError::NoObject);
        }
        let t0 = std::time::Instant::now();
        let btf = &kernel.vmlinux;
        let cfg = object::config(opts, filter, kernel)?;
        let kernel_logs = log::max_level() >= log::LevelFilter::Debug;
        let mut ebpf = object::load(opts, &cfg, kernel_logs)?;
        if kernel_logs {
            forward_kernel_logs(&mut ebpf);
        }
        log::debug!(
            "startup: object loaded at {:?} (rss {} kB)",
            t0.elapsed(),
            crate::kernel::rss_kb()
        );
        let hook = attach::hook(opts, &mut ebpf, btf)?;
        attach::tracepoints(&mut ebpf, btf, opts.hops, t0)?;
        crate::kernel::release_freed_memory();
        let counters = PerCpuArray::try_from(
            ebpf.take_map(map::COUNTERS)
                .ok_or(LoadError::MissingMap(map::COUNTERS))?,
        )
        .map_err(|source| LoadError::Map {
            name: map::COUNTERS,
            source,
        })?;
        Ok(Self {
            ebpf,
            tier: hook.tier,
            refused: hook.refused,
            counters,
            _kretprobe: hook.kretprobe,
        })
    }

    pub fn events(&mut self) -> Result<EventReader, LoadError> {
        let map = self
            .ebpf
            .take_map(map::EVENTS)
            .ok_or(LoadError::MissingMap(map::EVENTS))?;
        let ring = RingBuf::try_from(map).map_err(|source| LoadError::Map {
            name: map::EVENTS,
            source,
        })?;
        EventReader::new(ring).map_err(|e| LoadError::AyaBtf(e.to_string()))
    }

    pub fn counters(&self) -> Counters {
        Counters::read(&self.counters)
    }

    /// Packets the tracking map had to evict to make room: tracked, minus
    /// those freed, minus those still tracked.
    pub fn evicted(&self) -> u64 {
        let c = self.counters();
        let live = self
            .ebpf
            .map(map::TRACKED)
            .and_then(|m| {
                aya::maps::HashMap::<&MapData, u64, tracer_common::Tracked>::try_from(m).ok()
            })
            .map(|m| m.keys().filter(Result::is_ok).count() as u64)
            .unwrap_or(0);
        log::debug!(
            "tracked {} untracked {} live {live}",
            c.tracked,
            c.untracked
        );
        c.tracked.saturating_sub(c.untracked).saturating_sub(live)
    }

    /// Totals of the kernel's per-CPU drop counters, one row per key.
    pub fn drop_counts(&self) -> Result<Vec<(DropKey, u64)>, LoadError> {
        let map = self
            .ebpf
            .map(map::DROP_COUNTS)
            .ok_or(LoadError::MissingMap(map::DROP_COUNTS))?;
        let counts: PerCpuHashMap<&MapData, DropKey, u64> =
            PerCpuHashMap::try_from(map).map_err(|source| LoadError::Map {
                name: map::DROP_COUNTS,
                source,
            })?;
        let mut rows = Vec::new();
        for item in counts.iter() {
            let (key, per_cpu) = item.map_err(|source| LoadError::Map {
                name: map::DROP_COUNTS,
                source,
            })?;
            rows.push((key, per_cpu.iter().sum()));
        }
        Ok(rows)
    }
}

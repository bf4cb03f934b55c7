//! Loading the embedded eBPF object, choosing a tier the kernel allows, and
//! attaching its programs. Links are owned by the returned [`Tracer`] and
//! vanish with it (or with the process, whatever kills it).
mod kretprobe;
mod offsets;
mod tier;

use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError},
    Ebpf, EbpfLoader,
};
use kretprobe::Kretprobe;
use tracer_common::{
    config_flags,
    names::{global, map, program},
    Config, DropKey, Filter,
};

pub use tier::TierRequest;

use crate::{
    events::{Counters, EventReader},
    kernel::{
        btf::{Btf, BtfError, KernelBtf, Kind},
        memlock::Memlock,
    },
    model::Tier,
};

/// The tracepoints attached by BTF id (`tp_btf`).
const ATTACH_TRACEPOINTS: [&str; 4] = [
    "kfree_skb",
    "consume_skb",
    "netif_receive_skb",
    "net_dev_queue",
];
/// The function the fentry/fexit pair attaches to.
const NF_HOOK_SLOW: &str = "nf_hook_slow";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf.o"));

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

impl LoadError {
    /// Names the locked-memory limit when it is why the kernel refused the
    /// object (`EPERM` on a kernel that charges maps to it).
    fn from_object(e: aya::EbpfError, memlock: Memlock) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut eperm = false;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                eperm |= io.raw_os_error() == Some(libc::EPERM);
            }
            source = s.source();
        }
        match memlock {
            Memlock::Limited { bytes } if eperm => Self::Memlock { kib: bytes / 1024 },
            _ => Self::Object(e),
        }
    }
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

fn prog_err(name: &'static str) -> impl FnOnce(ProgramError) -> LoadError {
    move |source| LoadError::Program { name, source }
}

/// Loads the `tp_btf` programs `(program, tracepoint)` side by side, one
/// thread each (the verifier takes tens of milliseconds a program, in the
/// calling thread), then attaches them in order. The first failure in that
/// order is the one returned.
fn attach_tps(
    ebpf: &mut Ebpf,
    progs: &[(&'static str, &str)],
    btf: &aya::Btf,
) -> Result<(), LoadError> {
    let mut found: Vec<Option<&mut Program>> = progs.iter().map(|_| None).collect();
    for (name, p) in ebpf.programs_mut() {
        if let Some(i) = progs.iter().position(|&(prog, _)| prog == name) {
            found[i] = Some(p);
        }
    }
    let mut tps: Vec<&mut BtfTracePoint> = Vec::with_capacity(progs.len());
    for (&(prog, _), p) in progs.iter().zip(found) {
        let p = p.ok_or(LoadError::Program {
            name: prog,
            source: ProgramError::NotLoaded,
        })?;
        tps.push(p.try_into().map_err(prog_err(prog))?);
    }
    let loaded: Vec<Result<(), LoadError>> = std::thread::scope(|s| {
        let threads: Vec<_> = progs
            .iter()
            .zip(tps.iter_mut())
            .map(|(&(prog, tp), p)| {
                s.spawn(move || {
                    let t = std::time::Instant::now();
                    p.load(tp, btf).map_err(prog_err(prog))?;
                    log::debug!("startup: {prog} verified in {:?}", t.elapsed());
                    Ok(())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    for ((&(prog, _), p), result) in progs.iter().zip(tps).zip(loaded) {
        result?;
        p.attach().map_err(prog_err(prog))?;
    }
    Ok(())
}

/// What aya needs to attach by BTF id: it finds the id by name in its own
/// type, which for the whole kernel BTF would take about 13 MiB. This one
/// holds the `keep` types at their kernel ids and nothing else (see
/// [`Btf::id_stub`]); a name the kernel lacks is missing from it too.
fn attach_btf(btf: &Btf, keep: &[(&str, Kind)]) -> Result<aya::Btf, LoadError> {
    aya::Btf::parse(&btf.id_stub(keep)?, aya::Endianness::default())
        .map_err(|e| LoadError::AyaBtf(e.to_string()))
}

fn attach_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LoadError> {
    const ENTRY: &str = program::NF_HOOK_SLOW_FENTRY;
    const EXIT: &str = program::NF_HOOK_SLOW_FEXIT;
    let btf = &attach_btf(btf, &[(NF_HOOK_SLOW, Kind::Func)])?;
    let p: &mut FEntry = ebpf
        .program_mut(ENTRY)
        .ok_or(LoadError::Program {
            name: ENTRY,
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(prog_err(ENTRY))?;
    p.load(NF_HOOK_SLOW, btf).map_err(prog_err(ENTRY))?;
    p.attach().map_err(prog_err(ENTRY))?;
    let p: &mut FExit = ebpf
        .program_mut(EXIT)
        .ok_or(LoadError::Program {
            name: EXIT,
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(prog_err(EXIT))?;
    p.load(NF_HOOK_SLOW, btf).map_err(prog_err(EXIT))?;
    p.attach().map_err(prog_err(EXIT))?;
    Ok(())
}

/// Attaches the kprobe pair; on a kernel without preemption, whose kretprobe
/// keeps one return instance per CPU, the return through tracefs with more
/// (see `kretprobe`), kept in `ret`.
fn attach_kprobe(ebpf: &mut Ebpf, ret: &mut Option<Kretprobe>) -> Result<(), LoadError> {
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err(LoadError::TierUnavailable {
            tier: Tier::Kprobe,
            why: "the kernel has no kprobe event source (CONFIG_KPROBES is off)".into(),
        });
    }
    for name in [
        program::NF_HOOK_SLOW_KPROBE,
        program::NF_HOOK_SLOW_KRETPROBE,
    ] {
        let p: &mut KProbe = ebpf
            .program_mut(name)
            .ok_or(LoadError::Program {
                name,
                source: ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(prog_err(name))?;
        p.load().map_err(prog_err(name))?;
        if name == program::NF_HOOK_SLOW_KRETPROBE && !kretprobe::kernel_is_preemptible() {
            let fd = p.fd().map_err(prog_err(name))?;
            match Kretprobe::attach(fd, NF_HOOK_SLOW) {
                Ok(k) => {
                    *ret = Some(k);
                    continue;
                }
                Err(e) => log::debug!(
                    "kretprobe through tracefs: {e}; the perf kprobe PMU's has one return \
                     instance per CPU on this kernel, so nested hooks may lose their verdict"
                ),
            }
        }
        p.attach(NF_HOOK_SLOW, 0).map_err(prog_err(name))?;
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let text = text.replace(". Verifier output: ", ": ");
        let text = text.trim_end_matches(['.', ':', ' ']).to_owned();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
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
    /// object has no CO-RE relocations (offsets come from [`Config`]), and
    /// attach targets come from [`attach_btf`].
    pub fn load(
        opts: &LoadOptions,
        filter: &Filter,
        kernel: &KernelBtf,
    ) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let t0 = std::time::Instant::now();
        let btf = &kernel.vmlinux;
        let mut cfg = Config {
            offsets: offsets::from_btf(btf)?,
            ..Default::default()
        };
        offsets::add_conntrack(&mut cfg.offsets, kernel);
        cfg.filter = *filter;
        cfg.flags = opts.config_flags;
        let has_reason = btf
            .typedef_func_proto_params("btf_trace_kfree_skb")
            .map(|p| p.len() >= 4)
            .unwrap_or(false);
        let kernel_logs = log::max_level() >= log::LevelFilter::Debug;
        let kernel_log_level = if kernel_logs {
            aya_log::Level::Debug as u8
        } else {
            0
        };
        let memlock = crate::kernel::memlock::raise_for_bpf();
        log::debug!("RLIMIT_MEMLOCK for BPF maps: {memlock:?}");
        let mut ebpf = EbpfLoader::new()
            // Off, the verifier prunes every kernel log statement.
            .override_global(aya_log::LEVEL, &kernel_log_level, true)
            // The sk_buff members the hot path loads directly: read-only
            // constants the verifier checks each load against.
            .override_global(global::SKB_PROTOCOL, &cfg.offsets.skb_protocol, true)
            .override_global(
                global::SKB_NETWORK_HEADER,
                &cfg.offsets.skb_network_header,
                true,
            )
            .override_global(global::SKB_HEAD, &cfg.offsets.skb_head, true)
            .override_global(global::SKB_DATA, &cfg.offsets.skb_data, true)
            // The filter's size: the verifier walks only the slots in use.
            .override_global(global::FILTER_ATOMS, &cfg.filter.n_atoms, true)
            .override_global(global::FILTER_TERMS, &cfg.filter.n_terms, true)
            .override_global(global::FILTER_BIDIR, &cfg.filter.bidir, true)
            .map_max_entries(map::AYA_LOGS, if kernel_logs { 1 << 17 } else { 4096 })
            .map_max_entries(map::EVENTS, opts.ring_bytes)
            .map_max_entries(map::TRACKED, opts.tracked_max)
            // Only `drops --top` counts; elsewhere the map need not take memory.
            .map_max_entries(
                map::DROP_COUNTS,
                if opts.config_flags & config_flags::COUNT_DROPS != 0 {
                    4096
                } else {
                    1
                },
            )
            .load(OBJECT)
            .map_err(|e| LoadError::from_object(e, memlock))?;
        if kernel_logs {
            forward_kernel_logs(&mut ebpf);
        }
        {
            let map = ebpf
                .map_mut(map::CONFIG)
                .ok_or(LoadError::MissingMap(map::CONFIG))?;
            let mut arr: Array<&mut MapData, Config> =
                Array::try_from(map).map_err(|source| LoadError::Map {
                    name: map::CONFIG,
                    source,
                })?;
            arr.set(0, &cfg, 0).map_err(|source| LoadError::Map {
                name: map::CONFIG,
                source,
            })?;
        }
        log::debug!(
            "startup: object loaded at {:?} (rss {} kB)",
            t0.elapsed(),
            crate::kernel::rss_kb()
        );
        // Without hops (the drop views) nf_hook_slow verdicts have nowhere to go.
        let mut kretprobe = None;
        let (tier, refused) = if opts.hops {
            tier::choose(
                opts.tier,
                &mut ebpf,
                btf,
                attach_fentry,
                &mut |e| attach_kprobe(e, &mut kretprobe),
                error_chain,
            )?
        } else {
            (Tier::Tracepoint, Vec::new())
        };
        let tracepoints: Vec<String> = ATTACH_TRACEPOINTS
            .iter()
            .map(|tp| format!("btf_trace_{tp}"))
            .collect();
        let keep: Vec<(&str, Kind)> = tracepoints
            .iter()
            .map(|n| (n.as_str(), Kind::Typedef))
            .collect();
        let aya_btf = attach_btf(btf, &keep)?;
        log::debug!(
            "startup: tracepoint ids for aya at {:?} (rss {} kB)",
            t0.elapsed(),
            crate::kernel::rss_kb()
        );
        let mut tps = vec![if has_reason {
            (program::KFREE_SKB, "kfree_skb")
        } else {
            (program::KFREE_SKB_NOREASON, "kfree_skb")
        }];
        if opts.hops {
            tps.extend([
                (program::CONSUME_SKB, "consume_skb"),
                (program::NETIF_RECEIVE_SKB, "netif_receive_skb"),
                (program::NET_DEV_QUEUE, "net_dev_queue"),
            ]);
        }
        attach_tps(&mut ebpf, &tps, &aya_btf)?;
        log::debug!(
            "startup: attached at {:?} (rss {} kB)",
            t0.elapsed(),
            crate::kernel::rss_kb()
        );
        drop(aya_btf);
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
            tier,
            refused,
            counters,
            _kretprobe: kretprobe,
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

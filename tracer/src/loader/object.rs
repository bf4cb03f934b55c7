//! The embedded eBPF object: the run's [`Config`], the read-only globals
//! and map sizes it is loaded with, and the config map written once loaded.
use aya::{
    maps::{Array, MapData},
    Ebpf, EbpfLoader,
};
use tracer_common::{
    config_flags,
    names::{global, map},
    Config, Filter,
};

use super::{gate::Gate, offsets, LoadError, LoadOptions};
use crate::kernel::{btf::KernelBtf, memlock::Memlock};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf.o"));

/// Whether this binary was built with its eBPF object.
pub(super) fn embedded() -> bool {
    !OBJECT.is_empty()
}

/// The run's configuration: the kernel's struct offsets, the filter and the
/// run-wide switches.
pub(super) fn config(
    opts: &LoadOptions,
    filter: &Filter,
    kernel: &KernelBtf,
) -> Result<Config, LoadError> {
    let mut cfg = Config {
        offsets: offsets::from_btf(&kernel.vmlinux)?,
        ..Default::default()
    };
    offsets::add_conntrack(&mut cfg.offsets, kernel);
    cfg.filter = *filter;
    cfg.flags = opts.config_flags;
    Ok(cfg)
}

/// Loads the object into the kernel (the verifier sees the globals as
/// constants), then writes `cfg` into its config map. `kernel_logs` keeps
/// the programs' log statements and sizes their ring for them.
pub(super) fn load(opts: &LoadOptions, cfg: &Config, kernel_logs: bool) -> Result<Ebpf, LoadError> {
    let gate = Gate::of(&cfg.filter);
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
        // ... and those a counted drop's key reads.
        .override_global(global::SKB_DEV, &cfg.offsets.skb_dev, true)
        .override_global(global::SKB_SK, &cfg.offsets.skb_sk, true)
        .override_global(global::DEV_IFINDEX, &cfg.offsets.dev_ifindex, true)
        .override_global(global::DEV_NAME, &cfg.offsets.dev_name, true)
        .override_global(global::DEV_NET, &cfg.offsets.dev_nd_net, true)
        .override_global(global::SK_NET, &cfg.offsets.sk_net, true)
        .override_global(global::NET_INUM, &cfg.offsets.net_ns_inum, true)
        // The networks every term names: one test before the filter.
        .override_global(global::GATE_N, &gate.n, true)
        .override_global(global::GATE_NETS, &gate.nets, true)
        .override_global(global::GATE_MASKS, &gate.masks, true)
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
        .map_err(|e| from_object(e, memlock))?;
    write_config(&mut ebpf, cfg)?;
    Ok(ebpf)
}

fn write_config(ebpf: &mut Ebpf, cfg: &Config) -> Result<(), LoadError> {
    let map_err = |source| LoadError::Map {
        name: map::CONFIG,
        source,
    };
    let map = ebpf
        .map_mut(map::CONFIG)
        .ok_or(LoadError::MissingMap(map::CONFIG))?;
    let mut arr: Array<&mut MapData, Config> = Array::try_from(map).map_err(map_err)?;
    arr.set(0, cfg, 0).map_err(map_err)
}

/// Names the locked-memory limit when it is why the kernel refused the
/// object (`EPERM` on a kernel that charges maps to it).
fn from_object(e: aya::EbpfError, memlock: Memlock) -> LoadError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut eperm = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            eperm |= io.raw_os_error() == Some(libc::EPERM);
        }
        source = s.source();
    }
    match memlock {
        Memlock::Limited { bytes } if eperm => LoadError::Memlock { kib: bytes / 1024 },
        _ => LoadError::Object(e),
    }
}

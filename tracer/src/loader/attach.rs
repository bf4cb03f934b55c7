//! Attaching the loaded programs: the `nf_hook_slow` pair of the chosen
//! tier, and the tracepoints every tier shares.
use std::{os::fd::FromRawFd, time::Instant};

use aya::{
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError},
    Ebpf,
};
use tracer_common::names::program;

use super::{
    kretprobe::{self, Kretprobe},
    tier, LoadError, LoadOptions,
};
use crate::{
    kernel::btf::{Btf, Kind},
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

fn prog_err(name: &'static str) -> impl FnOnce(ProgramError) -> LoadError {
    move |source| LoadError::Program { name, source }
}

/// The loaded program `name`, as the kind `P` it must be.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::Program {
            name,
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(prog_err(name))
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

/// Whether the kernel loads any fentry program at BTF id `func`: one that
/// returns at once, loaded and closed. A kernel that refuses tracing
/// programs outright (lockdown) is found out this way before
/// [`attach_btf`] builds aya's type table, which holds an entry for every
/// kernel type up to `func` (about 10 MiB while it lives).
fn fentry_loads(func: u32) -> Result<(), aya::sys::SyscallError> {
    use aya_obj::generated::{
        bpf_attach_type::BPF_TRACE_FENTRY, bpf_attr, bpf_cmd::BPF_PROG_LOAD,
        bpf_prog_type::BPF_PROG_TYPE_TRACING,
    };
    // `r0 = 0; exit`: the opcodes lead each 8-byte instruction, registers 0.
    let insns = [0xb7u8, 0x95].map(|op| u64::from_ne_bytes([op, 0, 0, 0, 0, 0, 0, 0]));
    // SAFETY: bpf_attr is plain old data; all zeros is its empty value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: BPF_PROG_LOAD reads the union as its program-load member.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = BPF_PROG_TYPE_TRACING as u32;
    load.expected_attach_type = BPF_TRACE_FENTRY as u32;
    load.insn_cnt = insns.len() as u32;
    load.insns = insns.as_ptr() as u64;
    load.license = c"GPL".as_ptr() as u64;
    load.attach_btf_id = func;
    // SAFETY: attr and what it points to live across the call; the kernel
    // reads `size_of::<bpf_attr>()` bytes of it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD as libc::c_long,
            &raw const attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the kernel just handed this descriptor to this process.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

fn attach_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LoadError> {
    const ENTRY: &str = program::NF_HOOK_SLOW_FENTRY;
    const EXIT: &str = program::NF_HOOK_SLOW_FEXIT;
    if let Some(func) = btf.find_type_id(NF_HOOK_SLOW, Kind::Func) {
        fentry_loads(func).map_err(|e| prog_err(ENTRY)(ProgramError::SyscallError(e)))?;
    }
    let btf = &attach_btf(btf, &[(NF_HOOK_SLOW, Kind::Func)])?;
    let p: &mut FEntry = program(ebpf, ENTRY)?;
    p.load(NF_HOOK_SLOW, btf).map_err(prog_err(ENTRY))?;
    p.attach().map_err(prog_err(ENTRY))?;
    let p: &mut FExit = program(ebpf, EXIT)?;
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
        let p: &mut KProbe = program(ebpf, name)?;
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

/// What attached at `nf_hook_slow`.
pub(super) struct Hook {
    pub tier: Tier,
    /// Better tiers that were tried and refused, with the kernel's reason.
    pub refused: Vec<(Tier, String)>,
    /// The kretprobe made through tracefs, where the kprobe tier needed one.
    pub kretprobe: Option<Kretprobe>,
}

/// Attaches `nf_hook_slow`'s pair for the tier `opts` asks for, or the best
/// the kernel allows. Without hops (the drop views) its verdicts have
/// nowhere to go, so nothing attaches there.
pub(super) fn hook(opts: &LoadOptions, ebpf: &mut Ebpf, btf: &Btf) -> Result<Hook, LoadError> {
    let mut kretprobe = None;
    let (tier, refused) = if opts.hops {
        tier::choose(
            opts.tier,
            ebpf,
            btf,
            attach_fentry,
            &mut |e| attach_kprobe(e, &mut kretprobe),
            error_chain,
        )?
    } else {
        (Tier::Tracepoint, Vec::new())
    };
    Ok(Hook {
        tier,
        refused,
        kretprobe,
    })
}

/// Attaches the drop tracepoint (with or without a reason, as the kernel's
/// `kfree_skb` has one) and, with `hops`, the consume and device ones.
pub(super) fn tracepoints(
    ebpf: &mut Ebpf,
    btf: &Btf,
    hops: bool,
    t0: Instant,
) -> Result<(), LoadError> {
    let has_reason = btf
        .typedef_func_proto_params("btf_trace_kfree_skb")
        .map(|p| p.len() >= 4)
        .unwrap_or(false);
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
    if hops {
        tps.extend([
            (program::CONSUME_SKB, "consume_skb"),
            (program::NETIF_RECEIVE_SKB, "netif_receive_skb"),
            (program::NET_DEV_QUEUE, "net_dev_queue"),
        ]);
    }
    attach_tps(ebpf, &tps, &aya_btf)?;
    log::debug!(
        "startup: attached at {:?} (rss {} kB)",
        t0.elapsed(),
        crate::kernel::rss_kb()
    );
    Ok(())
}

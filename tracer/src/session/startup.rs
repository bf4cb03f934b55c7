//! Start-up: the programs loaded with the run's flows (shared by trace,
//! compare and drops), rule tracing armed, and, once the programs are
//! ready, what names and explains the packets.
use std::time::Instant;

use tracer_common::Filter;

use super::{read::Intake, Session, TraceOptions};
use crate::{
    diagnose::Reporter,
    error::Error,
    evidence::Evidence,
    kernel::{
        btf::KernelBtf,
        drop_reason::{DropReasonError, DropReasons},
        kallsyms::Kallsyms,
    },
    loader::{LoadError, LoadOptions, Tracer},
    model::Flows,
    names::{Containers, EngineLookup, EngineSources, Interfaces, NetnsNames, View},
    render::{pcapng::PcapWriter, Stats},
    ruletrace::{Follow, NetnsTarget, Offloads, RuleWatch},
    signals::StopSignals,
};

/// The running kernel's BTF, read and parsed once for the whole run.
fn kernel_btf() -> Result<KernelBtf, Error> {
    Ok(KernelBtf::load().map_err(LoadError::from)?)
}

/// Loads and attaches the programs that follow `flows`. Hands back the kernel's BTF too, for what else the run
/// reads from it; the caller lets it go after.
pub fn load_programs(load: &LoadOptions, flows: &Flows) -> Result<(Tracer, KernelBtf), Error> {
    let btf = kernel_btf()?;
    let tracer = Tracer::load(load, &Filter::from(flows), &btf)?;
    Ok((tracer, btf))
}

/// Names what the kernel side only knows as numbers.
pub fn view(btf: &KernelBtf) -> Result<View, Error> {
    Ok(view_with(drop_reasons(btf)?, NetnsNames::load()))
}

/// The drop reasons' names, from the kernel's BTF.
fn drop_reasons(btf: &KernelBtf) -> Result<DropReasons, Error> {
    match DropReasons::from_kernel(btf) {
        Ok(r) => Ok(r),
        // Before 5.17: drops carry no reason, and the rest still works.
        Err(e @ DropReasonError::NoDropReasons) => {
            eprintln!("pathtrace: {e}");
            Ok(DropReasons::default())
        }
        Err(e) => Err(Error::Kernel(e.to_string())),
    }
}

/// The rest of [`view`], around drop-reason names already read.
fn view_with(reasons: DropReasons, netns: NetnsNames) -> View {
    let syms = match Kallsyms::load() {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("kernel symbols unavailable, drop locations and hooks will be missing: {e}");
            None
        }
    };
    View {
        reasons,
        syms,
        netns,
        interfaces: Interfaces::new(),
    }
}

/// Logs how far start-up got, and when.
fn reached(t0: Instant, step: &str) {
    log::debug!(
        "startup: {step} at {:?} (rss {} kB)",
        t0.elapsed(),
        crate::kernel::rss_kb()
    );
}

/// Says once each namespace where rule tracing could not start.
#[derive(Default)]
pub(super) struct Warnings {
    said: usize,
}

impl Warnings {
    pub fn say(&mut self, rules: &RuleWatch) {
        for w in &rules.warnings[self.said..] {
            eprintln!("pathtrace: {w}; the rest of the trace still works");
        }
        self.said = rules.warnings.len();
    }
}

/// "tier X", with the better tiers the kernel refused and why.
fn announce_tier(tracer: &Tracer) {
    let why: Vec<String> = tracer
        .refused
        .iter()
        .map(|(t, w)| format!("{t}: {w}"))
        .collect();
    eprintln!(
        "pathtrace: tier {}{}",
        tracer.tier,
        if why.is_empty() {
            String::new()
        } else {
            format!(" (refused: {})", why.join("; "))
        }
    );
}

/// Rule tracing, before the first packet: in the namespaces asked for, and
/// where the flow's destinations likely take it.
struct Rules {
    watch: RuleWatch,
    warnings: Warnings,
    follow: Follow,
    netns: NetnsNames,
    evidence: Evidence,
    /// What arming has to say, told after the tier line.
    lines: Vec<String>,
}

/// Arms rule tracing and reads the counter baselines. It touches nothing
/// the programs do, so it runs while they load; it tells nothing itself
/// (see [`Rules::tell`]).
fn arm_rules(opts: &TraceOptions, t0: Instant) -> Rules {
    let mut watch = RuleWatch::start(&opts.rule_netns, &opts.filters);
    reached(t0, "rule tracing started");
    let mut follow = Follow::new(opts.follow && !opts.rule_netns.is_empty());
    let mut netns = NetnsNames::load();
    let dsts: Vec<std::net::IpAddr> = opts
        .filters
        .iter()
        .filter_map(|f| f.dst)
        .filter(|c| u32::from(c.prefix) == if c.addr.is_ipv4() { 32 } else { 128 })
        .map(|c| c.addr)
        .collect();
    let (early, bound) = follow.arm_likely(&mut watch, &mut netns, &dsts);
    let mut lines: Vec<String> = bound.into_iter().collect();
    if !early.is_empty() {
        lines.push(format!(
            "rule tracing armed before the first packet in {}",
            early.join(", ")
        ));
    }
    // Counter baselines of the likely path before "ready", of the other
    // namespaces just after: a loss the kernel counts but gives no reason
    // for is told by what rose after this.
    let own = crate::names::own_netns();
    let (first, later) = netns
        .known_paths()
        .into_iter()
        .partition(|(ino, _)| watch.is_armed(*ino) || Some(*ino) == own);
    let mut evidence = Evidence::start(first, later);
    evidence.settle_baselines();
    reached(t0, "likely path armed and counter baselines read");
    Rules {
        watch,
        warnings: Warnings::default(),
        follow,
        netns,
        evidence,
        lines,
    }
}

impl Rules {
    /// Says what arming found: where rule tracing could not start, and
    /// where it was armed.
    fn tell(&mut self) {
        self.warnings.say(&self.watch);
        for line in self.lines.drain(..) {
            eprintln!("pathtrace: {line}");
        }
    }
}

impl Session {
    /// Everything up to "ready", then the names: they are not on the path
    /// to "ready", the events wait in the ring buffer meanwhile.
    pub(super) fn start(opts: &TraceOptions) -> Result<Self, Error> {
        let t0 = Instant::now();
        // The engines are asked from the start, on their own thread: a slow
        // engine API, or the name tables loaded after "ready", would
        // otherwise hold the first packets' names back past their wait.
        let engines = EngineLookup::start(
            EngineSources {
                sockets: opts.engine_sockets.clone(),
                pinned: opts.engines_pinned,
                own_netns: NetnsTarget::current().ok().map(|t| t.inode),
            },
            t0,
        );
        let pcap = opts
            .pcap
            .as_deref()
            .map(PcapWriter::create)
            .transpose()
            .map_err(|e| Error::Usage(e.to_string()))?;
        // Arming visits every namespace, loading waits on the verifier:
        // side by side, "ready" costs the longer of the two, not their sum.
        let (loaded, rules) = std::thread::scope(|s| {
            let arming = s.spawn(|| arm_rules(opts, t0));
            let loaded = load_programs(&opts.load, &opts.filters);
            reached(t0, "programs attached");
            (loaded, arming.join())
        });
        let mut rules = rules.map_err(|_| Error::Runtime("arming rule tracing failed".into()))?;
        let (mut tracer, btf) = loaded?;
        let reader = tracer.events()?;
        announce_tier(&tracer);
        rules.tell();
        let signals = StopSignals::install()?;
        let what: Vec<String> = opts.filters.iter().map(ToString::to_string).collect();
        eprintln!("pathtrace: ready, tracing {}", what.join(" | "));
        // The kernel's BTF is let go before the symbol table is read, so the
        // two are never resident at once.
        let reasons = drop_reasons(&btf)?;
        drop(btf);
        crate::kernel::release_freed_memory();
        let view = view_with(reasons, rules.netns);
        crate::kernel::release_freed_memory();
        reached(t0, "names loaded");
        let reporter = Reporter::new(&opts.filters, Containers::default(), rules.evidence);
        Ok(Self {
            intake: Intake::default(),
            reporter,
            engines,
            view,
            signals,
            follow: rules.follow,
            offloads: Offloads::default(),
            rules: rules.watch,
            warnings: rules.warnings,
            reader,
            stats: Stats {
                tier: tracer.tier,
                ..Default::default()
            },
            tracer,
            pcap,
        })
    }
}

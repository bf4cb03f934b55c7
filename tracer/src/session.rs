//! One tracing run: load, read events, group them into packets, print.
use std::{
    io::Write,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, Notify};

use crate::{
    diagnose::{Outcomes, Report, Reporter},
    error::Error,
    events::{decode, decode_bytes, decode_conntrack, Hop, HopKind, Pending},
    kernel::{
        btf::KernelBtf,
        drop_reason::{DropReasonError, DropReasons},
        hook_infer,
        kallsyms::Kallsyms,
    },
    loader::{LoadError, LoadOptions, ObjectLoader, Tracer},
    model::FlowFilter,
    names::View,
    names::{Containers, EngineLookup, EngineSources, Interfaces, NetnsNames},
    render::{
        json,
        pcapng::{self, PcapWriter},
        text, Stats,
    },
    ruletrace::{self, Follow, NetnsTarget, RuleWatch},
    signals::StopSignals,
    track::{Packet, Tracker},
};

pub struct TraceOptions {
    pub filters: Vec<FlowFilter>,
    pub json: bool,
    pub color: bool,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub load: LoadOptions,
    /// Namespaces to trace firewall rules in; empty: no rule tracing.
    pub rule_netns: Vec<NetnsTarget>,
    /// Start rule tracing in each namespace a packet enters that has rules.
    pub follow: bool,
    /// Docker-compatible engine API sockets, asked for container names.
    pub engine_sockets: Vec<PathBuf>,
    /// `engine_sockets` came from --docker-socket or DOCKER_HOST: engines
    /// found through their processes in this namespace are not asked.
    pub engines_pinned: bool,
    /// Also write pcap-ng here (`-`: standard output).
    pub pcap: Option<PathBuf>,
}

/// Where text and JSON go: standard output, or standard error while
/// `--pcap -` has standard output.
pub fn text_out(pcap: Option<&std::path::Path>) -> std::io::BufWriter<Box<dyn Write>> {
    std::io::BufWriter::new(if pcap.is_some_and(pcapng::is_stdout) {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout().lock())
    })
}

/// The running kernel's BTF, read and parsed once for the whole run.
pub fn kernel_btf() -> Result<KernelBtf, Error> {
    Ok(KernelBtf::load().map_err(LoadError::from)?)
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

/// Kernel helpers that free a list of packets one by one. Before 6.3
/// (commit a4650da2a2d6, "net: fix call location in kfree_skb_list_reason")
/// they called `kfree_skb_reason()` per packet, so the drop's location is
/// inside them (on Debian 12's 6.1, `kfree_skb_list_reason+0x…` for a packet
/// to a device without carrier), not in the function that gave up the packet.
const LIST_FREES: &[&str] = &["kfree_skb_list_reason", "kfree_skb_list"];

/// Takes in the container names the engine lookups found since last asked.
fn take_engine_answers(engines: &mut EngineLookup, reporter: &mut Reporter, view: &mut View) {
    for found in engines.answers() {
        reporter.containers.merge(found);
        view.netns.set_containers(&reporter.containers);
    }
}

/// How long a run, told to stop, waits at most for the rule watchers and
/// engine lookups to hand over what they have.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Names the hop's interface, and completes a drop from its kernel stack:
/// the function that gave up the packet when a list-freeing helper freed
/// it, and the netfilter hook.
pub fn enrich(hop: &mut Hop, view: &mut View) {
    view.name_interface(hop);
    if hop.kind != HopKind::Drop {
        return;
    }
    let Some(syms) = view.syms.as_ref() else {
        return;
    };
    let name_of = |a: u64| syms.symbolize(a).map(|(n, _)| n);
    if let Some(helper) = name_of(hop.location).filter(|n| LIST_FREES.contains(n)) {
        // The frame after the helper's own is the return address into its caller.
        let caller = hop
            .stack
            .iter()
            .skip_while(|&&a| name_of(a) != Some(helper))
            .nth(1);
        if let Some(&caller) = caller {
            hop.location = caller;
        }
    }
    if hop.hook.is_some() {
        return;
    }
    let names: Vec<&str> = hop.stack.iter().filter_map(|&a| name_of(a)).collect();
    hop.hook = hook_infer::infer(&names).map(|h| h.hook);
}

/// Where settled packets go: the trace printer, or `compare`.
pub trait PacketSink {
    /// Takes one settled packet; `Ok(true)` ends the run.
    fn packet(&mut self, p: &Packet, view: &mut View, report: &Report) -> std::io::Result<bool>;
    /// Pushes buffered output out (once per tick, not once per packet).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// At exit: the grouped outcomes and the totals.
    fn finish(
        &mut self,
        outcomes: &Outcomes,
        stats: &Stats,
        view: &mut View,
    ) -> std::io::Result<()>;
}

/// The trace's own output: a block (or JSON records) per packet.
pub struct Printer<'a, W: Write> {
    pub out: &'a mut W,
    pub json: bool,
    pub color: bool,
    /// Stop after this many packets.
    pub count: Option<u64>,
    printed: u64,
}

impl<'a, W: Write> Printer<'a, W> {
    pub fn new(out: &'a mut W, json: bool, color: bool, count: Option<u64>) -> Self {
        Self {
            out,
            json,
            color,
            count,
            printed: 0,
        }
    }
}

impl<W: Write> PacketSink for Printer<'_, W> {
    fn packet(&mut self, p: &Packet, view: &mut View, report: &Report) -> std::io::Result<bool> {
        if self.json {
            for h in &p.hops {
                writeln!(self.out, "{}", json::hop(p.id, h, view))?;
            }
            writeln!(self.out, "{}", json::packet_with(p, view, report))?;
        } else {
            let style = text::Style { color: self.color };
            write!(self.out, "{}", text::packet(p, view, style))?;
            writeln!(self.out, "{}", text::diagnosis(&report.diagnosis, style))?;
        }
        self.printed += 1;
        Ok(self.count.is_some_and(|c| self.printed >= c))
    }

    fn finish(
        &mut self,
        outcomes: &Outcomes,
        stats: &Stats,
        _view: &mut View,
    ) -> std::io::Result<()> {
        if self.json {
            writeln!(self.out, "{}", json::summary(outcomes))?;
            writeln!(self.out, "{}", json::stats(stats))?;
        } else {
            write!(
                self.out,
                "{}",
                text::summary(outcomes, text::Style { color: self.color })
            )?;
            eprintln!("pathtrace: {}", text::stats(stats));
        }
        self.out.flush()
    }
}

/// What finishes a packet whose fate is settled, once: its rule hits,
/// the namespaces where its rules were traced late, its diagnosis, its
/// capture and its output.
struct Settle<'a, S: PacketSink> {
    rules: &'a mut RuleWatch,
    follow: &'a Follow,
    reporter: &'a mut Reporter,
    view: &'a mut View,
    pcap: &'a mut Option<PcapWriter<Box<dyn std::io::Write + Send>>>,
    sink: &'a mut S,
    stats: &'a mut Stats,
}

impl<S: PacketSink> Settle<'_, S> {
    /// Finishes `p`; whether the sink has had all it wants.
    fn packet(&mut self, mut p: crate::track::Packet) -> Result<bool, Error> {
        ruletrace::attach(self.rules, &mut p);
        self.follow.mark_late(self.rules, &mut p);
        self.stats.packets += 1;
        let report = self.reporter.packet(&mut p, self.view);
        if let Some(w) = self.pcap.as_mut() {
            w.packet(&p, self.view).map_err(Error::Output)?;
        }
        self.sink
            .packet(&p, self.view, &report)
            .map_err(Error::Output)
    }
}

/// Runs until `stop` is notified, the count or duration is reached, or a
/// signal arrives. `ready` fires once the programs are attached.
pub async fn run<S: PacketSink>(
    opts: &TraceOptions,
    sink: &mut S,
    stop: Arc<Notify>,
    ready: Option<oneshot::Sender<()>>,
) -> Result<Stats, Error> {
    let t0 = Instant::now();
    let kernel_filters =
        crate::model::kernel_filter(&opts.filters).map_err(|e| Error::Usage(e.to_string()))?;
    let loader = ObjectLoader::new();
    let btf = kernel_btf()?;
    let mut pcap = opts
        .pcap
        .as_deref()
        .map(PcapWriter::create)
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut tracer = Tracer::load(loader, &opts.load, &kernel_filters, &btf)?;

    let mut reader = tracer.events()?;
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
    log::debug!(
        "startup: programs attached at {:?} (rss {} kB)",
        t0.elapsed(),
        crate::kernel::rss_kb()
    );
    let mut rules = RuleWatch::start(&opts.rule_netns, &opts.filters);
    log::debug!(
        "startup: rule tracing started at {:?} (rss {} kB)",
        t0.elapsed(),
        crate::kernel::rss_kb()
    );
    let mut warned = 0;
    let mut say_warnings = |rules: &RuleWatch| {
        for w in &rules.warnings[warned..] {
            eprintln!("pathtrace: {w}; the rest of the trace still works");
        }
        warned = rules.warnings.len();
    };
    say_warnings(&rules);
    let mut follow = Follow::new(opts.follow && !opts.rule_netns.is_empty());
    let mut netns_names = NetnsNames::load();
    // Counter baselines before "ready": a loss the kernel counts but gives
    // no reason for is told by what rose after this.
    let mut evidence = crate::evidence::Evidence::start(netns_names.known_paths());
    let dsts: Vec<std::net::IpAddr> = opts
        .filters
        .iter()
        .filter_map(|f| f.dst)
        .filter(|c| u32::from(c.prefix) == if c.addr.is_ipv4() { 32 } else { 128 })
        .map(|c| c.addr)
        .collect();
    let early = follow.arm_likely(&mut rules, &mut netns_names, &dsts);
    if !early.is_empty() {
        eprintln!(
            "pathtrace: rule tracing armed before the first packet in {}",
            early.join(", ")
        );
    }
    say_warnings(&rules);
    evidence.settle_baselines();
    log::debug!(
        "startup: likely path armed and counter baselines read at {:?} (rss {} kB)",
        t0.elapsed(),
        crate::kernel::rss_kb()
    );
    let mut signals = StopSignals::install()?;
    let what: Vec<String> = opts.filters.iter().map(ToString::to_string).collect();
    eprintln!("pathtrace: ready, tracing {}", what.join(" | "));
    if let Some(r) = ready {
        let _ = r.send(());
    }
    // Naming (BTF enums, kallsyms, /proc) is not on the path to "ready": the
    // events wait in the ring buffer meanwhile.
    // The kernel's BTF is let go before the symbol table is read, so the
    // two are never resident at once.
    let reasons = drop_reasons(&btf)?;
    drop(btf);
    crate::kernel::release_freed_memory();
    let mut view = view_with(reasons, netns_names);
    crate::kernel::release_freed_memory();
    log::debug!(
        "startup: names loaded at {:?} (rss {} kB)",
        t0.elapsed(),
        crate::kernel::rss_kb()
    );

    let sources = EngineSources {
        sockets: opts.engine_sockets.clone(),
        pinned: opts.engines_pinned,
        own_netns: NetnsTarget::current().ok().map(|t| t.inode),
    };
    let mut engines = EngineLookup::start(sources);
    let mut reporter = Reporter::new(opts.filters.clone(), Containers::default(), evidence);
    let mut tracker = Tracker::default();

    let mut stats = Stats {
        tier: tracer.tier.to_string(),
        ..Default::default()
    };
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut pending = Pending::default();
    let mut handle = |bytes: &[u8],
                      tracker: &mut Tracker,
                      stats: &mut Stats,
                      view: &mut View,
                      follow: &mut Follow,
                      engines: &mut EngineLookup| {
        if let Some(r) = decode_bytes(bytes) {
            pending.insert(r);
            return;
        }
        if let Some(r) = decode_conntrack(bytes) {
            pending.insert_ct(r);
            return;
        }
        stats.events += 1;
        match decode(bytes) {
            Ok(mut hop) => {
                pending.attach(&mut hop);
                enrich(&mut hop, view);
                follow.saw(hop.netns);
                engines.saw(hop.netns);
                tracker.push(hop, Instant::now());
            }
            Err(e) => {
                stats.bad += 1;
                log::debug!("undecodable event: {e}");
            }
        }
    };
    let mut done = false;
    'run: loop {
        tokio::select! {
            r = reader.next_batch(|b| handle(b, &mut tracker, &mut stats, &mut view, &mut follow, &mut engines)) => {
                r.map_err(|e| Error::Runtime(format!("reading events: {e}")))?;
            }
            _ = tick.tick() => {
                for line in follow.arm_new(&mut rules, &mut view.netns) {
                    eprintln!("pathtrace: {line}");
                }
                say_warnings(&rules);
                // The rule watchers' progress before `poll`: what they handed
                // over before marking it is then in the channel.
                let rules_horizon = rules.caught_up_to();
                rules.poll();
                take_engine_answers(&mut engines, &mut reporter, &mut view);
                let horizon = [rules_horizon, engines.caught_up_to()].into_iter().flatten().min();
                let mut settle = Settle {
                    rules: &mut rules,
                    follow: &follow,
                    reporter: &mut reporter,
                    view: &mut view,
                    pcap: &mut pcap,
                    sink: &mut *sink,
                    stats: &mut stats,
                };
                for p in tracker.settled_after(Instant::now(), horizon) {
                    done = settle.packet(p)?;
                    if done {
                        break 'run;
                    }
                }
                sink.flush().map_err(Error::Output)?;
                if let Some(w) = pcap.as_mut() {
                    w.flush().map_err(Error::Output)?;
                }
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = signals.recv() => break,
            _ = stop.notified() => break,
        }
    }
    reader.drain_now(|b| {
        handle(
            b,
            &mut tracker,
            &mut stats,
            &mut view,
            &mut follow,
            &mut engines,
        )
    });
    if !done {
        follow.ended_before_arming(&mut view.netns);
        // Let the rule watchers hand over what the kernel already sent, and
        // the engine lookups their answers (at most `EXIT_WAIT`: the user is
        // waiting for the exit).
        let stopped = Instant::now();
        loop {
            take_engine_answers(&mut engines, &mut reporter, &mut view);
            let waiting = rules.caught_up_to().is_some_and(|h| h < stopped)
                || engines.caught_up_to().is_some();
            if !waiting || stopped.elapsed() >= EXIT_WAIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rules.poll();
        let mut settle = Settle {
            rules: &mut rules,
            follow: &follow,
            reporter: &mut reporter,
            view: &mut view,
            pcap: &mut pcap,
            sink: &mut *sink,
            stats: &mut stats,
        };
        for p in tracker.flush() {
            if settle.packet(p)? {
                break;
            }
        }
    }
    let counters = tracer.counters();
    stats.lost = counters.lost;
    stats.sent = counters.sent;
    stats.evicted = tracer.evicted();
    stats.rule_overflows = rules.overflows();
    if let Some(w) = pcap.as_mut() {
        w.flush().map_err(Error::Output)?;
    }
    sink.finish(&reporter.outcomes, &stats, &mut view)
        .map_err(Error::Output)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::HopKind;

    fn drop_at(location: u64, stack: Vec<u64>) -> Hop {
        Hop {
            t_ns: 1,
            skb: 0x1000,
            track_id: 7,
            kind: HopKind::Drop,
            netns: 1,
            ifindex: 2,
            ifname: "r1".into(),
            hook: None,
            nf_family: 0,
            verdict: None,
            retval: 0,
            reason_raw: 0,
            location,
            tuple: None,
            tcp_flags: 0,
            ip_id: None,
            len: 60,
            filter: 0,
            stack,
            rule: None,
            icmp: None,
            bytes: None,
            ct: None,
        }
    }

    #[test]
    fn a_packet_freed_through_kfree_skb_list_is_located_in_the_caller() {
        // As Debian 12's 6.1 reports a packet to a device without carrier.
        let syms = Kallsyms::parse(
            "ffffffff81a00000 T kfree_skb_reason\n\
             ffffffff81a00200 T kfree_skb_list_reason\n\
             ffffffff81a00400 T skb_dump\n\
             ffffffff81b00000 T __dev_queue_xmit\n\
             ffffffff81b01000 T dev_queue_xmit_nit\n",
        )
        .expect("kallsyms");
        let mut view = View {
            reasons: DropReasons::default(),
            syms: Some(syms),
            netns: NetnsNames::default(),
            interfaces: Interfaces::new(),
        };
        let mut hop = drop_at(
            0xffffffff81a00230,
            vec![0xffffffff81a00050, 0xffffffff81a00230, 0xffffffff81b00456],
        );
        enrich(&mut hop, &mut view);
        assert_eq!(
            view.location(&hop).as_deref(),
            Some("__dev_queue_xmit+0x456")
        );
        // A drop located anywhere else keeps its location.
        let mut other = drop_at(0xffffffff81b00010, vec![0xffffffff81b00010]);
        enrich(&mut other, &mut view);
        assert_eq!(other.location, 0xffffffff81b00010);
    }
}

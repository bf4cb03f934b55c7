//! Watcher threads: one per namespace, each owning its tracers.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    events::{monotonic_at, monotonic_ns, RuleHit},
    model::{Family, Hook},
    model::{FlowFilter, Verdict},
    netfilter::{
        family_name, legacy_sweep, LegacyTracer, NfError, RuleBook, RuleTracer, RulesetChange,
        TraceEvent, TraceKind,
    },
};

/// A network namespace to trace rules in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsTarget {
    /// `None`: the namespace pathtrace runs in.
    pub path: Option<PathBuf>,
    pub inode: u32,
    pub label: String,
}

/// Why `--netns SPEC` names no namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("--netns needs a namespace name, a container name or a path")]
    BadSpec,
    #[error("no network namespace or container named '{0}'")]
    Unknown(String),
    #[error("network namespace '{spec}' not found ({}: {source})", path.display())]
    NotFound {
        spec: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NetnsTarget {
    pub fn current() -> std::io::Result<Self> {
        let inode = std::fs::metadata("/proc/thread-self/ns/net")?.ino() as u32;
        Ok(Self {
            path: None,
            inode,
            label: "this namespace".into(),
        })
    }

    /// `NAME` (an `ip netns` name, else a Docker container's name) or a
    /// path such as `/proc/PID/ns/net`.
    pub fn named(spec: &str, engine_sockets: &[PathBuf]) -> Result<Self, NetnsError> {
        if spec.is_empty() || spec.len() > 4096 || spec.contains('\0') {
            return Err(NetnsError::BadSpec);
        }
        let path = if spec.contains('/') {
            PathBuf::from(spec)
        } else {
            let named = Path::new("/run/netns").join(spec);
            match named.exists() {
                true => named,
                false => engine_sockets
                    .iter()
                    .filter_map(|s| crate::names::DockerApi::new(s).containers().ok())
                    .flatten()
                    .find(|c| c.name == spec || c.id.starts_with(spec))
                    .and_then(|c| c.pid)
                    .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
                    .ok_or_else(|| NetnsError::Unknown(spec.to_owned()))?,
            }
        };
        let meta = std::fs::metadata(&path).map_err(|source| NetnsError::NotFound {
            spec: spec.to_owned(),
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path: Some(path),
            inode: meta.ino() as u32,
            label: spec.to_owned(),
        })
    }
}

fn verdict_of(ev: &TraceEvent) -> Verdict {
    match (&ev.kind, &ev.verdict) {
        (TraceKind::Return, _) => Verdict::Return,
        (_, Some(v)) => v.clone(),
        (_, None) => Verdict::Continue,
    }
}

/// IPv4 identification from a network header.
fn ip_id(net: &[u8]) -> Option<u16> {
    (net.len() >= 6 && net[0] >> 4 == 4).then(|| u16::from_be_bytes([net[4], net[5]]))
}

fn hit(
    ev: TraceEvent,
    netns: u32,
    legacy: bool,
    ip_id: Option<u16>,
    queued_after: Instant,
) -> RuleHit {
    RuleHit {
        netns,
        legacy,
        verdict: verdict_of(&ev),
        policy: ev.kind == TraceKind::Policy,
        family: Family::from_nfproto(ev.family),
        hook: ev.hook.and_then(Hook::from_nf_inet),
        handle: ev.rule_handle,
        index: ev.rule.as_ref().map(|r| r.index),
        text: ev.rule.map(|r| r.text),
        table: ev.table,
        chain: ev.chain,
        tuple: ev.tuple,
        ip_id,
        trace_id: ev.id,
        received_ns: monotonic_at(ev.received),
        queued_after_ns: monotonic_at(queued_after),
        received: ev.received,
    }
}

fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Whether iptables-legacy tables exist in the namespace.
fn legacy_in_use(path: Option<&Path>) -> bool {
    let read =
        || std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
    let names = match path {
        None => read(),
        Some(p) => in_netns::call(p, read).unwrap_or_default(),
    };
    !names.trim().is_empty()
}

enum Source {
    Nft(RuleTracer, RuleBook),
    Legacy(LegacyTracer),
}

impl Source {
    fn fd(&self) -> i32 {
        match self {
            Self::Nft(t, _) => t.as_raw_fd(),
            Self::Legacy(t) => t.as_raw_fd(),
        }
    }

    fn overflows(&self) -> u64 {
        match self {
            Self::Nft(t, _) => t.overflows(),
            Self::Legacy(t) => t.overflows(),
        }
    }

    fn is_legacy(&self) -> bool {
        matches!(self, Self::Legacy(_))
    }

    /// The events pending, named, and the ruleset changes heard meanwhile.
    fn read(&mut self) -> Result<(Vec<TraceEvent>, Vec<RulesetChange>), NfError> {
        match self {
            Self::Nft(t, book) => {
                let mut evs = t.read_pending()?;
                for ev in &mut evs {
                    book.annotate(ev);
                }
                Ok((evs, t.take_changes()))
            }
            Self::Legacy(t) => Ok((t.read_pending()?, Vec::new())),
        }
    }
}

/// Changes to one table closer together than this are told in one line.
const CHANGES_SAID_EVERY: Duration = Duration::from_secs(5);

/// One line per table that changed, at most once per [`CHANGES_SAID_EVERY`].
fn tell_changes(
    changes: Vec<RulesetChange>,
    said: &mut HashMap<(u8, String), Instant>,
    ctx: &Shared,
) {
    for c in changes {
        let by = match (&c.comm, c.pid) {
            (Some(comm), Some(pid)) => format!(" by {comm} (pid {pid})"),
            (Some(comm), None) => format!(" by {comm}"),
            _ => String::new(),
        };
        let mut fresh = Vec::new();
        for t in c.tables {
            if said
                .get(&t)
                .is_some_and(|at| at.elapsed() < CHANGES_SAID_EVERY)
            {
                continue;
            }
            fresh.push(format!("{} {}", family_name(t.0), t.1));
            said.insert(t, Instant::now());
        }
        if !fresh.is_empty() {
            let _ = ctx.notices.send(format!(
                "rules changed in {} during the trace (table {}{by}): \
                 each packet shows its rules' index and text as they were when it passed",
                ctx.label,
                fresh.join(", table ")
            ));
        }
    }
}

/// What a watcher thread shares with the session.
struct Shared {
    tx: mpsc::Sender<RuleHit>,
    notices: mpsc::Sender<String>,
    /// Microseconds after `base` up to which this watcher has handed over
    /// every event the kernel queued.
    drained: Arc<AtomicU64>,
    base: Instant,
    stop: Arc<AtomicBool>,
    overflows: Arc<AtomicU64>,
    netns: u32,
    label: String,
    /// When the source started tracing: nothing it reads was queued before.
    since: Instant,
}

/// Reads one source until told to stop, naming each rule as it comes.
fn watch_loop(mut src: Source, ctx: Shared) {
    // Only a walk's first event carries the headers.
    let mut walk_ip_id: HashMap<u32, Option<u16>> = HashMap::new();
    let mut overflows_seen = 0;
    // The socket was empty then: what a read returns was queued later.
    let mut empty_at = ctx.since;
    let mut changes_said = HashMap::new();
    let legacy = src.is_legacy();
    while !ctx.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if !wait_readable(src.fd(), Duration::from_millis(20)) {
            // Nothing arrived: everything the kernel sent before the wait is in.
            ctx.drained.store(
                started.saturating_duration_since(ctx.base).as_micros() as u64,
                Ordering::Release,
            );
            empty_at = started;
            continue;
        }
        // A read drains the socket, so the next one returns only what was
        // queued after this moment.
        let queued_after = std::mem::replace(&mut empty_at, Instant::now());
        let evs = match src.read() {
            Ok((evs, changes)) => {
                tell_changes(changes, &mut changes_said, &ctx);
                evs
            }
            Err(e) => {
                log::warn!("rule tracing in {} stopped: {e}", ctx.label);
                break;
            }
        };
        let now = src.overflows();
        if now > overflows_seen {
            log::warn!(
                "rule tracing in {}: the kernel dropped trace messages (socket full); carrying on",
                ctx.label
            );
            ctx.overflows
                .fetch_add(now - overflows_seen, Ordering::Relaxed);
            overflows_seen = now;
        }
        for ev in evs {
            let id = match ip_id(&ev.network_header) {
                Some(id) => *walk_ip_id.entry(ev.id).insert_entry(Some(id)).get(),
                None => walk_ip_id.get(&ev.id).copied().flatten(),
            };
            if walk_ip_id.len() > 4096 {
                walk_ip_id.clear();
            }
            log::trace!(
                "rule hit {} {} {:?} id {id:?} tuple {:?}",
                ev.table,
                ev.chain,
                ev.rule_handle,
                ev.tuple
            );
            let _ = ctx.tx.send(hit(ev, ctx.netns, legacy, id, queued_after));
        }
        // All that was queued before this read is named and handed over.
        let done_upto = started.saturating_duration_since(ctx.base).as_micros() as u64;
        ctx.drained.store(done_upto, Ordering::Release);
    }
    // Nothing more will come from here: hold no packet back.
    ctx.drained.store(u64::MAX, Ordering::Release);
}

/// The tracers of one namespace (nftables, and iptables-legacy where it is
/// in use), with a line for each that could not start.
fn open_sources(target: &NetnsTarget, filters: &[FlowFilter]) -> (Vec<Source>, Vec<String>) {
    let path = target.path.as_deref();
    let mut sources = Vec::new();
    let mut warnings = Vec::new();
    match RuleTracer::start(path, filters) {
        Ok(t) => sources.push(Source::Nft(t, RuleBook::new(path))),
        Err(e) => warnings.push(format!("no nftables rule tracing in {}: {e}", target.label)),
    }
    if legacy_in_use(path) {
        let _ = legacy_sweep(path);
        match LegacyTracer::start(path, filters) {
            Ok(t) => sources.push(Source::Legacy(t)),
            Err(e) => warnings.push(format!(
                "no iptables-legacy rule tracing in {}: {e}",
                target.label
            )),
        }
    }
    (sources, warnings)
}

/// Rule tracing in a set of namespaces, for one session.
pub struct RuleWatch {
    rx: mpsc::Receiver<RuleHit>,
    tx: mpsc::Sender<RuleHit>,
    /// The run's flows, each traced by its flag cover.
    filters: Vec<FlowFilter>,
    /// Namespaces armed (or tried), with when (monotonic ns).
    armed: HashMap<u32, u64>,
    /// Each armed namespace, with what stops its watchers and which rule
    /// engines are traced there.
    places: HashMap<u32, Place>,
    notices_tx: mpsc::Sender<String>,
    notices_rx: mpsc::Receiver<String>,
    gone_checked: Option<Instant>,
    overflows: Arc<AtomicU64>,
    /// One progress mark per watcher thread (see [`Shared::drained`]).
    drained: Vec<Arc<AtomicU64>>,
    base: Instant,
    threads: Vec<JoinHandle<()>>,
    /// Hits no packet claimed yet, by the IPv4 id of their packet, each
    /// with its place in the order they arrived (each watcher sends in the
    /// kernel's order).
    pending: HashMap<Option<u16>, Vec<(u64, RuleHit)>>,
    arrived: u64,
    /// One line per namespace where rule tracing could not start.
    pub warnings: Vec<String>,
    pub active: usize,
}

/// A namespace rule tracing was started in.
struct Place {
    target: NetnsTarget,
    stop: Arc<AtomicBool>,
    nft: bool,
    legacy: bool,
}

/// How often armed namespaces are checked for having gone.
const GONE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// At most this many namespaces get rule tracing in one run.
pub const MAX_ARMED: usize = 64;

/// Why a namespace did not get rule tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmRefused {
    /// Already armed (or tried) in this run.
    Already,
    /// [`MAX_ARMED`] namespaces are armed.
    Bound,
}

impl RuleWatch {
    pub fn start(targets: &[NetnsTarget], filters: &[FlowFilter]) -> Self {
        let (tx, rx) = mpsc::channel();
        let (notices_tx, notices_rx) = mpsc::channel();
        let mut watch = Self {
            rx,
            tx,
            filters: filters.to_vec(),
            places: HashMap::new(),
            notices_tx,
            notices_rx,
            gone_checked: None,
            overflows: Arc::default(),
            drained: Vec::new(),
            base: Instant::now(),
            threads: Vec::new(),
            pending: HashMap::new(),
            arrived: 0,
            armed: HashMap::new(),
            warnings: Vec::new(),
            active: 0,
        };
        for target in targets {
            let _ = watch.arm(target);
        }
        watch
    }

    /// Starts rule tracing in one more namespace; what could not start is
    /// added to [`RuleWatch::warnings`].
    pub fn arm(&mut self, target: &NetnsTarget) -> Result<(), ArmRefused> {
        self.admit(target)?;
        let since = Instant::now();
        let (sources, warnings) = open_sources(target, &self.filters);
        self.install(target, since, sources, warnings);
        Ok(())
    }

    /// [`RuleWatch::arm`] for several namespaces, their tracers started
    /// side by side; the labels of those armed.
    pub fn arm_all(&mut self, targets: &[NetnsTarget]) -> Vec<String> {
        let admitted: Vec<&NetnsTarget> =
            targets.iter().filter(|t| self.admit(t).is_ok()).collect();
        let since = Instant::now();
        let filters = &self.filters;
        let opened: Vec<_> = std::thread::scope(|s| {
            let started: Vec<_> = admitted
                .iter()
                .map(|t| s.spawn(move || open_sources(t, filters)))
                .collect();
            started
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (target, (sources, warnings)) in admitted.iter().zip(opened) {
            self.install(target, since, sources, warnings);
        }
        admitted.iter().map(|t| t.label.clone()).collect()
    }

    /// Counts `target` as armed (or tried) from now, unless it already is
    /// or the bound is reached.
    fn admit(&mut self, target: &NetnsTarget) -> Result<(), ArmRefused> {
        if self.armed.contains_key(&target.inode) {
            return Err(ArmRefused::Already);
        }
        if self.armed.len() >= MAX_ARMED {
            return Err(ArmRefused::Bound);
        }
        self.armed.insert(target.inode, monotonic_ns());
        Ok(())
    }

    /// Starts a watcher thread for each source opened in `target`.
    fn install(
        &mut self,
        target: &NetnsTarget,
        since: Instant,
        sources: Vec<Source>,
        warnings: Vec<String>,
    ) {
        self.warnings.extend(warnings);
        let stop = Arc::new(AtomicBool::new(false));
        self.places.insert(
            target.inode,
            Place {
                target: target.clone(),
                stop: stop.clone(),
                nft: sources.iter().any(|s| !s.is_legacy()),
                legacy: sources.iter().any(Source::is_legacy),
            },
        );
        for src in sources {
            let drained = Arc::new(AtomicU64::new(0));
            self.drained.push(drained.clone());
            let ctx = Shared {
                tx: self.tx.clone(),
                notices: self.notices_tx.clone(),
                drained,
                base: self.base,
                stop: stop.clone(),
                overflows: self.overflows.clone(),
                netns: target.inode,
                label: target.label.clone(),
                since,
            };
            self.active += 1;
            self.threads
                .push(std::thread::spawn(move || watch_loop(src, ctx)));
        }
    }

    /// Whether both iptables-legacy and nftables rules are traced in `netns`.
    pub fn traces_both_engines(&self, netns: u32) -> bool {
        self.places.get(&netns).is_some_and(|p| p.nft && p.legacy)
    }

    /// Lines about the ruleset changing in the namespaces traced, since the
    /// last call.
    pub fn take_notices(&mut self) -> Vec<String> {
        self.notices_rx.try_iter().collect()
    }

    /// Stops rule tracing in the armed namespaces that are gone (deleted,
    /// their last process ended: nothing but pathtrace's own sockets holds
    /// them), so that the kernel can free them; one line for each. Looks
    /// at most once a second.
    pub fn let_go_of_gone(&mut self) -> Vec<String> {
        if self
            .gone_checked
            .is_some_and(|t| t.elapsed() < GONE_CHECK_EVERY)
        {
            return Vec::new();
        }
        self.gone_checked = Some(Instant::now());
        let mut gone = Vec::new();
        for (ino, p) in &mut self.places {
            let Some(path) = p.target.path.as_deref() else {
                continue;
            };
            match crate::names::netns_opener(*ino, path) {
                Some(opener) => p.target.path = Some(opener),
                None => gone.push(*ino),
            }
        }
        let mut said = Vec::new();
        for ino in gone {
            let Some(p) = self.places.remove(&ino) else {
                continue;
            };
            // A namespace made later may get the same inode number.
            self.armed.remove(&ino);
            p.stop.store(true, Ordering::Relaxed);
            self.active = self
                .active
                .saturating_sub(usize::from(p.nft) + usize::from(p.legacy));
            said.push(format!(
                "namespace {} is gone (deleted, or its last process ended): rule tracing there \
                 stopped and its sockets are closed, so nothing of pathtrace keeps it; \
                 the trace goes on",
                p.target.label
            ));
        }
        said
    }

    /// When rule tracing started in namespace `netns` (monotonic ns).
    pub fn armed_at(&self, netns: u32) -> Option<u64> {
        self.armed.get(&netns).copied()
    }

    /// Whether rule tracing was started (or tried) in namespace `netns`.
    pub fn is_armed(&self, netns: u32) -> bool {
        self.armed.contains_key(&netns)
    }

    /// Moves what the watchers sent into the pending buffer, forgetting
    /// hits no packet claimed within a minute.
    pub fn poll(&mut self) {
        for hit in self.rx.try_iter() {
            self.arrived += 1;
            self.pending
                .entry(hit.ip_id)
                .or_default()
                .push((self.arrived, hit));
        }
        if let Some(h) = Instant::now().checked_sub(Duration::from_secs(60)) {
            self.pending.retain(|_, hits| {
                hits.retain(|(_, r)| r.received >= h);
                !hits.is_empty()
            });
        }
    }

    /// The time up to which every watcher has handed over all it received:
    /// a packet that ended before it has all its rule hits in. `None` when
    /// no watcher runs.
    pub fn caught_up_to(&self) -> Option<Instant> {
        self.drained
            .iter()
            .filter_map(|d| {
                let upto = d.load(Ordering::Acquire);
                (upto != u64::MAX).then(|| self.base + Duration::from_micros(upto))
            })
            .min()
    }

    /// Trace messages the kernel dropped because a socket was full.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// Removes and returns the pending hits that `keep` selects, in the
    /// order they arrived, looking only at those of the given IPv4 ids (and
    /// those without one); all of them when `ids` is empty.
    pub(super) fn take(
        &mut self,
        ids: &HashSet<u16>,
        mut keep: impl FnMut(&RuleHit) -> bool,
    ) -> Vec<RuleHit> {
        let mut out = Vec::new();
        let mut take_from = |hits: &mut Vec<(u64, RuleHit)>| {
            let mut i = 0;
            while i < hits.len() {
                if keep(&hits[i].1) {
                    out.push(hits.remove(i));
                } else {
                    i += 1;
                }
            }
        };
        if ids.is_empty() {
            self.pending.values_mut().for_each(&mut take_from);
        } else {
            for key in ids.iter().map(|&id| Some(id)).chain([None]) {
                if let Some(hits) = self.pending.get_mut(&key) {
                    take_from(hits);
                }
            }
        }
        out.sort_by_key(|(arrived, _)| *arrived);
        out.into_iter().map(|(_, hit)| hit).collect()
    }
}

impl Drop for RuleWatch {
    fn drop(&mut self) {
        for p in self.places.values() {
            p.stop.store(true, Ordering::Relaxed);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for RuleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleWatch")
            .field("active", &self.active)
            .field(
                "pending",
                &self.pending.values().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(chain: &str, ip_id: Option<u16>, received: Instant) -> RuleHit {
        RuleHit {
            table: "nat".into(),
            ip_id,
            received,
            ..RuleHit::for_test(chain, Verdict::Continue)
        }
    }

    #[test]
    fn a_packets_hits_come_back_in_the_order_the_kernel_sent_them() {
        let mut w = RuleWatch::start(&[], &[]);
        let read = Instant::now();
        // One read: the walk's first event carried the IPv4 id, a later
        // one (another chain's) came without it.
        for h in [
            hit("PREROUTING", None, read),
            hit("DOCKER", Some(5), read),
            hit("FORWARD", Some(5), read),
            hit("DOCKER-USER", None, read),
        ] {
            w.tx.send(h).expect("the watch holds its receiver");
        }
        w.poll();
        let ids = HashSet::from([5]);
        let chains: Vec<String> = w
            .take(&ids, |_| true)
            .into_iter()
            .map(|h| h.chain)
            .collect();
        assert_eq!(chains, ["PREROUTING", "DOCKER", "FORWARD", "DOCKER-USER"]);
    }

    #[test]
    fn the_slowest_running_watcher_sets_the_horizon_and_a_stopped_one_none() {
        let mut w = RuleWatch::start(&[], &[]);
        assert_eq!(w.caught_up_to(), None, "no watcher runs");
        let (slow, fast) = (Arc::new(AtomicU64::new(5)), Arc::new(AtomicU64::new(900)));
        w.drained.extend([slow.clone(), fast]);
        assert_eq!(w.caught_up_to(), Some(w.base + Duration::from_micros(5)));
        slow.store(u64::MAX, Ordering::Release);
        assert_eq!(
            w.caught_up_to(),
            Some(w.base + Duration::from_micros(900)),
            "a watcher that stopped holds nothing back"
        );
    }
}

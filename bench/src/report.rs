//! The results: targets, a Markdown report and JSON.
use std::{fmt::Write as _, time::Instant};

use serde::Serialize;

use crate::{
    bpf::{MapInfo, ProgFd},
    cost::{self, Cost, ToolCost},
    drops::DropsCost,
    peers::{AttachPoint, Tools},
    scale::Scale,
    startup::{self, Startup, READY_RULES, READY_TRACEPOINT},
    stats::{show, Summary},
    throughput::CondResult,
    tiers::TierCost,
    traced::{Ladder, Traced},
    Ctx, Plan, READY_AUTO_NORULES, READY_BT_BEGIN,
};

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpus: usize,
    pub docker: &'static str,
    pub bpftrace: Option<String>,
    pub pathtrace: String,
    /// `git describe --always --dirty` of the workspace, when available.
    pub source: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReadyRow {
    pub variant: String,
    pub ms: Summary,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MemorySummary {
    /// Peak RSS (VmHWM) over runs under load, KiB.
    pub pathtrace_peak_rss_kib: Option<Summary>,
    /// VmRSS at the moment the peak was read, under load.
    pub pathtrace_rss_under_load_kib: Option<Summary>,
    /// VmHWM right after the ready line (no traffic yet).
    pub pathtrace_ready_peak_kib: Option<Summary>,
    pub bpftrace_peak_rss_kib: Option<Summary>,
    pub pathtrace_maps: Vec<MapInfo>,
    pub pathtrace_maps_bytes: u64,
    pub bpftrace_maps: Vec<MapInfo>,
    pub bpftrace_maps_bytes: u64,
    /// bpftrace's event buffers are perf buffers, not maps: (BPFTRACE_PERF_RB_PAGES,
    /// 64 by default, + 1) pages per CPU.
    pub bpftrace_perf_buffer_bytes: u64,
    pub pathtrace_progs: Vec<ProgFd>,
    pub bpftrace_progs: Vec<ProgFd>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub threshold: String,
    pub measured: String,
    /// None: not measured in this run.
    pub pass: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub tool: &'static str,
    pub unix_time: u64,
    pub plan: Plan,
    pub machine: Machine,
    pub lab_start_secs: f64,
    /// Where pathtrace's programs are attached, and the peer's probes.
    pub pathtrace_attach: Vec<String>,
    pub peer_attach: Vec<AttachPoint>,
    pub cost: Option<Cost>,
    /// Kernel time per dropped packet of `drops --quiet --metrics`.
    pub drops: Option<DropsCost>,
    /// `--tiers`: the kernel cost section by tier, instead of the others.
    pub tiers: Option<TierCost>,
    pub throughput: Option<Vec<CondResult>>,
    pub traced: Option<Traced>,
    pub startup: Option<Startup>,
    /// The cost curves, measured after the lab is gone.
    pub scale: Option<Scale>,
    /// The curves' PNG files, beside the report.
    pub plots: Vec<String>,
    pub ready_ms: Vec<ReadyRow>,
    pub memory: MemorySummary,
    pub targets: Vec<Target>,
    pub section_secs: Vec<(String, f64)>,
    pub teardown_secs: f64,
    /// The 1-minute load average when the run started and ended.
    pub load_start: Option<String>,
    pub load_end: Option<String>,
    pub wall_secs: f64,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

pub fn git_describe() -> Option<String> {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C")
        .arg(crate::workspace_root())
        .args(["describe", "--always", "--dirty"]);
    crate::children::output(cmd, std::time::Duration::from_secs(10))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_string)
}

fn perf_buffer_bytes() -> u64 {
    let pages: u64 = std::env::var("BPFTRACE_PERF_RB_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    (pages + 1) * 4096 * cpus
}

/// Events read after the kernel counters were: a late free of a tracked packet.
fn events_ok(diff: i64) -> bool {
    (0..=16).contains(&diff)
}

fn gbit(v: f64) -> String {
    format!("{:.2}", v / 1e9)
}
fn kpps(v: f64) -> String {
    format!("{:.1}", v / 1e3)
}
fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}
fn ms(v: f64) -> String {
    format!("{v:.0}")
}
pub fn mib(v: f64) -> String {
    format!("{:.1}", v / 1024.0)
}
fn int(v: f64) -> String {
    format!("{v:.0}")
}
fn bytes_mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

pub fn target(name: &str, threshold: &str, measured: String, pass: Option<bool>) -> Target {
    Target {
        name: name.to_string(),
        threshold: threshold.to_string(),
        measured,
        pass,
    }
}

fn measured(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or("not measured".to_string(), f)
}

/// A ratio's summary, marked ×.
fn times(r: Option<&Summary>) -> String {
    r.map_or("not measured".into(), |s| {
        format!("{}×", s.show(|v| format!("{v:.2}")))
    })
}

/// A figure of pathtrace's against the bpftrace peer's.
fn versus(
    name: &str,
    ours: Option<f64>,
    peer: Option<f64>,
    higher_better: bool,
    f: impl Fn(f64) -> String,
) -> Target {
    Target {
        name: format!("vs bpftrace: {name}"),
        threshold: if higher_better {
            ">= bpftrace"
        } else {
            "<= bpftrace"
        }
        .into(),
        measured: format!(
            "pathtrace {} / bpftrace {}",
            ours.map_or("–".into(), &f),
            peer.map_or("–".into(), &f)
        ),
        pass: ours
            .zip(peer)
            .map(|(o, p)| if higher_better { o >= p } else { o <= p }),
    }
}

impl Results {
    pub fn new(plan: &Plan, tools: &Tools, docker: &'static str) -> Results {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Results {
            tool: "pathtrace-bench",
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            plan: plan.clone(),
            machine: Machine {
                kernel,
                cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
                docker,
                bpftrace: tools.bpftrace.as_ref().map(|b| b.version.clone()),
                pathtrace: tools.pathtrace.display().to_string(),
                source: git_describe(),
            },
            lab_start_secs: 0.0,
            pathtrace_attach: Vec::new(),
            peer_attach: Vec::new(),
            cost: None,
            drops: None,
            tiers: None,
            throughput: None,
            traced: None,
            startup: None,
            scale: None,
            plots: Vec::new(),
            ready_ms: Vec::new(),
            memory: MemorySummary::default(),
            targets: Vec::new(),
            section_secs: Vec::new(),
            teardown_secs: 0.0,
            load_start: load_average(),
            load_end: None,
            wall_secs: 0.0,
            notes: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// A note for the report, also said on stderr.
    pub fn note(&mut self, msg: String) {
        eprintln!("pathtrace-bench: {msg}");
        self.notes.push(msg);
    }

    /// Checks the targets, once everything is measured.
    pub fn finish(&mut self, section_secs: Vec<(String, f64)>, started: Instant) {
        self.section_secs = section_secs;
        self.wall_secs = started.elapsed().as_secs_f64();
        self.load_end = load_average();
        self.targets = self.check_targets();
    }

    /// Collects what the lab sections gathered.
    pub fn take_lab(&mut self, ctx: &Ctx) {
        self.notes.extend(ctx.notes.iter().cloned());
        self.errors.extend(ctx.errors.iter().cloned());
        self.pathtrace_attach = ctx.pathtrace_attach.clone();
        self.peer_attach = ctx.attach.clone();
        self.ready_ms = startup::summaries(&ctx.ready_ms)
            .into_iter()
            .map(|(variant, ms)| ReadyRow { variant, ms })
            .collect();
        let m = &ctx.mem;
        self.memory = MemorySummary {
            pathtrace_peak_rss_kib: Summary::of(&m.pathtrace_hwm_kib),
            pathtrace_rss_under_load_kib: Summary::of(&m.pathtrace_rss_kib),
            pathtrace_ready_peak_kib: Summary::of(&m.pathtrace_ready_hwm_kib),
            bpftrace_peak_rss_kib: Summary::of(&m.bpftrace_hwm_kib),
            pathtrace_maps_bytes: m.pathtrace_maps.iter().map(|x| x.bytes_memlock).sum(),
            bpftrace_maps_bytes: m.bpftrace_maps.iter().map(|x| x.bytes_memlock).sum(),
            bpftrace_perf_buffer_bytes: if m.bpftrace_maps.is_empty() {
                0
            } else {
                perf_buffer_bytes()
            },
            pathtrace_maps: m.pathtrace_maps.clone(),
            bpftrace_maps: m.bpftrace_maps.clone(),
            pathtrace_progs: m.pathtrace_progs.clone(),
            bpftrace_progs: m.bpftrace_progs.clone(),
        };
    }

    fn cond(&self, key: &str) -> Option<&CondResult> {
        self.throughput.as_ref()?.iter().find(|c| c.key == key)
    }

    fn ready(&self, variant: &str) -> Option<&Summary> {
        self.ready_ms
            .iter()
            .find(|r| r.variant == variant)
            .map(|r| &r.ms)
    }

    fn ratio(&self, key: &str, tcp: bool) -> Option<f64> {
        let c = self.cond(key)?;
        let s = if tcp { &c.tcp_ratio } else { &c.udp_ratio };
        s.as_ref().map(|s| s.median)
    }

    fn check_targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        if self.in_lab() {
            self.cost_targets(&mut t);
            self.throughput_targets(&mut t);
            self.loss_targets(&mut t);
            self.footprint_targets(&mut t);
        }
        if let Some(sc) = &self.scale {
            t.extend(sc.targets());
        }
        if self.in_lab() {
            self.peer_targets(&mut t);
        }
        t
    }

    /// Whether sections ran in the Docker lab (not only the curves).
    fn in_lab(&self) -> bool {
        self.section_secs.iter().any(|(n, _)| n != crate::SCALE)
    }

    /// Kernel time per packet, non-matching and dropped.
    fn cost_targets(&self, t: &mut Vec<Target>) {
        if let Some(c) = &self.cost {
            let ns = c.pathtrace.ns_per_packet.as_ref();
            t.push(target(
                "non-matching traffic: kernel time per forwarded packet (bpf_stats)",
                "<= 300 ns (median)",
                ns.map_or("not measured".into(), |s| format!("{} ns", s.show(int))),
                ns.map(|s| s.median <= 300.0),
            ));
            let r = c.ratio.as_ref();
            t.push(target(
                "non-matching traffic: kernel time per packet vs the fair bpftrace peer",
                "<= 0.5× (median of per-round ratios)",
                times(r),
                r.map(|s| s.median <= 0.5),
            ));
            let f = c.over_floor.as_ref();
            t.push(target(
                "non-matching traffic: kernel time per packet vs the floor (empty programs)",
                "<= 1.3× (median of per-round ratios)",
                times(f),
                f.map(|s| s.median <= 1.3),
            ));
        }
        if let Some(d) = &self.drops {
            let r = d.ratio.as_ref();
            t.push(target(
                "drops --quiet --metrics: kernel time per dropped packet vs the bpftrace peer",
                "<= 1× (median of per-round ratios)",
                times(r),
                r.map(|s| s.median <= 1.0),
            ));
        }
    }

    /// Throughput of non-matching traffic.
    fn throughput_targets(&self, t: &mut Vec<Target>) {
        let b_tcp = self.ratio("b", true);
        t.push(target(
            "non-matching traffic: TCP throughput, (b) vs (a)",
            ">= 98%",
            measured(b_tcp, pct),
            b_tcp.map(|r| r >= 0.98),
        ));
        let b_udp = self.ratio("b", false);
        t.push(target(
            "non-matching traffic: UDP packet rate, (b) vs (a)",
            ">= 95%",
            measured(b_udp, pct),
            b_udp.map(|r| r >= 0.95),
        ));
    }

    /// No loss at the target rate, and loss reported as the kernel counted it.
    fn loss_targets(&self, t: &mut Vec<Target>) {
        let row100 = self
            .traced
            .as_ref()
            .and_then(|t| t.pathtrace.rows.iter().find(|r| r.rate == 100_000));
        t.push(target(
            "no loss at 100,000 matching pps, text output to a file",
            "0 lost in every repetition",
            row100.map_or("not measured".into(), |r| {
                format!(
                    "{}/{} repetitions lossless, lost {}, achieved {} pps",
                    r.lossless_reps,
                    r.reps,
                    show(&r.lost, int),
                    show(&r.achieved_pps, int)
                )
            }),
            row100.map(|r| {
                r.reps > 0
                    && r.lossless_reps == r.reps
                    && r.achieved_pps
                        .as_ref()
                        .is_some_and(|a| a.median >= 95_000.0)
            }),
        ));
        let checks: Vec<_> = self
            .traced
            .iter()
            .flat_map(|t| t.pathtrace.exit_checks.iter())
            .collect();
        t.push(target(
            "reported loss equals the kernel's count (stats line vs COUNTERS)",
            "lost = kernel lost; events = kernel sent (+ at most 16 late events), every run",
            if checks.is_empty() {
                "not measured".into()
            } else {
                checks
                    .iter()
                    .map(|c| {
                        format!(
                            "rep {}: lost {} (kernel {}), events − kernel sent = {}",
                            c.rep + 1,
                            c.reported
                                .as_ref()
                                .map_or("?".into(), |r| r.lost.to_string()),
                            c.kernel_lost,
                            c.events_diff
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
            (!checks.is_empty()).then(|| {
                checks
                    .iter()
                    .all(|c| c.lost_equal && events_ok(c.events_diff))
            }),
        ));
    }

    /// Start-up time and memory.
    fn footprint_targets(&self, t: &mut Vec<Target>) {
        for variant in [READY_AUTO_NORULES, READY_TRACEPOINT, READY_RULES] {
            let s = self.ready(variant);
            t.push(target(
                &format!("ready: {variant}"),
                "<= 100 ms (median)",
                s.map_or("not measured".into(), |s| format!("{} ms", s.show(ms))),
                s.map(|s| s.median <= 100.0),
            ));
        }
        let rss = self.memory.pathtrace_peak_rss_kib.as_ref();
        t.push(target(
            "peak RSS (VmHWM) under load",
            "<= 20 MiB, worst run",
            rss.map_or("not measured".into(), |s| {
                format!("{} MiB (worst {} MiB)", s.show(mib), mib(s.max))
            }),
            rss.map(|s| s.max <= 20.0 * 1024.0),
        ));
        let maps = &self.memory.pathtrace_maps;
        t.push(target(
            "kernel map memory (bytes_memlock), default sizes",
            "<= 2 MiB",
            if maps.is_empty() {
                "not measured".into()
            } else {
                bytes_mib(self.memory.pathtrace_maps_bytes)
            },
            (!maps.is_empty()).then_some(self.memory.pathtrace_maps_bytes <= 2 << 20),
        ));
    }

    /// Against the bpftrace peer: every figure at least as good.
    fn peer_targets(&self, t: &mut Vec<Target>) {
        let (b_tcp, b_udp) = (self.ratio("b", true), self.ratio("b", false));
        t.push(versus(
            "TCP, filter matching other traffic ((b) vs (d0))",
            b_tcp,
            self.ratio("d0", true),
            true,
            pct,
        ));
        t.push(versus(
            "UDP, filter matching other traffic ((b) vs (d0))",
            b_udp,
            self.ratio("d0", false),
            true,
            pct,
        ));
        t.push(versus(
            "TCP, tracing the stream ((c) vs (d))",
            self.ratio("c", true),
            self.ratio("d", true),
            true,
            pct,
        ));
        t.push(versus(
            "UDP, tracing the stream ((c) vs (d))",
            self.ratio("c", false),
            self.ratio("d", false),
            true,
            pct,
        ));
        let lossless = |l: Option<&Ladder>| l.and_then(|l| l.max_lossless_pps).map(|v| v as f64);
        let tr = self.traced.as_ref();
        let ll_pt = lossless(tr.map(|t| &t.pathtrace));
        let ll_bt = lossless(tr.and_then(|t| t.bpftrace.as_ref()));
        let lossless_fmt = |v: f64| format!("{v:.0} pps");
        let ll_pass = match (
            tr.map(|t| !t.pathtrace.rows.is_empty()),
            tr.map(|t| t.bpftrace.as_ref().is_some_and(|b| !b.rows.is_empty())),
        ) {
            (Some(true), Some(true)) => Some(ll_pt.unwrap_or(0.0) >= ll_bt.unwrap_or(0.0)),
            _ => None,
        };
        t.push(Target {
            name: "vs bpftrace: highest lossless traced rate".into(),
            threshold: ">= bpftrace".into(),
            measured: format!(
                "pathtrace {} / bpftrace {}",
                ll_pt.map_or("none of the rates".into(), lossless_fmt),
                ll_bt.map_or("none of the rates".into(), lossless_fmt)
            ),
            pass: ll_pass,
        });
        let ms_fmt = |v: f64| format!("{v:.0} ms");
        t.push(versus(
            "ready time (default tier, --no-rules)",
            self.ready(READY_AUTO_NORULES).map(|s| s.median),
            self.ready(READY_BT_BEGIN).map(|s| s.median),
            false,
            ms_fmt,
        ));
        let mib_fmt = |v: f64| format!("{:.1} MiB", v / 1024.0);
        t.push(versus(
            "peak RSS under load (median)",
            self.memory
                .pathtrace_peak_rss_kib
                .as_ref()
                .map(|s| s.median),
            self.memory.bpftrace_peak_rss_kib.as_ref().map(|s| s.median),
            false,
            mib_fmt,
        ));
        let kmaps = |b: u64, maps: &[MapInfo]| (!maps.is_empty()).then_some(b as f64);
        let bytes_fmt = |v: f64| bytes_mib(v as u64);
        t.push(versus(
            "kernel memory: maps (bytes_memlock) + bpftrace's perf buffers",
            kmaps(
                self.memory.pathtrace_maps_bytes,
                &self.memory.pathtrace_maps,
            ),
            kmaps(
                self.memory.bpftrace_maps_bytes + self.memory.bpftrace_perf_buffer_bytes,
                &self.memory.bpftrace_maps,
            ),
            false,
            bytes_fmt,
        ));
    }

    /// The Markdown report and the JSON document.
    pub fn render(&self) -> (String, String) {
        let json =
            serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        (self.markdown(), json)
    }

    /// The run's first line: source, kernel, machine, times.
    fn header(&self, s: &mut String) {
        let mut parts = Vec::new();
        let in_lab = self.in_lab();
        if in_lab {
            parts.push(format!("lab start {:.1} s", self.lab_start_secs));
        }
        for (n, t) in &self.section_secs {
            if in_lab && n == crate::SCALE {
                parts.push(format!("lab teardown {:.1} s", self.teardown_secs));
            }
            parts.push(format!("{n} {t:.0} s"));
        }
        if in_lab && self.scale.is_none() {
            parts.push(format!("lab teardown {:.1} s", self.teardown_secs));
        }
        let _ = writeln!(
            s,
            "Source {}, kernel {}, {} CPUs, {}, {}. Wall time **{:.0} s** ({}). Load average (1 min) {} at the start, {} at the end.\n",
            self.machine.source.as_deref().unwrap_or("?"),
            self.machine.kernel,
            self.machine.cpus,
            if in_lab {
                format!("{} Docker lab", self.machine.docker)
            } else {
                "no lab".to_string()
            },
            self.machine.bpftrace.as_deref().unwrap_or("no bpftrace"),
            self.wall_secs,
            parts.join(", "),
            self.load_start.as_deref().unwrap_or("?"),
            self.load_end.as_deref().unwrap_or("?"),
        );
    }

    fn notes_and_errors(&self, s: &mut String) {
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\n## Errors\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {}", e.replace('\n', " "));
            }
        }
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.plan;
        if let Some(t) = &self.tiers {
            let _ = writeln!(
                s,
                "# pathtrace-bench: {} run, pathtrace's tiers compared\n",
                p.mode
            );
            self.header(&mut s);
            t.markdown(&mut s);
            self.notes_and_errors(&mut s);
            return s;
        }
        let _ = writeln!(s, "# pathtrace-bench: {} run\n", p.mode);
        self.header(&mut s);
        let in_lab = self.in_lab();
        if in_lab {
            let _ = writeln!(
                s,
                "Figures are median [min–max] over the samples of this run; ratios pair each sample with the baseline (a) sample of the same round. \
                 Throughput: {} round(s) × {} sample(s) of {:.0} s per condition. Traced rates: {} s per rate, {} repetition(s) (bpftrace {}).\n",
                p.rounds, p.per_round, p.sample_secs, p.rate_step_secs, p.rate_reps, p.bpftrace_rate_reps
            );
        }
        self.targets_section(&mut s);
        if in_lab {
            self.attach_section(&mut s);
            self.cost_section(&mut s);
            if let Some(d) = &self.drops {
                d.markdown(&mut s);
            }
            self.throughput_section(&mut s);
            self.traced_section(&mut s);
            self.startup_section(&mut s);
            self.memory_section(&mut s);
        }
        if let Some(sc) = &self.scale {
            sc.markdown(&mut s);
            if !self.plots.is_empty() {
                let _ = writeln!(
                    s,
                    "\nThe curves, beside this report: {}.",
                    self.plots
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        self.notes_and_errors(&mut s);
        s
    }

    /// The targets and whether this run met them.
    fn targets_section(&self, s: &mut String) {
        let _ = writeln!(s, "## Targets\n");
        let _ = writeln!(s, "| target | threshold | measured | result |");
        let _ = writeln!(s, "| --- | --- | --- | --- |");
        for t in &self.targets {
            let r = match t.pass {
                Some(true) => "PASS",
                Some(false) => "**FAIL**",
                None => "n/a",
            };
            let _ = writeln!(s, "| {} | {} | {} | {r} |", t.name, t.threshold, t.measured);
        }
    }

    /// Where each tracer attached.
    fn attach_section(&self, s: &mut String) {
        let _ = writeln!(
        s,
        "\n## Attach points\n\npathtrace (`bpftool link show` for the programs it holds): {}.\n\nbpftrace peer (one probe on each, the same address test): {}.",
        if self.pathtrace_attach.is_empty() {
            "not read".to_string()
        } else {
            self.pathtrace_attach.join(", ")
        },
        self.peer_attach
            .iter()
            .map(|p| p.probe.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    }

    /// 0. Kernel time per forwarded packet.
    fn cost_section(&self, s: &mut String) {
        if let Some(c) = &self.cost {
            let _ = writeln!(
            s,
            "\n## 0. Kernel time per forwarded packet\n\nUDP from `other` through the Docker host's DNAT to the container, paced at {} pps for {:.0} s per turn; each tracer's filter matches nothing in it (pathtrace `--src {} --no-rules`, the peer the same address). pathtrace, the peer and the floor (an empty program on each of pathtrace's tracepoints, loaded by the benchmark) take turns in each round, each round starting one further along. From the kernel's `run_time_ns` and `run_cnt` of the tracer's packet-path programs, before and after each turn, per packet delivered to the sink. Statistics switched on with `BPF_ENABLE_STATS` for this section only (sysctl `kernel.bpf_stats_enabled`: {} before, {} after). Every program sees every namespace: other traffic on the machine adds runs too (it shows in runs per packet). bpftrace's tracepoints are perf tracepoints: the kernel fills their event record before the program runs, and that time is not in `run_time_ns`.\n",
            c.pps,
            c.sample_secs,
            crate::OTHER_SRC,
            c.sysctl_before.as_deref().unwrap_or("?"),
            c.sysctl_after.as_deref().unwrap_or("?"),
        );
            let tools: Vec<&ToolCost> = std::iter::once(&c.pathtrace)
                .chain(c.bpftrace.iter())
                .chain(c.floor.iter())
                .collect();
            cost::markdown(s, &tools, &c.ratio, &c.over_floor, &c.peer_over_floor);
        }
    }

    /// 1. Throughput through the Docker host, and how pathtrace stopped.
    fn throughput_section(&self, s: &mut String) {
        if let Some(th) = &self.throughput {
            let _ = writeln!(
            s,
            "\n## 1. Throughput through the Docker host\n\n192.0.2.134 (`other`) → 192.0.2.25:8092 → DNAT → 198.51.100.2:80 (container): one bulk TCP stream (goodput at the sink) and one UDP stream of {}-byte datagrams sent as fast as possible (datagrams delivered to the sink per second of sending).\n",
            crate::net::UDP_PAYLOAD
        );
            let _ = writeln!(s, "| | condition | TCP Gbit/s | TCP vs (a) | UDP kpps delivered | UDP vs (a) | UDP kpps sent | tracer lost |");
            let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- |");
            for c in th {
                if let Some(why) = &c.skipped {
                    let _ = writeln!(
                        s,
                        "| ({}) | {} | skipped: {why} | | | | | |",
                        c.key, c.label
                    );
                    continue;
                }
                let _ = writeln!(
                    s,
                    "| ({}) | {} | {} | {} | {} | {} | {} | {} |",
                    c.key,
                    c.label,
                    show(&c.tcp_bps, gbit),
                    if c.key == "a" {
                        "1".into()
                    } else {
                        show(&c.tcp_ratio, pct)
                    },
                    show(&c.udp_pps, kpps),
                    if c.key == "a" {
                        "1".into()
                    } else {
                        show(&c.udp_ratio, pct)
                    },
                    show(&c.udp_sent_pps, kpps),
                    if c.tracer_lost.is_empty() {
                        "–".into()
                    } else {
                        c.tracer_lost
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
            }
        }
        if let Some(th) = &self.throughput {
            let stops: Vec<String> = th
                .iter()
                .filter(|c| !c.tracer_stop.is_empty())
                .map(|c| {
                    let each: Vec<String> = c
                        .tracer_stop
                        .iter()
                        .map(|x| format!("{} ({:.0} ms)", x.signal, x.ms))
                        .collect();
                    format!("({}) {}", c.key, each.join(", "))
                })
                .collect();
            if !stops.is_empty() {
                let _ = writeln!(
                    s,
                    "\npathtrace's exits after SIGINT (the time from SIGINT to the exit): {}.",
                    stops.join("; ")
                );
            }
        }
    }

    /// 2. Traced packets per second, and the exit checks.
    fn traced_section(&self, s: &mut String) {
        if let Some(tr) = &self.traced {
            let _ = writeln!(s, "\n## 2. Traced packets per second\n\nMatching UDP from 192.0.2.200 (a second address of `other`, so that other labs' 192.0.2.134 traffic on a shared machine does not match) through the DNAT, paced; each tracer writes its text output to a file. `lost` is the kernel side's count (pathtrace: its `COUNTERS` map read with bpftool around each step; bpftrace: its `Lost N events` lines).\n");
            for l in std::iter::once(&tr.pathtrace).chain(tr.bpftrace.iter()) {
                let _ = writeln!(
                s,
                "**{}**: highest rate with no loss in any repetition: **{}**; events per packet {}.\n",
                l.tool,
                l.max_lossless_pps.map_or("none of the rates".into(), |v| format!("{v} pps")),
                l.events_per_packet.map_or("–".into(), |e| format!("{e:.2}"))
            );
                let _ = writeln!(s, "| rate | achieved pps | lost events | lost fraction | lossless reps | (sent+lost) / (packets × events per packet) |");
                let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
                for r in &l.rows {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {}/{} | {} |",
                        r.rate,
                        show(&r.achieved_pps, int),
                        show(&r.lost, int),
                        show(&r.lost_fraction, pct),
                        r.lossless_reps,
                        r.reps,
                        show(&r.attempted_over_expected, |v| format!("{v:.3}"))
                    );
                }
                if !l.exit_checks.is_empty() {
                    let _ = writeln!(
                        s,
                        "\nAt exit, pathtrace's stats line against the kernel's counters:\n"
                    );
                    let _ = writeln!(s, "| rep | reported lost | kernel lost | reported events | kernel sent (read before the stop) | exact | stopped by |");
                    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |");
                    for c in &l.exit_checks {
                        let (rl, re) = c.reported.as_ref().map_or(("?".into(), "?".into()), |r| {
                            (r.lost.to_string(), r.events.to_string())
                        });
                        let _ = writeln!(
                            s,
                            "| {} | {rl} | {} | {re} | {} | {} | {} |",
                            c.rep + 1,
                            c.kernel_lost,
                            c.kernel_sent,
                            if c.lost_equal && events_ok(c.events_diff) {
                                "yes"
                            } else {
                                "**no**"
                            },
                            c.stop
                                .as_ref()
                                .map_or("–".into(), |x| format!("{} ({:.0} ms)", x.signal, x.ms))
                        );
                    }
                }
                let _ = writeln!(s);
            }
        }
    }

    /// 3. Start-up, and the refused tiers.
    fn startup_section(&self, s: &mut String) {
        let _ = writeln!(s, "\n## 3. Start-up: spawn → ready\n");
        let _ = writeln!(s, "| variant | ms | n |");
        let _ = writeln!(s, "| --- | --- | --- |");
        for r in &self.ready_ms {
            let _ = writeln!(s, "| {} | {} | {} |", r.variant, r.ms.show(ms), r.ms.n);
        }
        if let Some(st) = &self.startup {
            if !st.stops.is_empty() {
                let _ = writeln!(
                    s,
                    "\nSIGINT sent right after the ready line ended these runs: {}.",
                    st.stops
                        .iter()
                        .map(|(v, how, n)| format!("{v}: {how} × {n}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            let _ = writeln!(s, "\n| refused tier | exit code | ms to exit | message |");
            let _ = writeln!(s, "| --- | --- | --- | --- |");
            for r in &st.refusals {
                let msg = r.message.lines().last().unwrap_or("").replace('|', "\\|");
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {}{} |",
                    r.tier,
                    r.exit_code.map_or("–".into(), |c| c.to_string()),
                    show(&r.ms_to_exit, ms),
                    msg,
                    r.ready_ms.as_ref().map_or(String::new(), |m| format!(
                        " (started after all: {} ms)",
                        m.show(ms)
                    ))
                );
            }
        }
    }

    /// 4. Memory: RSS, maps, verifier work.
    fn memory_section(&self, s: &mut String) {
        let m = &self.memory;
        let _ = writeln!(s, "\n## 4. Memory\n");
        let _ = writeln!(
            s,
            "| | peak RSS (VmHWM) under load, MiB | kernel maps (bytes_memlock) |"
        );
        let _ = writeln!(s, "| --- | --- | --- |");
        let _ = writeln!(
            s,
            "| pathtrace | {} | {} |",
            show(&m.pathtrace_peak_rss_kib, mib),
            bytes_mib(m.pathtrace_maps_bytes)
        );
        let _ = writeln!(
            s,
            "| bpftrace peer | {} | {} maps + {} perf buffers |",
            show(&m.bpftrace_peak_rss_kib, mib),
            bytes_mib(m.bpftrace_maps_bytes),
            bytes_mib(m.bpftrace_perf_buffer_bytes)
        );
        let _ = writeln!(
        s,
        "\npathtrace's resident set under load (VmRSS when the peak was read): {} MiB; its peak right after the ready line, before any traffic: {} MiB.\n",
        show(&m.pathtrace_rss_under_load_kib, mib),
        show(&m.pathtrace_ready_peak_kib, mib)
    );
        if !m.pathtrace_maps.is_empty() {
            let _ = writeln!(
                s,
                "\n| pathtrace map | type | max_entries | bytes_memlock |"
            );
            let _ = writeln!(s, "| --- | --- | --- | --- |");
            for x in &m.pathtrace_maps {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    x.name, x.kind, x.max_entries, x.bytes_memlock
                );
            }
        }
        if !m.pathtrace_progs.is_empty() || !m.bpftrace_progs.is_empty() {
            let _ = writeln!(s, "\n| program | verified_insns (verifier work at load) |");
            let _ = writeln!(s, "| --- | --- |");
            for (who, progs) in [
                ("pathtrace", &m.pathtrace_progs),
                ("bpftrace", &m.bpftrace_progs),
            ] {
                for p in progs {
                    let _ = writeln!(
                        s,
                        "| {who} {} | {} |",
                        p.name.as_deref().unwrap_or("?"),
                        p.verified_insns.map_or("–".into(), |v| v.to_string())
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::{Axis, StepResult};

    fn step(axis: Axis, size: usize, ready: f64, hop: f64) -> StepResult {
        StepResult {
            axis,
            size,
            build_secs: 0.1,
            ready_ms: Summary::of(&[ready]),
            first_rule_hop_ms: Summary::of(&[hop]),
            peak_rss_kib: Summary::of(&[25.0 * 1024.0]),
            kernel_maps_kib: Summary::of(&[1642.0]),
            kernel_progs_kib: Summary::of(&[80.0]),
            other_netns: 0,
            errors: Vec::new(),
        }
    }

    #[test]
    fn the_curves_get_their_targets() {
        let tools = Tools {
            pathtrace: "/nonexistent/pathtrace".into(),
            bpftrace: None,
            floor_obj: "/nonexistent/floor".into(),
            work: std::env::temp_dir(),
        };
        let mut r = Results::new(&Plan::new(true, None, None), &tools, "emulated");
        r.scale = Some(Scale {
            quick: true,
            runs_per_step: 1,
            steps: vec![
                step(Axis::IptablesRules, 10_000, 80.0, 600.0),
                step(Axis::NftRules, 10_000, 120.0, 1200.0),
                step(Axis::Containers, 5, 90.0, 200.0),
            ],
        });
        r.finish(vec![(crate::SCALE.into(), 1.0)], Instant::now());
        let row = |name: &str| {
            r.targets
                .iter()
                .find(|t| t.name.starts_with(name))
                .unwrap_or_else(|| panic!("no target {name}"))
        };
        let ready = row("scale: ready");
        assert_eq!(ready.pass, Some(false));
        assert!(
            ready.measured.contains("2 of 3 steps within"),
            "{}",
            ready.measured
        );
        assert!(ready.measured.contains("nft rules 10000: 120 ms"));
        let hop = row("scale: first rule-attributed hop");
        assert_eq!(hop.pass, Some(false));
        assert!(hop
            .measured
            .contains("iptables-nft rules 600 ms, nft rules 1200 ms"));
        assert_eq!(row("scale: peak RSS at 50,000 rules").pass, None);
        // Only the curves ran: no row of the lab's sections.
        assert_eq!(r.targets.len(), 3);
    }
}

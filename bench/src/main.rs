//! `pathtrace-bench`: what pathtrace costs, measured in the namespace lab.
//!
//! It builds the lab (emulated Docker by default), sends its own bulk TCP and
//! small-packet UDP streams from the `other` host (192.0.2.134) to the
//! published port (192.0.2.25:8092 → 198.51.100.2:80), and measures:
//! throughput with and without tracers (pathtrace, a bpftrace peer, nft
//! trace), the highest matching packet rate pathtrace traces without loss,
//! start-up time and memory. Then, with the lab gone, the cost curves: how
//! start-up and memory grow with the host's rules, namespaces, veths and
//! containers (`scale`). Every figure is taken several times and given as
//! median [min–max]; comparisons are ratios against a baseline measured in
//! the same run. It writes one Markdown report and one JSON file (and the
//! curves as PNG), and exits 0 whether or not the targets are met (only a
//! broken run fails).
//!
//! All traffic stays between the lab's namespaces; every load loop is bounded
//! in time and count; the lab and every process started are removed on exit.
mod bpf;
mod children;
mod cost;
mod drops;
mod floor;
mod net;
mod peers;
mod report;
mod scale;
mod startup;
mod stats;
mod throughput;
mod tiers;
mod traced;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use lab::{Block, DockerMode, Lab, LabConfig};
use serde::Serialize;

use crate::{
    bpf::{MapInfo, ProgFd},
    peers::{AttachPoint, Bpftrace, BtRun, PtRun, Tools},
};

/// The LAN address pathtrace's "other traffic" filter names: nothing sends from it.
pub const OTHER_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
/// A second address of the lab's `other` host, used only by the traced-rate
/// ladder: other labs on a shared machine also send from 192.0.2.134, and
/// pathtrace's and bpftrace's programs see every namespace.
pub const LADDER_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
/// The lab prefix: namespaces `ptbench-lan`, `ptbench-other`, …
const PREFIX: &str = "ptbench";

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum DockerChoice {
    /// Docker's bridge, veth and chains, without dockerd (fast, deterministic).
    Emulated,
    /// A real dockerd in the lab's Docker host namespace.
    Real,
}

/// Measure what pathtrace costs, in the namespace lab.
#[derive(Parser, Debug)]
#[command(name = "pathtrace-bench")]
struct Args {
    /// About one to two minutes: 1 s samples, 3 of each, short rate steps.
    #[arg(long)]
    quick: bool,
    /// Emulated Docker (default) or a real dockerd.
    #[arg(long, value_enum, default_value_t = DockerChoice::Emulated)]
    docker: DockerChoice,
    /// Where to write the Markdown and JSON results.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The pathtrace binary (default: next to this one).
    #[arg(long, value_name = "PATH")]
    pathtrace: Option<PathBuf>,
    /// Sections to run (default all): cost, drops, throughput, traced, startup, scale.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Vec<String>,
    /// Profiling aid: run only this condition's tracer (b, c, d0, d, e) under a stream.
    #[arg(long, hide = true, value_name = "COND")]
    soak: Option<String>,
    #[arg(long, hide = true, default_value_t = 20)]
    soak_secs: u64,
    /// Pace the soak's UDP stream at this many packets per second.
    #[arg(long, hide = true)]
    soak_rate: Option<u64>,
    /// Soak with the TCP stream instead of UDP.
    #[arg(long, hide = true)]
    soak_tcp: bool,
    /// Stop measuring after this many seconds, whatever is left (default: 600 quick, 1800 full).
    #[arg(long, value_name = "SECS")]
    max_secs: Option<u64>,
    /// Compare pathtrace's tiers instead (e.g. tracepoint,fentry,kprobe): the
    /// kernel cost section only, pathtrace on each tier in turn, no bpftrace
    /// peer; ratios against the first tier. `cargo xtask bench --vm` runs it.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    tiers: Vec<String>,
    /// The paced rate of the kernel cost sections' streams (default 40000).
    #[arg(long, value_name = "PPS")]
    cost_pps: Option<u64>,
    /// Only the cost curves (the same as `--only scale`): how start-up and
    /// memory grow with the host's rules, namespaces, interfaces and
    /// containers (with --quick, the small sizes only).
    #[arg(long, conflicts_with_all = ["only", "tiers", "soak"])]
    scale: bool,
    /// Measure nothing: draw the curves' PNGs again from a report's JSON
    /// (`bench-*.json` or `scale-*.json`) into --out.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["only", "tiers", "soak", "scale"])]
    replot: Option<PathBuf>,
    /// The floor's eBPF object (default: where `cargo xtask build-ebpf` leaves it).
    #[arg(long, value_name = "PATH")]
    floor_obj: Option<PathBuf>,
}

/// How much to measure.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub mode: &'static str,
    /// Throughput: rounds over all conditions, and samples per condition per round.
    pub rounds: usize,
    pub per_round: usize,
    pub sample_secs: f64,
    /// Traced packet rates, each sent for `rate_step_secs`, `rate_reps` times.
    pub rates: Vec<u64>,
    pub rate_step_secs: f64,
    pub rate_reps: usize,
    pub bpftrace_rate_reps: usize,
    pub startup_runs: usize,
    pub max_secs: u64,
    /// The kernel cost section's packet rate.
    pub cost_pps: u64,
    #[serde(skip)]
    pub deadline: Instant,
}

impl Plan {
    fn new(quick: bool, max_secs: Option<u64>, cost_pps: Option<u64>) -> Plan {
        let cost_pps = cost_pps.unwrap_or(cost::COST_PPS);
        let rates = vec![10_000, 25_000, 50_000, 100_000, 200_000];
        let max_secs = max_secs.unwrap_or(if quick { 600 } else { 1800 });
        let deadline = Instant::now() + Duration::from_secs(max_secs);
        if quick {
            Plan {
                mode: "quick",
                rounds: 1,
                per_round: 3,
                sample_secs: 1.0,
                rates,
                rate_step_secs: 0.5,
                rate_reps: 3,
                bpftrace_rate_reps: 2,
                startup_runs: 3,
                max_secs,
                cost_pps,
                deadline,
            }
        } else {
            Plan {
                mode: "full",
                rounds: 5,
                per_round: 1,
                sample_secs: 3.0,
                rates,
                rate_step_secs: 2.0,
                rate_reps: 3,
                bpftrace_rate_reps: 3,
                startup_runs: 5,
                max_secs,
                cost_pps,
                deadline,
            }
        }
    }

    pub fn sample(&self) -> Duration {
        Duration::from_secs_f64(self.sample_secs)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Peak RSS and kernel maps of the tracers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    /// VmHWM of each pathtrace run under load (matching traffic), KiB.
    pub pathtrace_hwm_kib: Vec<f64>,
    /// VmRSS of the same runs at the same moment: what stays resident.
    pub pathtrace_rss_kib: Vec<f64>,
    /// VmHWM right after the ready line, before any traffic: the start-up peak.
    pub pathtrace_ready_hwm_kib: Vec<f64>,
    pub bpftrace_hwm_kib: Vec<f64>,
    pub pathtrace_maps: Vec<MapInfo>,
    pub bpftrace_maps: Vec<MapInfo>,
    pub pathtrace_progs: Vec<ProgFd>,
    pub bpftrace_progs: Vec<ProgFd>,
}

/// A measured "ready" time: which variant, and how long after spawning.
pub const READY_AUTO_NORULES: &str = "pathtrace --tier auto --no-rules";
pub const READY_BT_BEGIN: &str = "bpftrace (BEGIN fired: all probes attached)";
pub const READY_BT_ATTACHING: &str = "bpftrace (`Attaching N probes...` line)";

/// Everything the sections share.
pub struct Ctx<'a> {
    pub lab: &'a Lab,
    pub plan: Plan,
    pub tools: Tools,
    pub route_tcp: net::Route,
    pub route_udp: net::Route,
    /// The UDP route of the traced-rate ladder (from LADDER_SRC).
    pub route_ladder: net::Route,
    /// Ready times in ms, by variant.
    pub ready_ms: BTreeMap<String, Vec<f64>>,
    pub mem: Memory,
    /// Where pathtrace's programs are attached (`bpftool link show`).
    pub pathtrace_attach: Vec<String>,
    /// The peer's probes: one on each of those tracepoints.
    pub attach: Vec<AttachPoint>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    seq: u32,
}

impl Ctx<'_> {
    /// Stop measuring: a signal arrived or the time is up.
    pub fn stop_now(&self) -> bool {
        STOP.load(Ordering::SeqCst) || Instant::now() >= self.plan.deadline
    }

    /// A fresh output file for a tracer.
    pub fn out_file(&mut self, tag: &str) -> PathBuf {
        self.seq += 1;
        self.tools.work.join(format!("{:03}-{tag}.out", self.seq))
    }

    pub fn error(&mut self, what: &str, e: &anyhow::Error) {
        let msg = format!("{what}: {e:#}");
        eprintln!("pathtrace-bench: {msg}");
        self.errors.push(msg);
    }

    pub fn note(&mut self, msg: String) {
        eprintln!("pathtrace-bench: {msg}");
        self.notes.push(msg);
    }

    pub fn ready(&mut self, variant: &str, d: Option<Duration>) {
        if let Some(d) = d {
            self.ready_ms
                .entry(variant.to_string())
                .or_default()
                .push(d.as_secs_f64() * 1000.0);
        }
    }

    /// Records pathtrace's peak RSS (under load) and, once, its maps and programs.
    pub fn pathtrace_memory(&mut self, run: &PtRun) {
        if let Some(kib) = run.proc.vm_hwm_kib() {
            self.mem.pathtrace_hwm_kib.push(kib as f64);
        }
        if let Some(kib) = run.proc.vm_rss_kib() {
            self.mem.pathtrace_rss_kib.push(kib as f64);
        }
        if self.mem.pathtrace_maps.is_empty() {
            match held_maps(run.proc.pid) {
                Ok((maps, progs)) => {
                    self.mem.pathtrace_maps = maps
                        .into_iter()
                        .filter(|m| tracer_common::names::map::ALL.contains(&m.name.as_str()))
                        .collect();
                    self.mem.pathtrace_progs = progs;
                }
                Err(e) => self.error("reading pathtrace's maps", &e),
            }
        }
    }

    pub fn bpftrace_memory(&mut self, run: &BtRun) {
        if let Some(kib) = run.proc.vm_hwm_kib() {
            self.mem.bpftrace_hwm_kib.push(kib as f64);
        }
        if self.mem.bpftrace_maps.is_empty() {
            match held_maps(run.proc.pid) {
                Ok((maps, progs)) => {
                    self.mem.bpftrace_maps = maps;
                    self.mem.bpftrace_progs = progs;
                }
                Err(e) => self.error("reading bpftrace's maps", &e),
            }
        }
    }

    /// Removes a tracer's output file, returning its size.
    pub fn discard(&self, path: &Path) -> u64 {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(path);
        size
    }
}

fn held_maps(pid: i32) -> Result<(Vec<MapInfo>, Vec<ProgFd>)> {
    let held = bpf::held_by(pid)?;
    let maps = bpf::maps(&held.map_ids)?;
    let mut progs = held.progs;
    bpf::name_progs(&mut progs)?;
    Ok((maps, progs))
}

/// Starts pathtrace as the benchmark runs it and reads where its programs
/// are attached, so the peer can attach to exactly the same tracepoints.
fn discover_attach(ctx: &mut Ctx) -> Result<()> {
    let args = vec![
        "--src".to_string(),
        OTHER_SRC.to_string(),
        "--no-rules".into(),
    ];
    let out = ctx.out_file("attach");
    let mut run = PtRun::start(&ctx.tools, &args, Duration::from_secs(60), out, None)?;
    let found = (|| {
        anyhow::ensure!(run.ready.is_some(), "pathtrace did not start");
        let held = bpf::held_by(run.proc.pid)?;
        let ids: Vec<u64> = held.progs.iter().map(|p| p.id).collect();
        bpf::attach_points(&ids)
    })();
    let stopped = run.finish();
    ctx.discard(&run.out);
    let found = found.with_context(|| format!("pathtrace: {}", run.proc.stderr_text()))?;
    stopped?;
    anyhow::ensure!(!found.is_empty(), "pathtrace's programs have no links");
    let mut peer = Vec::new();
    for name in &found {
        match AttachPoint::mirror(name) {
            Some(p) => peer.push(p),
            None => ctx.errors.push(format!(
                "the peer is not comparable: pathtrace attaches to {name}, which it can't mirror"
            )),
        }
    }
    ctx.pathtrace_attach = found;
    ctx.attach = peer;
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The UDP twin of Docker's published TCP port: the same DNAT and ACCEPT for UDP.
fn publish_udp(lab: &Lab) -> Result<()> {
    let a = lab.addrs();
    let port = a.published_port.to_string();
    let to = format!("{}:{}", a.container, a.container_port);
    let ctr = format!("{}/32", a.container);
    let cport = a.container_port.to_string();
    lab.iptables(&[
        "-t",
        "nat",
        "-A",
        "DOCKER",
        "!",
        "-i",
        "docker0",
        "-p",
        "udp",
        "-m",
        "udp",
        "--dport",
        &port,
        "-j",
        "DNAT",
        "--to-destination",
        &to,
    ])
    .context("adding the UDP DNAT")?;
    lab.iptables(&[
        "-t", "filter", "-A", "DOCKER", "-d", &ctr, "!", "-i", "docker0", "-o", "docker0", "-p",
        "udp", "-m", "udp", "--dport", &cport, "-j", "ACCEPT",
    ])
    .context("adding the UDP ACCEPT")?;
    Ok(())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    install_signal_handlers();
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("pathtrace-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench-results"));
    if let Some(json) = &args.replot {
        return replot(json, &out_dir);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the lab creates namespaces and pathtrace loads BPF programs");
    }
    if !args.tiers.is_empty() && args.only.iter().any(|s| s != "cost") {
        bail!("--tiers runs the kernel cost section only: drop --only's other sections");
    }
    let plan = Plan::new(args.quick, args.max_secs, args.cost_pps);
    let work = out_dir.join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = measure(args, plan, &out_dir, &work, started);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// `--replot`: the curves of the report `json` drawn again into `out_dir`.
fn replot(json: &Path, out_dir: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let mut report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    let curves = report
        .get_mut("scale")
        .map(serde_json::Value::take)
        .filter(|v| !v.is_null())
        .with_context(|| format!("{} holds no curves (`scale`)", json.display()))?;
    let curves: scale::Scale = serde_json::from_value(curves)
        .with_context(|| format!("reading the curves of {}", json.display()))?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for f in scale::plot::write(&curves, out_dir)? {
        println!("{}", f.display());
    }
    Ok(())
}

/// The one section that runs without the Docker lab, after it.
pub const SCALE: &str = "scale";

fn measure(args: &Args, plan: Plan, out_dir: &Path, work: &Path, started: Instant) -> Result<()> {
    let mut notes = Vec::new();
    let tools = tools(args, work, &mut notes)?;
    for n in &notes {
        eprintln!("pathtrace-bench: {n}");
    }
    if let Some(key) = &args.soak {
        return soak(args, plan, tools, notes, key);
    }
    let sections = sections(args);
    let in_lab: Vec<String> = sections.iter().filter(|s| *s != SCALE).cloned().collect();
    let docker = match args.docker {
        DockerChoice::Emulated => "emulated",
        DockerChoice::Real => "real",
    };
    let mut results = report::Results::new(&plan, &tools, docker);
    let mut timings = Vec::new();
    let mut torn = None;
    if in_lab.is_empty() {
        results.notes = notes;
    } else {
        torn = lab_sections(
            args,
            &plan,
            &tools,
            notes,
            &in_lab,
            &mut results,
            &mut timings,
        )?;
    }
    if sections.iter().any(|s| s == SCALE) {
        run_scale(&tools, &plan, &mut results, &mut timings);
    }
    if STOP.load(Ordering::SeqCst) {
        results.note("interrupted: results are partial".into());
    } else if Instant::now() >= plan.deadline {
        results.note(format!(
            "stopped at the {} s bound: results are partial",
            plan.max_secs
        ));
    }
    results.finish(timings, started);
    let stem = if !args.tiers.is_empty() {
        "bench-tiers"
    } else if in_lab.is_empty() {
        "scale"
    } else {
        "bench"
    };
    write_report(&mut results, out_dir, stem)?;
    if let Some(e) = torn {
        return Err(e).context("tearing the lab down");
    }
    let failed = results.scale.as_ref().map_or(0, scale::Scale::failed);
    if failed > 0 {
        bail!("{failed} scale step(s) failed (see the table)");
    }
    Ok(())
}

/// The cost curves (after the lab is gone), into `results`.
fn run_scale(
    tools: &Tools,
    plan: &Plan,
    results: &mut report::Results,
    timings: &mut Vec<(String, f64)>,
) {
    if STOP.load(Ordering::SeqCst) || Instant::now() >= plan.deadline {
        results.note(format!(
            "section {SCALE} skipped: out of time or interrupted"
        ));
        return;
    }
    let t = Instant::now();
    let deadline = plan.deadline;
    results.scale = Some(scale::run(tools, plan.mode == "quick", || {
        STOP.load(Ordering::SeqCst) || Instant::now() >= deadline
    }));
    timings.push((SCALE.to_string(), t.elapsed().as_secs_f64()));
    eprintln!(
        "pathtrace-bench: {SCALE} done in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

/// The lab, checked and with the peer's attach points read: the context
/// every lab section shares.
fn prepare<'a>(
    lab: &'a Lab,
    plan: &Plan,
    tools: &Tools,
    notes: Vec<String>,
    args: &Args,
) -> Result<Ctx<'a>> {
    let (route_tcp, route_udp, route_ladder) = routes(lab)?;
    let mut ctx = Ctx {
        lab,
        plan: plan.clone(),
        tools: tools.clone(),
        route_tcp,
        route_udp,
        route_ladder,
        ready_ms: BTreeMap::new(),
        mem: Memory::default(),
        pathtrace_attach: Vec::new(),
        attach: AttachPoint::tracepoint_tier(),
        notes,
        errors: Vec::new(),
        seq: 0,
    };
    // The path works before anything is measured.
    let probe = Duration::from_millis(300);
    net::tcp_sample(&ctx.route_tcp, probe).context("TCP through the published port")?;
    let u = net::udp_run(&ctx.route_udp, probe, Some(1000)).context("UDP through the DNAT")?;
    if u.received == 0 {
        bail!("no UDP datagram reached the container through the DNAT");
    }
    if args.tiers.is_empty() {
        if let Err(e) = discover_attach(&mut ctx) {
            ctx.error(
                "reading pathtrace's attach points (the peer uses the tracepoint tier's)",
                &e,
            );
        }
    }
    Ok(ctx)
}

/// Runs `sections` in the Docker lab, into `results`; the lab's teardown
/// error, if it had one.
fn lab_sections(
    args: &Args,
    plan: &Plan,
    tools: &Tools,
    notes: Vec<String>,
    sections: &[String],
    results: &mut report::Results,
    timings: &mut Vec<(String, f64)>,
) -> Result<Option<anyhow::Error>> {
    let (mut lab, lab_secs) = start_lab(args, plan)?;
    results.lab_start_secs = lab_secs;
    let mut ctx = prepare(&lab, plan, tools, notes, args)?;
    timings.extend(run_sections(&mut ctx, args, sections, results));
    results.take_lab(&ctx);
    drop(ctx);
    let teardown = Instant::now();
    let torn = lab.teardown();
    results.teardown_secs = teardown.elapsed().as_secs_f64();
    Ok(torn.err().map(|e| {
        results.errors.push(format!("lab teardown: {e}"));
        anyhow::Error::from(e)
    }))
}

/// `--soak`: one condition's tracer under a stream, for profiling.
fn soak(args: &Args, plan: Plan, tools: Tools, notes: Vec<String>, key: &str) -> Result<()> {
    let (mut lab, _) = start_lab(args, &plan)?;
    let mut ctx = prepare(&lab, &plan, &tools, notes, args)?;
    let cond = throughput::Cond::from_key(key).context("--soak takes b, c, d0, d or e")?;
    let r = throughput::soak(
        &mut ctx,
        cond,
        args.soak_secs,
        args.soak_rate,
        args.soak_tcp,
    );
    drop(ctx);
    lab.teardown().context("tearing the lab down")?;
    r
}

/// pathtrace, the bpftrace peer (unless tiers are compared with each
/// other) and the floor's object; what was skipped goes to `notes`.
fn tools(args: &Args, work: &Path, notes: &mut Vec<String>) -> Result<Tools> {
    let pathtrace = match &args.pathtrace {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("pathtrace"),
    };
    if !pathtrace.is_file() {
        bail!(
            "{} is missing: build it (`cargo xtask bench` builds everything) or pass --pathtrace",
            pathtrace.display()
        );
    }
    // Tiers are compared with each other, not with the peer.
    let detected = (args.tiers.is_empty()).then(Bpftrace::detect);
    let bpftrace = match detected {
        None => None,
        Some(Ok(b)) => {
            if b.private_tracefs {
                notes.push("tracefs is not mounted on this host: bpftrace runs in a private mount namespace with tracefs mounted there".to_string());
            }
            Some(b)
        }
        Some(Err(e)) => {
            notes.push(format!(
                "bpftrace peer skipped: {e:#} (apt-get install bpftrace)"
            ));
            None
        }
    };
    Ok(Tools {
        pathtrace,
        bpftrace,
        floor_obj: args.floor_obj.clone().unwrap_or_else(floor::default_object),
        work: work.to_path_buf(),
    })
}

/// The sections this run measures, in order.
fn sections(args: &Args) -> Vec<String> {
    if !args.tiers.is_empty() {
        vec!["cost".into()]
    } else if args.scale {
        vec![SCALE.into()]
    } else if args.only.is_empty() {
        ["cost", "drops", "throughput", "traced", "startup", SCALE]
            .map(String::from)
            .to_vec()
    } else {
        args.only.clone()
    }
}

/// The Docker lab with the benchmark's own sink in place of httpd, and
/// how long it took to start.
fn start_lab(args: &Args, plan: &Plan) -> Result<(Lab, f64)> {
    eprintln!(
        "pathtrace-bench: {} run, building the lab ({} Docker)",
        plan.mode,
        match args.docker {
            DockerChoice::Emulated => "emulated",
            DockerChoice::Real => "real",
        }
    );
    let lab_started = Instant::now();
    let mut lab = Lab::start(LabConfig {
        block: Block::None,
        docker: match args.docker {
            DockerChoice::Emulated => DockerMode::Emulated,
            DockerChoice::Real => DockerMode::Real,
        },
        ..LabConfig::with_prefix(PREFIX)
    })
    .context("starting the lab")?;
    // Our own sink listens on the container's port 80 instead of httpd.
    lab.set_listener(false)
        .context("stopping the lab's httpd")?;
    publish_udp(&lab)?;
    let lab_secs = lab_started.elapsed().as_secs_f64();
    Ok((lab, lab_secs))
}

/// The TCP, UDP and traced-ladder routes through the published port.
fn routes(lab: &Lab) -> Result<(net::Route, net::Route, net::Route)> {
    let a = lab.addrs().clone();
    let names = lab.names().clone();
    let route_tcp = net::Route {
        client_ns: names.other.clone(),
        server_ns: names.ctr.clone(),
        target: SocketAddrV4::new(a.host, a.published_port),
        listen_port: a.container_port,
        udp_src: None,
    };
    let route_udp = route_tcp.clone();
    let route_ladder = net::Route {
        udp_src: Some(LADDER_SRC),
        ..route_tcp.clone()
    };
    let ladder_addr = format!("{LADDER_SRC}/32");
    lab.exec(
        &names.other,
        &["ip", "addr", "add", &ladder_addr, "dev", "eth0"],
    )
    .context("adding the ladder's source address")?;
    Ok((route_tcp, route_udp, route_ladder))
}

/// Runs each section that time allows; how long each took.
fn run_sections(
    ctx: &mut Ctx,
    args: &Args,
    sections: &[String],
    results: &mut report::Results,
) -> Vec<(String, f64)> {
    let mut timings = Vec::new();
    for s in sections {
        if ctx.stop_now() {
            ctx.note(format!("section {s} skipped: out of time or interrupted"));
            continue;
        }
        let t = Instant::now();
        match s.as_str() {
            "cost" if !args.tiers.is_empty() => match tiers::run(ctx, &args.tiers) {
                Ok(c) => results.tiers = Some(c),
                Err(e) => ctx.error("kernel cost per packet, by tier", &e),
            },
            "cost" => match cost::run(ctx) {
                Ok(c) => results.cost = Some(c),
                Err(e) => ctx.error("kernel cost per packet", &e),
            },
            "drops" => match drops::run(ctx) {
                Ok(c) => results.drops = Some(c),
                Err(e) => ctx.error("kernel cost per dropped packet (drops mode)", &e),
            },
            "throughput" => results.throughput = Some(throughput::run(ctx)),
            "traced" => results.traced = Some(traced::run(ctx)),
            "startup" => results.startup = Some(startup::run(ctx)),
            other => ctx.note(format!("unknown section {other} ignored")),
        }
        timings.push((s.clone(), t.elapsed().as_secs_f64()));
        eprintln!(
            "pathtrace-bench: {s} done in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    timings
}

/// Writes the curves as PNG (their names go into the report), then the
/// report as Markdown and JSON, into `out_dir` as `STEM-MODE.*`, and prints it.
fn write_report(results: &mut report::Results, out_dir: &Path, stem: &str) -> Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    if let Some(scale) = &results.scale {
        match scale::plot::write(scale, out_dir) {
            Ok(files) => {
                results.plots = files
                    .iter()
                    .filter_map(|f| f.file_name())
                    .map(|f| f.to_string_lossy().into_owned())
                    .collect();
            }
            Err(e) => results.errors.push(format!("plotting the curves: {e:#}")),
        }
    }
    let (md, json) = results.render();
    let stem = format!("{stem}-{}", results.plan.mode);
    let md_path = out_dir.join(format!("{stem}.md"));
    let json_path = out_dir.join(format!("{stem}.json"));
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    std::fs::write(&json_path, &json)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("{md}");
    eprintln!(
        "pathtrace-bench: wrote {} and {} ({:.0}s)",
        md_path.display(),
        json_path.display(),
        results.wall_secs
    );
    Ok(())
}

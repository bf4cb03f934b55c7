//! Section: kernel time per forwarded packet, from the kernel's own BPF
//! run-time statistics.
//!
//! The contenders (pathtrace, the bpftrace peer and the floor: empty
//! programs on pathtrace's tracepoints; or pathtrace on each of several
//! tiers, `tiers.rs`), each tracer with a filter that matches nothing the
//! stream sends, take turns in every round (each round starts one further
//! along the list, so each goes first in turn); in each turn a paced UDP
//! stream goes through the Docker host's DNAT and the contender's programs'
//! `run_time_ns` and `run_cnt` are read before and after. Per packet
//! delivered to the sink: nanoseconds, program runs, and nanoseconds per run.
//! Ratios pair two contenders' turns of the same round. `drops.rs` takes
//! turns the same way under a stream into a DROP rule.
//!
//! The statistic is switched on with `BPF_ENABLE_STATS`, which hands back a
//! file descriptor: the kernel counts while it is open and stops when it is
//! closed, on any exit of this process (an error, Ctrl-C, even SIGKILL). The
//! `kernel.bpf_stats_enabled` sysctl is never written; the section records
//! its value before and after.
use std::{collections::BTreeMap, os::fd::OwnedFd, time::Duration};

use anyhow::{Context, Result};
use aya::{
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};
use serde::Serialize;

use crate::{
    bpf, children, drops,
    floor::Floor,
    net,
    peers::{bpftrace_script, BtRun, PtRun},
    stats::Summary,
    Ctx, OTHER_SRC,
};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The paced rate of the stream (`--cost-pps` changes it): below what either
/// tracer lets through on this machine, so every packet sent is forwarded and
/// the per-packet figures don't depend on how many the sink's socket drops.
pub const COST_PPS: u64 = 40_000;

/// How long a tracer's process may settle after its ready line before its
/// CPU time is read.
const SETTLE: Duration = Duration::from_millis(300);

/// Who takes a turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contender {
    /// pathtrace on this tier (None: the tier it picks itself).
    Pathtrace(Option<String>),
    Bpftrace,
    /// Empty programs on the tracepoints the turns' pathtrace attaches to.
    Floor,
    /// `pathtrace drops --quiet --metrics`.
    Drops,
    /// bpftrace counting `kfree_skb` by drops' key.
    DropsBpftrace,
}

impl Contender {
    /// The name its turns carry.
    pub fn label(&self) -> String {
        match self {
            Contender::Pathtrace(None) => "pathtrace".into(),
            Contender::Pathtrace(Some(tier)) => format!("pathtrace --tier {tier}"),
            Contender::Bpftrace => "bpftrace".into(),
            Contender::Floor => "floor (empty programs)".into(),
            Contender::Drops => "pathtrace drops --quiet --metrics".into(),
            Contender::DropsBpftrace => "bpftrace (kfree_skb counted by key)".into(),
        }
    }
}

/// The traffic of a section's turns, and the packets its figures are per.
#[derive(Clone, Debug)]
pub enum Stream {
    /// Paced UDP through the Docker host's DNAT: per packet the sink received.
    Forwarded,
    /// Paced UDP into a DROP rule: per packet the rule dropped.
    Dropped(drops::Target),
}

/// What the turns of one section share.
pub struct Turns<'a> {
    pub who: &'a [Contender],
    pub stream: Stream,
    /// Where the floor goes (the kernel's tracepoint names).
    pub floor_at: &'a [String],
}

/// Run time and run count of one program, from `bpf_prog_info`.
#[derive(Clone, Copy, Debug, Default)]
struct ProgStat {
    run_ns: u64,
    runs: u64,
}

/// Statistics of the programs with these ids (0 for one that is gone).
fn prog_stats(ids: &[u64]) -> BTreeMap<u64, ProgStat> {
    let mut out: BTreeMap<u64, ProgStat> =
        ids.iter().map(|&id| (id, ProgStat::default())).collect();
    // Other processes' programs come and go while the ids are walked: an
    // error for one of them is not ours to report.
    for info in loaded_programs().flatten() {
        if let Some(s) = out.get_mut(&u64::from(info.id())) {
            *s = ProgStat {
                run_ns: info.run_time().as_nanos() as u64,
                runs: info.run_count(),
            };
        }
    }
    out
}

/// One tracer's turn in one round.
#[derive(Clone, Debug, Serialize)]
pub struct Turn {
    pub round: usize,
    pub tool: String,
    pub packets_sent: u64,
    /// What the figures are per: packets the sink received (the forwarded
    /// stream) or the DROP rule dropped (the dropped one).
    pub packets_forwarded: u64,
    pub run_ns: u64,
    /// CPU time of the tracer's process during the stream (utime + stime);
    /// None for the floor, which has no process of its own.
    pub process_cpu_ms: Option<f64>,
    pub runs: u64,
    /// Runs and run time per program name.
    pub per_prog: Vec<ProgTurn>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProgTurn {
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
}

impl Turn {
    pub fn ns_per_packet(&self) -> f64 {
        self.run_ns as f64 / self.packets_forwarded.max(1) as f64
    }
    pub fn runs_per_packet(&self) -> f64 {
        self.runs as f64 / self.packets_forwarded.max(1) as f64
    }
    pub fn ns_per_run(&self) -> f64 {
        self.run_ns as f64 / self.runs.max(1) as f64
    }
    /// The tracer process's CPU time per packet, in ns.
    pub fn process_ns_per_packet(&self) -> Option<f64> {
        self.process_cpu_ms
            .map(|ms| ms * 1e6 / self.packets_forwarded.max(1) as f64)
    }

    /// The same turn counting only the programs whose names `keep` accepts.
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> Turn {
        let per_prog: Vec<ProgTurn> = self
            .per_prog
            .iter()
            .filter(|p| keep(&p.name))
            .cloned()
            .collect();
        Turn {
            runs: per_prog.iter().map(|p| p.runs).sum(),
            run_ns: per_prog.iter().map(|p| p.run_ns).sum(),
            per_prog,
            ..self.clone()
        }
    }
}

/// One tracer's figures over the rounds.
#[derive(Clone, Debug, Serialize)]
pub struct ToolCost {
    pub tool: String,
    pub ns_per_packet: Option<Summary>,
    pub runs_per_packet: Option<Summary>,
    pub ns_per_run: Option<Summary>,
    /// The tracer process's CPU time per packet, ns (userspace and system calls).
    pub process_ns_per_packet: Option<Summary>,
    /// Per program: median runs per packet and ns per run.
    pub per_prog: Vec<(String, f64, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    pub pps: u64,
    pub sample_secs: f64,
    pub sysctl_before: Option<String>,
    pub sysctl_after: Option<String>,
    pub turns: Vec<Turn>,
    pub pathtrace: ToolCost,
    pub bpftrace: Option<ToolCost>,
    pub floor: Option<ToolCost>,
    /// pathtrace ns/packet over the peer's, per round.
    pub ratio: Option<Summary>,
    /// pathtrace ns/packet over the floor's, per round.
    pub over_floor: Option<Summary>,
    /// The peer's ns/packet over the floor's, per round.
    pub peer_over_floor: Option<Summary>,
}

/// The turns of one run of rounds, with the sysctl around them.
pub struct Session {
    pub sysctl_before: Option<String>,
    pub sysctl_after: Option<String>,
    pub turns: Vec<Turn>,
}

fn sysctl() -> Option<String> {
    std::fs::read_to_string(SYSCTL)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Sends the stream and reads what `progs` (and the process `pid`) cost
/// meanwhile.
fn measure(
    ctx: &Ctx,
    round: usize,
    tool: String,
    progs: &[bpf::ProgFd],
    stream: &Stream,
    pid: Option<i32>,
) -> Result<Turn> {
    let ids: Vec<u64> = progs.iter().map(|p| p.id).collect();
    let dropped_before = match stream {
        Stream::Forwarded => 0,
        Stream::Dropped(t) => t.dropped(ctx.lab)?,
    };
    if pid.is_some() {
        // Work a tracer does just after its ready line is not per packet.
        std::thread::sleep(SETTLE);
    }
    let ticks_before = pid.and_then(children::cpu_ticks);
    let before = prog_stats(&ids);
    let (route, what) = match stream {
        Stream::Forwarded => (&ctx.route_udp, "UDP through the DNAT"),
        Stream::Dropped(t) => (&t.route, "UDP into the DROP rule"),
    };
    let u = net::udp_run(route, ctx.plan.sample(), Some(ctx.plan.cost_pps)).context(what)?;
    let after = prog_stats(&ids);
    let ticks_after = pid.and_then(children::cpu_ticks);
    let packets = match stream {
        Stream::Forwarded => u.received,
        Stream::Dropped(t) => t.dropped(ctx.lab)? - dropped_before,
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut turn = Turn {
        round,
        tool,
        packets_sent: u.sent,
        packets_forwarded: packets,
        run_ns: 0,
        runs: 0,
        process_cpu_ms: match (ticks_before, ticks_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 * 1000.0 / hz),
            _ => None,
        },
        per_prog: Vec::new(),
    };
    for p in progs {
        let (b, a) = (before[&p.id], after[&p.id]);
        let (runs, run_ns) = (
            a.runs - b.runs.min(a.runs),
            a.run_ns - b.run_ns.min(a.run_ns),
        );
        turn.runs += runs;
        turn.run_ns += run_ns;
        turn.per_prog.push(ProgTurn {
            name: p.name.clone().unwrap_or_else(|| p.id.to_string()),
            runs,
            run_ns,
        });
    }
    Ok(turn)
}

/// pathtrace with `args`: one turn.
fn pathtrace_turn(
    ctx: &mut Ctx,
    round: usize,
    bound: Duration,
    args: &[String],
    label: String,
    stream: &Stream,
) -> Result<Turn> {
    let out = ctx.out_file("cost-pt");
    let mut run = PtRun::start(&ctx.tools, args, bound, out, None)?;
    let result = (|| {
        anyhow::ensure!(run.ready.is_some(), "pathtrace did not start");
        if let Some(kib) = run.proc.vm_hwm_kib() {
            ctx.mem.pathtrace_ready_hwm_kib.push(kib as f64);
        }
        let held = bpf::held_by(run.proc.pid)?;
        let mut progs = held.progs;
        bpf::name_progs(&mut progs)?;
        measure(ctx, round, label, &progs, stream, Some(run.proc.pid))
    })();
    let stopped = run.finish();
    ctx.discard(&run.out);
    let turn = result.with_context(|| format!("pathtrace: {}", run.proc.stderr_text()))?;
    stopped?;
    Ok(turn)
}

/// pathtrace's arguments in the forwarded stream's turns: a filter that
/// matches nothing in it.
fn trace_args(tier: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--src".to_string(),
        OTHER_SRC.to_string(),
        "--no-rules".into(),
    ];
    if let Some(tier) = tier {
        args.extend(["--tier".to_string(), tier.to_string()]);
    }
    args
}

/// bpftrace running `script`, counting only its programs named in `names`
/// (its BEGIN and interval programs are not on the packet path).
fn bpftrace_turn(
    ctx: &mut Ctx,
    round: usize,
    script: String,
    names: &[String],
    label: String,
    stream: &Stream,
) -> Result<Turn> {
    let bt = ctx
        .tools
        .bpftrace
        .clone()
        .context("bpftrace is not available")?;
    let path = ctx.tools.work.join("peer-cost.bt");
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    let out = ctx.out_file("cost-bt");
    let mut run = BtRun::start(&bt, &path, out)?;
    let result = (|| {
        anyhow::ensure!(run.ready.is_some(), "bpftrace did not start");
        let held = bpf::held_by(run.proc.pid)?;
        let mut progs = held.progs;
        bpf::name_progs(&mut progs)?;
        progs.retain(|p| p.name.as_ref().is_some_and(|n| names.contains(n)));
        measure(ctx, round, label, &progs, stream, Some(run.proc.pid))
    })();
    let stopped = run.finish();
    ctx.discard(&run.out);
    let turn = result.with_context(|| format!("bpftrace: {}", run.proc.stderr_text()))?;
    stopped?;
    Ok(turn)
}

/// The empty programs on `at`, for one turn.
fn floor_turn(ctx: &mut Ctx, round: usize, at: &[String], stream: &Stream) -> Result<Turn> {
    let floor = Floor::attach(&ctx.tools.floor_obj, at)?;
    measure(
        ctx,
        round,
        Contender::Floor.label(),
        &floor.progs,
        stream,
        None,
    )
}

/// One turn of `c`.
fn turn(ctx: &mut Ctx, c: &Contender, round: usize, t: &Turns) -> Result<Turn> {
    let bound = ctx.plan.sample() + Duration::from_secs(60);
    let label = c.label();
    match c {
        Contender::Pathtrace(tier) => pathtrace_turn(
            ctx,
            round,
            bound,
            &trace_args(tier.as_deref()),
            label,
            &t.stream,
        ),
        Contender::Bpftrace => {
            let script = bpftrace_script(OTHER_SRC, bound, &ctx.attach);
            let names: Vec<String> = ctx.attach.iter().map(|a| a.prog_name()).collect();
            bpftrace_turn(ctx, round, script, &names, label, &t.stream)
        }
        Contender::Floor => floor_turn(ctx, round, t.floor_at, &t.stream),
        Contender::Drops => pathtrace_turn(ctx, round, bound, &drops::args(), label, &t.stream),
        Contender::DropsBpftrace => {
            let names = vec![drops::PEER_PROG.to_string()];
            bpftrace_turn(
                ctx,
                round,
                drops::peer_script(bound),
                &names,
                label,
                &t.stream,
            )
        }
    }
}

/// The figures over the rounds of the turns labelled `tool`.
pub fn summarize(turns: &[Turn], tool: &str) -> ToolCost {
    let mine: Vec<&Turn> = turns.iter().filter(|t| t.tool == tool).collect();
    let of = |f: fn(&Turn) -> f64| Summary::of(&mine.iter().map(|t| f(t)).collect::<Vec<_>>());
    let mut names: Vec<String> = mine
        .iter()
        .flat_map(|t| t.per_prog.iter().map(|p| p.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    let per_prog = names
        .into_iter()
        .map(|name| {
            let rows: Vec<(f64, f64)> = mine
                .iter()
                .filter_map(|t| {
                    let p = t.per_prog.iter().find(|p| p.name == name)?;
                    Some((
                        p.runs as f64 / t.packets_forwarded.max(1) as f64,
                        // A turn in which it never ran has no time per run.
                        p.run_ns as f64 / p.runs as f64,
                    ))
                })
                .collect();
            let med = |v: Vec<f64>| Summary::of(&v).map_or(0.0, |s| s.median);
            let rpp = med(rows.iter().map(|r| r.0).collect());
            let npr = med(rows.iter().map(|r| r.1).collect());
            (name, rpp, npr)
        })
        .collect();
    ToolCost {
        tool: tool.to_string(),
        ns_per_packet: of(Turn::ns_per_packet),
        runs_per_packet: of(Turn::runs_per_packet),
        ns_per_run: of(Turn::ns_per_run),
        process_ns_per_packet: Summary::of(
            &mine
                .iter()
                .filter_map(|t| t.process_ns_per_packet())
                .collect::<Vec<_>>(),
        ),
        per_prog,
    }
}

/// ns per packet of each turn in `num` over that of the turn in `den` of the
/// same round, for each round both have a turn in.
pub fn paired_ratios(num: &[Turn], den: &[Turn]) -> Vec<f64> {
    num.iter()
        .filter_map(|n| {
            let d = den.iter().find(|d| d.round == n.round)?;
            Some(n.ns_per_packet() / d.ns_per_packet())
        })
        .collect()
}

/// The turns labelled `tool`.
pub fn turns_of(turns: &[Turn], tool: &str) -> Vec<Turn> {
    turns.iter().filter(|t| t.tool == tool).cloned().collect()
}

/// The order of round `round`: each round starts one further along, so each
/// contender goes first in turn (with two, the order alternates).
pub fn round_order<T: Clone>(who: &[T], round: usize) -> Vec<T> {
    let mut order = who.to_vec();
    if !order.is_empty() {
        let by = round % order.len();
        order.rotate_left(by);
    }
    order
}

/// The statistic, on while the value lives.
struct StatsOn(
    #[expect(dead_code, reason = "held: closing it switches the statistic off")] OwnedFd,
);

/// The contenders take turns, round after round, with the statistic on.
pub fn take_turns(ctx: &mut Ctx, t: &Turns) -> Result<Session> {
    let sysctl_before = sysctl();
    let stats = StatsOn(enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (kernel 5.8+)")?);
    let rounds = if ctx.plan.mode == "quick" { 3 } else { 5 };
    let mut turns = Vec::new();
    'rounds: for round in 0..rounds {
        for c in round_order(t.who, round) {
            if ctx.stop_now() {
                break 'rounds;
            }
            let label = c.label();
            eprintln!(
                "pathtrace-bench: cost round {}/{rounds}: {label}",
                round + 1
            );
            match turn(ctx, &c, round, t) {
                Ok(t) => turns.push(t),
                Err(e) => ctx.error(&format!("cost round {} ({label})", round + 1), &e),
            }
        }
    }
    drop(stats);
    Ok(Session {
        sysctl_before,
        sysctl_after: sysctl(),
        turns,
    })
}

/// Paired ratios of `num`'s turns over `den`'s, when both took turns.
pub fn ratio_of(turns: &[Turn], num: &Contender, den: &Contender) -> Option<Summary> {
    Summary::of(&paired_ratios(
        &turns_of(turns, &num.label()),
        &turns_of(turns, &den.label()),
    ))
}

pub fn run(ctx: &mut Ctx) -> Result<Cost> {
    let pt = Contender::Pathtrace(None);
    let mut who = vec![pt.clone()];
    if ctx.tools.bpftrace.is_some() {
        who.push(Contender::Bpftrace);
    }
    if !ctx.pathtrace_attach.is_empty() {
        who.push(Contender::Floor);
    }
    let floor_at = ctx.pathtrace_attach.clone();
    let s = take_turns(
        ctx,
        &Turns {
            who: &who,
            stream: Stream::Forwarded,
            floor_at: &floor_at,
        },
    )?;
    let (bt, floor) = (Contender::Bpftrace, Contender::Floor);
    let took = |c: &Contender| who.contains(c).then(|| summarize(&s.turns, &c.label()));
    Ok(Cost {
        pps: ctx.plan.cost_pps,
        sample_secs: ctx.plan.sample_secs,
        sysctl_before: s.sysctl_before,
        sysctl_after: s.sysctl_after,
        pathtrace: summarize(&s.turns, &pt.label()),
        bpftrace: took(&bt),
        floor: took(&floor),
        ratio: ratio_of(&s.turns, &pt, &bt),
        over_floor: ratio_of(&s.turns, &pt, &floor),
        peer_over_floor: ratio_of(&s.turns, &bt, &floor),
        turns: s.turns,
    })
}

/// The per-packet table of `tools` (the first is pathtrace), the ratios,
/// and each program's runs and time.
pub fn markdown(
    s: &mut String,
    tools: &[&ToolCost],
    ratio: &Option<Summary>,
    over_floor: &Option<Summary>,
    peer_over_floor: &Option<Summary>,
) {
    use std::fmt::Write as _;

    use crate::stats::show;
    let int = |v: f64| format!("{v:.0}");
    let times = |v: f64| format!("{v:.2}×");
    let _ = writeln!(
        s,
        "| contender | kernel ns per packet | program runs per packet | ns per run | its process's CPU, ns per packet |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for t in tools {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            t.tool,
            show(&t.ns_per_packet, int),
            show(&t.runs_per_packet, |v| format!("{v:.2}")),
            show(&t.ns_per_run, int),
            show(&t.process_ns_per_packet, int),
        );
    }
    let _ = writeln!(
        s,
        "\nKernel ns per packet, paired by round: pathtrace / peer {}; pathtrace / floor {}; peer / floor {}.\n",
        show(ratio, times),
        show(over_floor, times),
        show(peer_over_floor, times),
    );
    let _ = writeln!(s, "| program | runs per packet | ns per run |");
    let _ = writeln!(s, "| --- | --- | --- |");
    for t in tools {
        for (name, rpp, npr) in &t.per_prog {
            let _ = writeln!(s, "| {} {name} | {rpp:.2} | {npr:.0} |", t.tool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn turn(round: usize, tool: &str, forwarded: u64, runs: u64, run_ns: u64) -> Turn {
        Turn {
            round,
            tool: tool.to_string(),
            packets_sent: forwarded,
            packets_forwarded: forwarded,
            run_ns,
            runs,
            process_cpu_ms: None,
            per_prog: vec![ProgTurn {
                name: "net_dev_queue".into(),
                runs,
                run_ns,
            }],
        }
    }

    #[test]
    fn per_packet_figures_and_per_program_medians() {
        let turns = vec![
            turn(0, "pathtrace", 1000, 7000, 700_000),
            turn(0, "bpftrace", 1000, 7000, 1_400_000),
            turn(1, "bpftrace", 2000, 14000, 2_800_000),
            turn(1, "pathtrace", 2000, 14000, 1_400_000),
            turn(2, "pathtrace", 1000, 8000, 800_000),
        ];
        let pt = summarize(&turns, "pathtrace");
        let ns = pt.ns_per_packet.expect("ns per packet");
        assert_eq!((ns.median, ns.n), (700.0, 3));
        assert_eq!(pt.runs_per_packet.expect("runs").median, 7.0);
        assert_eq!(pt.ns_per_run.expect("ns per run").median, 100.0);
        assert_eq!(pt.per_prog, vec![("net_dev_queue".to_string(), 7.0, 100.0)]);
        // Turns in which a program never ran don't pull its time per run to 0.
        let mut rare = turns.clone();
        for (i, runs, ns) in [(0, 0, 0), (3, 2, 900), (4, 1, 300)] {
            rare[i].per_prog[0].runs = runs;
            rare[i].per_prog[0].run_ns = ns;
        }
        let pt = summarize(&rare, "pathtrace");
        assert_eq!(
            pt.per_prog,
            vec![("net_dev_queue".to_string(), 0.001, 375.0)]
        );
        let bt = summarize(&turns, "bpftrace");
        assert_eq!(bt.ns_per_packet.expect("ns").median, 1400.0);
        // Round 2 has no peer turn: only rounds with both are paired.
        assert_eq!(
            paired_ratios(
                &turns_of(&turns, "pathtrace"),
                &turns_of(&turns, "bpftrace")
            ),
            vec![0.5, 0.5]
        );
    }

    #[test]
    fn each_round_starts_one_further_along() {
        let who = ["a", "b", "c"];
        assert_eq!(round_order(&who, 0), ["a", "b", "c"]);
        assert_eq!(round_order(&who, 1), ["b", "c", "a"]);
        assert_eq!(round_order(&who, 3), ["a", "b", "c"]);
        assert_eq!(round_order(&["p", "b"], 1), ["b", "p"]);
    }

    #[test]
    fn a_turn_narrowed_to_some_programs() {
        let mut t = turn(0, "x", 1000, 4000, 400_000);
        t.per_prog.push(ProgTurn {
            name: "nf_hook_slow_kp".into(),
            runs: 2000,
            run_ns: 600_000,
        });
        t.runs += 2000;
        t.run_ns += 600_000;
        let nf = t.only(|n| n.starts_with("nf_hook_slow"));
        assert_eq!((nf.runs, nf.run_ns, nf.per_prog.len()), (2000, 600_000, 1));
        assert_eq!(nf.ns_per_packet(), 600.0);
        assert_eq!(t.only(|_| true).ns_per_packet(), t.ns_per_packet());
    }
}

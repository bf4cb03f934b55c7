//! Section 1: throughput of a bulk TCP stream and a small-packet UDP stream
//! through the Docker host, with no tracer and with each tracer. Conditions
//! take turns round by round, so each is compared with the baseline of its
//! own round.
use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    net,
    peers::{bpftrace_script, BtRun, NftTrace, PtRun, StopInfo},
    stats::Summary,
    Ctx, OTHER_SRC, READY_AUTO_NORULES, READY_BT_ATTACHING, READY_BT_BEGIN,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Cond {
    /// (a) no tracer.
    A,
    /// (b) pathtrace, its filter matching other traffic.
    B,
    /// (c) pathtrace matching the stream, text output to a file.
    C,
    /// (d0) the bpftrace peer, its filter matching other traffic.
    D0,
    /// (d) the bpftrace peer matching the stream.
    D,
    /// (e) nft trace of the stream, `nft monitor trace > /dev/null`.
    E,
}

impl Cond {
    pub fn key(self) -> &'static str {
        match self {
            Cond::A => "a",
            Cond::B => "b",
            Cond::C => "c",
            Cond::D0 => "d0",
            Cond::D => "d",
            Cond::E => "e",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Cond::A => "no tracer",
            Cond::B => "pathtrace, filter matches other traffic (--src 192.0.2.77 --no-rules)",
            Cond::C => {
                "pathtrace matching the stream (--src 192.0.2.134 --no-rules, text to a file)"
            }
            Cond::D0 => "bpftrace peer, filter matches other traffic (192.0.2.77)",
            Cond::D => "bpftrace peer matching the stream (192.0.2.134, output to a file)",
            Cond::E => {
                "nft trace of the stream (meta nftrace set 1 + nft monitor trace > /dev/null)"
            }
        }
    }
}

/// One condition's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CondResult {
    pub key: &'static str,
    pub label: &'static str,
    /// Bulk TCP goodput at the sink, bits/s.
    pub tcp_bps: Option<Summary>,
    /// Per sample slot: this condition's TCP rate over (a)'s in the same slot.
    pub tcp_ratio: Option<Summary>,
    /// UDP datagrams delivered to the sink per second of sending.
    pub udp_pps: Option<Summary>,
    pub udp_ratio: Option<Summary>,
    /// UDP datagrams the sender got out per second.
    pub udp_sent_pps: Option<Summary>,
    /// Events the tracer reported lost, per run (pathtrace/bpftrace).
    pub tracer_lost: Vec<u64>,
    /// Bytes of tracer output per run.
    pub tracer_output_bytes: Vec<u64>,
    /// pathtrace: which signal ended each run, and how long after SIGINT.
    pub tracer_stop: Vec<StopInfo>,
    pub skipped: Option<String>,
}

#[derive(Default)]
struct Raw {
    tcp: BTreeMap<usize, f64>,
    udp: BTreeMap<usize, f64>,
    udp_sent: BTreeMap<usize, f64>,
    lost: Vec<u64>,
    out_bytes: Vec<u64>,
    stops: Vec<StopInfo>,
}

enum Active {
    None,
    Pt(Box<PtRun>),
    Bt(Box<BtRun>),
    Nft(NftTrace),
}

fn start(ctx: &mut Ctx, cond: Cond, bound: Duration) -> Result<Active> {
    let lab = ctx.lab;
    let stream_src = lab.addrs().other;
    let pt =
        |src: std::net::Ipv4Addr| vec!["--src".to_string(), src.to_string(), "--no-rules".into()];
    Ok(match cond {
        Cond::A => Active::None,
        Cond::B | Cond::C => {
            let src = if cond == Cond::B {
                OTHER_SRC
            } else {
                stream_src
            };
            let out = ctx.out_file(cond.key());
            let run = PtRun::start(&ctx.tools, &pt(src), bound, out, None)?;
            if run.ready.is_none() {
                let mut run = run;
                anyhow::bail!("pathtrace did not start: {}", run.proc.stderr_text());
            }
            ctx.ready(READY_AUTO_NORULES, run.ready);
            Active::Pt(Box::new(run))
        }
        Cond::D0 | Cond::D => {
            let src = if cond == Cond::D0 {
                OTHER_SRC
            } else {
                stream_src
            };
            let bt = ctx
                .tools
                .bpftrace
                .clone()
                .context("bpftrace is not available")?;
            let script = ctx.tools.work.join(format!("peer-{}.bt", cond.key()));
            std::fs::write(&script, bpftrace_script(src, bound, &ctx.attach))
                .with_context(|| format!("writing {}", script.display()))?;
            let out = ctx.out_file(cond.key());
            let run = BtRun::start(&bt, &script, out)?;
            if run.ready.is_none() {
                let mut run = run;
                anyhow::bail!("bpftrace did not start: {}", run.proc.stderr_text());
            }
            ctx.ready(READY_BT_BEGIN, run.ready);
            ctx.ready(READY_BT_ATTACHING, run.attaching);
            Active::Bt(Box::new(run))
        }
        Cond::E => Active::Nft(NftTrace::start(lab, stream_src, bound, &ctx.tools.work)?),
    })
}

fn stop(ctx: &mut Ctx, cond: Cond, active: Active, raw: &mut Raw) -> Result<()> {
    match active {
        Active::None => {}
        Active::Pt(mut run) => {
            if cond == Cond::C {
                ctx.pathtrace_memory(&run);
            }
            let stats = run.finish()?;
            if let Some(s) = stats {
                raw.lost.push(s.lost);
            }
            raw.stops.extend(run.stop.clone());
            raw.out_bytes.push(ctx.discard(&run.out));
        }
        Active::Bt(mut run) => {
            if cond == Cond::D {
                ctx.bpftrace_memory(&run);
            }
            let counts = run.finish()?;
            raw.lost.push(counts.lost);
            raw.out_bytes.push(ctx.discard(&run.out));
        }
        Active::Nft(t) => t.finish(ctx.lab)?,
    }
    Ok(())
}

fn ratios(mine: &BTreeMap<usize, f64>, base: &BTreeMap<usize, f64>) -> Vec<f64> {
    mine.iter()
        .filter_map(|(slot, v)| base.get(slot).map(|b| v / b))
        .collect()
}

pub fn run(ctx: &mut Ctx) -> Vec<CondResult> {
    let mut conds = vec![Cond::A, Cond::B, Cond::C];
    let mut skipped = BTreeMap::new();
    if ctx.tools.bpftrace.is_some() {
        conds.extend([Cond::D0, Cond::D]);
    } else {
        for c in [Cond::D0, Cond::D] {
            skipped.insert(c, "bpftrace is not installed".to_string());
        }
    }
    conds.push(Cond::E);
    let (rounds, per_round, sample) = (ctx.plan.rounds, ctx.plan.per_round, ctx.plan.sample());
    let bound = sample * 2 * per_round as u32 + Duration::from_secs(60);
    let mut raw: BTreeMap<Cond, Raw> = conds.iter().map(|c| (*c, Raw::default())).collect();
    'rounds: for round in 0..rounds {
        for k in 0..conds.len() {
            let cond = conds[(k + round) % conds.len()];
            if ctx.stop_now() {
                break 'rounds;
            }
            eprintln!(
                "pathtrace-bench: throughput round {}/{rounds}: ({}) {}",
                round + 1,
                cond.key(),
                cond.label()
            );
            let active = match start(ctx, cond, bound) {
                Ok(a) => a,
                Err(e) => {
                    ctx.error(&format!("({}) start", cond.key()), &e);
                    continue;
                }
            };
            let r = raw.entry(cond).or_default();
            let mut errors = Vec::new();
            for i in 0..per_round {
                let slot = round * per_round + i;
                match net::tcp_sample(&ctx.route_tcp, sample) {
                    Ok(s) => {
                        r.tcp.insert(slot, s.bits_per_sec());
                    }
                    Err(e) => errors.push(("TCP sample", e)),
                }
                match net::udp_run(&ctx.route_udp, sample, None) {
                    Ok(u) => {
                        r.udp.insert(slot, u.received_pps());
                        r.udp_sent.insert(slot, u.sent_pps());
                    }
                    Err(e) => errors.push(("UDP sample", e)),
                }
            }
            let mut r = std::mem::take(r);
            if let Err(e) = stop(ctx, cond, active, &mut r) {
                errors.push(("stopping the tracer", e));
            }
            raw.insert(cond, r);
            for (what, e) in errors {
                ctx.error(&format!("({}) {what}", cond.key()), &e);
            }
        }
    }
    let empty = Raw::default();
    let base = raw.get(&Cond::A).unwrap_or(&empty);
    let mut all = vec![Cond::A, Cond::B, Cond::C, Cond::D0, Cond::D, Cond::E];
    all.retain(|c| conds.contains(c) || skipped.contains_key(c));
    all.iter()
        .map(|&c| {
            let r = raw.get(&c).unwrap_or(&empty);
            let vals =
                |m: &BTreeMap<usize, f64>| Summary::of(&m.values().copied().collect::<Vec<_>>());
            CondResult {
                key: c.key(),
                label: c.label(),
                tcp_bps: vals(&r.tcp),
                tcp_ratio: Summary::of(&ratios(&r.tcp, &base.tcp)),
                udp_pps: vals(&r.udp),
                udp_ratio: Summary::of(&ratios(&r.udp, &base.udp)),
                udp_sent_pps: vals(&r.udp_sent),
                tracer_lost: r.lost.clone(),
                tracer_output_bytes: r.out_bytes.clone(),
                tracer_stop: r.stops.clone(),
                skipped: skipped.get(&c).cloned(),
            }
        })
        .collect()
}

impl Cond {
    pub fn from_key(key: &str) -> Option<Cond> {
        [Cond::A, Cond::B, Cond::C, Cond::D0, Cond::D, Cond::E]
            .into_iter()
            .find(|c| c.key() == key)
    }
}

/// Profiling aid: one condition's tracer under a stream for `secs`, its pid
/// on stderr, one line per second of traffic.
pub fn soak(ctx: &mut Ctx, cond: Cond, secs: u64, rate: Option<u64>, tcp: bool) -> Result<()> {
    let total = Duration::from_secs(secs);
    let active = start(ctx, cond, total + Duration::from_secs(60))?;
    let pid = match &active {
        Active::Pt(r) => Some(r.proc.pid),
        Active::Bt(r) => Some(r.proc.pid),
        _ => None,
    };
    eprintln!(
        "pathtrace-bench: soak ({}) {}: tracer pid {pid:?}, {secs} s of {}",
        cond.key(),
        cond.label(),
        if tcp { "TCP" } else { "UDP" }
    );
    let started = std::time::Instant::now();
    let mut result = Ok(());
    while started.elapsed() < total && !ctx.stop_now() {
        let chunk = Duration::from_secs(1);
        if tcp {
            match net::tcp_sample(&ctx.route_tcp, chunk) {
                Ok(s) => eprintln!(
                    "pathtrace-bench: soak TCP {:.2} Gbit/s",
                    s.bits_per_sec() / 1e9
                ),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        } else {
            match net::udp_run(&ctx.route_udp, chunk, rate) {
                Ok(u) => eprintln!(
                    "pathtrace-bench: soak UDP sent {:.0} pps, delivered {:.0} pps",
                    u.sent_pps(),
                    u.received_pps()
                ),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Active::Pt(r) = &active {
            eprintln!(
                "pathtrace-bench: soak pathtrace VmHWM {} KiB",
                r.proc.vm_hwm_kib().unwrap_or(0)
            );
        }
    }
    let mut raw = Raw::default();
    stop(ctx, cond, active, &mut raw)?;
    eprintln!(
        "pathtrace-bench: soak done: lost {:?}, stop {:?}, memory {:?}",
        raw.lost, raw.stops, ctx.mem.pathtrace_hwm_kib
    );
    result
}

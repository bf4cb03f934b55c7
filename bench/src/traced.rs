//! Section 2: the highest rate of matching UDP packets traced without loss.
//!
//! One tracer run per repetition steps through the rates in ascending order.
//! For pathtrace, the kernel's own `COUNTERS` (read with bpftool before and
//! after each step) say how many events it wrote (`sent`) and could not write
//! (`lost`); at exit, the `lost` and `events` pathtrace reports are checked
//! against the kernel's totals, and `sent + lost` against the events the
//! packets sent should have produced (packets × events per packet, measured
//! at the lowest rate).
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    bpf, net,
    peers::{bpftrace_script, BtRun, PtRun, PtStats, StopInfo},
    stats::Summary,
    Ctx, READY_AUTO_NORULES, READY_BT_ATTACHING, READY_BT_BEGIN,
};

/// One rate step of one repetition.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub rep: usize,
    pub rate: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub achieved_pps: f64,
    /// Events the tracer handed over in this step (pathtrace: kernel `sent`; bpftrace: lines).
    pub events: u64,
    /// Events lost in this step (pathtrace: kernel `lost`; bpftrace: `Lost N events`).
    pub lost: u64,
    /// events + lost: what the kernel side tried to hand over.
    pub attempted: u64,
}

/// What the tracer said at exit against what the kernel counted.
#[derive(Clone, Debug, Serialize)]
pub struct ExitCheck {
    pub rep: usize,
    pub reported: Option<PtStats>,
    pub kernel_sent: u64,
    pub kernel_lost: u64,
    /// Reported `lost` equals the kernel's `lost` counter.
    pub lost_equal: bool,
    /// Reported `events` (read by userspace) minus the kernel's `sent` counter
    /// read just before the stop (an event after that read makes it 1).
    pub events_diff: i64,
    /// Which signal ended the run.
    pub stop: Option<StopInfo>,
}

/// Figures for one rate over the repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct RateRow {
    pub rate: u64,
    pub achieved_pps: Option<Summary>,
    pub lost: Option<Summary>,
    /// lost / attempted.
    pub lost_fraction: Option<Summary>,
    pub lossless_reps: usize,
    pub reps: usize,
    /// attempted / (packets sent × events per packet).
    pub attempted_over_expected: Option<Summary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ladder {
    pub tool: &'static str,
    pub steps: Vec<Step>,
    pub rows: Vec<RateRow>,
    /// Events per packet at the lowest rate (the fewest over repetitions).
    pub events_per_packet: Option<f64>,
    /// The highest rate at which it and every lower rate lost nothing in every repetition.
    pub max_lossless_pps: Option<u64>,
    pub exit_checks: Vec<ExitCheck>,
    /// VmHWM at the end of each repetition, KiB.
    pub hwm_kib: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Traced {
    pub pathtrace: Ladder,
    pub bpftrace: Option<Ladder>,
}

fn counters(id: u64) -> Result<(u64, u64)> {
    let t = bpf::percpu_totals(id)?;
    let get = |i: usize| t.get(i).copied().unwrap_or(0);
    Ok((get(bpf::COUNTER_SENT), get(bpf::COUNTER_LOST)))
}

fn counters_id(pid: i32) -> Result<u64> {
    let held = bpf::held_by(pid)?;
    let maps = bpf::maps(&held.map_ids)?;
    maps.iter()
        .find(|m| m.name == tracer_common::names::map::COUNTERS)
        .map(|m| m.id)
        .context("pathtrace holds no COUNTERS map")
}

fn pathtrace_rep(
    ctx: &mut Ctx,
    rep: usize,
    steps: &mut Vec<Step>,
    ladder: &mut Ladder,
) -> Result<()> {
    let src = crate::LADDER_SRC;
    let step = Duration::from_secs_f64(ctx.plan.rate_step_secs);
    let bound =
        (step + Duration::from_secs(4)) * ctx.plan.rates.len() as u32 + Duration::from_secs(60);
    let args = vec!["--src".to_string(), src.to_string(), "--no-rules".into()];
    let out = ctx.out_file("ladder-pathtrace");
    let mut run = PtRun::start(&ctx.tools, &args, bound, out, None)?;
    if run.ready.is_none() {
        anyhow::bail!("pathtrace did not start: {}", run.proc.stderr_text());
    }
    ctx.ready(READY_AUTO_NORULES, run.ready);
    let id = counters_id(run.proc.pid)?;
    let mut before = counters(id)?;
    for &rate in &ctx.plan.rates.clone() {
        if ctx.stop_now() {
            break;
        }
        let u = net::udp_run(&ctx.route_ladder, step, Some(rate))?;
        // Let pathtrace catch up before reading the counters.
        run.proc.wait_idle(Duration::from_secs(5));
        let after = counters(id)?;
        let (sent, lost) = (after.0 - before.0, after.1 - before.1);
        before = after;
        eprintln!(
            "pathtrace-bench:   pathtrace rep {} {rate} pps: sent {} pkts ({:.0} pps), {sent} events, {lost} lost",
            rep + 1,
            u.sent,
            u.sent_pps()
        );
        steps.push(Step {
            rep,
            rate,
            packets_sent: u.sent,
            packets_received: u.received,
            achieved_pps: u.sent_pps(),
            events: sent,
            lost,
            attempted: sent + lost,
        });
    }
    ctx.pathtrace_memory(&run);
    if let Some(kib) = ctx.mem.pathtrace_hwm_kib.last() {
        ladder.hwm_kib.push(*kib);
    }
    let (ksent, klost) = counters(id)?;
    let reported = run.finish()?;
    ctx.discard(&run.out);
    ladder.exit_checks.push(ExitCheck {
        rep,
        lost_equal: reported.as_ref().is_some_and(|r| r.lost == klost),
        events_diff: reported
            .as_ref()
            .map_or(i64::MIN, |r| r.events as i64 - ksent as i64),
        reported,
        kernel_sent: ksent,
        kernel_lost: klost,
        stop: run.stop.clone(),
    });
    Ok(())
}

fn bpftrace_rep(
    ctx: &mut Ctx,
    rep: usize,
    steps: &mut Vec<Step>,
    ladder: &mut Ladder,
) -> Result<()> {
    let bt = ctx
        .tools
        .bpftrace
        .clone()
        .context("bpftrace is not available")?;
    let src = crate::LADDER_SRC;
    let step = Duration::from_secs_f64(ctx.plan.rate_step_secs);
    let bound =
        (step + Duration::from_secs(4)) * ctx.plan.rates.len() as u32 + Duration::from_secs(60);
    let script = ctx.tools.work.join("peer-ladder.bt");
    std::fs::write(&script, bpftrace_script(src, bound, &ctx.attach))
        .with_context(|| format!("writing {}", script.display()))?;
    let out = ctx.out_file("ladder-bpftrace");
    let mut run = BtRun::start(&bt, &script, out)?;
    if run.ready.is_none() {
        anyhow::bail!("bpftrace did not start: {}", run.proc.stderr_text());
    }
    ctx.ready(READY_BT_BEGIN, run.ready);
    ctx.ready(READY_BT_ATTACHING, run.attaching);
    run.tail.read()?;
    for &rate in &ctx.plan.rates.clone() {
        if ctx.stop_now() {
            break;
        }
        let u = net::udp_run(&ctx.route_ladder, step, Some(rate))?;
        run.proc.wait_idle(Duration::from_secs(5));
        let new = run.tail.read()?;
        eprintln!(
            "pathtrace-bench:   bpftrace rep {} {rate} pps: sent {} pkts ({:.0} pps), {} events, {} lost",
            rep + 1,
            u.sent,
            u.sent_pps(),
            new.events,
            new.lost
        );
        steps.push(Step {
            rep,
            rate,
            packets_sent: u.sent,
            packets_received: u.received,
            achieved_pps: u.sent_pps(),
            events: new.events,
            lost: new.lost,
            attempted: new.events + new.lost,
        });
    }
    ctx.bpftrace_memory(&run);
    if let Some(kib) = ctx.mem.bpftrace_hwm_kib.last() {
        ladder.hwm_kib.push(*kib);
    }
    run.finish()?;
    ctx.discard(&run.out);
    Ok(())
}

fn summarise(ladder: &mut Ladder, rates: &[u64]) {
    let lowest = rates.iter().min().copied().unwrap_or(0);
    let per_packet: Vec<f64> = ladder
        .steps
        .iter()
        .filter(|s| s.rate == lowest && s.packets_sent > 0)
        .map(|s| s.attempted as f64 / s.packets_sent as f64)
        .collect();
    // The fewest: a packet the LAN bridge floods (its FDB entry for the Docker
    // host aged out) produces more events than one it forwards.
    ladder.events_per_packet = Summary::of(&per_packet).map(|s| s.min);
    let mut all_lossless_so_far = true;
    for &rate in rates {
        let steps: Vec<&Step> = ladder.steps.iter().filter(|s| s.rate == rate).collect();
        if steps.is_empty() {
            all_lossless_so_far = false;
            continue;
        }
        let lossless = steps.iter().filter(|s| s.lost == 0).count();
        // A rate the sender did not reach says nothing about that rate.
        let reached = steps.iter().all(|s| s.achieved_pps >= 0.9 * rate as f64);
        if all_lossless_so_far && reached && lossless == steps.len() {
            ladder.max_lossless_pps = Some(rate);
        } else {
            all_lossless_so_far = false;
        }
        let of =
            |f: &dyn Fn(&Step) -> f64| Summary::of(&steps.iter().map(|s| f(s)).collect::<Vec<_>>());
        let epp = ladder.events_per_packet;
        ladder.rows.push(RateRow {
            rate,
            achieved_pps: of(&|s| s.achieved_pps),
            lost: of(&|s| s.lost as f64),
            lost_fraction: of(&|s| {
                if s.attempted > 0 {
                    s.lost as f64 / s.attempted as f64
                } else {
                    0.0
                }
            }),
            lossless_reps: lossless,
            reps: steps.len(),
            attempted_over_expected: epp
                .and_then(|e| of(&|s| s.attempted as f64 / (s.packets_sent as f64 * e))),
        });
    }
}

fn empty(tool: &'static str) -> Ladder {
    Ladder {
        tool,
        steps: Vec::new(),
        rows: Vec::new(),
        events_per_packet: None,
        max_lossless_pps: None,
        exit_checks: Vec::new(),
        hwm_kib: Vec::new(),
    }
}

pub fn run(ctx: &mut Ctx) -> Traced {
    let mut pt = empty("pathtrace");
    let mut bt = ctx.tools.bpftrace.as_ref().map(|_| empty("bpftrace"));
    let reps = ctx.plan.rate_reps.max(ctx.plan.bpftrace_rate_reps);
    for rep in 0..reps {
        if ctx.stop_now() {
            break;
        }
        if rep < ctx.plan.rate_reps {
            eprintln!(
                "pathtrace-bench: traced pps, pathtrace rep {}/{}",
                rep + 1,
                ctx.plan.rate_reps
            );
            let mut steps = Vec::new();
            let r = pathtrace_rep(ctx, rep, &mut steps, &mut pt);
            pt.steps.extend(steps);
            if let Err(e) = r {
                ctx.error(&format!("traced pps, pathtrace rep {}", rep + 1), &e);
            }
        }
        if let Some(bt) = bt.as_mut() {
            if rep < ctx.plan.bpftrace_rate_reps && !ctx.stop_now() {
                eprintln!(
                    "pathtrace-bench: traced pps, bpftrace rep {}/{}",
                    rep + 1,
                    ctx.plan.bpftrace_rate_reps
                );
                let mut steps = Vec::new();
                let r = bpftrace_rep(ctx, rep, &mut steps, bt);
                bt.steps.extend(steps);
                if let Err(e) = r {
                    ctx.error(&format!("traced pps, bpftrace rep {}", rep + 1), &e);
                }
            }
        }
    }
    let rates = ctx.plan.rates.clone();
    summarise(&mut pt, &rates);
    if let Some(bt) = bt.as_mut() {
        summarise(bt, &rates);
    }
    Traced {
        pathtrace: pt,
        bpftrace: bt,
    }
}

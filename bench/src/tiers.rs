//! Section (`--tiers`): the kernel cost per forwarded packet of pathtrace on
//! each of several tiers, in the same kernel and the same rounds (cost.rs's
//! turns, pathtrace on one tier per turn). Run by `cargo xtask bench --vm`
//! in a guest under software emulation, where absolute times mean little:
//! what counts is the cost of the `nf_hook_slow` programs (fentry/fexit,
//! kprobe/kretprobe) relative to the tracepoint programs.
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;
use tracer_common::names::program::on_nf_hook_slow;

use crate::{
    cost::{self, paired_ratios, summarize, turns_of, Contender, ToolCost, Turn},
    stats::{show, Summary},
    Ctx,
};

/// ns per packet over the baseline tier's (all its programs), paired by round.
#[derive(Clone, Debug, Serialize)]
pub struct VsBaseline {
    pub all: Option<Summary>,
    pub tracepoint_progs: Option<Summary>,
    pub nf_hook_slow_progs: Option<Summary>,
}

/// One tier's figures.
#[derive(Clone, Debug, Serialize)]
pub struct TierRow {
    pub tier: String,
    pub all: ToolCost,
    /// The programs on tracepoints (every program not on `nf_hook_slow`).
    pub tracepoint_progs: ToolCost,
    pub nf_hook_slow_progs: ToolCost,
    pub vs_baseline: VsBaseline,
    /// The `nf_hook_slow` programs' ns per packet over this tier's tracepoint
    /// programs', per turn (turns with `nf_hook_slow` programs only).
    pub nf_hook_slow_over_tracepoint_progs: Option<Summary>,
    pub packets_sent: Option<Summary>,
    pub packets_forwarded: Option<Summary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TierCost {
    pub pps: u64,
    pub sample_secs: f64,
    pub sysctl_before: Option<String>,
    pub sysctl_after: Option<String>,
    /// The tier the ratios are taken against (the first asked for).
    pub baseline: String,
    pub tiers: Vec<TierRow>,
    pub turns: Vec<Turn>,
}

pub fn run(ctx: &mut Ctx, tiers: &[String]) -> Result<TierCost> {
    let who: Vec<Contender> = tiers
        .iter()
        .map(|t| Contender::Pathtrace(Some(t.clone())))
        .collect();
    let s = cost::take_turns(ctx, &who)?;
    Ok(TierCost {
        pps: ctx.plan.cost_pps,
        sample_secs: ctx.plan.sample_secs,
        sysctl_before: s.sysctl_before,
        sysctl_after: s.sysctl_after,
        baseline: tiers.first().cloned().unwrap_or_default(),
        tiers: rows(&who, &s.turns),
        turns: s.turns,
    })
}

/// Each contender's figures, against the first contender's turns.
fn rows(who: &[Contender], turns: &[Turn]) -> Vec<TierRow> {
    let Some(first) = who.first() else {
        return Vec::new();
    };
    let baseline = turns_of(turns, &first.label());
    let split = |mine: &[Turn], nf: bool| -> Vec<Turn> {
        mine.iter()
            .map(|t| t.only(|n| on_nf_hook_slow(n) == nf))
            .collect()
    };
    who.iter()
        .map(|c| {
            let label = c.label();
            let mine = turns_of(turns, &label);
            let (tp, nf) = (split(&mine, false), split(&mine, true));
            let over: Vec<f64> = tp
                .iter()
                .zip(&nf)
                .filter(|(_, n)| !n.per_prog.is_empty())
                .map(|(t, n)| n.ns_per_packet() / t.ns_per_packet())
                .collect();
            let of = |f: fn(&Turn) -> u64| {
                Summary::of(&mine.iter().map(|t| f(t) as f64).collect::<Vec<_>>())
            };
            TierRow {
                tier: match c {
                    Contender::Pathtrace(Some(t)) => t.clone(),
                    other => other.label(),
                },
                all: summarize(&mine, &label),
                tracepoint_progs: summarize(&tp, &label),
                nf_hook_slow_progs: summarize(&nf, &label),
                vs_baseline: VsBaseline {
                    all: Summary::of(&paired_ratios(&mine, &baseline)),
                    tracepoint_progs: Summary::of(&paired_ratios(&tp, &baseline)),
                    nf_hook_slow_progs: Summary::of(&paired_ratios(&nf, &baseline)),
                },
                nf_hook_slow_over_tracepoint_progs: Summary::of(&over),
                packets_sent: of(|t| t.packets_sent),
                packets_forwarded: of(|t| t.packets_forwarded),
            }
        })
        .collect()
}

fn int(v: f64) -> String {
    format!("{v:.0}")
}
fn two(v: f64) -> String {
    format!("{v:.2}")
}
fn times(v: f64) -> String {
    format!("{v:.2}×")
}

impl TierCost {
    /// The section in Markdown.
    pub fn markdown(&self, s: &mut String) {
        let b = &self.baseline;
        let _ = writeln!(
            s,
            "## Kernel time per forwarded packet, by tier\n\n\
             UDP from `other` through the Docker host's DNAT to the container, paced at {} pps for {:.0} s per turn; pathtrace's filter matches nothing in it (`--src {} --no-rules --tier TIER`). The tiers take turns in each round, each round starting one further along. From the kernel's `run_time_ns` and `run_cnt` of pathtrace's programs, before and after each turn, per packet delivered to the sink. Statistics switched on with `BPF_ENABLE_STATS` for this section only (sysctl `kernel.bpf_stats_enabled`: {} before, {} after). `run_time_ns` is the programs' own time: the trampoline (fentry/fexit) and the kprobe machinery around them are not in it. Ratios pair each turn with the {b} tier's turn of the same round.\n",
            self.pps,
            self.sample_secs,
            crate::OTHER_SRC,
            self.sysctl_before.as_deref().unwrap_or("?"),
            self.sysctl_after.as_deref().unwrap_or("?"),
        );
        let _ = writeln!(
            s,
            "| tier | programs | ns per packet | runs per packet | ns per run | ns per packet / {b} tier's |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
        for r in &self.tiers {
            for (what, c, ratio) in [
                ("all", &r.all, &r.vs_baseline.all),
                (
                    "tracepoints",
                    &r.tracepoint_progs,
                    &r.vs_baseline.tracepoint_progs,
                ),
                (
                    "nf_hook_slow",
                    &r.nf_hook_slow_progs,
                    &r.vs_baseline.nf_hook_slow_progs,
                ),
            ] {
                // Without nf_hook_slow programs, "all" says everything.
                if what != "all" && r.nf_hook_slow_progs.per_prog.is_empty() {
                    continue;
                }
                let vs = if r.tier == *b && what == "all" {
                    "(baseline)".to_string()
                } else {
                    show(ratio, times)
                };
                let _ = writeln!(
                    s,
                    "| {} | {what} | {} | {} | {} | {vs} |",
                    r.tier,
                    show(&c.ns_per_packet, int),
                    show(&c.runs_per_packet, two),
                    show(&c.ns_per_run, int),
                );
            }
        }
        let _ = writeln!(s);
        for r in self
            .tiers
            .iter()
            .filter(|r| !r.nf_hook_slow_progs.per_prog.is_empty())
        {
            let _ = writeln!(
                s,
                "- {}: the `nf_hook_slow` programs cost {} of what the same turn's tracepoint programs cost.",
                r.tier,
                show(&r.nf_hook_slow_over_tracepoint_progs, times)
            );
        }
        let _ = writeln!(
            s,
            "\n| tier | program | runs per packet | ns per run |\n| --- | --- | --- | --- |"
        );
        for r in &self.tiers {
            for (name, rpp, npr) in &r.all.per_prog {
                let _ = writeln!(s, "| {} | {name} | {rpp:.2} | {npr:.0} |", r.tier);
            }
        }
        let _ = writeln!(
            s,
            "\n| tier | packets sent per turn | forwarded to the sink |\n| --- | --- | --- |"
        );
        for r in &self.tiers {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                r.tier,
                show(&r.packets_sent, int),
                show(&r.packets_forwarded, int)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::ProgTurn;

    fn turn(round: usize, tier: &str, progs: &[(&str, u64, u64)]) -> Turn {
        let per_prog: Vec<ProgTurn> = progs
            .iter()
            .map(|&(name, runs, run_ns)| ProgTurn {
                name: name.into(),
                runs,
                run_ns,
            })
            .collect();
        Turn {
            round,
            tool: Contender::Pathtrace(Some(tier.into())).label(),
            packets_sent: 1000,
            packets_forwarded: 1000,
            runs: per_prog.iter().map(|p| p.runs).sum(),
            run_ns: per_prog.iter().map(|p| p.run_ns).sum(),
            per_prog,
        }
    }

    #[test]
    fn nf_hook_slow_programs_against_the_tracepoint_tier() {
        let who: Vec<Contender> = ["tracepoint", "kprobe"]
            .iter()
            .map(|t| Contender::Pathtrace(Some(t.to_string())))
            .collect();
        let turns = vec![
            turn(0, "tracepoint", &[("net_dev_queue", 4000, 400_000)]),
            turn(
                0,
                "kprobe",
                &[
                    ("net_dev_queue", 4000, 400_000),
                    ("nf_hook_slow_kp", 3000, 600_000),
                    ("nf_hook_slow_kr", 3000, 200_000),
                ],
            ),
            turn(1, "kprobe", &[("net_dev_queue", 4000, 800_000)]),
            turn(1, "tracepoint", &[("net_dev_queue", 4000, 800_000)]),
        ];
        let r = rows(&who, &turns);
        assert_eq!(r[0].tier, "tracepoint");
        assert!(r[0].nf_hook_slow_progs.per_prog.is_empty());
        assert_eq!(r[0].vs_baseline.all.as_ref().expect("paired").median, 1.0);
        let k = &r[1];
        let nf = k.nf_hook_slow_progs.ns_per_packet.as_ref().expect("nf");
        assert_eq!(nf.n, 2);
        // Round 0: 800 ns of nf_hook_slow programs against 400 of the tracepoint tier.
        let vs = k.vs_baseline.nf_hook_slow_progs.as_ref().expect("paired");
        assert_eq!(vs.samples, vec![2.0, 0.0]);
        assert_eq!(
            k.vs_baseline.all.as_ref().expect("paired").samples,
            vec![3.0, 1.0]
        );
        // Only the turn with nf_hook_slow programs: 800 / 400.
        let over = k.nf_hook_slow_over_tracepoint_progs.as_ref().expect("over");
        assert_eq!(over.samples, vec![2.0]);
    }
}

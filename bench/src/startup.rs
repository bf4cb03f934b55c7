//! Section 3: time from process start to pathtrace's `pathtrace: ready` line,
//! per tier, and what the refused tiers say. The bpftrace peer's start-up
//! times come from its runs in the other sections.
use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{peers::PtRun, stats::Summary, Ctx, OTHER_SRC};

pub const READY_TRACEPOINT: &str = "pathtrace --tier tracepoint --no-rules";
pub const READY_RULES: &str =
    "pathtrace --tier auto, rule tracing on (run in the Docker host namespace)";

/// A tier this kernel refuses: how long the refusal took and what it said.
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    pub tier: &'static str,
    pub exit_code: Option<i32>,
    pub ms_to_exit: Option<Summary>,
    pub message: String,
    /// If the tier did start after all.
    pub ready_ms: Option<Summary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Startup {
    pub refusals: Vec<Refusal>,
    /// How the runs ended when SIGINT came right after the ready line:
    /// (variant, how, runs).
    pub stops: Vec<(String, String, usize)>,
}

pub fn run(ctx: &mut Ctx) -> Startup {
    let bound = Duration::from_secs(30);
    let stream_src = ctx.lab.addrs().other;
    let dock = ctx.lab.names().dock.clone();
    let no_rules = |tier: &str| {
        vec![
            "--src".to_string(),
            OTHER_SRC.to_string(),
            "--no-rules".into(),
            "--tier".into(),
            tier.into(),
        ]
    };
    let with_rules = vec![
        "--src".to_string(),
        stream_src.to_string(),
        "--tier".into(),
        "auto".into(),
    ];
    let mut stops: Vec<(String, String, usize)> = Vec::new();
    for i in 0..ctx.plan.startup_runs {
        for (variant, args, netns) in [
            (READY_TRACEPOINT, no_rules("tracepoint"), None),
            (READY_RULES, with_rules.clone(), Some(dock.as_str())),
        ] {
            if ctx.stop_now() {
                break;
            }
            eprintln!(
                "pathtrace-bench: start-up {}/{}: {variant}",
                i + 1,
                ctx.plan.startup_runs
            );
            let out = ctx.out_file("startup");
            match PtRun::start(&ctx.tools, &args, bound, out, netns) {
                Ok(mut run) => {
                    ctx.ready(variant, run.ready);
                    if run.ready.is_none() {
                        let text = run.proc.stderr_text();
                        ctx.error(variant, &anyhow::anyhow!("did not start: {text}"));
                    }
                    if let Err(e) = run.finish() {
                        ctx.error(variant, &e);
                    }
                    if let Some(stop) = &run.stop {
                        let how = stop.signal.clone();
                        match stops.iter_mut().find(|(v, h, _)| v == variant && *h == how) {
                            Some(entry) => entry.2 += 1,
                            None => stops.push((variant.to_string(), how, 1)),
                        }
                    }
                    ctx.discard(&run.out);
                }
                Err(e) => ctx.error(variant, &e),
            }
        }
    }
    let mut refusals = Vec::new();
    let runs = ctx.plan.startup_runs.min(3);
    for tier in ["fentry", "kprobe"] {
        let mut exits = Vec::new();
        let mut ready = Vec::new();
        let mut message = String::new();
        let mut code = None;
        for _ in 0..runs {
            if ctx.stop_now() {
                break;
            }
            let out = ctx.out_file("refused");
            match PtRun::start(&ctx.tools, &no_rules(tier), bound, out, None) {
                Ok(mut run) => {
                    if let Some(r) = run.ready {
                        ready.push(r.as_secs_f64() * 1000.0);
                        if let Err(e) = run.finish() {
                            ctx.error(tier, &e);
                        }
                    } else {
                        // Exited before ready: the time of its last stderr line is when it gave up.
                        run.proc.poll_lines();
                        if let Some((t, _)) = run.proc.stderr.last() {
                            exits.push((*t - run.proc.started).as_secs_f64() * 1000.0);
                        }
                        code = run.proc.status.and_then(|s| s.code());
                        message = run.proc.stderr_text();
                    }
                    ctx.discard(&run.out);
                }
                Err(e) => ctx.error(tier, &e),
            }
        }
        refusals.push(Refusal {
            tier,
            exit_code: code,
            ms_to_exit: Summary::of(&exits),
            message,
            ready_ms: Summary::of(&ready),
        });
    }
    Startup { refusals, stops }
}

/// Ready-time summaries by variant.
pub fn summaries(ready: &BTreeMap<String, Vec<f64>>) -> Vec<(String, Summary)> {
    ready
        .iter()
        .filter_map(|(k, v)| Summary::of(v).map(|s| (k.clone(), s)))
        .collect()
}

//! The live drop table, counted in the kernel's per-CPU `DROP_COUNTS` map.
use std::{collections::HashMap, io::Write, time::Instant};

use tracer_common::{config_flags, DropKey};

use super::{
    deadline,
    metrics::{next_scrape, DropMetrics, Exporter},
    DropsOptions,
};
use crate::{error::Error, names::View, render::drops, render::records::DropTopRow};

/// One row of the table, named: the same row `--json` prints.
pub type TopRow = DropTopRow;

/// The kernel's counts, named, with their rates since `before`, the most
/// frequent first.
fn name_rows(
    now: &[(DropKey, u64)],
    before: &HashMap<DropKey, u64>,
    secs: f64,
    view: &mut View,
) -> Vec<TopRow> {
    for (k, _) in now {
        view.resolve_netns(k.netns);
    }
    let mut rows: Vec<TopRow> = now
        .iter()
        .map(|(k, count)| {
            let delta = count.saturating_sub(before.get(k).copied().unwrap_or(0));
            let name_len = k
                .ifname
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(k.ifname.len());
            TopRow {
                reason: view.reason_named(k.reason),
                location: view
                    .syms
                    .as_ref()
                    .and_then(|s| s.symbolize(k.location))
                    .map(|(n, o)| format!("{n}+{o:#x}"))
                    .unwrap_or_else(|| format!("{:#x}", k.location)),
                ifname: String::from_utf8_lossy(&k.ifname[..name_len]).into_owned(),
                netns: k.netns,
                netns_name: view.netns_name(k.netns),
                count: *count,
                rate: if secs > 0.0 { delta as f64 / secs } else { 0.0 },
            }
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    rows
}

pub async fn run_top<W: Write>(opts: &DropsOptions, out: &mut W) -> Result<Vec<TopRow>, Error> {
    let (tracer, mut view) =
        super::load(opts, config_flags::COUNT_DROPS | config_flags::COUNT_ONLY)?;
    let mut exporter = Exporter::for_flag(opts.metrics).await?;
    let mut metrics = DropMetrics::default();
    let mut signals = crate::signals::StopSignals::install()?;
    if opts.quiet {
        eprintln!("pathtrace: ready, counting drops in the kernel");
    } else {
        eprintln!(
            "pathtrace: ready, counting drops in the kernel every {:?}",
            opts.interval
        );
    }
    let started = Instant::now();
    let mut before: HashMap<DropKey, u64> = HashMap::new();
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(opts.interval);
    tick.tick().await;
    let end = deadline(opts.duration);
    tokio::pin!(end);
    loop {
        let scrape = tokio::select! {
            _ = tick.tick(), if !opts.quiet => None,
            s = next_scrape(&mut exporter) => Some(s),
            _ = &mut end => break,
            _ = signals.recv() => break,
        };
        if let Some(s) = scrape {
            metrics.answer(s, &tracer, &mut view);
            continue;
        }
        let now_counts = tracer.drop_counts()?;
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let rows = name_rows(&now_counts, &before, secs, &mut view);
        before = now_counts.into_iter().collect();
        let elapsed = started.elapsed().as_secs_f64();
        drops::top(out, opts.format, &rows, elapsed, opts.redraw)
            .and_then(|_| out.flush())
            .map_err(Error::Output)?;
    }
    if opts.quiet {
        return Ok(Vec::new());
    }
    let final_counts = tracer.drop_counts()?;
    let rows = name_rows(
        &final_counts,
        &before,
        last.elapsed().as_secs_f64(),
        &mut view,
    );
    drops::top_totals(out, opts.format, &rows, started.elapsed().as_secs_f64())
        .and_then(|_| out.flush())
        .map_err(Error::Output)?;
    Ok(rows)
}

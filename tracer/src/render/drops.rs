//! `pathtrace drops`' output: a line (or record) per drop with what held
//! the rest back, the closing totals, and the `--top` table.
use std::io::{self, Write};

use super::{
    records::{DropRecord, DropTopRecord, DropTopRow, Record, StatsRecord, ThrottledRecord},
    text::tuple,
    Format,
};
use crate::{events::Hop, model::Tier, names::View};

/// One drop, named.
pub fn drop<W: Write>(out: &mut W, format: Format, hop: &Hop, view: &View) -> io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", record(hop, view)),
        Format::Text { .. } => writeln!(out, "{}", line(hop, view)),
    }
}

fn line(hop: &Hop, view: &View) -> String {
    let ns = view
        .netns_name(hop.netns)
        .unwrap_or_else(|| format!("netns:{}", hop.netns));
    let reason = view.reason(hop).unwrap_or_default();
    let loc = view.location(hop).unwrap_or_else(|| "?".into());
    let hook = hop
        .hook
        .map(|h| format!(" [{}]", h.as_str()))
        .unwrap_or_default();
    let t = hop
        .tuple
        .map(|t| format!("  {}", tuple(&t)))
        .unwrap_or_default();
    let dev = if hop.ifname.is_empty() {
        "-"
    } else {
        &hop.ifname
    };
    format!("{reason:<22} {loc:<34} {dev:<12} {ns}{hook}{t}")
}

fn record(hop: &Hop, view: &View) -> Record {
    Record::Drop(DropRecord {
        t_ns: hop.t_ns,
        reason: view.reason(hop),
        location: view.location(hop),
        hook: hop.hook.map(|h| h.as_str()),
        netns: hop.netns,
        netns_name: view.netns_name(hop.netns),
        ifname: hop.ifname.to_string(),
        ifindex: hop.ifindex,
        flow: hop.tuple.into(),
    })
}

/// How many drops the throttle held back (nothing when none).
pub fn held<W: Write>(out: &mut W, format: Format, n: u64) -> io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            Record::Throttled(ThrottledRecord { unprinted: n })
        ),
        Format::Text { .. } => writeln!(out, "… {n} more drops in the last second not printed"),
    }
}

/// The stream's totals at exit.
pub struct StreamTotals {
    pub tier: Tier,
    pub events: u64,
    pub drops: u64,
    pub unprinted: u64,
    pub lost: u64,
}

/// The stream's closing line: a `stats` record, or a line on standard error.
pub fn stream_totals<W: Write>(out: &mut W, format: Format, t: &StreamTotals) -> io::Result<()> {
    match format {
        Format::Json => {
            let stats = Record::Stats(StatsRecord {
                tier: t.tier,
                events: t.events,
                lost: t.lost,
                drops: Some(t.drops),
                unprinted: Some(t.unprinted),
                ..StatsRecord::default()
            });
            writeln!(out, "{stats}")
        }
        Format::Text { .. } => {
            eprintln!(
                "pathtrace: {} drops, {} not printed, {} lost",
                t.drops, t.unprinted, t.lost
            );
            Ok(())
        }
    }
}

fn table(rows: &[DropTopRow], title: &str) -> String {
    let mut s = format!(
        "{title}\n{:>10} {:>10}  {:<22} {:<34} {:<12} NETNS\n",
        "COUNT", "RATE/s", "REASON", "LOCATION", "DEVICE"
    );
    for r in rows {
        let ns = r
            .netns_name
            .clone()
            .unwrap_or_else(|| format!("netns:{}", r.netns));
        let dev = if r.ifname.is_empty() { "-" } else { &r.ifname };
        s.push_str(&format!(
            "{:>10} {:>10.1}  {:<22} {:<34} {:<12} {ns}\n",
            r.count,
            r.rate,
            r.reason.as_deref().unwrap_or("-"),
            r.location,
            dev
        ));
    }
    if rows.is_empty() {
        s.push_str("(no drops yet)\n");
    }
    s
}

/// One refresh of `--top`: redrawn in place (`redraw`), or printed below
/// the last.
pub fn top<W: Write>(
    out: &mut W,
    format: Format,
    rows: &[DropTopRow],
    elapsed_s: f64,
    redraw: bool,
) -> io::Result<()> {
    if format == Format::Json {
        let rec = Record::DropTop(DropTopRecord {
            total: None,
            elapsed_s,
            rows: rows.to_vec(),
        });
        return writeln!(out, "{rec}");
    }
    let title = format!("pathtrace drops --top: {elapsed_s:.0}s");
    if redraw {
        write!(out, "\x1b[H\x1b[2J{}", table(rows, &title))
    } else {
        writeln!(out, "{}", table(rows, &title))
    }
}

/// `--top`'s totals at exit.
pub fn top_totals<W: Write>(
    out: &mut W,
    format: Format,
    rows: &[DropTopRow],
    elapsed_s: f64,
) -> io::Result<()> {
    let total: u64 = rows.iter().map(|r| r.count).sum();
    match format {
        Format::Json => {
            let totals = Record::DropTotals(DropTopRecord {
                total: Some(total),
                elapsed_s,
                rows: rows.to_vec(),
            });
            writeln!(out, "{totals}")
        }
        Format::Text { .. } => writeln!(
            out,
            "{}",
            table(rows, &format!("totals: {total} drops in {elapsed_s:.1}s"))
        ),
    }
}

//! `compare`'s output: the first request packet of each flow, their
//! paths side by side, and the verdict on where they part.
mod align;

use std::io::Write;

pub use align::{align, divergence, Divergence, Row, Step};

use super::{
    records::{self, CompareFlow, CompareRecord, Comparison, Record},
    text::Style,
    Format, PacketSink, Stats,
};
use crate::{
    diagnose::{Direction, Outcomes, Report},
    events::{Hop, HopKind},
    names::View,
    track::Packet,
};

/// The first request packet of each flow, with its verdict.
pub struct CompareSink<'a, W: Write> {
    out: &'a mut W,
    format: Format,
    labels: [String; 2],
    /// Stop once both flows have this many request packets.
    count: Option<u64>,
    seen: [u64; 2],
    first: [Option<(Packet, Report)>; 2],
}

impl<'a, W: Write> CompareSink<'a, W> {
    pub fn new(out: &'a mut W, format: Format, labels: [String; 2], count: Option<u64>) -> Self {
        Self {
            out,
            format,
            labels,
            count,
            seen: [0, 0],
            first: [None, None],
        }
    }
}

impl<W: Write> PacketSink for CompareSink<'_, W> {
    fn packet(&mut self, p: &Packet, _view: &View, report: &Report) -> std::io::Result<bool> {
        if report.direction != Direction::Request {
            return Ok(false);
        }
        let side = usize::from(p.hops.first().is_some_and(|h| h.filter == 1));
        self.seen[side] += 1;
        if self.first[side].is_none() {
            self.first[side] = Some((p.clone(), report.clone()));
        }
        Ok(self
            .count
            .is_some_and(|c| self.seen.iter().all(|&n| n >= c)))
    }

    fn finish(&mut self, outcomes: &Outcomes, stats: &Stats, view: &View) -> std::io::Result<()> {
        let [a, b] = &self.first;
        let text = comparison(a.as_ref(), b.as_ref(), &self.labels, view, self.format);
        write!(self.out, "{text}")?;
        match self.format {
            Format::Json => {
                writeln!(self.out, "{}", super::json::summary(outcomes))?;
                writeln!(self.out, "{}", super::json::stats(stats))?;
            }
            Format::Text { .. } => eprintln!("pathtrace: {}", super::text::stats(stats)),
        }
        self.out.flush()
    }
}

const COL: usize = 58;

fn step_text(h: &Hop, view: &View) -> String {
    let ns = view
        .netns_name(h.netns)
        .unwrap_or_else(|| format!("netns:{}", h.netns));
    let what = match (&h.rule, h.kind) {
        (Some(r), _) => {
            let at = if r.policy {
                "policy".to_owned()
            } else {
                r.index
                    .map(|i| format!("#{i}"))
                    .unwrap_or_else(|| "end".into())
            };
            format!(
                "{} {}/{} {at} {}",
                r.hook.map(|k| k.as_str()).unwrap_or(""),
                r.table,
                r.chain,
                r.verdict
            )
        }
        (None, HopKind::Drop) => format!(
            "drop {} {}",
            h.hook.map(|k| k.as_str()).unwrap_or(""),
            view.reason(h).unwrap_or_default()
        ),
        (None, HopKind::NfHook) => format!(
            "nf_hook {} {}",
            h.hook.map(|k| k.as_str()).unwrap_or(""),
            h.verdict
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default()
        ),
        (None, k) => format!("{} {}", k.as_str(), h.ifname),
    };
    format!("{ns} {what}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn cell(s: &str) -> String {
    let mut c: String = s.chars().take(COL - 1).collect();
    if s.chars().count() > COL - 1 {
        c.pop();
        c.push('…');
    }
    format!("{c:<COL$}")
}

/// Where two paths part: the netns, hook and chain of the first differing step.
fn place_of(h: &Hop, view: &View) -> records::Divergence {
    records::Divergence {
        netns: h.netns,
        netns_name: view.netns_name(h.netns),
        hook: h.hook.map(|k| k.as_str()),
        table: h.rule.as_ref().map(|r| r.table.clone()),
        chain: h.rule.as_ref().map(|r| r.chain.clone()),
        kind: h.kind.as_str(),
        step: step_text(h, view),
        rule: h.rule.as_ref().map(|r| r.phrase()),
        a: None,
        b: None,
    }
}

fn verdict_line(h: &Hop, view: &View) -> String {
    match &h.rule {
        Some(r) => format!("{} ({})", step_text(h, view), r.phrase()),
        None => step_text(h, view),
    }
}

/// Both flows' first request packets, with their reports.
type Pair<'a> = (&'a (Packet, Report), &'a (Packet, Report));

/// The two flows side by side and where they part (`compare`'s output).
pub fn comparison(
    a: Option<&(Packet, Report)>,
    b: Option<&(Packet, Report)>,
    labels: &[String; 2],
    view: &View,
    format: Format,
) -> String {
    let (Some(a), Some(b)) = (a, b) else {
        return missing(a.is_none(), b.is_none(), labels, format);
    };
    let (pa, pb) = (&a.0, &b.0);
    let sa: Vec<Step> = pa.hops.iter().map(Step::of).collect();
    let sb: Vec<Step> = pb.hops.iter().map(Step::of).collect();
    let rows = align(&sa, &sb);
    let div = divergence(&rows);
    let apart = (
        div.and_then(|d| d.a).map(|i| &pa.hops[i]),
        div.and_then(|d| d.b).map(|j| &pb.hops[j]),
    );
    let verdict = verdict(div.is_some(), apart, labels, view);
    match format {
        Format::Json => json((a, b), apart, verdict, labels, view),
        Format::Text { .. } => text((a, b), &rows, div, &verdict, labels, view, format.style()),
    }
}

/// "no packet seen for …": a flow had no request packet.
fn missing(no_a: bool, no_b: bool, labels: &[String; 2], format: Format) -> String {
    let missing: Vec<&str> = [no_a, no_b]
        .iter()
        .zip(labels)
        .filter(|(m, _)| **m)
        .map(|(_, l)| l.as_str())
        .collect();
    let msg = format!(
        "no packet seen for {}: nothing to compare",
        missing.join(" and ")
    );
    match format {
        Format::Json => format!(
            "{}\n",
            Record::Compare(CompareRecord::Missing { error: msg })
        ),
        Format::Text { .. } => format!("{msg}\n"),
    }
}

/// Where the paths part, and each flow's step there.
fn verdict(
    parted: bool,
    (da, db): (Option<&Hop>, Option<&Hop>),
    labels: &[String; 2],
    view: &View,
) -> String {
    let Some(h) = da.or(db).filter(|_| parted) else {
        return "the paths do not diverge after they meet".to_owned();
    };
    let ns = view
        .netns_name(h.netns)
        .unwrap_or_else(|| format!("netns:{}", h.netns));
    let hook = h
        .hook
        .map(|k| k.as_str().to_owned())
        .unwrap_or_else(|| h.kind.as_str().to_owned());
    let chain = h
        .rule
        .as_ref()
        .map(|r| format!(" / {}", r.chain))
        .unwrap_or_default();
    let side = |x: Option<&Hop>| {
        x.map(|h| verdict_line(h, view))
            .unwrap_or_else(|| "(path ends)".into())
    };
    format!(
        "the paths diverge at {hook}{chain} in {ns}:\n  A ({}): {}\n  B ({}): {}",
        labels[0],
        side(da),
        labels[1],
        side(db)
    )
}

/// The `compare` record.
fn json(
    (a, b): Pair<'_>,
    (da, db): (Option<&Hop>, Option<&Hop>),
    verdict: String,
    labels: &[String; 2],
    view: &View,
) -> String {
    let diverge = da.or(db).map(|h| {
        let mut v = place_of(h, view);
        v.a = da.map(|h| verdict_line(h, view));
        v.b = db.map(|h| verdict_line(h, view));
        v
    });
    let flow = |(p, r): &(Packet, Report), label: &str| CompareFlow {
        filter: label.to_owned(),
        packet: p.id,
        fate: p.fate.kind.as_str(),
        diagnosis: r.diagnosis.clone(),
    };
    let rec = Record::Compare(CompareRecord::Compared(Box::new(Comparison {
        a: flow(a, &labels[0]),
        b: flow(b, &labels[1]),
        diverge,
        verdict,
    })));
    format!("{rec}\n")
}

/// The two columns, the verdict and each flow's diagnosis.
fn text(
    (a, b): Pair<'_>,
    rows: &[Row],
    div: Option<Divergence>,
    verdict: &str,
    labels: &[String; 2],
    view: &View,
    style: Style,
) -> String {
    let ((pa, ra), (pb, rb)) = (a, b);
    let mut out = format!(
        "  {}  {}\n",
        cell(&format!("A: {}", labels[0])),
        cell(&format!("B: {}", labels[1]))
    );
    let first_apart = div.map(|d| (d.a, d.b));
    let first_mark = |first: bool| if first { "≠" } else { " " };
    for &row in rows {
        let (l, r, mark) = match row {
            Row::Both(i, j) => (
                step_text(&pa.hops[i], view),
                step_text(&pb.hops[j], view),
                "=",
            ),
            Row::OnlyA(i) => (
                step_text(&pa.hops[i], view),
                String::new(),
                first_mark(first_apart.is_some_and(|(x, _)| x == Some(i))),
            ),
            Row::OnlyB(j) => (
                String::new(),
                step_text(&pb.hops[j], view),
                first_mark(first_apart.is_some_and(|(_, y)| y == Some(j))),
            ),
        };
        out.push_str(&format!("{mark} {}  {}\n", cell(&l), cell(&r)));
    }
    out.push_str(&format!("\n{}\n", style.bold(verdict)));
    out.push_str(&format!(
        "  A: {}\n  B: {}\n",
        ra.diagnosis.message, rb.diagnosis.message
    ));
    out
}

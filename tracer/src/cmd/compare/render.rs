//! The side-by-side view and the divergence verdict.

use super::align::{align, divergence, Row, Step};
use crate::{
    diagnose::Report,
    events::{Hop, HopKind},
    names::View,
    render::records::{CompareFlow, CompareRecord, Comparison, Divergence, Record},
    track::Packet,
};

const COL: usize = 58;

fn step_text(h: &Hop, view: &mut View) -> String {
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
fn place_of(h: &Hop, view: &mut View) -> Divergence {
    Divergence {
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

fn verdict_line(h: &Hop, view: &mut View) -> String {
    match &h.rule {
        Some(r) => format!("{} ({})", step_text(h, view), r.phrase()),
        None => step_text(h, view),
    }
}

pub fn comparison(
    a: Option<&(Packet, Report)>,
    b: Option<&(Packet, Report)>,
    labels: &[String; 2],
    view: &mut View,
    json: bool,
    color: bool,
) -> String {
    let (Some((pa, ra)), Some((pb, rb))) = (a, b) else {
        let missing: Vec<&str> = [a.is_none(), b.is_none()]
            .iter()
            .zip(labels)
            .filter(|(m, _)| **m)
            .map(|(_, l)| l.as_str())
            .collect();
        let msg = format!(
            "no packet seen for {}: nothing to compare",
            missing.join(" and ")
        );
        return if json {
            format!(
                "{}\n",
                Record::Compare(CompareRecord::Missing { error: msg })
            )
        } else {
            format!("{msg}\n")
        };
    };
    let sa: Vec<Step> = pa.hops.iter().map(Step::of).collect();
    let sb: Vec<Step> = pb.hops.iter().map(Step::of).collect();
    let rows = align(&sa, &sb);
    let div = divergence(&rows);
    let (da, db) = (
        div.and_then(|d| d.a).map(|i| &pa.hops[i]),
        div.and_then(|d| d.b).map(|j| &pb.hops[j]),
    );
    let at = da.or(db);
    let verdict = match (div, at) {
        (Some(_), Some(h)) => {
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
            let side = |x: Option<&Hop>, v: &mut View| {
                x.map(|h| verdict_line(h, v))
                    .unwrap_or_else(|| "(path ends)".into())
            };
            format!(
                "the paths diverge at {hook}{chain} in {ns}:\n  A ({}): {}\n  B ({}): {}",
                labels[0],
                side(da, view),
                labels[1],
                side(db, view)
            )
        }
        _ => "the paths do not diverge after they meet".to_owned(),
    };
    if json {
        let diverge = at.map(|h| {
            let mut v = place_of(h, view);
            v.a = da.map(|h| verdict_line(h, view));
            v.b = db.map(|h| verdict_line(h, view));
            v
        });
        let flow = |p: &Packet, r: &Report, label: &str| CompareFlow {
            filter: label.to_owned(),
            packet: p.id,
            fate: p.fate.kind.as_str(),
            diagnosis: r.diagnosis.clone(),
        };
        let rec = Record::Compare(CompareRecord::Compared(Box::new(Comparison {
            a: flow(pa, ra, &labels[0]),
            b: flow(pb, rb, &labels[1]),
            diverge,
            verdict,
        })));
        return format!("{rec}\n");
    }
    let bold = |s: &str| {
        if color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let mut out = format!(
        "  {}  {}\n",
        cell(&format!("A: {}", labels[0])),
        cell(&format!("B: {}", labels[1]))
    );
    let first_apart = div.map(|d| (d.a, d.b));
    for row in rows {
        let (l, r, mark) = match row {
            Row::Both(i, j) => (
                step_text(&pa.hops[i], view),
                step_text(&pb.hops[j], view),
                "=",
            ),
            Row::OnlyA(i) => (
                step_text(&pa.hops[i], view),
                String::new(),
                if first_apart.is_some_and(|(x, _)| x == Some(i)) {
                    "≠"
                } else {
                    " "
                },
            ),
            Row::OnlyB(j) => (
                String::new(),
                step_text(&pb.hops[j], view),
                if first_apart.is_some_and(|(_, y)| y == Some(j)) {
                    "≠"
                } else {
                    " "
                },
            ),
        };
        out.push_str(&format!("{mark} {}  {}\n", cell(&l), cell(&r)));
    }
    out.push_str(&format!("\n{}\n", bold(&verdict)));
    out.push_str(&format!(
        "  A: {}\n  B: {}\n",
        ra.diagnosis.message, rb.diagnosis.message
    ));
    out
}

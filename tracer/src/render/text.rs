//! One block per packet: a header line, one line per hop, and a fate line.
use std::fmt::Write as _;

use super::Stats;
use crate::diagnose::{Diagnosis, Outcomes, TEARDOWN_REASONS};
use crate::names::View;
use crate::{
    events::{Hop, HopKind, RuleHit},
    model::{Conntrack, Tuple, Verdict},
    ruletrace::deciding_rule,
    track::{FateKind, Packet},
};

#[derive(Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn red(self, s: &str) -> String {
        self.paint("31;1", s)
    }
    fn green(self, s: &str) -> String {
        self.paint("32", s)
    }
    fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
}

pub fn tuple(t: &Tuple) -> String {
    let ep = |a: std::net::IpAddr, p: u16| match (a, p) {
        (_, 0) => a.to_string(),
        (std::net::IpAddr::V6(_), p) => format!("[{a}]:{p}"),
        (_, p) => format!("{a}:{p}"),
    };
    format!(
        "{} {} → {}",
        t.proto_name(),
        ep(t.saddr, t.sport),
        ep(t.daddr, t.dport)
    )
}

fn tcp_flags(f: u8) -> String {
    const NAMES: [(u8, char); 6] = [
        (0x02, 'S'),
        (0x10, '.'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

fn rule_detail(r: &RuleHit, style: Style) -> String {
    let hook = r
        .hook
        .map(|h| format!("{} ", h.as_str()))
        .unwrap_or_default();
    let verdict = match r.verdict {
        Verdict::Drop => style.red("DROP"),
        Verdict::Accept => style.green("ACCEPT"),
        ref v => v.to_string(),
    };
    let what = if r.policy {
        "policy".to_owned()
    } else {
        r.index
            .map(|i| format!("#{i}"))
            .unwrap_or_else(|| "end".into())
    };
    let text = r
        .text
        .as_ref()
        .map(|t| format!("  {}", style.dim(t)))
        .unwrap_or_default();
    let legacy = if r.legacy { " (iptables-legacy)" } else { "" };
    format!(
        "{hook}{} {}/{}{legacy} {what} {verdict}{text}",
        r.family, r.table, r.chain
    )
}

fn hop_detail(hop: &Hop, view: &View, style: Style) -> String {
    if let Some(r) = hop.rule.as_deref() {
        return rule_detail(r, style);
    }
    let mut d = String::new();
    if let Some(f) = hop.hook_family() {
        d.push_str(f.as_str());
        d.push(' ');
    }
    if let Some(h) = hop.hook {
        d.push_str(h.as_str());
    }
    match &hop.verdict {
        Some(Verdict::Accept) => d.push_str(&format!(" {}", style.green("ACCEPT"))),
        Some(v) => d.push_str(&format!(" {}", style.red(&v.to_string()))),
        None => {}
    }
    if let Some(r) = view.reason(hop) {
        d.push_str(&format!(" {}", style.red(&r)));
    }
    if let Some(loc) = view.location(hop) {
        d.push_str(&format!(" {}", style.dim(&format!("at {loc}"))));
    }
    d.trim_start().to_owned()
}

/// A hop's conntrack entry in a few words: the packet's state in it, and
/// the NAT it applies (`ct new dnat 203.0.113.1:8092→192.0.2.2:80`).
fn conntrack(ct: &Conntrack) -> String {
    let mut s = format!("ct {}", ct.info.as_str());
    let Some(e) = &ct.entry else { return s };
    if let Some(t) = e.tcp_state_name() {
        let _ = write!(s, " {t}");
    }
    for (name, m) in [("snat", e.snat()), ("dnat", e.dnat())] {
        if let Some(m) = m {
            let _ = write!(s, " {name} {}→{}", m.from, m.to);
        }
    }
    if e.offloaded() {
        s.push_str(" offloaded");
    }
    s
}

pub fn packet(p: &Packet, view: &View, style: Style) -> String {
    let mut out = String::new();
    let first = p
        .hops
        .iter()
        .find_map(|h| h.tuple.map(|t| (t, h.tcp_flags)));
    let head = match first {
        Some((t, flags)) if t.proto == 6 => format!("{} [{}]", tuple(&t), tcp_flags(flags)),
        Some((t, _)) => tuple(&t),
        None => "non-IP packet".to_owned(),
    };
    let _ = writeln!(out, "{} {}", style.bold(&format!("packet {}", p.id)), head);
    let t0 = p.hops.first().map(|h| h.t_ns).unwrap_or(0);
    let mut last_tuple = first.map(|(t, _)| t);
    for hop in &p.hops {
        let ns = view
            .netns_name(hop.netns)
            .unwrap_or_else(|| format!("netns:{}", hop.netns));
        let ms = hop.t_ns.saturating_sub(t0) as f64 / 1e6;
        let _ = write!(
            out,
            "  {} {:<18} {:<12} {:<7} {}",
            style.dim(&format!("+{ms:8.3}ms")),
            ns,
            if hop.ifname.is_empty() {
                "-"
            } else {
                &hop.ifname
            },
            hop.kind.as_str(),
            hop_detail(hop, view, style),
        );
        if let Some(ct) = hop.ct.as_deref() {
            let _ = write!(out, " {}", style.dim(&conntrack(ct)));
        }
        if let Some(t) = hop.tuple {
            if last_tuple.is_some_and(|l| l != t) && hop.kind != HopKind::Drop {
                let _ = write!(out, " {}", style.bold(&format!("(now {})", tuple(&t))));
            }
            last_tuple = Some(t);
        }
        out.push('\n');
    }
    for &ino in &p.rules_late {
        let ns = view
            .netns_name(ino)
            .unwrap_or_else(|| format!("netns:{ino}"));
        let _ = writeln!(
            out,
            "  {}",
            style.dim(&format!(
                "… rule tracing in {ns} was not running yet when this packet passed it \
                 (it starts when a packet first enters; --netns starts it up front)"
            ))
        );
    }
    for note in &p.notes {
        let _ = writeln!(out, "  {}", style.dim(&format!("· {note}")));
    }
    let at = p.fate.at.and_then(|i| p.hops.get(i));
    let place = at
        .map(|h| {
            let ns = view
                .netns_name(h.netns)
                .unwrap_or_else(|| format!("netns:{}", h.netns));
            format!(
                "{ns}, {}",
                if h.ifname.is_empty() { "-" } else { &h.ifname }
            )
        })
        .unwrap_or_default();
    let line = match p.fate.kind {
        FateKind::Dropped => {
            let hook = p
                .fate
                .hook
                .map(|h| format!(" in {}", h.as_str()))
                .unwrap_or_default();
            let reason = at
                .and_then(|h| view.reason(h))
                .unwrap_or_else(|| "no reason given".into());
            if TEARDOWN_REASONS.contains(&reason.as_str()) {
                style.dim(&format!("· freed at socket close ({place}): {reason}"))
            } else {
                let by = deciding_rule(p)
                    .map(|r| {
                        let legacy = if r.legacy { " (iptables-legacy)" } else { "" };
                        format!(" by {}{legacy}", r.phrase())
                    })
                    .unwrap_or_default();
                style.red(&format!("✗ dropped{hook} ({place}): {reason}{by}"))
            }
        }
        FateKind::Delivered => style.green(&format!("✓ delivered ({place})")),
        FateKind::Forwarded => style.green(&format!("→ forwarded out ({place})")),
        FateKind::Unknown => style.dim(&format!("? fate unknown: last seen ({place})")),
    };
    let _ = writeln!(out, "  {line}");
    out
}

pub fn diagnosis(d: &Diagnosis, style: Style) -> String {
    let mut s = format!("  ⇒ {}\n", style.bold(&d.message));
    if let Some(a) = &d.advice {
        s.push_str(&format!("    fix: {a}\n"));
    }
    s
}

pub fn summary(o: &Outcomes, style: Style) -> String {
    let groups = o.groups();
    if groups.is_empty() {
        return String::new();
    }
    let mut s = format!("{}\n", style.bold("summary"));
    for (d, n) in groups {
        s.push_str(&format!("  {n} × {}\n", d.message));
        if let Some(a) = d.advice {
            s.push_str(&format!("      fix: {a}\n"));
        }
    }
    let conns = o.connections();
    if !conns.is_empty() {
        s.push_str(&format!("{}\n", style.bold("connections")));
        for c in conns {
            s.push_str(&format!(
                "  {} {} → {}: {}\n",
                c.proto, c.client, c.server, c.explanation
            ));
        }
    }
    s
}

pub fn stats(s: &Stats) -> String {
    let mut line = format!(
        "{} packets, {} events, {} lost (tier {})",
        s.packets, s.events, s.lost, s.tier
    );
    if s.evicted > 0 {
        line.push_str(&format!(
            ", {} evicted from the full tracking map",
            s.evicted
        ));
    }
    if s.rule_overflows > 0 {
        line.push_str(&format!(", {} rule-trace overflows", s.rule_overflows));
    }
    if s.settled_early > 0 {
        line.push_str(&format!(
            ", {} settled early at the open-packet bound ({} packets, {} MiB)",
            s.settled_early,
            crate::track::MAX_OPEN,
            crate::track::MAX_OPEN_BYTES >> 20
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CtEntry, CtInfo};

    fn tuple(s: &str, sp: u16, d: &str, dp: u16) -> Tuple {
        Tuple {
            saddr: s.parse().expect("ip"),
            daddr: d.parse().expect("ip"),
            sport: sp,
            dport: dp,
            proto: 6,
        }
    }

    #[test]
    fn the_exit_line_says_when_the_open_packet_bound_was_reached() {
        let quiet = Stats {
            packets: 2,
            events: 14,
            ..Stats::default()
        };
        assert_eq!(
            stats(&quiet),
            "2 packets, 14 events, 0 lost (tier tracepoint)"
        );
        let flood = Stats {
            settled_early: 37,
            ..quiet
        };
        assert!(
            stats(&flood)
                .ends_with(", 37 settled early at the open-packet bound (8192 packets, 4 MiB)"),
            "{}",
            stats(&flood)
        );
    }

    #[test]
    fn a_hops_conntrack_entry_in_a_few_words() {
        let dnat = Conntrack {
            info: CtInfo::New,
            entry: Some(CtEntry {
                status: (1 << 3) | (1 << 5),
                tcp_state: 1,
                mark: 0,
                zone: 0,
                original: tuple("192.0.2.1", 40000, "203.0.113.1", 8092),
                reply: tuple("198.51.100.2", 80, "192.0.2.1", 40000),
            }),
        };
        assert_eq!(
            conntrack(&dnat),
            "ct new syn_sent dnat 203.0.113.1:8092→198.51.100.2:80"
        );
        let untracked = Conntrack {
            info: CtInfo::Untracked,
            entry: None,
        };
        assert_eq!(conntrack(&untracked), "ct untracked");
    }
}

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
    /// Writes what `write` writes into `out`, painted.
    fn wrap(self, out: &mut String, code: &str, write: impl FnOnce(&mut String)) {
        if self.color {
            let _ = write!(out, "\x1b[{code}m");
            write(out);
            out.push_str("\x1b[0m");
        } else {
            write(out);
        }
    }
}

pub fn tuple(t: &Tuple) -> String {
    let mut s = String::new();
    put_tuple(&mut s, t);
    s
}

fn put_tuple(out: &mut String, t: &Tuple) {
    let ep = |out: &mut String, a: std::net::IpAddr, p: u16| {
        let _ = match (a, p) {
            (_, 0) => write!(out, "{a}"),
            (std::net::IpAddr::V6(_), p) => write!(out, "[{a}]:{p}"),
            (_, p) => write!(out, "{a}:{p}"),
        };
    };
    match t.proto {
        6 => out.push_str("tcp"),
        17 => out.push_str("udp"),
        _ => out.push_str(&t.proto_name()),
    }
    out.push(' ');
    ep(out, t.saddr, t.sport);
    out.push_str(" → ");
    ep(out, t.daddr, t.dport);
}

/// `+{ms:8.3}ms` of `ns` nanoseconds, without the float formatter where
/// the integer rounding is the same.
fn put_ms(out: &mut String, ns: u64) {
    let (whole, part) = (ns / 1_000, ns % 1_000);
    if part == 500 || ns >= 1 << 53 {
        // A tie: the float formatter rounds the binary value.
        let _ = write!(out, "+{:8.3}ms", ns as f64 / 1e6);
        return;
    }
    let us = whole + u64::from(part > 500);
    let _ = write!(out, "+{:>4}.{:03}ms", us / 1_000, us % 1_000);
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

fn hop_detail(out: &mut String, hop: &Hop, view: &View, style: Style) {
    if let Some(r) = hop.rule.as_deref() {
        out.push_str(&rule_detail(r, style));
        return;
    }
    let start = out.len();
    if let Some(f) = hop.hook_family() {
        out.push_str(f.as_str());
        out.push(' ');
    }
    if let Some(h) = hop.hook {
        out.push_str(h.as_str());
    }
    match &hop.verdict {
        Some(Verdict::Accept) => {
            out.push(' ');
            style.wrap(out, "32", |o| o.push_str("ACCEPT"));
        }
        Some(v) => {
            out.push(' ');
            style.wrap(out, "31;1", |o| {
                let _ = write!(o, "{v}");
            });
        }
        None => {}
    }
    if let Some(r) = view.reason(hop) {
        out.push(' ');
        style.wrap(out, "31;1", |o| o.push_str(&r));
    }
    if let Some(loc) = view.location(hop) {
        out.push(' ');
        style.wrap(out, "2", |o| {
            let _ = write!(o, "at {loc}");
        });
    }
    let lead = out[start..].len() - out[start..].trim_start().len();
    out.drain(start..start + lead);
}

/// A hop's conntrack entry in a few words: the packet's state in it, and
/// the NAT it applies (`ct new dnat 203.0.113.1:8092→192.0.2.2:80`).
#[cfg(test)]
fn conntrack(ct: &Conntrack) -> String {
    let mut s = String::new();
    put_conntrack(&mut s, ct);
    s
}

fn put_conntrack(out: &mut String, ct: &Conntrack) {
    out.push_str("ct ");
    out.push_str(ct.info.as_str());
    let Some(e) = &ct.entry else { return };
    if let Some(t) = e.tcp_state_name() {
        let _ = write!(out, " {t}");
    }
    for (name, m) in [("snat", e.snat()), ("dnat", e.dnat())] {
        if let Some(m) = m {
            let _ = write!(out, " {name} {}→{}", m.from, m.to);
        }
    }
    if e.offloaded() {
        out.push_str(" offloaded");
    }
}

/// One line per hop: when, where, what, and what changed.
fn hops(out: &mut String, p: &Packet, view: &View, style: Style, mut last_tuple: Option<Tuple>) {
    let t0 = p.hops.first().map(|h| h.t_ns).unwrap_or(0);
    for hop in &p.hops {
        let unnamed;
        let ns = match view.netns.name(hop.netns) {
            Some(n) => n,
            None => {
                unnamed = format!("netns:{}", hop.netns);
                &unnamed
            }
        };
        out.push_str("  ");
        style.wrap(out, "2", |o| put_ms(o, hop.t_ns.saturating_sub(t0)));
        let _ = write!(
            out,
            " {:<18} {:<12} {:<7} ",
            ns,
            if hop.ifname.is_empty() {
                "-"
            } else {
                &hop.ifname
            },
            hop.kind.as_str(),
        );
        hop_detail(out, hop, view, style);
        if let Some(ct) = hop.ct.as_deref() {
            out.push(' ');
            style.wrap(out, "2", |o| put_conntrack(o, ct));
        }
        if let Some(t) = hop.tuple {
            if last_tuple.is_some_and(|l| l != t) && hop.kind != HopKind::Drop {
                out.push(' ');
                style.wrap(out, "1", |o| {
                    o.push_str("(now ");
                    put_tuple(o, &t);
                    o.push(')');
                });
            }
            last_tuple = Some(t);
        }
        out.push('\n');
    }
}

/// Writes packet `p`'s block into `out`.
pub fn packet(out: &mut String, p: &Packet, view: &View, style: Style) {
    let first = p
        .hops
        .iter()
        .find_map(|h| h.tuple.map(|t| (t, h.tcp_flags)));
    style.wrap(out, "1", |o| {
        let _ = write!(o, "packet {}", p.id);
    });
    out.push(' ');
    match first {
        Some((t, flags)) if t.proto == 6 => {
            put_tuple(out, &t);
            let _ = write!(out, " [{}]", tcp_flags(flags));
        }
        Some((t, _)) => put_tuple(out, &t),
        None => out.push_str("non-IP packet"),
    }
    out.push('\n');
    hops(out, p, view, style, first.map(|(t, _)| t));
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
    fate(out, p, view, style);
}

/// The packet's fate in one line.
fn fate(out: &mut String, p: &Packet, view: &View, style: Style) {
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
}

/// Writes the diagnosis `d` into `out`.
pub fn diagnosis(out: &mut String, d: &Diagnosis, style: Style) {
    out.push_str("  ⇒ ");
    style.wrap(out, "1", |o| o.push_str(&d.message));
    out.push('\n');
    if let Some(a) = &d.advice {
        let _ = writeln!(out, "    fix: {a}");
    }
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
    fn hop_times_read_as_the_float_formatter_writes_them() {
        let mut ns: u64 = 0;
        let mut step: u64 = 1;
        while ns < 20_000_000_000_000 {
            for t in [ns, ns + 499, ns + 500, ns + 501, ns + 999_500] {
                let mut s = String::new();
                put_ms(&mut s, t);
                assert_eq!(s, format!("+{:8.3}ms", t as f64 / 1e6), "{t} ns");
            }
            ns += step;
            step = step * 3 / 2 + 7;
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

    /// A new connection's entry in SYN_SENT, its destination NATed.
    fn new_dnat_entry(original: Tuple, reply: Tuple) -> Conntrack {
        Conntrack {
            info: CtInfo::New,
            entry: Some(CtEntry {
                status: (1 << 3) | (1 << 5),
                tcp_state: 1,
                mark: 0,
                zone: 0,
                original,
                reply,
            }),
        }
    }

    #[test]
    fn a_hops_conntrack_entry_in_a_few_words() {
        let dnat = new_dnat_entry(
            tuple("192.0.2.1", 40000, "203.0.113.1", 8092),
            tuple("198.51.100.2", 80, "192.0.2.1", 40000),
        );
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

    fn sample_packets() -> (Vec<Packet>, crate::names::View) {
        use crate::{
            events::HopKind,
            kernel::{drop_reason::DropReasons, kallsyms::Kallsyms},
            model::Hook,
            names::{Interfaces, NetnsNames, View},
            track::Fate,
        };
        let syms = Kallsyms::parse("ffffffff81a00000 T nft_do_chain\nffffffff81b00000 T ip_rcv\n")
            .expect("kallsyms");
        let mut netns = NetnsNames::default();
        netns.insert(11, "client");
        netns.insert(12, "a-rather-long-namespace-name");
        let view = View {
            reasons: DropReasons::default(),
            syms: Some(syms),
            netns,
            interfaces: Interfaces::new(),
        };
        let t1 = tuple("192.0.2.9", 40000, "203.0.113.1", 8092);
        let t2 = tuple("192.0.2.9", 40000, "198.51.100.2", 80);
        let mut a = Hop::for_test(1_000, HopKind::Tx, 11, 2, "eth0");
        a.tuple = Some(t1);
        a.tcp_flags = 0x02;
        let mut b = Hop::for_test(1_000 + 1_500, HopKind::NfHook, 12, 3, "");
        b.hook = Some(Hook::Prerouting);
        b.nf_family = 2;
        b.verdict = Some(Verdict::Accept);
        b.tuple = Some(t1);
        b.ct = Some(Box::new(new_dnat_entry(
            t1,
            tuple("198.51.100.2", 80, "192.0.2.9", 40000),
        )));
        let mut c = Hop::for_test(1_000 + 12_345_678, HopKind::NfHook, 12, 4, "docker0");
        c.verdict = Some(Verdict::Drop);
        c.tuple = Some(t2);
        let mut d = Hop::for_test(1_000 + 12_346_500, HopKind::Drop, 13, 4, "veth-x");
        d.location = 0xffffffff81a00044;
        d.tuple = Some(t2);
        let mut e = Hop::for_test(1_000 + 3_600_000_000_999, HopKind::Rx, 12, 5, "");
        e.verdict = Some(Verdict::Jump("chain-x".into()));
        let hops = vec![a, b, c, d, e];
        let p1 = Packet {
            id: 7,
            fate: Fate::of(&hops),
            hops,
            rules_late: vec![12, 99],
            notes: vec!["a note".into()],
        };
        let mut u = Hop::for_test(5, HopKind::Rx, 11, 2, "eth0");
        u.tuple = Some(Tuple {
            saddr: "2001:db8::1".parse().expect("ip"),
            daddr: "2001:db8::2".parse().expect("ip"),
            sport: 5353,
            dport: 0,
            proto: 17,
        });
        let hops = vec![u, Hop::for_test(9_000_501, HopKind::Consume, 11, 0, "")];
        let p2 = Packet {
            id: 8,
            fate: Fate::of(&hops),
            hops,
            rules_late: vec![],
            notes: vec![],
        };
        let hops = vec![Hop::for_test(1, HopKind::Tx, 14, 2, "x")];
        let p3 = Packet {
            id: 9,
            fate: Fate::of(&hops),
            hops,
            rules_late: vec![],
            notes: vec![],
        };
        (vec![p1, p2, p3], view)
    }

    fn sample_diagnosis(advice: bool) -> Diagnosis {
        Diagnosis {
            cause: "x".into(),
            message: "it went somewhere".into(),
            advice: advice.then(|| "do this".into()),
            manager: None,
        }
    }

    const RENDERED: [&str; 6] = [
        concat!(
            "packet 7 tcp 192.0.2.9:40000 → 203.0.113.1:8092 [S]\n",
            "  +   0.000ms client             eth0         tx      \n",
            "  +   0.002ms a-rather-long-namespace-name -            nf_hook ip PREROUTING ACCEPT ct new syn_sent dnat 203.0.113.1:8092→198.51.100.2:80\n",
            "  +  12.346ms a-rather-long-namespace-name docker0      nf_hook unknown  DROP (now tcp 192.0.2.9:40000 → 198.51.100.2:80)\n",
            "  +  12.347ms netns:13           veth-x       drop    at nft_do_chain+0x44\n",
            "  +3600000.001ms a-rather-long-namespace-name -            rx      JUMP chain-x\n",
            "  … rule tracing in a-rather-long-namespace-name was not running yet when this packet passed it (it starts when a packet first enters; --netns starts it up front)\n",
            "  … rule tracing in netns:99 was not running yet when this packet passed it (it starts when a packet first enters; --netns starts it up front)\n",
            "  · a note\n",
            "  ✗ dropped (netns:13, veth-x): no reason given\n",
            "  ⇒ it went somewhere\n",
            "    fix: do this\n",
        ),
        concat!(
            "packet 8 udp [2001:db8::1]:5353 → 2001:db8::2\n",
            "  +   0.000ms client             eth0         rx      \n",
            "  +   9.000ms client             -            deliver \n",
            "  ✓ delivered (client, -)\n",
            "  ⇒ it went somewhere\n",
        ),
        concat!(
            "packet 9 non-IP packet\n",
            "  +   0.000ms netns:14           x            tx      \n",
            "  ? fate unknown: last seen (netns:14, x)\n",
            "  ⇒ it went somewhere\n",
        ),
        concat!(
            "\x1b[1mpacket 7\x1b[0m tcp 192.0.2.9:40000 → 203.0.113.1:8092 [S]\n",
            "  \x1b[2m+   0.000ms\x1b[0m client             eth0         tx      \n",
            "  \x1b[2m+   0.002ms\x1b[0m a-rather-long-namespace-name -            nf_hook ip PREROUTING \x1b[32mACCEPT\x1b[0m \x1b[2mct new syn_sent dnat 203.0.113.1:8092→198.51.100.2:80\x1b[0m\n",
            "  \x1b[2m+  12.346ms\x1b[0m a-rather-long-namespace-name docker0      nf_hook unknown  \x1b[31;1mDROP\x1b[0m \x1b[1m(now tcp 192.0.2.9:40000 → 198.51.100.2:80)\x1b[0m\n",
            "  \x1b[2m+  12.347ms\x1b[0m netns:13           veth-x       drop    \x1b[2mat nft_do_chain+0x44\x1b[0m\n",
            "  \x1b[2m+3600000.001ms\x1b[0m a-rather-long-namespace-name -            rx      \x1b[31;1mJUMP chain-x\x1b[0m\n",
            "  \x1b[2m… rule tracing in a-rather-long-namespace-name was not running yet when this packet passed it (it starts when a packet first enters; --netns starts it up front)\x1b[0m\n",
            "  \x1b[2m… rule tracing in netns:99 was not running yet when this packet passed it (it starts when a packet first enters; --netns starts it up front)\x1b[0m\n",
            "  \x1b[2m· a note\x1b[0m\n",
            "  \x1b[31;1m✗ dropped (netns:13, veth-x): no reason given\x1b[0m\n",
            "  ⇒ \x1b[1mit went somewhere\x1b[0m\n",
            "    fix: do this\n",
        ),
        concat!(
            "\x1b[1mpacket 8\x1b[0m udp [2001:db8::1]:5353 → 2001:db8::2\n",
            "  \x1b[2m+   0.000ms\x1b[0m client             eth0         rx      \n",
            "  \x1b[2m+   9.000ms\x1b[0m client             -            deliver \n",
            "  \x1b[32m✓ delivered (client, -)\x1b[0m\n",
            "  ⇒ \x1b[1mit went somewhere\x1b[0m\n",
        ),
        concat!(
            "\x1b[1mpacket 9\x1b[0m non-IP packet\n",
            "  \x1b[2m+   0.000ms\x1b[0m netns:14           x            tx      \n",
            "  \x1b[2m? fate unknown: last seen (netns:14, x)\x1b[0m\n",
            "  ⇒ \x1b[1mit went somewhere\x1b[0m\n",
        ),
    ];

    #[test]
    fn packets_read_as_they_always_have() {
        let (packets, view) = sample_packets();
        let mut want = RENDERED.iter();
        for color in [false, true] {
            for (i, p) in packets.iter().enumerate() {
                let got = rendered(p, &view, Style { color }, &sample_diagnosis(i == 0));
                assert_eq!(Some(&got.as_str()), want.next(), "color {color}");
            }
        }
    }

    fn rendered(p: &Packet, view: &View, style: Style, d: &Diagnosis) -> String {
        let mut s = String::new();
        packet(&mut s, p, view, style);
        diagnosis(&mut s, d, style);
        s
    }
}

//! iptables-legacy rules: the TRACE rules pathtrace adds, `iptables-save`
//! parsing, and sweeping rules left by dead processes.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use super::{ns, NfError, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::kernel::owner::{Owner, TagKind};
use crate::model::{FlowFilter, Verdict};

pub fn iptables(family: u8) -> &'static str {
    if family == NFPROTO_IPV6 {
        "ip6tables-legacy"
    } else {
        "iptables-legacy"
    }
}

pub fn iptables_save(family: u8) -> &'static str {
    if family == NFPROTO_IPV6 {
        "ip6tables-legacy-save"
    } else {
        "iptables-legacy-save"
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        p => p.to_string(),
    }
}

/// Match arguments (without `-I CHAIN` and the target) for each rule a filter
/// (said by its [`FlowFilter::flag_cover`]) needs, with the family each rule
/// belongs to.
pub fn trace_rule_specs(
    filters: &[FlowFilter],
    owner: Owner,
) -> Result<Vec<(u8, Vec<String>)>, NfError> {
    let all = [FlowFilter::default()];
    let filters = if filters.is_empty() {
        &all[..]
    } else {
        filters
    };
    let mut out: Vec<(u8, Vec<String>)> = Vec::new();
    let net = |c: Option<crate::model::Cidr>| c.map(|c| (c.addr, c.prefix));
    for f in filters.iter().flat_map(FlowFilter::flag_cover) {
        let (src, dst) = (net(f.src), net(f.dst));
        let mut dirs = vec![(src, dst, f.sport, f.dport)];
        if f.both_directions {
            dirs.push((dst, src, f.dport, f.sport));
        }
        for (src, dst, sport, dport) in dirs {
            let fams: Vec<u8> = match (src.map(|a| a.0), dst.map(|a| a.0)) {
                (Some(a), Some(b)) if a.is_ipv6() != b.is_ipv6() => {
                    return Err(NfError::Filter(format!(
                        "{a} and {b} are of different families"
                    )))
                }
                (Some(IpAddr::V6(_)), _) | (None, Some(IpAddr::V6(_))) => vec![NFPROTO_IPV6],
                (Some(_), _) | (None, Some(_)) => vec![NFPROTO_IPV4],
                (None, None) => vec![NFPROTO_IPV4, NFPROTO_IPV6],
            };
            let ports = sport.is_some() || dport.is_some();
            let protos: Vec<Option<u8>> = match f.proto.map(|p| p.0) {
                Some(p) => vec![Some(p)],
                None if ports => vec![Some(6), Some(17)],
                None => vec![None],
            };
            for fam in fams {
                for proto in &protos {
                    let mut a: Vec<String> = Vec::new();
                    for (flag, addr) in [("-s", src), ("-d", dst)] {
                        if let Some((ip, len)) = addr {
                            a.extend([flag.to_string(), format!("{ip}/{len}")]);
                        }
                    }
                    if let Some(p) = proto {
                        a.extend(["-p".to_string(), proto_name(*p)]);
                    }
                    for (flag, port) in [("--sport", sport), ("--dport", dport)] {
                        if let Some(port) = port {
                            a.extend([flag.to_string(), port.to_string()]);
                        }
                    }
                    a.extend(["-m", "comment", "--comment"].map(String::from));
                    a.push(TagKind::RuleComment.tag(owner));
                    if !out.iter().any(|(f2, a2)| *f2 == fam && *a2 == a) {
                        out.push((fam, a));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One table as `iptables-save -t TABLE` prints it.
#[derive(Debug, Default, Clone)]
pub struct SavedTable {
    /// `-A CHAIN …` lines by chain, in order.
    pub rules: HashMap<String, Vec<String>>,
    /// Built-in chains' policies ("ACCEPT", "DROP").
    pub policies: HashMap<String, String>,
    pub user_chains: HashSet<String>,
}

pub fn parse_save(out: &str) -> SavedTable {
    let mut t = SavedTable::default();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix(':') {
            let mut it = rest.split_whitespace();
            let (Some(chain), Some(policy)) = (it.next(), it.next()) else {
                continue;
            };
            if policy == "-" {
                t.user_chains.insert(chain.to_string());
            } else {
                t.policies.insert(chain.to_string(), policy.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split_whitespace().next().unwrap_or_default();
            t.rules
                .entry(chain.to_string())
                .or_default()
                .push(line.to_string());
        }
    }
    t
}

/// Splits an `iptables-save` line into arguments (handles double quotes).
pub fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any, mut escaped) = (false, false, false);
    for c in line.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The verdict a rule line's target gives.
pub fn verdict_of_rule(line: &str, user_chains: &HashSet<String>) -> Verdict {
    let args = split_args(line);
    let pos = args.iter().rposition(|a| a == "-j" || a == "-g");
    let (Some(pos), true) = (pos, pos.is_some_and(|p| p + 1 < args.len())) else {
        return Verdict::Continue;
    };
    let target = args[pos + 1].as_str();
    if args[pos] == "-g" {
        return Verdict::Goto(target.to_string());
    }
    verdict_of_target(target, user_chains)
}

/// The verdict of a target or policy name.
pub fn verdict_of_target(target: &str, user_chains: &HashSet<String>) -> Verdict {
    match target {
        "ACCEPT" | "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP" => Verdict::Accept,
        "DROP" | "REJECT" => Verdict::Drop,
        "RETURN" => Verdict::Return,
        "QUEUE" | "NFQUEUE" => Verdict::Queue(0),
        t if user_chains.contains(t) => Verdict::Jump(t.to_string()),
        _ => Verdict::Continue,
    }
}

/// The TRACE rules of an `iptables-save -t raw` listing whose owner tag
/// names a process that is gone (by `alive`), as their arguments after `-A`.
pub fn stale_trace_rules(save: &str, alive: impl Fn(Owner) -> bool) -> Vec<(Owner, Vec<String>)> {
    save.lines()
        .filter(|l| l.starts_with("-A "))
        .filter_map(|line| {
            let args = split_args(line);
            let owner = args.iter().find_map(|a| TagKind::RuleComment.parse(a))?;
            let trace = args.iter().any(|a| a == "TRACE");
            (trace && !alive(owner)).then(|| (owner, args.into_iter().skip(1).collect()))
        })
        .collect()
}

/// Deletes `-j TRACE` rules in the raw table whose owner tag names a process
/// that is gone. Returns how many were deleted.
pub fn legacy_sweep(netns: Option<&Path>) -> Result<usize, NfError> {
    let mut n = 0;
    for family in [NFPROTO_IPV4, NFPROTO_IPV6] {
        let out = ns::run(netns, iptables_save(family), &["-t", "raw"])?;
        for (owner, rule) in stale_trace_rules(&out, Owner::alive) {
            let mut del: Vec<&str> = vec!["-w", "-t", "raw", "-D"];
            del.extend(rule.iter().map(String::as_str));
            ns::run(netns, iptables(family), &del)?;
            log::info!(
                "netfilter: removed a TRACE rule left by process {} that is gone",
                owner.pid
            );
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_rules_of_gone_owners_are_stale() {
        let save = "*raw\n\
            :PREROUTING ACCEPT [0:0]\n\
            -A PREROUTING -m comment --comment pathtrace:10:500 -j TRACE\n\
            -A PREROUTING -m comment --comment pathtrace:10:400 -j TRACE\n\
            -A OUTPUT -m comment --comment pathtrace:11 -j TRACE\n\
            -A OUTPUT -m comment --comment \"pathtrace:12\" -j ACCEPT\n\
            -A OUTPUT -m comment --comment other -j TRACE\n\
            COMMIT\n";
        // Process 10 started at 500 still runs; 11 is not a pathtrace any more.
        let alive = |o: Owner| o.pid == 10 && o.start == Some(500);
        let stale = stale_trace_rules(save, alive);
        let owners: Vec<(u32, Option<u64>)> = stale.iter().map(|(o, _)| (o.pid, o.start)).collect();
        assert_eq!(owners, [(10, Some(400)), (11, None)]);
        assert_eq!(
            stale[0].1.join(" "),
            "PREROUTING -m comment --comment pathtrace:10:400 -j TRACE"
        );
    }
}

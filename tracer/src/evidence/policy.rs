//! Policy routing: the `ip rule` that sends a packet to a routing table
//! other than `main`, and what that table does with it, read with `ip -j`
//! in the packet's namespace.
use std::{net::IpAddr, path::Path};

use serde_json::Value;

/// A non-default rule that took the packet, and the route it found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRoute {
    /// The rule as `ip rule` prints it: "1000: from 192.0.2.1 lookup 100".
    pub rule: String,
    pub table: String,
    /// `blackhole`, `unreachable`, `prohibit`, or `no route` when the table
    /// has none for the destination.
    pub verdict: String,
    /// The rule surely takes the packet; else it has selectors pathtrace
    /// cannot judge from the packet (a firewall mark, …) and may take it.
    pub sure: bool,
}

fn prefix_holds(spec: &str, addr: IpAddr) -> bool {
    if spec == "all" {
        return true;
    }
    let (net, len) = spec.split_once('/').unwrap_or((spec, ""));
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    let full = if net.is_ipv4() { 32 } else { 128 };
    let len: u32 = len.parse().unwrap_or(full);
    let bits = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    };
    let len = len.min(full);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    net.is_ipv4() == addr.is_ipv4() && bits(net) & mask == bits(addr) & mask
}

/// The rules of `rules` (`ip -j rule show`) that may take a packet from
/// `src` to `dst` arriving on `iif` to a table of their own, in order,
/// up to the first that surely takes it: (the rule as `ip rule` prints it,
/// its table, whether it surely takes the packet). A rule with selectors
/// this does not judge (fwmark, ipproto, uidrange, …) may take it.
/// The kernel's own rules (`local`, `main`, `default`) are not listed.
fn rules_taking(rules: &Value, src: IpAddr, dst: IpAddr, iif: &str) -> Vec<(String, String, bool)> {
    const KNOWN: [&str; 8] = [
        "priority", "src", "srclen", "dst", "dstlen", "iif", "table", "protocol",
    ];
    let mut out = Vec::new();
    for r in rules.as_array().into_iter().flatten() {
        let Some(obj) = r.as_object() else { continue };
        let spec = |key: &str, len: &str| match (r[key].as_str(), r[len].as_u64()) {
            (Some(a), Some(l)) => format!("{a}/{l}"),
            (Some(a), None) => a.to_owned(),
            _ => "all".to_owned(),
        };
        let (from, to) = (spec("src", "srclen"), spec("dst", "dstlen"));
        let takes = prefix_holds(&from, src)
            && prefix_holds(&to, dst)
            && r["iif"].as_str().is_none_or(|i| i == iif);
        let Some(table) = r["table"].as_str() else {
            continue;
        };
        let unjudged: Vec<String> = obj
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()) && !k.ends_with("len"))
            .map(|(k, v)| {
                format!(
                    "{k} {}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        if !takes || table == "local" {
            continue;
        }
        if matches!(table, "main" | "default") {
            if unjudged.is_empty() {
                break;
            }
            continue;
        }
        let mut text = format!("{}: from {from}", r["priority"].as_u64().unwrap_or(0));
        if to != "all" {
            text.push_str(&format!(" to {to}"));
        }
        if let Some(i) = r["iif"].as_str() {
            text.push_str(&format!(" iif {i}"));
        }
        for u in &unjudged {
            text.push_str(&format!(" {u}"));
        }
        text.push_str(&format!(" lookup {table}"));
        let sure = unjudged.is_empty();
        out.push((text, table.to_owned(), sure));
        if sure {
            break;
        }
    }
    out
}

/// The longest-prefix route of `routes` (`ip -j route show table T`)
/// that takes `dst`.
fn best_route(routes: &Value, dst: IpAddr) -> Option<&Value> {
    routes
        .as_array()?
        .iter()
        .filter_map(|r| {
            let d = r["dst"].as_str()?;
            let spec = if d == "default" { "all" } else { d };
            let len = spec
                .split_once('/')
                .and_then(|(_, l)| l.parse::<u32>().ok())
                .unwrap_or(if spec == "all" { 0 } else { 128 });
            prefix_holds(spec, dst).then_some((len, r))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, r)| r)
}

/// The types of route that discard what they match.
const DISCARDING: [&str; 4] = ["blackhole", "unreachable", "prohibit", "throw"];

/// What `routes` (`ip -j route show table T`) does with `dst`: the
/// longest-prefix route's type when it is not a plain route, or `no route`.
fn table_verdict(routes: &Value, dst: IpAddr) -> Option<String> {
    match best_route(routes, dst) {
        None => Some("no route".to_owned()),
        Some(r) => r["type"]
            .as_str()
            .filter(|t| DISCARDING.contains(t))
            .map(str::to_owned),
    }
}

/// The route of `routes` that discards `dst`, as `ip route` names it
/// (`prohibit 198.51.100.2`), when the longest prefix that takes `dst` is one.
fn discarding_route(routes: &Value, dst: IpAddr) -> Option<String> {
    let r = best_route(routes, dst)?;
    let kind = r["type"].as_str().filter(|t| DISCARDING.contains(t))?;
    Some(format!("{kind} {}", r["dst"].as_str()?))
}

/// A `blackhole`, `unreachable` or `prohibit` route in the main table of
/// the namespace at `netns` that discards packets to `dst`.
pub fn discard_route(netns: Option<&Path>, dst: IpAddr) -> Option<String> {
    let family = if dst.is_ipv4() { "-4" } else { "-6" };
    let routes: Value = serde_json::from_str(
        &in_netns::output(
            netns,
            "ip",
            &["-j", family, "route", "show", "table", "main"],
        )
        .ok()?,
    )
    .ok()?;
    discarding_route(&routes, dst)
}

/// The policy rule that sent a packet from `src` to `dst` (arriving on
/// `iif`) into a table that drops it, in the namespace at `netns`: the
/// rule that surely takes it, else one that may (its selectors unjudged).
pub fn policy_route(
    netns: Option<&Path>,
    src: IpAddr,
    dst: IpAddr,
    iif: &str,
) -> Option<PolicyRoute> {
    let family = if dst.is_ipv4() { "-4" } else { "-6" };
    let rules: Value =
        serde_json::from_str(&in_netns::output(netns, "ip", &["-j", family, "rule", "show"]).ok()?)
            .ok()?;
    let mut taking = rules_taking(&rules, src, dst, iif);
    // Sure before unsure, each in the kernel's order.
    taking.sort_by_key(|(_, _, sure)| !*sure);
    taking.into_iter().find_map(|(rule, table, sure)| {
        let routes: Value = serde_json::from_str(
            &in_netns::output(
                netns,
                "ip",
                &["-j", family, "route", "show", "table", &table],
            )
            .ok()?,
        )
        .ok()?;
        // A table without a route sends the lookup on to the next rule:
        // only a discarding route makes an unjudged rule the likely one.
        let verdict = table_verdict(&routes, dst).filter(|v| sure || v != "no route")?;
        Some(PolicyRoute {
            rule,
            table,
            verdict,
            sure,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_and_what_its_table_does() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let rules: Value = serde_json::from_str(
            r#"[{"priority":0,"src":"all","table":"local"},{"priority":900,"fwmark":"0x1","table":"7"},{"priority":1000,"src":"192.0.2.0","srclen":24,"table":"100"},{"priority":32766,"src":"all","table":"main"}]"#,
        )
        .expect("json");
        assert_eq!(
            rules_taking(&rules, ip("192.0.2.1"), ip("198.51.100.2"), "r0"),
            vec![
                (
                    "900: from all fwmark 0x1 lookup 7".into(),
                    "7".into(),
                    false
                ),
                (
                    "1000: from 192.0.2.0/24 lookup 100".into(),
                    "100".into(),
                    true
                )
            ]
        );
        assert_eq!(
            rules_taking(&rules, ip("203.0.113.1"), ip("198.51.100.2"), "r0"),
            vec![(
                "900: from all fwmark 0x1 lookup 7".into(),
                "7".into(),
                false
            )]
        );
        let routes: Value = serde_json::from_str(
            r#"[{"type":"blackhole","dst":"198.51.100.0/24","flags":[]},{"dst":"default","gateway":"192.0.2.9","dev":"r0","flags":[]}]"#,
        )
        .expect("json");
        assert_eq!(
            table_verdict(&routes, ip("198.51.100.2")).as_deref(),
            Some("blackhole")
        );
        assert_eq!(table_verdict(&routes, ip("203.0.113.1")), None);
        assert_eq!(
            discarding_route(&routes, ip("198.51.100.2")).as_deref(),
            Some("blackhole 198.51.100.0/24")
        );
        assert_eq!(discarding_route(&routes, ip("203.0.113.1")), None);
        assert_eq!(
            table_verdict(&serde_json::json!([]), ip("203.0.113.1")).as_deref(),
            Some("no route")
        );
    }
}

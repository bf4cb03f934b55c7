//! A NAT clash: two connections NATed to one tuple. NAT picks a mapping at
//! a connection's first packet; where its rule's range leaves no free one,
//! the second connection gets a tuple an existing entry already holds, and
//! conntrack refuses to confirm it: its `insert_failed` statistic rises and
//! the packet is dropped with no rule deciding.
use std::net::IpAddr;

use super::{
    fact::{Fact, Values},
    nat::match_holds,
};
use crate::{
    model::{CtEntry, Endpoint, Tuple},
    names::View,
    netfilter::{parse_iptables_save, parse_nft_text},
    track::Packet,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatClash {
    pub netns: u32,
    /// The entry that already holds the tuple this packet was NATed to.
    pub holder: CtEntry,
}

/// A NAT rule of a namespace's ruleset, as `nft -j list ruleset` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NatRule {
    family: String,
    table: String,
    chain: String,
    handle: u64,
    /// 1-based position in its chain.
    index: usize,
    /// Written by iptables-nft: its target an `xt` expression, or an
    /// iptables table and chain.
    iptables: bool,
    /// Its chain is a base chain at another hook than postrouting, where
    /// masquerade can't go.
    not_postrouting: bool,
}

impl NatRule {
    fn managed(&self) -> bool {
        self.table == "firewalld"
            || ["KUBE-", "DOCKER", "ufw", "PVEFW-", "CNI-"]
                .iter()
                .any(|p| self.chain.starts_with(p))
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    Endpoint { addr, port }.to_string()
}

fn flow_words(t: &Tuple) -> String {
    format!(
        "{} {} → {}",
        t.proto_name(),
        endpoint(t.saddr, t.sport),
        endpoint(t.daddr, t.dport)
    )
}

/// A clash where `p` was dropped, with its facts set in `v`: the packet
/// was NATed (its headers at the drop differ from where it started), and
/// an entry in that namespace's table already holds the reply tuple it
/// needed. Called only where no rule decided and `insert_failed` rose.
pub fn nat_clash(p: &Packet, view: &mut View, v: &mut Values) -> Option<NatClash> {
    let at = p.fate.at.and_then(|i| p.hops.get(i))?;
    let first = p.hops.iter().find_map(|h| h.tuple)?;
    let last = at
        .tuple
        .or_else(|| p.hops.iter().rev().find_map(|h| h.tuple))?;
    let snat = (last.saddr, last.sport) != (first.saddr, first.sport);
    if !snat && (last.daddr, last.dport) == (first.daddr, first.dport) {
        return None;
    }
    let reply = Tuple {
        saddr: last.daddr,
        daddr: last.saddr,
        sport: last.dport,
        dport: last.sport,
        proto: last.proto,
    };
    let path = view.netns.path(at.netns)?;
    let holder = in_netns::call(&path, || {
        crate::evidence::conntrack::holding_reply_here(&reply)
    })
    .ok()
    .flatten()
    .filter(|e| e.original != first)?;
    v.set(Fact::ClashTuple, flow_words(&last));
    v.set(Fact::ClashHolder, flow_words(&holder.original));
    let to = if snat {
        endpoint(last.saddr, last.sport)
    } else {
        endpoint(last.daddr, last.dport)
    };
    v.set(Fact::ClashTo, to);
    // What the NAT rule matched: the source as it came, the destination
    // as it left (an SNAT rule runs after any DNAT).
    let matched = Tuple {
        daddr: last.daddr,
        dport: last.dport,
        ..first
    };
    let ruleset = in_netns::output(Some(&path), "nft", &["-j", "list", "ruleset"])
        .ok()
        .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok());
    v.set(
        Fact::ClashRule,
        "none in nft's view of the ruleset matches it (iptables-legacy rules are not read)",
    );
    if let Some(rule) = ruleset.and_then(|r| nat_rule(&r, &matched, snat)) {
        v.set(Fact::ClashRule, rule_words(&rule, &path));
        if let Some(fix) = snat.then(|| masquerade_first(&rule, &matched)).flatten() {
            v.set(Fact::ClashFix, fix);
        }
    }
    super::facts::set_place(view, at.netns, v);
    Some(NatClash {
        netns: at.netns,
        holder,
    })
}

/// The rule in words: its position, chain and table, and its text as its
/// own tool writes it.
fn rule_words(rule: &NatRule, path: &std::path::Path) -> String {
    let text = if rule.iptables {
        let save = if rule.family == "ip6" {
            "ip6tables-nft-save"
        } else {
            "iptables-nft-save"
        };
        in_netns::output(Some(path), save, &["-t", &rule.table])
            .ok()
            .and_then(|out| parse_iptables_save(&out))
            .and_then(|chains| chains.get(&rule.chain)?.get(rule.index - 1).cloned())
    } else {
        in_netns::output(
            Some(path),
            "nft",
            &["-a", "list", "table", &rule.family, &rule.table],
        )
        .ok()
        .and_then(|out| parse_nft_text(&out).remove(&rule.handle))
    };
    let place = format!(
        "rule {} of chain {} in table {} {}",
        rule.index, rule.chain, rule.family, rule.table
    );
    match text {
        Some(t) => format!("{place}: {t}"),
        None => format!("{place} (handle {})", rule.handle),
    }
}

/// Masquerade for this flow alone, inserted before `rule` in its own
/// engine: masquerade picks a free port, and `rule` stays as it is for
/// everyone else. None where a manager owns the chain or masquerade can't
/// go there.
fn masquerade_first(rule: &NatRule, t: &Tuple) -> Option<String> {
    if rule.managed() || rule.not_postrouting {
        return None;
    }
    let v6 = t.saddr.is_ipv6();
    let proto = t.proto_name();
    Some(if rule.iptables {
        format!(
            "{} -t {} -I {} {} -s {} -d {} -p {proto} --dport {} -j MASQUERADE",
            if v6 { "ip6tables" } else { "iptables" },
            rule.table,
            rule.chain,
            rule.index,
            t.saddr,
            t.daddr,
            t.dport
        )
    } else {
        let l3 = if v6 { "ip6" } else { "ip" };
        format!(
            "nft insert rule {} {} {} position {} {l3} saddr {} {l3} daddr {} {proto} dport {} masquerade",
            rule.family, rule.table, rule.chain, rule.handle, t.saddr, t.daddr, t.dport
        )
    })
}

/// Whether a rule's statements NAT the source (`snat`) or the destination.
fn nats(exprs: &[serde_json::Value], snat: bool) -> bool {
    let (native, xt): (&[&str], &[&str]) = if snat {
        (&["snat", "masquerade"], &["SNAT", "MASQUERADE"])
    } else {
        (&["dnat", "redirect"], &["DNAT", "REDIRECT"])
    };
    exprs.iter().any(|e| {
        native.iter().any(|k| e.get(*k).is_some())
            || (e["xt"]["type"] == "target"
                && e["xt"]["name"].as_str().is_some_and(|n| xt.contains(&n)))
    })
}

/// The first rule of a table with a nat chain that NATs the source
/// (`snat`) or the destination, and whose matches on protocol, addresses,
/// destination port and input interface all hold for `t` (other matches
/// are not judged).
fn nat_rule(ruleset: &serde_json::Value, t: &Tuple, snat: bool) -> Option<NatRule> {
    let objects = ruleset["nftables"].as_array()?;
    let chains: Vec<&serde_json::Value> = objects.iter().filter_map(|o| o.get("chain")).collect();
    let nat_table = |family: &str, table: &str| {
        chains
            .iter()
            .any(|c| c["type"] == "nat" && c["family"] == family && c["table"] == table)
    };
    let rules: Vec<&serde_json::Value> = objects.iter().filter_map(|o| o.get("rule")).collect();
    rules.iter().find_map(|r| {
        let (family, table, chain) = (
            r["family"].as_str()?,
            r["table"].as_str()?,
            r["chain"].as_str()?,
        );
        let exprs = r["expr"].as_array()?;
        if !nat_table(family, table)
            || !nats(exprs, snat)
            || !exprs
                .iter()
                .filter_map(|e| e.get("match"))
                .all(|m| match_holds(m, t, None).unwrap_or(true))
        {
            return None;
        }
        let index = 1 + rules
            .iter()
            .take_while(|o| !std::ptr::eq(**o, *r))
            .filter(|o| o["family"] == family && o["table"] == table && o["chain"] == chain)
            .count();
        let hook = chains
            .iter()
            .find(|c| c["family"] == family && c["table"] == table && c["name"] == chain)
            .and_then(|c| c["hook"].as_str());
        let xt = exprs.iter().any(|e| e.get("xt").is_some());
        Some(NatRule {
            family: family.to_owned(),
            table: table.to_owned(),
            chain: chain.to_owned(),
            handle: r["handle"].as_u64()?,
            index,
            iptables: xt
                || (matches!(family, "ip" | "ip6")
                    && table == "nat"
                    && !chain.chars().any(|c| c.is_ascii_lowercase())),
            not_postrouting: hook.is_some_and(|h| h != "postrouting"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn() -> Tuple {
        Tuple {
            saddr: "192.0.2.1".parse().expect("ip"),
            daddr: "198.51.100.2".parse().expect("ip"),
            sport: 42964,
            dport: 8080,
            proto: 6,
        }
    }

    #[test]
    fn the_snat_rule_is_found_in_its_engine_and_masquerade_goes_before_it() {
        // As `nft -j list ruleset` prints an nft-native `snat to A:P` and
        // iptables-nft's `-j SNAT --to-source A:P` (the target as `xt`).
        let ruleset: serde_json::Value = serde_json::from_str(
            r#"{"nftables":[
            {"chain":{"family":"ip","table":"nat","name":"POSTROUTING","type":"nat","hook":"postrouting"}},
            {"chain":{"family":"inet","table":"edge","name":"post","type":"nat","hook":"postrouting"}},
            {"rule":{"family":"ip","table":"nat","chain":"POSTROUTING","handle":3,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"203.0.113.9"}},{"xt":{"type":"target","name":"SNAT"}}]}},
            {"rule":{"family":"ip","table":"nat","chain":"POSTROUTING","handle":4,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"198.51.100.2"}},{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":8080}},{"counter":{}},{"xt":{"type":"target","name":"SNAT"}}]}},
            {"rule":{"family":"inet","table":"edge","chain":"post","handle":7,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":8080}},{"snat":{"family":"ip","addr":"198.51.100.254","port":40000}}]}}
            ]}"#,
        )
        .expect("json");
        let ipt = nat_rule(&ruleset, &syn(), true).expect("the SNAT rule");
        assert_eq!((ipt.handle, ipt.index, ipt.iptables), (4, 2, true));
        assert_eq!(
            masquerade_first(&ipt, &syn()).as_deref(),
            Some("iptables -t nat -I POSTROUTING 2 -s 192.0.2.1 -d 198.51.100.2 -p tcp --dport 8080 -j MASQUERADE")
        );
        assert_eq!(nat_rule(&ruleset, &syn(), false), None, "no DNAT rule");
        let other = Tuple {
            dport: 8081,
            ..syn()
        };
        assert_eq!(nat_rule(&ruleset, &other, true), None);
        let objects = ruleset["nftables"].as_array().expect("array");
        let native = serde_json::json!({"nftables": [objects[1], objects[4]]});
        let nft = nat_rule(&native, &syn(), true).expect("the snat rule");
        assert_eq!(
            masquerade_first(&nft, &syn()).as_deref(),
            Some("nft insert rule inet edge post position 7 ip saddr 192.0.2.1 ip daddr 198.51.100.2 tcp dport 8080 masquerade")
        );
    }

    #[test]
    fn no_command_where_a_manager_owns_the_chain_or_masquerade_cant_go() {
        let rule = |chain: &str, not_postrouting| NatRule {
            family: "ip".into(),
            table: "nat".into(),
            chain: chain.into(),
            handle: 2,
            index: 1,
            iptables: true,
            not_postrouting,
        };
        assert_eq!(
            masquerade_first(&rule("KUBE-POSTROUTING", false), &syn()),
            None
        );
        assert_eq!(masquerade_first(&rule("INPUT", true), &syn()), None);
        assert!(masquerade_first(&rule("POSTROUTING", false), &syn()).is_some());
    }
}

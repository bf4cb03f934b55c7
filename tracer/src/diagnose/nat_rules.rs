//! Who writes a namespace's NAT rules, and so how a masquerade for one flow
//! is added there: `iptables -t nat …` where iptables (nft or legacy)
//! manages them, `nft …` into the table's own nat chain where nftables'
//! own syntax does.
use std::{net::IpAddr, path::Path};

use serde_json::Value;

use super::Manager;
use crate::{events::RuleHit, model::Family};

/// How a namespace's NAT rules are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatRules {
    /// `iptables`, `ip6tables`, `iptables-legacy`, …
    Iptables(&'static str),
    /// nftables' own syntax: where a masquerade for the flow goes.
    Nft(NftNat),
}

/// An nftables table that takes a masquerade rule: its postrouting nat
/// chain when it has one, else the chain to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftNat {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The table, or the chain, must be created first.
    pub new_table: bool,
    pub new_chain: bool,
}

/// What a masquerade for one flow matches: the clients' network, the
/// device it leaves by (when it matters), and the flow as it leaves.
pub struct Masquerade<'a> {
    pub from: &'a str,
    pub out_dev: Option<&'a str>,
    pub daddr: IpAddr,
    pub proto: String,
    pub dport: u16,
}

impl NftNat {
    /// The `nft` command that adds the masquerade, ahead of the chain's
    /// other rules; one quoted argument when a table or chain is created
    /// with it.
    pub fn command(&self, m: &Masquerade<'_>) -> String {
        let (family, table, chain) = (&self.family, &self.table, &self.chain);
        let l3 = if m.daddr.is_ipv6() { "ip6" } else { "ip" };
        let oif = m
            .out_dev
            .map(|d| format!(" oifname \"{d}\""))
            .unwrap_or_default();
        let rule = format!(
            "{l3} saddr {}{oif} {l3} daddr {} {} dport {} masquerade",
            m.from, m.daddr, m.proto, m.dport
        );
        if !self.new_chain {
            return format!("nft insert rule {family} {table} {chain} {rule}");
        }
        let table_cmd = if self.new_table {
            format!("add table {family} {table}; ")
        } else {
            String::new()
        };
        format!(
            "nft '{table_cmd}add chain {family} {table} {chain} {{ type nat hook postrouting priority srcnat; }}; add rule {family} {table} {chain} {rule}'"
        )
    }
}

/// What the rules a packet met in one namespace say of who writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Met {
    Nothing,
    Iptables(Manager),
    Nft,
}

/// What `walked`'s rules in namespace `netns` say: the nat table's rules
/// say it best, a filter's failing that.
pub fn met<'a>(walked: impl IntoIterator<Item = &'a RuleHit>, netns: u32) -> Met {
    let here: Vec<&RuleHit> = walked.into_iter().filter(|r| r.netns == netns).collect();
    match here
        .iter()
        .find(|r| r.table == "nat")
        .or(here.first())
        .map(|r| Manager::iptables_flavour(r))
    {
        None => Met::Nothing,
        Some(Some(m)) => Met::Iptables(m),
        Some(None) => Met::Nft,
    }
}

/// How namespace `path`'s NAT rules are written, judged from the rules
/// the packet met there, else from its ruleset. A namespace with no
/// rules, or whose rules iptables writes, gets iptables.
pub fn nat_rules(path: Option<&Path>, met: Met, v6: bool) -> NatRules {
    let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
    let iptables = |m: Manager| NatRules::Iptables(m.iptables_tool(family));
    if let Met::Iptables(m) = met {
        return iptables(m);
    }
    let ruleset = path.and_then(|p| {
        let out = in_netns::output(Some(p), "nft", &["-j", "list", "ruleset"]).ok()?;
        serde_json::from_str::<Value>(&out).ok()
    });
    match ruleset.and_then(|r| nft_nat(&r, v6)) {
        Some(n) => NatRules::Nft(n),
        None => iptables(Manager::Iptables),
    }
}

/// Where a masquerade goes in a ruleset of nftables' own (`None` where
/// iptables writes it, or there are no rules): a postrouting nat chain of
/// the flow's family, else a new one in a table that already does NAT
/// (its DNAT rule's), else in a new `nat` table.
fn nft_nat(ruleset: &Value, v6: bool) -> Option<NftNat> {
    let objects = ruleset["nftables"].as_array()?;
    let written_by_iptables = objects
        .iter()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flatten()
        .any(|e| e.get("xt").is_some());
    let tables: Vec<(&str, &str)> = objects
        .iter()
        .filter_map(|o| o.get("table"))
        .filter_map(|t| Some((t["family"].as_str()?, t["name"].as_str()?)))
        .collect();
    if written_by_iptables || tables.is_empty() {
        return None;
    }
    let fits = |family: &str| family == "inet" || family == if v6 { "ip6" } else { "ip" };
    let chains = || objects.iter().filter_map(|o| o.get("chain"));
    let postrouting = chains()
        .filter(|c| c["type"] == "nat" && c["hook"] == "postrouting")
        .filter_map(|c| {
            Some((
                c["family"].as_str()?,
                c["table"].as_str()?,
                c["name"].as_str()?,
            ))
        })
        .find(|(f, _, _)| fits(f));
    if let Some((family, table, chain)) = postrouting {
        return Some(NftNat {
            family: family.into(),
            table: table.into(),
            chain: chain.into(),
            new_table: false,
            new_chain: false,
        });
    }
    let natting = chains()
        .filter(|c| c["type"] == "nat")
        .filter_map(|c| Some((c["family"].as_str()?, c["table"].as_str()?)))
        .find(|(f, _)| fits(f));
    let (family, table, new_table) = match natting {
        Some((f, t)) => (f.to_owned(), t.to_owned(), false),
        None => {
            let family = if v6 { "ip6" } else { "ip" };
            let exists = tables.contains(&(family, "nat"));
            (family.to_owned(), "nat".to_owned(), !exists)
        }
    };
    let taken = |name: &str| {
        chains().any(|c| {
            c["family"] == family.as_str() && c["table"] == table.as_str() && c["name"] == name
        })
    };
    let chain = ["postrouting", "postrouting_nat", "masquerade"]
        .into_iter()
        .find(|n| !taken(n))?;
    Some(NftNat {
        family,
        table,
        chain: chain.to_owned(),
        new_table,
        new_chain: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow<'a>(out_dev: Option<&'a str>) -> Masquerade<'a> {
        Masquerade {
            from: "192.0.2.64/27",
            out_dev,
            daddr: "203.0.113.200".parse().expect("ip"),
            proto: "udp".into(),
            dport: 5374,
        }
    }

    #[test]
    fn a_masquerade_goes_into_the_tables_own_nat_chain() {
        let ruleset: Value = serde_json::from_str(
            r#"{"nftables":[
            {"table":{"family":"inet","name":"filter"}},
            {"chain":{"family":"inet","table":"filter","name":"forward","type":"filter","hook":"forward"}},
            {"table":{"family":"ip","name":"edge"}},
            {"chain":{"family":"ip","table":"edge","name":"pre","type":"nat","hook":"prerouting"}},
            {"chain":{"family":"ip","table":"edge","name":"out","type":"nat","hook":"postrouting"}}
            ]}"#,
        )
        .expect("json");
        let n = nft_nat(&ruleset, false).expect("nft");
        assert_eq!(
            n.command(&flow(Some("wan"))),
            "nft insert rule ip edge out ip saddr 192.0.2.64/27 oifname \"wan\" ip daddr 203.0.113.200 udp dport 5374 masquerade"
        );
        // No postrouting chain for IPv6: one is made in a table of its own.
        let n = nft_nat(&ruleset, true).expect("nft");
        assert!(n.new_table && n.new_chain, "{n:?}");
    }

    #[test]
    fn a_table_without_a_postrouting_chain_gets_one() {
        let ruleset: Value = serde_json::from_str(
            r#"{"nftables":[
            {"table":{"family":"ip","name":"edge"}},
            {"chain":{"family":"ip","table":"edge","name":"postrouting","type":"filter","hook":"postrouting"}},
            {"chain":{"family":"ip","table":"edge","name":"pre","type":"nat","hook":"prerouting"}}
            ]}"#,
        )
        .expect("json");
        let n = nft_nat(&ruleset, false).expect("nft");
        assert_eq!(
            n.command(&flow(None)),
            "nft 'add chain ip edge postrouting_nat { type nat hook postrouting priority srcnat; }; add rule ip edge postrouting_nat ip saddr 192.0.2.64/27 ip daddr 203.0.113.200 udp dport 5374 masquerade'"
        );
    }

    #[test]
    fn rules_iptables_writes_or_none_get_iptables() {
        let xt: Value = serde_json::from_str(
            r#"{"nftables":[{"table":{"family":"ip","name":"nat"}},
            {"rule":{"family":"ip","table":"nat","chain":"PREROUTING","expr":[{"xt":{"type":"target","name":"DNAT"}}]}}]}"#,
        )
        .expect("json");
        assert_eq!(nft_nat(&xt, false), None);
        let empty: Value = serde_json::from_str(r#"{"nftables":[{"metainfo":{}}]}"#).expect("json");
        assert_eq!(nft_nat(&empty, false), None);
    }
}

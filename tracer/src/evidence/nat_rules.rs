//! The DNAT rules of a namespace's nat tables, as the stale-entry check
//! reads them. Only tables with a nat chain are listed (`nft -j list
//! table`), once per ruleset generation; nft's JSON is read as it streams
//! and only the few fields the check judges are kept, so neither the
//! listing nor the ruleset stays in memory.
use std::{
    collections::HashMap,
    fmt,
    io::{BufReader, Read},
    path::Path,
    process::Stdio,
};

use serde::{
    de::{IgnoredAny, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::Value;

/// A rule of a nat table that DNATs or redirects.
#[derive(Clone, Debug, PartialEq)]
pub struct NatRule {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    /// The rule's nft `match` expressions, in order.
    pub matches: Vec<NatMatch>,
}

/// One nft `match`: its operator, and its two sides as nft prints them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NatMatch {
    pub op: Option<String>,
    pub left: Value,
    pub right: Value,
}

#[derive(Deserialize)]
struct Chain {
    family: String,
    table: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Rule {
    family: String,
    table: String,
    chain: String,
    handle: u64,
    #[serde(default)]
    expr: Vec<Expr>,
}

/// An expression: a match, a NAT statement, an xt target, or anything
/// else (ignored).
#[derive(Deserialize)]
#[serde(untagged)]
enum Expr {
    Known(KnownExpr),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct KnownExpr {
    #[serde(rename = "match")]
    matched: Option<NatMatch>,
    #[serde(default, deserialize_with = "present")]
    dnat: bool,
    /// nft prints a bare `redirect` as `"redirect": null`.
    #[serde(default, deserialize_with = "present")]
    redirect: bool,
    xt: Option<Xt>,
}

/// A key that is there, whatever its value.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

#[derive(Deserialize)]
struct Xt {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
}

/// One object of the `nftables` array; only chains and rules are read.
#[derive(Deserialize)]
struct KnownObject {
    chain: Option<Chain>,
    rule: Option<Rule>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Object {
    Known(KnownObject),
    Other(IgnoredAny),
}

impl Rule {
    /// The rule as kept, when it DNATs or redirects.
    fn into_nat(self) -> Option<NatRule> {
        let mut nats = false;
        let mut matches = Vec::new();
        for e in self.expr {
            let Expr::Known(e) = e else { continue };
            let xt_nat = e.xt.is_some_and(|x| {
                x.kind.as_deref() == Some("target")
                    && matches!(x.name.as_deref(), Some("DNAT" | "REDIRECT"))
            });
            nats |= e.dnat || e.redirect || xt_nat;
            matches.extend(e.matched);
        }
        nats.then_some(NatRule {
            family: self.family,
            table: self.table,
            chain: self.chain,
            handle: self.handle,
            matches,
        })
    }
}

/// What the `nftables` array holds for the check: the NAT rules, and the
/// tables with a nat chain.
#[derive(Default)]
struct Found {
    rules: Vec<NatRule>,
    nat_tables: Vec<(String, String)>,
}

impl<'de> Deserialize<'de> for Found {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Objects;
        impl<'de> Visitor<'de> for Objects {
            type Value = Found;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the nftables array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
                let mut found = Found::default();
                while let Some(o) = seq.next_element::<Object>()? {
                    let Object::Known(o) = o else { continue };
                    if let Some(c) = o.chain.filter(|c| c.kind.as_deref() == Some("nat")) {
                        found.nat_tables.push((c.family, c.table));
                    }
                    found.rules.extend(o.rule.and_then(Rule::into_nat));
                }
                Ok(found)
            }
        }
        d.deserialize_seq(Objects)
    }
}

#[derive(Deserialize)]
struct Listing {
    nftables: Found,
}

/// The DNAT and redirect rules of the tables with a nat chain in nft's JSON
/// listing, read from `r` as it comes.
pub fn read(r: impl Read) -> Result<Vec<NatRule>, serde_json::Error> {
    let Found {
        mut rules,
        nat_tables,
    } = serde_json::from_reader::<_, Listing>(BufReader::new(r))?.nftables;
    rules.retain(|r| {
        nat_tables
            .iter()
            .any(|(f, t)| *f == r.family && *t == r.table)
    });
    Ok(rules)
}

/// Lists one table with `nft -j` in `netns` and reads its NAT rules.
fn list_table(netns: &Path, family: &str, table: &str) -> Option<Vec<NatRule>> {
    let mut child = in_netns::command(Some(netns), "nft")
        .args(["-j", "list", "table", family, table])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let rules = child.stdout.take().map(read);
    let status = child.wait().ok()?;
    match rules? {
        Ok(r) if status.success() => Some(r),
        Ok(_) => None,
        Err(e) => {
            log::debug!("nft -j list table {family} {table}: {e}");
            None
        }
    }
}

/// The NAT rules of each namespace, by inode, with the ruleset generation
/// they were listed at.
#[derive(Default)]
pub struct NatRules {
    by_netns: HashMap<u32, (u32, Vec<NatRule>)>,
}

impl NatRules {
    /// The NAT rules of namespace `netns` (at `path`), listed again only
    /// when its ruleset changed since the last listing.
    pub fn of(&mut self, netns: u32, path: &Path) -> Option<&[NatRule]> {
        let gen = crate::netfilter::ruleset_generation(Some(path)).ok()?;
        if self.by_netns.get(&netns).is_none_or(|(g, _)| *g != gen) {
            let (gen, tables) = crate::netfilter::nat_tables_at(Some(path)).ok()?;
            let mut rules = Vec::new();
            for (family, table) in tables {
                rules.extend(list_table(
                    path,
                    crate::netfilter::family_name(family),
                    &table,
                )?);
            }
            self.by_netns.insert(netns, (gen, rules));
        }
        self.by_netns.get(&netns).map(|(_, r)| r.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_nat_rules_of_nat_tables_and_skips_the_rest() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
            {"table":{"family":"ip","name":"t","handle":1}},
            {"chain":{"family":"ip","table":"t","name":"pre","type":"nat","hook":"prerouting"}},
            {"set":{"family":"ip","table":"t","name":"s","elem":["192.0.2.1"]}},
            {"rule":{"family":"ip","table":"t","chain":"pre","handle":4,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":8080}},{"counter":null},{"redirect":null}]}},
            {"rule":{"family":"ip","table":"t","chain":"pre","handle":5,"expr":[{"accept":null}]}},
            {"rule":{"family":"ip","table":"f","chain":"in","handle":6,"expr":[{"dnat":{"addr":"192.0.2.9"}}]}}
            ]}"#;
        let rules = read(json.as_bytes()).expect("the listing");
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!((rules[0].chain.as_str(), rules[0].handle), ("pre", 4));
        assert_eq!(rules[0].matches.len(), 1);
        assert_eq!(rules[0].matches[0].right, serde_json::json!(8080));
    }
}

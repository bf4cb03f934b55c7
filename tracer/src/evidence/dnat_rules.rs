//! The DNAT rules of a namespace's nat tables, as the stale-entry check
//! reads them. Only tables with a nat chain are listed (`nft -j list
//! table`), once per ruleset generation; nft's JSON is read as it streams
//! and only the few fields the check judges are kept, so neither the
//! listing nor the ruleset stays in memory.
use std::{
    collections::HashMap,
    fmt,
    io::{BufReader, Read},
    net::IpAddr,
    path::Path,
    process::Stdio,
    sync::Arc,
};

use serde::{
    de::{IgnoredAny, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::Value;

use crate::{model::Cidr, netfilter::NatTables};

/// A rule of a nat table that DNATs or redirects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DnatRule<'a> {
    pub family: &'a str,
    pub table: &'a str,
    pub chain: &'a str,
    pub handle: u64,
    /// The rule's nft `match` expressions on what the check judges, in order.
    pub matches: &'a [NatMatch],
}

/// The DNAT rules of a namespace, kept compact (a 50,000-rule table is
/// 50,000 of them): a small record per rule, all their matches in one
/// array, and each (family, table, chain) once.
#[derive(Debug, Default)]
pub struct DnatSet {
    origins: Vec<[Arc<str>; 3]>,
    rules: Vec<Kept>,
    matches: Vec<NatMatch>,
}

#[derive(Debug)]
struct Kept {
    handle: u64,
    first: u32,
    origin: u16,
    len: u16,
}

impl DnatSet {
    /// Adds a rule of `origin` (family, table, chain).
    fn push(
        &mut self,
        origin: [&str; 3],
        handle: u64,
        matches: impl IntoIterator<Item = NatMatch>,
    ) {
        let at = self
            .origins
            .iter()
            .position(|o| o.iter().zip(origin).all(|(have, want)| **have == *want))
            .unwrap_or_else(|| {
                self.origins.push(origin.map(Arc::from));
                self.origins.len() - 1
            });
        let first = self.matches.len();
        self.matches.extend(matches);
        self.rules.push(Kept {
            handle,
            first: u32::try_from(first).unwrap_or(u32::MAX),
            origin: u16::try_from(at).unwrap_or(u16::MAX),
            len: u16::try_from(self.matches.len() - first).unwrap_or(u16::MAX),
        });
    }

    /// The rules, in the order they were listed.
    pub fn iter(&self) -> impl Iterator<Item = DnatRule<'_>> {
        self.rules.iter().filter_map(|k| {
            let [family, table, chain] = self.origins.get(usize::from(k.origin))?;
            let first = k.first as usize;
            Some(DnatRule {
                family,
                table,
                chain,
                handle: k.handle,
                matches: self.matches.get(first..first + usize::from(k.len))?,
            })
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules `keep` selects, as a set of their own.
    fn filtered(&self, mut keep: impl FnMut(&DnatRule) -> bool) -> DnatSet {
        let mut out = DnatSet::default();
        for r in self.iter().filter(|r| keep(r)) {
            out.push(
                [r.family, r.table, r.chain],
                r.handle,
                r.matches.iter().cloned(),
            );
        }
        out
    }

    /// Adds the rules of `other` after these.
    fn append(&mut self, other: &DnatSet) {
        for r in other.iter() {
            self.push(
                [r.family, r.table, r.chain],
                r.handle,
                r.matches.iter().cloned(),
            );
        }
    }

    fn shrink_to_fit(&mut self) {
        self.rules.shrink_to_fit();
        self.matches.shrink_to_fit();
    }
}

/// One nft `match` the check judges: on a field it reads, or on a
/// transport header (which a packet of another protocol never matches).
#[derive(Clone, Debug, PartialEq)]
pub struct NatMatch {
    /// `==` or `in` (else `!=`).
    pub eq: bool,
    /// The transport protocol of the header read (tcp, udp, sctp).
    pub proto: Option<u8>,
    /// None: a field the check does not judge.
    pub field: Option<Field>,
    pub right: Right,
}

/// The packet field a match reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Dport,
    Daddr,
    Saddr,
    L4proto,
    Iifname,
}

/// A match's right-hand side, as nft prints it.
#[derive(Clone, Debug, PartialEq)]
pub enum Right {
    Addr(IpAddr),
    Text(Box<str>),
    Num(u64),
    Prefix(Cidr),
    Range(u64, u64),
    Set(Box<[Right]>),
    /// Anything else (not judged).
    Other,
}

impl Right {
    fn of(v: &Value) -> Right {
        if let Some(set) = v.get("set").and_then(Value::as_array) {
            return Right::Set(set.iter().map(Right::of).collect());
        }
        if let Some(s) = v.as_str() {
            return s
                .parse()
                .map_or_else(|_| Right::Text(s.into()), Right::Addr);
        }
        if let Some(n) = v.as_u64() {
            return Right::Num(n);
        }
        if let Some(p) = v.get("prefix") {
            let cidr = p["addr"]
                .as_str()
                .zip(p["len"].as_u64())
                .and_then(|(a, l)| format!("{a}/{l}").parse().ok());
            return cidr.map_or(Right::Other, Right::Prefix);
        }
        if let Some([lo, hi]) = v.get("range").and_then(Value::as_array).map(Vec::as_slice) {
            if let (Some(lo), Some(hi)) = (lo.as_u64(), hi.as_u64()) {
                return Right::Range(lo, hi);
            }
        }
        Right::Other
    }
}

/// A `match` as nft prints it; only the fields the check judges are read.
#[derive(Deserialize)]
struct Match {
    op: Option<String>,
    left: Left,
    right: Value,
}

#[derive(Deserialize)]
struct Left {
    payload: Option<Payload>,
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Payload {
    protocol: Option<String>,
    field: Option<String>,
}

#[derive(Deserialize)]
struct Meta {
    key: Option<String>,
}

impl Match {
    /// The match as kept; none when the check judges nothing of it (such
    /// a match is taken to hold).
    fn judged(self) -> Option<NatMatch> {
        let eq = match self.op.as_deref().unwrap_or("==") {
            "==" | "in" => true,
            "!=" => false,
            _ => return None,
        };
        let proto = self
            .left
            .payload
            .as_ref()
            .and_then(|p| match p.protocol.as_deref()? {
                "tcp" => Some(6),
                "udp" => Some(17),
                "sctp" => Some(132),
                _ => None,
            });
        let field = match (self.left.payload, self.left.meta) {
            (Some(p), _) => match p.field.as_deref() {
                Some("dport") => Some(Field::Dport),
                Some("daddr") => Some(Field::Daddr),
                Some("saddr") => Some(Field::Saddr),
                _ => None,
            },
            (None, Some(m)) => match m.key.as_deref() {
                Some("l4proto") => Some(Field::L4proto),
                Some("iifname") => Some(Field::Iifname),
                _ => None,
            },
            (None, None) => None,
        };
        if field.is_none() && proto.is_none() {
            return None;
        }
        let right = field.map_or(Right::Other, |_| Right::of(&self.right));
        Some(NatMatch {
            eq,
            proto,
            field,
            right,
        })
    }
}

impl NatMatch {
    /// One `match` object as `nft -j` prints it, as kept; none when the
    /// check judges nothing of it.
    pub fn from_json(m: &Value) -> Option<NatMatch> {
        Match::deserialize(m).ok()?.judged()
    }
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
    matched: Option<Match>,
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
    /// Adds the rule to `set` when it DNATs or redirects.
    fn add_if_nat(self, set: &mut DnatSet) {
        let mut nats = false;
        let mut matches = Vec::new();
        for e in self.expr {
            let Expr::Known(e) = e else { continue };
            let xt_nat = e.xt.is_some_and(|x| {
                x.kind.as_deref() == Some("target")
                    && matches!(x.name.as_deref(), Some("DNAT" | "REDIRECT"))
            });
            nats |= e.dnat || e.redirect || xt_nat;
            matches.extend(e.matched.and_then(Match::judged));
        }
        if nats {
            set.push(
                [&self.family, &self.table, &self.chain],
                self.handle,
                matches,
            );
        }
    }
}

/// What the `nftables` array holds for the check: the NAT rules, and the
/// tables with a nat chain.
#[derive(Default)]
struct Found {
    rules: DnatSet,
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
                    if let Some(r) = o.rule {
                        r.add_if_nat(&mut found.rules);
                    }
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
pub fn read(r: impl Read) -> Result<DnatSet, serde_json::Error> {
    let Found { rules, nat_tables } =
        serde_json::from_reader::<_, Listing>(BufReader::new(r))?.nftables;
    let in_nat_table = |r: &DnatRule| {
        nat_tables
            .iter()
            .any(|(f, t)| *f == r.family && *t == r.table)
    };
    if rules.iter().all(|r| in_nat_table(&r)) {
        return Ok(rules);
    }
    Ok(rules.filtered(in_nat_table))
}

/// Lists one table with `nft -j` in `netns` and reads its NAT rules.
fn list_table(netns: &Path, family: &str, table: &str) -> Option<DnatSet> {
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

/// The NAT rules of each namespace, by inode, with the nat tables' state
/// they were listed at.
#[derive(Default)]
pub struct DnatRules {
    by_netns: HashMap<u32, (NatTables, DnatSet)>,
}

impl DnatRules {
    /// The NAT rules of namespace `netns` (at `path`), listed again only
    /// when its nat tables' rules changed since the last listing: while
    /// the ruleset generation stays the same, nothing is read but it; when
    /// another table changed, the digest says so.
    pub fn of(&mut self, netns: u32, path: &Path) -> Option<&DnatSet> {
        let generation = crate::netfilter::ruleset_generation(Some(path)).ok()?;
        let known = self.by_netns.get(&netns).map(|(t, _)| t);
        if known.is_some_and(|t| t.generation == generation) {
            return self.by_netns.get(&netns).map(|(_, r)| r);
        }
        let now = crate::netfilter::nat_tables_at(Some(path)).ok()?;
        let unchanged = known.is_some_and(|t| t.tables == now.tables && t.digest == now.digest);
        if unchanged {
            if let Some((t, _)) = self.by_netns.get_mut(&netns) {
                *t = now;
            }
        } else {
            let mut rules = DnatSet::default();
            for (family, table) in &now.tables {
                let family = crate::netfilter::family_name(*family);
                let listed = list_table(path, family, table)?;
                if rules.is_empty() {
                    rules = listed;
                } else {
                    rules.append(&listed);
                }
            }
            rules.shrink_to_fit();
            self.by_netns.insert(netns, (now, rules));
        }
        self.by_netns.get(&netns).map(|(_, r)| r)
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
        let rule = rules.iter().next().expect("a rule");
        assert_eq!((rule.chain, rule.handle), ("pre", 4));
        assert_eq!(
            rule.matches,
            [NatMatch {
                eq: true,
                proto: Some(6),
                field: Some(Field::Dport),
                right: Right::Num(8080)
            }]
        );
    }
}

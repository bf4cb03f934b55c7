//! Bans kept in an nftables set: the rule stays (it bans the others), and
//! only the client's own element may go.
use std::net::IpAddr;

use serde_json::Value;

use super::fact::{Fact, Values};
use crate::{events::RuleHit, model::Cidr, names::View};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetBan {
    pub set: String,
    /// The element that holds the client, as nft prints it.
    pub element: String,
    /// The element is the client's address alone: removing it frees no one else.
    pub exact: bool,
}

/// How a rule looks the client up: its address alone in a set (`ip saddr
/// @banned`), its address and the destination port in a concatenated set
/// (`ip saddr . tcp dport @banned`), or its address as a verdict map's key
/// (`ip saddr vmap @bans`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup<'a> {
    Set(&'a str),
    WithPort(&'a str),
    Map(&'a str),
}

impl<'a> Lookup<'a> {
    fn name(self) -> &'a str {
        match self {
            Self::Set(n) | Self::WithPort(n) | Self::Map(n) => n,
        }
    }
}

/// The set or map a rule looks the source address up in.
fn source_set(text: &str) -> Option<Lookup<'_>> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "saddr")?;
    match *words.get(at + 1..)? {
        [w, ..] if w.starts_with('@') => Some(Lookup::Set(&w[1..])),
        ["vmap", w, ..] => w.strip_prefix('@').map(Lookup::Map),
        [".", _, "dport", w, ..] => w.strip_prefix('@').map(Lookup::WithPort),
        _ => None,
    }
}

pub(super) fn in_prefix(c: &Cidr, addr: IpAddr) -> bool {
    let bits = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    };
    let len = u32::from(c.prefix);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    c.addr.is_ipv4() == addr.is_ipv4() && bits(c.addr) & mask == bits(addr) & mask
}

/// One key part that holds `addr`: (as nft prints it, whether it is `addr` alone).
fn addr_part(e: &Value, addr: IpAddr) -> Option<(String, bool)> {
    if let Some(s) = e.as_str() {
        return (s.parse::<IpAddr>().ok()? == addr).then(|| (s.to_owned(), true));
    }
    if let Some(p) = e.get("prefix") {
        let cidr: Cidr = format!("{}/{}", p["addr"].as_str()?, p["len"].as_u64()?)
            .parse()
            .ok()?;
        return in_prefix(&cidr, addr).then(|| (cidr.to_string(), false));
    }
    let r = e.get("range")?.as_array()?;
    let (lo, hi): (IpAddr, IpAddr) = (
        r.first()?.as_str()?.parse().ok()?,
        r.get(1)?.as_str()?.parse().ok()?,
    );
    (lo <= addr && addr <= hi).then(|| (format!("{lo}-{hi}"), false))
}

/// One key part that holds `port`: (as nft prints it, whether it is `port` alone).
fn port_part(e: &Value, port: u16) -> Option<(String, bool)> {
    if let Some(p) = e.as_u64() {
        return (p == u64::from(port)).then(|| (p.to_string(), true));
    }
    let r = e.get("range")?.as_array()?;
    let (lo, hi) = (r.first()?.as_u64()?, r.get(1)?.as_u64()?);
    (lo <= u64::from(port) && u64::from(port) <= hi).then(|| (format!("{lo}-{hi}"), false))
}

/// The element of an `nft -j list set` (or `list map`) answer that holds
/// `addr` (and `port`, for a set of address and port): as nft prints its
/// key, and whether it holds this client (and port) alone.
fn element_holding(json: &Value, addr: IpAddr, port: Option<u16>) -> Option<(String, bool)> {
    let sets = json["nftables"].as_array()?;
    let elems = sets
        .iter()
        .find_map(|o| o["set"]["elem"].as_array().or(o["map"]["elem"].as_array()))?;
    elems.iter().find_map(|e| {
        // A map's element is [key, value]; a set's may carry a timeout.
        let e = e.as_array().and_then(|kv| kv.first()).unwrap_or(e);
        let e = e.get("elem").map(|x| &x["val"]).unwrap_or(e);
        match (e.get("concat").and_then(Value::as_array), port) {
            (Some(parts), Some(port)) => {
                let (a, a_exact) = addr_part(parts.first()?, addr)?;
                let (p, p_exact) = port_part(parts.get(1)?, port)?;
                Some((format!("{a} . {p}"), a_exact && p_exact))
            }
            (None, None) => addr_part(e, addr),
            _ => None,
        }
    })
}

/// The set ban that decided, read from the rule's own namespace.
/// `dport`: the packet's destination port where the rule saw it.
pub fn set_ban(
    r: &RuleHit,
    client: IpAddr,
    dport: Option<u16>,
    view: &mut View,
    v: &mut Values,
) -> Option<SetBan> {
    let lookup = source_set(r.text.as_deref()?)?;
    let set = lookup.name();
    let kind = if matches!(lookup, Lookup::Map(_)) {
        "map"
    } else {
        "set"
    };
    let port = match lookup {
        Lookup::WithPort(_) => Some(dport?),
        _ => None,
    };
    let path = view.netns.path(r.netns);
    let out = in_netns::output(
        path.as_deref(),
        "nft",
        &["-j", "list", kind, r.family.as_str(), &r.table, set],
    )
    .ok()?;
    let json: Value = serde_json::from_str(&out).ok()?;
    let (element, exact) = element_holding(&json, client, port)?;
    v.set(Fact::SetName, set);
    v.set(Fact::SetElement, format!("{{ {element} }}"));
    Some(SetBan {
        set: set.to_owned(),
        element,
        exact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_and_the_element_that_holds_the_client() {
        assert_eq!(
            source_set("ip saddr @banned counter drop"),
            Some(Lookup::Set("banned"))
        );
        assert_eq!(source_set("ip daddr @x drop"), None);
        assert_eq!(
            source_set("ip saddr . tcp dport @b drop"),
            Some(Lookup::WithPort("b"))
        );
        assert_eq!(source_set("ip saddr vmap @vm"), Some(Lookup::Map("vm")));
        let json: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},{"set":{"family":"inet","name":"banned","table":"f","type":"ipv4_addr","elem":["192.0.2.7",{"prefix":{"addr":"198.51.100.0","len":24}},{"range":["203.0.113.5","203.0.113.9"]},{"elem":{"val":"192.0.2.8","timeout":60}}]}}]}"#,
        )
        .expect("json");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            element_holding(&json, ip("192.0.2.7"), None),
            Some(("192.0.2.7".into(), true))
        );
        assert_eq!(
            element_holding(&json, ip("192.0.2.8"), None),
            Some(("192.0.2.8".into(), true))
        );
        assert_eq!(
            element_holding(&json, ip("198.51.100.3"), None),
            Some(("198.51.100.0/24".into(), false))
        );
        assert_eq!(
            element_holding(&json, ip("203.0.113.6"), None),
            Some(("203.0.113.5-203.0.113.9".into(), false))
        );
        assert_eq!(element_holding(&json, ip("192.0.2.9"), None), None);
        let concat: Value = serde_json::from_str(
            r#"{"nftables":[{"set":{"elem":[{"concat":["192.0.2.1",8739]},{"concat":[{"prefix":{"addr":"192.0.2.0","len":28}},{"range":[8000,9000]}]}]}}]}"#,
        )
        .expect("json");
        assert_eq!(
            element_holding(&concat, ip("192.0.2.1"), Some(8739)),
            Some(("192.0.2.1 . 8739".into(), true))
        );
        assert_eq!(
            element_holding(&concat, ip("192.0.2.2"), Some(8080)),
            Some(("192.0.2.0/28 . 8000-9000".into(), false))
        );
        assert_eq!(element_holding(&concat, ip("192.0.2.1"), None), None);
        let map: Value = serde_json::from_str(
            r#"{"nftables":[{"map":{"map":"verdict","elem":[["192.0.2.1",{"drop":null}]]}}]}"#,
        )
        .expect("json");
        assert_eq!(
            element_holding(&map, ip("192.0.2.1"), None),
            Some(("192.0.2.1".into(), true))
        );
    }
}

//! Bans kept in an nftables set: the rule stays (it bans the others), and
//! only the client's own element may go.
use std::net::IpAddr;

use serde_json::Value;

use super::fact::{Fact, Values};
use crate::{events::RuleHit, model::Cidr, names::View, netfilter::ns};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetBan {
    pub set: String,
    /// The element that holds the client, as nft prints it.
    pub element: String,
    /// The element is the client's address alone: removing it frees no one else.
    pub exact: bool,
}

/// The set a rule looks the source address up in (`ip saddr @banned`).
fn source_set(text: &str) -> Option<&str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "saddr" && w[1].starts_with('@'))
        .map(|w| &w[1][1..])
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

/// The element of an `nft -j list set` answer that holds `addr`.
fn element_holding(json: &Value, addr: IpAddr) -> Option<(String, bool)> {
    let sets = json["nftables"].as_array()?;
    let elems = sets.iter().find_map(|o| o["set"]["elem"].as_array())?;
    elems.iter().find_map(|e| {
        let e = e.get("elem").map(|x| &x["val"]).unwrap_or(e);
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
    })
}

/// The set ban that decided, read from the rule's own namespace.
pub fn set_ban(r: &RuleHit, client: IpAddr, view: &mut View, v: &mut Values) -> Option<SetBan> {
    let set = source_set(r.text.as_deref()?)?;
    let path = view.netns.path(r.netns);
    let out = ns::run(
        path.as_deref(),
        "nft",
        &["-j", "list", "set", r.family.as_str(), &r.table, set],
    )
    .ok()?;
    let json: Value = serde_json::from_str(&out).ok()?;
    let (element, exact) = element_holding(&json, client)?;
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
        assert_eq!(source_set("ip saddr @banned counter drop"), Some("banned"));
        assert_eq!(source_set("ip daddr @x drop"), None);
        let json: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},{"set":{"family":"inet","name":"banned","table":"f","type":"ipv4_addr","elem":["192.0.2.7",{"prefix":{"addr":"198.51.100.0","len":24}},{"range":["203.0.113.5","203.0.113.9"]},{"elem":{"val":"192.0.2.8","timeout":60}}]}}]}"#,
        )
        .expect("json");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            element_holding(&json, ip("192.0.2.7")),
            Some(("192.0.2.7".into(), true))
        );
        assert_eq!(
            element_holding(&json, ip("192.0.2.8")),
            Some(("192.0.2.8".into(), true))
        );
        assert_eq!(
            element_holding(&json, ip("198.51.100.3")),
            Some(("198.51.100.0/24".into(), false))
        );
        assert_eq!(
            element_holding(&json, ip("203.0.113.6")),
            Some(("203.0.113.5-203.0.113.9".into(), false))
        );
        assert_eq!(element_holding(&json, ip("192.0.2.9")), None);
    }
}

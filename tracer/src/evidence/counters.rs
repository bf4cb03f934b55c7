//! The kernel's own per-namespace counters: `/proc/net/snmp` and
//! `/proc/net/netstat` (what `nstat` reads) and conntrack's statistics
//! (`/proc/net/stat/nf_conntrack`, what `conntrack -S` sums).
use std::{
    collections::{BTreeMap, HashSet},
    sync::{Mutex, PoisonError},
};

/// Counter name (`TcpExt.ListenOverflows`, `conntrack.drop`, …) → value.
/// Names are kept once for all namespaces (see [`name`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(BTreeMap<&'static str, u64>);

/// The counter `group.n`, its name stored once per run: the kernel has a
/// few hundred counters, and every namespace has the same.
fn name(group: &str, n: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut key = String::with_capacity(group.len() + 1 + n.len());
    key.push_str(group);
    key.push('.');
    key.push_str(n);
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(known) = names.get(key.as_str()) {
        return known;
    }
    let kept: &'static str = Box::leak(key.into_boxed_str());
    names.insert(kept);
    kept
}

impl Counters {
    /// Parses the `Name: a b c` / `Name: 1 2 3` line pairs of
    /// `/proc/net/snmp` and `/proc/net/netstat` into `self`.
    pub fn add_snmp(&mut self, text: &str) {
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            let (Some((group, names)), Some((vgroup, values))) =
                (names.split_once(':'), values.split_once(':'))
            else {
                continue;
            };
            if group != vgroup {
                continue;
            }
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(v) = v.parse::<i64>() {
                    self.0.insert(name(group, n), v.max(0) as u64);
                }
            }
        }
    }

    /// Parses `/proc/net/stat/nf_conntrack` (a header, then one row of hex
    /// numbers per CPU), summing the CPUs; `entries` is a gauge, not summed.
    pub fn add_conntrack(&mut self, text: &str) {
        let mut lines = text.lines();
        let Some(header) = lines.next() else { return };
        let names: Vec<&str> = header.split_whitespace().collect();
        for row in lines {
            for (n, v) in names.iter().zip(row.split_whitespace()) {
                let Ok(v) = u64::from_str_radix(v, 16) else {
                    continue;
                };
                let slot = self.0.entry(name("conntrack", n)).or_default();
                if *n == "entries" {
                    *slot = v;
                } else {
                    *slot += v;
                }
            }
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// How much each counter rose since `before`; only those that rose.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .filter(|(k, _)| **k != "conntrack.entries")
                .filter_map(|(k, &v)| {
                    let d = v.saturating_sub(before.get(k));
                    (d > 0).then_some((*k, d))
                })
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_pairs_and_conntrack_rows() {
        let mut c = Counters::default();
        c.add_snmp(
            "Ip: Forwarding InNoRoutes\nIp: 1 3\nTcpExt: ListenOverflows ListenDrops\nTcpExt: 4 5\n",
        );
        c.add_conntrack(
            "entries  clashres drop early_drop\n00000002  00000000 0000000a 00000001\n00000002  00000000 00000001 00000000\n",
        );
        assert_eq!(c.get("Ip.InNoRoutes"), 3);
        assert_eq!(c.get("TcpExt.ListenDrops"), 5);
        assert_eq!(c.get("conntrack.drop"), 11);
        assert_eq!(c.get("conntrack.entries"), 2);
        let mut later = c.clone();
        later.add_snmp("TcpExt: ListenOverflows ListenDrops\nTcpExt: 6 5\n");
        let d = later.since(&c);
        assert_eq!(
            d.iter().collect::<Vec<_>>(),
            vec![("TcpExt.ListenOverflows", 2)]
        );
    }
}

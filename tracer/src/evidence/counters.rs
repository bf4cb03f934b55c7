//! The kernel's own per-namespace counters: `/proc/net/snmp` and
//! `/proc/net/netstat` (what `nstat` reads) and conntrack's statistics
//! (`/proc/net/stat/nf_conntrack`, what `conntrack -S` sums).

/// The counters a diagnosis reads, as `group.name`: the only ones kept,
/// so that a baseline of every namespace on a big host stays small and
/// quick to read.
pub const KEPT: [&str; 12] = [
    "conntrack.drop",
    "conntrack.insert_failed",
    "conntrack.early_drop",
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "Udp.NoPorts",
    "Udp.RcvbufErrors",
    "Snmp6.Udp6RcvbufErrors",
    "Ip.InNoRoutes",
    "Ip.OutNoRoutes",
    "Snmp6.Ip6InNoRoutes",
    "Snmp6.Ip6OutNoRoutes",
];

/// The values of the [`KEPT`] counters, in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters([u64; KEPT.len()]);

/// Where counter `group.n` is in [`KEPT`].
fn slot(group: &str, n: &str) -> Option<usize> {
    KEPT.iter().position(|k| {
        k.strip_prefix(group)
            .and_then(|rest| rest.strip_prefix('.'))
            == Some(n)
    })
}

/// Whether any [`KEPT`] counter is in `group`.
fn kept_group(group: &str) -> bool {
    KEPT.iter()
        .any(|k| k.split_once('.').is_some_and(|(g, _)| g == group))
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
            if group != vgroup || !kept_group(group) {
                continue;
            }
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if let (Some(i), Ok(v)) = (slot(group, n), v.parse::<i64>()) {
                    self.0[i] = v.max(0) as u64;
                }
            }
        }
    }

    /// Parses `/proc/net/stat/nf_conntrack` (a header, then one row of hex
    /// numbers per CPU), summing the CPUs.
    pub fn add_conntrack(&mut self, text: &str) {
        let mut lines = text.lines();
        let Some(header) = lines.next() else { return };
        let slots: Vec<Option<usize>> = header
            .split_whitespace()
            .map(|n| slot("conntrack", n))
            .collect();
        for row in lines {
            for (i, v) in slots.iter().zip(row.split_whitespace()) {
                if let (Some(i), Ok(v)) = (i, u64::from_str_radix(v, 16)) {
                    self.0[*i] += v;
                }
            }
        }
    }

    /// The value of counter `name`, one of [`KEPT`].
    pub fn get(&self, name: &str) -> u64 {
        let i = KEPT.iter().position(|k| *k == name);
        debug_assert!(i.is_some(), "counter {name} is not kept");
        i.map_or(0, |i| self.0[i])
    }

    /// How much each counter rose since `before`.
    pub fn since(&self, before: &Counters) -> Counters {
        let mut d = Counters::default();
        for (d, (now, then)) in d.0.iter_mut().zip(self.0.iter().zip(before.0)) {
            *d = now.saturating_sub(then);
        }
        d
    }

    /// The counters that are not zero.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        KEPT.iter()
            .zip(self.0)
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| (*k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
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
        assert_eq!(c.get("conntrack.early_drop"), 1);
        let mut later = c.clone();
        later.add_snmp("TcpExt: ListenOverflows ListenDrops\nTcpExt: 6 5\n");
        let d = later.since(&c);
        assert_eq!(
            d.iter().collect::<Vec<_>>(),
            vec![("TcpExt.ListenOverflows", 2)]
        );
    }

    #[test]
    fn only_the_kept_counters_are_read() {
        let mut c = Counters::default();
        c.add_snmp("Ip: Forwarding DefaultTTL OutNoRoutes\nIp: 1 64 7\nIcmp: InMsgs\nIcmp: 9\n");
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![("Ip.OutNoRoutes", 7)]);
        for name in KEPT {
            let (group, n) = name.split_once('.').unwrap_or_default();
            assert_eq!(slot(group, n).map(|i| KEPT[i]), Some(name));
        }
    }
}

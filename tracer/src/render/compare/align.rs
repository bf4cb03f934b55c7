//! Aligning two packet paths and finding where they part.
use crate::{
    events::{Hop, HopKind},
    model::{Family, Verdict},
};

/// What makes two hops "the same step": where, what, and which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub netns: u32,
    pub ifname: String,
    pub kind: HopKind,
    pub hook: Option<&'static str>,
    /// The family of an `nf_hook` step.
    pub family: Option<Family>,
    pub rule: Option<(String, String, Option<u32>, Verdict)>,
}

impl Step {
    pub fn of(h: &Hop) -> Self {
        Self {
            netns: h.netns,
            // A rule's or hook's step is the rule or hook, whichever device
            // the packet came through: br_netfilter runs a bridge's hooks on
            // the ingress port, so two packets into one bridge from two
            // ports would otherwise part at every hook there, before they
            // meet at the port they leave by.
            ifname: if matches!(h.kind, HopKind::NfRule | HopKind::NfHook) {
                String::new()
            } else {
                h.ifname.to_string()
            },
            kind: h.kind,
            hook: h.hook.map(|k| k.as_str()),
            family: h.hook_family(),
            rule: h
                .rule
                .as_ref()
                .map(|r| (r.table.clone(), r.chain.clone(), r.index, r.verdict.clone())),
        }
    }
}

/// One row of the side-by-side view: indices into A's and B's hops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    Both(usize, usize),
    OnlyA(usize),
    OnlyB(usize),
}

/// Longest-common-subsequence alignment of two step sequences.
pub fn align(a: &[Step], b: &[Step]) -> Vec<Row> {
    let (n, m) = (a.len(), b.len());
    let mut len = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            len[i][j] = if a[i] == b[j] {
                len[i + 1][j + 1] + 1
            } else {
                len[i + 1][j].max(len[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut rows) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            rows.push(Row::Both(i, j));
            i += 1;
            j += 1;
        } else if j >= m || (i < n && len[i + 1][j] >= len[i][j + 1]) {
            rows.push(Row::OnlyA(i));
            i += 1;
        } else {
            rows.push(Row::OnlyB(j));
            j += 1;
        }
    }
    rows
}

/// Where two paths part after they have met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The last step both took, if they ever met.
    pub last_common: Option<(usize, usize)>,
    /// The first step each took on its own after that.
    pub a: Option<usize>,
    pub b: Option<usize>,
}

/// The first row after the paths met where they differ; `None` when they
/// never differ after meeting.
pub fn divergence(rows: &[Row]) -> Option<Divergence> {
    let start = rows.iter().position(|r| matches!(r, Row::Both(..)))?;
    let mut last_common = None;
    for (k, row) in rows.iter().enumerate().skip(start) {
        match *row {
            Row::Both(i, j) => last_common = Some((i, j)),
            Row::OnlyA(_) | Row::OnlyB(_) => {
                let apart: Vec<Row> = rows[k..]
                    .iter()
                    .copied()
                    .take_while(|r| !matches!(r, Row::Both(..)))
                    .collect();
                let a = apart.iter().find_map(|r| {
                    if let Row::OnlyA(i) = r {
                        Some(*i)
                    } else {
                        None
                    }
                });
                let b = apart.iter().find_map(|r| {
                    if let Row::OnlyB(j) = r {
                        Some(*j)
                    } else {
                        None
                    }
                });
                return Some(Divergence { last_common, a, b });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hook;

    fn st(netns: u32, name: &str) -> Step {
        Step {
            netns,
            ifname: name.into(),
            kind: HopKind::Tx,
            hook: None,
            family: None,
            rule: None,
        }
    }

    fn hook(netns: u32, port: &str, family: Family, hook: Hook) -> Step {
        let mut h = crate::events::Hop {
            skb: 1,
            track_id: 1,
            hook: Some(hook),
            verdict: Some(Verdict::Accept),
            retval: 1,
            ..crate::events::Hop::for_test(0, HopKind::NfHook, netns, 3, port)
        };
        h.nf_family = match family {
            Family::Bridge => libc::NFPROTO_BRIDGE as u8,
            _ => libc::NFPROTO_IPV4 as u8,
        };
        Step::of(&h)
    }

    #[test]
    fn two_ports_into_one_bridge_with_br_netfilter_meet_at_its_hooks() {
        use Family::{Bridge, Ipv4 as Ip};
        use Hook::{Forward, Prerouting};
        // br_netfilter runs the bridge's hooks, and the IPv4 hooks inside
        // them, on the port each packet came in by.
        let path = |port: &str| {
            vec![
                st(1, port),
                hook(9, port, Bridge, Prerouting),
                hook(9, port, Ip, Prerouting),
                hook(9, port, Bridge, Forward),
                hook(9, "br0", Ip, Forward),
                st(9, "veth-dock"),
                st(5, "eth0"),
            ]
        };
        let (mut a, b) = (path("veth-client"), path("veth-other"));
        assert_eq!(divergence(&align(&a, &b)), None);
        a.push(st(5, "drop"));
        let d = divergence(&align(&a, &b)).expect("A goes on");
        assert_eq!((d.last_common, d.a, d.b), (Some((6, 6)), Some(7), None));
        assert_ne!(
            hook(9, "p", Bridge, Forward),
            hook(9, "p", Ip, Forward),
            "a hook's family is part of its step"
        );
    }

    #[test]
    fn paths_that_meet_then_part() {
        let a = [st(1, "client"), st(9, "lan"), st(5, "eth0"), st(5, "drop")];
        let b = [
            st(2, "other"),
            st(9, "lan"),
            st(5, "eth0"),
            st(5, "docker0"),
            st(6, "ctr"),
        ];
        let rows = align(&a, &b);
        let d = divergence(&rows).expect("they part");
        assert_eq!(d.last_common, Some((2, 2)));
        assert_eq!((d.a, d.b), (Some(3), Some(3)));
    }

    #[test]
    fn identical_and_disjoint_paths() {
        let a = [st(1, "x"), st(2, "y")];
        assert_eq!(divergence(&align(&a, &a)), None);
        let b = [st(3, "z")];
        assert_eq!(
            divergence(&align(&a, &b)),
            None,
            "never met, so never parted"
        );
        let longer = [st(1, "x"), st(2, "y"), st(3, "w")];
        let d = divergence(&align(&a, &longer)).expect("B goes on");
        assert_eq!((d.last_common, d.a, d.b), (Some((1, 1)), None, Some(2)));
    }
}

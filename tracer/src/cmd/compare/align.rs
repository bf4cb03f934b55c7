//! Aligning two packet paths and finding where they part.
use crate::{
    events::{Hop, HopKind},
    model::Verdict,
};

/// What makes two hops "the same step": where, what, and which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub netns: u32,
    pub ifname: String,
    pub kind: HopKind,
    pub hook: Option<&'static str>,
    pub rule: Option<(String, String, Option<u32>, Verdict)>,
}

impl Step {
    pub fn of(h: &Hop) -> Self {
        Self {
            netns: h.netns,
            // A rule's step is the rule, wherever the packet entered from.
            ifname: if h.kind == HopKind::NfRule {
                String::new()
            } else {
                h.ifname.clone()
            },
            kind: h.kind,
            hook: h.hook.map(|k| k.as_str()),
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

    fn st(netns: u32, name: &str) -> Step {
        Step {
            netns,
            ifname: name.into(),
            kind: HopKind::Tx,
            hook: None,
            rule: None,
        }
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

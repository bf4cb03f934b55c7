//! The drop counters in Prometheus's text exposition format (0.0.4), as
//! `pathtrace drops --metrics` serves them.
use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write,
};

/// The media type of [`Exposition::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The labels of one `pathtrace_drops_total` series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropLabels {
    /// The kernel's drop reason, e.g. `NETFILTER_DROP`.
    pub reason: String,
    /// The function that freed the packet, without offset.
    pub location: String,
    /// The device, or `-` when the packet had none.
    pub device: String,
    /// The namespace's name, else its inode number.
    pub netns: String,
}

impl DropLabels {
    /// The series that sums every label set past the limit.
    pub fn other() -> Self {
        let o = || OTHER.to_owned();
        Self {
            reason: o(),
            location: o(),
            device: o(),
            netns: o(),
        }
    }
}

const OTHER: &str = "other";

/// Keeps the number of `pathtrace_drops_total` series bounded.
///
/// The first `limit` label sets seen (the biggest first, within one scrape)
/// get a series of their own and keep it; every later one is added to the
/// [`DropLabels::other`] series. Admission never changes afterwards, so every
/// series only grows, as a counter must.
#[derive(Debug)]
pub struct DropSeries {
    limit: usize,
    admitted: HashSet<DropLabels>,
    overflowed: bool,
}

impl DropSeries {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            admitted: HashSet::new(),
            overflowed: false,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Sums `rows` per label set and folds the ones past the limit into
    /// `other`: the series sorted by labels, `other` last once it exists.
    pub fn aggregate(
        &mut self,
        rows: impl IntoIterator<Item = (DropLabels, u64)>,
    ) -> Vec<(DropLabels, u64)> {
        let mut sums: BTreeMap<DropLabels, u64> = BTreeMap::new();
        for (labels, n) in rows {
            *sums.entry(labels).or_default() += n;
        }
        let mut newcomers: Vec<(&DropLabels, u64)> = sums
            .iter()
            .filter(|(l, _)| !self.admitted.contains(*l))
            .map(|(l, n)| (l, *n))
            .collect();
        newcomers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (labels, _) in newcomers {
            if self.admitted.len() < self.limit {
                self.admitted.insert(labels.clone());
            } else {
                self.overflowed = true;
            }
        }
        let mut other = 0;
        let mut series = Vec::with_capacity(sums.len().min(self.limit) + 1);
        for (labels, n) in sums {
            if self.admitted.contains(&labels) {
                series.push((labels, n));
            } else {
                other += n;
            }
        }
        if self.overflowed {
            series.push((DropLabels::other(), other));
        }
        series
    }
}

/// One scrape's worth of numbers.
#[derive(Debug)]
pub struct Exposition<'a> {
    pub drops: &'a [(DropLabels, u64)],
    pub series_limit: usize,
    pub lost_events: u64,
    pub version: &'a str,
    pub revision: &'a str,
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

impl Exposition<'_> {
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "# HELP pathtrace_drops_total Packets the kernel dropped, by drop reason, \
             freeing function, device and network namespace. Label sets past \
             pathtrace_drops_series_limit are added to the series whose labels are all \"other\"."
        )?;
        writeln!(s, "# TYPE pathtrace_drops_total counter")?;
        for (l, n) in self.drops {
            writeln!(
                s,
                "pathtrace_drops_total{{reason=\"{}\",location=\"{}\",device=\"{}\",netns=\"{}\"}} {n}",
                escape(&l.reason),
                escape(&l.location),
                escape(&l.device),
                escape(&l.netns),
            )?;
        }
        writeln!(
            s,
            "# HELP pathtrace_drops_series_limit The most pathtrace_drops_total series \
             with labels of their own."
        )?;
        writeln!(s, "# TYPE pathtrace_drops_series_limit gauge")?;
        writeln!(s, "pathtrace_drops_series_limit {}", self.series_limit)?;
        writeln!(
            s,
            "# HELP pathtrace_lost_events_total Events the kernel could not hand to \
             pathtrace because its ring buffer was full."
        )?;
        writeln!(s, "# TYPE pathtrace_lost_events_total counter")?;
        writeln!(s, "pathtrace_lost_events_total {}", self.lost_events)?;
        writeln!(
            s,
            "# HELP pathtrace_build_info The running pathtrace's version and git revision."
        )?;
        writeln!(s, "# TYPE pathtrace_build_info gauge")?;
        writeln!(
            s,
            "pathtrace_build_info{{version=\"{}\",revision=\"{}\"}} 1",
            escape(self.version),
            escape(self.revision)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(reason: &str, dev: &str) -> DropLabels {
        DropLabels {
            reason: reason.into(),
            location: "nft_do_chain".into(),
            device: dev.into(),
            netns: "lab".into(),
        }
    }

    #[test]
    fn sums_rows_with_the_same_labels() {
        let mut s = DropSeries::new(10);
        let out = s.aggregate([(l("A", "x"), 2), (l("A", "x"), 3), (l("B", "x"), 1)]);
        assert_eq!(out, vec![(l("A", "x"), 5), (l("B", "x"), 1)]);
    }

    #[test]
    fn series_past_the_limit_go_to_other_and_every_series_only_grows() {
        let mut s = DropSeries::new(2);
        let out = s.aggregate([(l("A", "x"), 1), (l("B", "x"), 9), (l("C", "x"), 5)]);
        assert_eq!(
            out,
            vec![(l("B", "x"), 9), (l("C", "x"), 5), (DropLabels::other(), 1)],
            "the biggest newcomers are admitted first"
        );
        // A grows past the others: it stays in `other`, which only grows.
        let out = s.aggregate([
            (l("A", "x"), 100),
            (l("B", "x"), 9),
            (l("C", "x"), 6),
            (l("D", "x"), 1),
        ]);
        assert_eq!(
            out,
            vec![
                (l("B", "x"), 9),
                (l("C", "x"), 6),
                (DropLabels::other(), 101)
            ]
        );
    }

    #[test]
    fn no_other_series_below_the_limit() {
        let mut s = DropSeries::new(2);
        assert_eq!(s.aggregate([(l("A", "x"), 1)]), vec![(l("A", "x"), 1)]);
        assert_eq!(s.aggregate([]), vec![]);
    }

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let drops = [(l("A\"\\\n", "eth0"), 3)];
        let text = Exposition {
            drops: &drops,
            series_limit: 5,
            lost_events: 7,
            version: "0.1.0",
            revision: "abc",
        }
        .render();
        assert!(text.contains(
            "pathtrace_drops_total{reason=\"A\\\"\\\\\\n\",location=\"nft_do_chain\",device=\"eth0\",netns=\"lab\"} 3\n"
        ), "{text}");
        assert!(text.contains("# TYPE pathtrace_drops_total counter\n"));
        assert!(text.contains("pathtrace_lost_events_total 7\n"));
        assert!(text.contains("pathtrace_build_info{version=\"0.1.0\",revision=\"abc\"} 1\n"));
        assert!(text.ends_with('\n'));
    }
}

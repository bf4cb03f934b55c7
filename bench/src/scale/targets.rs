//! The curves' rows of the targets table: ready at every step, the first
//! rule-attributed hop at 10k rules and the peak RSS at 50k rules.
use super::{Axis, Scale, StepResult};
use crate::report::{mib, target, Target};

/// One figure of a step: its median.
type Figure = fn(&StepResult) -> Option<f64>;

impl Scale {
    pub fn targets(&self) -> Vec<Target> {
        vec![
            self.ready_target(),
            self.rules_target(
                "scale: first rule-attributed hop at 10,000 rules",
                "<= 1 s (median), iptables-nft and nft",
                (10_000, |r| r.first_rule_hop_ms.as_ref().map(|s| s.median)),
                |v| format!("{v:.0} ms"),
                1000.0,
            ),
            self.rules_target(
                "scale: peak RSS at 50,000 rules",
                "<= 30 MiB (median), iptables-nft and nft",
                (50_000, |r| r.peak_rss_kib.as_ref().map(|s| s.median)),
                |v| format!("{} MiB", mib(v)),
                30.0 * 1024.0,
            ),
        ]
    }

    /// Ready within 100 ms at every step; the worst, and every step over.
    fn ready_target(&self) -> Target {
        let ready: Vec<(String, Option<f64>)> = self
            .steps
            .iter()
            .map(|r| {
                (
                    format!("{} {}", r.axis.label(), r.size),
                    r.ready_ms.as_ref().map(|s| s.median),
                )
            })
            .collect();
        let over: Vec<String> = ready
            .iter()
            .filter_map(|(step, v)| match v {
                Some(v) if *v <= 100.0 => None,
                Some(v) => Some(format!("{step}: {v:.0} ms")),
                None => Some(format!("{step}: not measured")),
            })
            .collect();
        let worst = ready
            .iter()
            .filter_map(|(step, v)| Some((step, (*v)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        target(
            "scale: ready at every step (rules, namespaces, veths, containers)",
            "<= 100 ms (median of each step)",
            match worst {
                None => "not measured".into(),
                Some((step, v)) => format!(
                    "{} of {} steps within; worst {v:.0} ms ({step}){}",
                    ready.len() - over.len(),
                    ready.len(),
                    if over.is_empty() {
                        String::new()
                    } else {
                        format!("; over: {}", over.join(", "))
                    }
                ),
            },
            worst.map(|_| over.is_empty()),
        )
    }

    /// A figure at `size` rules, iptables-nft and nft, each at most `max`;
    /// not measured unless both steps ran.
    fn rules_target(
        &self,
        name: &str,
        threshold: &str,
        (size, figure): (usize, Figure),
        unit: fn(f64) -> String,
        max: f64,
    ) -> Target {
        let v = [Axis::IptablesRules, Axis::NftRules]
            .map(|axis| (axis.label(), self.step(axis, size).and_then(figure)));
        let shown = v
            .iter()
            .map(|(l, x)| format!("{l} {}", x.map_or("not measured".into(), unit)))
            .collect::<Vec<_>>()
            .join(", ");
        let pass = v
            .iter()
            .all(|(_, x)| x.is_some())
            .then(|| v.iter().all(|(_, x)| x.is_some_and(|x| x <= max)));
        target(name, threshold, shown, pass)
    }
}

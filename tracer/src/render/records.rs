//! Every JSON Lines record pathtrace prints, as a type. Their contract is
//! `docs/pathtrace.schema.json`: later versions add fields, and no field
//! changes meaning. An absent value prints as `null`.
use serde::Serialize;

use crate::{
    diagnose::{Connection, Diagnosis},
    model::{Conntrack, Mapping, Tier, Tuple, Verdict},
};

/// One record: its `type` field names the variant.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Hop(HopRecord),
    Packet(PacketRecord),
    Stats(StatsRecord),
    Summary(SummaryRecord),
    Compare(CompareRecord),
    Drop(DropRecord),
    Throttled(ThrottledRecord),
    DropTop(DropTopRecord),
    DropTotals(DropTopRecord),
}

impl Record {
    /// The record as one line of JSON (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"type\":\"error\",\"error\":\"serializing a record: {e}\"}}")
        })
    }
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// A packet's addresses, ports and protocol name; all null when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub saddr: Option<String>,
    pub daddr: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub proto: Option<String>,
}

impl From<Option<Tuple>> for Flow {
    fn from(t: Option<Tuple>) -> Self {
        Flow {
            saddr: t.map(|t| t.saddr.to_string()),
            daddr: t.map(|t| t.daddr.to_string()),
            sport: t.map(|t| t.sport),
            dport: t.map(|t| t.dport),
            proto: t.map(|t| t.proto_name()),
        }
    }
}

/// One packet at one point in the kernel.
#[derive(Clone, Debug, Serialize)]
pub struct HopRecord {
    pub packet: u64,
    pub t_ns: u64,
    pub netns: u32,
    pub netns_name: Option<String>,
    /// `host`, `container`, `lxc`, `nspawn`, `netns`, `process`.
    pub netns_kind: Option<&'static str>,
    pub ifname: String,
    pub ifindex: u32,
    /// `rx`, `tx`, `nf_hook`, `nf_rule`, `drop`, `deliver`.
    pub kind: &'static str,
    pub hook: Option<&'static str>,
    /// The netfilter family: of the hook on `nf_hook` hops (`ip`, `ip6`,
    /// `bridge`, …; with br_netfilter both `bridge` and `ip` run at one
    /// point), of the rule's table on `nf_rule` hops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The hook's verdict, or for an `nf_rule` hop the rule's
    /// (`ACCEPT`, `DROP`, `JUMP DOCKER-USER`, `RETURN`, `CONTINUE`, …).
    pub verdict: Option<Verdict>,
    pub reason: Option<String>,
    pub location: Option<String>,
    #[serde(flatten)]
    pub flow: Flow,
    pub tcp_flags: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<crate::model::IcmpError>,
    pub len: u32,
    /// Only on `nf_rule` hops.
    #[serde(flatten)]
    pub rule: Option<RuleFields>,
    /// The packet's conntrack entry, on the hops where it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct: Option<Box<CtFields>>,
}

/// A hop's conntrack entry (`state`: the packet's `ip_conntrack_info`).
#[derive(Clone, Debug, Serialize)]
pub struct CtFields {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<Flow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Flow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat: Option<Mapping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnat: Option<Mapping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
}

impl From<&Conntrack> for CtFields {
    fn from(ct: &Conntrack) -> Self {
        let e = ct.entry.as_ref();
        Self {
            state: ct.info.as_str(),
            tcp_state: e.and_then(|e| e.tcp_state_name()),
            status: e.map(|e| e.status_names()).unwrap_or_default(),
            original: e.map(|e| Some(e.original).into()),
            reply: e.map(|e| Some(e.reply).into()),
            snat: e.and_then(|e| e.snat()),
            dnat: e.and_then(|e| e.dnat()),
            mark: e.map(|e| e.mark).filter(|m| *m != 0),
            zone: e.map(|e| e.zone).filter(|z| *z != 0),
        }
    }
}

/// The firewall rule of an `nf_rule` hop.
#[derive(Clone, Debug, Serialize)]
pub struct RuleFields {
    pub table: String,
    pub chain: String,
    pub rule_handle: Option<u64>,
    pub rule_index: Option<u32>,
    pub rule: Option<String>,
    pub policy: bool,
}

/// A packet's path, settled: what happened to it, and where.
#[derive(Clone, Debug, Serialize)]
pub struct PacketRecord {
    pub packet: u64,
    /// `dropped`, `delivered`, `forwarded`, `unknown`.
    pub fate: &'static str,
    pub hook: Option<&'static str>,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub netns: Option<u32>,
    pub netns_name: Option<String>,
    pub netns_kind: Option<&'static str>,
    pub ifname: Option<String>,
    /// The first hop's flow.
    #[serde(flatten)]
    pub flow: Flow,
    /// The last hop's flow, when NAT changed it.
    #[serde(rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_flow: Option<Flow>,
    /// The rule that decided the packet's fate, when rule tracing saw it.
    pub table: Option<String>,
    pub chain: Option<String>,
    pub rule_index: Option<u32>,
    pub rule: Option<String>,
    pub policy: Option<bool>,
    /// The engine of the rule that decided: `nftables` (iptables-nft's
    /// rules included) or `iptables-legacy`.
    pub rule_engine: Option<&'static str>,
    pub hops: usize,
    /// The index of the filter that matched (0 for the first).
    pub filter: Option<u8>,
    /// Namespaces where rule tracing was not running yet when this packet
    /// passed (it started later, or the run ended first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules_late: Vec<String>,
    /// Odd states the path met, one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub report: Option<PacketReport>,
}

/// What `trace` adds to a packet: its direction and the diagnosis.
#[derive(Clone, Debug, Serialize)]
pub struct PacketReport {
    /// `request` or `reply`.
    pub direction: &'static str,
    pub diagnosis: Diagnosis,
    /// The container at the end of the packet's path.
    pub container: Option<String>,
}

/// Exit-time totals. `trace` and `compare` fill the packet counters,
/// `drops` the drop counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatsRecord {
    pub tier: Tier,
    pub events: u64,
    pub lost: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undecodable: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evicted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_overflows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_early: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unprinted: Option<u64>,
}

/// Exit-time outcomes: diagnoses grouped, and connections.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryRecord {
    pub outcomes: Vec<OutcomeGroup>,
    pub connections: Vec<Connection>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutcomeGroup {
    pub cause: String,
    pub message: String,
    pub advice: Option<String>,
    pub packets: u64,
}

/// `compare`: two flows' paths and where they part, or why there was
/// nothing to compare.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum CompareRecord {
    Compared(Box<Comparison>),
    Missing { error: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub a: CompareFlow,
    pub b: CompareFlow,
    pub diverge: Option<Divergence>,
    /// The divergence in words.
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompareFlow {
    /// The flow as given on the command line.
    pub filter: String,
    pub packet: u64,
    pub fate: &'static str,
    pub diagnosis: Diagnosis,
}

/// The first step where two paths differ.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    pub netns: u32,
    pub netns_name: Option<String>,
    pub hook: Option<&'static str>,
    pub table: Option<String>,
    pub chain: Option<String>,
    pub kind: &'static str,
    pub step: String,
    pub rule: Option<String>,
    /// What happened to each flow there (null: its path ended before).
    pub a: Option<String>,
    pub b: Option<String>,
}

/// `drops`: one dropped packet.
#[derive(Clone, Debug, Serialize)]
pub struct DropRecord {
    pub t_ns: u64,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub hook: Option<&'static str>,
    pub netns: u32,
    pub netns_name: Option<String>,
    pub ifname: String,
    pub ifindex: u32,
    #[serde(flatten)]
    pub flow: Flow,
}

/// `drops`: drops in the last second beyond `--max-rate`, not printed.
#[derive(Clone, Debug, Serialize)]
pub struct ThrottledRecord {
    pub unprinted: u64,
}

/// `drops --top`: the table (`drop_top`, each interval) or the totals at
/// exit (`drop_totals`, with `total`).
#[derive(Clone, Debug, Serialize)]
pub struct DropTopRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub elapsed_s: f64,
    pub rows: Vec<DropTopRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DropTopRow {
    pub reason: Option<String>,
    pub location: String,
    pub ifname: String,
    pub netns: u32,
    pub netns_name: Option<String>,
    pub count: u64,
    /// Drops per second over the last interval.
    pub rate: f64,
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::Value;

    use super::*;
    use crate::diagnose::ConnectionOutcome;

    const SCHEMA: &str = include_str!("../../../docs/pathtrace.schema.json");

    fn schema() -> Value {
        serde_json::from_str(SCHEMA).expect("the schema is JSON")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn diagnosis() -> Diagnosis {
        Diagnosis {
            cause: "rule_drop".into(),
            message: "dropped by rule 1".into(),
            advice: Some("remove the rule".into()),
            manager: Some(crate::diagnose::Manager::Iptables),
        }
    }

    fn tuple() -> Option<Tuple> {
        Some(Tuple {
            saddr: ip("192.0.2.9"),
            daddr: ip("192.0.2.25"),
            sport: 40000,
            dport: 8092,
            proto: 6,
        })
    }

    fn hop(rule: bool) -> Record {
        Record::Hop(HopRecord {
            packet: 1,
            t_ns: 12,
            netns: 4026531840,
            netns_name: Some("host".into()),
            netns_kind: Some("host"),
            ifname: "eth0".into(),
            ifindex: 2,
            kind: if rule { "nf_rule" } else { "rx" },
            hook: rule.then_some("FORWARD"),
            family: rule.then(|| "ip".into()),
            verdict: rule.then(|| Verdict::Jump("DOCKER-USER".into())),
            reason: None,
            location: None,
            flow: tuple().into(),
            tcp_flags: 2,
            icmp: None,
            len: 60,
            rule: rule.then(|| RuleFields {
                table: "filter".into(),
                chain: "FORWARD".into(),
                rule_handle: Some(7),
                rule_index: Some(1),
                rule: Some("-A FORWARD -j DOCKER-USER".into()),
                policy: false,
            }),
            ct: (!rule).then(|| Box::new(ct_sample())),
        })
    }

    fn ct_sample() -> CtFields {
        let end = |a: &str, port| crate::model::Endpoint {
            addr: a.parse().expect("address"),
            port,
        };
        CtFields {
            state: "new",
            tcp_state: Some("syn_sent"),
            status: vec!["dst_nat"],
            original: Some(tuple().into()),
            reply: Some(tuple().into()),
            snat: None,
            dnat: Some(Mapping {
                from: end("203.0.113.1", 8092),
                to: end("2001:db8::2", 80),
            }),
            mark: Some(3),
            zone: None,
        }
    }

    fn packet(report: bool, nat: bool) -> Record {
        Record::Packet(PacketRecord {
            packet: 1,
            fate: "dropped",
            hook: Some("FORWARD"),
            reason: Some("NETFILTER_DROP".into()),
            location: Some("nft_do_chain+0x4a".into()),
            netns: Some(4026532000),
            netns_name: None,
            netns_kind: None,
            ifname: Some("br0".into()),
            flow: tuple().into(),
            final_flow: nat.then(|| Flow::from(None)),
            table: None,
            chain: None,
            rule_index: None,
            rule: None,
            policy: None,
            rule_engine: None,
            hops: 5,
            filter: Some(0),
            rules_late: vec!["pt-dock".into()],
            notes: vec!["a note".into()],
            report: report.then(|| PacketReport {
                direction: "request",
                diagnosis: diagnosis(),
                container: Some("web".into()),
            }),
        })
    }

    fn samples() -> Vec<Record> {
        let row = DropTopRow {
            reason: Some("NETFILTER_DROP".into()),
            location: "nft_do_chain+0x4a".into(),
            ifname: "eth0".into(),
            netns: 1,
            netns_name: None,
            count: 3,
            rate: 1.5,
        };
        vec![
            hop(false),
            hop(true),
            packet(false, false),
            packet(true, true),
            Record::Stats(StatsRecord {
                tier: Tier::Tracepoint,
                events: 10,
                lost: 0,
                packets: Some(2),
                sent: Some(10),
                undecodable: Some(0),
                evicted: Some(0),
                rule_overflows: Some(0),
                settled_early: Some(0),
                ..StatsRecord::default()
            }),
            Record::Stats(StatsRecord {
                tier: Tier::Fentry,
                events: 10,
                lost: 0,
                drops: Some(4),
                unprinted: Some(1),
                ..StatsRecord::default()
            }),
            Record::Summary(SummaryRecord {
                outcomes: vec![OutcomeGroup {
                    cause: "rule_drop".into(),
                    message: "m".into(),
                    advice: None,
                    packets: 2,
                }],
                connections: vec![Connection {
                    client: "192.0.2.9".into(),
                    server: "192.0.2.25:8092".into(),
                    proto: "tcp".into(),
                    outcome: ConnectionOutcome::TimedOut,
                    client_error: Some("ETIMEDOUT"),
                    explanation: "e".into(),
                    requests: 2,
                    replies: 0,
                }],
            }),
            Record::Compare(CompareRecord::Compared(Box::new(Comparison {
                a: CompareFlow {
                    filter: "--src 192.0.2.9".into(),
                    packet: 1,
                    fate: "dropped",
                    diagnosis: diagnosis(),
                },
                b: CompareFlow {
                    filter: "--src 192.0.2.134".into(),
                    packet: 2,
                    fate: "forwarded",
                    diagnosis: diagnosis(),
                },
                diverge: Some(Divergence {
                    netns: 1,
                    netns_name: Some("pt-dock".into()),
                    hook: Some("FORWARD"),
                    table: Some("filter".into()),
                    chain: Some("DOCKER-USER".into()),
                    kind: "nf_rule",
                    step: "DOCKER-USER".into(),
                    rule: None,
                    a: Some("DROP".into()),
                    b: None,
                }),
                verdict: "the paths diverge".into(),
            }))),
            Record::Compare(CompareRecord::Missing {
                error: "no packet seen".into(),
            }),
            Record::Drop(DropRecord {
                t_ns: 1,
                reason: Some("NO_SOCKET".into()),
                location: None,
                hook: None,
                netns: 1,
                netns_name: None,
                ifname: "lo".into(),
                ifindex: 1,
                flow: None.into(),
            }),
            Record::Throttled(ThrottledRecord { unprinted: 9 }),
            Record::DropTop(DropTopRecord {
                total: None,
                elapsed_s: 1.0,
                rows: vec![row.clone()],
            }),
            Record::DropTotals(DropTopRecord {
                total: Some(3),
                elapsed_s: 2.0,
                rows: vec![row],
            }),
        ]
    }

    #[test]
    fn the_schema_is_a_valid_json_schema() {
        if let Err(e) = jsonschema::meta::validate(&schema()) {
            panic!("docs/pathtrace.schema.json: {e}");
        }
    }

    #[test]
    fn every_record_type_validates() {
        let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
        let mut seen = std::collections::BTreeSet::new();
        for rec in samples() {
            let v: Value = serde_json::from_str(&rec.to_line()).expect("a record is JSON");
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{v}: {errors:?}");
            seen.insert(v["type"].as_str().unwrap_or_default().to_owned());
        }
        let declared: std::collections::BTreeSet<String> = schema()["properties"]["type"]["enum"]
            .as_array()
            .expect("the type enum")
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        assert_eq!(seen, declared, "a sample for every record type");
    }

    #[test]
    fn the_schema_rejects_drift() {
        let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
        let mut v: Value = serde_json::from_str(&hop(false).to_line()).expect("JSON");
        assert!(validator.is_valid(&v));
        v["surprise"] = Value::Bool(true);
        assert!(!validator.is_valid(&v), "an undeclared field");
        let mut v: Value = serde_json::from_str(&hop(false).to_line()).expect("JSON");
        v["kind"] = Value::String("teleport".into());
        assert!(!validator.is_valid(&v), "an unknown hop kind");
        let mut v: Value = serde_json::from_str(&hop(true).to_line()).expect("JSON");
        v.as_object_mut().map(|o| o.remove("chain"));
        assert!(!validator.is_valid(&v), "a rule hop without its chain");
    }
}

//! iptables-legacy tests: unit tests on captured NFLOG messages, and root
//! tests with real namespaces (they fail, naming themselves, without root).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::legacy_rules::{self, parse_save, split_args, verdict_of_rule};
use super::netlink;
use super::nflog::{self, TracePrefix};
use super::testnet::{wait_readable, Lab, OtherProcess, A_ADDR, B_ADDR};
use super::*;
use crate::kernel::owner::{Owner, TagKind};
use crate::model::{Cidr, FlowFilter, Proto, Verdict};

const PORT: u16 = 8092;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn trace_prefixes() {
    let p = nflog::parse_trace_prefix("TRACE: filter:INPUT:rule:2 ").expect("prefix");
    let want = TracePrefix {
        table: "filter".into(),
        chain: "INPUT".into(),
        kind: "rule".into(),
        rulenum: 2,
    };
    assert_eq!(p, want);
    assert_eq!(
        nflog::parse_trace_prefix("TRACE: raw:my-chain:return:7").map(|p| p.rulenum),
        Some(7)
    );
    assert!(nflog::parse_trace_prefix("DROPPED: ").is_none());
}

#[test]
fn decodes_captured_nflog_trace() {
    let msgs = netlink::messages(super::fixtures::NFLOG_TRACE);
    let m = msgs.first().expect("message");
    assert_eq!(
        m.kind,
        (netlink::NFNL_SUBSYS_ULOG << 8) | nflog::NFULNL_MSG_PACKET
    );
    let (family, a) = m.nf().expect("nfgenmsg");
    assert_eq!(family, NFPROTO_IPV4);
    let pkt = nflog::decode_packet(a);
    assert_eq!(pkt.prefix, "TRACE: filter:INPUT:rule:2 ");
    assert_eq!(pkt.hook, Some(1));
    assert!(pkt.iif.is_some());
    let t = tuple_from_headers(&pkt.payload, &[]).expect("tuple");
    assert_eq!(
        (t.saddr, t.daddr, t.dport, t.proto),
        (ip(A_ADDR), ip(B_ADDR), PORT, 6)
    );
    let raw = netlink::messages(super::fixtures::NFLOG_RAW_POLICY);
    let (_, a) = raw.first().and_then(|m| m.nf()).expect("nfgenmsg");
    let pkt2 = nflog::decode_packet(a);
    let p = nflog::parse_trace_prefix(&pkt2.prefix).expect("prefix");
    assert_eq!(
        (
            p.table.as_str(),
            p.chain.as_str(),
            p.kind.as_str(),
            p.rulenum
        ),
        ("raw", "PREROUTING", "policy", 2)
    );
    assert_eq!(pkt2.hook, Some(0));
    assert_eq!(
        super::trace::packet_id(&pkt2.payload),
        super::trace::packet_id(&pkt.payload),
        "same packet, same id"
    );
}

#[test]
fn save_parsing_and_verdicts() {
    let out = "*filter\n:INPUT DROP [0:0]\n:CHK - [0:0]\n-A INPUT -j CHK\n-A INPUT -p tcp -m comment --comment \"a b\" -g CHK\n-A INPUT -j LOG\n-A CHK -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n";
    let t = parse_save(out);
    assert_eq!(t.policies["INPUT"], "DROP");
    assert!(t.user_chains.contains("CHK"));
    let input = &t.rules["INPUT"];
    assert_eq!(
        verdict_of_rule(&input[0], &t.user_chains),
        Verdict::Jump("CHK".into())
    );
    assert_eq!(
        verdict_of_rule(&input[1], &t.user_chains),
        Verdict::Goto("CHK".into())
    );
    assert_eq!(
        verdict_of_rule(&input[2], &t.user_chains),
        Verdict::Continue
    );
    assert_eq!(
        verdict_of_rule(&t.rules["CHK"][0], &t.user_chains),
        Verdict::Drop
    );
    assert_eq!(
        split_args("-A X -m comment --comment \"a b\" -j Y")[5],
        "a b"
    );
}

#[test]
fn trace_rule_arguments() {
    let f = FlowFilter {
        src: Some(Cidr {
            addr: ip("192.0.2.1"),
            prefix: 32,
        }),
        dport: Some(PORT),
        both_directions: true,
        ..Default::default()
    };
    let owner = Owner {
        pid: 77,
        start: Some(5),
    };
    let specs = legacy_rules::trace_rule_specs(&[f], owner).expect("specs");
    assert_eq!(specs.len(), 4, "tcp and udp, both directions");
    assert!(specs.iter().all(|(fam, _)| *fam == NFPROTO_IPV4));
    assert_eq!(
        specs[0].1.join(" "),
        "-s 192.0.2.1/32 -p tcp --dport 8092 -m comment --comment pathtrace:77:5"
    );
    assert_eq!(
        specs[2].1.join(" "),
        "-d 192.0.2.1/32 -p tcp --sport 8092 -m comment --comment pathtrace:77:5"
    );
    let any = legacy_rules::trace_rule_specs(&[], owner).expect("specs");
    assert_eq!(
        any.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        vec![NFPROTO_IPV4, NFPROTO_IPV6]
    );
}

fn collect(t: &mut LegacyTracer, done: impl Fn(&[TraceEvent]) -> bool) -> Vec<TraceEvent> {
    let end = Instant::now() + Duration::from_secs(3);
    let mut all = Vec::new();
    while Instant::now() < end && !done(&all) {
        if wait_readable(t.as_raw_fd(), Duration::from_millis(100)) {
            all.extend(t.read_pending().expect("read_pending"));
        }
    }
    all
}

fn filter() -> Vec<FlowFilter> {
    vec![FlowFilter {
        dport: Some(PORT),
        proto: Some(Proto(6)),
        ..Default::default()
    }]
}

#[test]
fn legacy_rule_drop_is_named() {
    lab::require_root("legacy_rule_drop_is_named");
    let lab = Lab::new("legacy");
    lab.in_b("iptables-legacy -A INPUT -p icmp -j ACCEPT");
    lab.in_b("iptables-legacy -A INPUT -s 192.0.2.1 -p tcp --dport 8092 -j DROP");
    let logger_before = lab.in_b("cat /proc/sys/net/netfilter/nf_log/2");
    let mut t = LegacyTracer::start(Some(&lab.path_b()), &filter()).expect("start");
    assert_eq!(
        lab.in_b("cat /proc/sys/net/netfilter/nf_log/2").trim(),
        "nfnetlink_log"
    );
    let comment = TagKind::RuleComment.tag(Owner::current());
    assert_eq!(
        lab.in_b("iptables-legacy-save -t raw")
            .matches(&comment)
            .count(),
        2
    );
    lab.syn_a_to_b(PORT);
    let evs = collect(&mut t, |e| {
        e.iter().any(|e| e.verdict == Some(Verdict::Drop))
    });
    for e in &evs {
        eprintln!(
            "legacy event: {} {} {:?} {:?} {:?} hook={:?}",
            e.table, e.chain, e.kind, e.verdict, e.rule, e.hook
        );
    }
    let ev = evs
        .iter()
        .find(|e| e.table == "filter" && e.chain == "INPUT" && e.kind == TraceKind::Rule)
        .expect("a rule event in filter INPUT");
    assert_eq!(ev.verdict, Some(Verdict::Drop));
    assert_eq!(ev.hook, Some(1));
    let info = ev.rule.as_ref().expect("rule info");
    assert_eq!(info.index, 2);
    assert!(
        info.text
            .contains("-A INPUT -s 192.0.2.1/32 -p tcp -m tcp --dport 8092 -j DROP"),
        "{}",
        info.text
    );
    let tu = ev.tuple.expect("tuple");
    assert_eq!(
        (tu.saddr, tu.daddr, tu.dport, tu.proto),
        (ip(A_ADDR), ip(B_ADDR), PORT, 6)
    );
    assert!(evs
        .iter()
        .all(|e| e.rule.as_ref().is_none_or(|r| !r.text.contains(&comment))));
    drop(t);
    assert!(!lab
        .in_b("iptables-legacy-save -t raw")
        .contains("pathtrace:"));
    assert_eq!(
        lab.in_b("cat /proc/sys/net/netfilter/nf_log/2"),
        logger_before
    );
}

#[test]
fn legacy_policy_drop() {
    lab::require_root("legacy_policy_drop");
    let lab = Lab::new("legpol");
    lab.in_b("iptables-legacy -P INPUT DROP");
    let mut t = LegacyTracer::start(Some(&lab.path_b()), &filter()).expect("start");
    lab.syn_a_to_b(PORT);
    let input_policy = |e: &TraceEvent| e.kind == TraceKind::Policy && e.chain == "INPUT";
    let evs = collect(&mut t, |e| e.iter().any(input_policy));
    let ev = evs.iter().find(|e| input_policy(e)).expect("policy event");
    assert_eq!((ev.table.as_str(), ev.chain.as_str()), ("filter", "INPUT"));
    assert_eq!(
        (ev.verdict.clone(), ev.policy),
        (Some(Verdict::Drop), Some(0))
    );
}

#[test]
fn legacy_sweep_removes_rules_of_dead_processes() {
    lab::require_root("legacy_sweep_removes_rules_of_dead_processes");
    let lab = Lab::new("legsweep");
    let mut dead = std::process::Command::new("true").spawn().expect("spawn");
    let dead_pid = dead.id();
    let _ = dead.wait();
    // Tags whose pid is alive in a process that is not pathtrace: pid-only
    // (an older version's) and with another start time (a reused pid).
    let other = OtherProcess::start();
    let alive = other.owner();
    let stale = [
        TagKind::RuleComment.tag(Owner {
            pid: dead_pid,
            start: None,
        }),
        TagKind::RuleComment.tag(Owner {
            start: None,
            ..alive
        }),
        TagKind::RuleComment.tag(Owner {
            start: alive.start.map(|s| s.saturating_sub(1)),
            ..alive
        }),
    ];
    let me = TagKind::RuleComment.tag(Owner::current());
    for tag in &stale {
        lab.in_b(&format!(
            "iptables-legacy -t raw -A PREROUTING -m comment --comment {tag} -j TRACE"
        ));
    }
    lab.in_b(&format!(
        "iptables-legacy -t raw -A OUTPUT -m comment --comment {me} -j TRACE"
    ));
    assert_eq!(legacy_sweep(Some(&lab.path_b())).expect("sweep"), 3);
    let raw = lab.in_b("iptables-legacy-save -t raw");
    assert!(
        stale.iter().all(|t| !raw.contains(&format!("{t} "))) && raw.contains(&me),
        "{raw}"
    );
}

/// Prints one raw NFLOG TRACE datagram as hex, to refresh the fixture:
/// `cargo test -p tracer --lib capture_nflog_fixture -- --ignored --nocapture`
#[test]
#[ignore = "a fixture refresher, run by hand"]
fn capture_nflog_fixture() {
    lab::require_root("capture_nflog_fixture");
    let lab = Lab::new("legcap");
    lab.in_b("iptables-legacy -A INPUT -p icmp -j ACCEPT");
    lab.in_b("iptables-legacy -A INPUT -s 192.0.2.1 -p tcp --dport 8092 -j DROP");
    let mut t = LegacyTracer::start(Some(&lab.path_b()), &filter()).expect("start");
    lab.syn_a_to_b(PORT);
    let mut buf = vec![0u8; 65536];
    let sock = t.raw_socket();
    while wait_readable(t.as_raw_fd(), Duration::from_millis(500)) {
        let Ok(Some(n)) = sock.recv(&mut buf, true) else {
            break;
        };
        let hex: Vec<String> = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
        println!("NFLOG {n}: {}", hex.join(""));
    }
    let _ = &mut t;
}

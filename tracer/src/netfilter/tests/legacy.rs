//! iptables-legacy: captured NFLOG messages, iptables-save parsing and the
//! TRACE rules' arguments. The root tests are in the tests crate
//! (`tests/netfilter.rs`).

use std::net::IpAddr;

use crate::kernel::owner::Owner;
use crate::model::{Cidr, FlowFilter, Verdict};
use crate::netfilter::legacy_rules::{self, parse_save, split_args, verdict_of_rule};
use crate::netfilter::netlink;
use crate::netfilter::nflog::{self, TracePrefix};
use crate::netfilter::*;

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
        (ip("192.0.2.1"), ip("192.0.2.2"), PORT, 6)
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
        crate::netfilter::trace::packet_id(&pkt2.payload),
        crate::netfilter::trace::packet_id(&pkt.payload),
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

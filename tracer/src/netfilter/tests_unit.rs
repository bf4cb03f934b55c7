//! Unit tests (no root): attributes, framing, expressions, and decoding of
//! trace messages captured from the kernel.

use std::net::IpAddr;
use std::time::Instant;

use super::attrs::{self, AttrIter, AttrWriter};
use super::netlink::{self, NFNL_SUBSYS_NFTABLES};
use super::trace::{decode_trace, NFT_MSG_TRACE};
use super::{fixtures, rules, TraceEvent, TraceKind, NFPROTO_INET, NFPROTO_IPV4};
use crate::model::Verdict;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn attrs_build_and_parse_round_trip() {
    let mut w = AttrWriter::new();
    w.put_str(1, "filter")
        .put_be32(2, 0xdead_beef)
        .nest(3, |w| {
            w.put(1, &[1, 2, 3]).put_u8(2, 7);
        });
    let b = w.into_bytes();
    assert_eq!(b.len() % 4, 0);
    // "filter\0" = 7 bytes + 4 header = 11, padded to 12.
    assert_eq!(&b[..4], &[11, 0, 1, 0]);
    let got: Vec<(u16, Vec<u8>)> = AttrIter::new(&b).map(|(k, p)| (k, p.to_vec())).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(attrs::string(&got[0].1), "filter");
    assert_eq!(attrs::be32(&got[1].1), Some(0xdead_beef));
    // The nested flag is stripped from the type but set on the wire.
    assert_eq!(got[2].0, 3);
    assert_eq!(
        u16::from_ne_bytes([b[22], b[23]]) & attrs::NLA_F_NESTED,
        attrs::NLA_F_NESTED
    );
    let inner = &got[2].1;
    assert_eq!(attrs::find(inner, 1), Some(&[1u8, 2, 3][..]));
    assert_eq!(attrs::find(inner, 2), Some(&[7u8][..]));
}

#[test]
fn attrs_stop_at_malformed_input() {
    // Length larger than the buffer.
    let mut it = AttrIter::new(&[40, 0, 1, 0, 0, 0]);
    assert!(it.next().is_none());
    assert!(it.malformed());
    assert_eq!(attrs::be64(&[1, 2]), None);
    assert_eq!(attrs::string(b"abc\0\0\0"), "abc");
}

#[test]
fn nfnetlink_framing_round_trips() {
    let mut w = AttrWriter::new();
    w.put_str(1, "x");
    let m = netlink::nfmsg(
        0x0a06,
        netlink::NLM_F_REQUEST,
        42,
        NFPROTO_INET,
        0x000a,
        w.as_bytes(),
    );
    let two = [m.as_ref(), m.as_ref()].concat();

    let msgs = netlink::messages(&two);
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].kind, msgs[0].seq), (0x0a06, 42));
    let (family, attrs) = msgs[0].nf().expect("nfgenmsg");
    assert_eq!(family, NFPROTO_INET);
    assert_eq!(
        attrs::find(attrs, 1).map(attrs::string).as_deref(),
        Some("x")
    );
    // res_id is big-endian.
    assert_eq!(&m[18..20], &[0x00, 0x0a]);
}

fn decode(fixture: &[u8]) -> TraceEvent {
    let msgs = netlink::messages(fixture);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].kind, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE);
    let (family, a) = msgs[0].nf().expect("nfgenmsg");
    decode_trace(family, a, Instant::now()).expect("trace event")
}

#[test]
fn decodes_captured_rule_events() {
    let own = decode(fixtures::OWN_RULE);
    assert_eq!(
        (own.family, own.table.as_str(), own.chain.as_str()),
        (NFPROTO_INET, "pathtrace", "prerouting")
    );
    assert_eq!(
        (own.kind, own.rule_handle, own.verdict.clone()),
        (TraceKind::Rule, Some(2), Some(Verdict::Continue))
    );
    assert_eq!(own.nfproto, Some(2));
    assert_eq!(own.id, 0x2c44_b4ac);
    assert_eq!(
        own.tuple,
        Some(crate::model::Tuple {
            saddr: ip("192.0.2.1"),
            daddr: ip("192.0.2.2"),
            sport: 52860,
            dport: 8092,
            proto: 6
        })
    );
    assert_eq!(own.iif, Some(2));

    let jump = decode(fixtures::INPUT_JUMP);
    assert_eq!(
        (jump.family, jump.table.as_str(), jump.chain.as_str()),
        (NFPROTO_IPV4, "filter", "INPUT")
    );
    assert_eq!(jump.rule_handle, Some(4));
    assert_eq!(jump.verdict, Some(Verdict::Jump("CHK".into())));
    assert_eq!(jump.network_header.len(), 20);
    assert_eq!(jump.transport_header.len(), 20);

    let end = decode(fixtures::CHK_END);
    assert_eq!(
        (end.chain.as_str(), end.kind, end.rule_handle),
        ("CHK", TraceKind::Return, None)
    );
    assert_eq!(
        end.tuple, None,
        "only the first event of a walk has the packet"
    );

    let drop = decode(fixtures::INPUT_DROP);
    assert_eq!(
        (drop.kind, drop.rule_handle, drop.verdict),
        (TraceKind::Rule, Some(5), Some(Verdict::Drop))
    );
    assert_eq!(drop.id, jump.id);
}

#[test]
fn decodes_captured_policy_events() {
    let end = decode(fixtures::INPUT_END);
    assert_eq!(
        (end.kind, end.verdict.clone()),
        (TraceKind::Return, Some(Verdict::Continue))
    );
    assert_eq!(end.tuple.map(|t| t.sport), Some(52868));
    let pol = decode(fixtures::INPUT_POLICY);
    assert_eq!(
        (pol.table.as_str(), pol.chain.as_str(), pol.kind),
        ("filter", "INPUT", TraceKind::Policy)
    );
    assert_eq!((pol.policy, pol.verdict), (Some(0), Some(Verdict::Drop)));
    assert_eq!(pol.id, 0x347d_7ea7);
}

#[test]
fn verdict_codes() {
    assert_eq!(
        Verdict::from_code(0x0001_0000, None),
        Verdict::Drop,
        "NF_DROP_ERR(-EPERM)"
    );
    assert_eq!(Verdict::from_code((7 << 16) | 3, None), Verdict::Queue(7));
    assert_eq!(
        Verdict::from_code(-4, Some("x".into())),
        Verdict::Goto("x".into())
    );
    assert_eq!(Verdict::from_code(-5, None).to_string(), "RETURN");
    assert_eq!(Verdict::Jump("CHK".into()).to_string(), "JUMP CHK");
}

#[test]
fn ipv6_and_fragment_tuples() {
    let mut v6 = vec![0u8; 40];
    v6[0] = 0x60;
    v6[6] = 17;
    v6[8..24].copy_from_slice(&ip_octets("2001:db8::1"));
    v6[24..40].copy_from_slice(&ip_octets("2001:db8::2"));
    let udp = [0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0];
    let t = super::tuple_from_headers(&v6, &udp).expect("tuple");
    assert_eq!(
        (t.saddr, t.daddr, t.sport, t.dport, t.proto),
        (ip("2001:db8::1"), ip("2001:db8::2"), 12345, 53, 17)
    );
    let mut inline = v6.clone();
    inline.extend_from_slice(&udp);
    assert_eq!(super::tuple_from_headers(&inline, &[]), Some(t));
    // A non-first IPv4 fragment has no ports.
    let mut v4 = vec![
        0x45, 0, 0, 28, 0, 1, 0x00, 0x10, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ];
    v4.extend_from_slice(&[0x1f, 0x9c, 0x1f, 0x9c]);
    assert_eq!(
        super::tuple_from_headers(&v4, &[]).map(|t| (t.sport, t.dport)),
        Some((0, 0))
    );
}

fn ip_octets(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

#[test]
fn nft_text_by_handle() {
    let out = "table ip filter { # handle 1\n\tchain INPUT { # handle 1\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport { 22, 80 } counter accept # handle 3\n\t\t counter accept # handle 4\n\t}\n\tset s { # handle 5\n\t}\n}\n";
    let m = rules::parse_nft_text(out);
    assert_eq!(m.len(), 2);
    assert_eq!(m[&3], "tcp dport { 22, 80 } counter accept");
    assert_eq!(m[&4], "counter accept");
}

#[test]
fn iptables_save_by_chain() {
    let out = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n-A FWD -j DROP\n-A INPUT -p tcp -j DROP\nCOMMIT\n";
    let m = rules::parse_iptables_save(out).expect("compatible");
    assert_eq!(
        m["INPUT"],
        vec!["-A INPUT -i lo -j ACCEPT", "-A INPUT -p tcp -j DROP"]
    );
    assert_eq!(m["FWD"].len(), 1);
    assert!(
        rules::parse_iptables_save("# Table `filter' is incompatible, use 'nft' tool.\n").is_none()
    );
}

#[test]
fn ruleset_changes_come_in_order_with_the_traces() {
    use super::trace::{trace_messages, RulesetNotice, TraceMessage};
    let msg = |kind: i32, family: u8, w: &AttrWriter| {
        netlink::nfmsg(
            (NFNL_SUBSYS_NFTABLES << 8) | kind as u16,
            0,
            0,
            family,
            0,
            w.as_bytes(),
        )
    };
    let mut rule = AttrWriter::new();
    rule.put_str(1, "filter").put_str(2, "FORWARD");
    let mut gen = AttrWriter::new();
    gen.put_be32(1, 7).put_be32(2, 4242).put_str(3, "iptables");
    let mut elem = AttrWriter::new();
    elem.put_str(1, "filter");
    let datagram = [
        fixtures::INPUT_DROP,
        msg(libc::NFT_MSG_NEWRULE, NFPROTO_IPV4, &rule).as_ref(),
        msg(libc::NFT_MSG_NEWSETELEM, NFPROTO_IPV4, &elem).as_ref(),
        msg(libc::NFT_MSG_NEWGEN, 0, &gen).as_ref(),
        fixtures::INPUT_DROP,
    ]
    .concat();
    let got: Vec<String> = trace_messages(&datagram, Instant::now())
        .map(|m| match m {
            TraceMessage::Event(ev) => format!("trace {}", ev.chain),
            TraceMessage::Notice(n) => format!("{n:?}"),
        })
        .collect();
    let changed = RulesetNotice::Changed {
        family: NFPROTO_IPV4,
        table: "filter".into(),
    };
    let committed = RulesetNotice::Committed {
        pid: Some(4242),
        comm: Some("iptables".into()),
    };
    assert_eq!(
        got,
        [
            "trace INPUT".to_owned(),
            format!("{changed:?}"),
            format!("{committed:?}"),
            "trace INPUT".to_owned(),
        ],
        "set elements move no rule: not a change"
    );
}

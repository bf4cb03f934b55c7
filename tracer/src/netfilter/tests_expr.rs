//! Unit tests: trace filters turned into nf_tables expressions.

use std::net::IpAddr;

use super::attrs::{self, AttrIter, AttrWriter};
use super::expr::{self, Expr};
use super::NFPROTO_IPV4;
use crate::model::{Cidr, FlowFilter, Proto};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn filter_becomes_expressions() {
    let f = FlowFilter {
        src: Some(Cidr {
            addr: ip("192.0.2.1"),
            prefix: 32,
        }),
        dst: Some(Cidr {
            addr: ip("192.0.2.0"),
            prefix: 20,
        }),
        dport: Some(8092),
        proto: Some(Proto(6)),
        both_directions: true,
        ..Default::default()
    };
    let rules = expr::rules_for(&[f]).expect("rules");
    // Each direction: its packets, then the ICMP errors about them
    // (destination-unreachable and time-exceeded).
    assert_eq!(rules.len(), 6);
    let fwd = &rules[0];
    assert_eq!(fwd[0], Expr::Meta(expr::NFT_META_NFPROTO));
    assert_eq!(fwd[1], Expr::Eq(vec![NFPROTO_IPV4]));
    assert_eq!(fwd[3], Expr::Eq(vec![6]));
    assert_eq!(
        fwd[4],
        Expr::Payload {
            base: 1,
            offset: 12,
            len: 4
        }
    );
    assert_eq!(
        fwd[6],
        Expr::Payload {
            base: 1,
            offset: 16,
            len: 3
        }
    );
    assert_eq!(fwd[7], Expr::Mask(vec![0xff, 0xff, 0xf0]));
    assert_eq!(fwd[8], Expr::Eq(vec![192, 0, 0]));
    assert_eq!(
        fwd[9],
        Expr::Payload {
            base: 2,
            offset: 2,
            len: 2
        }
    );
    assert_eq!(fwd[10], Expr::Eq(vec![0x1f, 0x9c]));
    assert_eq!(fwd.last(), Some(&Expr::SetNftrace));
    // An ICMP error about a forward packet: type 3, quoting its source
    // address (after the ICMP header's 8 bytes) and its destination port.
    let err = &rules[1];
    assert_eq!(err[3], Expr::Eq(vec![1]));
    assert_eq!(err[5], Expr::Eq(vec![3]));
    assert!(err.contains(&Expr::Payload {
        base: 2,
        offset: 8 + 12,
        len: 4
    }));
    assert!(err.contains(&Expr::Payload {
        base: 2,
        offset: 8 + 20 + 2,
        len: 2
    }));
    assert_eq!(rules[2][5], Expr::Eq(vec![11]));
    // Reverse: the port is the source port, the /20 the source.
    assert!(rules[3].contains(&Expr::Payload {
        base: 2,
        offset: 0,
        len: 2
    }));
    assert!(rules[3].contains(&Expr::Payload {
        base: 1,
        offset: 12,
        len: 3
    }));
}

#[test]
fn filter_edge_cases() {
    let ports_only = FlowFilter {
        dport: Some(53),
        ..Default::default()
    };
    assert_eq!(
        expr::rules_for(&[ports_only]).expect("rules").len(),
        3,
        "tcp, udp, sctp"
    );
    assert_eq!(
        expr::rules_for(&[]).expect("rules"),
        vec![vec![Expr::SetNftrace]]
    );
    let mixed = FlowFilter {
        src: Some(Cidr {
            addr: ip("192.0.2.1"),
            prefix: 32,
        }),
        dst: Some(Cidr {
            addr: ip("2001:db8::1"),
            prefix: 128,
        }),
        ..Default::default()
    };
    assert!(expr::rules_for(&[mixed]).is_err());
    let icmp_port = FlowFilter {
        proto: Some(Proto(1)),
        dport: Some(1),
        ..Default::default()
    };
    assert!(expr::rules_for(&[icmp_port]).is_err());
    let long = FlowFilter {
        src: Some(Cidr {
            addr: ip("192.0.2.1"),
            prefix: 33,
        }),
        ..Default::default()
    };
    assert!(expr::rules_for(&[long]).is_err());
    let sym = FlowFilter {
        proto: Some(Proto(17)),
        both_directions: true,
        ..Default::default()
    };
    assert_eq!(
        expr::rules_for(&[sym]).expect("rules").len(),
        1,
        "duplicates are merged"
    );
}

#[test]
fn cmp_expression_encoding() {
    let mut w = AttrWriter::new();
    expr::encode(&mut w, &[Expr::Eq(vec![6])]);
    let b = w.into_bytes();
    let (k, elem) = AttrIter::new(&b).next().expect("list elem");
    assert_eq!(k, 1);
    assert_eq!(
        attrs::find(elem, 1).map(attrs::string).as_deref(),
        Some("cmp")
    );
    let data = attrs::find(elem, 2).expect("expr data");
    assert_eq!(
        attrs::find(data, 1).and_then(attrs::be32),
        Some(1),
        "sreg 1"
    );
    assert_eq!(attrs::find(data, 2).and_then(attrs::be32), Some(0), "eq");
    let value = attrs::find(data, 3).and_then(|d| attrs::find(d, 1));
    assert_eq!(value, Some(&[6u8][..]));
}

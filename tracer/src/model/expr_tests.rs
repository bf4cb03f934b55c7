use super::*;

fn p(s: &str) -> Result<Option<Expr>, ExprError> {
    parse(&[s.to_owned()])
}

fn shown(s: &str) -> String {
    p(s).expect("parses").expect("not empty").to_string()
}

#[test]
fn words_and_one_string_parse_alike() {
    let words: Vec<String> = "host 192.0.2.9 and tcp port 8092"
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(
        parse(&words).expect("parses"),
        p("host 192.0.2.9 and tcp port 8092").expect("parses")
    );
    assert_eq!(
        shown("host 192.0.2.9 && tcp port 8092"),
        "host 192.0.2.9 and tcp port 8092"
    );
    assert_eq!(shown("!(tcp)||udp"), "not tcp or udp");
}

#[test]
fn and_or_bind_equally_from_the_left() {
    assert_eq!(shown("tcp or udp and port 53"), "(tcp or udp) and port 53");
    assert_eq!(
        shown("tcp or (udp and port 53)"),
        "tcp or (udp and port 53)"
    );
    assert_eq!(shown("not tcp and udp"), "not tcp and udp");
}

#[test]
fn qualifiers() {
    assert_eq!(shown("src or dst host 192.0.2.1"), "host 192.0.2.1");
    assert_eq!(
        shown("src and dst net 192.0.2.0/24"),
        "src and dst net 192.0.2.0/24"
    );
    assert_eq!(
        shown("dst net 192.0.2.0 mask 255.255.255.0"),
        "dst net 192.0.2.0/24"
    );
    assert_eq!(shown("net 192.0.2"), "net 192.0.2.0/24");
    assert_eq!(shown("src 192.0.2.1"), "src host 192.0.2.1");
    assert_eq!(
        shown("udp dst portrange 2000-1000"),
        "udp dst portrange 1000-2000"
    );
    assert_eq!(shown("ip6 proto 58"), "icmp6");
    assert_eq!(shown("proto \\udp"), "udp");
    assert_eq!(shown("ip proto 6"), "ip proto 6");
    assert_eq!(shown("ip host 192.0.2.1"), "host 192.0.2.1");
}

#[test]
fn bare_ids_take_the_qualifiers_before_them() {
    assert_eq!(
        shown("tcp dst port 80 or 443"),
        "tcp dst port 80 or tcp dst port 443"
    );
    assert_eq!(
        shown("host 192.0.2.1 and not 192.0.2.2"),
        "host 192.0.2.1 and not host 192.0.2.2"
    );
    assert!(matches!(p("192.0.2.1"), Err(ExprError::Syntax(_))));
}

#[test]
fn refusals_name_the_primitive() {
    for (e, word) in [
        ("vlan 10", "vlan"),
        ("ether host 00:11:22:33:44:55", "ether"),
        ("tcp[13] & 2 != 0", "tcp[…]"),
        ("greater 100", "greater"),
        ("host 192.0.2.1 and arp", "arp"),
        ("host example.org", "example.org"),
        ("port ssh", "ssh"),
    ] {
        let err = p(e).expect_err(e);
        assert!(matches!(err, ExprError::Unsupported(_)), "{e}: {err}");
        let line = err.to_string();
        assert!(line.contains(word), "{e}: {line}");
        assert!(
            line.contains("portrange"),
            "{e} lists what is supported: {line}"
        );
        assert!(!line.contains('\n'));
    }
    for e in [
        "host",
        "tcp 80",
        "(tcp",
        "tcp)",
        "and tcp",
        "host 192.0.2.0/24",
        "net 192.0.2.1/24",
        "ip6 host 192.0.2.1",
        "tcp host 192.0.2.1",
        "ip port 80",
        "port 65536",
        "net 192.0.2.0 mask 255.0.255.0",
        "tcp udp",
    ] {
        assert!(matches!(p(e), Err(ExprError::Syntax(_))), "{e}: {:?}", p(e));
    }
    assert_eq!(p("  "), Ok(None));
}

#[test]
fn dnf_pushes_not_inward_and_simplifies() {
    let d = |s: &str| dnf(&p(s).expect("parses").expect("some"), false).expect("fits");
    assert_eq!(d("tcp and not tcp"), Vec::<Vec<Lit>>::new());
    assert_eq!(d("ip and ip6"), Vec::<Vec<Lit>>::new());
    assert_eq!(d("tcp or (tcp and port 80)").len(), 1);
    let n = d("not (host 192.0.2.1 or port 80)");
    assert_eq!(n.len(), 1);
    assert!(n[0].iter().all(|l| l.negate));
    assert_eq!(
        d("(host 192.0.2.1 or host 192.0.2.2) and (port 80 or port 443)").len(),
        4
    );
    let big = "(port 1 or port 2 or port 3 or port 4 or port 5) and (host 192.0.2.1 or host 192.0.2.2 or host 192.0.2.3 or host 192.0.2.4)";
    let f = crate::model::FlowFilter {
        expr: p(big).expect("parses"),
        ..Default::default()
    };
    assert!(matches!(
        crate::model::Flows::new(vec![f]).map(|f| tracer_common::Filter::from(&f)),
        Err(ExprError::TooLarge { terms: 20, .. })
    ));
}

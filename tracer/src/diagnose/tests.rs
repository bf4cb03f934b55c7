use super::*;
use crate::{events::RuleHit, model::Family, track::FateKind};

fn rule(text: &str, policy: bool) -> RuleHit {
    RuleHit {
        handle: Some(7),
        index: (!policy).then_some(1),
        text: (!policy).then(|| text.to_owned()),
        policy,
        trace_id: 1,
        ..RuleHit::for_test("DOCKER-USER", crate::model::Verdict::Drop)
    }
}

const VALUES: &[(&str, &str)] = &[
    ("client", "192.0.2.9"),
    (
        "target",
        "192.0.2.25:8092 (published port 8092 → container web:80)",
    ),
    ("hook", "FORWARD"),
    ("where", "namespace dock"),
    (
        "rule_phrase",
        "rule 1 of chain DOCKER-USER in table filter: -A DOCKER-USER -s 192.0.2.9/32 -j DROP",
    ),
    ("orig_port", "8092"),
    ("run_in", " in namespace dock"),
    ("l3", "ip"),
    ("proto", "tcp"),
    ("final_port", "80"),
    ("published_note", ""),
    ("ifname", "eth0"),
    ("chain", "FORWARD"),
    ("table", "filter"),
    ("final_addr", "198.51.100.2"),
];

fn cause_of(f: &Facts) -> String {
    diagnose(f).cause
}

#[test]
fn each_known_cause_is_recognised() {
    let drop = |reason: &str, r: Option<RuleHit>| {
        Facts::from_parts(FateKind::Dropped, Some(reason), r, VALUES)
    };
    assert_eq!(
        cause_of(&drop(
            "NETFILTER_DROP",
            Some(rule("-A DOCKER-USER -s 192.0.2.9/32 -j DROP", false))
        )),
        "rule_drop"
    );
    assert_eq!(
        cause_of(&drop(
            "NETFILTER_DROP",
            Some(rule(
                "-A DOCKER-USER -p tcp -j REJECT --reject-with tcp-reset",
                false
            ))
        )),
        "reject"
    );
    assert_eq!(
        cause_of(&drop(
            "NETFILTER_DROP",
            Some(rule(
                "-A FORWARD -m conntrack --ctstate INVALID -j DROP",
                false
            ))
        )),
        "conntrack_invalid"
    );
    assert_eq!(
        cause_of(&drop("NETFILTER_DROP", Some(rule("", true)))),
        "policy_drop"
    );
    assert_eq!(cause_of(&drop("NETFILTER_DROP", None)), "netfilter_drop");
    assert_eq!(cause_of(&drop("NO_SOCKET", None)), "no_socket");
    assert_eq!(cause_of(&drop("IP_RPFILTER", None)), "rp_filter");
    assert_eq!(
        cause_of(&drop("IP_INADDRERRORS", None).with_forwarding(false)),
        "forwarding_disabled"
    );
    assert_eq!(
        cause_of(&drop("IP_INADDRERRORS", None).with_forwarding(true)),
        "no_route"
    );
    assert_eq!(cause_of(&drop("IP_INNOROUTES", None)), "no_route");
    assert_eq!(cause_of(&drop("TCP_CSUM", None)), "dropped");
    assert_eq!(
        cause_of(&Facts::from_parts(FateKind::Unknown, None, None, VALUES)),
        "vanished"
    );
    assert_eq!(
        cause_of(&Facts::from_parts(FateKind::Delivered, None, None, VALUES)),
        "delivered"
    );
}

#[test]
fn a_nat_clash_is_told_apart_from_a_full_table() {
    use crate::evidence::{Counters, Seen};
    let seen = |drop: u32, insert_failed: u32| {
        let mut rose = Counters::default();
        rose.add_conntrack(&format!(
            "entries drop insert_failed\n00000000 {drop:08x} {insert_failed:08x}\n"
        ));
        Seen {
            rose,
            ..Seen::default()
        }
    };
    let drop = |s: Seen| {
        Facts::from_parts(FateKind::Dropped, Some("NETFILTER_DROP"), None, VALUES).with_seen(s)
    };
    assert_eq!(cause_of(&drop(seen(2, 0))), "conntrack_full");
    // Refused entries count as drops too: with no entry holding the
    // tuple found, no cause is claimed beyond netfilter's drop.
    assert_eq!(cause_of(&drop(seen(2, 2))), "netfilter_drop");
    let t = tuple("192.0.2.1", 38646, "198.51.100.2", 8347, 6);
    let mut clash = drop(seen(2, 2));
    clash.nat_clash = Some(super::clash::NatClash {
        netns: 1,
        holder: crate::model::CtEntry {
            status: 0,
            tcp_state: 0,
            mark: 0,
            zone: 0,
            original: t,
            reply: t,
        },
    });
    assert_eq!(cause_of(&clash), "nat_clash");
}

#[test]
fn messages_name_the_rule_client_and_fix() {
    let r = rule("-A DOCKER-USER -s 192.0.2.9/32 -j DROP", false);
    let mut f = Facts::from_parts(
        FateKind::Dropped,
        Some("NETFILTER_DROP"),
        Some(r.clone()),
        VALUES,
    );
    f.set_rule_values(&r);
    let d = diagnose(&f);
    assert!(d.message.contains("192.0.2.9"), "{}", d.message);
    assert!(d.message.contains("container web"), "{}", d.message);
    assert!(
        d.message.contains("rule 1 of chain DOCKER-USER"),
        "{}",
        d.message
    );
    let advice = d.advice.expect("advice");
    assert!(
        advice.contains("iptables -t filter -D DOCKER-USER 1"),
        "{advice}"
    );
    assert!(
        advice.ends_with(": iptables -t filter -I DOCKER-USER 1 -s 192.0.2.9 -p tcp -m conntrack --ctorigdstport 8092 -j ACCEPT"),
        "{advice}"
    );
}

#[test]
fn a_catch_all_is_kept_and_only_this_flow_is_accepted_before_it() {
    for (text, family) in [
        (
            "-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
            Family::Ipv4,
        ),
        ("-A INPUT -s 192.0.2.0/24 -j DROP", Family::Ipv4),
    ] {
        let mut r = rule(text, false);
        r.chain = "INPUT".into();
        r.family = family;
        let mut f = Facts::from_parts(FateKind::Dropped, Some("NETFILTER_DROP"), None, VALUES);
        f.set_rule_values(&r);
        let advice = diagnose(&f).advice.expect("advice");
        assert!(!advice.contains(" -D "), "{advice}");
        assert!(
            advice.ends_with(
                ": iptables -t filter -I INPUT 1 -s 192.0.2.9 -p tcp --dport 80 -j ACCEPT"
            ),
            "{advice}"
        );
    }
}

#[test]
fn fill_leaves_unknown_placeholders_and_stray_braces() {
    let f = Facts::from_parts(FateKind::Dropped, None, None, &[("client", "A")]);
    assert_eq!(fill_message("{client} {nope} {", &f), "A {nope} {");
    assert_eq!(fact::fill("{client} {target}", &f.values), None);
    assert_eq!(fact::fill("{client}!", &f.values).as_deref(), Some("A!"));
}

#[test]
fn refused_and_timed_out_connections() {
    use std::net::IpAddr;
    let t = |s: &str, sp, d: &str, dp| crate::model::Tuple {
        saddr: s.parse::<IpAddr>().expect("ip"),
        daddr: d.parse::<IpAddr>().expect("ip"),
        sport: sp,
        dport: dp,
        proto: 6,
    };
    let reject = Diagnosis {
        cause: "reject".into(),
        message: "refused by rule 1".into(),
        advice: None,
        manager: None,
    };
    let delivered = Diagnosis {
        cause: "delivered".into(),
        message: "delivered".into(),
        advice: None,
        manager: None,
    };
    let dropped = Diagnosis {
        cause: "rule_drop".into(),
        message: "dropped by rule 1".into(),
        advice: None,
        manager: None,
    };
    let mut o = Outcomes::default();
    o.request(
        t("192.0.2.9", 5000, "192.0.2.25", 8092),
        10,
        FateKind::Dropped,
        &reject,
        "namespace dock".into(),
    );
    o.reply(
        outcome::ReplySeen {
            last: t("192.0.2.25", 8092, "192.0.2.9", 5000),
            last_netns: 10,
            flags: 0x14,
            icmp: None,
            origin: "namespace dock".into(),
        },
        FateKind::Delivered,
        &delivered,
    );
    o.request(
        t("192.0.2.9", 5001, "192.0.2.25", 8092),
        10,
        FateKind::Dropped,
        &dropped,
        "namespace dock".into(),
    );
    o.request(
        t("192.0.2.9", 5001, "192.0.2.25", 8092),
        10,
        FateKind::Dropped,
        &dropped,
        "namespace dock".into(),
    );
    let conns = o.connections();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0].outcome, ConnectionOutcome::Refused);
    assert!(
        conns[0].explanation.contains("namespace dock") && conns[0].explanation.contains("rule 1"),
        "{}",
        conns[0].explanation
    );
    assert_eq!(conns[1].outcome, ConnectionOutcome::TimedOut);
    assert_eq!(conns[1].requests, 2);
    let groups = o.groups();
    assert_eq!(groups[0].1, 2, "the two identical drops are one group");
}

fn tuple(s: &str, sp: u16, d: &str, dp: u16, proto: u8) -> crate::model::Tuple {
    crate::model::Tuple {
        saddr: s.parse().expect("ip"),
        daddr: d.parse().expect("ip"),
        sport: sp,
        dport: dp,
        proto,
    }
}

fn diag(cause: &str, message: &str) -> Diagnosis {
    Diagnosis {
        cause: cause.into(),
        message: message.into(),
        advice: None,
        manager: None,
    }
}

#[test]
fn an_icmp_error_belongs_to_the_flow_it_quotes() {
    use crate::model::IcmpError;
    let mut o = Outcomes::default();
    let req = tuple("192.0.2.9", 5000, "192.0.2.25", 8092, 6);
    o.request(
        req,
        10,
        FateKind::Dropped,
        &diag("reject", "prohibited: rejected by rule 1"),
        "namespace srv".into(),
    );
    let icmp = IcmpError {
        version: 4,
        ty: 3,
        code: 10,
        quoted: req,
    };
    o.reply(
        outcome::ReplySeen {
            last: tuple("192.0.2.25", 0, "192.0.2.9", 0, 1),
            last_netns: 10,
            flags: 0,
            icmp: Some(icmp),
            origin: "namespace srv".into(),
        },
        FateKind::Delivered,
        &diag("icmp_error", "answered"),
    );
    let conns = o.connections();
    assert_eq!(conns.len(), 1, "{conns:#?}");
    assert_eq!(conns[0].outcome, ConnectionOutcome::Prohibited);
    assert_eq!(conns[0].client_error, Some("EHOSTUNREACH"));
    let why = &conns[0].explanation;
    assert!(
        why.contains("host-prohibited") && !why.contains("timed out"),
        "{why}"
    );
    assert_eq!(why.matches("prohibited:").count(), 1, "said once: {why}");
}

#[test]
fn replies_that_die_are_their_own_story_and_teardown_is_no_drop() {
    let mut o = Outcomes::default();
    let req = tuple("192.0.2.9", 5000, "198.51.100.2", 80, 6);
    let fwd = diag("forwarded", "forwarded");
    o.request(req, 10, FateKind::Forwarded, &fwd, "namespace r".into());
    let synack = |o: &mut Outcomes, fate, d: &Diagnosis| {
        o.reply(
            outcome::ReplySeen {
                last: tuple("198.51.100.2", 80, "192.0.2.9", 5000, 6),
                last_netns: 11,
                flags: 0x12,
                icmp: None,
                origin: "namespace srv".into(),
            },
            fate,
            d,
        )
    };
    synack(
        &mut o,
        FateKind::Dropped,
        &diag(
            "reply_dropped",
            "the server answered, but its reply died in FORWARD",
        ),
    );
    let c = &o.connections()[0];
    assert_eq!(c.outcome, ConnectionOutcome::TimedOut);
    assert!(
        c.explanation.contains("the server answered"),
        "{}",
        c.explanation
    );

    let mut o = Outcomes::default();
    o.request(req, 10, FateKind::Delivered, &fwd, "namespace r".into());
    synack(
        &mut o,
        FateKind::Dropped,
        &diag("teardown", "freed when its socket closed"),
    );
    assert_eq!(o.connections()[0].outcome, ConnectionOutcome::Connected);
}

fn nft_rule(policy: bool) -> RuleHit {
    RuleHit {
        family: Family::Inet,
        table: "filter".into(),
        chain: "input".into(),
        handle: Some(4),
        index: Some(2),
        text: (!policy).then(|| "ip saddr 192.0.2.9 reject with icmpx admin-prohibited".into()),
        ..rule("", policy)
    }
}

#[test]
fn advice_is_in_the_syntax_of_the_tables_manager() {
    let values: Vec<(&'static str, &str)> = VALUES
        .iter()
        .copied()
        .filter(|(k, _)| !matches!(*k, "chain" | "table" | "rule_phrase"))
        .chain([
            ("final_addr", "192.0.2.25"),
            ("l3", "ip"),
            ("fw_family", "ipv4"),
        ])
        .collect();
    let mk = |r: RuleHit| {
        let mut f = Facts::from_parts(
            FateKind::Dropped,
            Some("NETFILTER_DROP"),
            Some(r.clone()),
            &values,
        );
        f.set_rule_values(&r);
        f
    };
    let d = diagnose(&mk(nft_rule(true)));
    assert_eq!(d.cause, "policy_drop");
    assert_eq!(d.manager, Some(Manager::Nft));
    let advice = d.advice.expect("advice");
    assert!(
        advice.contains("nft insert rule inet filter input ip saddr 192.0.2.9 ip daddr 192.0.2.25 tcp dport 80 accept"),
        "{advice}"
    );
    assert!(d.message.contains("table inet filter"), "{}", d.message);

    let d = diagnose(&mk(nft_rule(false)));
    assert_eq!(d.cause, "reject", "lower-case reject is a reject");
    assert!(
        d.message.starts_with("prohibited:") && d.message.contains("EHOSTUNREACH"),
        "{}",
        d.message
    );
    let advice = d.advice.expect("advice");
    assert!(
        advice.ends_with(
            ": nft insert rule inet filter input position 4 ip saddr 192.0.2.9 tcp dport 80 accept"
        ),
        "{advice}"
    );

    let mut ufw = rule("-A ufw-user-input -s 192.0.2.9/32 -j DROP", false);
    ufw.chain = "ufw-user-input".into();
    let d = diagnose(&mk(ufw));
    assert_eq!(d.manager, Some(Manager::Ufw));
    assert!(d.advice.expect("advice").starts_with("ufw manages"));
    // Forwarded traffic is ufw's route rules', which `ufw allow` never reaches.
    let mut routed = rule("-A ufw-user-forward -s 192.0.2.9/32 -j DROP", false);
    routed.chain = "ufw-user-forward".into();
    let advice = diagnose(&mk(routed.clone())).advice.expect("advice");
    assert!(
        advice
            .ends_with(": ufw route prepend allow from 192.0.2.9 to 192.0.2.25 port 80 proto tcp"),
        "{advice}"
    );
    let mut input = mk(routed);
    input.values.set(Fact::Hook, "INPUT");
    let advice = diagnose(&input).advice.expect("advice");
    assert!(
        advice.ends_with(": ufw prepend allow from 192.0.2.9 to any port 80 proto tcp"),
        "{advice}"
    );
    // pve-firewall: a guest's outgoing chain takes an OUT rule to the destination.
    for (chain, want) in [
        (
            "tap250i1-IN",
            "250.fw under [RULES] (IN ACCEPT -source 192.0.2.9 -p tcp -dport 80)",
        ),
        (
            "veth250i0-OUT",
            "250.fw under [RULES] (OUT ACCEPT -dest 192.0.2.25 -p tcp -dport 80)",
        ),
        (
            "PVEFW-HOST-OUT",
            "host.fw, [RULES]: OUT ACCEPT -dest 192.0.2.25 -p tcp -dport 80)",
        ),
        (
            "PVEFW-HOST-IN",
            "host.fw, [RULES]: IN ACCEPT -source 192.0.2.9 -p tcp -dport 80)",
        ),
    ] {
        let mut pve = rule(&format!("-A {chain} -p tcp -j DROP"), false);
        pve.chain = chain.into();
        let d = diagnose(&mk(pve));
        assert_eq!(d.manager, Some(Manager::Proxmox), "{chain}");
        let advice = d.advice.expect("advice");
        assert!(advice.contains(want), "{chain}: {advice}");
    }

    let mut reply = Facts::from_parts(FateKind::Dropped, None, Some(rule("", true)), &values);
    let mut fwd = rule("", true);
    fwd.chain = "FORWARD".into();
    reply.set_rule_values(&fwd);
    reply.reply = true;
    let d = diagnose(&reply);
    assert_eq!(d.cause, "reply_dropped");
    let advice = d.advice.expect("advice");
    assert!(
        advice.contains("--ctstate ESTABLISHED,RELATED") && !advice.contains("--dport"),
        "{advice}"
    );
}

#[test]
fn a_drop_of_bridged_traffic_says_br_netfilter_ran_iptables() {
    let mut f = Facts::from_parts(
        FateKind::Dropped,
        Some("NETFILTER_DROP"),
        Some(rule("-A FORWARD -s 192.0.2.9/32 -j DROP", false)),
        VALUES,
    );
    let plain = diagnose(&f);
    assert!(!plain.message.contains("br_netfilter"), "{plain:?}");
    f.bridged = true;
    let d = diagnose(&f);
    assert_eq!(d.cause, "rule_drop");
    assert!(d.message.ends_with(BRIDGED_NOTE), "{d:?}");
    let advice = d.advice.expect("advice");
    assert!(advice.contains("bridge-nf-call-iptables=0"), "{advice}");
}

#[test]
fn resent_replies_that_die_are_told_once_per_connection() {
    let mut o = Outcomes::default();
    let req = tuple("192.0.2.1", 5000, "198.51.100.2", 8080, 6);
    let fwd = diag("forwarded", "forwarded");
    o.request(req, 10, FateKind::Forwarded, &fwd, "namespace r".into());
    let named = Diagnosis {
        manager: Some(Manager::Iptables),
        ..diag(
            "reply_dropped",
            "the server answered, but its reply died in FORWARD at the policy of chain FORWARD",
        )
    };
    let unnamed = diag(
        "reply_dropped",
        "the server answered, but its reply died in FORWARD",
    );
    for d in [&named, &unnamed, &named, &named] {
        o.reply(
            outcome::ReplySeen {
                last: tuple("198.51.100.2", 8080, "192.0.2.1", 5000, 6),
                last_netns: 11,
                flags: 0x12,
                icmp: None,
                origin: "namespace b".into(),
            },
            FateKind::Dropped,
            d,
        );
    }
    let groups = o.groups();
    let reply_groups: Vec<_> = groups
        .iter()
        .filter(|(d, _)| d.cause == "reply_dropped")
        .collect();
    assert_eq!(reply_groups.len(), 1, "{groups:#?}");
    assert_eq!(reply_groups[0].0, named, "the account that names the rule");
    assert_eq!(reply_groups[0].1, 4, "every resent reply is counted");
    let c = &o.connections()[0];
    assert_eq!(c.outcome, ConnectionOutcome::TimedOut);
    assert_eq!(
        c.explanation.matches("the server answered").count(),
        1,
        "{}",
        c.explanation
    );
    assert!(
        c.explanation
            .ends_with("none of its 4 replies reached the client"),
        "{}",
        c.explanation
    );
}

#[test]
fn nothing_listening_says_what_the_kernel_answered() {
    use super::facts::no_socket_answer;
    let tcp = no_socket_answer(6, false, "192.0.2.1");
    assert!(tcp.contains("TCP reset"), "{tcp}");
    for (v6, icmp) in [
        (false, "ICMP port-unreachable"),
        (true, "ICMPv6 port-unreachable"),
    ] {
        let udp = no_socket_answer(17, v6, "192.0.2.1");
        assert!(udp.contains(icmp) && !udp.contains("reset"), "{udp}");
    }
    let f = Facts::from_parts(
        FateKind::Dropped,
        Some("NO_SOCKET"),
        None,
        &[
            ("proto", "udp"),
            ("final_port", "53"),
            ("where", "namespace b"),
            ("published_note", ""),
            (
                "no_socket_answer",
                &no_socket_answer(17, false, "192.0.2.1"),
            ),
        ],
    );
    let d = diagnose(&f);
    assert_eq!(d.cause, "no_socket");
    assert!(
        d.message.contains("udp port 53") && !d.message.contains("reset"),
        "{}",
        d.message
    );
}

#[test]
fn a_reset_or_a_handshake_reply_is_not_called_established() {
    let silent = |flags: u8| {
        let mut f = Facts::from_parts(FateKind::Unknown, None, None, VALUES);
        f.silent_tcp = true;
        f.tcp_flags = flags;
        f.reply = true;
        diagnose(&f)
    };
    let rst = silent(0x14);
    assert_eq!(rst.cause, "tcp_reset");
    assert!(
        rst.message.contains("attempt to connect") && !rst.message.contains("established"),
        "{}",
        rst.message
    );
    let synack = silent(0x12);
    assert_eq!(synack.cause, "tcp_consumed");
    assert!(
        !synack.message.contains("established"),
        "{}",
        synack.message
    );
}

#[test]
fn a_socket_closing_is_teardown_never_a_dropped_reply() {
    for reason in TEARDOWN_REASONS {
        let mut f = Facts::from_parts(FateKind::Dropped, Some(reason), None, VALUES);
        f.reply = true;
        let d = diagnose(&f);
        assert_eq!(d.cause, "teardown", "{reason}");
        assert!(d.message.contains("not a drop"), "{}", d.message);
    }
    let mut o = Outcomes::default();
    let req = tuple("192.0.2.1", 5000, "198.51.100.2", 8080, 6);
    o.request(
        req,
        10,
        FateKind::Delivered,
        &diag("delivered", "delivered"),
        "namespace b".into(),
    );
    o.reply(
        outcome::ReplySeen {
            last: tuple("198.51.100.2", 8080, "192.0.2.1", 5000, 6),
            last_netns: 10,
            flags: 0x11,
            icmp: None,
            origin: "namespace b".into(),
        },
        FateKind::Dropped,
        &diag(
            "teardown",
            "freed when its socket closed: normal teardown, not a drop",
        ),
    );
    let c = &o.connections()[0];
    assert_eq!(c.outcome, ConnectionOutcome::Connected, "{}", c.explanation);
}

#[test]
fn a_docker_user_rule_is_dockers_and_its_advice_stays_in_docker_user() {
    let r = rule("-A DOCKER-USER -s 192.0.2.9/32 -j REJECT", false);
    let mut f = Facts::from_parts(FateKind::Dropped, Some("NETFILTER_DROP"), None, VALUES);
    f.set_rule_values(&r);
    let d = diagnose(&f);
    assert_eq!(d.manager, Some(Manager::Docker));
    assert_eq!(
        d.advice.as_deref(),
        Some("That rule bans 192.0.2.9 alone: delete it if the ban is no longer wanted (iptables -t filter -D DOCKER-USER 1); to open only this flow (published port 8092), accept it before the rule in namespace dock: iptables -t filter -I DOCKER-USER 1 -s 192.0.2.9 -p tcp -m conntrack --ctorigdstport 8092 -j ACCEPT")
    );
    let mut legacy = r.clone();
    legacy.handle = None;
    f.set_rule_values(&legacy);
    let advice = diagnose(&f).advice.expect("advice");
    assert!(
        advice.ends_with(": iptables-legacy -t filter -I DOCKER-USER 1 -s 192.0.2.9 -p tcp -m conntrack --ctorigdstport 8092 -j ACCEPT"),
        "{advice}"
    );
}

#[test]
fn a_reset_after_the_handshake_is_no_refusal() {
    let mut o = Outcomes::default();
    let req = tuple("192.0.2.1", 5000, "198.51.100.2", 8080, 6);
    o.request(
        req,
        10,
        FateKind::Forwarded,
        &diag("forwarded", "forwarded"),
        "namespace r".into(),
    );
    for flags in [0x12, 0x14] {
        o.reply(
            outcome::ReplySeen {
                last: tuple("198.51.100.2", 8080, "192.0.2.1", 5000, 6),
                last_netns: 10,
                flags,
                icmp: None,
                origin: "namespace b".into(),
            },
            FateKind::Unknown,
            &diag("tcp_consumed", "taken by the TCP stack"),
        );
    }
    let c = &o.connections()[0];
    assert_eq!(c.outcome, ConnectionOutcome::Connected, "{}", c.explanation);
    assert!(
        c.explanation
            .contains("a TCP reset from namespace b ended the connection later"),
        "{}",
        c.explanation
    );
}

#[test]
fn every_placeholder_of_every_cause_names_a_fact() {
    let texts = CAUSES
        .iter()
        .chain(std::iter::once(&causes::FALLBACK))
        .flat_map(|c| std::iter::once(c.message).chain(c.advice.iter().map(|a| a.text)));
    let unknown: Vec<String> = texts
        .flat_map(|t| {
            fact::placeholders(t)
                .filter(|k| Fact::from_name(k).is_none())
                .map(|k| format!("{{{k}}} in {t:?}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(unknown.is_empty(), "{unknown:#?}");
}

#[test]
fn a_connection_stalls_only_when_its_replies_die_of_a_known_cause() {
    let req = tuple("192.0.2.1", 5000, "198.51.100.2", 8080, 6);
    let reply = |o: &mut Outcomes, flags: u8, fate, d: &Diagnosis| {
        o.reply(
            outcome::ReplySeen {
                last: tuple("198.51.100.2", 8080, "192.0.2.1", 5000, 6),
                last_netns: 10,
                flags,
                icmp: None,
                origin: "namespace b".into(),
            },
            fate,
            d,
        )
    };
    for (cause, outcome) in [
        ("pmtu_black_hole", ConnectionOutcome::Stalled),
        ("dropped", ConnectionOutcome::Connected),
    ] {
        let mut o = Outcomes::default();
        let fwd = diag("delivered", "delivered");
        o.request(req, 10, FateKind::Delivered, &fwd, "namespace b".into());
        reply(&mut o, 0x12, FateKind::Delivered, &fwd);
        reply(&mut o, 0x10, FateKind::Dropped, &diag(cause, "died"));
        let c = &o.connections()[0];
        assert_eq!(c.outcome, outcome, "{cause}: {}", c.explanation);
    }
}

#[test]
fn a_cause_resting_on_an_inferred_reason_says_so() {
    let mut f = Facts::from_parts(FateKind::Dropped, Some("NO_SOCKET"), None, VALUES);
    f.reason_inferred = true;
    f.kernel_has_reasons = false;
    let d = diagnose(&f);
    assert_eq!(d.cause, "no_socket");
    assert!(d.message.ends_with(INFERRED_NOTE), "{}", d.message);
    // A kernel with reasons that said only NOT_SPECIFIED.
    f.kernel_has_reasons = true;
    let d = diagnose(&f);
    assert!(d.message.ends_with(UNSPECIFIED_NOTE), "{}", d.message);
    let r = rule("-A DOCKER-USER -s 192.0.2.9/32 -j DROP", false);
    let mut f = Facts::from_parts(FateKind::Dropped, Some("NETFILTER_DROP"), None, VALUES);
    f.set_rule_values(&r);
    f.reason_inferred = true;
    let d = diagnose(&f);
    assert!(
        !d.message.contains(INFERRED_NOTE),
        "a traced rule decided: {}",
        d.message
    );
}

#[test]
fn client_segments_dying_after_the_handshake_stall_the_connection() {
    let mut o = Outcomes::default();
    let syn = tuple("203.0.113.50", 40476, "198.51.100.66", 8476, 6);
    let invalid = diag("conntrack_invalid", "conntrack marked it INVALID");
    o.request(
        syn,
        1,
        FateKind::Delivered,
        &diag("delivered", "in"),
        "s".into(),
    );
    o.reply(
        outcome::ReplySeen {
            last: syn.reversed(),
            last_netns: 1,
            flags: 0x12,
            icmp: None,
            origin: "namespace s".into(),
        },
        FateKind::Delivered,
        &diag("delivered", "back"),
    );
    o.request(syn, 1, FateKind::Dropped, &invalid, "namespace r1".into());
    let c = &o.connections()[0];
    assert_eq!(c.outcome, ConnectionOutcome::Stalled, "{}", c.explanation);
    assert!(c.explanation.contains("INVALID"), "{}", c.explanation);
    // A segment refused by a socket that already closed stalls nothing,
    // and one that got through after a drop clears it.
    let mut o = Outcomes::default();
    o.request(
        syn,
        1,
        FateKind::Delivered,
        &diag("delivered", "in"),
        "s".into(),
    );
    o.reply(
        outcome::ReplySeen {
            last: syn.reversed(),
            last_netns: 1,
            flags: 0x12,
            icmp: None,
            origin: "namespace s".into(),
        },
        FateKind::Delivered,
        &diag("delivered", "back"),
    );
    o.request(syn, 1, FateKind::Dropped, &invalid, "namespace r1".into());
    o.request(
        syn,
        1,
        FateKind::Delivered,
        &diag("delivered", "in"),
        "s".into(),
    );
    o.request(
        syn,
        1,
        FateKind::Dropped,
        &diag("no_socket", "closed"),
        "s".into(),
    );
    // Nor does the server's last segment, refused by the client's closed socket.
    o.reply(
        outcome::ReplySeen {
            last: syn.reversed(),
            last_netns: 1,
            flags: 0x11,
            icmp: None,
            origin: "namespace s".into(),
        },
        FateKind::Dropped,
        &diag("no_socket", "nothing listens"),
    );
    assert_eq!(o.connections()[0].outcome, ConnectionOutcome::Connected);
}

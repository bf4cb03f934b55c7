//! The failure classes of docs/diagnosis.md that are not a firewall rule,
//! each built for real in namespaces of its own. pathtrace runs on the
//! host with only the flow's flags (no `--netns`); each test checks where
//! the packet died, why, and what the client's own socket saw, then runs
//! the printed fix exactly as printed, where the advice says, and shows
//! that the next probe succeeds, or checks that no command is printed
//! where none is safe.
mod classes;

use classes::*;

#[test]
fn a_full_conntrack_table_is_named_and_raising_its_limit_works() {
    let test = "a_full_conntrack_table_is_named_and_raising_its_limit_works";
    require_root(test);
    let t = Routed::new(&prefix("ct"));
    let _srv = Listener::echo(&t.b);
    must(
        &t.b,
        "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    );
    let limit = 4;
    let _restore = ConntrackMax::lower_to(limit);
    let open = fill(&t.a, 8);
    assert_eq!(
        open.len() as u64,
        limit,
        "the table holds {limit} connections"
    );
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    for p in with_cause(&recs, "conntrack_full") {
        assert_eq!(p["fate"], "dropped", "{p:#}");
        assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
        assert!(
            message(p).contains(&format!("{limit} of {limit} entries"))
                && message(p).contains("conntrack.drop +"),
            "{p:#}"
        );
    }
    let fix = fix_of(&recs, "conntrack_full", None);
    assert!(
        fix.starts_with("sysctl -w net.netfilter.nf_conntrack_max="),
        "{fix}"
    );
    run_fix(None, &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    drop(open);
}

#[test]
fn a_full_accept_queue_is_a_drop_with_its_counter_and_no_command() {
    let test = "a_full_accept_queue_is_a_drop_with_its_counter_and_no_command";
    require_root(test);
    let t = Routed::new(&prefix("aq"));
    let _srv = Listener::spawn(&t.b, "0.0.0.0", PORT, 1, Serve::Never);
    let open = fill(&t.a, 6);
    assert!(!open.is_empty(), "the accept queue takes some connections");
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    for p in with_cause(&recs, "accept_queue_full") {
        assert_eq!(p["fate"], "dropped", "never delivered: {p:#}");
        assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
        assert!(
            message(p).contains(&format!("{} connections waiting", open.len()))
                && message(p).contains("TcpExt.ListenOverflows +"),
            "{p:#}"
        );
    }
    assert_no_command(&recs, "accept_queue_full");
}

#[test]
fn a_listener_on_another_address_is_named_and_no_command_is_printed() {
    let test = "a_listener_on_another_address_is_named_and_no_command_is_printed";
    require_root(test);
    let t = Routed::new(&prefix("la"));
    let _srv = Listener::spawn(&t.b, "127.0.0.1", PORT, 8, Serve::Close);
    let recs = to_server(&t, "ECONNREFUSED", "refused");
    let p = with_cause(&recs, "listener_elsewhere")[0];
    assert!(
        message(p).contains("listens on 127.0.0.1:8080 only"),
        "{p:#}"
    );
    assert_no_command(&recs, "listener_elsewhere");
}

#[test]
fn nothing_listening_is_refused_by_the_kernel_and_no_command_is_printed() {
    let test = "nothing_listening_is_refused_by_the_kernel_and_no_command_is_printed";
    require_root(test);
    let t = Routed::new(&prefix("nl"));
    let recs = to_server(&t, "ECONNREFUSED", "refused");
    let p = with_cause(&recs, "no_socket")[0];
    assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
    assert_no_command(&recs, "no_socket");
}

#[test]
fn dnat_to_a_port_nobody_listens_on_names_both_ports() {
    let test = "dnat_to_a_port_nobody_listens_on_names_both_ports";
    require_root(test);
    let t = Routed::new(&prefix("dn"));
    let _srv = Listener::start(&t.b);
    must(
        &t.r,
        "iptables -t nat -A PREROUTING -d 192.0.2.254 -p tcp --dport 8092 -j DNAT --to-destination 198.51.100.2:9999",
    );
    let router: IpAddr = "192.0.2.254".parse().expect("address");
    let ct = CtEvents::start(&t.r, "-e NEW -p tcp --orig-port-dst 8092");
    let recs = traced_connect(
        &["--dst", "192.0.2.254", "--dport", "8092"],
        &t.a,
        router,
        8092,
        1500,
        "ECONNREFUSED",
        "refused",
    );
    let p = with_cause(&recs, "no_socket")[0];
    assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
    assert!(
        message(p).contains("port 9999") && message(p).contains("192.0.2.254:8092"),
        "{p:#}"
    );
    assert_no_command(&recs, "no_socket");
    assert_nat_on_hops(&recs, &t.r, "dnat", &ct.stop());
}

#[test]
fn udp_to_a_closed_port_is_refused_and_to_an_open_one_is_delivered() {
    let test = "udp_to_a_closed_port_is_refused_and_to_an_open_one_is_delivered";
    require_root(test);
    let t = Routed::new(&prefix("ud"));
    let flow = ["--dst", SERVER, "--dport", "5353", "--proto", "udp"];
    let (seen, recs) = trace(&flow, || udp_probe(&t.a, 5353));
    assert_eq!(seen, "ECONNREFUSED");
    assert_connection(&recs, "refused", Some("ECONNREFUSED"));
    let p = with_cause(&recs, "no_socket")[0];
    assert!(message(p).contains("ICMP port-unreachable"), "{p:#}");
    assert_no_command(&recs, "no_socket");

    let _srv = Listener::spawn(&t.b, "0.0.0.0", 5353, 0, Serve::Udp);
    let (seen, recs) = trace(&flow, || udp_probe(&t.a, 5353));
    assert_eq!(seen, "no answer", "the socket never answers");
    let requests: Vec<&Value> = of_type(&recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .collect();
    assert!(!requests.is_empty(), "{recs:#?}");
    for p in requests {
        assert_eq!(p["fate"], "delivered", "not vanished: {p:#}");
        assert_eq!(p["diagnosis"]["cause"], "udp_delivered", "{p:#}");
    }
}

#[test]
fn a_conntrack_entry_older_than_the_dnat_rule_is_named_and_deleting_it_works() {
    let test = "a_conntrack_entry_older_than_the_dnat_rule_is_named_and_deleting_it_works";
    require_root(test);
    // The router's own service on UDP port 5300 answered the client (an
    // entry without NAT). The service then moved to the server behind a
    // DNAT rule: the client's flow keeps its old entry and never meets it.
    let t = Routed::new(&prefix("sn"));
    let router: IpAddr = "192.0.2.254".parse().expect("address");
    // A stateful firewall there: conntrack tracks the router's traffic.
    must(
        &t.r,
        "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    );
    let old = Listener::spawn(&t.r, "0.0.0.0", 5300, 0, Serve::UdpEcho);
    assert_eq!(udp_from_port(&t.a, 40123, router, 5300), "answered");
    drop(old);
    let _echo = Listener::spawn(&t.b, "0.0.0.0", 5300, 0, Serve::UdpEcho);
    must(
        &t.r,
        "iptables -t nat -A PREROUTING -d 192.0.2.254 -p udp --dport 5300 -j DNAT --to-destination 198.51.100.2:5300",
    );
    let flow = ["--dst", "192.0.2.254", "--dport", "5300", "--proto", "udp"];
    let (seen, recs) = trace(&flow, || udp_from_port(&t.a, 40123, router, 5300));
    assert_eq!(seen, "ECONNREFUSED", "the old entry still keeps the flow");
    let p = with_cause(&recs, "stale_nat")[0];
    assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
    assert!(
        message(p).contains("udp 192.0.2.1:40123 → 192.0.2.254:5300")
            && message(p).contains("table ip nat"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "stale_nat", Some(&t.r));
    assert!(
        fix.starts_with("conntrack -D") && fix.contains("--orig-port-src 40123"),
        "{fix}"
    );
    // Another client's entry for the same port stays: the fix is this flow's.
    assert_eq!(udp_from_port(&t.a, 40124, router, 5300), "answered");
    run_fix(Some(&t.r), &fix);
    assert_eq!(udp_from_port(&t.a, 40123, router, 5300), "answered");
    let (ok, left) = sh_in(
        Some(&t.r),
        "conntrack -L -p udp --orig-port-src 40124 2>/dev/null",
    );
    assert!(
        ok && left.contains("sport=40124"),
        "the other entry was kept: {left}"
    );
}

#[test]
fn a_router_that_does_not_masquerade_is_named_and_masquerading_this_flow_works() {
    let test = "a_router_that_does_not_masquerade_is_named_and_masquerading_this_flow_works";
    require_root(test);
    // LAN client A — its router R — upstream router B — server S. B knows
    // nothing of the LAN, and R forwards the LAN's packets unchanged: S's
    // answers die at B.
    let t = Routed::new(&prefix("mq"));
    let s = ExtraNs::new(format!("{}-s", prefix("mq")));
    lab::topo::sh(&[
        "ip", "link", "add", "s0", "netns", &s.0, "type", "veth", "peer", "name", "b1", "netns",
        &t.b,
    ]);
    must(&s.0, "ip link set lo up && ip addr add 203.0.113.2/24 dev s0 && ip link set s0 up && ip route add default via 203.0.113.254");
    must(&t.b, "ip addr add 203.0.113.254/24 dev b1 && ip link set b1 up && sysctl -qw net.ipv4.ip_forward=1 && ip route del default");
    must(&t.r, "ip route add default via 198.51.100.2");
    let _srv = Listener::spawn(&s.0, "0.0.0.0", 8080, 64, Serve::Close);
    let far: IpAddr = "203.0.113.2".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "203.0.113.2", "--dport", "8080"],
        &t.a,
        far,
        8080,
        2000,
        "ETIMEDOUT",
        "timed_out",
    );
    let p = with_cause(&recs, "missing_masquerade")[0];
    assert_eq!(p["netns_name"], t.b.as_str(), "the reply died there: {p:#}");
    assert!(
        message(p).contains(&format!("namespace {} forwarded", t.r))
            && message(p).contains("out of r1"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "missing_masquerade", Some(&t.r));
    assert!(
        fix.contains("-s 192.0.2.0/24 -o r1") && fix.contains("-d 203.0.113.2 -p tcp --dport 8080"),
        "{fix}"
    );
    run_fix(Some(&t.r), &fix);
    assert_eq!(tcp(&t.a, far, 8080, 2000), ProbeOutcome::Connected);
    // This flow only: another port is forwarded unmasqueraded as before.
    let (ok, rules) = sh_in(Some(&t.r), "iptables -t nat -S POSTROUTING");
    assert!(
        ok && rules.lines().filter(|l| l.contains("MASQUERADE")).count() == 1,
        "{rules}"
    );
}

#[test]
fn two_flows_snatted_to_one_port_clash_and_masquerading_the_second_works() {
    let test = "two_flows_snatted_to_one_port_clash_and_masquerading_the_second_works";
    require_root(test);
    require_tool(test, "conntrack");
    clashing_snat("cln", true);
    clashing_snat("cli", false);
}

#[test]
fn a_real_firewalld_zone_reject_gets_a_rich_rule_that_firewalld_takes_and_that_works() {
    let test = "a_real_firewalld_zone_reject_gets_a_rich_rule_that_firewalld_takes_and_that_works";
    require_root(test);
    let t = Routed::new(&prefix("fz"));
    let fw = Firewalld::start(test, &t.b);
    let _srv = Listener::start(&t.b);
    let recs = to_server(&t, "EHOSTUNREACH", "prohibited");
    let p = with_cause(&recs, "reject")[0];
    assert_eq!(p["diagnosis"]["manager"], "firewalld", "{p:#}");
    let fix = fix_of(&recs, "reject", Some(&t.b));
    assert!(
        fix.starts_with("firewall-cmd --zone=public --add-rich-rule="),
        "{fix}"
    );
    let (ok, out) = fw.cmd(&t.b, &fix);
    assert!(ok, "firewalld refused the printed fix: {fix}: {out}");
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    // This flow only: another port is still rejected.
    let _other = Listener::spawn(&t.b, "0.0.0.0", 8081, 8, Serve::Close);
    assert_eq!(errno_of(&tcp(&t.a, server(), 8081, 1500)), "EHOSTUNREACH");
}

#[test]
fn a_real_firewalld_between_zones_is_a_policys_and_its_rich_rule_works() {
    let test = "a_real_firewalld_between_zones_is_a_policys_and_its_rich_rule_works";
    require_root(test);
    let t = Routed::new(&prefix("fp"));
    // The router's LAN side in zone internal, the server's in dmz: written
    // as permanent configuration before firewalld starts (no reload).
    let zones = [
        zone_with_interface(test, "internal", "r0"),
        zone_with_interface(test, "dmz", "r1"),
    ];
    let _srv = Listener::start(&t.b);
    // No policy between the zones: firewalld's forward chain rejects, and
    // a policy takes --permanent and a reload: words, no command.
    {
        let _fw = Firewalld::start_with(test, &t.r, &zones);
        let recs = to_server(&t, "EHOSTUNREACH", "prohibited");
        let p = with_cause(&recs, "reject")[0];
        assert_eq!(p["diagnosis"]["manager"], "firewalld", "{p:#}");
        let advice = p["diagnosis"]["advice"].as_str().unwrap_or_default();
        assert!(advice.contains("from zone internal"), "{advice}");
        assert_no_command(&recs, "reject");
    }
    // A policy from internal to dmz that rejects (as `firewall-cmd
    // --permanent --new-policy` writes it): its rich rule opens this flow.
    let policy = (
        "policies/lan-to-dmz.xml".to_owned(),
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<policy target=\"REJECT\">\n  \
         <ingress-zone name=\"internal\"/>\n  <egress-zone name=\"dmz\"/>\n</policy>\n"
            .to_owned(),
    );
    let fw = Firewalld::start_with(test, &t.r, &[zones[0].clone(), zones[1].clone(), policy]);
    let (ok, out) = fw.cmd(&t.r, "firewall-cmd --info-policy=lan-to-dmz");
    assert!(
        ok && out.contains("target: REJECT") && out.contains("ingress-zones: internal"),
        "firewalld took the policy: {out}"
    );
    let recs = to_server(&t, "EHOSTUNREACH", "prohibited");
    let fix = fix_of(&recs, "reject", Some(&t.r));
    assert!(
        fix.starts_with("firewall-cmd --policy=lan-to-dmz --add-rich-rule="),
        "{fix}"
    );
    let (ok, out) = fw.cmd(&t.r, &fix);
    assert!(ok, "firewalld refused the printed fix: {fix}: {out}");
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    let _other = Listener::spawn(&t.b, "0.0.0.0", 8081, 8, Serve::Close);
    assert_eq!(errno_of(&tcp(&t.a, server(), 8081, 1500)), "EHOSTUNREACH");
}

#[test]
fn a_catch_all_reject_is_kept_and_only_this_flow_is_let_through() {
    let test = "a_catch_all_reject_is_kept_and_only_this_flow_is_let_through";
    require_root(test);
    let t = Routed::new(&prefix("ca"));
    let _srv = Listener::start(&t.b);
    let _other = Listener::spawn(&t.b, "0.0.0.0", 8081, 8, Serve::Close);
    must(
        &t.b,
        "iptables -A INPUT -p tcp -j REJECT --reject-with tcp-reset",
    );
    let recs = to_server(&t, "ECONNREFUSED", "refused");
    let fix = fix_of(&recs, "reject", Some(&t.b));
    assert!(
        !fix.contains(" -D ") && fix.contains("--dport 8080"),
        "{fix}"
    );
    run_fix(Some(&t.b), &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    assert_eq!(
        tcp(&t.a, server(), 8081, 1500),
        ProbeOutcome::Refused,
        "the catch-all still rejects the rest"
    );
}

#[test]
fn a_ban_in_an_nft_set_removes_only_the_clients_element() {
    let test = "a_ban_in_an_nft_set_removes_only_the_clients_element";
    require_root(test);
    let t = Routed::new(&prefix("sb"));
    let _srv = Listener::start(&t.b);
    banned_set(&t.b, "192.0.2.1, 192.0.2.50", false);
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    let fix = fix_of(&recs, "set_ban", Some(&t.b));
    assert_eq!(fix, "nft delete element inet filter banned { 192.0.2.1 }");
    run_fix(Some(&t.b), &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    let (_, set) = sh_in(Some(&t.b), "nft list set inet filter banned");
    assert!(set.contains("192.0.2.50"), "the others stay banned: {set}");
}

#[test]
fn a_ban_by_a_range_in_an_nft_set_is_kept_and_only_this_flow_accepted() {
    let test = "a_ban_by_a_range_in_an_nft_set_is_kept_and_only_this_flow_accepted";
    require_root(test);
    let t = Routed::new(&prefix("sr"));
    let _srv = Listener::start(&t.b);
    banned_set(&t.b, "192.0.2.0/24", true);
    let (seen, recs) = trace(&["--dst", SERVER, "--dport", "8080"], || {
        tcp(&t.a, server(), PORT, 1500)
    });
    assert_eq!(errno_of(&seen), "ETIMEDOUT", "the client saw {seen:?}");
    let fix = fix_of(&recs, "set_ban", Some(&t.b));
    assert!(
        fix.starts_with("nft insert rule inet filter input position ")
            && fix.ends_with("ip saddr 192.0.2.1 tcp dport 8080 accept"),
        "{fix}"
    );
    run_fix(Some(&t.b), &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    let (_, set) = sh_in(Some(&t.b), "nft list set inet filter banned");
    assert!(
        set.contains("192.0.2.0/24"),
        "the range stays banned: {set}"
    );
}

#[test]
fn hairpin_nat_is_named_and_masquerading_it_works() {
    let test = "hairpin_nat_is_named_and_masquerading_it_works";
    require_root(test);
    // A LAN on one bridge: router h1 (192.0.2.1, public 203.0.113.1),
    // client h2, server h3, the router forwarding 203.0.113.1:8092 to the
    // server's port 80 on the same LAN.
    let t = Bridged::new(&prefix("hp"), 3);
    let (router, client, srv) = (&t.hosts[0], &t.hosts[1], &t.hosts[2]);
    must(
        router,
        "sysctl -qw net.ipv4.ip_forward=1 && ip addr add 203.0.113.1/32 dev lo",
    );
    must(
        router,
        "iptables -t nat -A PREROUTING -d 203.0.113.1 -p tcp --dport 8092 -j DNAT --to-destination 192.0.2.3:80",
    );
    for h in [client, srv] {
        in_ns(h, &["ip", "route", "add", "default", "via", "192.0.2.1"]);
    }
    let _srv = Listener::spawn(srv, "0.0.0.0", 80, 8, Serve::Close);
    let public: IpAddr = "203.0.113.1".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "203.0.113.1", "--dport", "8092"],
        client,
        public,
        8092,
        2000,
        "ETIMEDOUT",
        "timed_out",
    );
    let p = with_cause(&recs, "hairpin_nat")[0];
    assert!(
        message(p).contains("back out of eth0") && message(p).contains("192.0.2.3:80"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "hairpin_nat", Some(router));
    assert!(
        fix.contains("MASQUERADE") && fix.contains("-s 192.0.2.0/24"),
        "{fix}"
    );
    run_fix(Some(router), &fix);
    assert_eq!(tcp(client, public, 8092, 2000), ProbeOutcome::Connected);
}

#[test]
fn no_arp_answer_is_named_on_the_sender_and_on_a_router_each_packet_once() {
    let test = "no_arp_answer_is_named_on_the_sender_and_on_a_router_each_packet_once";
    require_root(test);
    let t = Routed::new(&prefix("ne"));
    for (dst, place, dev) in [("192.0.2.77", &t.a, "a0"), ("198.51.100.77", &t.r, "r1")] {
        let to: IpAddr = dst.parse().expect("address");
        let (seen, recs) = trace(&["--dst", dst, "--dport", "8080"], || {
            tcp(&t.a, to, PORT, 6000)
        });
        assert_eq!(
            errno_of(&seen),
            "EHOSTUNREACH",
            "{dst}: the client saw {seen:?}"
        );
        assert_connection(&recs, "unreachable", Some("EHOSTUNREACH"));
        for p in with_cause(&recs, "neighbour_failed") {
            assert_eq!(p["netns_name"], place.as_str(), "{p:#}");
            assert!(
                message(p).contains(&format!("no host answers for {dst} on {dev}"))
                    && (message(p).contains("holds it as FAILED")
                        || message(p).contains("holds it as INCOMPLETE")),
                "{p:#}"
            );
        }
        // A SYN waits 3 s in the neighbour queue before its drop: shown
        // once, from the client on, never split into a vanished half and a
        // dropped half.
        for p in of_type(&recs, "packet")
            .into_iter()
            .filter(|p| p["direction"] == "request")
        {
            let hops = hops_of(&recs, &p["packet"]);
            assert_eq!(
                hops.first().map(|h| &h["netns_name"]),
                Some(&Value::from(t.a.as_str())),
                "a packet starting mid-path: {p:#}\nevery record:\n{}",
                one_per_line(&recs)
            );
        }
        assert_no_command(&recs, "neighbour_failed");
    }
}

#[test]
fn a_syn_held_past_the_idle_limit_by_a_slow_neighbour_is_one_packet() {
    let test = "a_syn_held_past_the_idle_limit_by_a_slow_neighbour_is_one_packet";
    require_root(test);
    let t = Routed::new(&prefix("nh"));
    // Three solicitations 1.5 s apart: the kernel holds a packet for an
    // unanswered neighbour 4.5 s, longer than the tracker's idle limit.
    for (ns, dev) in [(&t.a, "a0"), (&t.r, "r1")] {
        must(
            ns,
            &format!("sysctl -qw net.ipv4.neigh.{dev}.retrans_time_ms=1500"),
        );
    }
    for (dst, place) in [("192.0.2.79", &t.a), ("198.51.100.79", &t.r)] {
        let to: IpAddr = dst.parse().expect("address");
        let ((seen, waited), recs) = trace(&["--dst", dst, "--dport", "8080"], || {
            let started = std::time::Instant::now();
            (tcp(&t.a, to, PORT, 9000), started.elapsed())
        });
        assert_eq!(errno_of(&seen), "EHOSTUNREACH", "{dst}: {seen:?}");
        assert!(
            waited > TRACKER_IDLE,
            "{dst}: the client gave up after {waited:?}, within the idle limit"
        );
        for p in with_cause(&recs, "neighbour_failed") {
            assert_eq!(p["netns_name"], place.as_str(), "{p:#}");
        }
        let held = assert_each_held_request_once(&recs, dst, &t.a);
        if place == &t.r {
            // The router held the first SYN past the limit: the premise.
            assert!(held > TRACKER_IDLE, "the longest hold was {held:?}");
        }
    }
}

#[test]
fn a_held_packet_whose_drop_pathtrace_reads_late_is_one_packet() {
    let test = "a_held_packet_whose_drop_pathtrace_reads_late_is_one_packet";
    require_root(test);
    let t = Routed::new(&prefix("sl"));
    let dst = "198.51.100.81";
    let to: IpAddr = dst.parse().expect("address");
    let run = Running::start(&[
        "--dst",
        dst,
        "--dport",
        "8080",
        "--json",
        "--duration",
        "60",
    ]);
    let client = {
        let a = t.a.clone();
        std::thread::spawn(move || tcp(&a, to, PORT, 6000))
    };
    // The router holds the SYN 3 s for its neighbour, then drops it.
    // pathtrace is stopped from 2.5 s to 4.5 s, as a loaded machine may
    // stop it: it reads the drop after the SYN's last hop is older than
    // its idle limit, and must still read it as that SYN's end.
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(run.pid(), libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(2000));
    // SAFETY: as above.
    unsafe { libc::kill(run.pid(), libc::SIGCONT) };
    let seen = client.join().expect("the client thread");
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    let recs = records(&lines);
    assert_eq!(errno_of(&seen), "EHOSTUNREACH", "the client saw {seen:?}");
    for p in with_cause(&recs, "neighbour_failed") {
        assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
    }
    assert_each_held_request_once(&recs, dst, &t.a);
}

#[test]
fn no_ndp_answer_is_named_with_the_neighbour_table_state() {
    let test = "no_ndp_answer_is_named_with_the_neighbour_table_state";
    require_root(test);
    let t = Routed::new(&prefix("n6"));
    must(&t.a, "ip -6 addr add 2001:db8:1::1/64 dev a0 nodad");
    let dst = "2001:db8:1::77";
    let to: IpAddr = dst.parse().expect("address");
    let (seen, recs) = trace(&["--dst", dst, "--dport", "8080"], || {
        tcp(&t.a, to, PORT, 6000)
    });
    assert_eq!(errno_of(&seen), "EHOSTUNREACH", "the client saw {seen:?}");
    assert_connection(&recs, "unreachable", Some("EHOSTUNREACH"));
    for p in with_cause(&recs, "neighbour_failed") {
        assert_eq!(p["netns_name"], t.a.as_str(), "{p:#}");
        assert!(
            message(p).contains(&format!("no host answers for {dst} on a0"))
                && message(p).contains("NDP")
                && (message(p).contains("holds it as FAILED")
                    || message(p).contains("holds it as INCOMPLETE")),
            "{p:#}"
        );
    }
    // The kernel's own table says the same.
    let (_, table) = sh_in(Some(&t.a), &format!("ip -6 neigh show {dst} dev a0"));
    assert!(
        table.contains("FAILED") || table.contains("INCOMPLETE"),
        "{table}"
    );
    assert_no_command(&recs, "neighbour_failed");
}

#[test]
fn forwarding_off_on_a_router_is_named_and_turning_it_on_works() {
    let test = "forwarding_off_on_a_router_is_named_and_turning_it_on_works";
    require_root(test);
    let t = Routed::new(&prefix("fw"));
    let _srv = Listener::start(&t.b);
    must(&t.r, "sysctl -qw net.ipv4.ip_forward=0");
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    let fix = fix_of(&recs, "forwarding_disabled", Some(&t.r));
    assert_eq!(fix, "sysctl -w net.ipv4.ip_forward=1");
    run_fix(Some(&t.r), &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
}

#[test]
fn a_server_without_a_route_back_gets_one_through_its_router() {
    let test = "a_server_without_a_route_back_gets_one_through_its_router";
    require_root(test);
    let t = Routed::new(&prefix("rb"));
    let _srv = Listener::start(&t.b);
    must(&t.b, "ip route del default");
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    for p in with_cause(&recs, "no_route_back") {
        assert_eq!(p["fate"], "dropped", "never delivered: {p:#}");
        assert!(message(p).contains("Ip.OutNoRoutes +"), "{p:#}");
    }
    let fix = fix_of(&recs, "no_route_back", Some(&t.b));
    assert_eq!(fix, "ip route add 192.0.2.1 via 198.51.100.254 dev b0");
    run_fix(Some(&t.b), &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
}

#[test]
fn strict_reverse_path_filtering_on_an_asymmetric_path_is_named_and_loosening_it_works() {
    let test =
        "strict_reverse_path_filtering_on_an_asymmetric_path_is_named_and_loosening_it_works";
    require_root(test);
    // A second link between A and the router: A sends to B's network over
    // it, from its first address, and the router's route back to A goes
    // over the first link, so strict reverse-path filtering drops it.
    let t = Routed::new(&prefix("rp"));
    let _srv = Listener::start(&t.b);
    lab::topo::sh(&[
        "ip", "link", "add", "a1", "netns", &t.a, "type", "veth", "peer", "name", "r2", "netns",
        &t.r,
    ]);
    // ARP on the second link asks from its own address, so the router answers.
    must(
        &t.a,
        "ip addr add 203.0.113.1/24 dev a1 && ip link set a1 up && sysctl -qw net.ipv4.conf.a1.arp_announce=2",
    );
    must(
        &t.a,
        "ip route add 198.51.100.0/24 via 203.0.113.254 dev a1 src 192.0.2.1",
    );
    must(
        &t.r,
        "ip addr add 203.0.113.254/24 dev r2 && ip link set r2 up",
    );
    must(
        &t.r,
        "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.r2.rp_filter=1",
    );
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    let p = with_cause(&recs, "rp_filter")[0];
    assert!(
        message(p).contains("on r2")
            && message(p).contains("the route back to 192.0.2.1 leaves by r0, not r2")
            && message(p).contains("asymmetric"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "rp_filter", Some(&t.r));
    run_fix(Some(&t.r), &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
}

#[test]
fn a_tc_program_that_drops_is_named_and_only_this_flow_passes_ahead_of_it() {
    let test = "a_tc_program_that_drops_is_named_and_only_this_flow_passes_ahead_of_it";
    require_root(test);
    let t = Routed::new(&prefix("tc"));
    let _srv = Listener::start(&t.b);
    let _other = Listener::spawn(&t.b, "0.0.0.0", 8081, 8, Serve::Close);
    static_neighbours(&t);
    let prog = PinnedProgram::load(PROG_TC, 2, "pt_tc_drop");
    must(
        &t.b,
        &format!(
            "tc qdisc add dev b0 clsact && tc filter add dev b0 ingress bpf da pinned {}",
            prog.path.display()
        ),
    );
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    for p in with_cause(&recs, "tc_drop") {
        assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
        assert!(
            message(p).contains("tc ingress BPF program pt_tc_drop (id ")
                && message(p).contains("on b0"),
            "{p:#}"
        );
    }
    // Letting one flow pass ahead of the program takes tc's pass action
    // (act_gact). Without it no command is safe: the advice says what to
    // change, and names the filter's removal without offering it to run.
    if !kernel_has_gact(&t.b) {
        assert_no_command(&recs, "tc_drop");
        let p = with_cause(&recs, "tc_drop")[0];
        let advice = p["diagnosis"]["advice"].as_str().unwrap_or_default();
        assert!(
            advice.contains("tc filter del dev b0 ingress pref 49152"),
            "{advice}"
        );
        return;
    }
    let fix = fix_of(&recs, "tc_drop", Some(&t.b));
    assert!(
        fix.starts_with("tc filter add dev b0 ingress pref ") && fix.ends_with("action pass"),
        "{fix}"
    );
    run_fix(Some(&t.b), &fix);
    assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    assert_eq!(
        tcp(&t.a, server(), 8081, 1500),
        ProbeOutcome::TimedOut,
        "the program still drops the rest"
    );
}

#[test]
fn an_xdp_drop_is_one_packet_named_by_its_program_in_generic_and_native_mode() {
    let test = "an_xdp_drop_is_one_packet_named_by_its_program_in_generic_and_native_mode";
    require_root(test);
    for (mode, hook) in [("xdpgeneric", "XDP (generic)"), ("xdpdrv", "XDP (native)")] {
        let t = Routed::new(&prefix(&mode[3..6]));
        let _srv = Listener::start(&t.b);
        static_neighbours(&t);
        let prog = PinnedProgram::load(PROG_XDP, 1, "pt_xdp_drop");
        must(
            &t.b,
            &format!("ip link set dev b0 {mode} pinned {}", prog.path.display()),
        );
        let (seen, recs) = trace(&["--dst", SERVER, "--dport", "8080"], || {
            tcp(&t.a, server(), PORT, 1500)
        });
        assert_eq!(
            errno_of(&seen),
            "ETIMEDOUT",
            "{mode}: the client saw {seen:?}"
        );
        assert_connection(&recs, "timed_out", Some("ETIMEDOUT"));
        for p in of_type(&recs, "packet")
            .into_iter()
            .filter(|p| p["direction"] == "request")
        {
            assert_eq!(p["fate"], "dropped", "{mode}: never forwarded: {p:#}");
            assert_eq!(p["diagnosis"]["cause"], "xdp_drop", "{mode}: {p:#}");
            let hops = hops_of(&recs, &p["packet"]);
            assert_eq!(
                hops.first().map(|h| &h["netns_name"]),
                Some(&Value::from(t.a.as_str())),
                "{mode}: one packet from the client on: {hops:#?}"
            );
            assert!(
                message(p).contains(&format!("{hook} program pt_xdp_drop (id ")),
                "{mode}: {p:#}"
            );
        }
        let fix = fix_of(&recs, "xdp_drop", Some(&t.b));
        assert_eq!(fix, format!("ip link set dev b0 {mode} off"));
        run_fix(Some(&t.b), &fix);
        assert_eq!(tcp(&t.a, server(), PORT, 1500), ProbeOutcome::Connected);
    }
}

#[test]
fn a_proxmox_guest_firewall_is_changed_in_its_fw_file_and_br_netfilter_stays_on() {
    let test = "a_proxmox_guest_firewall_is_changed_in_its_fw_file_and_br_netfilter_stays_on";
    require_root(test);
    // A hypervisor's bridge passing frames through iptables, with chains
    // laid out as pve-firewall lays out a guest's (veth101i0-IN under
    // PVEFW-FORWARD), dropping the guest's port 8080.
    let t = Bridged::new(&prefix("pv"), 2);
    let (client, guest) = (&t.hosts[0], &t.hosts[1]);
    let _srv = Listener::spawn(guest, "0.0.0.0", PORT, 8, Serve::Close);
    for cmd in [
        "iptables -N PVEFW-FORWARD",
        "iptables -N veth101i0-IN",
        "iptables -A FORWARD -j PVEFW-FORWARD",
        "iptables -A PVEFW-FORWARD -j veth101i0-IN",
        "iptables -A veth101i0-IN -p tcp --dport 8080 -j DROP",
    ] {
        must(&t.hv, cmd);
    }
    let to: IpAddr = Bridged::ip(2).parse().expect("address");
    let dst = Bridged::ip(2);
    let recs = traced_connect(
        &["--dst", &dst, "--dport", "8080"],
        client,
        to,
        PORT,
        1500,
        "ETIMEDOUT",
        "timed_out",
    );
    let p = with_cause(&recs, "rule_drop")[0];
    let d = &p["diagnosis"];
    assert_eq!(d["manager"], "proxmox", "{p:#}");
    let advice = d["advice"].as_str().unwrap_or_default();
    assert!(
        advice.contains("/etc/pve/firewall/101.fw")
            && advice.contains("IN ACCEPT -source 192.0.2.1"),
        "{advice}"
    );
    assert!(!advice.contains("bridge-nf-call-iptables=0"), "{advice}");
    assert_no_command(&recs, "rule_drop");
}

#[test]
fn a_path_mtu_black_hole_names_the_link_the_icmp_and_the_rule_that_ate_it() {
    let test = "a_path_mtu_black_hole_names_the_link_the_icmp_and_the_rule_that_ate_it";
    require_root(test);
    // The router's link towards the client carries 1400 bytes, the server
    // sends 1500-byte segments, and the server's firewall drops all ICMP,
    // the router's fragmentation-needed with it.
    let t = Routed::new(&prefix("mt"));
    must(&t.r, "ip link set r0 mtu 1400");
    must(&t.b, "iptables -A INPUT -p icmp -j DROP");
    let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('0.0.0.0', 8080))\ns.listen(8)\nprint('listening', flush=True)\n\
                  while True:\n    c,_=s.accept()\n    c.recv(100)\n    c.sendall(b'x'*6000)\n    c.close()\n";
    let _srv = pathtrace_tests::Spawned::python_in(&t.b, script);
    let (seen, recs) = trace(&["--dst", SERVER, "--dport", "8080"], || fetch(&t.a, 6000));
    let err = seen.expect_err("the download stalls");
    assert!(
        err.starts_with("read after 0 bytes"),
        "connects, then stalls: {err}"
    );
    assert_connection(&recs, "stalled", None);
    for p in with_cause(&recs, "packet_too_big") {
        assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
        assert!(message(p).contains("the 1400-byte MTU of r0"), "{p:#}");
    }
    let p = with_cause(&recs, "pmtu_black_hole")[0];
    assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
    assert!(
        message(p).contains("fragmentation-needed")
            && message(p).contains("-A INPUT -p icmp -j DROP"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "pmtu_black_hole", Some(&t.b));
    assert_eq!(
        fix,
        "iptables -t filter -I INPUT 1 -p icmp --icmp-type fragmentation-needed -j ACCEPT"
    );
    run_fix(Some(&t.b), &fix);
    assert_eq!(fetch(&t.a, 6000), Ok(6000), "the next download completes");
}

#[test]
fn no_route_on_a_router_gets_one_through_the_neighbour_that_holds_the_address() {
    let test = "no_route_on_a_router_gets_one_through_the_neighbour_that_holds_the_address";
    require_root(test);
    // B also holds 203.0.113.9; the router has no route to it.
    let t = Routed::new(&prefix("nr"));
    let _srv = Listener::start(&t.b);
    must(&t.b, "ip addr add 203.0.113.9/32 dev lo");
    let to: IpAddr = "203.0.113.9".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "203.0.113.9", "--dport", "8080"],
        &t.a,
        to,
        PORT,
        1500,
        "ENETUNREACH",
        "unreachable",
    );
    let p = with_cause(&recs, "no_route")[0];
    assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
    let fix = fix_of(&recs, "no_route", Some(&t.r));
    assert_eq!(fix, "ip route add 203.0.113.9 via 198.51.100.2 dev r1");
    run_fix(Some(&t.r), &fix);
    assert_eq!(tcp(&t.a, to, PORT, 1500), ProbeOutcome::Connected);
}

#[test]
fn policy_routing_that_sends_a_client_to_another_table_is_named_without_a_command() {
    let test = "policy_routing_that_sends_a_client_to_another_table_is_named_without_a_command";
    require_root(test);
    // The router's main table reaches the server, but an `ip rule` sends
    // this client's packets to a table where the server's network is a
    // blackhole, and another rule takes the traffic of a firewall mark
    // (a selector pathtrace passes over).
    let t = Routed::new(&prefix("pr"));
    let _srv = Listener::start(&t.b);
    must(&t.r, "ip rule add fwmark 7 lookup 7 pref 900");
    must(&t.r, "ip rule add from 192.0.2.0/24 lookup 100 pref 1000");
    must(&t.r, "ip route add blackhole 198.51.100.0/24 table 100");
    let recs = to_server(&t, "ETIMEDOUT", "timed_out");
    for p in with_cause(&recs, "policy_routing") {
        assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
        assert!(
            message(p).contains("rule 1000: from 192.0.2.0/24 lookup 100")
                && message(p).contains("meets blackhole"),
            "{p:#}"
        );
    }
    assert_no_command(&recs, "policy_routing");
}

#[test]
fn a_discarding_route_in_the_main_table_is_named_without_a_command() {
    let test = "a_discarding_route_in_the_main_table_is_named_without_a_command";
    require_root(test);
    // The router reaches B's network, but its main table holds a more
    // specific route that discards the server: not a missing route, and
    // adding one would fail (it exists) or shadow a deliberate ban.
    for (case, kind, errno, outcome) in [
        ("dp", "prohibit", "EHOSTUNREACH", "prohibited"),
        ("db", "blackhole", "ETIMEDOUT", "timed_out"),
    ] {
        let t = Routed::new(&prefix(case));
        let _srv = Listener::spawn(&t.b, "0.0.0.0", 8732, 8, Serve::Close);
        must(&t.r, &format!("ip route add {kind} 198.51.100.2"));
        let recs = traced_connect(
            &["--dst", SERVER, "--dport", "8732"],
            &t.a,
            server(),
            8732,
            1500,
            errno,
            outcome,
        );
        let p = with_cause(&recs, "discard_route")[0];
        assert_eq!(p["netns_name"], t.r.as_str(), "{kind}: {p:#}");
        assert!(
            message(p).contains(&format!("{kind} 198.51.100.2")),
            "{kind}: {p:#}"
        );
        assert!(
            with_cause_absent(&recs, "no_route"),
            "{kind}: not a missing route: {recs:#?}"
        );
        assert_no_command(&recs, "discard_route");
    }
}

#[test]
fn a_udp_socket_that_never_reads_is_named_as_a_full_receive_buffer() {
    let test = "a_udp_socket_that_never_reads_is_named_as_a_full_receive_buffer";
    require_root(test);
    require_tool(test, "nstat");
    let t = Routed::new(&prefix("rq"));
    // Bound, with the smallest receive buffer, and never read.
    let _sock = Spawned::python_in(
        &t.b,
        "import socket, time\n\
         s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)\n\
         s.bind(('0.0.0.0', 8736))\n\
         print('listening', flush=True)\n\
         while True:\n    time.sleep(1)\n",
    );
    let before = udp_rcvbuf_errors(&t.b);
    let flow = ["--dst", SERVER, "--dport", "8736", "--proto", "udp"];
    let ((), recs) = trace(&flow, || {
        lab::topo::send_udp(&t.a, None, SERVER, 8736, 20, None);
        std::thread::sleep(Duration::from_millis(500));
    });
    let lost = udp_rcvbuf_errors(&t.b) - before;
    assert!(lost > 0, "the buffer never filled");
    let full = with_cause(&recs, "socket_rcvbuf_full");
    assert_eq!(
        full.len() as u64,
        lost,
        "one packet per datagram the kernel counted: {recs:#?}"
    );
    for p in &full {
        assert_eq!(p["fate"], "dropped", "{p:#}");
        assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
        assert!(message(p).contains("receive buffer was full"), "{p:#}");
    }
    assert_no_command(&recs, "socket_rcvbuf_full");
    let advice = full[0]["diagnosis"]["advice"].as_str().unwrap_or_default();
    assert!(advice.contains("bound on 0.0.0.0:8736"), "{advice}");
}

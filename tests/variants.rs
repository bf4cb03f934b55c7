//! Variants of the failure classes of docs/diagnosis.md as other hosts
//! have them: other prefixes and prefix lengths, nftables' own syntax where
//! the class test uses iptables (or the reverse), another role for the
//! failing box, UDP, IPv6, more than one hop, real managers' other forms,
//! and a filter expression instead of flags. Like `failures`, each test
//! traces with only the flow, checks where, why and what the client saw,
//! and runs the printed fix as printed. They judge pathtrace's userspace
//! diagnosis, the same on every kernel, and run on the host.
mod classes;

use classes::*;
use pathtrace_tests::UfwCopy;

#[test]
fn conntrack_invalid_on_a_router_that_sees_one_way_stalls_the_connection_traced_by_an_expression() {
    let test = "conntrack_invalid_on_a_router_that_sees_one_way_stalls_the_connection_traced_by_an_expression";
    require_root(test);
    // C reaches S through R1, and S answers through R2: R1's conntrack sees
    // the client's side alone, and its nft `ct state invalid drop` drops the
    // client's ACK and request once the handshake (through R2) is done.
    let n = Namespaces::new(&prefix("vi"), &["c", "r1", "r2", "s"]);
    let (c, r1, r2, s) = (n.ns("c"), n.ns("r1"), n.ns("r2"), n.ns("s"));
    veth(c, "c0", r1, "x0");
    veth(c, "c1", r2, "y0");
    veth(r1, "x1", s, "s0");
    veth(r2, "y1", s, "s1");
    must(c, "ip addr add 203.0.113.50/30 dev c0 && ip addr add 203.0.113.54/30 dev c1 && ip route add 198.51.100.64/26 via 203.0.113.49");
    must(r1, "ip addr add 203.0.113.49/30 dev x0 && ip addr add 198.51.100.65/30 dev x1 && sysctl -qw net.ipv4.ip_forward=1");
    must(r2, "ip addr add 203.0.113.53/30 dev y0 && ip addr add 198.51.100.69/30 dev y1 && ip route add 203.0.113.50/32 via 203.0.113.54 && sysctl -qw net.ipv4.ip_forward=1");
    must(s, "ip addr add 198.51.100.66/30 dev s0 && ip addr add 198.51.100.70/30 dev s1 && ip route add 203.0.113.48/28 via 198.51.100.69");
    for ns in [c, s] {
        must(
            ns,
            "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done",
        );
    }
    must(
        r1,
        "nft 'add table inet fw; add chain inet fw forward { type filter hook forward priority 0; policy accept; }; add rule inet fw forward ct state invalid drop; add rule inet fw forward ct state established,related accept'",
    );
    let _srv = bulk_server(s, "0.0.0.0", 8476);
    let target: SocketAddr = "198.51.100.66:8476".parse().expect("address");
    let (seen, recs) = trace(&["host 198.51.100.66 and tcp port 8476"], || {
        fetch_at(c, target, 6000)
    });
    let err = seen.expect_err("the download stalls");
    assert!(
        err.starts_with("read after 0 bytes"),
        "connects, then stalls: {err}"
    );
    // The server's answers match the expression too: they are replies,
    // not connections of their own.
    assert_eq!(connections(&recs).len(), 1, "{:#?}", connections(&recs));
    assert_connection(&recs, "stalled", None);
    for p in with_cause(&recs, "conntrack_invalid") {
        assert_eq!(p["netns_name"], r1, "{p:#}");
        assert!(
            message(p).contains("has an entry for this connection")
                && message(p).contains("ct state invalid drop"),
            "{p:#}"
        );
    }
    assert_no_command(&recs, "conntrack_invalid");
}

#[test]
fn udp_through_an_nft_router_that_does_not_masquerade_gets_an_nft_masquerade_that_works() {
    let test =
        "udp_through_an_nft_router_that_does_not_masquerade_gets_an_nft_masquerade_that_works";
    require_root(test);
    // Client C on a /27 — router R (nftables' own rules, a forward filter) —
    // upstream U, which knows nothing of the /27 — server S. The server's
    // UDP answers die at U; the client's datagram settles after them.
    let n = Namespaces::new(&prefix("vm"), &["c", "r", "u", "s"]);
    let (c, r, u, s) = (n.ns("c"), n.ns("r"), n.ns("u"), n.ns("s"));
    veth(c, "c0", r, "lan");
    veth(r, "wan", u, "u0");
    veth(u, "u1", s, "s0");
    must(
        c,
        "ip addr add 192.0.2.66/27 dev c0 && ip route add default via 192.0.2.65",
    );
    must(r, "ip addr add 192.0.2.65/27 dev lan && ip addr add 198.51.100.9/29 dev wan && ip route add default via 198.51.100.10 && sysctl -qw net.ipv4.ip_forward=1");
    must(u, "ip addr add 198.51.100.10/29 dev u0 && ip addr add 203.0.113.129/25 dev u1 && sysctl -qw net.ipv4.ip_forward=1");
    must(
        s,
        "ip addr add 203.0.113.200/25 dev s0 && ip route add default via 203.0.113.129",
    );
    must(
        r,
        "nft 'add table inet filter; add chain inet filter forward { type filter hook forward priority 0; policy drop; }; add rule inet filter forward ct state established,related accept; add rule inet filter forward iifname \"lan\" accept'",
    );
    let _echo = Listener::spawn(s, "0.0.0.0", 5374, 0, Serve::UdpEcho);
    let _tcp = Listener::spawn(s, "0.0.0.0", 8474, 8, Serve::Close);
    let far: IpAddr = "203.0.113.200".parse().expect("address");
    let flow = [
        "--dst",
        "203.0.113.200",
        "--dport",
        "5374",
        "--proto",
        "udp",
    ];
    let (seen, recs) = trace(&flow, || udp_from_port(c, 41374, far, 5374));
    assert_eq!(seen, "no answer");
    let p = with_cause(&recs, "missing_masquerade")[0];
    assert_eq!(p["netns_name"], u, "the reply died there: {p:#}");
    assert!(
        message(p).contains(&format!("namespace {r} forwarded"))
            && message(p).contains("out of wan")
            && message(p).contains("192.0.2.64/27"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "missing_masquerade", Some(r));
    assert!(
        fix.starts_with("nft ")
            && fix.contains("ip saddr 192.0.2.64/27 oifname \"wan\" ip daddr 203.0.113.200 udp dport 5374 masquerade"),
        "in the router's own syntax, this flow only: {fix}"
    );
    run_fix(Some(r), &fix);
    assert_eq!(udp_from_port(c, 41375, far, 5374), "answered");
    // This flow only: TCP to the same server is still forwarded unmasqueraded.
    assert_eq!(errno_of(&tcp(c, far, 8474, 1500)), "ETIMEDOUT");
}

#[test]
fn hairpin_nat_on_the_routers_own_bridge_with_nft_dnat_gets_an_nft_masquerade_that_works() {
    let test =
        "hairpin_nat_on_the_routers_own_bridge_with_nft_dnat_gets_an_nft_masquerade_that_works";
    require_root(test);
    // The router holds the LAN's bridge itself (198.51.100.128/25, no
    // switch namespace) and DNATs 203.0.113.77:8471 to the server's port
    // 8472 in a table of nftables' own; bridged frames skip iptables.
    let n = Namespaces::new(&prefix("vh"), &["r", "c", "s"]);
    let (r, c, s) = (n.ns("r"), n.ns("c"), n.ns("s"));
    let _ = std::process::Command::new("modprobe")
        .arg("br_netfilter")
        .output();
    must(r, "ip link add br0 type bridge && ip link set br0 up && ip addr add 198.51.100.129/25 dev br0 && ip addr add 203.0.113.77/32 dev lo && sysctl -qw net.ipv4.ip_forward=1");
    let _ = sh_in(Some(r), "sysctl -qw net.bridge.bridge-nf-call-iptables=0");
    for (ns, port, addr) in [
        (c, "vc", "198.51.100.140/25"),
        (s, "vs", "198.51.100.150/25"),
    ] {
        veth(ns, "eth0", r, port);
        must(r, &format!("ip link set {port} master br0"));
        must(
            ns,
            &format!("ip addr add {addr} dev eth0 && ip route add default via 198.51.100.129"),
        );
    }
    must(
        r,
        "nft 'add table ip edge; add chain ip edge pre { type nat hook prerouting priority dstnat; }; add rule ip edge pre ip daddr 203.0.113.77 tcp dport 8471 dnat to 198.51.100.150:8472'",
    );
    let _srv = Listener::spawn(s, "0.0.0.0", 8472, 8, Serve::Close);
    let public: IpAddr = "203.0.113.77".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "203.0.113.77", "--dport", "8471"],
        c,
        public,
        8471,
        2000,
        "ETIMEDOUT",
        "timed_out",
    );
    let p = with_cause(&recs, "hairpin_nat")[0];
    assert!(
        message(p).contains("back out of br0") && message(p).contains("198.51.100.150:8472"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "hairpin_nat", Some(r));
    assert!(
        fix.starts_with("nft ")
            && fix.contains(
                "ip saddr 198.51.100.128/25 ip daddr 198.51.100.150 tcp dport 8472 masquerade"
            ),
        "in the router's own syntax, this flow only: {fix}"
    );
    run_fix(Some(r), &fix);
    assert_eq!(tcp(c, public, 8471, 2000), ProbeOutcome::Connected);
}

#[test]
fn an_ipv6_only_listener_is_named_for_the_ipv4_client_it_refused() {
    let test = "an_ipv6_only_listener_is_named_for_the_ipv4_client_it_refused";
    require_root(test);
    let t = Routed::new(&prefix("v6o"));
    let script = "import socket\ns=socket.socket(socket.AF_INET6)\n\
                  s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
                  s.bind(('::', 8477))\ns.listen(8)\nprint('listening', flush=True)\n\
                  import time\nwhile True:\n    time.sleep(1)\n";
    let _srv = pathtrace_tests::Spawned::python_in(&t.b, script);
    let recs = traced_connect(
        &["--dst", SERVER, "--dport", "8477"],
        &t.a,
        server(),
        8477,
        1500,
        "ECONNREFUSED",
        "refused",
    );
    let p = with_cause(&recs, "listener_elsewhere")[0];
    assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
    assert!(
        message(p).contains("listens on [::]:8477 for IPv6 only"),
        "{p:#}"
    );
    assert_no_command(&recs, "listener_elsewhere");
}

#[test]
fn a_path_mtu_black_hole_over_ipv6_two_hops_away_names_the_link_and_its_nft_fix_works() {
    let test = "a_path_mtu_black_hole_over_ipv6_two_hops_away_names_the_link_and_its_nft_fix_works";
    require_root(test);
    // C — R1 — R2 — S over IPv6; R1's link to C carries 1280 bytes, and S's
    // nft table drops ICMPv6 errors, R1's packet-too-big with them.
    let n = Namespaces::new(&prefix("v6m"), &["c", "r1", "r2", "s"]);
    let (c, r1, r2, s) = (n.ns("c"), n.ns("r1"), n.ns("r2"), n.ns("s"));
    // Link-local addresses usable at once: no duplicate detection.
    for ns in [c, r1, r2, s] {
        must(
            ns,
            "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
        );
    }
    veth(c, "c0", r1, "x0");
    veth(r1, "x1", r2, "y0");
    veth(r2, "y1", s, "s0");
    must(
        c,
        "ip addr add 2001:db8:a::10/64 dev c0 nodad && ip route add default via 2001:db8:a::1",
    );
    must(r1, "ip addr add 2001:db8:a::1/64 dev x0 nodad && ip addr add 2001:db8:b::1/64 dev x1 nodad && ip route add 2001:db8:c::/64 via 2001:db8:b::2 && ip link set x0 mtu 1280 && sysctl -qw net.ipv6.conf.all.forwarding=1");
    must(r2, "ip addr add 2001:db8:b::2/64 dev y0 nodad && ip addr add 2001:db8:c::1/64 dev y1 nodad && ip route add 2001:db8:a::/64 via 2001:db8:b::1 && sysctl -qw net.ipv6.conf.all.forwarding=1");
    must(
        s,
        "ip addr add 2001:db8:c::20/64 dev s0 nodad && ip route add default via 2001:db8:c::1",
    );
    must(
        s,
        "nft 'add table inet hostfw; add chain inet hostfw input { type filter hook input priority 0; policy accept; }; add rule inet hostfw input icmpv6 type { destination-unreachable, packet-too-big, time-exceeded } drop'",
    );
    let _srv = bulk_server(s, "::", 8473);
    let target: SocketAddr = "[2001:db8:c::20]:8473".parse().expect("address");
    let (seen, recs) = trace(&["--dst", "2001:db8:c::20", "--dport", "8473"], || {
        fetch_at(c, target, 6000)
    });
    let err = seen.expect_err("the download stalls");
    assert!(
        err.starts_with("read after 0 bytes"),
        "connects, then stalls: {err}"
    );
    assert_connection(&recs, "stalled", None);
    for p in with_cause(&recs, "packet_too_big") {
        assert_eq!(p["netns_name"], r1, "{p:#}");
        assert!(
            message(p).contains("the 1280-byte MTU of x0")
                && message(p).contains("ICMPv6 packet-too-big"),
            "{p:#}"
        );
    }
    let p = with_cause(&recs, "pmtu_black_hole")[0];
    assert_eq!(p["netns_name"], s, "{p:#}");
    let fix = fix_of(&recs, "pmtu_black_hole", Some(s));
    assert!(
        fix.starts_with("nft insert rule inet hostfw input position ")
            && fix.ends_with(" icmpv6 type packet-too-big accept"),
        "{fix}"
    );
    run_fix(Some(s), &fix);
    assert_eq!(
        fetch_at(c, target, 6000),
        Ok(6000),
        "the next download completes"
    );
}

#[test]
fn no_ipv6_route_on_a_router_gets_one_through_the_neighbour_that_holds_the_address() {
    let test = "no_ipv6_route_on_a_router_gets_one_through_the_neighbour_that_holds_the_address";
    require_root(test);
    // B also holds 2001:db8:99::9, which the router has no route for; so
    // does a namespace made first that shares no link with the router.
    let decoy = ExtraNs::new(format!("{}-d", prefix("v6r")));
    must(
        &decoy.0,
        "ip link set lo up && ip addr add 2001:db8:99::9/128 dev lo",
    );
    let t = Routed::new(&prefix("v6r"));
    dual_stack(&t);
    must(
        &t.b,
        "ip addr add 2001:db8:99::9/128 dev lo && ip -6 route add default via 2001:db8:42::fe",
    );
    let _srv = Listener::spawn(&t.b, "::", 8490, 8, Serve::Close);
    let to: IpAddr = "2001:db8:99::9".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "2001:db8:99::9", "--dport", "8490"],
        &t.a,
        to,
        8490,
        1500,
        "ENETUNREACH",
        "unreachable",
    );
    let p = with_cause(&recs, "no_route")[0];
    assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
    let fix = fix_of(&recs, "no_route", Some(&t.r));
    assert_eq!(fix, "ip route add 2001:db8:99::9 via 2001:db8:42::2 dev r1");
    run_fix(Some(&t.r), &fix);
    assert_eq!(tcp(&t.a, to, 8490, 1500), ProbeOutcome::Connected);
}

#[test]
fn a_server_without_an_ipv6_route_back_gets_one_through_its_routers_ipv6_address() {
    let test = "a_server_without_an_ipv6_route_back_gets_one_through_its_routers_ipv6_address";
    require_root(test);
    // Dual stack; the server has IPv4 routes but no IPv6 route back.
    let t = Routed::new(&prefix("v6b"));
    dual_stack(&t);
    let _srv = Listener::spawn(&t.b, "::", 8483, 8, Serve::Close);
    let to: IpAddr = "2001:db8:42::2".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "2001:db8:42::2", "--dport", "8483"],
        &t.a,
        to,
        8483,
        1500,
        "ETIMEDOUT",
        "timed_out",
    );
    for p in with_cause(&recs, "no_route_back") {
        assert_eq!(p["netns_name"], t.b.as_str(), "{p:#}");
        assert!(
            message(p).contains("Snmp6.Ip6OutNoRoutes +")
                && message(p).contains("SYN to [2001:db8:42::2]:8483"),
            "{p:#}"
        );
    }
    let fix = fix_of(&recs, "no_route_back", Some(&t.b));
    let via = fix
        .strip_prefix("ip route add 2001:db8:41::1 via ")
        .and_then(|f| f.strip_suffix(" dev b0"))
        .unwrap_or_else(|| panic!("a route back to the client: {fix}"));
    assert!(
        via.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()),
        "through the router's IPv6 address: {fix}"
    );
    run_fix(Some(&t.b), &fix);
    assert_eq!(tcp(&t.a, to, 8483, 1500), ProbeOutcome::Connected);
}

#[test]
fn udp_to_a_host_a_router_cannot_reach_by_arp_is_a_silent_timeout_for_the_client() {
    let test = "udp_to_a_host_a_router_cannot_reach_by_arp_is_a_silent_timeout_for_the_client";
    require_root(test);
    // Nobody holds 198.51.100.77 on the router's far link: the router's ARP
    // goes unanswered and it sends the client an ICMP host-unreachable,
    // which a UDP socket takes as a soft error and never reports.
    let t = Routed::new(&prefix("vna"));
    let to: IpAddr = "198.51.100.77".parse().expect("address");
    let target = SocketAddr::new(to, 5386);
    let flow = [
        "--dst",
        "198.51.100.77",
        "--dport",
        "5386",
        "--proto",
        "udp",
    ];
    let (seen, recs) = trace(&flow, || {
        lab::in_netns(&t.a, Duration::from_secs(10), move || {
            let s = UdpSocket::bind(("0.0.0.0", 0)).expect("udp socket");
            s.connect(target).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(6)))
                .expect("timeout");
            s.send(b"pathtrace").expect("send");
            s.recv(&mut [0u8; 64]).map_err(|e| e.kind())
        })
        .unwrap_or_else(|e| panic!("udp from {}: {e:?}", t.a))
    });
    assert!(
        matches!(
            seen,
            Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        ),
        "the client's socket reports nothing: {seen:?}"
    );
    assert_connection(&recs, "timed_out", Some("ETIMEDOUT"));
    let c = &connections(&recs)[0];
    assert!(
        c["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("soft error")),
        "{c:#}"
    );
    for p in with_cause(&recs, "neighbour_failed") {
        assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
        assert!(
            message(p).contains("no host answers for 198.51.100.77 on r1"),
            "{p:#}"
        );
    }
    assert_no_command(&recs, "neighbour_failed");
}

#[test]
fn a_missing_masquerade_behind_two_routers_is_fixed_on_the_last_that_knows_the_way_back() {
    let test =
        "a_missing_masquerade_behind_two_routers_is_fixed_on_the_last_that_knows_the_way_back";
    require_root(test);
    // C — R (the LAN's router) — M (knows the LAN through R) — U (knows
    // neither) — S. Neither R nor M masquerades; S's answers die at U. A
    // masquerade on R would not help: U has no route to R's side either.
    let n = Namespaces::new(&prefix("vm3"), &["c", "r", "m", "u", "s"]);
    let (c, r, m, u, s) = (n.ns("c"), n.ns("r"), n.ns("m"), n.ns("u"), n.ns("s"));
    veth(c, "c0", r, "lan");
    veth(r, "wan", m, "m0");
    veth(m, "m1", u, "u0");
    veth(u, "u1", s, "s0");
    must(
        c,
        "ip addr add 192.0.2.34/28 dev c0 && ip route add default via 192.0.2.33",
    );
    must(r, "ip addr add 192.0.2.33/28 dev lan && ip addr add 198.51.100.17/30 dev wan && ip route add default via 198.51.100.18");
    must(m, "ip addr add 198.51.100.18/30 dev m0 && ip addr add 203.0.113.5/30 dev m1 && ip route add 192.0.2.32/28 via 198.51.100.17 && ip route add default via 203.0.113.6");
    must(
        u,
        "ip addr add 203.0.113.6/30 dev u0 && ip addr add 203.0.113.129/25 dev u1",
    );
    must(
        s,
        "ip addr add 203.0.113.140/25 dev s0 && ip route add default via 203.0.113.129",
    );
    for ns in [r, m, u] {
        must(ns, "sysctl -qw net.ipv4.ip_forward=1");
    }
    let _srv = Listener::spawn(s, "0.0.0.0", 8491, 8, Serve::Close);
    let far: IpAddr = "203.0.113.140".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "203.0.113.140", "--dport", "8491"],
        c,
        far,
        8491,
        2000,
        "ETIMEDOUT",
        "timed_out",
    );
    let p = with_cause(&recs, "missing_masquerade")[0];
    assert_eq!(p["netns_name"], u, "the reply died there: {p:#}");
    assert!(
        message(p).contains(&format!("namespace {m} forwarded"))
            && message(p).contains("out of m1")
            && message(p).contains("192.0.2.32/28"),
        "{p:#}"
    );
    let fix = fix_of(&recs, "missing_masquerade", Some(m));
    assert!(
        fix.contains("-s 192.0.2.32/28 -o m1 -d 203.0.113.140 -p tcp --dport 8491"),
        "{fix}"
    );
    run_fix(Some(m), &fix);
    assert_eq!(tcp(c, far, 8491, 2000), ProbeOutcome::Connected);
}

#[test]
fn dnat_back_out_of_a_router_with_two_subnets_on_one_interface_is_no_hairpin() {
    let test = "dnat_back_out_of_a_router_with_two_subnets_on_one_interface_is_no_hairpin";
    require_root(test);
    // A router on a stick: one interface, two /26 subnets, client in one
    // and server in the other, on one switch. DNAT sends the packet back
    // out of the interface it came in on with its source unchanged, but
    // the server answers through its gateway, the router, which undoes
    // the DNAT: the connection works, and no hairpin is to be fixed.
    let n = Namespaces::new(&prefix("vst"), &["sw", "r", "c", "s"]);
    let (sw, r, c, s) = (n.ns("sw"), n.ns("r"), n.ns("c"), n.ns("s"));
    must(sw, "ip link add br0 type bridge && ip link set br0 up");
    for (i, ns) in [r, c, s].into_iter().enumerate() {
        let port = format!("p{i}");
        veth(ns, "eth0", sw, &port);
        must(sw, &format!("ip link set {port} master br0"));
    }
    must(r, "ip addr add 192.0.2.1/26 dev eth0 && ip addr add 192.0.2.65/26 dev eth0 && ip addr add 203.0.113.1/32 dev lo && sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0");
    must(
        c,
        "ip addr add 192.0.2.10/26 dev eth0 && ip route add default via 192.0.2.1",
    );
    must(
        s,
        "ip addr add 192.0.2.70/26 dev eth0 && ip route add default via 192.0.2.65",
    );
    must(
        r,
        "iptables -t nat -A PREROUTING -d 203.0.113.1 -p tcp --dport 8494 -j DNAT --to-destination 192.0.2.70:80",
    );
    let _srv = Listener::spawn(s, "0.0.0.0", 80, 8, Serve::Close);
    let public: IpAddr = "203.0.113.1".parse().expect("address");
    let (seen, recs) = trace(&["--dst", "203.0.113.1", "--dport", "8494"], || {
        tcp(c, public, 8494, 2000)
    });
    assert_eq!(seen, ProbeOutcome::Connected);
    assert_connection(&recs, "connected", None);
    let hairpins: Vec<&Value> = of_type(&recs, "packet")
        .into_iter()
        .filter(|p| p["diagnosis"]["cause"] == "hairpin_nat")
        .collect();
    assert!(hairpins.is_empty(), "no hairpin here: {hairpins:#?}");
}

#[test]
fn a_full_conntrack_table_on_the_client_fails_its_udp_send_and_raising_the_limit_works() {
    let test =
        "a_full_conntrack_table_on_the_client_fails_its_udp_send_and_raising_the_limit_works";
    require_root(test);
    // The client's own firewall tracks its connections; its table fills,
    // and the next datagram is dropped as it leaves: netfilter answers the
    // send itself with EPERM.
    let n = Namespaces::new(&prefix("vcc"), &["c", "s"]);
    let (c, s) = (n.ns("c"), n.ns("s"));
    veth(c, "c0", s, "s0");
    must(c, "ip addr add 192.0.2.130/28 dev c0");
    must(s, "ip addr add 192.0.2.140/28 dev s0");
    must(
        c,
        "nft 'add table inet host; add chain inet host output { type filter hook output priority 0; policy accept; }; add rule inet host output ct state established,related accept'",
    );
    let _echo = Listener::spawn(s, "0.0.0.0", 5396, 0, Serve::UdpEcho);
    let to: IpAddr = "192.0.2.140".parse().expect("address");
    let limit = 4;
    for sport in 41001..41001 + limit {
        assert_eq!(udp_from_port(c, sport, to, 5396), "answered");
    }
    let _restore = ConntrackMax::lower_to(u64::from(limit));
    let send = move || -> Result<(), i32> {
        let s = UdpSocket::bind(("0.0.0.0", 41021)).expect("udp socket");
        s.connect(SocketAddr::new(to, 5396)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(1200)))
            .expect("timeout");
        s.send(b"pathtrace")
            .map_err(|e| e.raw_os_error().unwrap_or(0))?;
        s.recv(&mut [0u8; 64])
            .map(|_| ())
            .map_err(|e| e.raw_os_error().unwrap_or(0))
    };
    let flow = ["--dst", "192.0.2.140", "--dport", "5396", "--proto", "udp"];
    let (seen, recs) = trace(&flow, || {
        lab::in_netns(c, Duration::from_secs(5), send).expect("udp from the client")
    });
    assert_eq!(seen, Err(libc::EPERM), "the send itself fails");
    assert_connection(&recs, "prohibited", Some("EPERM"));
    for p in with_cause(&recs, "conntrack_full") {
        assert_eq!(p["netns_name"], c, "{p:#}");
        assert!(
            message(p).contains(&format!("{limit} of {limit} entries")),
            "{p:#}"
        );
    }
    let fix = fix_of(&recs, "conntrack_full", None);
    assert!(
        fix.starts_with("sysctl -w net.netfilter.nf_conntrack_max="),
        "{fix}"
    );
    run_fix(None, &fix);
    assert_eq!(
        lab::in_netns(c, Duration::from_secs(5), send).expect("udp from the client"),
        Ok(()),
        "answered once the table has room"
    );
}

#[test]
fn ipv6_forwarding_off_on_a_router_is_named_and_turning_it_on_works() {
    let test = "ipv6_forwarding_off_on_a_router_is_named_and_turning_it_on_works";
    require_root(test);
    let t = Routed::new(&prefix("f6"));
    with_v6(&t);
    let _srv = Listener::spawn(&t.b, "::", 8731, 8, Serve::Close);
    // IPv4 forwarding stays on: only IPv6's is off.
    must(&t.r, "sysctl -qw net.ipv6.conf.all.forwarding=0");
    let to: IpAddr = "2001:db8:52::2".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "2001:db8:52::2", "--dport", "8731"],
        &t.a,
        to,
        8731,
        1500,
        "ETIMEDOUT",
        "timed_out",
    );
    let p = with_cause(&recs, "forwarding_disabled")[0];
    assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
    let fix = fix_of(&recs, "forwarding_disabled", Some(&t.r));
    assert_eq!(fix, "sysctl -w net.ipv6.conf.all.forwarding=1");
    run_fix(Some(&t.r), &fix);
    assert_eq!(tcp(&t.a, to, 8731, 1500), ProbeOutcome::Connected);
}

#[test]
fn real_ufw_route_rules_and_ipv6_clients_get_a_ufw_command_that_works() {
    let test = "real_ufw_route_rules_and_ipv6_clients_get_a_ufw_command_that_works";
    require_root(test);
    require_tool(test, "ufw");
    let t = Routed::new(&prefix("uf"));
    with_v6(&t);
    let ufw = UfwCopy::new(&t.r);
    ufw.routing();
    let ufw_in = |ns: &str, cmd: &str| {
        let (ok, out) = ufw.run(ns, cmd);
        assert!(ok, "{cmd} in {ns}: {out}");
    };
    // Forwarded traffic denied by a route rule on the router: `ufw allow`
    // (input rules) would not reach it.
    let _routed = Listener::spawn(&t.b, "0.0.0.0", 8733, 8, Serve::Close);
    ufw_in(&t.r, "ufw --force enable");
    ufw_in(
        &t.r,
        "ufw route deny from 192.0.2.1 to any port 8733 proto tcp",
    );
    let recs = traced_connect(
        &["--dst", SERVER, "--dport", "8733"],
        &t.a,
        server(),
        8733,
        1500,
        "ETIMEDOUT",
        "timed_out",
    );
    let fix = fix_of(&recs, "rule_drop", Some(&t.r));
    assert!(fix.starts_with("ufw route "), "{fix}");
    ufw_in(&t.r, &fix);
    assert_eq!(tcp(&t.a, server(), 8733, 1500), ProbeOutcome::Connected);
    // An IPv6 client behind a ufw rule of both families on the server:
    // ufw numbers IPv6 rules after IPv4 ones, so `insert 1` would fail.
    let _v6 = Listener::spawn(&t.b, "::", 8734, 8, Serve::Close);
    ufw_in(&t.b, "ufw --force enable");
    ufw_in(&t.b, "ufw deny 8734/tcp");
    let to: IpAddr = "2001:db8:52::2".parse().expect("address");
    let recs = traced_connect(
        &["--dst", "2001:db8:52::2", "--dport", "8734"],
        &t.a,
        to,
        8734,
        1500,
        "ETIMEDOUT",
        "timed_out",
    );
    let fix = fix_of(&recs, "rule_drop", Some(&t.b));
    ufw_in(&t.b, &fix);
    assert_eq!(tcp(&t.a, to, 8734, 1500), ProbeOutcome::Connected);
    for ns in [&t.r, &t.b] {
        let (_, status) = ufw.run(ns, "ufw status");
        assert!(status.contains("DENY"), "the deny rules stay: {status}");
    }
}

#[test]
fn policy_routing_by_firewall_mark_is_named_without_a_route_to_add() {
    let test = "policy_routing_by_firewall_mark_is_named_without_a_route_to_add";
    require_root(test);
    // The router marks this client's packets, and a rule on that mark sends
    // them to a table where everything is a blackhole: the main table
    // reaches the server, so a route added there would change nothing.
    let t = Routed::new(&prefix("fm"));
    let _srv = Listener::spawn(&t.b, "0.0.0.0", 8737, 8, Serve::Close);
    must(
        &t.r,
        "iptables -t mangle -A PREROUTING -s 192.0.2.1 -p tcp --dport 8737 -j MARK --set-mark 7",
    );
    must(&t.r, "ip rule add fwmark 7 lookup 7 pref 900");
    must(&t.r, "ip route add blackhole default table 7");
    let recs = traced_connect(
        &["--dst", SERVER, "--dport", "8737"],
        &t.a,
        server(),
        8737,
        1500,
        "ETIMEDOUT",
        "timed_out",
    );
    for p in with_cause(&recs, "policy_routing") {
        assert_eq!(p["netns_name"], t.r.as_str(), "{p:#}");
        assert!(
            message(p).contains("rule 900: from all fwmark 0x7 lookup 7")
                && message(p).contains("meets blackhole"),
            "{p:#}"
        );
    }
    assert!(with_cause_absent(&recs, "no_route"), "{recs:#?}");
    assert_no_command(&recs, "policy_routing");
}

#[test]
fn several_tc_filters_on_one_hook_are_all_named_and_this_flow_passes_ahead_of_them() {
    let test = "several_tc_filters_on_one_hook_are_all_named_and_this_flow_passes_ahead_of_them";
    require_root(test);
    let t = Routed::new(&prefix("t2"));
    with_v6(&t);
    let _srv = Listener::spawn(&t.b, "::", 8738, 8, Serve::Close);
    static_neighbours(&t);
    let mac = |dev: &str, ns: &str| {
        let (ok, out) = sh_in(Some(ns), &format!("cat /sys/class/net/{dev}/address"));
        assert!(ok, "{out}");
        out.trim().to_owned()
    };
    must(
        &t.r,
        &format!(
            "ip -6 neigh replace 2001:db8:52::2 lladdr {} dev r1 nud permanent",
            mac("b0", &t.b)
        ),
    );
    // The first filter goes on to the next (TC_ACT_UNSPEC); the second drops.
    let cont = PinnedProgram::load(PROG_TC, -1, "pt_tc_next");
    let drop = PinnedProgram::load(PROG_TC, 2, "pt_tc_drop");
    must(
        &t.b,
        &format!(
            "tc qdisc add dev b0 clsact && tc filter add dev b0 ingress pref 10 bpf da pinned {} && tc filter add dev b0 ingress pref 20 bpf da pinned {}",
            cont.path.display(),
            drop.path.display()
        ),
    );
    let v6: IpAddr = "2001:db8:52::2".parse().expect("address");
    for (to, dst) in [(server(), SERVER), (v6, "2001:db8:52::2")] {
        let recs = traced_connect(
            &["--dst", dst, "--dport", "8738"],
            &t.a,
            to,
            8738,
            1500,
            "ETIMEDOUT",
            "timed_out",
        );
        for p in with_cause(&recs, "tc_drop") {
            assert!(
                message(p).contains("one of the 2 tc ingress BPF programs pt_tc_next (id ")
                    && message(p).contains("pt_tc_drop (id ")
                    && message(p).contains("does not say which"),
                "{dst}: {p:#}"
            );
            let advice = p["diagnosis"]["advice"].as_str().unwrap_or_default();
            assert!(
                !advice.contains("tc filter del dev b0 ingress pref 10"),
                "{advice}"
            );
        }
        if !kernel_has_gact(&t.b) {
            assert_no_command(&recs, "tc_drop");
            continue;
        }
        let fix = fix_of(&recs, "tc_drop", Some(&t.b));
        assert!(fix.contains(" pref 9 "), "ahead of both: {fix}");
        run_fix(Some(&t.b), &fix);
        assert_eq!(tcp(&t.a, to, 8738, 1500), ProbeOutcome::Connected, "{dst}");
    }
}

#[test]
fn a_ban_by_address_and_port_or_by_verdict_map_removes_only_the_clients_element() {
    let test = "a_ban_by_address_and_port_or_by_verdict_map_removes_only_the_clients_element";
    require_root(test);
    for (case, decl, rule, want) in [
        (
            "sc",
            "set banned { type ipv4_addr . inet_service; elements = { 192.0.2.1 . 8739, 192.0.2.50 . 8739 }; }",
            "ip saddr . tcp dport @banned drop",
            "nft delete element inet filter banned { 192.0.2.1 . 8739 }",
        ),
        (
            "sm",
            "map banned { type ipv4_addr : verdict; elements = { 192.0.2.1 : drop, 192.0.2.50 : drop }; }",
            "ip saddr vmap @banned",
            "nft delete element inet filter banned { 192.0.2.1 }",
        ),
    ] {
        let t = Routed::new(&prefix(case));
        let _srv = Listener::spawn(&t.b, "0.0.0.0", 8739, 8, Serve::Close);
        must(
            &t.b,
            &format!(
                "nft -f - <<'EOF'\ntable inet filter {{\n {decl}\n chain input {{ type filter hook input priority 0; policy accept;\n  {rule}\n }}\n}}\nEOF"
            ),
        );
        let recs = traced_connect(
            &["--dst", SERVER, "--dport", "8739"],
            &t.a,
            server(),
            8739,
            1500,
            "ETIMEDOUT",
            "timed_out",
        );
        let fix = fix_of(&recs, "set_ban", Some(&t.b));
        assert_eq!(fix, want, "{rule}");
        run_fix(Some(&t.b), &fix);
        assert_eq!(tcp(&t.a, server(), 8739, 1500), ProbeOutcome::Connected);
        let (_, set) = sh_in(Some(&t.b), "nft list ruleset");
        assert!(set.contains("192.0.2.50"), "the others stay banned: {set}");
    }
}

#[test]
fn a_real_firewalld_zone_with_an_underscore_gets_its_own_name_for_ipv4_and_ipv6() {
    let test = "a_real_firewalld_zone_with_an_underscore_gets_its_own_name_for_ipv4_and_ipv6";
    require_root(test);
    // A zone of the admin's own, `lab_dmz` (its chains: filter_IN_lab_dmz,
    // filter_IN_lab_dmz_allow, …), holding the server's interface.
    let t = Routed::new(&prefix("zu"));
    with_v6(&t);
    let zone = (
        "zones/lab_dmz.xml".to_owned(),
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>lab</short>\n  <interface name=\"b0\"/>\n</zone>\n".to_owned(),
    );
    let fw = Firewalld::start_with(test, &t.b, &[zone]);
    let _srv = Listener::spawn(&t.b, "::", 8740, 8, Serve::Close);
    let v6: IpAddr = "2001:db8:52::2".parse().expect("address");
    for (to, dst, errno, family) in [
        (server(), SERVER, "EHOSTUNREACH", "ipv4"),
        (v6, "2001:db8:52::2", "EACCES", "ipv6"),
    ] {
        let recs = traced_connect(
            &["--dst", dst, "--dport", "8740"],
            &t.a,
            to,
            8740,
            1500,
            errno,
            "prohibited",
        );
        let fix = fix_of(&recs, "reject", Some(&t.b));
        assert!(
            fix.starts_with(&format!(
                "firewall-cmd --zone=lab_dmz --add-rich-rule='rule family={family} "
            )),
            "{fix}"
        );
        let (ok, out) = fw.cmd(&t.b, &fix);
        assert!(ok, "firewalld refused the printed fix: {fix}: {out}");
        assert_eq!(tcp(&t.a, to, 8740, 1500), ProbeOutcome::Connected, "{dst}");
    }
}

#[test]
fn a_proxmox_guests_outgoing_chain_gets_an_out_rule_in_its_fw_file() {
    let test = "a_proxmox_guests_outgoing_chain_gets_an_out_rule_in_its_fw_file";
    require_root(test);
    // The guest (a VM's tap, id 250, its second NIC) is the client here:
    // pve-firewall filters what it sends in tap250i1-OUT.
    let t = Bridged::new(&prefix("po"), 2);
    let (other, guest) = (&t.hosts[0], &t.hosts[1]);
    let _srv = Listener::spawn(other, "0.0.0.0", 8741, 8, Serve::Close);
    for cmd in [
        "iptables -N PVEFW-FORWARD",
        "iptables -N tap250i1-OUT",
        "iptables -A FORWARD -j PVEFW-FORWARD",
        "iptables -A PVEFW-FORWARD -j tap250i1-OUT",
        "iptables -A tap250i1-OUT -p tcp --dport 8741 -j DROP",
    ] {
        must(&t.hv, cmd);
    }
    let dst = Bridged::ip(1);
    let to: IpAddr = dst.parse().expect("address");
    let recs = traced_connect(
        &["--dst", &dst, "--dport", "8741"],
        guest,
        to,
        8741,
        1500,
        "ETIMEDOUT",
        "timed_out",
    );
    let p = with_cause(&recs, "rule_drop")[0];
    assert_eq!(p["diagnosis"]["manager"], "proxmox", "{p:#}");
    let advice = p["diagnosis"]["advice"].as_str().unwrap_or_default();
    assert!(
        advice.contains("/etc/pve/firewall/250.fw")
            && advice.contains("OUT ACCEPT -dest 192.0.2.1 -p tcp -dport 8741")
            && !advice.contains("IN ACCEPT"),
        "{advice}"
    );
    assert!(!advice.contains("bridge-nf-call-iptables=0"), "{advice}");
    assert_no_command(&recs, "rule_drop");
}

#[test]
fn a_listener_bound_to_another_interface_is_named_and_no_command_is_printed() {
    let test = "a_listener_bound_to_another_interface_is_named_and_no_command_is_printed";
    require_root(test);
    require_tool(test, "ss");
    // The service binds its socket to an interface of its own
    // (SO_BINDTODEVICE): /proc/net/tcp shows 0.0.0.0:8742, yet the SYN
    // arriving on b0 finds no socket.
    let t = Routed::new(&prefix("bd"));
    must(
        &t.b,
        "ip link add s9 type veth peer name s9p && ip link set s9 up",
    );
    let _srv = Spawned::python_in(
        &t.b,
        "import socket, time\n\
         s=socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b's9')\n\
         s.bind(('0.0.0.0', 8742))\n\
         s.listen(8)\n\
         print('listening', flush=True)\n\
         while True:\n    time.sleep(1)\n",
    );
    let recs = traced_connect(
        &["--dst", SERVER, "--dport", "8742"],
        &t.a,
        server(),
        8742,
        1500,
        "ECONNREFUSED",
        "refused",
    );
    let p = with_cause(&recs, "listener_elsewhere")[0];
    assert!(message(p).contains("0.0.0.0%s9:8742"), "{p:#}");
    assert_no_command(&recs, "listener_elsewhere");
}

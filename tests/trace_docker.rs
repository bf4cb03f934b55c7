//! End-to-end traces on the real-Docker lab (issue: the foundation).
//! Each test builds its own lab with its own prefix; the lab is torn down by
//! its `Drop`, so a failing assertion still leaves the host clean.
use std::{net::IpAddr, time::Duration};

use lab::{self, Block};
use pathtrace_tests::{
    connect, docker_lab, hops_of, netns_inode, of_type, reason, records, require_root, tier,
    tier_sees_hooks, trace, Running,
};
use serde_json::Value;

#[test]
fn client_syns_end_dropped_in_forward_with_netfilter_drop() {
    require_root("client_syns_end_dropped_in_forward_with_netfilter_drop");
    let lab = docker_lab("ptdrop", Block::Drop);
    let recs = trace(&lab, IpAddr::V4(lab.addrs.client), &lab.names.client, &[]);
    let packets = of_type(&recs, "packet");
    assert!(!packets.is_empty(), "no packet records: {recs:?}");
    let dock = netns_inode(&lab.names.dock);
    for p in &packets {
        assert_eq!(p["fate"], "dropped", "packet {p}");
        assert_eq!(p["hook"], "FORWARD", "packet {p}");
        assert_eq!(p["reason"], reason("NETFILTER_DROP"), "packet {p}");
        assert_eq!(p["saddr"], "192.0.2.9");
        assert_eq!(p["dport"], 8092);
        assert_eq!(
            p["netns"].as_u64(),
            Some(dock),
            "dropped in the Docker host's namespace"
        );
        let hops = hops_of(&recs, &p["packet"]);
        assert!(
            hops.iter().any(|h| h["kind"] == "rx"
                && h["ifname"] == "eth0"
                && h["netns"].as_u64() == Some(dock)),
            "no rx on the host's eth0: {hops:?}"
        );
        let last = hops.last().expect("hops");
        assert_eq!(last["kind"], "drop");
        assert_eq!(last["dport"], 80, "DNAT rewrote 8092 → 80 before FORWARD");
    }
    let stats = of_type(&recs, "stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0]["tier"], tier());
    assert_eq!(stats[0]["lost"], 0);
}

#[test]
fn other_hosts_syns_are_delivered_through_docker0_and_the_veth() {
    require_root("other_hosts_syns_are_delivered_through_docker0_and_the_veth");
    let lab = docker_lab("ptok", Block::Drop);
    let recs = trace(&lab, IpAddr::V4(lab.addrs.other), &lab.names.other, &[]);
    let packets = of_type(&recs, "packet");
    let syn = packets
        .iter()
        .find(|p| p["fate"] == "delivered" && p["hops"].as_u64() > Some(3))
        .unwrap_or_else(|| panic!("no delivered packet: {packets:?}"));
    let (dock, ctr) = (netns_inode(&lab.names.dock), netns_inode(&lab.names.ctr));
    let hops = hops_of(&recs, &syn["packet"]);
    let at = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        hops.iter()
            .position(|h| pred(h))
            .unwrap_or_else(|| panic!("no {what} in {hops:#?}"))
    };
    let eth0 = at(
        &|h| h["netns"].as_u64() == Some(dock) && h["ifname"] == "eth0" && h["kind"] == "rx",
        "rx on host eth0",
    );
    let docker0 = at(
        &|h| h["netns"].as_u64() == Some(dock) && h["ifname"] == "docker0",
        "hop on docker0",
    );
    let veth = at(
        &|h| {
            h["netns"].as_u64() == Some(dock)
                && h["ifname"].as_str().is_some_and(|n| n.starts_with("veth"))
        },
        "hop on the container's veth",
    );
    let inside = at(
        &|h| h["netns"].as_u64() == Some(ctr) && h["kind"] == "rx",
        "rx inside the container",
    );
    assert!(
        eth0 < docker0 && docker0 < veth && veth < inside,
        "hop order: {hops:#?}"
    );
    let last = hops.last().expect("hops");
    assert_eq!(last["kind"], "deliver");
    assert_eq!(last["netns"].as_u64(), Some(ctr));
    assert_eq!(last["daddr"], lab.addrs.container.to_string());
    assert_eq!(last["dport"], 80, "tuple rewritten to port 80");
    assert_eq!(syn["saddr"], "192.0.2.134");
    assert_eq!(syn["dport"], 8092);
    assert_eq!(syn["final"]["dport"], 80);
}

#[test]
fn traffic_outside_the_filter_yields_no_hops() {
    require_root("traffic_outside_the_filter_yields_no_hops");
    let lab = docker_lab("ptnone", Block::Drop);
    let run = Running::start(&["--src", "192.0.2.77", "--dport", "8092", "--json"]);
    let a = connect(&lab, &lab.names.client);
    let b = connect(&lab, &lab.names.other);
    assert_eq!(b, lab::ProbeOutcome::Connected, "the lab works");
    assert_eq!(a, lab::ProbeOutcome::TimedOut, "the client is blocked");
    std::thread::sleep(Duration::from_millis(300));
    let (code, lines) = run.stop();
    assert_eq!(code, 0);
    let recs = records(&lines);
    assert!(
        of_type(&recs, "hop").is_empty(),
        "hops for unmatched traffic: {recs:?}"
    );
    assert!(of_type(&recs, "packet").is_empty());
    assert_eq!(of_type(&recs, "stats").len(), 1);
}

#[test]
fn the_lab_leaves_nothing_behind_even_when_a_test_panics() {
    require_root("the_lab_leaves_nothing_behind_even_when_a_test_panics");
    let before = lab::leftovers("ptpanic");
    assert!(before.is_empty(), "leftovers before the test: {before:?}");
    let result = std::thread::spawn(|| {
        let _lab = docker_lab("ptpanic", Block::Drop);
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err(), "the thread panicked as planned");
    let after = lab::leftovers("ptpanic");
    assert!(after.is_empty(), "left behind after a panic: {after:?}");
}

/// The `nf_hook` hops of a packet as (hook, verdict) pairs, in order.
fn nf_hooks(recs: &[Value], packet: &Value) -> Vec<(String, String)> {
    hops_of(recs, packet)
        .into_iter()
        .filter(|h| h["kind"] == "nf_hook")
        .map(|h| {
            (
                h["hook"].as_str().unwrap_or("?").to_owned(),
                h["verdict"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
    want.iter()
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect()
}

#[test]
fn nf_hook_slow_verdicts_show_each_hook_in_order() {
    require_root("nf_hook_slow_verdicts_show_each_hook_in_order");
    if !tier_sees_hooks() {
        // This tier has no nf_hook_slow program: it must claim no verdicts,
        // and still name the dropping hook from the drop's stack.
        let lab = docker_lab("pthook", Block::Drop);
        let recs = trace(&lab, IpAddr::V4(lab.addrs.client), &lab.names.client, &[]);
        let hooks: Vec<_> = of_type(&recs, "hop")
            .into_iter()
            .filter(|h| h["kind"] == "nf_hook")
            .collect();
        assert!(
            hooks.is_empty(),
            "tier {} reported nf_hook hops: {hooks:?}",
            tier()
        );
        let dropped = of_type(&recs, "packet")
            .into_iter()
            .find(|p| p["fate"] == "dropped")
            .unwrap_or_else(|| panic!("no dropped packet: {recs:?}"));
        assert_eq!(dropped["hook"], "FORWARD");
        return;
    }
    let lab = docker_lab("pthook", Block::Drop);
    let recs = trace(&lab, IpAddr::V4(lab.addrs.other), &lab.names.other, &[]);
    let dock = netns_inode(&lab.names.dock);
    let delivered = of_type(&recs, "packet")
        .into_iter()
        .find(|p| p["fate"] == "delivered" && p["hops"].as_u64() > Some(3))
        .unwrap_or_else(|| panic!("no delivered packet: {recs:?}"));
    let in_dock: Vec<_> = nf_hooks(&recs, &delivered["packet"])
        .into_iter()
        .zip(
            hops_of(&recs, &delivered["packet"])
                .into_iter()
                .filter(|h| h["kind"] == "nf_hook"),
        )
        .filter(|(_, h)| h["netns"].as_u64() == Some(dock))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        in_dock,
        pairs(&[
            ("PREROUTING", "ACCEPT"),
            ("FORWARD", "ACCEPT"),
            ("POSTROUTING", "ACCEPT")
        ]),
        "the other host's SYN through the Docker host"
    );

    let recs = trace(&lab, IpAddr::V4(lab.addrs.client), &lab.names.client, &[]);
    let dropped = of_type(&recs, "packet")
        .into_iter()
        .find(|p| p["fate"] == "dropped")
        .unwrap_or_else(|| panic!("no dropped packet: {recs:?}"));
    let hooks = nf_hooks(&recs, &dropped["packet"]);
    let tail: Vec<_> = hooks.iter().rev().take(2).rev().cloned().collect();
    assert_eq!(
        tail,
        pairs(&[("PREROUTING", "ACCEPT"), ("FORWARD", "DROP")]),
        "the client's SYN: {hooks:?}"
    );
    assert_eq!(dropped["hook"], "FORWARD");
}

#[test]
fn ipv6_packets_are_followed_and_their_drops_named() {
    use pathtrace_tests::topo::{in_ns, sh};
    require_root("ipv6_packets_are_followed_and_their_drops_named");
    struct Pair;
    impl Drop for Pair {
        fn drop(&mut self) {
            for ns in ["ptv6-a", "ptv6-b"] {
                let _ = lab::delete_netns(ns);
            }
        }
    }
    let _cleanup = Pair;
    for ns in ["ptv6-a", "ptv6-b"] {
        let _ = lab::delete_netns(ns);
        sh(&["ip", "netns", "add", ns]);
    }
    sh(&[
        "ip", "link", "add", "v6a", "netns", "ptv6-a", "type", "veth", "peer", "name", "v6b",
        "netns", "ptv6-b",
    ]);
    for (ns, dev, addr) in [
        ("ptv6-a", "v6a", "2001:db8::1/64"),
        ("ptv6-b", "v6b", "2001:db8::2/64"),
    ] {
        in_ns(ns, &["ip", "-6", "addr", "add", addr, "dev", dev, "nodad"]);
        in_ns(ns, &["ip", "link", "set", dev, "up"]);
    }
    // A fresh link resolves its first neighbour only after link-local DAD
    // (about a second): until then the datagram waits in the neighbour queue.
    std::thread::sleep(Duration::from_millis(1200));
    let run = Running::start(&[
        "--src",
        "2001:db8::1",
        "--proto",
        "udp",
        "--json",
        "--no-rules",
    ]);
    in_ns(
        "ptv6-a",
        &["python3", "-c", "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\ns.sendto(b'x',('2001:db8::2',9))"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (code, lines) = run.stop();
    assert_eq!(code, 0);
    let recs = records(&lines);
    let p = of_type(&recs, "packet")
        .into_iter()
        .find(|p| p["direction"] == "request")
        .unwrap_or_else(|| panic!("no IPv6 packet: {recs:#?}"));
    assert_eq!(
        (p["saddr"].as_str(), p["daddr"].as_str()),
        (Some("2001:db8::1"), Some("2001:db8::2"))
    );
    assert_eq!(
        (p["proto"].as_str(), p["dport"].as_u64()),
        (Some("udp"), Some(9))
    );
    assert_eq!(p["fate"], "dropped", "{p}");
    assert_eq!(p["reason"], reason("NO_SOCKET"), "{p}");
    let hops = hops_of(&recs, &p["packet"]);
    assert!(
        hops.iter()
            .any(|h| h["kind"] == "tx" && h["ifname"] == "v6a"),
        "{hops:#?}"
    );
}

//! `pathtrace drops`: known drops caused in a routed namespace topology are
//! named as the running kernel names them.
use std::time::Duration;

use pathtrace_tests::{
    of_type, reason, records, require_root,
    topo::{in_ns, Routed},
    Running,
};
use serde_json::Value;

fn drops_while(args: &[&str], cause: impl FnOnce()) -> Vec<Value> {
    let mut all = vec!["drops", "--json"];
    all.extend_from_slice(args);
    let run = Running::start(&all);
    cause();
    std::thread::sleep(Duration::from_millis(500));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace drops exit status");
    records(&lines)
}

/// The drop `pick` selects, carrying the kernel reason `name` where the
/// kernel names drops (5.17 and later), no reason before (pathtrace says so
/// at start, and the drop is still found by what it is).
fn find<'a>(recs: &'a [Value], name: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    let want = reason(name);
    of_type(recs, "drop")
        .into_iter()
        .find(|d| d["reason"] == want && pick(d))
        .unwrap_or_else(|| panic!("no {name} drop (reason {want}) in {recs:#?}"))
}

fn dport(d: &Value) -> Option<u64> {
    d["dport"].as_u64()
}

#[test]
fn known_drops_are_named() {
    require_root("known_drops_are_named");
    let t = Routed::new("ptdrop");
    t.drop_udp(&t.b, 7);
    in_ns(&t.a, &["ip", "addr", "add", "203.0.113.5/32", "dev", "a0"]);
    in_ns(
        &t.r,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.rp_filter=1",
            "net.ipv4.conf.r0.rp_filter=1",
        ],
    );
    let recs = drops_while(&[], || {
        t.send_udp(&t.a, None, "198.51.100.2", 7, 1, None);
        t.send_udp(&t.a, None, "198.51.100.2", 99, 1, None);
        t.send_udp(&t.a, Some("203.0.113.5"), "198.51.100.2", 9, 1, None);
        t.send_udp(&t.a, None, "198.51.100.2", 9, 1, Some(1));
    });

    let nf = find(&recs, "NETFILTER_DROP", |d| dport(d) == Some(7));
    assert_eq!(
        (
            nf["hook"].as_str(),
            nf["dport"].as_u64(),
            nf["ifname"].as_str()
        ),
        (Some("INPUT"), Some(7), Some("b0"))
    );
    assert_eq!(nf["netns_name"], t.b);

    let nosock = find(&recs, "NO_SOCKET", |d| dport(d) == Some(99));
    assert_eq!(
        (nosock["dport"].as_u64(), nosock["proto"].as_str()),
        (Some(99), Some("udp"))
    );
    assert!(
        nosock["location"]
            .as_str()
            .is_some_and(|l| l.contains("udp")),
        "{nosock}"
    );

    let rp = find(&recs, "IP_RPFILTER", |d| d["saddr"] == "203.0.113.5");
    assert_eq!(
        (rp["saddr"].as_str(), rp["ifname"].as_str()),
        (Some("203.0.113.5"), Some("r0"))
    );
    assert_eq!(rp["netns_name"], t.r);

    // TTL 1 expires at the router: ip_forward drops it as a bad IP header.
    let ttl = find(&recs, "IP_INHDR", |d| {
        dport(d) == Some(9) && d["saddr"] != "203.0.113.5"
    });
    assert!(
        ttl["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("ip_forward")),
        "{ttl}"
    );
    assert_eq!(
        (ttl["netns_name"].as_str(), ttl["dport"].as_u64()),
        (Some(t.r.as_str()), Some(9))
    );

    let stats = of_type(&recs, "stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0]["lost"], 0);
}

#[test]
fn a_packet_to_a_device_that_is_down() {
    require_root("a_packet_to_a_device_that_is_down");
    let t = Routed::new("ptdown");
    let out = std::process::Command::new("ip")
        .args(["-n", &t.b, "-j", "link", "show", "b0"])
        .output()
        .expect("ip link");
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    let mac = links[0]["address"]
        .as_str()
        .expect("b0 has a MAC")
        .to_owned();
    in_ns(
        &t.r,
        &[
            "ip",
            "neigh",
            "replace",
            "198.51.100.2",
            "lladdr",
            &mac,
            "dev",
            "r1",
            "nud",
            "permanent",
        ],
    );
    in_ns(&t.b, &["ip", "link", "set", "b0", "down"]);
    let recs = drops_while(&["--src", "192.0.2.1"], || {
        t.send_udp(&t.a, None, "198.51.100.2", 11, 1, None)
    });
    let drops = of_type(&recs, "drop");
    assert_eq!(drops.len(), 1, "{recs:#?}");
    let d = drops[0];
    assert_eq!(
        d["reason"],
        reason("QDISC_DROP"),
        "the kernel's reason for a device whose link is down"
    );
    assert_eq!(
        (d["ifname"].as_str(), d["dport"].as_u64()),
        (Some("r1"), Some(11))
    );
    // The noop qdisc of a device without carrier frees the packet through
    // kfree_skb_list_reason (kfree_skb_list before 5.17), which on kernels
    // before 6.3 is the location the kernel reports (6.1, 5.10): pathtrace
    // names its caller from the stack, as later kernels do themselves.
    assert!(
        d["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("__dev_queue_xmit")),
        "{d}"
    );
}

#[test]
fn top_counts_a_flood_exactly() {
    require_root("top_counts_a_flood_exactly");
    let t = Routed::new("ptflood");
    t.drop_udp(&t.b, 7);
    let sent = 20_000;
    let run = Running::start(&[
        "drops",
        "--top",
        "--json",
        "--interval",
        "0.5",
        "--src",
        "192.0.2.1",
    ]);
    t.send_udp(&t.a, None, "198.51.100.2", 7, sent, None);
    std::thread::sleep(Duration::from_millis(800));
    let (code, lines) = run.stop();
    assert_eq!(code, 0);
    let recs = records(&lines);
    let totals = of_type(&recs, "drop_totals");
    assert_eq!(totals.len(), 1, "one totals record at exit");
    let rows = totals[0]["rows"].as_array().expect("rows");
    let nf = rows
        .iter()
        .find(|r| r["reason"] == reason("NETFILTER_DROP") && r["netns_name"] == t.b.as_str())
        .unwrap_or_else(|| panic!("no NETFILTER_DROP row: {rows:#?}"));
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &t.b, "iptables", "-L", "INPUT", "-v", "-x", "-n",
        ])
        .output()
        .expect("iptables -L");
    let listing = String::from_utf8_lossy(&out.stdout);
    let kernel: u64 = listing
        .lines()
        .find(|l| l.contains("DROP") && l.contains("dpt:7"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {listing}"));
    assert!(
        kernel > 0 && kernel <= u64::from(sent),
        "kernel dropped {kernel} of {sent}"
    );
    assert_eq!(
        nf["count"].as_u64(),
        Some(kernel),
        "--top agrees with the kernel's own counter"
    );
    assert!(
        !of_type(&recs, "drop_top").is_empty(),
        "live snapshots were printed"
    );
}

/// A namespace of its own that drops the UDP it sends to port 7 (its
/// OUTPUT chain), over a veth pair of its own; deleted when dropped.
struct Dropper(String);

impl Dropper {
    fn new(name: &str) -> Self {
        let _ = lab::delete_netns(name);
        pathtrace_tests::topo::sh(&["ip", "netns", "add", name]);
        let me = Self(name.to_owned());
        for cmd in [
            &[
                "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
            ][..],
            &["ip", "addr", "add", "192.0.2.1/24", "dev", "d0"],
            &["ip", "link", "set", "d0", "up"],
            &[
                "iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "7", "-j", "DROP",
            ],
        ] {
            in_ns(name, cmd);
        }
        me
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(lab::ns_path(&self.0))
            .map(|m| m.ino())
            .unwrap_or_else(|e| panic!("{}: {e}", self.0))
    }

    fn send(&self) {
        in_ns(
            &self.0,
            &[
                "python3",
                "-c",
                // The OUTPUT chain's drop is the sender's EPERM.
                "import socket\ntry: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.9', 7))\nexcept PermissionError: pass",
            ],
        );
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        let _ = lab::delete_netns(&self.0);
    }
}

#[test]
fn a_namespace_that_got_a_gone_ones_number_is_named_as_itself() {
    require_root("a_namespace_that_got_a_gone_ones_number_is_named_as_itself");
    // pathtrace reads namespace names again at most once a second: each
    // namespace sends after that second has passed.
    let settle = || std::thread::sleep(Duration::from_millis(1100));
    let run = Running::start(&["drops", "--json", "--dport", "7"]);
    let gone = Dropper::new("ptgone");
    let number = gone.inode();
    settle();
    gone.send();
    drop(gone);
    // The kernel gives a gone namespace's number to a later one once its
    // teardown (asynchronous) is over.
    let reused = (0..20)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(300));
            let n = Dropper::new("ptreused");
            (n.inode() == number).then_some(n)
        })
        .unwrap_or_else(|| panic!("no new namespace got number {number} back in 20 tries"));
    settle();
    reused.send();
    std::thread::sleep(Duration::from_millis(500));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace drops exit status");
    let recs = records(&lines);
    let drops = of_type(&recs, "drop");
    let names: Vec<(&Value, &Value)> = drops
        .iter()
        .map(|d| (&d["netns"], &d["netns_name"]))
        .collect();
    assert_eq!(
        names,
        [
            (&Value::from(number), &Value::from("ptgone")),
            (&Value::from(number), &Value::from("ptreused")),
        ],
        "{recs:#?}"
    );
}

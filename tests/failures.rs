//! The failure classes of docs/diagnosis.md that are not a firewall rule,
//! each built for real in namespaces of its own. pathtrace runs on the
//! host with only the flow's flags (no `--netns`); each test checks where
//! the packet died, why, and what the client's own socket saw, then runs
//! the printed fix exactly as printed, where the advice says, and shows
//! that the next probe succeeds, or checks that no command is printed
//! where none is safe.
use std::{
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use lab::{
    topo::{in_ns, Bridged, Routed},
    ProbeOutcome,
};
use pathtrace_tests::{
    command_in, command_place, errno_of, hops_of, of_type, records, require_root, require_tool,
    sh_in, CtEvents, Firewalld, Listener, PinnedProgram, Running, Serve, Spawned, UfwCopy, PROG_TC,
    PROG_XDP,
};
use serde_json::Value;

const SERVER: &str = "198.51.100.2";
const PORT: u16 = 8080;

fn server() -> IpAddr {
    SERVER.parse().expect("address")
}

/// A prefix of namespace names unique to this test process and case.
fn prefix(case: &str) -> String {
    format!("ptf{case}{}", std::process::id() % 10_000)
}

/// Traces with only `flow`'s flags while `during` runs; the JSON records.
fn trace<T>(flow: &[&str], during: impl FnOnce() -> T) -> (T, Vec<Value>) {
    let mut args = flow.to_vec();
    args.extend(["--json", "--duration", "60"]);
    let run = Running::start(&args);
    let seen = during();
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    (seen, records(&lines))
}

fn tcp(from: &str, to: IpAddr, port: u16, wait_ms: u64) -> ProbeOutcome {
    lab::tcp_connect(from, to, port, Duration::from_millis(wait_ms))
}

/// Traces with only `flow`'s flags while `from` connects to `to:port`
/// (giving up after `wait_ms`); checks the error the client's socket saw,
/// and that pathtrace's connection outcome and client error say the same.
fn traced_connect(
    flow: &[&str],
    from: &str,
    to: IpAddr,
    port: u16,
    wait_ms: u64,
    errno: &str,
    outcome: &str,
) -> Vec<Value> {
    let (seen, recs) = trace(flow, || tcp(from, to, port, wait_ms));
    assert_eq!(errno_of(&seen), errno, "the client saw {seen:?}");
    assert_connection(&recs, outcome, Some(errno));
    recs
}

/// [`traced_connect`] for the usual flow: A connects to the server's
/// port 8080 (1.5 s), traced with `--dst SERVER --dport 8080`.
fn to_server(t: &Routed, errno: &str, outcome: &str) -> Vec<Value> {
    traced_connect(
        &["--dst", SERVER, "--dport", "8080"],
        &t.a,
        server(),
        PORT,
        1500,
        errno,
        outcome,
    )
}

/// The summary's connections.
fn connections(recs: &[Value]) -> Vec<Value> {
    of_type(recs, "summary")
        .first()
        .and_then(|s| s["connections"].as_array())
        .cloned()
        .unwrap_or_default()
}

/// The request packets whose diagnosis is `cause`; fails if there is none.
fn with_cause<'a>(recs: &'a [Value], cause: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = of_type(recs, "packet")
        .into_iter()
        .filter(|p| p["diagnosis"]["cause"] == cause)
        .collect();
    assert!(!found.is_empty(), "no packet with cause {cause}: {recs:#?}");
    found
}

/// The one connection's outcome and the client's errno as pathtrace says.
fn assert_connection(recs: &[Value], outcome: &str, errno: Option<&str>) {
    let conns = connections(recs);
    assert!(!conns.is_empty(), "no connection: {recs:#?}");
    for c in &conns {
        assert_eq!(c["outcome"], outcome, "{c:#}");
        assert_eq!(c["client_error"].as_str(), errno, "{c:#}");
    }
}

/// The advice of the first packet with `cause`, after checking it names
/// `place` (a namespace, or `None` for the host) as where its command runs.
fn fix_of(recs: &[Value], cause: &str, place: Option<&str>) -> String {
    let p = with_cause(recs, cause)[0];
    let advice = p["diagnosis"]["advice"]
        .as_str()
        .unwrap_or_else(|| panic!("no advice: {p:#}"));
    eprintln!("{cause}: {}\n  advice: {advice}", p["diagnosis"]["message"]);
    let cmd = command_in(advice).unwrap_or_else(|| panic!("no command in: {advice}"));
    assert_eq!(command_place(advice), place, "where to run it: {advice}");
    cmd.to_owned()
}

/// Checks that the first packet with `cause` prints no command.
fn assert_no_command(recs: &[Value], cause: &str) {
    let p = with_cause(recs, cause)[0];
    let advice = p["diagnosis"]["advice"].as_str().unwrap_or_default();
    eprintln!("{cause}: {}\n  advice: {advice}", p["diagnosis"]["message"]);
    assert_eq!(
        command_in(advice),
        None,
        "no command is safe here: {advice}"
    );
}

/// Runs a printed fix, exactly as printed, in `place`.
fn run_fix(place: Option<&str>, cmd: &str) {
    let (ok, out) = sh_in(place, cmd);
    assert!(ok, "the printed fix failed when run: {cmd}: {out}");
}

fn must(ns: &str, cmd: &str) {
    let (ok, out) = sh_in(Some(ns), cmd);
    assert!(ok, "{cmd} in {ns}: {out}");
}

fn message(p: &Value) -> &str {
    p["diagnosis"]["message"].as_str().unwrap_or_default()
}

/// Restores the host's conntrack limit when dropped, even on failure.
struct ConntrackMax(String);

const CT_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackMax {
    fn lower_to(n: u64) -> Self {
        let old = std::fs::read_to_string(CT_MAX).expect("nf_conntrack_max");
        std::fs::write(CT_MAX, n.to_string()).expect("lowering nf_conntrack_max");
        Self(old.trim().to_owned())
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        let _ = std::fs::write(CT_MAX, &self.0);
    }
}

/// Connections from `ns` to the server kept open, until one fails (at
/// most `max`).
fn fill(ns: &str, max: usize) -> Vec<TcpStream> {
    let target = SocketAddr::new(server(), PORT);
    lab::in_netns(ns, Duration::from_secs(30), move || {
        let mut open = Vec::new();
        for _ in 0..max {
            match TcpStream::connect_timeout(&target, Duration::from_millis(800)) {
                Ok(s) => open.push(s),
                Err(_) => break,
            }
        }
        open
    })
    .unwrap_or_else(|e| panic!("filling from {ns}: {e:?}"))
}

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

/// The `(original, reply)` tuples `(src, dst, sport, dport)` of a
/// conntrack event line (`[NEW] tcp 6 120 SYN_SENT src=… dst=… sport=… …`).
/// `(src, dst, sport, dport)` of one direction of a conntrack entry.
type CtSide = (String, String, u16, u16);

fn ct_event_tuples(line: &str) -> (CtSide, CtSide) {
    let field = |key: &str, nth: usize| -> String {
        line.split_whitespace()
            .filter_map(|w| w.strip_prefix(key))
            .nth(nth)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_owned()
    };
    let side = |n: usize| {
        (
            field("src=", n),
            field("dst=", n),
            field("sport=", n).parse().expect("port"),
            field("dport=", n).parse().expect("port"),
        )
    };
    (side(0), side(1))
}

/// A hop in `ns` shows the packet's conntrack entry with its `kind` NAT
/// mapping (`dnat`, `snat`) in JSON, and the entry is the one the kernel
/// announced there (`conntrack -E`'s NEW event, in `events`).
fn assert_nat_on_hops(recs: &[Value], ns: &str, kind: &str, events: &[String]) {
    let new = events
        .iter()
        .find(|l| l.contains("[NEW]"))
        .unwrap_or_else(|| panic!("conntrack -E in {ns} saw no new entry: {events:?}"));
    let (orig, reply) = ct_event_tuples(new);
    let (from, to) = match kind {
        "dnat" => (
            format!("{}:{}", orig.1, orig.3),
            format!("{}:{}", reply.0, reply.2),
        ),
        _ => (
            format!("{}:{}", orig.0, orig.2),
            format!("{}:{}", reply.1, reply.3),
        ),
    };
    let hops = of_type(recs, "hop");
    let hop = hops
        .iter()
        .find(|h| h["netns_name"] == ns && h["ct"][kind].is_object())
        .unwrap_or_else(|| panic!("no hop in {ns} shows a {kind} entry: {hops:#?}"));
    assert_eq!(hop["ct"][kind]["from"], from.as_str(), "{hop:#}");
    assert_eq!(hop["ct"][kind]["to"], to.as_str(), "{hop:#}");
    assert_eq!(hop["ct"]["original"]["saddr"], orig.0.as_str(), "{hop:#}");
    assert_eq!(hop["ct"]["reply"]["saddr"], reply.0.as_str(), "{hop:#}");
    let status = hop["ct"]["status"].as_array().cloned().unwrap_or_default();
    assert!(
        status
            .iter()
            .any(|s| s == if kind == "dnat" { "dst_nat" } else { "src_nat" }),
        "{hop:#}"
    );
}

/// A connected UDP socket's answer: its recv error, or that it got one.
fn udp_probe(from: &str, port: u16) -> &'static str {
    udp_from_port(from, 0, server(), port)
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

/// A UDP exchange from `from`'s port `sport` to `to:port` on one socket
/// (the same conntrack entry each time): what came back.
fn udp_from_port(from: &str, sport: u16, to: IpAddr, port: u16) -> &'static str {
    let target = SocketAddr::new(to, port);
    lab::in_netns(from, Duration::from_secs(5), move || {
        let s = UdpSocket::bind(("0.0.0.0", sport)).expect("udp socket");
        s.connect(target).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(1200)))
            .expect("timeout");
        s.send(b"pathtrace").expect("send");
        match s.recv(&mut [0u8; 64]) {
            Ok(_) => "answered",
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => "ECONNREFUSED",
            Err(_) => "no answer",
        }
    })
    .unwrap_or_else(|e| panic!("udp exchange from {from}: {e:?}"))
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

/// A namespace of a test's own, beyond a lab's topology; deleted when dropped.
struct ExtraNs(String);

impl ExtraNs {
    fn new(name: String) -> Self {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Self(name)
    }
}

impl Drop for ExtraNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
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

/// The clash test's service port, and the one port its router's SNAT maps onto.
const CLASH_PORT: u16 = 8347;
const CLASH_TO: &str = "198.51.100.254:40347";

/// Connects from `ns` to the server's `port` and keeps the connection.
fn hold_open(ns: &str, port: u16) -> TcpStream {
    let target = SocketAddr::new(server(), port);
    lab::in_netns(ns, Duration::from_secs(5), move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(2))
    })
    .unwrap_or_else(|e| panic!("connecting from {ns}: {e:?}"))
    .unwrap_or_else(|e| panic!("the first connection from {ns}: {e}"))
}

/// Whether an open connection to an echo server still carries data both ways.
fn echoes(s: &mut TcpStream) -> bool {
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut back = [0u8; 9];
    s.write_all(b"pathtrace").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"pathtrace"
}

/// conntrack's `insert_failed` in `ns`, summed over CPUs, as `conntrack -S` says.
fn insert_failed(ns: &str) -> u64 {
    let (ok, out) = sh_in(Some(ns), "conntrack -S");
    assert!(ok, "conntrack -S in {ns}: {out}");
    out.split_whitespace()
        .filter_map(|w| w.strip_prefix("insert_failed="))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// A router that SNATs the server's port to one address and port, in nft's
/// own syntax (`native`) or iptables-nft's: the first connection takes that
/// tuple, the second is NATed onto it and conntrack refuses it. The
/// printed fix masquerades the second flow ahead of the rule; the first
/// connection keeps its tuple and its data flowing.
fn clashing_snat(case: &str, native: bool) {
    let t = Routed::new(&prefix(case));
    let (rule, kept) = if native {
        must(&t.r, "nft add table ip edge && nft add chain ip edge post '{ type nat hook postrouting priority srcnat; }'");
        (
            format!("nft add rule ip edge post ip daddr {SERVER} tcp dport {CLASH_PORT} snat to {CLASH_TO}"),
            "nft list chain ip edge post",
        )
    } else {
        (
            format!("iptables -t nat -A POSTROUTING -d {SERVER} -p tcp --dport {CLASH_PORT} -j SNAT --to-source {CLASH_TO}"),
            "iptables -t nat -S POSTROUTING",
        )
    };
    must(&t.r, &rule);
    let _srv = Listener::spawn(&t.b, "0.0.0.0", CLASH_PORT, 64, Serve::Echo);
    let mut first = hold_open(&t.a, CLASH_PORT);
    let first_port = first.local_addr().expect("local address").port();
    let failed_before = insert_failed(&t.r);
    let dport = CLASH_PORT.to_string();
    let recs = traced_connect(
        &["--dst", SERVER, "--dport", &dport],
        &t.a,
        server(),
        CLASH_PORT,
        2000,
        "ETIMEDOUT",
        "timed_out",
    );
    assert!(
        insert_failed(&t.r) > failed_before,
        "the kernel's own count of refused entries rose in {}",
        t.r
    );
    let p = with_cause(&recs, "nat_clash")[0];
    assert_eq!(p["fate"], "dropped", "{p:#}");
    assert_eq!(
        p["netns_name"],
        t.r.as_str(),
        "it died on the router: {p:#}"
    );
    assert!(
        message(p).contains("dropped in POSTROUTING"),
        "conntrack confirms it as it leaves: {p:#}"
    );
    let written = if native {
        format!("snat to {CLASH_TO}")
    } else {
        format!("-j SNAT --to-source {CLASH_TO}")
    };
    assert!(
        message(p).contains(&format!("tcp {CLASH_TO} → {SERVER}:{CLASH_PORT}"))
            && message(p).contains(&format!(
                "tcp 192.0.2.1:{first_port} → {SERVER}:{CLASH_PORT}"
            ))
            && message(p).contains("conntrack.insert_failed +")
            && message(p).contains(&written),
        "the clash, the entry that holds the tuple and the rule: {p:#}"
    );
    let fix = fix_of(&recs, "nat_clash", Some(&t.r));
    let engine = if native {
        "nft insert rule ip edge post position "
    } else {
        "iptables -t nat -I POSTROUTING 1 "
    };
    assert!(
        fix.starts_with(engine) && fix.contains("192.0.2.1") && fix.contains(&dport),
        "{fix}"
    );
    run_fix(Some(&t.r), &fix);
    assert_eq!(
        tcp(&t.a, server(), CLASH_PORT, 2000),
        ProbeOutcome::Connected
    );
    // The first connection keeps its tuple and its data; the rule stays.
    assert!(echoes(&mut first), "the first connection still echoes");
    let (ok, entry) = sh_in(
        Some(&t.r),
        &format!("conntrack -L -p tcp --orig-port-src {first_port} 2>/dev/null"),
    );
    assert!(
        ok && entry.contains("ESTABLISHED") && entry.contains("dport=40347"),
        "the first connection's entry is untouched: {entry}"
    );
    let (ok, rules) = sh_in(Some(&t.r), kept);
    let narrow = if native {
        written
    } else {
        format!("--to-source {CLASH_TO}")
    };
    assert!(
        ok && rules.contains(&narrow),
        "the narrow rule stays: {rules}"
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

/// firewalld's shipped definition of `zone` with `interface` in it, as
/// `firewall-cmd --permanent --zone=ZONE --add-interface=DEV` writes it.
fn zone_with_interface(test: &str, zone: &str, interface: &str) -> (String, String) {
    let shipped = format!("/usr/lib/firewalld/zones/{zone}.xml");
    let xml = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|e| panic!("{test}: firewalld's zone {shipped}: {e}"));
    assert!(xml.contains("</zone>"), "{test}: {shipped} is not a zone");
    (
        format!("zones/{zone}.xml"),
        xml.replace(
            "</zone>",
            &format!("  <interface name=\"{interface}\"/>\n</zone>"),
        ),
    )
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

fn banned_set(ns: &str, elements: &str, interval: bool) {
    let flags = if interval { " flags interval;" } else { "" };
    let ruleset = format!(
        "table inet filter {{\n set banned {{ type ipv4_addr;{flags} elements = {{ {elements} }}; }}\n \
         chain input {{ type filter hook input priority 0; policy accept;\n  ip saddr @banned drop\n }}\n}}\n"
    );
    must(ns, &format!("nft -f - <<'EOF'\n{ruleset}EOF"));
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
                "a packet starting mid-path: {p:#}\n{hops:#?}"
            );
        }
        assert_no_command(&recs, "neighbour_failed");
    }
}

/// pathtrace's idle limit for a packet with no end (`track::IDLE`).
const TRACKER_IDLE: Duration = Duration::from_millis(3500);

/// Checks that every request `client_ns` sent to `dst` while a neighbour
/// held it is one packet: it starts in `client_ns`, and one last seen
/// before the neighbour failed was dropped then (one that reached the
/// router after it is queued again, and may be left open at exit).
/// The longest time between a request's first and last hop.
fn assert_each_held_request_once(recs: &[Value], dst: &str, client_ns: &str) -> Duration {
    let requests: Vec<(&Value, Vec<&Value>)> = of_type(recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .map(|p| (p, hops_of(recs, &p["packet"])))
        .collect();
    let t_ns = |h: Option<&&Value>| h.and_then(|h| h["t_ns"].as_u64()).unwrap_or(0);
    // When the neighbour failed.
    let failed = requests
        .iter()
        .flat_map(|(_, hops)| hops.iter().filter(|h| h["kind"] == "drop"))
        .filter_map(|h| h["t_ns"].as_u64())
        .min()
        .expect("no request was dropped");
    for (p, hops) in &requests {
        assert_eq!(
            hops.first().map(|h| &h["netns_name"]),
            Some(&Value::from(client_ns)),
            "{dst}: a packet starting mid-path, split off a held one: {p:#}\n{hops:#?}"
        );
        if t_ns(hops.last()) < failed {
            assert_eq!(
                p["fate"], "dropped",
                "{dst}: a held packet settled before its drop: {p:#}\n{hops:#?}"
            );
        }
    }
    let held = requests
        .iter()
        .map(|(_, hops)| t_ns(hops.last()).saturating_sub(t_ns(hops.first())))
        .max()
        .unwrap_or(0);
    Duration::from_nanos(held)
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

/// Permanent neighbour entries between the router and B, so that a
/// program that drops everything on B's link leaves ARP out of the story.
fn static_neighbours(t: &Routed) {
    let mac = |ns: &str, dev: &str| {
        let (ok, out) = sh_in(Some(ns), &format!("cat /sys/class/net/{dev}/address"));
        assert!(ok, "{out}");
        out.trim().to_owned()
    };
    // `ip netns exec` mounts a /sys of the namespace's own.
    let (b_mac, r_mac) = (mac(&t.b, "b0"), mac(&t.r, "r1"));
    must(
        &t.r,
        &format!("ip neigh replace 198.51.100.2 lladdr {b_mac} dev r1 nud permanent"),
    );
    must(
        &t.b,
        &format!("ip neigh replace 198.51.100.254 lladdr {r_mac} dev b0 nud permanent"),
    );
}

/// Whether the running kernel has tc's gact actions (`pass`, `drop`): a
/// filter with `action pass` is added on `ns`'s loopback, and taken off.
fn kernel_has_gact(ns: &str) -> bool {
    let (ok, _) = sh_in(
        Some(ns),
        "tc qdisc add dev lo clsact && tc filter add dev lo ingress protocol all u32 match u32 0 0 action pass",
    );
    must(ns, "tc qdisc del dev lo clsact 2>/dev/null || true");
    ok
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

/// Connects from `from`, asks, and reads what the server sends until it
/// closes: the bytes, or the error that stopped the read.
fn fetch(from: &str, want: usize) -> Result<usize, String> {
    fetch_at(from, SocketAddr::new(server(), PORT), want)
}

/// [`fetch`] from any server.
fn fetch_at(from: &str, target: SocketAddr, want: usize) -> Result<usize, String> {
    lab::in_netns(from, Duration::from_secs(10), move || {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET").map_err(|e| e.to_string())?;
        let mut got = 0;
        let mut buf = [0u8; 16384];
        while got < want {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(format!("read after {got} bytes: {e}")),
            }
        }
        Ok(got)
    })
    .unwrap_or_else(|e| panic!("fetch from {from}: {e:?}"))
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

// Variants of the classes above as other hosts have them: other prefixes,
// nftables' own syntax, another role for the failing box, UDP, IPv6, more
// than one hop, and a filter expression instead of flags.

/// Namespaces of a test's own, `{prefix}-{name}`, with `lo` up; deleted
/// when dropped.
struct Namespaces(Vec<ExtraNs>);

impl Namespaces {
    fn new(prefix: &str, names: &[&str]) -> Self {
        let all = names
            .iter()
            .map(|n| ExtraNs::new(format!("{prefix}-{n}")))
            .collect::<Vec<_>>();
        for ns in &all {
            must(&ns.0, "ip link set lo up");
        }
        Self(all)
    }

    fn ns(&self, name: &str) -> &str {
        self.0
            .iter()
            .map(|n| n.0.as_str())
            .find(|n| n.ends_with(&format!("-{name}")))
            .unwrap_or_else(|| panic!("no namespace {name}"))
    }
}

/// A veth from `a`'s `dev_a` to `b`'s `dev_b`, both up.
fn veth(a: &str, dev_a: &str, b: &str, dev_b: &str) {
    lab::topo::sh(&[
        "ip", "link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b,
    ]);
    must(a, &format!("ip link set {dev_a} up"));
    must(b, &format!("ip link set {dev_b} up"));
}

/// A server in `ns` on `addr:port` that reads a request and sends 6000 bytes.
fn bulk_server(ns: &str, addr: &str, port: u16) -> pathtrace_tests::Spawned {
    let family = if addr.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let script = format!(
        "import socket\ns=socket.socket(socket.{family})\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{addr}', {port}))\ns.listen(8)\nprint('listening', flush=True)\n\
         while True:\n    c,_=s.accept()\n    c.recv(100)\n    c.sendall(b'x'*6000)\n    c.close()\n"
    );
    pathtrace_tests::Spawned::python_in(ns, &script)
}

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

/// IPv6 on a [`Routed`] lab: A on 2001:db8:41::1/64 routed by R to B on
/// 2001:db8:42::2/64 (B has no IPv6 route beyond its link).
fn dual_stack(t: &Routed) {
    for (ns, dev, addr) in [
        (&t.a, "a0", "2001:db8:41::1/64"),
        (&t.r, "r0", "2001:db8:41::fe/64"),
        (&t.r, "r1", "2001:db8:42::fe/64"),
        (&t.b, "b0", "2001:db8:42::2/64"),
    ] {
        must(ns, &format!("ip addr add {addr} dev {dev} nodad"));
    }
    must(&t.a, "ip -6 route add default via 2001:db8:41::fe");
    must(&t.r, "sysctl -qw net.ipv6.conf.all.forwarding=1");
    // The veths' link-local addresses, which neighbour discovery uses,
    // done with duplicate detection (5 s at most).
    for ns in [&t.a, &t.r, &t.b] {
        must(
            ns,
            "for i in $(seq 50); do [ -z \"$(ip -6 addr show tentative)\" ] && exit 0; sleep 0.1; done; exit 1",
        );
    }
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

/// IPv6 on a [`Routed`] lab: A at 2001:db8:51::1, the router at ::fe on
/// both links, B at 2001:db8:52::2, each the other's default way.
fn with_v6(t: &Routed) {
    for (ns, cmd) in [
        (&t.a, "ip -6 addr add 2001:db8:51::1/64 dev a0 nodad"),
        (&t.a, "ip -6 route add default via 2001:db8:51::fe"),
        (&t.r, "ip -6 addr add 2001:db8:51::fe/64 dev r0 nodad"),
        (&t.r, "ip -6 addr add 2001:db8:52::fe/64 dev r1 nodad"),
        (&t.r, "sysctl -qw net.ipv6.conf.all.forwarding=1"),
        (&t.b, "ip -6 addr add 2001:db8:52::2/64 dev b0 nodad"),
        (&t.b, "ip -6 route add default via 2001:db8:52::fe"),
    ] {
        must(ns, cmd);
    }
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

/// Whether no packet has `cause`.
fn with_cause_absent(recs: &[Value], cause: &str) -> bool {
    !of_type(recs, "packet")
        .iter()
        .any(|p| p["diagnosis"]["cause"] == cause)
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

/// `nstat`'s absolute count of UDP datagrams dropped for a full receive
/// buffer in namespace `ns`.
fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let (ok, out) = sh_in(Some(ns), "nstat -az UdpRcvbufErrors");
    assert!(ok, "nstat in {ns}: {out}");
    out.lines()
        .find_map(|l| l.strip_prefix("UdpRcvbufErrors"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no UdpRcvbufErrors in: {out}"))
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

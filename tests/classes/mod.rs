//! What the failure-class suites (`failures`, `variants`) share: the flow
//! under test, tracing it, the checks on a diagnosis and its fix, and the
//! namespaces, servers and kernel settings the classes are built from.
#![allow(dead_code, unused_imports)]

pub use std::{
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

pub use lab::{
    topo::{in_ns, Bridged, Routed},
    ProbeOutcome,
};
pub use pathtrace_tests::{
    command_in, command_place, errno_of, hops_of, of_type, records, require_root, require_tool,
    sh_in, CtEvents, Firewalld, Listener, PinnedProgram, Running, Serve, Spawned, PROG_TC,
    PROG_XDP,
};
pub use serde_json::Value;

pub const SERVER: &str = "198.51.100.2";

pub const PORT: u16 = 8080;

pub fn server() -> IpAddr {
    SERVER.parse().expect("address")
}

/// A prefix of namespace names unique to this test process and case.
pub fn prefix(case: &str) -> String {
    format!("ptf{case}{}", std::process::id() % 10_000)
}

/// Traces with only `flow`'s flags while `during` runs; the JSON records.
pub fn trace<T>(flow: &[&str], during: impl FnOnce() -> T) -> (T, Vec<Value>) {
    let mut args = flow.to_vec();
    args.extend(["--json", "--duration", "60"]);
    let run = Running::start(&args);
    let seen = during();
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    (seen, records(&lines))
}

pub fn tcp(from: &str, to: IpAddr, port: u16, wait_ms: u64) -> ProbeOutcome {
    lab::tcp_connect(from, to, port, Duration::from_millis(wait_ms))
}

/// Traces with only `flow`'s flags while `from` connects to `to:port`
/// (giving up after `wait_ms`); checks the error the client's socket saw,
/// and that pathtrace's connection outcome and client error say the same.
pub fn traced_connect(
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
pub fn to_server(t: &Routed, errno: &str, outcome: &str) -> Vec<Value> {
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
pub fn connections(recs: &[Value]) -> Vec<Value> {
    of_type(recs, "summary")
        .first()
        .and_then(|s| s["connections"].as_array())
        .cloned()
        .unwrap_or_default()
}

/// The request packets whose diagnosis is `cause`; fails if there is none.
pub fn with_cause<'a>(recs: &'a [Value], cause: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = of_type(recs, "packet")
        .into_iter()
        .filter(|p| p["diagnosis"]["cause"] == cause)
        .collect();
    assert!(!found.is_empty(), "no packet with cause {cause}: {recs:#?}");
    found
}

/// The one connection's outcome and the client's errno as pathtrace says.
pub fn assert_connection(recs: &[Value], outcome: &str, errno: Option<&str>) {
    let conns = connections(recs);
    assert!(!conns.is_empty(), "no connection: {recs:#?}");
    for c in &conns {
        assert!(
            c["outcome"] == outcome && c["client_error"].as_str() == errno,
            "want outcome {outcome} and client error {errno:?}: {c:#}\nevery record:\n{}",
            one_per_line(recs)
        );
    }
}

/// Records as JSON lines, for a failure's message.
pub fn one_per_line(recs: &[Value]) -> String {
    recs.iter().map(|r| format!("{r}\n")).collect()
}

/// The advice of the first packet with `cause`, after checking it names
/// `place` (a namespace, or `None` for the host) as where its command runs.
pub fn fix_of(recs: &[Value], cause: &str, place: Option<&str>) -> String {
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
pub fn assert_no_command(recs: &[Value], cause: &str) {
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
pub fn run_fix(place: Option<&str>, cmd: &str) {
    let (ok, out) = sh_in(place, cmd);
    assert!(ok, "the printed fix failed when run: {cmd}: {out}");
}

pub fn must(ns: &str, cmd: &str) {
    let (ok, out) = sh_in(Some(ns), cmd);
    assert!(ok, "{cmd} in {ns}: {out}");
}

pub fn message(p: &Value) -> &str {
    p["diagnosis"]["message"].as_str().unwrap_or_default()
}

/// Restores the host's conntrack limit when dropped, even on failure.
pub struct ConntrackMax(pub String);

pub const CT_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackMax {
    pub fn lower_to(n: u64) -> Self {
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
pub fn fill(ns: &str, max: usize) -> Vec<TcpStream> {
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

/// The `(original, reply)` tuples `(src, dst, sport, dport)` of a
/// conntrack event line (`[NEW] tcp 6 120 SYN_SENT src=… dst=… sport=… …`).
/// `(src, dst, sport, dport)` of one direction of a conntrack entry.
pub type CtSide = (String, String, u16, u16);

pub fn ct_event_tuples(line: &str) -> (CtSide, CtSide) {
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
pub fn assert_nat_on_hops(recs: &[Value], ns: &str, kind: &str, events: &[String]) {
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
pub fn udp_probe(from: &str, port: u16) -> &'static str {
    udp_from_port(from, 0, server(), port)
}

/// A UDP exchange from `from`'s port `sport` to `to:port` on one socket
/// (the same conntrack entry each time): what came back.
pub fn udp_from_port(from: &str, sport: u16, to: IpAddr, port: u16) -> &'static str {
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

/// A namespace of a test's own, beyond a lab's topology; deleted when dropped.
pub struct ExtraNs(pub String);

impl ExtraNs {
    pub fn new(name: String) -> Self {
        let _ = lab::delete_netns(&name);
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
        let _ = lab::delete_netns(&self.0);
    }
}

/// The clash test's service port, and the one port its router's SNAT maps onto.
pub const CLASH_PORT: u16 = 8347;

pub const CLASH_TO: &str = "198.51.100.254:40347";

/// Connects from `ns` to the server's `port` and keeps the connection.
pub fn hold_open(ns: &str, port: u16) -> TcpStream {
    let target = SocketAddr::new(server(), port);
    lab::in_netns(ns, Duration::from_secs(5), move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(2))
    })
    .unwrap_or_else(|e| panic!("connecting from {ns}: {e:?}"))
    .unwrap_or_else(|e| panic!("the first connection from {ns}: {e}"))
}

/// Whether an open connection to an echo server still carries data both ways.
pub fn echoes(s: &mut TcpStream) -> bool {
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut back = [0u8; 9];
    s.write_all(b"pathtrace").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"pathtrace"
}

/// conntrack's `insert_failed` in `ns`, summed over CPUs, as `conntrack -S` says.
pub fn insert_failed(ns: &str) -> u64 {
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
pub fn clashing_snat(case: &str, native: bool) {
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

/// firewalld's shipped definition of `zone` with `interface` in it, as
/// `firewall-cmd --permanent --zone=ZONE --add-interface=DEV` writes it.
pub fn zone_with_interface(test: &str, zone: &str, interface: &str) -> (String, String) {
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

pub fn banned_set(ns: &str, elements: &str, interval: bool) {
    let flags = if interval { " flags interval;" } else { "" };
    let ruleset = format!(
        "table inet filter {{\n set banned {{ type ipv4_addr;{flags} elements = {{ {elements} }}; }}\n \
         chain input {{ type filter hook input priority 0; policy accept;\n  ip saddr @banned drop\n }}\n}}\n"
    );
    must(ns, &format!("nft -f - <<'EOF'\n{ruleset}EOF"));
}

/// pathtrace's idle limit for a packet with no end (`track::IDLE`).
pub const TRACKER_IDLE: Duration = Duration::from_millis(3500);

/// Checks that every request `client_ns` sent to `dst` while a neighbour
/// held it is one packet: it starts in `client_ns`, and one last seen
/// before the neighbour failed was dropped then (one that reached the
/// router after it is queued again, and may be left open at exit).
/// The longest time between a request's first and last hop.
pub fn assert_each_held_request_once(recs: &[Value], dst: &str, client_ns: &str) -> Duration {
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
            "{dst}: a packet starting mid-path, split off a held one: {p:#}\nevery record:\n{}",
            one_per_line(recs)
        );
        if t_ns(hops.last()) < failed {
            assert_eq!(
                p["fate"],
                "dropped",
                "{dst}: a held packet settled before its drop: {p:#}\nevery record:\n{}",
                one_per_line(recs)
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

/// Permanent neighbour entries between the router and B, so that a
/// program that drops everything on B's link leaves ARP out of the story.
pub fn static_neighbours(t: &Routed) {
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
pub fn kernel_has_gact(ns: &str) -> bool {
    let (ok, _) = sh_in(
        Some(ns),
        "tc qdisc add dev lo clsact && tc filter add dev lo ingress protocol all u32 match u32 0 0 action pass",
    );
    must(ns, "tc qdisc del dev lo clsact 2>/dev/null || true");
    ok
}

/// Connects from `from`, asks, and reads what the server sends until it
/// closes: the bytes, or the error that stopped the read.
pub fn fetch(from: &str, want: usize) -> Result<usize, String> {
    fetch_at(from, SocketAddr::new(server(), PORT), want)
}

/// [`fetch`] from any server.
pub fn fetch_at(from: &str, target: SocketAddr, want: usize) -> Result<usize, String> {
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

/// Namespaces of a test's own, `{prefix}-{name}`, with `lo` up; deleted
/// when dropped.
pub struct Namespaces(pub Vec<ExtraNs>);

impl Namespaces {
    pub fn new(prefix: &str, names: &[&str]) -> Self {
        let all = names
            .iter()
            .map(|n| ExtraNs::new(format!("{prefix}-{n}")))
            .collect::<Vec<_>>();
        for ns in &all {
            must(&ns.0, "ip link set lo up");
        }
        Self(all)
    }

    pub fn ns(&self, name: &str) -> &str {
        self.0
            .iter()
            .map(|n| n.0.as_str())
            .find(|n| n.ends_with(&format!("-{name}")))
            .unwrap_or_else(|| panic!("no namespace {name}"))
    }
}

/// A veth from `a`'s `dev_a` to `b`'s `dev_b`, both up.
pub fn veth(a: &str, dev_a: &str, b: &str, dev_b: &str) {
    lab::topo::sh(&[
        "ip", "link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b,
    ]);
    must(a, &format!("ip link set {dev_a} up"));
    must(b, &format!("ip link set {dev_b} up"));
}

/// A server in `ns` on `addr:port` that reads a request and sends 6000 bytes.
pub fn bulk_server(ns: &str, addr: &str, port: u16) -> pathtrace_tests::Spawned {
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

/// IPv6 on a [`Routed`] lab: A on 2001:db8:41::1/64 routed by R to B on
/// 2001:db8:42::2/64 (B has no IPv6 route beyond its link).
pub fn dual_stack(t: &Routed) {
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

/// IPv6 on a [`Routed`] lab: A at 2001:db8:51::1, the router at ::fe on
/// both links, B at 2001:db8:52::2, each the other's default way.
pub fn with_v6(t: &Routed) {
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

/// Whether no packet has `cause`.
pub fn with_cause_absent(recs: &[Value], cause: &str) -> bool {
    !of_type(recs, "packet")
        .iter()
        .any(|p| p["diagnosis"]["cause"] == cause)
}

/// `nstat`'s absolute count of UDP datagrams dropped for a full receive
/// buffer in namespace `ns`.
pub fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let (ok, out) = sh_in(Some(ns), "nstat -az UdpRcvbufErrors");
    assert!(ok, "nstat in {ns}: {out}");
    out.lines()
        .find_map(|l| l.strip_prefix("UdpRcvbufErrors"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no UdpRcvbufErrors in: {out}"))
}

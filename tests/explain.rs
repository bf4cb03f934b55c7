//! What the client really saw, explained, over real firewall configurations:
//! iptables REJECT in its forms, nftables-native tables (a `reject with
//! icmpx admin-prohibited` and a policy drop), a FORWARD policy that drops
//! the replies, real ufw (Debian's package, run in the server's namespace
//! on a private copy of its configuration), a conntrack INVALID drop, the
//! real-Docker lab's DOCKER-USER, and a table laid out as firewalld lays
//! out its own. Each case checks the client's own socket error, pathtrace's
//! connection outcome and cause, and the manager named in the advice; then,
//! where there is a fix, runs the advice's command, exactly as printed, in
//! that namespace, and shows that the next connection succeeds.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use lab::{topo::Routed, Block, ProbeOutcome};
use pathtrace_tests::{
    armed_at_start, command_in, connect, docker_lab, errno_of, of_type, records, require_root,
    require_tool, sh_in, Listener, Running, UfwCopy,
};
use serde_json::Value;

const SERVER: &str = "198.51.100.2";
const PORT: u16 = 8080;

/// Where a case's firewall lives in [`Routed`].
#[derive(Clone, Copy)]
enum At {
    Server,
    Router,
}

/// What runs the case's commands (its setup, and the printed fix).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// iptables and nft as installed.
    Plain,
    /// Real ufw, on a private copy of /etc/ufw and /lib/ufw: see [`UfwCopy`].
    Ufw,
}

struct Case {
    name: &'static str,
    at: At,
    tool: Tool,
    /// Shell commands run in that namespace.
    setup: &'static [&'static str],
    /// The client socket's error: ECONNREFUSED, EHOSTUNREACH or ETIMEDOUT.
    client_error: &'static str,
    outcome: &'static str,
    /// The cause of the packets that show it (a request's or a reply's).
    cause: &'static str,
    manager: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "iptables REJECT (icmp-port-unreachable)",
        at: At::Server,
        tool: Tool::Plain,
        setup: &["iptables -A INPUT -p tcp --dport 8080 -j REJECT"],
        client_error: "ECONNREFUSED",
        outcome: "refused",
        cause: "reject",
        manager: "iptables",
    },
    Case {
        name: "iptables REJECT --reject-with icmp-host-prohibited",
        at: At::Server,
        tool: Tool::Plain,
        setup: &["iptables -A INPUT -p tcp --dport 8080 -j REJECT --reject-with icmp-host-prohibited"],
        client_error: "EHOSTUNREACH",
        outcome: "prohibited",
        cause: "reject",
        manager: "iptables",
    },
    Case {
        name: "iptables REJECT --reject-with tcp-reset",
        at: At::Server,
        tool: Tool::Plain,
        setup: &["iptables -A INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset"],
        client_error: "ECONNREFUSED",
        outcome: "refused",
        cause: "reject",
        manager: "iptables",
    },
    Case {
        name: "nft reject with icmpx admin-prohibited",
        at: At::Server,
        tool: Tool::Plain,
        setup: &[
            "nft add table inet filter",
            "nft add chain inet filter input '{ type filter hook input priority 0; policy accept; }'",
            "nft add rule inet filter input tcp dport 8080 reject with icmpx admin-prohibited",
        ],
        client_error: "EHOSTUNREACH",
        outcome: "prohibited",
        cause: "reject",
        manager: "nft",
    },
    Case {
        name: "nft-native policy drop",
        at: At::Server,
        tool: Tool::Plain,
        setup: &[
            "nft add table inet filter",
            "nft add chain inet filter input '{ type filter hook input priority 0; policy drop; }'",
            "nft add rule inet filter input iif lo accept",
            "nft add rule inet filter input ct state established,related accept",
        ],
        client_error: "ETIMEDOUT",
        outcome: "timed_out",
        cause: "policy_drop",
        manager: "nft",
    },
    Case {
        name: "FORWARD policy DROP with no return rule",
        at: At::Router,
        tool: Tool::Plain,
        setup: &[
            "iptables -P FORWARD DROP",
            "iptables -A FORWARD -p tcp -d 198.51.100.2 --dport 8080 -j ACCEPT",
        ],
        client_error: "ETIMEDOUT",
        outcome: "timed_out",
        cause: "reply_dropped",
        manager: "iptables",
    },
    Case {
        name: "ufw deny 8080/tcp",
        at: At::Server,
        tool: Tool::Ufw,
        setup: &["ufw --force enable", "ufw deny 8080/tcp"],
        client_error: "ETIMEDOUT",
        outcome: "timed_out",
        cause: "rule_drop",
        manager: "ufw",
    },
    Case {
        name: "ufw reject 8080/tcp",
        at: At::Server,
        tool: Tool::Ufw,
        setup: &["ufw --force enable", "ufw reject 8080/tcp"],
        client_error: "ECONNREFUSED",
        outcome: "refused",
        cause: "reject",
        manager: "ufw",
    },
    Case {
        name: "ufw default deny incoming",
        at: At::Server,
        tool: Tool::Ufw,
        setup: &["ufw default deny incoming", "ufw --force enable"],
        client_error: "ETIMEDOUT",
        outcome: "timed_out",
        cause: "policy_drop",
        manager: "ufw",
    },
];

/// Every file under `dir`, with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let body = std::fs::read(&p).unwrap_or_default();
                files.insert(p, body);
            }
        }
    }
    files
}

fn run_in(ns: &str, cmd: &str) -> (bool, String) {
    run_with(ns, None, cmd)
}

/// Runs `cmd` with `sh -c` in namespace `ns`, on ufw's private copy if given.
fn run_with(ns: &str, ufw: Option<&UfwCopy>, cmd: &str) -> (bool, String) {
    let cmd = ufw.map(|u| u.wrap(cmd)).unwrap_or_else(|| cmd.to_owned());
    sh_in(Some(ns), &cmd)
}

fn probe(t: &Routed) -> ProbeOutcome {
    let addr: IpAddr = SERVER.parse().expect("address");
    lab::tcp_connect(&t.a, addr, PORT, Duration::from_millis(1500))
}

fn check(case: &Case) -> Result<(), String> {
    let t = Routed::new(&format!("ptex{}", std::process::id() % 10_000));
    let ns = match case.at {
        At::Server => t.b.clone(),
        At::Router => t.r.clone(),
    };
    let _listener = Listener::start(&t.b);
    let ufw = (case.tool == Tool::Ufw).then(|| UfwCopy::new(&t.b));
    for cmd in case.setup {
        let (ok, out) = run_with(&ns, ufw.as_ref(), cmd);
        if !ok {
            return Err(format!("setup {cmd}: {out}"));
        }
    }
    let (seen, recs) = trace_while(&ns, &[], || probe(&t))?;
    let ctx = || format!("{}: {recs:#?}", case.name);
    if errno_of(&seen) != case.client_error {
        return Err(format!(
            "the client saw {seen:?}, not {}",
            case.client_error
        ));
    }
    let summary = of_type(&recs, "summary");
    let conn = summary
        .first()
        .and_then(|s| s["connections"].as_array())
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| format!("no connection in {}", ctx()))?;
    if conn["outcome"] != case.outcome || conn["client_error"] != case.client_error {
        return Err(format!(
            "connection {conn:#}, expected {} / {}",
            case.outcome, case.client_error
        ));
    }
    let packets = of_type(&recs, "packet");
    let shown: Vec<&Value> = packets
        .iter()
        .copied()
        .filter(|p| p["diagnosis"]["cause"] == case.cause)
        .collect();
    let Some(p) = shown.first() else {
        return Err(format!("no packet with cause {}: {}", case.cause, ctx()));
    };
    let d = &p["diagnosis"];
    if d["manager"] != case.manager {
        return Err(format!(
            "manager {} instead of {}: {d:#}",
            d["manager"], case.manager
        ));
    }
    let msg = d["message"].as_str().unwrap_or_default();
    let why = conn["explanation"].as_str().unwrap_or_default();
    if case.outcome != "timed_out" && (why.contains("timed out") || msg.contains("times out")) {
        return Err(format!("contradiction: {why} / {msg}"));
    }
    let advice = d["advice"].as_str().ok_or("no advice")?;
    eprintln!(
        "{}: client saw {seen:?}\n  {why}\n  {msg}\n  advice: {advice}",
        case.name
    );
    let fix = command_in(advice).ok_or_else(|| format!("no command in the advice: {advice}"))?;
    if case.tool == Tool::Ufw && !fix.starts_with("ufw ") {
        return Err(format!(
            "a ufw-managed table's fix is not a ufw command: {fix}"
        ));
    }
    let (ok, out) = run_with(&ns, ufw.as_ref(), fix);
    if !ok {
        return Err(format!("the advice failed when run: {fix}: {out}"));
    }
    match probe(&t) {
        ProbeOutcome::Connected => Ok(()),
        other => Err(format!("after {fix}, the next probe saw {other:?}")),
    }
}

#[test]
fn each_firewall_is_explained_as_the_client_saw_it_and_its_fix_works() {
    let test = "each_firewall_is_explained_as_the_client_saw_it_and_its_fix_works";
    require_root(test);
    require_tool(test, "ufw");
    let lock_before = Path::new("/run/ufw.lock").exists();
    let etc_ufw = snapshot(Path::new("/etc/ufw"));
    let lib_ufw = snapshot(Path::new("/lib/ufw"));
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        snapshot(Path::new("/etc/ufw")) == etc_ufw && snapshot(Path::new("/lib/ufw")) == lib_ufw,
        "the host's /etc/ufw or /lib/ufw changed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains("-ufw-") && !mounts.contains("pathtrace-ufw-run"),
        "a ufw bind mount leaked to the host: {mounts}"
    );
    assert!(
        lock_before || !Path::new("/run/ufw.lock").exists(),
        "ufw left its lock file on the host"
    );
}

/// Traces `--dst SERVER --dport 8080` (only the flow's flags) while
/// `during` runs, after checking that rule tracing was armed in `ns` (on
/// the flow's likely path) before the first packet; the JSON records, or
/// how pathtrace exited if not cleanly.
fn trace_while<T>(
    ns: &str,
    extra: &[&str],
    during: impl FnOnce() -> T,
) -> Result<(T, Vec<Value>), String> {
    let port = PORT.to_string();
    let mut args = vec![
        "--dst",
        SERVER,
        "--dport",
        &port,
        "--json",
        "--duration",
        "30",
    ];
    args.extend_from_slice(extra);
    let run = Running::start(&args);
    if !armed_at_start(&run.stderr_lines, ns) {
        return Err(format!(
            "rule tracing was not armed in {ns} before the first packet: {:?}",
            run.stderr_lines
        ));
    }
    let seen = during();
    std::thread::sleep(Duration::from_millis(800));
    let (code, lines) = run.stop();
    if code != 0 {
        return Err(format!("pathtrace exited {code}"));
    }
    Ok((seen, records(&lines)))
}

/// [`trace_while`], for tests that end at a failed run.
fn traced<T>(ns: &str, extra: &[&str], during: impl FnOnce() -> T) -> (T, Vec<Value>) {
    trace_while(ns, extra, during).unwrap_or_else(|e| panic!("pathtrace exit status: {e}"))
}

/// The summary's one connection, and the first packet with `cause`.
fn connection_and_packet<'a>(recs: &'a [Value], cause: &str) -> (Value, &'a Value) {
    let conns: Vec<Value> = of_type(recs, "summary")
        .first()
        .and_then(|s| s["connections"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(conns.len(), 1, "one connection: {recs:#?}");
    let p = of_type(recs, "packet")
        .into_iter()
        .find(|p| p["diagnosis"]["cause"] == cause)
        .unwrap_or_else(|| panic!("no packet with cause {cause}: {recs:#?}"));
    (conns[0].clone(), p)
}

/// A connection older than the firewall's conntrack state: established
/// while conntrack knew it, then its entry flushed (`conntrack -F`) with
/// `nf_conntrack_tcp_loose=0` (the default 1 would pick a mid-stream
/// segment up as new), so the client's next segment is INVALID and a
/// `--ctstate INVALID -j DROP` rule drops it until the client's
/// `TCP_USER_TIMEOUT` gives up with ETIMEDOUT. The traffic really is
/// invalid to conntrack, so there is no rule to change and no command to
/// run: the test asserts that the advice prints none, and says where the
/// state went missing.
#[test]
fn a_conntrack_invalid_drop_is_explained_without_a_command() {
    let test = "a_conntrack_invalid_drop_is_explained_without_a_command";
    require_root(test);
    require_tool(test, "conntrack");
    let t = Routed::new(&format!("ptiv{}", std::process::id() % 10_000));
    let _listener = Listener::echo(&t.b);
    for cmd in [
        "sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0",
        "iptables -A INPUT -m conntrack --ctstate INVALID -j DROP",
    ] {
        let (ok, out) = run_in(&t.b, cmd);
        assert!(ok, "{cmd}: {out}");
    }
    let server = SocketAddr::new(SERVER.parse().expect("address"), PORT);
    let mut stream = lab::in_netns(&t.a, Duration::from_secs(5), move || {
        TcpStream::connect_timeout(&server, Duration::from_secs(2))
    })
    .unwrap_or_else(|e| panic!("entering {}: {e:?}", t.a))
    .expect("the first connection, before the flush, connects");
    let user_timeout: libc::c_uint = 1500;
    // SAFETY: setsockopt on an open socket with a c_uint option.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            std::ptr::from_ref(&user_timeout).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_USER_TIMEOUT");
    stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("read timeout");
    let mut buf = [0u8; 16];
    stream.write_all(b"hello").expect("send before the flush");
    let n = stream.read(&mut buf).expect("the echo before the flush");
    assert_eq!(&buf[..n], b"hello");
    let (ok, out) = run_in(&t.b, "conntrack -F");
    assert!(ok, "conntrack -F: {out}");

    let (seen, recs) = traced(&t.b, &[], || {
        stream.write_all(b"again").expect("send after the flush");
        stream.read(&mut buf)
    });
    let errno = match &seen {
        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        other => panic!("the client's socket reported {other:?}, not ETIMEDOUT"),
    };
    let (conn, p) = connection_and_packet(&recs, "conntrack_invalid");
    assert_eq!(conn["outcome"], "timed_out", "{conn:#}");
    assert_eq!(conn["client_error"], errno, "{conn:#}");
    let d = &p["diagnosis"];
    assert_eq!(d["manager"], "iptables", "{d:#}");
    let msg = d["message"].as_str().expect("message");
    assert!(
        msg.contains("conntrack marked it INVALID") && msg.contains("--ctstate INVALID -j DROP"),
        "{msg}"
    );
    // Why, from the namespace's own table and settings: no entry, no pick-up.
    assert!(
        msg.contains("conntrack has no entry for this connection")
            && msg.contains("nf_conntrack_tcp_loose=0"),
        "{msg}"
    );
    let advice = d["advice"].as_str().expect("advice");
    eprintln!(
        "conntrack INVALID: client saw {seen:?}\n  {}\n  {msg}\n  advice: {advice}",
        conn["explanation"]
    );
    assert_eq!(command_in(advice), None, "no command to run: {advice}");
    assert!(
        advice.contains("no rule to change") && advice.contains("nf_conntrack_tcp_loose"),
        "{advice}"
    );
}

/// The incident on the real-Docker lab: a `-j REJECT` in DOCKER-USER
/// (ECONNREFUSED, from an ICMP port-unreachable), then a `-j DROP`
/// (ETIMEDOUT). The advice stays in DOCKER-USER, the chain Docker leaves to
/// the user, and works when run in the Docker host's namespace.
#[test]
fn docker_user_reject_and_drop_are_explained_and_their_fix_works() {
    require_root("docker_user_reject_and_drop_are_explained_and_their_fix_works");
    let lab = docker_lab("ptexdk", Block::None);
    let dock = lab.names.dock.clone();
    let client = lab.addrs.client.to_string();
    let sock = lab.docker_socket().map(|s| s.display().to_string());
    let (ok, before) = run_in(&dock, "iptables -S DOCKER-USER");
    assert!(ok, "{before}");
    // A whole HTTP exchange, so that no half-open connection is left for
    // httpd to time out later, through the rule the next case adds.
    let get = || {
        lab.http_get(
            &lab.names.client,
            IpAddr::V4(lab.addrs.host),
            lab.addrs.published_port,
            Duration::from_millis(1500),
        )
    };
    if let Err(e) = get() {
        panic!("before any rule, the client's GET failed: {e}");
    }
    for (target, client_error, outcome, cause) in [
        ("REJECT", "ECONNREFUSED", "refused", "reject"),
        ("DROP", "ETIMEDOUT", "timed_out", "rule_drop"),
    ] {
        let rule = format!("iptables -I DOCKER-USER -s {client} -p tcp -j {target}");
        let (ok, out) = run_in(&dock, &rule);
        assert!(ok, "{rule}: {out}");
        let port = lab.addrs.published_port.to_string();
        let mut args = vec![
            "--src",
            &client,
            "--dport",
            &port,
            "--json",
            "--duration",
            "30",
        ];
        if let Some(s) = &sock {
            args.extend(["--docker-socket", s]);
        }
        let run = Running::start(&args);
        assert!(
            armed_at_start(&run.stderr_lines, &dock),
            "the Docker host is on the likely path: {:?}",
            run.stderr_lines
        );
        let seen = connect(&lab, &lab.names.client);
        std::thread::sleep(Duration::from_millis(800));
        let (code, lines) = run.stop();
        assert_eq!(code, 0, "pathtrace exit status");
        let recs = records(&lines);
        assert_eq!(
            errno_of(&seen),
            client_error,
            "DOCKER-USER {target}: the client saw {seen:?}"
        );
        let (conn, p) = connection_and_packet(&recs, cause);
        assert_eq!(conn["outcome"], outcome, "{conn:#}");
        assert_eq!(conn["client_error"], client_error, "{conn:#}");
        let d = &p["diagnosis"];
        assert_eq!(d["manager"], "docker", "{d:#}");
        let advice = d["advice"].as_str().expect("advice");
        eprintln!(
            "DOCKER-USER {target}: client saw {seen:?}\n  {}\n  {}\n  advice: {advice}",
            conn["explanation"], d["message"]
        );
        let fix = command_in(advice).unwrap_or_else(|| panic!("no command in {advice}"));
        assert!(fix.contains("DOCKER-USER"), "{fix}");
        let (ok, out) = run_in(&dock, fix);
        assert!(ok, "the advice failed when run: {fix}: {out}");
        if let Err(e) = get() {
            panic!("after {fix}, the client's GET failed: {e}");
        }
        // Back to Docker's own DOCKER-USER for the next case.
        let mut restore = String::from("iptables -F DOCKER-USER");
        for line in before.lines().filter(|l| l.starts_with("-A ")) {
            restore.push_str(&format!(" && iptables {line}"));
        }
        let (ok, out) = run_in(&dock, &restore);
        assert!(ok, "{restore}: {out}");
    }
}

/// A native nftables table laid out as firewalld (nftables backend) lays
/// out its own: `inet firewalld`, `filter_INPUT` jumping to the zone chains
/// (`filter_IN_public` and its `_allow`/`_deny` parts) and ending in
/// `reject with icmpx admin-prohibited`. The advice must be firewalld's
/// (`firewall-cmd --zone=public …`). firewall-cmd talks to the firewalld
/// daemon over D-Bus, which this machine has no bus for, so the printed fix
/// is not run here: the test checks the client's error, the outcome and
/// the manager detection.
#[test]
fn a_firewalld_layout_is_explained_with_firewall_cmd_advice() {
    require_root("a_firewalld_layout_is_explained_with_firewall_cmd_advice");
    let t = Routed::new(&format!("ptfd{}", std::process::id() % 10_000));
    let _listener = Listener::start(&t.b);
    let ruleset = "table inet firewalld {
        chain filter_INPUT {
            type filter hook input priority filter + 10; policy accept;
            ct state established,related accept
            iifname lo accept
            ct state invalid drop
            jump filter_INPUT_ZONES
            reject with icmpx admin-prohibited
        }
        chain filter_INPUT_ZONES {
            iifname b0 goto filter_IN_public
            goto filter_IN_public
        }
        chain filter_IN_public {
            jump filter_IN_public_pre
            jump filter_IN_public_log
            jump filter_IN_public_deny
            jump filter_IN_public_allow
            jump filter_IN_public_post
            meta l4proto { icmp, ipv6-icmp } accept
        }
        chain filter_IN_public_pre { }
        chain filter_IN_public_log { }
        chain filter_IN_public_deny { }
        chain filter_IN_public_allow {
            tcp dport 22 ct state new,untracked accept
        }
        chain filter_IN_public_post { }
    }";
    let (ok, out) = run_in(&t.b, &format!("nft -f - <<'EOF'\n{ruleset}\nEOF"));
    assert!(ok, "loading the firewalld-style table: {out}");
    let (seen, recs) = traced(&t.b, &[], || probe(&t));
    assert_eq!(errno_of(&seen), "EHOSTUNREACH", "the client saw {seen:?}");
    let (conn, p) = connection_and_packet(&recs, "reject");
    assert_eq!(conn["outcome"], "prohibited", "{conn:#}");
    assert_eq!(conn["client_error"], "EHOSTUNREACH", "{conn:#}");
    let d = &p["diagnosis"];
    assert_eq!(d["manager"], "firewalld", "{d:#}");
    let advice = d["advice"].as_str().expect("advice");
    eprintln!(
        "firewalld layout: client saw {seen:?}\n  {}\n  {}\n  advice: {advice}",
        conn["explanation"], d["message"]
    );
    let fix = command_in(advice).unwrap_or_else(|| panic!("no command in {advice}"));
    assert!(
        fix.starts_with("firewall-cmd --zone=public --add-rich-rule=")
            && fix.contains("source address=192.0.2.1")
            && fix.contains("port port=8080 protocol=tcp accept"),
        "{fix}"
    );
}

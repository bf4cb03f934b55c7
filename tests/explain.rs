//! What the client really saw, explained, over real firewall configurations:
//! iptables REJECT in its forms, nftables-native tables (a `reject with
//! icmpx admin-prohibited` and a policy drop), and a FORWARD policy that
//! drops the replies. Each case checks the client's own socket error,
//! pathtrace's connection outcome and cause, and the manager named in the
//! advice; then runs the advice's command, exactly as printed, in that
//! namespace, and shows that the next connection succeeds.
use std::{
    net::IpAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use lab::{topo::Routed, ProbeOutcome};
use pathtrace_tests::{of_type, records, require_root, Running};
use serde_json::Value;

const SERVER: &str = "198.51.100.2";
const PORT: u16 = 8080;

/// Where a case's firewall lives in [`Routed`].
#[derive(Clone, Copy)]
enum At {
    Server,
    Router,
}

struct Case {
    name: &'static str,
    at: At,
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
        setup: &["iptables -A INPUT -p tcp --dport 8080 -j REJECT"],
        client_error: "ECONNREFUSED",
        outcome: "refused",
        cause: "reject",
        manager: "iptables",
    },
    Case {
        name: "iptables REJECT --reject-with icmp-host-prohibited",
        at: At::Server,
        setup: &["iptables -A INPUT -p tcp --dport 8080 -j REJECT --reject-with icmp-host-prohibited"],
        client_error: "EHOSTUNREACH",
        outcome: "prohibited",
        cause: "reject",
        manager: "iptables",
    },
    Case {
        name: "iptables REJECT --reject-with tcp-reset",
        at: At::Server,
        setup: &["iptables -A INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset"],
        client_error: "ECONNREFUSED",
        outcome: "refused",
        cause: "reject",
        manager: "iptables",
    },
    Case {
        name: "nft reject with icmpx admin-prohibited",
        at: At::Server,
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
        setup: &[
            "iptables -P FORWARD DROP",
            "iptables -A FORWARD -p tcp -d 198.51.100.2 --dport 8080 -j ACCEPT",
        ],
        client_error: "ETIMEDOUT",
        outcome: "timed_out",
        cause: "reply_dropped",
        manager: "iptables",
    },
];

/// A listener in the server's namespace, ended by its pid when dropped.
struct Listener(Child);

impl Listener {
    fn start(ns: &str) -> Self {
        let script = format!(
            "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {PORT}))\ns.listen(64)\nwhile True:\n    c,_=s.accept()\n    c.close()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the listener: {e}"));
        std::thread::sleep(Duration::from_millis(400));
        Self(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_in(ns: &str, cmd: &str) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The client socket's error, by its errno name.
fn errno_of(p: &ProbeOutcome) -> &'static str {
    match p {
        ProbeOutcome::Connected => "connected",
        ProbeOutcome::Refused => "ECONNREFUSED",
        ProbeOutcome::TimedOut => "ETIMEDOUT",
        ProbeOutcome::Other(s) if s.contains("os error 113") => "EHOSTUNREACH",
        ProbeOutcome::Other(s) if s.contains("os error 101") => "ENETUNREACH",
        ProbeOutcome::Other(s) if s.contains("os error 13") => "EACCES",
        ProbeOutcome::Other(_) => "other",
    }
}

fn probe(t: &Routed) -> ProbeOutcome {
    let addr: IpAddr = SERVER.parse().expect("address");
    lab::tcp_connect(&t.a, addr, PORT, Duration::from_millis(1500))
}

/// The command an advice ends with: the text after its last ": ".
fn command_in(advice: &str) -> &str {
    advice
        .rsplit_once(": ")
        .map(|(_, c)| c.trim())
        .unwrap_or(advice)
}

fn check(case: &Case) -> Result<(), String> {
    let t = Routed::new(&format!("ptex{}", std::process::id() % 10_000));
    let ns = match case.at {
        At::Server => t.b.clone(),
        At::Router => t.r.clone(),
    };
    let _listener = Listener::start(&t.b);
    for cmd in case.setup {
        let (ok, out) = run_in(&ns, cmd);
        if !ok {
            return Err(format!("setup {cmd}: {out}"));
        }
    }
    let port = PORT.to_string();
    let run = Running::start(&[
        "--dst",
        SERVER,
        "--dport",
        &port,
        "--json",
        "--duration",
        "30",
        "--netns",
        &ns,
    ]);
    let seen = probe(&t);
    std::thread::sleep(Duration::from_millis(800));
    let (code, lines) = run.stop();
    if code != 0 {
        return Err(format!("pathtrace exited {code}"));
    }
    let recs = records(&lines);
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
    let fix = command_in(advice);
    let (ok, out) = run_in(&ns, fix);
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
    require_root("each_firewall_is_explained_as_the_client_saw_it_and_its_fix_works");
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

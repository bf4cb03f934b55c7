//! Small test topologies, each a few network namespaces removed on drop:
//! - [`Pair`]: `a` (192.0.2.1) and `b` (192.0.2.2) joined by a veth pair;
//! - [`Routed`]: `A` (192.0.2.1) — router `R` — `B` (198.51.100.2);
//! - [`Bridged`]: hosts on one bridge in a hypervisor-like namespace whose
//!   iptables sees bridged frames (br_netfilter).
//!
//! The incident's topology is [`crate::Lab`]. These helpers panic on failure:
//! they are for tests.
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::netns::{in_netns, ns_path};

/// Runs `args[0] args[1..]`; panics unless it succeeds.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?} did not run: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `args` inside the named namespace; panics unless it succeeds.
pub fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    sh(&all);
}

/// Runs a shell script, returning success and the combined output.
fn sh_c(cmd: &str) -> (bool, String) {
    match Command::new("sh").arg("-c").arg(cmd).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// `a`'s address in a [`Pair`].
pub const PAIR_A_ADDR: &str = "192.0.2.1";
/// `b`'s address in a [`Pair`].
pub const PAIR_B_ADDR: &str = "192.0.2.2";

/// Two namespaces with a veth pair; both are deleted when this is dropped.
pub struct Pair {
    pub a: String,
    pub b: String,
}

impl Pair {
    /// Namespaces `ptnf-{tag}-{pid}-a` and `-b`, so parallel tests don't clash.
    pub fn new(tag: &str) -> Pair {
        let pid = std::process::id();
        let pair = Pair {
            a: format!("ptnf-{tag}-{pid}-a"),
            b: format!("ptnf-{tag}-{pid}-b"),
        };
        let (a, b) = (&pair.a, &pair.b);
        let veth = format!("ptv{}", pid % 100_000);
        let script = format!(
            "set -e; ip netns add {a}; ip netns add {b}; \
             ip link add {veth}a netns {a} type veth peer name {veth}b netns {b}; \
             ip -n {a} addr add {PAIR_A_ADDR}/24 dev {veth}a; ip -n {b} addr add {PAIR_B_ADDR}/24 dev {veth}b; \
             ip -n {a} link set lo up; ip -n {b} link set lo up; \
             ip -n {a} link set {veth}a up; ip -n {b} link set {veth}b up"
        );
        let (ok, out) = sh_c(&script);
        assert!(ok, "setting up namespaces: {out}");
        pair
    }

    pub fn path_a(&self) -> PathBuf {
        ns_path(&self.a)
    }

    pub fn path_b(&self) -> PathBuf {
        ns_path(&self.b)
    }

    /// Runs a shell command inside `b`; panics on failure.
    pub fn in_b(&self, cmd: &str) -> String {
        let (ok, out) = sh_c(&format!("ip netns exec {} sh -c '{cmd}'", self.b));
        assert!(ok, "{cmd}: {out}");
        out
    }

    /// Sends a TCP SYN from `a` to `b` (connect with a 1 s timeout).
    pub fn syn_a_to_b(&self, port: u16) {
        let Ok(addr) = format!("{PAIR_B_ADDR}:{port}").parse::<SocketAddr>() else {
            return;
        };
        let _ = in_netns(&self.a, Duration::from_secs(3), move || {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        });
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = crate::delete_netns(ns);
        }
    }
}

/// Three namespaces: `A` — router `R` — `B`.
pub struct Routed {
    pub a: String,
    pub r: String,
    pub b: String,
}

impl Routed {
    pub fn new(prefix: &str) -> Self {
        let t = Self {
            a: format!("{prefix}-a"),
            r: format!("{prefix}-r"),
            b: format!("{prefix}-b"),
        };
        t.remove();
        for ns in [&t.a, &t.r, &t.b] {
            sh(&["ip", "netns", "add", ns]);
            in_ns(ns, &["ip", "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "link", "add", "a0", "netns", &t.a, "type", "veth", "peer", "name", "r0",
            "netns", &t.r,
        ]);
        sh(&[
            "ip", "link", "add", "b0", "netns", &t.b, "type", "veth", "peer", "name", "r1",
            "netns", &t.r,
        ]);
        for (ns, dev, addr) in [
            (&t.a, "a0", "192.0.2.1/24"),
            (&t.r, "r0", "192.0.2.254/24"),
            (&t.r, "r1", "198.51.100.254/24"),
            (&t.b, "b0", "198.51.100.2/24"),
        ] {
            in_ns(ns, &["ip", "addr", "add", addr, "dev", dev]);
            in_ns(ns, &["ip", "link", "set", dev, "up"]);
        }
        in_ns(
            &t.a,
            &["ip", "route", "add", "default", "via", "192.0.2.254"],
        );
        in_ns(
            &t.b,
            &["ip", "route", "add", "default", "via", "198.51.100.254"],
        );
        in_ns(&t.r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        t
    }

    fn remove(&self) {
        for ns in [&self.a, &self.r, &self.b] {
            let _ = crate::delete_netns(ns);
        }
    }

    /// Drops UDP to `port` in namespace `ns` with an iptables rule.
    pub fn drop_udp(&self, ns: &str, port: u16) {
        in_ns(
            ns,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-p",
                "udp",
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ],
        );
    }

    /// Sends `count` UDP datagrams from `ns`: see [`send_udp`].
    pub fn send_udp(
        &self,
        ns: &str,
        src: Option<&str>,
        dst: &str,
        port: u16,
        count: u32,
        ttl: Option<u8>,
    ) {
        send_udp(ns, src, dst, port, count, ttl);
    }
}

/// Sends `count` UDP datagrams from namespace `ns` to `dst:port` with
/// Python's socket module, from `src` and with `ttl` when given.
pub fn send_udp(ns: &str, src: Option<&str>, dst: &str, port: u16, count: u32, ttl: Option<u8>) {
    let bind = src
        .map(|s| format!("s.bind(('{s}', 0))"))
        .unwrap_or_default();
    let ttl = ttl
        .map(|t| format!("s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, {t})"))
        .unwrap_or_default();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n{bind}\n{ttl}\n\
         for _ in range({count}):\n    s.sendto(b'pathtrace', ('{dst}', {port}))\n"
    );
    in_ns(ns, &["python3", "-c", &script]);
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A hypervisor-like namespace `hv` holding bridge `br0`, with br_netfilter's
/// `bridge-nf-call-iptables=1`, and one namespace per host on it, each with
/// `eth0` at `192.0.2.N/24` (N from 1).
pub struct Bridged {
    pub hv: String,
    pub hosts: Vec<String>,
}

impl Bridged {
    pub fn new(prefix: &str, hosts: usize) -> Self {
        let t = Self {
            hv: format!("{prefix}-hv"),
            hosts: (1..=hosts).map(|i| format!("{prefix}-h{i}")).collect(),
        };
        t.remove();
        // A module on Debian's kernels, built in on others.
        let _ = Command::new("modprobe").arg("br_netfilter").output();
        for ns in std::iter::once(&t.hv).chain(&t.hosts) {
            sh(&["ip", "netns", "add", ns]);
            in_ns(ns, &["ip", "link", "set", "lo", "up"]);
        }
        in_ns(&t.hv, &["ip", "link", "add", "br0", "type", "bridge"]);
        in_ns(&t.hv, &["ip", "link", "set", "br0", "up"]);
        in_ns(
            &t.hv,
            &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
        );
        for (i, ns) in t.hosts.iter().enumerate() {
            let port = format!("p{}", i + 1);
            sh(&[
                "ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &port,
                "netns", &t.hv,
            ]);
            in_ns(&t.hv, &["ip", "link", "set", &port, "master", "br0", "up"]);
            in_ns(
                ns,
                &["ip", "addr", "add", &Self::addr(i + 1), "dev", "eth0"],
            );
            in_ns(ns, &["ip", "link", "set", "eth0", "up"]);
        }
        t
    }

    fn addr(n: usize) -> String {
        format!("192.0.2.{n}/24")
    }

    /// The address of host `n` (from 1).
    pub fn ip(n: usize) -> String {
        format!("192.0.2.{n}")
    }

    fn remove(&self) {
        for ns in std::iter::once(&self.hv).chain(&self.hosts) {
            let _ = crate::delete_netns(ns);
        }
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        self.remove();
    }
}

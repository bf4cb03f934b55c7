//! A small routed topology for drop tests: `A` (192.0.2.1) — router `R` —
//! `B` (198.51.100.2), each a network namespace, removed on drop.
use std::process::Command;

pub struct Routed {
    pub a: String,
    pub r: String,
    pub b: String,
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    sh(&all);
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
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
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

    /// Sends `count` UDP datagrams from A with Python's socket module.
    pub fn send_udp(
        &self,
        ns: &str,
        src: Option<&str>,
        dst: &str,
        port: u16,
        count: u32,
        ttl: Option<u8>,
    ) {
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
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.remove();
    }
}

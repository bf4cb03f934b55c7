//! Test helpers: two network namespaces joined by a veth pair
//! (192.0.2.1/24 in `a`, 192.0.2.2/24 in `b`), deleted on drop.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{RuleTracer, TraceEvent};

pub const A_ADDR: &str = "192.0.2.1";
pub const B_ADDR: &str = "192.0.2.2";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints the loud skip notice and returns true when not root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("\n*** SKIPPED: needs root: {test} ***\n");
    true
}

fn sh(cmd: &str) -> (bool, String) {
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

/// Two namespaces with a veth pair; both are deleted when this is dropped.
pub struct Lab {
    pub a: String,
    pub b: String,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            a: format!("ptnf-{tag}-{pid}-a"),
            b: format!("ptnf-{tag}-{pid}-b"),
        };
        let (a, b) = (&lab.a, &lab.b);
        let veth = format!("ptv{}", pid % 100_000);
        let script = format!(
            "set -e; ip netns add {a}; ip netns add {b}; \
             ip link add {veth}a netns {a} type veth peer name {veth}b netns {b}; \
             ip -n {a} addr add {A_ADDR}/24 dev {veth}a; ip -n {b} addr add {B_ADDR}/24 dev {veth}b; \
             ip -n {a} link set lo up; ip -n {b} link set lo up; \
             ip -n {a} link set {veth}a up; ip -n {b} link set {veth}b up"
        );
        let (ok, out) = sh(&script);
        assert!(ok, "setting up namespaces: {out}");
        lab
    }

    pub fn path_a(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.a))
    }

    pub fn path_b(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.b))
    }

    /// Runs a shell command inside `b`; panics on failure.
    pub fn in_b(&self, cmd: &str) -> String {
        let (ok, out) = sh(&format!("ip netns exec {} sh -c '{cmd}'", self.b));
        assert!(ok, "{cmd}: {out}");
        out
    }

    /// Sends a TCP SYN from `a` to `b` (connect with a 1 s timeout).
    pub fn syn_a_to_b(&self, port: u16) {
        let path = self.path_a();
        let t = std::thread::spawn(move || {
            let Ok(f) = std::fs::File::open(&path) else {
                return;
            };
            // SAFETY: setns on an open namespace file; only this thread moves.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return;
            }
            let Ok(addr) = format!("{B_ADDR}:{port}").parse::<SocketAddr>() else {
                return;
            };
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        });
        let _ = t.join();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}; ip netns del {}", self.a, self.b));
    }
}

/// Waits until `fd` is readable or `timeout` passes.
pub fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Collects events for up to `timeout`, stopping early once `done` holds.
pub fn collect(
    t: &mut RuleTracer,
    timeout: Duration,
    done: impl Fn(&[TraceEvent]) -> bool,
) -> Vec<TraceEvent> {
    let end = Instant::now() + timeout;
    let mut all = Vec::new();
    while Instant::now() < end {
        if wait_readable(t.as_raw_fd(), Duration::from_millis(100)) {
            all.extend(t.read_pending().expect("read_pending"));
            if done(&all) {
                break;
            }
        }
    }
    all
}

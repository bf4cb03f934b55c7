//! Leave no trace: pathtrace (trace, compare, drops, demo) ended 50 times by
//! SIGINT, SIGTERM or SIGKILL at random moments, start-up included. After
//! one more clean run of each, the host has exactly the BPF programs, links,
//! maps, nft tables, iptables rules, namespaces and processes it had before.
//!
//! Every run uses the suite's tier (`PATHTRACE_TEST_TIER`) and the demo the
//! suite's Docker (`PATHTRACE_TEST_DOCKER`). `PATHTRACE_CLEANUP_ROUNDS` sets
//! the number of random ends (50 unless set; the VM harness runs fewer under
//! emulation and says so in its report).
use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pathtrace_tests::{docker_mode, limit, pathtrace_bin, require_root, tier, topo::Routed};

/// A listing the host comparison depends on: a tool that is missing or
/// fails fails the test (an empty listing would compare equal to anything).
fn out(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cleanup: running {cmd} {args:?}: {e}"));
    assert!(
        o.status.success(),
        "cleanup: {cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ids(json: &str) -> BTreeSet<u64> {
    serde_json::from_str::<serde_json::Value>(json)
        .unwrap_or_else(|e| panic!("cleanup: bpftool printed no JSON ({e}): {json}"))
        .as_array()
        .unwrap_or_else(|| panic!("cleanup: bpftool printed no list: {json}"))
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect()
}

/// What the kernel's own listings say the host holds.
#[derive(Debug, PartialEq, Eq)]
struct Host {
    progs: BTreeSet<u64>,
    links: BTreeSet<u64>,
    maps: BTreeSet<u64>,
    nft_tables: String,
    iptables: Vec<String>,
    legacy: Vec<String>,
    netns: String,
    procs: BTreeSet<String>,
    /// tracefs kprobe events (the kprobe tier's kretprobe on kernels
    /// without preemption).
    kprobe_events: String,
}

fn rules_only(save: String) -> Vec<String> {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
        .collect()
}

fn snapshot() -> Host {
    // Zombies hold nothing but a pid until init reaps them: only running
    // processes count.
    let procs = out("ps", &["-eo", "pid=,stat=,comm="])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (pid, stat, comm) = (f.next()?, f.next()?, f.next()?);
            (!stat.starts_with('Z')).then(|| format!("{pid} {comm}"))
        })
        .filter(|l| {
            [
                "dockerd",
                "containerd",
                "containerd-shim",
                "busybox",
                "httpd",
                "pathtrace",
            ]
            .iter()
            .any(|p| l.ends_with(p))
        })
        .collect();
    Host {
        progs: ids(&out("bpftool", &["-j", "prog", "show"])),
        links: ids(&out("bpftool", &["-j", "link", "show"])),
        maps: ids(&out("bpftool", &["-j", "map", "show"])),
        nft_tables: out("nft", &["list", "tables"]),
        iptables: rules_only(out("iptables-nft-save", &[])),
        legacy: rules_only(out("iptables-legacy-save", &[])),
        netns: out("ip", &["netns", "list"]),
        procs,
        kprobe_events: ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|d| std::fs::read_to_string(format!("{d}/kprobe_events")).ok())
            .unwrap_or_default(),
    }
}

/// A small deterministic generator, so a failure can be replayed by seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn end_with(child: &mut std::process::Child, signal: i32) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + limit(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("pathtrace did not end within 30 s of signal {signal}");
}

/// `args` with the suite's tier.
fn with_tier(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--tier".to_string(), tier()]);
    all
}

fn run_to_end(args: &[&str]) {
    let status = Command::new(pathtrace_bin())
        .args(with_tier(args))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert!(status.success(), "pathtrace {args:?} failed: {status}");
}

#[test]
fn fifty_random_ends_leave_the_host_as_it_was() {
    require_root("fifty_random_ends_leave_the_host_as_it_was");
    let seed = std::env::var("PATHTRACE_CLEANUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let rounds: u64 = std::env::var("PATHTRACE_CLEANUP_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let demo_docker = match docker_mode() {
        lab::DockerMode::Emulated => "emulated",
        _ => "auto",
    };
    eprintln!(
        "cleanup stress seed {seed} (set PATHTRACE_CLEANUP_SEED to replay), {rounds} rounds, tier {}, demo --docker {demo_docker}",
        tier()
    );
    let before = snapshot();
    let topo = Routed::new("ptcln");
    let b = topo.b.clone();
    let commands: Vec<Vec<&str>> = vec![
        vec!["--src", "192.0.2.1", "--proto", "udp", "--netns", &b],
        vec![
            "compare",
            "--src",
            "192.0.2.1",
            "--src",
            "192.0.2.254",
            "--netns",
            &b,
        ],
        vec!["drops"],
        vec!["drops", "--top", "--interval", "0.2"],
        vec!["demo", "--docker", demo_docker],
    ];
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGKILL];
    let mut rng = Lcg(seed);
    for i in 0..rounds {
        let args = &commands[rng.next(commands.len() as u64) as usize];
        let signal = signals[rng.next(3) as usize];
        let delay = Duration::from_millis(rng.next(2500));
        let mut child = Command::new(pathtrace_bin())
            .args(with_tier(args))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts pathtrace");
        std::thread::sleep(delay);
        if i % 3 == 0 {
            topo.send_udp(&topo.a, None, "198.51.100.2", 7, 3, None);
        }
        end_with(&mut child, signal);
    }
    // One clean run of each finds and removes what a SIGKILL left behind.
    run_to_end(&["--src", "192.0.2.1", "--duration", "0.5", "--netns", &b]);
    run_to_end(&[
        "compare",
        "--src",
        "192.0.2.1",
        "--src",
        "192.0.2.254",
        "--duration",
        "0.5",
        "--netns",
        &b,
    ]);
    run_to_end(&["drops", "--duration", "0.5"]);
    run_to_end(&["demo", "--docker", demo_docker]);
    drop(topo);
    // dockerd's children are reaped by init a moment after they exit.
    let deadline = Instant::now() + limit(10);
    let mut after = snapshot();
    while after != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        after = snapshot();
    }
    assert_eq!(after, before, "the host changed (seed {seed})");
}

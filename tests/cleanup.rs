//! Leave no trace: pathtrace (trace, compare, drops, demo) ended 50 times by
//! SIGINT, SIGTERM or SIGKILL at random moments, start-up included. After
//! one more clean run of each, the host holds no BPF program, link or map,
//! nft table, iptables rule, namespace or process it did not hold before.
//! The machine may be shared: BPF objects other processes hold, other labs'
//! namespaces and processes, and what others let go meanwhile are left out.
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
#[derive(Debug, Default, PartialEq, Eq)]
struct Host {
    progs: Vec<u64>,
    links: Vec<u64>,
    maps: Vec<u64>,
    nft_tables: Vec<String>,
    iptables: Vec<String>,
    legacy: Vec<String>,
    netns: Vec<String>,
    procs: Vec<String>,
    /// tracefs kprobe events (the kprobe tier's kretprobe on kernels
    /// without preemption).
    kprobe_events: Vec<String>,
}

/// What `after` has that `before` had not (as multisets: a rule added
/// twice counts twice).
fn added<T: Clone + PartialEq>(after: &[T], before: &[T]) -> Vec<T> {
    let mut left: Vec<&T> = before.iter().collect();
    after
        .iter()
        .filter(|x| match left.iter().position(|b| b == x) {
            Some(k) => {
                left.swap_remove(k);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

impl Host {
    /// What this snapshot holds that `before` did not. Only additions
    /// count: what other tests on a shared machine held before and let go
    /// meanwhile is not this test's doing.
    fn added_since(&self, before: &Host) -> Host {
        Host {
            progs: added(&self.progs, &before.progs),
            links: added(&self.links, &before.links),
            maps: added(&self.maps, &before.maps),
            nft_tables: added(&self.nft_tables, &before.nft_tables),
            iptables: added(&self.iptables, &before.iptables),
            legacy: added(&self.legacy, &before.legacy),
            netns: added(&self.netns, &before.netns),
            procs: added(&self.procs, &before.procs),
            kprobe_events: added(&self.kprobe_events, &before.kprobe_events),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Host::default()
    }
}

fn rules_only(save: String) -> Vec<String> {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
        .collect()
}

/// The lab prefix of `pathtrace demo`, and the prefix of this test's topology.
const DEMO_PREFIX: &str = "ptdemo";
const TOPO_PREFIX: &str = "ptcln";

/// A running process, as `/proc` shows it.
struct Proc {
    pid: u32,
    comm: String,
    /// What the process is about: its command line, cgroup and executable.
    about: String,
}

fn procs() -> Vec<Proc> {
    let read = |pid: u32, f: &str| std::fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        panic!("cleanup: /proc is not readable");
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = String::from_utf8_lossy(&read(pid, "stat")).into_owned();
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            // Zombies hold nothing but a pid until init reaps them.
            if rest.starts_with('Z') {
                return None;
            }
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let about = format!(
                "{} {} {}",
                String::from_utf8_lossy(&read(pid, "cmdline")).replace('\0', " "),
                String::from_utf8_lossy(&read(pid, "cgroup")),
                exe.display()
            );
            Some(Proc {
                pid,
                comm: comm.to_owned(),
                about,
            })
        })
        .collect()
}

/// Whether a process is one this test started or one its demos' labs did.
/// Other tests (other people's, on a shared machine) run their own labs and
/// pathtrace builds meanwhile; they are not this test's to judge.
fn is_ours(p: &Proc, bin: &str) -> bool {
    p.about
        .contains(&format!("/run/pathtrace-lab/{DEMO_PREFIX}/"))
        || p.about.contains(&format!("pathtrace-lab-{DEMO_PREFIX}"))
        || p.about.ends_with(bin)
}

/// BPF object ids that processes other than this test's hold open (from
/// their fdinfo), with the programs of the links and the maps of the
/// programs they hold.
fn held_by_others(procs: &[Proc], bin: &str) -> (BTreeSet<u64>, BTreeSet<u64>, BTreeSet<u64>) {
    let me = std::process::id();
    let (mut progs, mut links, mut maps) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for p in procs.iter().filter(|p| p.pid != me && !is_ours(p, bin)) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fdinfo", p.pid)) else {
            continue;
        };
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            for line in info.lines() {
                let id = |key: &str| line.strip_prefix(key).and_then(|v| v.trim().parse().ok());
                if let Some(id) = id("prog_id:") {
                    progs.insert(id);
                } else if let Some(id) = id("link_id:") {
                    links.insert(id);
                } else if let Some(id) = id("map_id:") {
                    maps.insert(id);
                }
            }
        }
    }
    let listing = |what: &str| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&out("bpftool", &["-j", what, "show"]))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    for l in listing("link") {
        if l["id"].as_u64().is_some_and(|id| links.contains(&id)) {
            progs.extend(l["prog_id"].as_u64());
        }
    }
    for prog in listing("prog") {
        if prog["id"].as_u64().is_some_and(|id| progs.contains(&id)) {
            maps.extend(
                prog["map_ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.as_u64()),
            );
        }
    }
    (progs, links, maps)
}

fn snapshot() -> Host {
    let bin = pathtrace_bin().display().to_string();
    let all = procs();
    let (other_progs, other_links, other_maps) = held_by_others(&all, &bin);
    let procs = all
        .iter()
        .filter(|p| is_ours(p, &bin))
        .map(|p| format!("{} {}", p.pid, p.comm))
        .collect();
    let mine = |json: String, others: &BTreeSet<u64>| -> Vec<u64> {
        ids(&json).difference(others).copied().collect()
    };
    let lines = |text: String| -> Vec<String> { text.lines().map(str::to_owned).collect() };
    Host {
        progs: mine(out("bpftool", &["-j", "prog", "show"]), &other_progs),
        links: mine(out("bpftool", &["-j", "link", "show"]), &other_links),
        maps: mine(out("bpftool", &["-j", "map", "show"]), &other_maps),
        nft_tables: lines(out("nft", &["list", "tables"])),
        iptables: rules_only(out("iptables-nft-save", &[])),
        legacy: rules_only(out("iptables-legacy-save", &[])),
        netns: out("ip", &["netns", "list"])
            .lines()
            .filter(|l| l.starts_with(&format!("{DEMO_PREFIX}-")) || l.starts_with(TOPO_PREFIX))
            .map(str::to_owned)
            .collect(),
        procs,
        kprobe_events: lines(
            ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
                .iter()
                .find_map(|d| std::fs::read_to_string(format!("{d}/kprobe_events")).ok())
                .unwrap_or_default(),
        ),
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

/// Signal dispositions as a shell in the foreground gives them: a test run
/// from a script's background job inherits SIGINT ignored, and a SIGINT
/// that lands before pathtrace installs its handler would then be lost.
trait DefaultSignals {
    fn default_signals(&mut self) -> &mut Self;
}

impl DefaultSignals for Command {
    fn default_signals(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: signal() is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            self.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                Ok(())
            })
        }
    }
}

/// The stress rounds' standard error, kept to explain a round that hangs;
/// removed when dropped.
struct RoundLog(std::path::PathBuf);

impl RoundLog {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("pathtrace-cleanup-{}.log", std::process::id())))
    }

    fn stderr(&self) -> Stdio {
        std::fs::File::create(&self.0).map_or_else(|_| Stdio::null(), Stdio::from)
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for RoundLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn end_with(child: &mut std::process::Child, signal: i32, what: &str, log: &RoundLog) {
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
    panic!(
        "pathtrace {what} did not end within 30 s of signal {signal}; its stderr ended with:\n{}",
        log.tail()
    );
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
    let topo = Routed::new(TOPO_PREFIX);
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
    let log = RoundLog::new();
    let mut rng = Lcg(seed);
    for i in 0..rounds {
        let args = &commands[rng.next(commands.len() as u64) as usize];
        let signal = signals[rng.next(3) as usize];
        let delay = Duration::from_millis(rng.next(2500));
        let mut child = Command::new(pathtrace_bin())
            .args(with_tier(args))
            .stdout(Stdio::null())
            .env("RUST_LOG", "info")
            .stderr(log.stderr())
            .default_signals()
            .spawn()
            .expect("starts pathtrace");
        std::thread::sleep(delay);
        if i % 3 == 0 {
            topo.send_udp(&topo.a, None, "198.51.100.2", 7, 3, None);
        }
        let what = format!("{args:?} (round {i}, signalled after {delay:?})");
        end_with(&mut child, signal, &what, &log);
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
    let mut left = snapshot().added_since(&before);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        left = snapshot().added_since(&before);
    }
    assert!(left.is_empty(), "left on the host (seed {seed}): {left:?}");
}

//! The incident's real shape: pathtrace runs on the hypervisor (`{p}-lan`,
//! whose bridge passes bridged frames through iptables), Docker runs in a
//! guest behind the bridge (`{p}-dock`), and the only flags are the flow's.
//! Rule tracing follows the packet into the guest, and the guest's engine
//! is found through its process.
use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use lab::{Block, DockerMode, Lab, LabConfig, ProbeOutcome};
use pathtrace_tests::{
    armed_at_start, docker_mode, lab_with, limit, netns_inode, of_type, records, require_root,
    tier, tier_sees_hooks, Running,
};
use serde_json::Value;

fn hypervisor_lab(prefix: &str) -> Lab {
    lab_with(LabConfig {
        block: Block::Drop,
        docker: docker_mode(),
        hypervisor: true,
        ..LabConfig::with_prefix(prefix)
    })
}

/// Whether pathtrace said, within `limit`, that rule tracing runs in
/// namespace `ns`: armed before the first packet, or once it followed the
/// packet there (its stderr, read as it comes).
fn followed_into(run: &mut Running, ns: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        while let Ok(l) = run.stderr.try_recv() {
            eprintln!("[pathtrace] {l}");
            run.stderr_lines.push(l);
        }
        if run
            .stderr_lines
            .iter()
            .any(|l| l.contains("followed the packet into") && l.contains(ns))
            || armed_at_start(&run.stderr_lines, ns)
        {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Traces `--src SRC --dport 8092` from the hypervisor while `from`
/// connects for 3.5 s (a SYN and its retransmissions); once pathtrace
/// followed the packet into the guest, `from` connects once more (1.5 s),
/// so that packets pass the guest with its rules traced however slowly
/// pathtrace started (a cold start in an emulated guest takes seconds).
fn trace_from_hypervisor(lab: &Lab, src: IpAddr, from: &str) -> (Vec<Value>, Vec<String>) {
    let src = src.to_string();
    let mut run = Running::start_in(
        &lab.names.lan,
        &[
            "--src",
            &src,
            "--dport",
            "8092",
            "--json",
            "--duration",
            "60",
        ],
    );
    let connect = |wait| {
        lab.tcp_connect(
            from,
            IpAddr::V4(lab.addrs.host),
            lab.addrs.published_port,
            Duration::from_millis(wait),
        )
    };
    eprintln!("probe from {from}: {:?}", connect(3500));
    assert!(
        followed_into(&mut run, &lab.names.dock, limit(10)),
        "never followed into the guest: {:?}",
        run.stderr_lines
    );
    eprintln!("probe from {from}: {:?}", connect(1500));
    std::thread::sleep(Duration::from_millis(600));
    let stderr = run.stderr_lines.clone();
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    (records(&lines), stderr)
}

fn probe(lab: &Lab, from: &str) -> ProbeOutcome {
    lab.tcp_connect(
        from,
        IpAddr::V4(lab.addrs.host),
        lab.addrs.published_port,
        Duration::from_millis(3500),
    )
}

fn requests(recs: &[Value]) -> Vec<&Value> {
    of_type(recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .collect()
}

#[test]
fn blocked_client_dropped_in_the_guest_by_its_docker_user_rule() {
    require_root("blocked_client_dropped_in_the_guest_by_its_docker_user_rule");
    let lab = hypervisor_lab("pthvdrop");
    let (recs, stderr) =
        trace_from_hypervisor(&lab, IpAddr::V4(lab.addrs.client), &lab.names.client);
    let dock = netns_inode(&lab.names.dock);
    let reqs = requests(&recs);
    assert!(reqs.len() >= 2, "a SYN and a retransmission: {recs:#?}");
    // The guest forwards and has rules: armed before the first packet,
    // every SYN carries its rule.
    assert!(
        armed_at_start(&stderr, &lab.names.dock),
        "the guest is on the likely path: {stderr:?}"
    );
    for p in &reqs {
        assert!(!p["rule"].is_null(), "the first SYN has its rule too: {p}");
        assert_eq!(p["fate"], "dropped", "{p}");
        assert_eq!(p["hook"], "FORWARD", "{p}");
        assert_eq!(p["netns"].as_u64(), Some(dock), "dropped in the guest: {p}");
        assert_eq!(p["netns_name"], lab.names.dock.as_str(), "{p}");
        if p["rule"].is_null() {
            assert_eq!(
                p["rules_late"],
                serde_json::json!([lab.names.dock]),
                "a packet without its rule says rule tracing came late: {p}"
            );
        }
    }
    let named: Vec<_> = reqs.iter().filter(|p| !p["rule"].is_null()).collect();
    assert!(
        !named.is_empty(),
        "no retransmission carries the guest's rule: {reqs:#?}"
    );
    for p in named {
        assert_eq!(p["chain"], "DOCKER-USER", "{p}");
        assert_eq!(p["rule_index"], 1, "{p}");
        assert_eq!(p["rule"], "-A DOCKER-USER -s 192.0.2.9/32 -j DROP", "{p}");
        let msg = p["diagnosis"]["message"].as_str().expect("message");
        let mut want = vec!["rule 1 of chain DOCKER-USER", "namespace pthvdrop-dock"];
        // The published port and the container's name come from the
        // engine's API; an emulated Docker has none, and the diagnosis
        // says where the DNAT sent the packet instead.
        if lab.docker_is_real() {
            want.push("published port 8092 → container web:80");
        } else {
            want.push("DNAT to 198.51.100.2:80");
        }
        for w in want {
            assert!(msg.contains(w), "diagnosis lacks {w:?}: {msg}");
        }
    }
}

#[test]
fn other_host_delivered_into_the_container_in_the_guest() {
    require_root("other_host_delivered_into_the_container_in_the_guest");
    let lab = hypervisor_lab("pthvok");
    let (recs, _) = trace_from_hypervisor(&lab, IpAddr::V4(lab.addrs.other), &lab.names.other);
    let ctr = netns_inode(&lab.names.ctr);
    let syn = requests(&recs)
        .into_iter()
        .find(|p| p["fate"] == "delivered" && p["netns"].as_u64() == Some(ctr))
        .unwrap_or_else(|| panic!("no packet delivered into the container: {recs:#?}"));
    assert_eq!(syn["saddr"], "192.0.2.134");
    assert_eq!(syn["final"]["dport"], 80);
    if lab.docker_is_real() {
        assert_eq!(syn["container"], "web", "{syn}");
        assert_eq!(syn["netns_name"], "web", "{syn}");
    }
}

fn pathtrace_tables(ns: &str) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["nft", "list", "tables"])
        .output()
        .expect("nft runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("pathtrace"))
        .map(|l| format!("{ns}: {l}"))
        .collect()
}

/// Starts pathtrace in the hypervisor with only the flow's flags and
/// connects from the blocked client until it follows into the guest.
fn run_until_followed(lab: &Lab) -> Running {
    let mut run = Running::start_in(&lab.names.lan, &["--src", "192.0.2.9", "--dport", "8092"]);
    let outcome = lab.tcp_connect(
        &lab.names.client,
        IpAddr::V4(lab.addrs.host),
        lab.addrs.published_port,
        Duration::from_millis(1500),
    );
    assert_eq!(outcome, ProbeOutcome::TimedOut, "the client is blocked");
    assert!(
        followed_into(&mut run, &lab.names.dock, limit(5)),
        "never followed into the guest: {:?}",
        run.stderr_lines
    );
    run
}

/// pathtrace's tables in every namespace of the lab.
fn tables_now(lab: &Lab) -> Vec<String> {
    lab.names
        .all()
        .iter()
        .flat_map(|ns| pathtrace_tables(ns))
        .collect()
}

/// [`tables_now`], polled for up to 5 s until there are none.
fn tables_left(lab: &Lab) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = tables_now(lab);
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// From 5.12 the kernel deletes a table owned by the killed process's
/// socket (`NFT_TABLE_F_OWNER`). Before, pathtrace names its tables with
/// its pid and the next run deletes those of dead pids in every namespace
/// it arms (README "Leaving no trace").
#[test]
fn sigkill_mid_trace_leaves_no_table_in_any_namespace() {
    require_root("sigkill_mid_trace_leaves_no_table_in_any_namespace");
    let lab = hypervisor_lab("pthvkill");
    let run = run_until_followed(&lab);
    let during: Vec<String> = [&lab.names.lan, &lab.names.dock]
        .iter()
        .flat_map(|ns| pathtrace_tables(ns))
        .collect();
    assert_eq!(
        during.len(),
        2,
        "a table in the hypervisor and in the guest: {during:?}"
    );
    let pid_tagged = format!("pathtrace-{}-", run.pid());
    let owned = !during.iter().any(|t| t.contains(&pid_tagged));
    // SAFETY: killing our own child by its pid.
    unsafe { libc::kill(run.pid(), libc::SIGKILL) };
    let _ = run.wait(Duration::from_secs(10));
    if owned {
        let left = tables_left(&lab);
        assert!(left.is_empty(), "tables left after SIGKILL: {left:?}");
        return;
    }
    assert!(
        during.iter().all(|t| t.contains(&pid_tagged)),
        "both tables carry the pid: {during:?}"
    );
    let left = tables_now(&lab);
    assert_eq!(left.len(), 2, "the killed run's tables stay: {left:?}");
    let next = run_until_followed(&lab);
    let (code, _) = next.stop();
    assert_eq!(code, 0, "the next run's exit status");
    let left = tables_left(&lab);
    assert!(
        left.is_empty(),
        "the next run swept the killed run's tables in both namespaces: {left:?}"
    );
}

/// The guest's dockerd and its container start after pathtrace: the guest's
/// namespace first appears on the packet's path mid-trace, and its engine is
/// looked up then, through its process, without a flag.
#[test]
fn engine_started_after_pathtrace_names_the_container() {
    require_root("engine_started_after_pathtrace_names_the_container");
    let mut lab = Lab::start(LabConfig {
        block: Block::Drop,
        // Names come from the engine's API: an emulation has none.
        docker: DockerMode::Real,
        hypervisor: true,
        defer_docker: true,
        ready_timeout: limit(30),
        ..LabConfig::with_prefix("pthvlate")
    })
    .expect("the hypervisor and its guest's namespaces");
    let run = Running::start_in(
        &lab.names.lan,
        &["--dport", "8092", "--json", "--duration", "60"],
    );
    lab.start_docker()
        .expect("dockerd and web start in the guest");
    assert!(lab.docker_is_real(), "a real dockerd runs in the guest");
    assert_eq!(probe(&lab, &lab.names.other), ProbeOutcome::Connected);
    assert_eq!(probe(&lab, &lab.names.client), ProbeOutcome::TimedOut);
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    let recs = records(&lines);
    let ctr = netns_inode(&lab.names.ctr);
    let reqs = requests(&recs);
    let delivered = reqs
        .iter()
        .find(|p| p["fate"] == "delivered" && p["netns"].as_u64() == Some(ctr))
        .unwrap_or_else(|| panic!("no packet delivered into the container: {recs:#?}"));
    assert_eq!(delivered["saddr"], "192.0.2.134", "{delivered}");
    assert_eq!(delivered["container"], "web", "{delivered}");
    assert_eq!(delivered["netns_name"], "web", "{delivered}");
    assert_eq!(delivered["netns_kind"], "container", "{delivered}");
    let dropped: Vec<_> = reqs
        .iter()
        .filter(|p| p["fate"] == "dropped" && p["saddr"] == "192.0.2.9")
        .collect();
    assert!(!dropped.is_empty(), "the client's SYNs dropped: {recs:#?}");
    for p in dropped {
        let msg = p["diagnosis"]["message"].as_str().expect("message");
        assert!(
            msg.contains("published port 8092 → container web:80"),
            "the diagnosis names the container: {msg}"
        );
    }
}

/// The text output on the hypervisor: a bridged frame runs the bridge's
/// FORWARD hook and, inside it (br_netfilter), the IPv4 one; both are shown
/// with their family where the tier sees `nf_hook_slow`.
#[test]
fn bridged_frames_show_bridge_and_ip_forward_in_text() {
    require_root("bridged_frames_show_bridge_and_ip_forward_in_text");
    let lab = hypervisor_lab("pthvtext");
    let run = Running::start_in(
        &lab.names.lan,
        &[
            "--src",
            "192.0.2.134",
            "--dport",
            "8092",
            "--duration",
            "30",
        ],
    );
    assert_eq!(probe(&lab, &lab.names.other), ProbeOutcome::Connected);
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    let text = lines.join("\n");
    let in_hv = |what: &str| {
        lines
            .iter()
            .any(|l| l.contains(&lab.names.lan) && l.contains(what))
    };
    assert!(
        lines.iter().any(|l| l.contains("✓ delivered")),
        "a packet delivered: {text}"
    );
    if tier_sees_hooks() {
        for want in ["bridge FORWARD", "ip FORWARD"] {
            assert!(in_hv(want), "{want:?} on the hypervisor: {text}");
        }
    } else {
        assert!(
            !in_hv("bridge FORWARD") && !in_hv("ip FORWARD"),
            "tier {} has no nf_hook_slow hops: {text}",
            tier()
        );
    }
}

/// What the host sees of an LXC guest's init: a process of the guest's
/// network namespace in cgroup `lxc.payload.ID`, with an `/etc/hostname` of
/// its own (in a private mount namespace). Ended, by pid, and its cgroup
/// and file removed when dropped, a failed test included.
struct LxcInit {
    child: Child,
    cgroup: PathBuf,
    dir: PathBuf,
}

impl LxcInit {
    fn start(test: &str, netns: &str, id: u32, hostname: &str) -> Self {
        let cgroup = lab::cgroup2_root()
            .unwrap_or_else(|| panic!("{test}: no cgroup2 hierarchy is mounted"))
            .join(format!("lxc.payload.{id}"));
        assert!(
            !cgroup.exists(),
            "{test}: {} already exists; not touching another guest's cgroup",
            cgroup.display()
        );
        let dir = std::env::temp_dir().join(format!("pathtrace-lxc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let file = dir.join("hostname");
        std::fs::write(&file, format!("{hostname}\n")).expect("writes the guest's hostname");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ])
            .args([
                "sh",
                "-c",
                "mount --bind \"$1\" /etc/hostname && exec sleep 300",
                "sh",
            ])
            .arg(&file)
            .spawn()
            .expect("starts the guest's init");
        let init = Self { child, cgroup, dir };
        std::fs::create_dir(&init.cgroup).expect("creates the guest's cgroup");
        std::fs::write(
            init.cgroup.join("cgroup.procs"),
            init.child.id().to_string(),
        )
        .expect("moves the init into the guest's cgroup");
        let pid = init.child.id();
        let deadline = std::time::Instant::now() + limit(10);
        while std::fs::read_to_string(format!("/proc/{pid}/root/etc/hostname"))
            .map_or(true, |h| h.trim() != hostname)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{test}: the guest's init never had its own /etc/hostname"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        init
    }
}

impl Drop for LxcInit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// On a Proxmox host the guest's namespace is named after its container:
/// `CT 9103 (seafile)` from the cgroup `lxc.payload.9103` and the guest's
/// own `/etc/hostname`, in text, JSON (`netns_kind` `lxc`) and diagnosis.
#[test]
fn lxc_guest_is_named_by_its_cgroup_and_hostname() {
    let test = "lxc_guest_is_named_by_its_cgroup_and_hostname";
    require_root(test);
    let lab = hypervisor_lab("pthvlxc");
    let _init = LxcInit::start(test, &lab.names.dock, 9103, "seafile");
    let mut run = Running::start_in(
        &lab.names.lan,
        &[
            "--src",
            "192.0.2.9",
            "--dport",
            "8092",
            "--json",
            "--duration",
            "60",
        ],
    );
    assert_eq!(probe(&lab, &lab.names.client), ProbeOutcome::TimedOut);
    assert!(
        followed_into(&mut run, "CT 9103 (seafile)", limit(10)),
        "followed into the guest by its name: {:?}",
        run.stderr_lines
    );
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    let recs = records(&lines);
    let dock = netns_inode(&lab.names.dock);
    let dropped: Vec<_> = requests(&recs)
        .into_iter()
        .filter(|p| p["fate"] == "dropped")
        .collect();
    assert!(!dropped.is_empty(), "the client's SYNs dropped: {recs:#?}");
    for p in dropped {
        assert_eq!(p["netns"].as_u64(), Some(dock), "dropped in the guest: {p}");
        assert_eq!(p["netns_name"], "CT 9103 (seafile)", "{p}");
        assert_eq!(p["netns_kind"], "lxc", "{p}");
        let msg = p["diagnosis"]["message"].as_str().expect("message");
        assert!(
            msg.contains("namespace CT 9103 (seafile)"),
            "the diagnosis names the guest: {msg}"
        );
    }
}

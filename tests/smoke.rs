//! A short proof that a build works on a kernel: on the tier the suite runs
//! with, the programs load, the incident's DOCKER-USER drop is traced to its
//! rule (and, on the nf_hook_slow tiers, through each hook's verdict, which
//! needs the kprobe's arguments read the architecture's way), `drops` names
//! the drop, and nothing pathtrace added is left afterwards.
//!
//! `cargo xtask test --arm64` runs it on every tier in an arm64 guest, where
//! a tier that kernel refuses (`PATHTRACE_TEST_TIER_REFUSED=1`) must be
//! refused in one line; it runs on the machine's own kernel like any suite.
use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use lab::Block;
use pathtrace_tests::{
    connect, docker_lab, hops_of, limit, netns_inode, of_type, pathtrace_bin, reason, records,
    require_root, require_tool, tier, tier_sees_hooks, Running,
};
use serde_json::Value;

/// What pathtrace may add to the kernel while it runs, read from the
/// kernel's own tools.
#[derive(Debug, PartialEq, Eq)]
struct Added {
    progs: BTreeSet<u64>,
    nft_tables: Vec<String>,
    kprobe_events: Vec<String>,
}

fn out(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("smoke: running {cmd}: {e}"));
    assert!(
        o.status.success(),
        "smoke: {cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn added() -> Added {
    let progs: Value =
        serde_json::from_str(&out("bpftool", &["-j", "prog", "show"])).expect("bpftool JSON");
    Added {
        progs: progs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_u64())
            .collect(),
        nft_tables: out("nft", &["list", "tables"])
            .lines()
            .filter(|l| l.contains("pathtrace"))
            .map(str::to_owned)
            .collect(),
        kprobe_events: ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|d| std::fs::read_to_string(format!("{d}/kprobe_events")).ok())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("pathtrace"))
            .map(str::to_owned)
            .collect(),
    }
}

/// The kernel frees a dead process's programs asynchronously: poll.
fn settles_back_to(before: &Added) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = added();
        if &now == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pathtrace left {now:?}, before it ran {before:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `pathtrace ARGS` while the client connects once; its records.
fn while_client_connects(lab: &lab::Lab, args: &[&str]) -> (Vec<String>, Vec<Value>) {
    let run = Running::start(args);
    // Under software emulation the first listing of a namespace's rules
    // takes seconds after "ready"; a probe before it ends finds no rule.
    std::thread::sleep(limit(1) / 2);
    let outcome = connect(lab, &lab.names.client);
    eprintln!("probe from the client: {outcome:?}");
    assert!(
        !matches!(outcome, lab::ProbeOutcome::Connected),
        "the client's connection is dropped, not {outcome:?}"
    );
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines, stderr) = run.stop_with_stderr();
    assert_eq!(
        code, 0,
        "pathtrace {args:?} exit status; stderr {stderr:#?}"
    );
    (stderr, records(&lines))
}

fn the_incident_is_traced_with_its_rule(lab: &lab::Lab) {
    let (src, dst) = (lab.addrs.client.to_string(), lab.addrs.host.to_string());
    let (stderr, recs) = while_client_connects(
        lab,
        &[
            "--src",
            &src,
            "--dst",
            &dst,
            "--dport",
            "8092",
            "--netns",
            &lab.names.dock,
            "--json",
            "--duration",
            "120",
        ],
    );
    let want = format!("pathtrace: tier {}", tier());
    assert!(
        stderr.iter().any(|l| l == &want),
        "the programs of tier {} loaded: {stderr:?}",
        tier()
    );
    let dropped: Vec<&Value> = of_type(&recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .collect();
    assert!(!dropped.is_empty(), "no request packets: {recs:#?}");
    let dock = netns_inode(&lab.names.dock);
    for p in &dropped {
        assert_eq!(p["fate"], "dropped", "{p}");
        assert_eq!(p["hook"], "FORWARD", "{p}");
        assert_eq!(p["netns"].as_u64(), Some(dock), "{p}");
        let msg = p["diagnosis"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("rule 1 of chain DOCKER-USER"),
            "the diagnosis names the rule: {msg}\nstderr: {stderr:#?}\nrecords: {recs:#?}"
        );
    }
    let verdicts: Vec<(String, String)> = hops_of(&recs, &dropped[0]["packet"])
        .into_iter()
        .filter(|h| h["kind"] == "nf_hook")
        .map(|h| {
            let s = |k: &str| h[k].as_str().unwrap_or("?").to_owned();
            (s("hook"), s("verdict"))
        })
        .collect();
    if tier_sees_hooks() {
        let last_two = &verdicts[verdicts.len().saturating_sub(2)..];
        assert_eq!(
            last_two,
            [
                ("PREROUTING".to_owned(), "ACCEPT".to_owned()),
                ("FORWARD".to_owned(), "DROP".to_owned())
            ],
            "nf_hook_slow's verdicts for the client's SYN (tier {})",
            tier()
        );
    } else {
        assert!(
            verdicts.is_empty(),
            "tier {} has no nf_hook_slow program: {verdicts:?}",
            tier()
        );
    }
}

fn drops_names_the_drop(lab: &lab::Lab) {
    let (stderr, recs) = while_client_connects(lab, &["drops", "--json", "--duration", "120"]);
    let client = lab.addrs.client.to_string();
    // Dropped in FORWARD, after Docker's DNAT to the container.
    let found = of_type(&recs, "drop").into_iter().find(|d| {
        d["netns_name"] == lab.names.dock.as_str()
            && d["saddr"] == client.as_str()
            && d["hook"] == "FORWARD"
    });
    let d = found.unwrap_or_else(|| {
        panic!(
            "no drop in {}: {recs:#?}\nstderr: {stderr:#?}",
            lab.names.dock
        )
    });
    assert_eq!(d["reason"], reason("NETFILTER_DROP"), "{d}");
    assert_eq!(d["dport"], 80, "{d}");
}

/// A tier the kernel refuses (`PATHTRACE_TEST_TIER_REFUSED=1`): refused at
/// start in one line naming it, exit status 1, nothing left.
fn refused_in_one_line() {
    let before = added();
    let out = Command::new(pathtrace_bin())
        .args(["--dport", "8092", "--duration", "5", "--tier", &tier()])
        .output()
        .expect("pathtrace runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr {said}");
    let want = format!("pathtrace: tier {} can't run on this kernel: ", tier());
    assert!(
        said.lines().count() == 1 && said.starts_with(&want),
        "one line starting {want:?}: {said}"
    );
    settles_back_to(&before);

    let out = Command::new(pathtrace_bin())
        .args(["--dport", "8092", "--duration", "3", "--tier", "auto"])
        .output()
        .expect("pathtrace runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "--tier auto; stderr {said}");
    let refused = format!(" (refused: {}: ", tier());
    assert!(
        said.lines()
            .any(|l| l.starts_with("pathtrace: tier ") && l.contains(&refused)),
        "--tier auto falls back, saying {refused:?}: {said}"
    );
    settles_back_to(&before);
}

#[test]
fn loads_traces_the_incident_names_the_drop_and_leaves_nothing() {
    let test = "loads_traces_the_incident_names_the_drop_and_leaves_nothing";
    require_root(test);
    for tool in ["bpftool", "nft"] {
        require_tool(test, tool);
    }
    if std::env::var_os("PATHTRACE_TEST_TIER_REFUSED").is_some() {
        refused_in_one_line();
        return;
    }
    let before = added();
    let lab = docker_lab("ptsmk", Block::Drop);
    the_incident_is_traced_with_its_rule(&lab);
    settles_back_to(&before);
    drops_names_the_drop(&lab);
    settles_back_to(&before);
    let names = lab.names.clone();
    drop(lab);
    let left = out("ip", &["netns", "list"]);
    for ns in names.all() {
        assert!(
            !left
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} left: {left}"
        );
    }
}

//! The firewall rule that decided: named with table, chain, index and text,
//! for iptables-nft on the real-Docker lab and iptables-legacy on the
//! emulated one; and nothing of pathtrace's left in any namespace after.
use std::{net::IpAddr, process::Command};

use lab::{Block, DockerMode, Firewall, Lab, LabConfig};
use pathtrace_tests::{
    docker_lab, hops_of, lab_with, limit, of_type, records, require_root, trace, Running,
};
use serde_json::Value;

fn legacy_lab(prefix: &str, block: Block) -> Lab {
    lab_with(LabConfig {
        block,
        firewall: Firewall::Legacy,
        docker: DockerMode::Emulated,
        ..LabConfig::with_prefix(prefix)
    })
}

fn client_packets(lab: &Lab) -> Vec<Value> {
    let recs = trace(
        lab,
        IpAddr::V4(lab.addrs.client),
        &lab.names.client,
        &["--netns", &lab.names.dock],
    );
    let packets: Vec<Value> = of_type(&recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .cloned()
        .collect();
    assert!(!packets.is_empty(), "no packets: {recs:#?}");
    packets
}

fn check_drop_rule(lab: &Lab, target: &str) {
    for p in client_packets(lab) {
        assert_eq!(p["fate"], "dropped", "{p}");
        assert_eq!(p["table"], "filter", "{p}");
        assert_eq!(p["chain"], "DOCKER-USER", "{p}");
        assert_eq!(p["rule_index"], 1, "{p}");
        assert_eq!(p["policy"], false, "{p}");
        let rule = p["rule"]
            .as_str()
            .unwrap_or_else(|| panic!("no rule text: {p}"));
        assert!(rule.starts_with("-A DOCKER-USER -s 192.0.2.9/32"), "{rule}");
        assert!(rule.contains(target), "{rule} lacks {target}");
    }
}

fn check_policy(lab: &Lab) {
    for p in client_packets(lab) {
        assert_eq!(p["fate"], "dropped", "{p}");
        assert_eq!(
            (p["table"].as_str(), p["chain"].as_str()),
            (Some("filter"), Some("FORWARD")),
            "{p}"
        );
        assert_eq!(p["policy"], true, "the chain's policy decided: {p}");
        assert_eq!(p["rule_index"], Value::Null, "{p}");
    }
}

fn check_dnat(lab: &Lab) {
    let recs = trace(
        lab,
        IpAddr::V4(lab.addrs.other),
        &lab.names.other,
        &["--netns", &lab.names.dock],
    );
    let delivered = of_type(&recs, "packet")
        .into_iter()
        .find(|p| p["fate"] == "delivered")
        .unwrap_or_else(|| panic!("nothing delivered: {recs:#?}"));
    let hops = hops_of(&recs, &delivered["packet"]);
    let dnat = hops
        .iter()
        .find(|h| {
            h["kind"] == "nf_rule"
                && h["table"] == "nat"
                && h["rule"].as_str().is_some_and(|r| r.contains("DNAT"))
        })
        .unwrap_or_else(|| panic!("no DNAT rule hop: {hops:#?}"));
    let rule = dnat["rule"].as_str().unwrap_or_default();
    assert!(
        rule.contains("--to-destination 198.51.100.2:80"),
        "translated address: {rule}"
    );
    assert_eq!(dnat["hook"], "PREROUTING");
    assert!(
        dnat["rule_index"].as_u64().is_some_and(|i| i >= 1),
        "{dnat}"
    );
}

#[test]
fn nft_docker_user_drop_is_named() {
    require_root("nft_docker_user_drop_is_named");
    check_drop_rule(&docker_lab("ptrdrop", Block::Drop), "-j DROP");
}

#[test]
fn nft_reject_with_tcp_reset_is_named() {
    require_root("nft_reject_with_tcp_reset_is_named");
    check_drop_rule(
        &docker_lab("ptrrej", Block::Reject),
        "-j REJECT --reject-with tcp-reset",
    );
}

#[test]
fn nft_forward_policy_drop_is_reported_as_policy() {
    require_root("nft_forward_policy_drop_is_reported_as_policy");
    check_policy(&docker_lab("ptrpol", Block::PolicyDrop));
}

#[test]
fn nft_dnat_rule_shows_translated_address() {
    require_root("nft_dnat_rule_shows_translated_address");
    check_dnat(&docker_lab("ptrnat", Block::Drop));
}

#[test]
fn legacy_drop_reject_policy_and_dnat() {
    require_root("legacy_drop_reject_policy_and_dnat");
    check_drop_rule(&legacy_lab("ptldrop", Block::Drop), "-j DROP");
    check_drop_rule(
        &legacy_lab("ptlrej", Block::Reject),
        "-j REJECT --reject-with tcp-reset",
    );
    check_policy(&legacy_lab("ptlpol", Block::PolicyDrop));
    check_dnat(&legacy_lab("ptlnat", Block::Drop));
}

fn leftovers_in(ns: Option<&str>) -> Vec<String> {
    let run = |args: &[&str]| {
        let mut cmd = match ns {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n]);
                c.args(args);
                c
            }
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        String::from_utf8_lossy(&cmd.output().expect("runs").stdout).into_owned()
    };
    let mut found = Vec::new();
    for line in run(&["nft", "list", "tables"]).lines() {
        if line.contains("pathtrace") {
            found.push(format!("{ns:?}: {line}"));
        }
    }
    for line in run(&["iptables-legacy-save"]).lines() {
        if line.contains("pathtrace") {
            found.push(format!("{ns:?}: {line}"));
        }
    }
    found
}

#[test]
fn no_table_chain_or_rule_remains_after_exit_or_sigkill() {
    require_root("no_table_chain_or_rule_remains_after_exit_or_sigkill");
    for lab in [
        docker_lab("ptrkill", Block::Drop),
        legacy_lab("ptlkill", Block::Drop),
    ] {
        check_no_leftovers(&lab, &[]);
    }
}

/// Kernels before 5.12 have no owned tables; pathtrace then names its table
/// after its pid, deletes it on exit and sweeps a killed run's. The knob
/// takes that path on this kernel too.
#[test]
fn unowned_tables_are_deleted_on_exit_and_swept_after_sigkill() {
    require_root("unowned_tables_are_deleted_on_exit_and_swept_after_sigkill");
    let lab = docker_lab("ptrunown", Block::Drop);
    let env = [("PATHTRACE_NFT_UNOWNED", "1")];
    let run = Running::start_env(
        &[
            "--src",
            "192.0.2.9",
            "--dport",
            "8092",
            "--netns",
            &lab.names.dock,
        ],
        &env,
    );
    let table = format!("table inet pathtrace-{}-", run.pid());
    let during = leftovers_in(Some(&lab.names.dock));
    assert!(
        during.iter().any(|l| l.contains(&table)),
        "{table} while it runs: {during:?}"
    );
    let (code, _) = run.stop();
    assert_eq!(code, 0);
    check_no_leftovers(&lab, &env);
}

fn check_no_leftovers(lab: &lab::Lab, env: &[(&str, &str)]) {
    let dock = lab.names.dock.clone();
    let args = [
        "--src",
        "192.0.2.9",
        "--dport",
        "8092",
        "--json",
        "--netns",
        dock.as_str(),
    ];
    // While it runs, its table (nft) or TRACE rules (legacy) are there.
    let run = Running::start_env(&args, env);
    let during = leftovers_in(Some(&dock));
    assert!(
        !during.is_empty(),
        "pathtrace set up no rule tracing in {dock}"
    );
    let (code, lines) = run.stop();
    assert_eq!(code, 0);
    records(&lines);
    assert_eq!(
        leftovers_in(Some(&dock)),
        Vec::<String>::new(),
        "after a clean exit"
    );
    assert_eq!(
        leftovers_in(None),
        Vec::<String>::new(),
        "after a clean exit, host namespace"
    );

    let run = Running::start_env(&args, env);
    // SAFETY: killing the child we started, by its pid.
    unsafe { libc::kill(run.pid(), libc::SIGKILL) };
    let _ = run.wait(limit(5));
    // A killed run may leave legacy TRACE rules; the next run removes them.
    let next = Running::start_env(
        &[
            "--src",
            "192.0.2.9",
            "--dport",
            "8092",
            "--duration",
            "0.5",
            "--netns",
            dock.as_str(),
        ],
        env,
    );
    let _ = next.wait(limit(10));
    assert_eq!(
        leftovers_in(Some(&dock)),
        Vec::<String>::new(),
        "after SIGKILL and one more run"
    );
    assert_eq!(
        leftovers_in(None),
        Vec::<String>::new(),
        "host namespace after SIGKILL"
    );
}

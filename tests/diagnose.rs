//! Plain-language verdicts on the real-Docker lab: the DOCKER-USER drop,
//! REJECT as "refused", a published port with no listener, and `compare`.
use std::{net::IpAddr, time::Duration};

use lab::{Block, Lab, LabConfig, ProbeOutcome};
use pathtrace_tests::{
    connect, docker_lab, kernel_names_drops, lab_with, of_type, records, require_root, trace,
    Running,
};
use serde_json::Value;

fn requests(recs: &[Value]) -> Vec<&Value> {
    of_type(recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .collect()
}

fn summary(recs: &[Value]) -> &Value {
    let s = of_type(recs, "summary");
    assert_eq!(s.len(), 1, "one summary record: {recs:#?}");
    s[0]
}

fn traced(lab: &Lab, src: IpAddr, from: &str) -> Vec<Value> {
    let sock = lab
        .docker_socket()
        .expect("a real dockerd has a socket")
        .display()
        .to_string();
    trace(
        lab,
        src,
        from,
        &["--netns", &lab.names.dock, "--docker-socket", &sock],
    )
}

#[test]
fn docker_user_drop_names_container_port_rule_and_client() {
    require_root("docker_user_drop_names_container_port_rule_and_client");
    let lab = docker_lab("ptdgdrop", Block::Drop);
    let recs = traced(&lab, IpAddr::V4(lab.addrs.client), &lab.names.client);
    let reqs = requests(&recs);
    assert!(!reqs.is_empty(), "{recs:#?}");
    for p in reqs {
        let d = &p["diagnosis"];
        assert_eq!(d["cause"], "rule_drop", "{p}");
        let msg = d["message"].as_str().expect("message");
        for want in [
            "192.0.2.9",
            "container web",
            "published port 8092",
            "FORWARD",
            "rule 1 of chain DOCKER-USER",
            "-A DOCKER-USER -s 192.0.2.9/32 -j DROP",
        ] {
            assert!(msg.contains(want), "diagnosis lacks {want:?}: {msg}");
        }
        let advice = d["advice"].as_str().expect("advice");
        assert!(
            advice.ends_with(": iptables -t filter -I DOCKER-USER 1 -s 192.0.2.9 -p tcp -m conntrack --ctorigdstport 8092 -j ACCEPT"),
            "{advice}"
        );
    }
    let conns = summary(&recs)["connections"]
        .as_array()
        .expect("connections")
        .clone();
    assert!(!conns.is_empty());
    assert!(
        conns.iter().all(|c| c["outcome"] == "timed_out"),
        "{conns:#?}"
    );
}

#[test]
fn reject_with_rst_is_refused_by_the_rule() {
    require_root("reject_with_rst_is_refused_by_the_rule");
    let lab = docker_lab("ptdgrej", Block::Reject);
    let recs = traced(&lab, IpAddr::V4(lab.addrs.client), &lab.names.client);
    let req = requests(&recs)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert_eq!(req["diagnosis"]["cause"], "reject", "{req}");
    let msg = req["diagnosis"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("refused"), "{msg}");
    assert!(
        msg.contains("rule 1 of chain DOCKER-USER")
            && msg.contains("REJECT --reject-with tcp-reset"),
        "{msg}"
    );
    let conns = summary(&recs)["connections"]
        .as_array()
        .expect("connections")
        .clone();
    let c = conns
        .first()
        .unwrap_or_else(|| panic!("no connection: {recs:#?}"));
    assert_eq!(c["outcome"], "refused", "{c}");
    let why = c["explanation"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("namespace {}", lab.names.dock)) && why.contains("DOCKER-USER"),
        "{why}"
    );
}

#[test]
fn published_port_without_listener_is_refused_by_the_container() {
    require_root("published_port_without_listener_is_refused_by_the_container");
    let cfg = LabConfig {
        listener: false,
        docker: pathtrace_tests::docker_mode(),
        ..LabConfig::with_prefix("ptdgnol")
    };
    let lab = lab_with(cfg);
    let recs = traced(&lab, IpAddr::V4(lab.addrs.other), &lab.names.other);
    let req = requests(&recs)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{recs:#?}"));
    let msg = req["diagnosis"]["message"].as_str().unwrap_or_default();
    assert_eq!(req["diagnosis"]["cause"], "no_socket", "{req}");
    assert!(
        msg.starts_with("refused") && msg.contains("container web") && msg.contains("port 80"),
        "{msg}"
    );
    if !kernel_names_drops() {
        // Before 5.17 tcp_v4_rcv frees the segment for a port without a
        // socket with a plain kfree_skb(): the kernel gives no reason, and
        // pathtrace says the cause is inferred from that function.
        assert!(req["reason"].is_null(), "{req}");
        assert!(msg.contains("inferred from the function"), "{msg}");
    }
    let conns = summary(&recs)["connections"]
        .as_array()
        .expect("connections")
        .clone();
    let c = conns
        .first()
        .unwrap_or_else(|| panic!("no connection: {recs:#?}"));
    assert_eq!(c["outcome"], "refused", "{c}");
    assert!(
        c["explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("container web"),
        "{c}"
    );
}

#[test]
fn compare_points_at_forward_docker_user() {
    require_root("compare_points_at_forward_docker_user");
    let lab = docker_lab("ptdgcmp", Block::Drop);
    let sock = lab.docker_socket().expect("socket").display().to_string();
    let run = Running::start(&[
        "compare",
        "--src",
        "192.0.2.9",
        "--src",
        "192.0.2.134",
        "--dport",
        "8092",
        "--json",
        "--netns",
        &lab.names.dock,
        "--docker-socket",
        &sock,
    ]);
    assert_eq!(connect(&lab, &lab.names.other), ProbeOutcome::Connected);
    assert_eq!(connect(&lab, &lab.names.client), ProbeOutcome::TimedOut);
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0);
    let recs = records(&lines);
    let cmp = of_type(&recs, "compare");
    assert_eq!(cmp.len(), 1, "{recs:#?}");
    let d = &cmp[0]["diverge"];
    assert_eq!(d["hook"], "FORWARD", "{:#}", cmp[0]);
    assert_eq!(d["chain"], "DOCKER-USER", "{:#}", cmp[0]);
    assert_eq!(d["netns_name"], lab.names.dock.as_str());
    assert!(d["a"].as_str().is_some_and(|a| a.contains("DROP")), "{d}");
    assert_eq!(cmp[0]["a"]["fate"], "dropped");
    assert_eq!(cmp[0]["b"]["fate"], "delivered");
}

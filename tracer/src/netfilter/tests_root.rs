//! Root tests: real namespaces, real packets, real nf_tables traces.
//! Each fails, naming itself, without root.

use std::net::IpAddr;
use std::time::Duration;

use super::testnet::{collect, wait_readable, Lab, OtherProcess, A_ADDR, B_ADDR};
use super::*;
use crate::model::{Cidr, FlowFilter, Proto, Verdict};

const PORT: u16 = 8092;

fn dport_filter() -> Vec<FlowFilter> {
    vec![FlowFilter {
        dport: Some(PORT),
        proto: Some(Proto(6)),
        ..Default::default()
    }]
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn has_pathtrace(lab: &Lab) -> bool {
    lab.in_b("nft list tables")
        .lines()
        .any(|l| l.ends_with(" pathtrace") || l.contains(" pathtrace-"))
}

#[test]
fn iptables_nft_rule_drop_is_named() {
    lab::require_root("iptables_nft_rule_drop_is_named");
    let lab = Lab::new("rule");
    lab.in_b("iptables-nft -A INPUT -p icmp -j ACCEPT");
    lab.in_b("iptables-nft -A INPUT -s 192.0.2.1 -p tcp --dport 8092 -j DROP");
    let mut t = RuleTracer::start(Some(&lab.path_b()), &dport_filter()).expect("start");
    assert_eq!(t.table_name(), "pathtrace");
    let listing = lab.in_b("nft list table inet pathtrace");
    assert!(
        listing.contains("tcp dport 8092 meta nftrace set 1"),
        "{listing}"
    );
    assert!(
        listing.contains("hook prerouting priority -350") && listing.contains("hook output"),
        "{listing}"
    );
    lab.syn_a_to_b(PORT);
    let evs = collect(&mut t, Duration::from_secs(3), |e| {
        e.iter().any(|e| e.verdict == Some(Verdict::Drop))
    });
    for e in &evs {
        eprintln!(
            "event: {} {} {} {:?} {:?} {:?} hook={:?}",
            family_name(e.family),
            e.table,
            e.chain,
            e.kind,
            e.rule_handle,
            e.verdict,
            e.hook
        );
    }
    let ev = evs
        .iter()
        .find(|e| e.table == "filter" && e.chain == "INPUT" && e.kind == TraceKind::Rule)
        .expect("a rule event in filter INPUT");
    assert_eq!(ev.verdict, Some(Verdict::Drop));
    assert_eq!(ev.family, NFPROTO_IPV4);
    assert_eq!(ev.hook, Some(1), "INPUT is on the input hook");
    let tu = ev.tuple.expect("tuple");
    assert_eq!(
        (tu.saddr, tu.daddr, tu.dport, tu.proto),
        (ip(A_ADDR), ip(B_ADDR), PORT, 6)
    );
    assert!(ev.iif.is_some());
    let mut book = RuleBook::new(Some(&lab.path_b()));
    let info = book
        .rule(
            ev.family,
            &ev.table,
            &ev.chain,
            ev.rule_handle.expect("handle"),
            ev.rules_gen,
        )
        .expect("rule info");
    eprintln!("rule: {info:?}");
    assert_eq!(info.index, 2);
    assert!(info.iptables);
    assert!(
        info.text
            .contains("-A INPUT -s 192.0.2.1/32 -p tcp -m tcp --dport 8092 -j DROP"),
        "{}",
        info.text
    );
    assert_eq!(
        book.chain_hook(NFPROTO_IPV4, "filter", "INPUT", ev.rules_gen),
        Some(1)
    );
    // Our own table's events are left out.
    assert!(evs.iter().all(|e| e.table != "pathtrace"));
    drop(t);
    assert!(!has_pathtrace(&lab), "table left behind after drop");
}

#[test]
fn policy_drop_is_reported_as_policy() {
    lab::require_root("policy_drop_is_reported_as_policy");
    let lab = Lab::new("policy");
    lab.in_b("iptables-nft -P INPUT DROP");
    let mut t = RuleTracer::start(Some(&lab.path_b()), &dport_filter()).expect("start");
    lab.syn_a_to_b(PORT);
    let evs = collect(&mut t, Duration::from_secs(3), |e| {
        e.iter().any(|e| e.kind == TraceKind::Policy)
    });
    let ev = evs
        .iter()
        .find(|e| e.kind == TraceKind::Policy)
        .expect("a policy event");
    assert_eq!((ev.table.as_str(), ev.chain.as_str()), ("filter", "INPUT"));
    assert_eq!(ev.verdict, Some(Verdict::Drop));
    assert_eq!(ev.policy, Some(0));
    assert_eq!(ev.rule_handle, None);
}

#[test]
fn native_nft_rule_gets_nft_text() {
    lab::require_root("native_nft_rule_gets_nft_text");
    let lab = Lab::new("native");
    lab.in_b("nft add table inet fw && nft add chain inet fw input \"{ type filter hook input priority 0; }\" && nft add rule inet fw input udp dport 53 accept && nft add rule inet fw input tcp dport 8092 counter drop");
    let filters = [FlowFilter {
        src: Some(Cidr {
            addr: ip(A_ADDR),
            prefix: 32,
        }),
        dst: Some(Cidr {
            addr: ip("192.0.2.0"),
            prefix: 24,
        }),
        dport: Some(PORT),
        both_directions: true,
        ..Default::default()
    }];
    let mut t = RuleTracer::start(Some(&lab.path_b()), &filters).expect("start");
    lab.syn_a_to_b(PORT);
    let evs = collect(&mut t, Duration::from_secs(3), |e| {
        e.iter().any(|e| e.verdict == Some(Verdict::Drop))
    });
    let mut ev = evs
        .iter()
        .find(|e| e.table == "fw" && e.kind == TraceKind::Rule)
        .cloned()
        .expect("a rule event in inet fw");
    assert_eq!(ev.family, NFPROTO_INET);
    assert_eq!(ev.nfproto, Some(u32::from(NFPROTO_IPV4)));
    let mut book = RuleBook::new(Some(&lab.path_b()));
    book.annotate(&mut ev);
    let info = ev.rule.expect("rule info");
    assert_eq!(info.index, 2);
    assert!(!info.iptables);
    assert_eq!(info.text, "tcp dport 8092 counter drop");
    assert_eq!(ev.hook, Some(1));
}

#[test]
fn table_dies_with_a_killed_process() {
    lab::require_root("table_dies_with_a_killed_process");
    let lab = Lab::new("kill");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "netfilter::tests_root::child_holds_a_tracer",
            "--ignored",
            "--nocapture",
        ])
        .env("PT_NF_CHILD_NETNS", lab.path_b())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut seen = false;
    for _ in 0..100 {
        if has_pathtrace(&lab) {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(seen, "the child never created its table");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !has_pathtrace(&lab),
        "table left behind by a killed process"
    );
}

/// Run only as the child of `table_dies_with_a_killed_process`.
#[test]
#[ignore = "a helper process: table_dies_with_a_killed_process runs it"]
fn child_holds_a_tracer() {
    let Some(ns) = std::env::var_os("PT_NF_CHILD_NETNS") else {
        return;
    };
    let _t = RuleTracer::start(Some(std::path::Path::new(&ns)), &dport_filter()).expect("start");
    std::thread::sleep(Duration::from_secs(20));
}

#[test]
fn leftovers_are_swept_and_names_do_not_clash() {
    use crate::kernel::owner::{Owner, TagKind};
    lab::require_root("leftovers_are_swept_and_names_do_not_clash");
    let lab = Lab::new("sweep");
    // Stale tags whose pid is alive, in a process that is not pathtrace:
    // pid-only (an older version's), and with a start time that isn't that
    // process's (the pid was reused).
    let other = OtherProcess::start();
    let alive = other.owner();
    let pid_only = TagKind::NftTable.tag(Owner {
        start: None,
        ..alive
    });
    let reused = TagKind::NftTable.tag(Owner {
        start: alive.start.map(|s| s.saturating_sub(1)),
        ..alive
    });
    // A live run on a kernel without owned tables.
    let unowned =
        RuleTracer::start_with(Some(&lab.path_b()), &dport_filter(), false).expect("unowned");
    assert_eq!(
        unowned.table_name(),
        TagKind::NftTable.tag(Owner::current())
    );
    lab.in_b(&format!(
        "nft add table inet pathtrace && nft add table ip {pid_only} && \
         nft add table inet {reused} && nft add table inet pathtraceX"
    ));
    assert_eq!(sweep_leftovers(Some(&lab.path_b())).expect("sweep"), 3);
    let left = lab.in_b("nft list tables");
    assert!(
        left.contains("pathtraceX") && left.contains(unowned.table_name()),
        "{left}"
    );
    assert!(
        !left.contains(&format!("{pid_only}\n")) && !left.contains(&reused),
        "{left}"
    );
    drop(unowned);
    assert!(!has_pathtrace(&lab));
    let t1 = RuleTracer::start(Some(&lab.path_b()), &dport_filter()).expect("first");
    let t2 = RuleTracer::start(Some(&lab.path_b()), &dport_filter()).expect("second");
    assert_eq!(t1.table_name(), "pathtrace");
    assert_eq!(t2.table_name(), TagKind::NftTable.tag(Owner::current()));
    assert_eq!(
        sweep_leftovers(Some(&lab.path_b())).expect("sweep"),
        0,
        "owned tables are kept"
    );
    drop((t1, t2));
    assert!(!has_pathtrace(&lab));
}

#[test]
fn works_under_tokio_async_fd() {
    lab::require_root("works_under_tokio_async_fd");
    use tokio::io::{unix::AsyncFd, Interest};
    let lab = Lab::new("tokio");
    lab.in_b("iptables-nft -A INPUT -p tcp --dport 8092 -j DROP");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let found = rt.block_on(async {
        let t = RuleTracer::start(Some(&lab.path_b()), &dport_filter()).expect("start");
        // SAFETY: the trace socket stays open, with the same fd, as long as the tracer.
        let mut afd =
            unsafe { AsyncFd::register_with_interest(t, Interest::READABLE) }.expect("register");
        // Blocks this thread for the 1 s connect; the events wait in the socket.
        lab.syn_a_to_b(PORT);
        let deadline = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return false,
                guard = afd.readable_mut() => {
                    let mut guard = guard.expect("readable");
                    let evs = guard.get_inner_mut().read_pending().expect("read");
                    guard.clear_ready();
                    if evs.iter().any(|e| e.verdict == Some(Verdict::Drop) && e.chain == "INPUT") {
                        return true;
                    }
                }
            }
        }
    });
    assert!(found, "no drop event through AsyncFd");
}

/// Prints raw NFT_MSG_TRACE messages as hex, to refresh the unit-test fixtures:
/// `cargo test -p tracer --lib capture_trace_fixtures -- --ignored --nocapture`
#[test]
#[ignore = "a fixture refresher, run by hand"]
fn capture_trace_fixtures() {
    lab::require_root("capture_trace_fixtures");
    let lab = Lab::new("capture");
    lab.in_b("iptables-nft -N CHK && iptables-nft -A CHK -p udp -j ACCEPT && iptables-nft -A INPUT -j CHK");
    lab.in_b("iptables-nft -A INPUT -s 192.0.2.1 -p tcp --dport 8092 -j DROP");
    let raw = ns::with_netns(Some(&lab.path_b()), || {
        let s = super::socket::NlSocket::open(true)?;
        s.add_membership(netlink::NFNLGRP_NFTRACE)?;
        Ok(s)
    })
    .expect("raw socket");
    let _t = RuleTracer::start(Some(&lab.path_b()), &dport_filter()).expect("start");
    let mut buf = vec![0u8; 65536];
    for step in ["rules", "policy"] {
        if step == "policy" {
            lab.in_b("iptables-nft -F INPUT && iptables-nft -P INPUT DROP");
        }
        lab.syn_a_to_b(PORT);
        while wait_readable(
            std::os::fd::AsRawFd::as_raw_fd(&raw),
            Duration::from_millis(500),
        ) {
            let Ok(Some(n)) = raw.recv(&mut buf, true) else {
                break;
            };
            let hex: Vec<String> = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
            println!("MSG {step} {n}: {}", hex.join(""));
        }
    }
}

//! netfilter hook verdicts where calls nest and run side by side: a bridge
//! with br_netfilter (the IPv4 FORWARD hook runs inside the bridge FORWARD
//! hook, on the same `sk_buff`), and two flows through it at once. On the
//! fentry and kprobe tiers every `nf_hook` hop carries its family and its
//! own verdict; the tracepoint tier claims no verdicts and still names the
//! dropping hook.
use std::{collections::HashMap, time::Duration};

use lab::topo::{in_ns, send_udp, Bridged};
use pathtrace_tests::{
    hops_of, netns_inode, of_type, records, require_root, tier, tier_sees_hooks, Running,
};
use serde_json::Value;

/// Drops UDP to port 7 from host 1 in the hypervisor's FORWARD chain,
/// which br_netfilter runs for bridged frames.
fn drop_host1(t: &Bridged) {
    in_ns(
        &t.hv,
        &[
            "iptables",
            "-A",
            "FORWARD",
            "-s",
            "192.0.2.1",
            "-p",
            "udp",
            "--dport",
            "7",
            "-j",
            "DROP",
        ],
    );
}

/// Resolves the hosts' neighbours first, so no datagram waits on ARP.
fn warm_up(t: &Bridged, from: &[usize], to: usize) {
    for &n in from {
        send_udp(&t.hosts[n - 1], None, &Bridged::ip(to), 9, 1, None);
    }
    std::thread::sleep(Duration::from_millis(500));
}

/// (family, hook, verdict) of a packet's `nf_hook` hops in namespace `netns`.
fn hooks_in(recs: &[Value], packet: &Value, netns: u64) -> Vec<(String, String, String)> {
    hook_triples(hops_of(recs, packet), netns)
}

/// (family, hook, verdict) of the `nf_hook` hops among `hops` in `netns`.
fn hook_triples<'a>(
    hops: impl IntoIterator<Item = &'a Value>,
    netns: u64,
) -> Vec<(String, String, String)> {
    hops.into_iter()
        .filter(|h| h["kind"] == "nf_hook" && h["netns"].as_u64() == Some(netns))
        .map(|h| {
            let s = |k: &str| h[k].as_str().unwrap_or("null").to_owned();
            (s("family"), s("hook"), s("verdict"))
        })
        .collect()
}

fn triple(f: &str, h: &str, v: &str) -> (String, String, String) {
    (f.into(), h.into(), v.into())
}

#[test]
fn br_netfilter_shows_the_bridge_and_ip_hooks_and_the_outer_verdict() {
    require_root("br_netfilter_shows_the_bridge_and_ip_hooks_and_the_outer_verdict");
    let t = Bridged::new("ptbrnf", 2);
    drop_host1(&t);
    warm_up(&t, &[1], 2);
    let run = Running::start(&[
        "--src",
        "192.0.2.1",
        "--proto",
        "udp",
        "--dport",
        "7",
        "--no-rules",
        "--json",
        "--duration",
        "30",
    ]);
    send_udp(&t.hosts[0], None, &Bridged::ip(2), 7, 3, None);
    std::thread::sleep(Duration::from_millis(800));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    let recs = records(&lines);
    let hv = netns_inode(&t.hv);
    let dropped: Vec<_> = of_type(&recs, "packet")
        .into_iter()
        .filter(|p| p["fate"] == "dropped")
        .collect();
    assert!(!dropped.is_empty(), "no dropped packet: {recs:#?}");
    for p in &dropped {
        assert_eq!(
            p["netns"].as_u64(),
            Some(hv),
            "dropped in the hypervisor: {p}"
        );
        assert_eq!(p["hook"], "FORWARD", "{p}");
        let hooks = hooks_in(&recs, &p["packet"], hv);
        if tier_sees_hooks() {
            // br_nf_forward_ip hands the frame to the IPv4 hook, which drops
            // it; the bridge hook reports it stolen (as it does for frames it
            // passes on).
            for want in [
                triple("ip", "FORWARD", "DROP"),
                triple("bridge", "FORWARD", "STOLEN"),
            ] {
                assert!(hooks.contains(&want), "{want:?} in {hooks:?}");
            }
        } else {
            assert!(
                hooks.is_empty(),
                "tier {} reported nf_hook hops: {hooks:?}",
                tier()
            );
        }
    }
}

/// Two flows through the bridge at once, from two CPUs' softirqs: each
/// `nf_hook` hop belongs to its own packet and carries its own verdict.
#[test]
fn concurrent_flows_keep_their_own_hook_verdicts() {
    require_root("concurrent_flows_keep_their_own_hook_verdicts");
    let t = Bridged::new("ptconc", 3);
    drop_host1(&t);
    warm_up(&t, &[1, 2], 3);
    let run = Running::start(&[
        "--dst",
        "192.0.2.3",
        "--proto",
        "udp",
        "--dport",
        "7",
        "--no-rules",
        "--no-replies",
        "--json",
        "--duration",
        "120",
        // 1200 packets at once in an emulated guest outrun the default ring.
        "--ring-bytes",
        "8388608",
    ]);
    let senders: Vec<_> = [0usize, 1]
        .into_iter()
        .map(|i| {
            let ns = t.hosts[i].clone();
            std::thread::spawn(move || send_udp(&ns, None, &Bridged::ip(3), 7, 600, None))
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    let recs = records(&lines);
    let hv = netns_inode(&t.hv);
    let packets = of_type(&recs, "packet");
    let mut hops: HashMap<u64, Vec<&Value>> = HashMap::new();
    for h in of_type(&recs, "hop") {
        if let Some(p) = h["packet"].as_u64() {
            hops.entry(p).or_default().push(h);
        }
    }
    let from = |p: &Value, n: usize| p["saddr"].as_str() == Some(Bridged::ip(n).as_str());
    let mut verdicts = [0usize; 2];
    let mut dropped = 0usize;
    // Dropped packets of host 1 without their FORWARD DROP hop: each needs
    // a lost event to explain it.
    let mut missing = Vec::new();
    for p in &packets {
        let nf: Vec<&Value> = p["packet"]
            .as_u64()
            .and_then(|id| hops.get(&id))
            .into_iter()
            .flatten()
            .copied()
            .filter(|h| h["kind"] == "nf_hook")
            .collect();
        for h in &nf {
            assert_eq!(h["saddr"], p["saddr"], "hop of another packet: {h} in {p}");
        }
        let hooks = hook_triples(nf.iter().copied(), hv);
        if from(p, 1) {
            // Under load some paths lose events and end unknown; none may
            // end anywhere but the hypervisor's FORWARD.
            assert_ne!(p["fate"], "delivered", "{p}");
            if p["fate"] != "dropped" {
                continue;
            }
            dropped += 1;
            assert_eq!(p["netns"].as_u64(), Some(hv), "{p}");
            if tier_sees_hooks() {
                if !hooks.contains(&triple("ip", "FORWARD", "DROP")) {
                    missing.push(format!("{hooks:?} of {p}"));
                }
                verdicts[0] += hooks.len();
            }
        } else if from(p, 2) {
            assert!(
                !(p["fate"] == "dropped" && p["netns"].as_u64() == Some(hv)),
                "host 2's packet dropped in the hypervisor: {p}"
            );
            // br_netfilter's bridge hooks hand accepted frames on
            // themselves (STOLEN); only a DROP would be another packet's.
            assert!(
                hooks.iter().all(|(_, _, v)| v != "DROP"),
                "host 2's packet got a DROP verdict: {hooks:?} of {p}"
            );
            verdicts[1] += hooks.len();
        }
    }
    let lost = of_type(&recs, "stats")
        .last()
        .and_then(|s| s["lost"].as_u64())
        .expect("a stats record with lost");
    assert!(
        missing.len() as u64 <= lost,
        "{} dropped packets lack their ip FORWARD DROP hop, but only {lost} events were lost: {missing:#?}",
        missing.len()
    );
    let n2 = packets.iter().filter(|p| from(p, 2)).count();
    assert!(
        dropped >= 100 && n2 >= 100,
        "packets followed: host 1 dropped {dropped}, host 2 {n2}"
    );
    if tier_sees_hooks() {
        assert!(
            verdicts.iter().all(|&v| v >= 100),
            "nf_hook verdicts seen per flow: {verdicts:?}"
        );
    }
}

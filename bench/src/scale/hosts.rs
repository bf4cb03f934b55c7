//! The hosts of the namespace steps: a client `c` (198.51.100.1) and a
//! server `s` (198.51.100.2) joined by a veth, with in `s` a kube-proxy-like
//! nat chain of N service rules (iptables-nft or nft native), or N-1 more
//! namespaces each with a small firewall, or N more veth pairs. Every
//! namespace is `ptscale-*`, and `teardown` removes them all.
use std::{
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::Axis;

const PREFIX: &str = "ptscale";
/// Every namespace of these hosts starts with this.
pub const NETNS_PREFIX: &str = "ptscale-";
pub const CLIENT: &str = "ptscale-c";
pub const SERVER: &str = "ptscale-s";
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The server's port the client's datagrams go to.
pub const PORT: u16 = 9471;

fn sh(script: &str) -> Result<()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .context("running sh")?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            script.chars().take(200).collect::<String>(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `program` in namespace `ns` with `input` on its standard input.
fn feed(ns: &str, program: &[&str], input: &str) -> Result<()> {
    let mut argv = vec!["ip", "netns", "exec", ns];
    argv.extend_from_slice(program);
    feed_host(&argv, input)
}

/// Every `ptscale-*` namespace, deleted.
pub fn teardown() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .collect();
    names.sort();
    let batch: String = names
        .iter()
        .map(|n| format!("netns delete {n}\n"))
        .collect();
    let _ = feed_host(&["ip", "-force", "-batch", "-"], &batch);
}

/// Runs `program` in this namespace with `input` on its standard input.
fn feed_host(program: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The service address of rule `i` (10.96.0.0/12) and its endpoint (10.244.0.0/16).
fn service(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let (hi, lo) = ((i >> 8) as u8, i as u8);
    (
        Ipv4Addr::new(10, 96 + (hi >> 4), hi & 0x0f, lo),
        Ipv4Addr::new(10, 244, hi, lo),
    )
}

/// The iptables-nft-restore input: `n` service rules, and the rule that
/// accepts the traced datagrams.
fn iptables_rules(n: usize) -> String {
    let mut s = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n",
    );
    for i in 0..n {
        let (svc, ep) = service(i);
        let _ = writeln!(
            s,
            "-A KUBE-SERVICES -d {svc}/32 -p tcp -m tcp --dport 80 -m comment --comment \"svc-{i}\" -j DNAT --to-destination {ep}:8080"
        );
    }
    s += "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n";
    let _ = writeln!(
        s,
        "-A INPUT -s {CLIENT_ADDR}/32 -p udp -m udp --dport {PORT} -j ACCEPT\nCOMMIT"
    );
    s
}

/// The same as an nft native table.
fn nft_rules(n: usize) -> String {
    let mut s = String::from(
        "table ip ptscale {\n chain services {\n  type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for i in 0..n {
        let (svc, ep) = service(i);
        let _ = writeln!(
            s,
            "  ip daddr {svc} tcp dport 80 dnat to {ep}:8080 comment \"svc-{i}\""
        );
    }
    let _ = writeln!(
        s,
        " }}\n chain input {{\n  type filter hook input priority filter; policy accept;\n  ip saddr {CLIENT_ADDR} udp dport {PORT} accept\n }}\n}}"
    );
    s
}

/// Builds the host of one step.
pub fn build(axis: Axis, size: usize) -> Result<()> {
    let mut batch = format!(
        "netns add {CLIENT}\nnetns add {SERVER}\n\
         link add ptsc0 netns {CLIENT} type veth peer name ptss0 netns {SERVER}\n"
    );
    if axis == Axis::Namespaces {
        for i in 1..size {
            let _ = writeln!(batch, "netns add {PREFIX}-n{i}");
        }
    }
    feed_host(&["ip", "-batch", "-"], &batch)?;
    sh(&format!(
        "set -e; ip -n {CLIENT} addr add {CLIENT_ADDR}/24 dev ptsc0; ip -n {SERVER} addr add {SERVER_ADDR}/24 dev ptss0; \
         ip -n {CLIENT} link set ptsc0 up; ip -n {SERVER} link set ptss0 up; \
         ip -n {CLIENT} link set lo up; ip -n {SERVER} link set lo up"
    ))?;
    match axis {
        Axis::IptablesRules => feed(SERVER, &["iptables-nft-restore"], &iptables_rules(size))?,
        Axis::NftRules => feed(SERVER, &["nft", "-f", "-"], &nft_rules(size))?,
        Axis::Namespaces => {
            let small = iptables_rules(3);
            feed(SERVER, &["iptables-nft-restore"], &small)?;
            for i in 1..size {
                feed(&format!("{PREFIX}-n{i}"), &["iptables-nft-restore"], &small)?;
            }
        }
        Axis::Veths => {
            feed(SERVER, &["iptables-nft-restore"], &iptables_rules(3))?;
            let mut b = String::new();
            for i in 0..size {
                let _ = writeln!(b, "link add ptsv{i}a type veth peer name ptsv{i}b");
            }
            feed(SERVER, &["ip", "-batch", "-"], &b)?;
        }
        Axis::Containers => bail!("containers are built by the containers step"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addresses_are_distinct_and_in_range() {
        let all: std::collections::BTreeSet<Ipv4Addr> = (0..50_000).map(|i| service(i).0).collect();
        assert_eq!(all.len(), 50_000);
        assert!(all
            .iter()
            .all(|a| a.octets()[0] == 10 && (96..112).contains(&a.octets()[1])));
        assert!(iptables_rules(2).contains("--comment \"svc-1\""));
        assert!(nft_rules(2).contains("dnat to 10.244.0.1:8080 comment \"svc-1\""));
    }
}

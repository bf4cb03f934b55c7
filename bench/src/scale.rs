//! `--scale`: how start-up and memory grow with the host. Each step builds,
//! in namespaces of its own (`ptscale-*`), a host of one size: a client `c`
//! (198.51.100.1) and a server `s` (198.51.100.2) joined by a veth, with in
//! `s` a kube-proxy-like nat chain of N service rules (iptables-nft or nft
//! native), or N-1 more namespaces each with a small firewall, or N more
//! veth pairs. pathtrace starts following UDP from `c` to `s`:9471 with rule
//! tracing on (it arms it where there are rules before its ready line), and the step
//! records the time to its ready line, the time from the first datagram
//! sent to the first rule-attributed hop in `s` on its output (one datagram
//! every 20 ms), and its peak RSS then. Everything is removed after each
//! step, and on any exit.
use std::{
    fmt::Write as _,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{
    peers::{PtRun, Tools},
    stats::{show, Summary},
};

const PREFIX: &str = "ptscale";
const CLIENT: &str = "ptscale-c";
const SERVER: &str = "ptscale-s";
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PORT: u16 = 9471;
/// How long a step waits for its first rule-attributed hop.
const HOP_LIMIT: Duration = Duration::from_secs(15);

/// What grows in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Service rules in a nat chain of `s`, written by iptables-nft.
    IptablesRules,
    /// The same rules as an nft native table.
    NftRules,
    /// Namespaces with a small firewall, `s` among them.
    Namespaces,
    /// veth pairs in `s`.
    Veths,
}

impl Axis {
    /// A file name's part.
    pub fn file_stem(self) -> &'static str {
        match self {
            Axis::IptablesRules => "iptables-rules",
            Axis::NftRules => "nft-rules",
            Axis::Namespaces => "namespaces",
            Axis::Veths => "veths",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Axis::IptablesRules => "iptables-nft rules",
            Axis::NftRules => "nft rules",
            Axis::Namespaces => "namespaces",
            Axis::Veths => "veth pairs",
        }
    }
}

/// The sizes of each axis: `quick` for CI.
fn steps(quick: bool) -> Vec<(Axis, usize)> {
    let (rules, nss, veths): (&[usize], &[usize], &[usize]) = if quick {
        (&[0, 1000], &[10], &[100])
    } else {
        (&[0, 1000, 10_000, 50_000], &[10, 100, 500], &[100, 1000])
    };
    let mut out = Vec::new();
    for axis in [Axis::IptablesRules, Axis::NftRules] {
        out.extend(rules.iter().map(|&n| (axis, n)));
    }
    out.extend(nss.iter().map(|&n| (Axis::Namespaces, n)));
    out.extend(veths.iter().map(|&n| (Axis::Veths, n)));
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub axis: Axis,
    pub size: usize,
    /// Seconds to build the host of this size.
    pub build_secs: f64,
    pub ready_ms: Option<Summary>,
    pub first_rule_hop_ms: Option<Summary>,
    pub peak_rss_kib: Option<Summary>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Scale {
    pub quick: bool,
    pub runs_per_step: usize,
    pub steps: Vec<StepResult>,
}

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
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program:?} in {ns}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program:?} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Every `ptscale-*` namespace, deleted.
fn teardown() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")))
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
        .spawn()?;
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
fn build(axis: Axis, size: usize) -> Result<()> {
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
    }
    Ok(())
}

/// The first `hop` record of kind `nf_rule` in namespace `netns`, in one
/// JSON line.
fn is_rule_hop(line: &str, netns: u64) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    v.get("type").and_then(|t| t.as_str()) == Some("hop")
        && v.get("kind").and_then(|t| t.as_str()) == Some("nf_rule")
        && v.get("netns").and_then(serde_json::Value::as_u64) == Some(netns)
}

/// One run: ready time, time to the first rule hop in `s`, peak RSS (KiB).
fn one_run(tools: &Tools, out: &Path) -> Result<(f64, f64, f64)> {
    let netns = std::fs::metadata(lab::ns_path(SERVER))?.ino();
    let args: Vec<String> = [
        "--src",
        &CLIENT_ADDR.to_string(),
        "--proto",
        "udp",
        "--dport",
        &PORT.to_string(),
        "--json",
    ]
    .map(String::from)
    .to_vec();
    let mut run = PtRun::start(
        tools,
        &args,
        HOP_LIMIT + Duration::from_secs(30),
        out.to_path_buf(),
        None,
    )?;
    let result = (|| {
        let ready = run.ready.context("pathtrace did not start")?;
        let sock = lab::in_netns(CLIENT, Duration::from_secs(5), || {
            UdpSocket::bind((CLIENT_ADDR, 0))
        })
        .map_err(|e| anyhow::anyhow!("a socket in {CLIENT}: {e:?}"))??;
        let to = SocketAddrV4::new(SERVER_ADDR, PORT);
        let start = Instant::now();
        let mut next = start;
        loop {
            if start.elapsed() > HOP_LIMIT {
                bail!("no rule-attributed hop in {SERVER} within {HOP_LIMIT:?}");
            }
            if Instant::now() >= next {
                let _ = sock.send_to(b"ptscale", to);
                next += Duration::from_millis(20);
            }
            let text = std::fs::read_to_string(out).unwrap_or_default();
            if text.lines().any(|l| is_rule_hop(l, netns)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let hop = start.elapsed();
        let rss = run.proc.vm_hwm_kib().unwrap_or(0) as f64;
        Ok((ready.as_secs_f64() * 1e3, hop.as_secs_f64() * 1e3, rss))
    })();
    let stopped = run.finish();
    let r = result.map_err(|e| {
        let said = run.proc.stderr_text();
        let last = said.lines().last().unwrap_or("").trim().to_string();
        anyhow::anyhow!("{e:#} (pathtrace's last line: {last})")
    })?;
    stopped?;
    Ok(r)
}

/// The start of an error's first line, for the table.
fn first_line(e: &str) -> String {
    e.lines().next().unwrap_or("").chars().take(240).collect()
}

/// Runs every step; results in order.
pub fn run(tools: &Tools, quick: bool, stop: impl Fn() -> bool) -> Scale {
    let runs = if quick { 1 } else { 3 };
    let mut out = Vec::new();
    teardown();
    for (axis, size) in steps(quick) {
        if stop() {
            break;
        }
        eprintln!("pathtrace-bench: scale: {} {size}", axis.label());
        let mut r = StepResult {
            axis,
            size,
            build_secs: 0.0,
            ready_ms: None,
            first_rule_hop_ms: None,
            peak_rss_kib: None,
            errors: Vec::new(),
        };
        let t = Instant::now();
        let built = build(axis, size);
        r.build_secs = t.elapsed().as_secs_f64();
        let mut got = Vec::new();
        match built {
            Ok(()) => {
                for i in 0..runs {
                    let file = tools.work.join(format!("scale-{i}.json"));
                    match one_run(tools, &file) {
                        Ok(x) => got.push(x),
                        Err(e) => r.errors.push(first_line(&format!("{e:#}"))),
                    }
                    let _ = std::fs::remove_file(&file);
                }
            }
            Err(e) => r.errors.push(first_line(&format!("building: {e:#}"))),
        }
        teardown();
        r.ready_ms = Summary::of(&got.iter().map(|x| x.0).collect::<Vec<_>>());
        r.first_rule_hop_ms = Summary::of(&got.iter().map(|x| x.1).collect::<Vec<_>>());
        r.peak_rss_kib = Summary::of(&got.iter().map(|x| x.2).collect::<Vec<_>>());
        for e in &r.errors {
            eprintln!("pathtrace-bench: scale: {} {size}: {e}", axis.label());
        }
        out.push(r);
    }
    Scale {
        quick,
        runs_per_step: runs,
        steps: out,
    }
}

impl Scale {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# pathtrace-bench --scale{}\n\nEach step: a client and a server namespace joined by a veth, with the step's firewall, namespaces or veths; pathtrace (rule tracing on: it arms it in the namespaces with rules before it says ready) following UDP from the client to the server's port {PORT}, one datagram every 20 ms; the first rule-attributed hop is the first `nf_rule` hop in the server on its JSON output, timed from the first datagram sent. {} run(s) per step; median [min–max].\n",
            if self.quick { " --quick" } else { "" },
            self.runs_per_step
        );
        let _ = writeln!(
            s,
            "| what | size | build s | ready ms | first rule-attributed hop ms | peak RSS MiB | errors |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |");
        for r in &self.steps {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} | {} | {} | {} |",
                r.axis.label(),
                r.size,
                r.build_secs,
                show(&r.ready_ms, |v| format!("{v:.0}")),
                show(&r.first_rule_hop_ms, |v| format!("{v:.0}")),
                show(&r.peak_rss_kib, |v| format!("{:.1}", v / 1024.0)),
                r.errors.join("; ").replace('\n', " ")
            );
        }
        s
    }
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

    #[test]
    fn finds_the_rule_hop_of_the_server() {
        let hop = r#"{"type":"hop","kind":"nf_rule","netns":4026532999,"chain":"INPUT"}"#;
        assert!(is_rule_hop(hop, 4_026_532_999));
        assert!(!is_rule_hop(hop, 1));
        assert!(!is_rule_hop(
            r#"{"type":"hop","kind":"rx","netns":4026532999}"#,
            4_026_532_999
        ));
    }
}

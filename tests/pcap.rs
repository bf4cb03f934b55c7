//! `--pcap FILE|-`: Wireshark's own tools read what pathtrace writes during
//! the DOCKER-USER drop in the Docker lab (real dockerd on the host, the
//! emulated one in VM guests).
use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lab::Block;
use pathtrace_tests::{
    connect, docker_lab, kernel_names_drops, of_type, pathtrace_bin, records, require_root,
    require_tool, tier, tier_sees_hooks, Running,
};

/// The capture file, removed when dropped (the test passing or not).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a Wireshark tool says on stderr, without its warning about
/// running as root (the tests do).
fn complaints(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Running as user \"root\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a Wireshark tool: (success, stdout, stderr).
fn run(tool: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} did not run: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fields the tests read from each frame, in this order.
const FIELDS: [&str; 8] = [
    "frame.interface_name",
    "ip.src",
    "tcp.dstport",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "frame.len",
    "frame.time_epoch",
    "frame.comment",
];

fn field_args(input: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-r", input, "-T", "fields", "-E", "separator=|"]
        .map(String::from)
        .to_vec();
    for f in FIELDS {
        a.push("-e".into());
        a.push(f.into());
    }
    a
}

/// One frame as tshark shows it.
#[derive(Debug)]
struct Frame {
    interface: String,
    src: String,
    dport: String,
    syn: bool,
    ack: bool,
    len: usize,
    time: f64,
    comment: String,
}

fn frames(listing: &str) -> Vec<Frame> {
    let yes = |s: &str| matches!(s, "1" | "True");
    listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(FIELDS.len(), '|').collect();
            assert_eq!(f.len(), FIELDS.len(), "a tshark row of {FIELDS:?}: {l}");
            Frame {
                interface: f[0].into(),
                src: f[1].into(),
                dport: f[2].into(),
                syn: yes(f[3]),
                ack: yes(f[4]),
                len: f[5].parse().unwrap_or(0),
                time: f[6].parse().unwrap_or(0.0),
                comment: f[7].into(),
            }
        })
        .collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The client's SYNs on `interfaces`, and a comment naming the drop, the
/// DOCKER-USER chain and its rule.
fn assert_dropped_syns(frames: &[Frame], client: &str, interfaces: &[String], listing: &str) {
    for iface in interfaces {
        assert!(
            frames.iter().any(|f| &f.interface == iface
                && f.src == client
                && f.dport == "8092"
                && f.syn
                && !f.ack),
            "no SYN from {client} to port 8092 on {iface}:\n{listing}"
        );
    }
    let ruled = frames.iter().find(|f| {
        f.src == client
            && f.comment.contains(": drop;")
            && f.comment.contains("outcome dropped")
            && f.comment
                .contains("rule 1 of chain DOCKER-USER in table ip filter")
            && f.comment.contains("-s 192.0.2.9/32 -j DROP")
            && (!kernel_names_drops() || f.comment.contains("reason NETFILTER_DROP"))
    });
    assert!(
        ruled.is_some(),
        "no block whose comment names the drop, DOCKER-USER and its rule:\n{listing}"
    );
    if tier_sees_hooks() {
        assert!(
            frames.iter().any(|f| f
                .comment
                .split("; ")
                .any(|part| part.starts_with("hooks ") && part.contains("ip FORWARD DROP"))),
            "the {} tier sees nf_hook_slow: some comment names FORWARD's DROP:\n{listing}",
            tier()
        );
    }
}

#[test]
fn pcap_file_shows_tshark_the_clients_dropped_syns_and_the_rule() {
    let test = "pcap_file_shows_tshark_the_clients_dropped_syns_and_the_rule";
    require_root(test);
    require_tool(test, "tshark");
    require_tool(test, "capinfos");
    let lab = docker_lab("ptpcap", Block::Drop);
    let file =
        TempFile(std::env::temp_dir().join(format!("pathtrace-{}.pcapng", std::process::id())));
    let path = file.0.display().to_string();
    let client = IpAddr::V4(lab.addrs.client).to_string();
    let started = now();
    let trace = Running::start(&[
        "--src",
        &client,
        "--dport",
        "8092",
        "--netns",
        &lab.names.dock,
        "--json",
        "--duration",
        "60",
        "--pcap",
        &path,
    ]);
    let outcome = connect(&lab, &lab.names.client);
    eprintln!("probe: {outcome:?}");
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = trace.stop();
    let ended = now();
    assert_eq!(code, 0, "pathtrace exit status");
    let recs = records(&lines);
    assert!(
        of_type(&recs, "packet")
            .iter()
            .any(|p| p["fate"] == "dropped"),
        "the trace saw the drop: {recs:#?}"
    );

    let (ok, out, err) = run("capinfos", &[&path]);
    eprintln!("capinfos:\n{out}{err}");
    assert!(ok, "capinfos failed: {err}");
    assert!(
        complaints(&err).is_empty() && !out.to_lowercase().contains("error"),
        "capinfos reports an error:\n{out}{err}"
    );
    assert!(out.contains("pcapng"), "capinfos names the format: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Number of interfaces in file:")
                && !l.ends_with(": 0")
                && !l.ends_with(": 1")),
        "several (namespace, device) interfaces: {out}"
    );

    let (_, summary, _) = run("tshark", &["-r", &path]);
    eprintln!("tshark -r:\n{summary}");
    let (ok, listing, err) = run(
        "tshark",
        &field_args(&path)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    eprintln!("tshark fields:\n{listing}");
    assert!(
        ok && complaints(&err).is_empty(),
        "tshark failed or warned: {err}"
    );
    let frames = frames(&listing);
    assert_dropped_syns(
        &frames,
        &client,
        &[
            format!("{}/eth0", lab.names.client),
            format!("{}/eth0", lab.names.dock),
        ],
        &listing,
    );
    for f in frames.iter().filter(|f| f.syn && !f.ack) {
        assert!(
            (started - 1.0..=ended + 1.0).contains(&f.time),
            "kernel timestamps, turned into wall-clock time, fall within the run ({started}..{ended}): {f:?}"
        );
        assert!(f.len >= 40 && f.len <= 128, "a SYN's whole length: {f:?}");
    }
}

#[test]
fn pcap_to_stdout_pipes_into_tshark_during_compare() {
    let test = "pcap_to_stdout_pipes_into_tshark_during_compare";
    require_root(test);
    require_tool(test, "tshark");
    let lab = docker_lab("ptpcap", Block::Drop);
    let client = IpAddr::V4(lab.addrs.client).to_string();
    let other = IpAddr::V4(lab.addrs.other).to_string();
    let mut pathtrace = Command::new(pathtrace_bin())
        .args([
            "compare",
            "--src",
            &client,
            "--src",
            &other,
            "--dport",
            "8092",
            "--netns",
            &lab.names.dock,
            "--json",
            "--duration",
            "60",
            "--pcap",
            "-",
            "--tier",
            &tier(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", pathtrace_bin().display()));
    let pcap = pathtrace.stdout.take().expect("piped stdout");
    let tshark = Command::new("tshark")
        .args(field_args("-"))
        .stdin(Stdio::from(pcap))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark -r -");
    // Text and JSON go to standard error; Running reads it.
    let compare = Running::adopt(pathtrace);
    let failed = connect(&lab, &lab.names.client);
    let worked = connect(&lab, &lab.names.other);
    eprintln!("probes: client {failed:?}, other {worked:?}");
    std::thread::sleep(Duration::from_millis(600));
    let (code, stderr) = compare.stop_stderr();
    assert_eq!(code, 0, "pathtrace compare exit status");
    let json: Vec<String> = stderr.into_iter().filter(|l| l.starts_with('{')).collect();
    let recs = records(&json);
    assert_eq!(
        of_type(&recs, "compare").len(),
        1,
        "the compare record came on standard error: {json:#?}"
    );
    let out = tshark
        .wait_with_output()
        .expect("tshark ends with the stream");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("tshark -r - fields:\n{listing}{err}");
    assert!(
        out.status.success() && complaints(&err).is_empty(),
        "tshark read standard output as one clean pcap-ng stream: {err}"
    );
    let frames = frames(&listing);
    assert_dropped_syns(
        &frames,
        &client,
        &[format!("{}/eth0", lab.names.dock)],
        &listing,
    );
    assert!(
        frames
            .iter()
            .any(|f| f.src == other && f.syn && f.interface == format!("{}/eth0", lab.names.dock)),
        "the other client's SYN on the Docker host too:\n{listing}"
    );
}

//! The command line: bad input exits 2 with one clear line; help and
//! completions work. These need no root.
use std::process::Command;

use pathtrace_tests::pathtrace_bin;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(pathtrace_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs pathtrace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_command_lines_exit_2_with_one_line() {
    let cases: &[&[&str]] = &[
        &["--src", "300.1.1.1"],
        &["--src", "192.0.2.1/33"],
        &["--src", ""],
        &["--src", "::ffff:300.0.0.1"],
        &["--dst", "not-an-ip"],
        &["--dst", "192.0.2.0/-1"],
        &["--dport", "0"],
        &["--dport", "65536"],
        &["--dport", ""],
        &["--sport", "-5"],
        &["--sport", "99999999999999999999"],
        &["--dport", "http"],
        &["--proto", "tcpp"],
        &["--proto", "300"],
        &["--proto", "-1"],
        &["--count", "0"],
        &["--count", "1.5"],
        &["--duration", "-1"],
        &["--duration", "soon"],
        &["--duration", "nan"],
        &["--duration", "1e309"],
        &["--tier", "magic"],
        &["--tier", ""],
        &["--src", "192.0.2.9", "--dst", "2001:db8::1"],
        &["--src", "192.0.2.9", "--src", "192.0.2.10"],
        &["--proto", "icmp", "--dport", "80"],
        &["--color", "purple", "--dport", "80"],
        &["--dport", "80", "--netns", "no-such-namespace-here"],
        &["--dport", "80", "--netns", "/nonexistent/ns/path"],
        &["--dport", "80", "--netns", ""],
        &["--dport", "80", "--netns", "x", "--no-rules"],
        &[],
        &["--json"],
        &["--bogus-flag"],
        &["frobnicate"],
        &["trace", "--dport"],
        &["demo", "--docker", "maybe"],
        &["drops", "--top", "--count", "5"],
        &["drops", "--quiet"],
        &["drops", "--metrics", "localhost"],
        &["drops", "--metrics", "192.0.2.1"],
        &["drops", "--metrics", "127.0.0.1:9464", "--quiet", "--top"],
        &["drops", "--interval", "0.01"],
        &["drops", "--max-rate", "0"],
        &["drops", "--src", "bad"],
        &["compare", "--dport", "80"],
        &["--src", "192.0.2.1", "--src", "192.0.2.2"],
        &["drops", "--dport", "1", "--dport", "2"],
        &[
            "compare",
            "--src",
            "192.0.2.1",
            "--src",
            "192.0.2.2",
            "--src",
            "192.0.2.3",
        ],
        &[
            "compare",
            "--src",
            "192.0.2.1",
            "--src",
            "2001:db8::2",
            "--dst",
            "192.0.2.25",
        ],
        &["completions", "tcsh"],
        &["--dport", "80", "--pcap", ""],
        &["--dport", "80", "--pcap", "/"],
        &["--dport", "80", "--pcap", "/nonexistent/dir/x.pcapng"],
        &[
            "compare",
            "--dport",
            "80",
            "--dport",
            "81",
            "--pcap",
            "/nonexistent/dir/x.pcapng",
        ],
    ];
    let long = "9".repeat(10_000);
    let long_ns = "n".repeat(5_000);
    let mut all: Vec<Vec<&str>> = cases.iter().map(|c| c.to_vec()).collect();
    all.push(vec!["--src", &long]);
    all.push(vec!["--dport", "80", "--netns", &long_ns]);
    all.push(vec!["--proto", &long]);
    assert!(all.len() >= 30, "at least 30 bad command lines");
    for args in all {
        let (code, stdout, stderr) = run(&args);
        let shown: String = args
            .iter()
            .map(|a| a.chars().take(40).collect::<String>())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(code, 2, "{shown}: exit status (stderr: {stderr})");
        assert!(stdout.is_empty(), "{shown}: stdout {stdout:?}");
        let lines: Vec<_> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{shown}: want one line, got {stderr:?}");
        assert!(lines[0].starts_with("pathtrace: "), "{shown}: {stderr:?}");
        assert!(!stderr.contains("panicked"), "{shown}: {stderr:?}");
    }
}

#[test]
fn help_version_and_completions() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--src",
        "--dport",
        "--json",
        "--count",
        "--tier",
        "demo",
        "completions",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("pathtrace "));
    let (code, out, _) = run(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("_pathtrace()"), "bash completion function");
}

#[test]
fn without_privileges_it_names_what_is_missing() {
    pathtrace_tests::require_root("without_privileges_it_names_what_is_missing");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(pathtrace_bin())
        .args(["--dport", "80", "--duration", "1"])
        .output()
        .expect("runs setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(stderr.contains(cap), "{stderr} lacks {cap}");
    }
}

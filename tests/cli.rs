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
        &["--dst", "not-an-ip"],
        &["--dport", "0"],
        &["--dport", "65536"],
        &["--sport", "-5"],
        &["--dport", "http"],
        &["--proto", "tcpp"],
        &["--proto", "300"],
        &["--count", "0"],
        &["--duration", "-1"],
        &["--duration", "soon"],
        &["--tier", "magic"],
        &["--src", "192.0.2.9", "--dst", "2001:db8::1"],
        &["--proto", "icmp", "--dport", "80"],
        &["--color", "purple", "--dport", "80"],
        &[],
        &["--bogus-flag"],
        &["trace", "--dport"],
        &["demo", "--docker", "maybe"],
    ];
    let long = "9".repeat(10_000);
    let mut all: Vec<Vec<&str>> = cases.iter().map(|c| c.to_vec()).collect();
    all.push(vec!["--src", &long]);
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

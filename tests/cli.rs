//! The command line: bad input exits 2 with one clear line; help and
//! completions work. These need no root.
use std::process::Command;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use pathtrace_tests::pathtrace_bin;
use tracer::cli::Cli;

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
        assert_short_error(&shown, &stderr);
    }
}

/// One line `pathtrace: …`, and at most a second `usage: pathtrace …`.
fn assert_short_error(shown: &str, stderr: &str) {
    let lines: Vec<_> = stderr.lines().collect();
    assert!(
        (1..=2).contains(&lines.len()),
        "{shown}: want one or two lines, got {stderr:?}"
    );
    assert!(lines[0].starts_with("pathtrace: "), "{shown}: {stderr:?}");
    if let Some(usage) = lines.get(1) {
        assert!(usage.starts_with("usage: pathtrace"), "{shown}: {stderr:?}");
    }
    assert!(!stderr.contains("panicked"), "{shown}: {stderr:?}");
}

/// A value clap accepts for `arg` of `path` (the subcommand, or none), found
/// by trying: defaults and possible values first, then common shapes.
fn valid_value(path: &[&str], arg: &clap::Arg) -> Option<String> {
    let id = arg.get_id().as_str();
    let long = format!("--{}", arg.get_long()?);
    let mut candidates: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .chain(
            arg.get_possible_values()
                .iter()
                .map(|p| p.get_name().to_string()),
        )
        .collect();
    candidates.extend(
        [
            "1",
            "8092",
            "192.0.2.1",
            "127.0.0.1:9464",
            "tcp",
            "/tmp/pathtrace-cli-test",
            "x",
        ]
        .map(String::from),
    );
    candidates.into_iter().find(|v| {
        let mut line = vec!["pathtrace"];
        line.extend(path);
        line.extend([long.as_str(), v.as_str()]);
        match Cli::try_parse_from(&line) {
            Ok(_) => true,
            Err(e) => {
                !matches!(
                    e.kind(),
                    ErrorKind::ValueValidation | ErrorKind::InvalidValue
                ) || !e
                    .get(ContextKind::InvalidArg)
                    .is_some_and(|a| a.to_string().contains(&long) || a.to_string().contains(id))
            }
        }
    })
}

/// The argument(s) clap's error names in `kind`'s context.
fn named(e: &clap::Error, kind: ContextKind) -> Vec<String> {
    match e.get(kind) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => Vec::new(),
    }
}

/// Every subcommand's missing-argument errors (an argument that needs
/// another, a required positional) and every declared conflict, found from
/// clap's `Command`: the binary says which argument, and the usage, in at
/// most two lines.
#[test]
fn every_required_argument_and_conflict_error_names_the_argument() {
    let mut root = Cli::command();
    // Fills in what derive leaves implicit, such as which flags take values.
    root.build();
    let mut commands: Vec<(Vec<&str>, &clap::Command)> = vec![(vec![], &root)];
    commands.extend(root.get_subcommands().map(|s| (vec![s.get_name()], s)));
    let (mut missing, mut conflicts) = (0, 0);
    for (path, cmd) in &commands {
        let mut lines: Vec<Vec<String>> = vec![vec![]];
        let args: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
            .collect();
        let flag = |a: &clap::Arg| -> Option<Vec<String>> {
            let long = format!("--{}", a.get_long()?);
            if a.get_num_args().is_some_and(|n| n.takes_values()) {
                Some(vec![long, valid_value(path, a)?])
            } else {
                Some(vec![long])
            }
        };
        for a in &args {
            let Some(one) = flag(a) else {
                panic!("{path:?}: no valid value found for {:?}", a.get_id());
            };
            lines.push(one.clone());
            for other in cmd.get_arg_conflicts_with(a) {
                if let Some(two) = flag(other) {
                    lines.push([one.clone(), two].concat());
                }
            }
        }
        for extra in lines {
            let mut line: Vec<&str> = vec!["pathtrace"];
            line.extend(path);
            line.extend(extra.iter().map(String::as_str));
            let Err(e) = Cli::try_parse_from(&line) else {
                continue;
            };
            let names: Vec<String> = match e.kind() {
                ErrorKind::MissingRequiredArgument => {
                    missing += 1;
                    named(&e, ContextKind::InvalidArg)
                }
                ErrorKind::ArgumentConflict => {
                    conflicts += 1;
                    [
                        named(&e, ContextKind::InvalidArg),
                        named(&e, ContextKind::PriorArg),
                    ]
                    .concat()
                }
                _ => continue,
            };
            let shown = line[1..].join(" ");
            assert!(!names.is_empty(), "{shown}: clap named no argument");
            let (code, stdout, stderr) = run(&line[1..]);
            assert_eq!(code, 2, "{shown}: exit status (stderr: {stderr})");
            assert!(stdout.is_empty(), "{shown}: stdout {stdout:?}");
            assert_short_error(&shown, &stderr);
            for n in &names {
                assert!(
                    stderr
                        .lines()
                        .next()
                        .is_some_and(|l| l.contains(n.as_str())),
                    "{shown}: {n} not named in {stderr:?}"
                );
            }
            let usage = format!("usage: pathtrace {}", path.join(" "));
            assert!(
                stderr
                    .lines()
                    .nth(1)
                    .is_some_and(|l| l.starts_with(usage.trim_end())),
                "{shown}: no usage in {stderr:?}"
            );
        }
    }
    // drops --quiet needs --metrics; completions needs a shell; drops --top
    // conflicts with --count: at least those.
    assert!(
        missing >= 2 && conflicts >= 1,
        "{missing} missing-argument and {conflicts} conflict errors found"
    );
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

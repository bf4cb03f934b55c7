//! Reading what the guest said. Its commands' output reaches the host only
//! through the serial console, mixed with the kernel's log, so the guest script
//! marks its lines:
//!
//! - `PTVM| TEXT`: a line of output of the current step;
//! - `PTVM# begin STEP`, `PTVM# end STEP RC`: a step (a test binary) and its exit status;
//! - `PTVM# done`: the script got to its end.
//!
//! Inside a step, libtest's `test NAME ... ok|FAILED|ignored` lines give the
//! results, and the tests' `*** SKIPPED NAME: …` lines tell skips from passes.
//! With `--test-threads=1` a verdict line reaches the host when its test ends,
//! so the time between two of them is the test's duration (boot excluded).
use std::time::Duration;

/// A marked line of the console.
#[derive(Debug, PartialEq, Eq)]
pub enum Mark {
    Output(String),
    Begin(String),
    End(String, i32),
    Done,
}

/// Picks a marked line out of the console (`None` for the kernel's own lines).
pub fn parse_line(raw: &str) -> Option<Mark> {
    let line = raw.trim_end_matches(['\r', '\n']);
    if let Some(at) = line.find("PTVM| ") {
        return Some(Mark::Output(line[at + 6..].to_string()));
    }
    if line.trim_end() == "PTVM|" {
        return Some(Mark::Output(String::new()));
    }
    let at = line.find("PTVM# ")?;
    let mut words = line[at + 6..].split_whitespace();
    match words.next()? {
        "begin" => Some(Mark::Begin(words.next()?.to_string())),
        "end" => {
            let step = words.next()?.to_string();
            let rc = words.next()?.parse().ok()?;
            Some(Mark::End(step, rc))
        }
        "done" => Some(Mark::Done),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
    /// Passed, but said it skipped itself (`*** SKIPPED NAME`).
    Skipped,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
            Outcome::Skipped => "SKIPPED",
        }
    }
}

/// The results of one test binary, from its libtest output.
#[derive(Debug, Default)]
pub struct Step {
    pub name: String,
    pub tests: Vec<(String, Outcome, Duration)>,
    pub rc: Option<i32>,
    /// When the previous test (or the step) ended.
    since: Duration,
    skipped: Vec<String>,
    /// A `test NAME ... ` line whose verdict hasn't come yet (child output in between).
    pending: Option<String>,
    /// The test whose `---- NAME stdout ----` section is being read.
    section: Option<String>,
    /// Each test's panics: the `panicked at` line and the message under it.
    panics: Vec<(String, Vec<String>)>,
    /// Still reading a panic's message.
    in_panic: bool,
}

/// At most this many lines of one panic's message are kept.
const PANIC_LINES: usize = 8;
/// And this many characters of each line.
const PANIC_LINE_CHARS: usize = 600;

fn verdict(word: &str) -> Option<Outcome> {
    match word.trim() {
        "ok" => Some(Outcome::Passed),
        "FAILED" => Some(Outcome::Failed),
        "ignored" => Some(Outcome::Ignored),
        w if w.starts_with("ignored,") => Some(Outcome::Ignored),
        _ => None,
    }
}

impl Step {
    pub fn new(name: &str, at: Duration) -> Self {
        Step {
            name: name.to_string(),
            since: at,
            ..Step::default()
        }
    }

    fn push(&mut self, name: String, v: Outcome, at: Duration) {
        self.tests.push((name, v, at.saturating_sub(self.since)));
        self.since = at;
    }

    /// Takes one line of the step's output, seen `at` after the VM started.
    pub fn feed(&mut self, line: &str, at: Duration) {
        self.read_panics(line);
        if let Some(rest) = line.trim_start().strip_prefix("*** SKIPPED ") {
            if let Some((name, _)) = rest.split_once(':') {
                self.skipped.push(name.trim().to_string());
            }
        }
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, tail)) = rest.split_once(" ... ") {
                match verdict(tail) {
                    Some(v) => self.push(name.to_string(), v, at),
                    None => self.pending = Some(name.to_string()),
                }
                return;
            }
            if let Some(name) = rest.strip_suffix(" ...") {
                self.pending = Some(name.to_string());
                return;
            }
        }
        if let Some(name) = self.pending.clone() {
            // The verdict may follow on a later line when a child process wrote in between.
            let tail = line.rsplit(' ').next().unwrap_or(line);
            if let Some(v) = verdict(tail) {
                self.push(name, v, at);
                self.pending = None;
            }
        }
    }

    /// Keeps the panics of each test's output section (`--show-output`
    /// prints them after the run), so that a failure can be told in the
    /// summary, where CI's tail shows it.
    fn read_panics(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            self.section = Some(name.to_string());
            self.in_panic = false;
            return;
        }
        let Some(test) = &self.section else {
            return;
        };
        if line.starts_with("thread '") && line.contains(" panicked at ") {
            self.panics.push((
                test.clone(),
                vec![line.chars().take(PANIC_LINE_CHARS).collect()],
            ));
            self.in_panic = true;
            return;
        }
        if !self.in_panic {
            return;
        }
        let end =
            line.is_empty() || line.starts_with("stack backtrace:") || line.starts_with("note: ");
        match self.panics.last_mut() {
            Some((_, lines)) if !end => {
                if lines.len() <= PANIC_LINES {
                    lines.push(line.chars().take(PANIC_LINE_CHARS).collect());
                }
            }
            _ => self.in_panic = false,
        }
    }

    /// The panics of test `name`, each as its lines.
    pub fn panics_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        self.panics
            .iter()
            .filter(move |(t, _)| t == name)
            .map(|(_, lines)| lines.as_slice())
    }

    /// The tests with skips told apart.
    pub fn results(&self) -> Vec<(String, Outcome, Duration)> {
        self.tests
            .iter()
            .map(|(name, o, d)| {
                let skipped = *o == Outcome::Passed && self.skipped.iter().any(|s| s == name);
                (
                    name.clone(),
                    if skipped { Outcome::Skipped } else { *o },
                    *d,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_lines_are_found_among_kernel_lines() {
        assert_eq!(
            parse_line("PTVM| hello\r"),
            Some(Mark::Output("hello".into()))
        );
        assert_eq!(
            parse_line("[  3.1] x PTVM| a b "),
            Some(Mark::Output("a b ".into()))
        );
        assert_eq!(parse_line("PTVM|"), Some(Mark::Output(String::new())));
        assert_eq!(
            parse_line("PTVM# begin trace_docker"),
            Some(Mark::Begin("trace_docker".into()))
        );
        assert_eq!(
            parse_line("PTVM# end trace_docker 101\r"),
            Some(Mark::End("trace_docker".into(), 101))
        );
        assert_eq!(parse_line("PTVM# done"), Some(Mark::Done));
        assert_eq!(parse_line("[    0.000000] Linux version 6.1.0"), None);
        assert_eq!(parse_line("PTVM# end x"), None);
    }

    #[test]
    fn libtest_verdicts_and_skips() {
        let mut s = Step::new("trace_docker", Duration::from_secs(10));
        for (i, l) in [
            "running 3 tests",
            "test a_passes ... ok",
            "test b_fails ... FAILED",
            "test c_skips ... ",
            "some child output",
            "ok",
            "test d_ignored ... ignored",
            "test e_slow ...",
            "ok",
            "---- c_skips stdout ----",
            "*** SKIPPED c_skips: needs root ***",
            "test result: FAILED. 3 passed; 1 failed; 1 ignored",
        ]
        .into_iter()
        .enumerate()
        {
            s.feed(l, Duration::from_secs(10 + i as u64));
        }
        let secs = Duration::from_secs;
        assert_eq!(
            s.results(),
            vec![
                ("a_passes".into(), Outcome::Passed, secs(1)),
                ("b_fails".into(), Outcome::Failed, secs(1)),
                ("c_skips".into(), Outcome::Skipped, secs(3)),
                ("d_ignored".into(), Outcome::Ignored, secs(1)),
                ("e_slow".into(), Outcome::Passed, secs(2)),
            ]
        );
    }

    #[test]
    fn a_failed_tests_panic_is_kept_without_its_backtrace() {
        let mut s = Step::new("diagnose", Duration::ZERO);
        for l in [
            "test b_fails ... FAILED",
            "failures:",
            "",
            "---- b_fails stdout ----",
            "[pathtrace] pathtrace: ready",
            "thread 'b_fails' (51) panicked at tests/diagnose.rs:60:13:",
            "diagnosis lacks \"container web\": refused",
            "second line",
            "stack backtrace:",
            "   0: rust_begin_unwind",
            "",
            "---- a_passes stdout ----",
            "thread 'x' (52) panicked at tests/a.rs:1:1:",
            "planned",
        ] {
            s.feed(l, Duration::ZERO);
        }
        let got: Vec<&[String]> = s.panics_of("b_fails").collect();
        assert_eq!(
            got,
            vec![
                &[
                    "thread 'b_fails' (51) panicked at tests/diagnose.rs:60:13:".to_string(),
                    "diagnosis lacks \"container web\": refused".to_string(),
                    "second line".to_string(),
                ][..]
            ]
        );
        assert_eq!(s.panics_of("a_passes").count(), 1);
        assert_eq!(s.panics_of("c").count(), 0);
    }
}

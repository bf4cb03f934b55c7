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
    pub tests: Vec<(String, Outcome)>,
    pub rc: Option<i32>,
    skipped: Vec<String>,
    /// A `test NAME ... ` line whose verdict hasn't come yet (child output in between).
    pending: Option<String>,
}

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
    pub fn new(name: &str) -> Self {
        Step {
            name: name.to_string(),
            ..Step::default()
        }
    }

    pub fn feed(&mut self, line: &str) {
        if let Some(rest) = line.trim_start().strip_prefix("*** SKIPPED ") {
            if let Some((name, _)) = rest.split_once(':') {
                self.skipped.push(name.trim().to_string());
            }
        }
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, tail)) = rest.split_once(" ... ") {
                match verdict(tail) {
                    Some(v) => self.tests.push((name.to_string(), v)),
                    None => self.pending = Some(name.to_string()),
                }
                return;
            }
            if let Some(name) = rest.strip_suffix(" ...") {
                self.pending = Some(name.to_string());
                return;
            }
        }
        if let Some(name) = &self.pending {
            // The verdict may follow on a later line when a child process wrote in between.
            let tail = line.rsplit(" ").next().unwrap_or(line);
            if let Some(v) = verdict(tail) {
                self.tests.push((name.clone(), v));
                self.pending = None;
            }
        }
    }

    /// The tests with skips told apart.
    pub fn results(&self) -> Vec<(String, Outcome)> {
        self.tests
            .iter()
            .map(|(name, o)| {
                let skipped = *o == Outcome::Passed && self.skipped.iter().any(|s| s == name);
                (name.clone(), if skipped { Outcome::Skipped } else { *o })
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
        let mut s = Step::new("trace_docker");
        for l in [
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
        ] {
            s.feed(l);
        }
        assert_eq!(
            s.results(),
            vec![
                ("a_passes".into(), Outcome::Passed),
                ("b_fails".into(), Outcome::Failed),
                ("c_skips".into(), Outcome::Skipped),
                ("d_ignored".into(), Outcome::Ignored),
                ("e_slow".into(), Outcome::Passed),
            ]
        );
    }
}

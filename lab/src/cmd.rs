//! Running external commands with a time limit and a checked exit status.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::error::LabError;

/// Default time limit for one external command.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this much of a failing command's stderr goes into the error.
const STDERR_LIMIT: usize = 2000;

/// A command to run: program, arguments, extra environment and optional stdin.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    pub(crate) fn new(program: impl AsRef<str>) -> Self {
        Cmd {
            program: program.as_ref().to_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `nsenter --net=PATH -- program`: runs `program` in the network namespace at `ns_path`
    /// without remounting /sys (unlike `ip netns exec`).
    pub(crate) fn in_netns(ns_path: &Path, program: impl AsRef<str>) -> Self {
        Cmd::new("nsenter")
            .args(in_netns::nsenter_args(ns_path))
            .arg(program)
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(arg.as_ref().to_string());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.env.push((key.to_string(), value.as_ref().to_string()));
        self
    }

    pub(crate) fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, shell-quoted, for messages.
    pub(crate) fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command and fails unless it exits with status 0.
    pub(crate) fn run(&self) -> Result<Output, LabError> {
        let out = self.run_unchecked()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(failure(&self.display(), out.status, &out))
        }
    }

    /// Runs the command and returns its output whatever the exit status.
    pub(crate) fn run_unchecked(&self) -> Result<Output, LabError> {
        let shown = self.display();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|source| LabError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
        let stdin_writer = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(data)) => Some(thread::spawn(move || {
                use std::io::Write;
                // A command that exits early closes the pipe; its status tells the story.
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let stdout_reader = child.stdout.take().map(spawn_reader);
        let stderr_reader = child.stderr.take().map(spawn_reader);

        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if super::cancel::stopped() => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LabError::Cancelled);
                }
                Ok(None) if Instant::now() >= deadline => {
                    // The child is ours and not yet reaped, so its pid is still valid.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LabError::CommandTimeout {
                        cmd: shown,
                        secs: self.timeout.as_secs_f64(),
                    });
                }
                Ok(None) => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(LabError::io(format!("waiting for `{shown}`"), e)),
            }
        };
        if let Some(writer) = stdin_writer {
            let _ = writer.join();
        }
        Ok(Output {
            status,
            stdout: join_reader(stdout_reader),
            stderr: join_reader(stderr_reader),
        })
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(handle: Option<thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Builds the error for a command that exited unsuccessfully.
pub(crate) fn failure(cmd: &str, status: ExitStatus, out: &Output) -> LabError {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    if text.len() > STDERR_LIMIT {
        let mut cut = STDERR_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    LabError::Command {
        cmd: cmd.to_string(),
        status: status.to_string(),
        stderr: text,
    }
}

/// Quotes one word for display in a shell-like command line.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Standard output as a trimmed string.
pub(crate) fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

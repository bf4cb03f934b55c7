//! Processes the benchmark starts (pathtrace, bpftrace, `nft monitor trace`):
//! their stderr lines with arrival times, stopping them by pid, and what
//! /proc says about them. Each one is stopped when its handle is dropped.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// A child process of the benchmark.
pub struct Proc {
    child: Child,
    pub pid: i32,
    pub name: String,
    /// Just before `spawn`.
    pub started: Instant,
    lines: Receiver<(Instant, String)>,
    /// Every stderr line read so far, with its arrival time.
    pub stderr: Vec<(Instant, String)>,
    pub status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdin closed, stdout as given and stderr read line by line.
    pub fn spawn(mut cmd: Command, name: &str, stdout: Stdio) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let (tx, rx) = mpsc::channel();
        if let Some(err) = child.stderr.take() {
            let spawned = thread::Builder::new()
                .name(format!("stderr-{name}"))
                .spawn(move || {
                    for line in BufReader::new(err).lines() {
                        let Ok(line) = line else { break };
                        if tx.send((Instant::now(), line)).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = spawned {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).context("spawning a stderr reader");
            }
        }
        Ok(Proc {
            child,
            pid,
            name: name.to_string(),
            started,
            lines: rx,
            stderr: Vec::new(),
            status: None,
        })
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Waits for a stderr line matching `pred`; returns when it arrived, or
    /// `None` if the process exited (and closed stderr) or `limit` passed.
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool, limit: Duration) -> Option<Instant> {
        if let Some((t, _)) = self.stderr.iter().find(|(_, l)| pred(l)) {
            return Some(*t);
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok((t, line)) => {
                    let hit = pred(&line);
                    self.stderr.push((t, line));
                    if hit {
                        return Some(t);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Collects the stderr lines that arrived so far (without waiting).
    pub fn poll_lines(&mut self) {
        while let Ok(item) = self.lines.try_recv() {
            self.stderr.push(item);
        }
    }

    /// The stderr text so far, one line each.
    pub fn stderr_text(&mut self) -> String {
        self.poll_lines();
        self.stderr
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends `sig` to this process (by its pid, which stays ours until reaped).
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on our own unreaped child's pid.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Waits up to `limit` for the exit; whether it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.exited().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.exited().is_some()
    }

    /// Sends `sig`, waits up to `grace` for the exit, then SIGKILLs. Collects
    /// the rest of stderr (up to 2 s).
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Result<ExitStatus> {
        self.signal(sig);
        if !self.wait_exit(grace) {
            log::warn!(
                "{} (pid {}) did not exit within {:.1}s: SIGKILL",
                self.name,
                self.pid,
                grace.as_secs_f64()
            );
            let _ = self.child.kill();
            let st = self
                .child
                .wait()
                .with_context(|| format!("waiting for {}", self.name))?;
            self.status = Some(st);
        }
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.lines.recv_timeout(left) {
                Ok(item) => self.stderr.push(item),
                Err(_) => break,
            }
        }
        self.status
            .with_context(|| format!("{} has no exit status", self.name))
    }

    /// Peak resident set size (VmHWM), in KiB.
    pub fn vm_hwm_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Resident set size now (VmRSS), in KiB.
    pub fn vm_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User plus system CPU time so far, in clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks(self.pid)
    }

    /// Waits until it has used (almost) no CPU for 100 ms, at most `limit`.
    /// Returns whether it went idle.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Some(mut last) = self.cpu_ticks() else {
            return false;
        };
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
            let Some(now) = self.cpu_ticks() else {
                return false;
            };
            if now.saturating_sub(last) <= 1 {
                return true;
            }
            last = now;
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            if let Err(e) = self.stop(libc::SIGTERM, Duration::from_secs(3)) {
                log::warn!("stopping {}: {e:#}", self.name);
            }
        }
    }
}

/// utime + stime of `pid` from /proc/PID/stat.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Runs a command to completion within `limit`; its stdout on success.
pub fn output(mut cmd: Command, limit: Duration) -> Result<String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("running {shown}"))?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read_out = thread::spawn(move || read_all(out));
    let read_err = thread::spawn(move || read_all(err));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting")? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{shown} did not finish within {:.0}s", limit.as_secs_f64());
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = read_out.join().unwrap_or_default();
    let stderr = read_err.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("{shown} failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}

fn read_all<R: std::io::Read>(r: Option<R>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

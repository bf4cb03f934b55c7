//! Finding and stopping the lab's own processes, by pid.
//!
//! A process belongs to a lab when its command line names the lab's state directory
//! (dockerd, its containerd, containerd-shim, docker-proxy, the emulated httpd all do),
//! or when it sits in the lab's cgroup (the containers' processes). Nothing else is
//! ever signalled.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Prepares a daemon the lab starts (dockerd, the emulated httpd): its own
/// process group, so that a terminal's Ctrl-C reaches the lab's owner, which
/// stops it in order; and none of the descriptors the owner inherited, so
/// that a daemon left by a killed owner holds no lock of whoever ran it.
pub(crate) fn as_daemon(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    // SAFETY: one async-signal-safe system call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Linux 5.11+; older kernels keep the descriptors open.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    cmd
}

/// A process of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabProcess {
    pub pid: i32,
    pub cmdline: String,
    /// In the lab's cgroup: a container's process.
    pub container: bool,
}

/// Whether `cmdline` (NUL-separated arguments) references `dir` or a path under it.
fn references(cmdline_raw: &[u8], dir: &str) -> bool {
    let with_slash = format!("{dir}/");
    cmdline_raw
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .any(|arg| arg.contains(&with_slash) || arg.ends_with(dir))
}

/// Whether the process is in cgroup `/{cgroup}` (or below) in any hierarchy.
fn in_cgroup(pid: i32, cgroup: &str) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    let top = format!("/{cgroup}");
    text.lines().any(|line| {
        line.splitn(3, ':')
            .nth(2)
            .is_some_and(|path| path == top || path.starts_with(&format!("{top}/")))
    })
}

/// The processes that belong to the lab with state dir `state_dir` and cgroup `cgroup`.
pub(crate) fn find(state_dir: &Path, cgroup: &str) -> Vec<LabProcess> {
    let dir = state_dir.display().to_string();
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue; // kernel thread or zombie
        }
        let container = in_cgroup(pid, cgroup);
        if container || references(&raw, &dir) {
            let cmdline = raw
                .split(|b| *b == 0)
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string();
            found.push(LabProcess {
                pid,
                cmdline,
                container,
            });
        }
    }
    found
}

/// A live (non-zombie) process named `comm` (e.g. "dockerd"), if any runs anywhere.
pub(crate) fn find_named(comm: &str) -> Option<i32> {
    let entries = fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let name = fs::read_to_string(e.path().join("comm")).ok()?;
        (name.trim() == comm && alive(pid)).then_some(pid)
    })
}

/// Whether `pid` still exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Sends `sig` to `pid`.
pub(crate) fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a specific positive pid; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Waits until none of `pids` is alive, or `limit` passes. Returns the ones still alive.
pub(crate) fn wait_gone(pids: &[i32], limit: Duration) -> Vec<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL and wait a little. Returns pids that survived.
pub(crate) fn terminate(pids: &[i32], grace: Duration) -> Vec<i32> {
    for pid in pids {
        signal(*pid, libc::SIGTERM);
    }
    let left = wait_gone(pids, grace);
    for pid in &left {
        signal(*pid, libc::SIGKILL);
    }
    wait_gone(&left, Duration::from_secs(3))
}

#[cfg(test)]
mod proc_tests {
    use super::references;

    #[test]
    fn cmdline_matching_is_exact_on_the_prefix() {
        let dir = "/run/pathtrace-lab/pt";
        assert!(references(
            b"dockerd\0--data-root\0/run/pathtrace-lab/pt/data\0",
            dir
        ));
        assert!(references(
            b"x\0-address\0unix:///run/pathtrace-lab/pt/exec/c.sock",
            dir
        ));
        assert!(references(b"x\0/run/pathtrace-lab/pt", dir));
        assert!(!references(
            b"dockerd\0--data-root\0/run/pathtrace-lab/pt2/data\0",
            dir
        ));
        assert!(!references(b"dockerd\0", dir));
    }
}

//! Booting a kernel with virtme-ng and running a script inside it.
//!
//! The guest's `/` is the host's filesystem over 9p (read-only; `/tmp`, `/run`
//! and a few others are writable overlays or tmpfs in the guest), so the
//! script and the binaries built on the host are run from where they are.
//! Their output comes back only through the serial console (`--verbose`),
//! marked as `report.rs` describes.
use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    kernel::Kernel,
    report::{parse_line, Mark},
};
use crate::workspace::workspace_root;

/// Quotes a word for `sh`.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One command the guest runs as a step.
pub struct GuestStep {
    pub name: String,
    /// `VAR=value` pairs.
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
}

const SCRIPT_HEAD: &str = r#"#!/bin/sh
# Written by `cargo xtask` and run inside a virtme-ng guest.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8 NO_COLOR=1 RUST_BACKTRACE=1
# Keep the kernel's messages off the console, where they would cut our lines.
echo 1 >/proc/sys/kernel/printk 2>/dev/null
mark() { while IFS= read -r l || [ -n "$l" ]; do printf 'PTVM| %s\n' "$l"; done; }
step() {
    name=$1; shift
    echo "PTVM# begin $name"
    ( "$@" 2>&1; echo $? >/tmp/ptvm.rc ) </dev/null | mark
    echo "PTVM# end $name $(cat /tmp/ptvm.rc 2>/dev/null || echo 255)"
}
guest_checks() {
    echo "kernel $(uname -r), $(nproc) vCPU(s), $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)"
    [ -r /sys/kernel/btf/vmlinux ] && echo "btf: /sys/kernel/btf/vmlinux" || echo "btf: MISSING /sys/kernel/btf/vmlinux"
    awk '$2 == "/" || $2 == "/run" || $2 == "/tmp" || $2 ~ "^/lib/modules" {print "mount: " $2 " " $3 " " $4}' /proc/mounts
    echo "modules: $(readlink -f /lib/modules/$(uname -r))"
    for m in veth bridge nf_tables nft_compat nf_nat nf_conntrack nft_chain_nat xt_conntrack xt_addrtype xt_nat; do
        modprobe "$m" 2>&1 || echo "modprobe $m: FAILED"
    done
    echo "loaded: $(awk '{print $1}' /proc/modules | sort | tr '\n' ' ')"
    if ip netns add ptvm-check && ip netns exec ptvm-check ip link set lo up; then echo "ip netns: ok"; else echo "ip netns: FAILED"; fi
    ip netns del ptvm-check 2>/dev/null
    iptables-nft -w -L -n >/dev/null && echo "iptables-nft: ok ($(iptables-nft --version))" || echo "iptables-nft: FAILED"
    nft list tables >/dev/null && echo "nft: ok" || echo "nft: FAILED"
    busybox true && echo "busybox: ok" || echo "busybox: FAILED"
    nsenter --version >/dev/null && echo "nsenter: ok" || echo "nsenter: FAILED"
    f=/sys/kernel/tracing/available_filter_functions
    if [ -r $f ]; then echo "nf_hook_slow traceable: $(grep -c '^nf_hook_slow\b' $f)"; else echo "$f: not readable"; fi
    return 0
}
step guest-checks guest_checks
"#;

/// Writes the guest script for `steps` and returns its path.
pub fn write_script(name: &str, steps: &[GuestStep]) -> Result<PathBuf> {
    let dir = workspace_root().join("target/vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.sh"));
    let mut text = String::from(SCRIPT_HEAD);
    text.push_str(&format!(
        "cd {}\n",
        sh_quote(&workspace_root().display().to_string())
    ));
    for s in steps {
        let env: Vec<String> = s
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", sh_quote(v)))
            .collect();
        let argv: Vec<String> = s.argv.iter().map(|a| sh_quote(a)).collect();
        text.push_str(&format!(
            "step {} env {} {}\n",
            sh_quote(&s.name),
            env.join(" "),
            argv.join(" ")
        ));
    }
    text.push_str("dmesg 2>/dev/null | grep -iE 'bpf|verifier|oops|bug:|warning:|call trace|panic|segfault|traps:|general protection|out of memory' | grep -viE 'command line' | tail -n 40 | sed 's/^/dmesg: /' | mark\n");
    text.push_str("echo 'PTVM# done'\n");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What came back from one VM run.
pub struct Outcome {
    pub wall: Duration,
    /// Time to the script's first line (boot).
    pub boot: Option<Duration>,
    pub timed_out: bool,
    pub done: bool,
    pub vng_status: Option<i32>,
    pub log: PathBuf,
}

/// The pids of `root`'s descendants, deepest first (from `/proc/*/stat`).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out.reverse();
    out
}

fn pump(r: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// A guest to boot, and how long it may run.
pub struct Guest<'a> {
    /// virtme-ng's `vng`.
    pub vng: &'a Path,
    pub kernel: &'a Kernel,
    pub cpus: u32,
    /// The run is killed after this.
    pub timeout: Duration,
    /// Print the whole console too.
    pub echo_console: bool,
    /// Writable in the guest (at the same path): what the guest writes there
    /// reaches the host.
    pub rwdir: Option<&'a Path>,
}

/// Boots `guest`, runs `script` inside, and calls `on_mark` for every marked
/// line as it arrives. The whole console goes to `log`.
pub fn boot(
    guest: &Guest,
    script: &Path,
    log: &Path,
    on_mark: impl FnMut(Mark, Duration),
) -> Result<Outcome> {
    let &Guest {
        vng,
        kernel,
        cpus,
        timeout,
        echo_console,
        rwdir,
    } = guest;
    let mut cmd = Command::new(vng);
    // vng runs `virtme-run` from the PATH: the venv's bin must come first.
    let mut paths: Vec<PathBuf> = vng.parent().map(Path::to_path_buf).into_iter().collect();
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    cmd.env("PATH", std::env::join_paths(paths)?);
    cmd.arg("--run")
        .arg(&kernel.vmlinuz)
        .args(["--force-9p", "--disable-kvm", "--memory", "2G", "--verbose"])
        // Debian's kernels enable AppArmor; the host has no apparmor_parser,
        // so a real dockerd in the guest refuses `docker run` ("AppArmor
        // enabled on system but the docker-default profile could not be
        // loaded"). docs/testing.md, "A real dockerd in the guests".
        .args(["--append", "apparmor=0"])
        .arg("--cpus")
        .arg(cpus.to_string())
        .arg("--cwd")
        .arg(workspace_root());
    if let Some(dir) = rwdir {
        cmd.arg(format!("--rwdir={}", dir.display()));
    }
    cmd.arg("--exec")
        .arg(format!("sh {}", sh_quote(&script.display().to_string())));
    watch(cmd, log, timeout, echo_console, on_mark)
}

/// Runs the VM command `cmd` (its console on stdout and stderr), calling
/// `on_mark` for every marked line as it arrives, until it ends or
/// `timeout` passes. The whole console goes to `log`; with `echo_console`
/// it is also printed.
pub fn watch(
    mut cmd: Command,
    log: &Path,
    timeout: Duration,
    echo_console: bool,
    mut on_mark: impl FnMut(Mark, Duration),
) -> Result<Outcome> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    writeln!(log_file, "# {cmd:?}")?;
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        pump(out, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, tx.clone());
    }
    drop(tx);
    let deadline = start + timeout;
    let mut boot = None;
    let mut done = false;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                let _ = log_file.write_all(line.as_bytes());
                if echo_console {
                    print!("{line}");
                }
                if let Some(mark) = parse_line(&line) {
                    let at = start.elapsed();
                    boot.get_or_insert(at);
                    if mark == Mark::Done {
                        done = true;
                    }
                    on_mark(mark, at);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out {
        eprintln!(
            "xtask: the VM ran past its {} s limit: killing it",
            timeout.as_secs()
        );
        for pid in descendants(child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for the VM")?;
    let wall = start.elapsed();
    let _ = writeln!(
        log_file,
        "# the VM exited with {status} after {:.1} s",
        wall.as_secs_f64()
    );
    Ok(Outcome {
        wall,
        boot,
        timed_out,
        done,
        vng_status: status.code(),
        log: log.to_path_buf(),
    })
}

/// The console's last lines, for a run that ended without its `done` mark.
pub fn console_tail(log: &Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read(log) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

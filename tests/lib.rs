//! Shared helpers for the integration tests: finding the `pathtrace` binary,
//! running it against a lab, and reading its JSON Lines.
pub use lab::topo;
pub mod podman;
use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The binary under test: `PATHTRACE_BIN` (set by `cargo xtask test`), else
/// the debug build next to this workspace.
pub fn pathtrace_bin() -> PathBuf {
    std::env::var_os("PATHTRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pathtrace")
        })
}

/// The tier the suite runs with: `PATHTRACE_TEST_TIER` (set by the VM
/// harness to `fentry` or `kprobe`), else `tracepoint`, the only one the
/// locked-down host kernel allows.
pub fn tier() -> String {
    std::env::var("PATHTRACE_TEST_TIER").unwrap_or_else(|_| "tracepoint".into())
}

/// Whether this tier reports `nf_hook_slow` verdicts.
pub fn tier_sees_hooks() -> bool {
    matches!(tier().as_str(), "fentry" | "kprobe")
}

/// The Docker the lab uses: real unless `PATHTRACE_TEST_DOCKER=emulated`
/// (the VM harness: a real dockerd hangs under software emulation).
pub fn docker_mode() -> lab::DockerMode {
    match std::env::var("PATHTRACE_TEST_DOCKER").as_deref() {
        Ok("emulated") => lab::DockerMode::Emulated,
        _ => lab::DockerMode::Real,
    }
}

/// Whether the running kernel names its drops (`enum skb_drop_reason`,
/// Linux 5.17 and later, and some stable backports).
pub fn kernel_names_drops() -> bool {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("/sys/kernel/btf/vmlinux");
    btf.windows(17).any(|w| w == b"\0skb_drop_reason\0")
}

/// The `reason` a drop record carries for the kernel reason `name`: the
/// name where the kernel reports reasons, else null.
pub fn reason(name: &str) -> Value {
    if kernel_names_drops() {
        Value::from(name)
    } else {
        Value::Null
    }
}

/// A time limit, stretched by `PATHTRACE_TEST_TIMEOUT_SCALE` (the VM
/// harness sets it: software emulation is several times slower).
pub fn limit(secs: u64) -> Duration {
    let scale: f64 = std::env::var("PATHTRACE_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s >= 1.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs as f64 * scale)
}

pub use lab::{is_root, require_root};

/// Fails the test, naming it and the tool, when a tool it runs is missing.
pub fn require_tool(test: &str, tool: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file());
    assert!(
        found,
        "{test} needs `{tool}`, which is not installed (`cargo xtask test` installs it)"
    );
}

/// A running `pathtrace` whose stdout is collected until it exits.
pub struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    /// Standard output read while it ran ([`Running::stdout_until`]).
    stdout_lines: Vec<String>,
    pub stderr: mpsc::Receiver<String>,
    pub stderr_lines: Vec<String>,
}

fn pump(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    /// Starts `pathtrace ARGS` and waits for its "ready" line on stderr.
    pub fn start(args: &[&str]) -> Self {
        Self::start_env(args, &[])
    }

    /// [`Running::start`] with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let tier = tier();
        let child = Command::new(pathtrace_bin())
            .args(args)
            .envs(env.iter().copied())
            .args(["--tier", tier.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", pathtrace_bin().display()));
        Self::adopt(child)
    }

    /// Starts `pathtrace ARGS` inside network namespace `ns` (through
    /// `nsenter --net`, which keeps /sys as it is), with `DOCKER_HOST` unset.
    pub fn start_in(ns: &str, args: &[&str]) -> Self {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(pathtrace_bin())
            .args(args)
            .args(["--tier", tier().as_str()])
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting pathtrace in {ns}: {e}"));
        Self::adopt(child)
    }

    /// Takes over a `pathtrace` started with piped stdout and stderr, and
    /// waits for its "ready" line.
    pub fn adopt(mut child: Child) -> Self {
        // No stdout when it went elsewhere (`--pcap -` into another process).
        let stdout = match child.stdout.take() {
            Some(out) => pump(out),
            None => mpsc::channel().1,
        };
        let stderr = pump(child.stderr.take().expect("piped stderr"));
        let mut run = Self {
            child,
            stdout,
            stdout_lines: Vec::new(),
            stderr,
            stderr_lines: Vec::new(),
        };
        let deadline = Instant::now() + limit(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match run.stderr.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("[pathtrace] {line}");
                    let ready = line.contains("ready");
                    run.stderr_lines.push(line);
                    if ready {
                        return run;
                    }
                }
                Err(_) => {
                    let _ = run.child.kill();
                    let _ = run.child.wait();
                    panic!("pathtrace never said ready; stderr: {:?}", run.stderr_lines);
                }
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads standard output while it runs until a line satisfies `want`
    /// (true), or `limit` passes (false). The lines read are kept: `stop`
    /// and `wait` return them too.
    pub fn stdout_until(&mut self, limit: Duration, mut want: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let hit = want(&line);
                    self.stdout_lines.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Reads standard error while it runs until a line satisfies `want`;
    /// that line, or `None` once `limit` passes. The lines read are kept
    /// in `stderr_lines`.
    pub fn stderr_until(
        &mut self,
        limit: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stderr.recv_timeout(left).ok()?;
            eprintln!("[pathtrace] {line}");
            self.stderr_lines.push(line.clone());
            if want(&line) {
                return Some(line);
            }
        }
    }

    /// Sends SIGINT, waits for exit, returns (exit code, stdout lines).
    pub fn stop(self) -> (i32, Vec<String>) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        self.wait(limit(15))
    }

    /// Sends SIGINT, waits for exit, returns (exit code, stdout lines,
    /// stderr lines).
    pub fn stop_all(mut self) -> (i32, Vec<String>, Vec<String>) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let (code, out) = self.finish(limit(15));
        (code, out, std::mem::take(&mut self.stderr_lines))
    }

    /// Sends SIGINT, waits for exit, returns (exit code, stderr lines): for a
    /// run whose stdout went elsewhere, so text and JSON came on stderr.
    pub fn stop_stderr(mut self) -> (i32, Vec<String>) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let (code, _) = self.finish(limit(15));
        (code, std::mem::take(&mut self.stderr_lines))
    }

    /// [`Running::stop`], also returning every stderr line it printed.
    pub fn stop_with_stderr(mut self) -> (i32, Vec<String>, Vec<String>) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let (code, lines) = self.finish(limit(15));
        (code, lines, std::mem::take(&mut self.stderr_lines))
    }

    /// Waits for the process to end by itself.
    pub fn wait(mut self, limit: Duration) -> (i32, Vec<String>) {
        self.finish(limit)
    }

    fn finish(&mut self, limit: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("pathtrace did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The readers see the pipes close at once, unless a child of the
        // process still holds them; under emulation they are slower to run.
        let gap = crate::limit(1) / 2;
        let mut lines = std::mem::take(&mut self.stdout_lines);
        while let Ok(l) = self.stdout.recv_timeout(gap) {
            lines.push(l);
        }
        while let Ok(l) = self.stderr.recv_timeout(gap) {
            eprintln!("[pathtrace] {l}");
            self.stderr_lines.push(l);
        }
        (status.code().unwrap_or(-1), lines)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON Lines contract every `--json` record must meet.
const SCHEMA: &str = include_str!("../docs/pathtrace.schema.json");

fn schema() -> &'static jsonschema::Validator {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(SCHEMA).expect("docs/pathtrace.schema.json is JSON");
        jsonschema::validator_for(&schema).expect("docs/pathtrace.schema.json compiles")
    })
}

/// Parses JSON Lines, failing the test on any line that isn't JSON or that
/// doesn't validate against `docs/pathtrace.schema.json`.
pub fn records(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let errors: Vec<String> = schema().iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "record does not match the schema: {errors:?}\n{l}"
            );
            v
        })
        .collect()
}

pub fn of_type<'a>(recs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == ty).collect()
}

/// The `hop` records of one packet, in order.
pub fn hops_of<'a>(recs: &'a [Value], packet: &Value) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["type"] == "hop" && r["packet"] == *packet)
        .collect()
}

/// A lab of the incident with `block`, with the Docker of [`docker_mode`].
pub fn docker_lab(prefix: &str, block: lab::Block) -> lab::Lab {
    lab_with(lab::LabConfig {
        block,
        docker: docker_mode(),
        ..lab::LabConfig::with_prefix(prefix)
    })
}

pub fn lab_with(mut cfg: lab::LabConfig) -> lab::Lab {
    // dockerd (or the emulated httpd) is slower to get ready under emulation.
    cfg.ready_timeout = limit(cfg.ready_timeout.as_secs().max(1));
    let mode = cfg.docker;
    let lab = lab::Lab::start(cfg)
        .unwrap_or_else(|e| panic!("the lab ({mode:?} Docker) did not start: {e}"));
    if mode != lab::DockerMode::Auto {
        assert_eq!(
            lab.docker_is_real(),
            mode == lab::DockerMode::Real,
            "lab Docker mode"
        );
    }
    lab
}

pub fn netns_inode(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("netns {name}: {e}"))
        .ino()
}

/// One TCP connection attempt to the published port, bounded to 1.5 s.
pub fn connect(lab: &lab::Lab, from: &str) -> lab::ProbeOutcome {
    let host = std::net::IpAddr::V4(lab.addrs.host);
    lab.tcp_connect(
        from,
        host,
        lab.addrs.published_port,
        Duration::from_millis(1500),
    )
}

/// Traces `--src SRC --dport 8092` while `probe_from` connects once.
pub fn trace(
    lab: &lab::Lab,
    src: std::net::IpAddr,
    probe_from: &str,
    extra: &[&str],
) -> Vec<Value> {
    let src = src.to_string();
    let mut args = vec![
        "--src",
        &src,
        "--dport",
        "8092",
        "--json",
        "--duration",
        "30",
    ];
    args.extend_from_slice(extra);
    let run = Running::start(&args);
    let outcome = connect(lab, probe_from);
    eprintln!("probe from {probe_from}: {outcome:?}");
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    records(&lines)
}

/// A listener started in a namespace by the test, ended by its pid when dropped.
pub struct Listener {
    _process: Spawned,
}

impl Listener {
    /// On 0.0.0.0:8080; closes each connection as soon as it is accepted.
    pub fn start(ns: &str) -> Self {
        Self::spawn(ns, "0.0.0.0", 8080, 64, Serve::Close)
    }

    /// On 0.0.0.0:8080; keeps each connection open and echoes what it gets.
    pub fn echo(ns: &str) -> Self {
        Self::spawn(ns, "0.0.0.0", 8080, 64, Serve::Echo)
    }

    /// Listens on `addr:port` with `backlog` in `ns` and serves as `serve`
    /// says; returns once it listens (python says so), or fails the test
    /// after 20 s.
    pub fn spawn(ns: &str, addr: &str, port: u16, backlog: u32, serve: Serve) -> Self {
        let udp = matches!(serve, Serve::Udp | Serve::UdpEcho);
        let (family, kind) = match (addr.contains(':'), udp) {
            (true, true) => ("AF_INET6", "SOCK_DGRAM"),
            (false, true) => ("AF_INET", "SOCK_DGRAM"),
            (true, _) => ("AF_INET6", "SOCK_STREAM"),
            (false, _) => ("AF_INET", "SOCK_STREAM"),
        };
        let listen = if udp {
            String::new()
        } else {
            format!("s.listen({backlog})\n")
        };
        let body = match serve {
            Serve::Close => "while True:\n    c,_=s.accept()\n    c.close()\n",
            Serve::Echo => {
                "import threading\n\
                 def echo(c):\n    while True:\n        d=c.recv(4096)\n        if not d: break\n        c.sendall(d)\n\
                 while True:\n    c,_=s.accept()\n    threading.Thread(target=echo, args=(c,), daemon=True).start()\n"
            }
            Serve::Never | Serve::Udp => "import time\nwhile True:\n    time.sleep(1)\n",
            Serve::UdpEcho => "while True:\n    d,a=s.recvfrom(4096)\n    s.sendto(d,a)\n",
        };
        let script = format!(
            "import socket\ns=socket.socket(socket.{family}, socket.{kind})\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{addr}', {port}))\n{listen}print('listening', flush=True)\n{body}"
        );
        Self {
            _process: Spawned::python_in(ns, &script),
        }
    }
}

/// What a [`Listener`] does with what it gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Accepts, and closes at once.
    Close,
    /// Accepts, and echoes.
    Echo,
    /// Never accepts: connections wait in the accept queue.
    Never,
    /// A bound UDP socket that never reads.
    Udp,
    /// A bound UDP socket that sends each datagram back.
    UdpEcho,
}

/// The client socket's error, by its errno name.
pub fn errno_of(p: &lab::ProbeOutcome) -> &'static str {
    use lab::ProbeOutcome;
    match p {
        ProbeOutcome::Connected => "connected",
        ProbeOutcome::Refused => "ECONNREFUSED",
        ProbeOutcome::TimedOut => "ETIMEDOUT",
        ProbeOutcome::Other(s) if s.contains("os error 113") => "EHOSTUNREACH",
        ProbeOutcome::Other(s) if s.contains("os error 101") => "ENETUNREACH",
        ProbeOutcome::Other(s) if s.contains("os error 13") => "EACCES",
        ProbeOutcome::Other(_) => "other",
    }
}

/// The command an advice ends with: the text after its last ": ", when it
/// starts with the name of a tool that changes the network's configuration.
pub fn command_in(advice: &str) -> Option<&str> {
    const TOOLS: [&str; 10] = [
        "conntrack",
        "iptables",
        "ip6tables",
        "iptables-legacy",
        "nft",
        "ufw",
        "firewall-cmd",
        "sysctl",
        "ip",
        "tc",
    ];
    let (_, cmd) = advice.rsplit_once(": ")?;
    let cmd = cmd.trim();
    TOOLS
        .iter()
        .any(|t| cmd.split_whitespace().next() == Some(t))
        .then_some(cmd)
}

/// Where an advice says to run its command: the namespace named in its
/// "… in namespace NAME: command", or `None` for the host.
pub fn command_place(advice: &str) -> Option<&str> {
    let (before, _) = advice.rsplit_once(": ")?;
    let (_, ns) = before.rsplit_once(" in namespace ")?;
    Some(ns)
}

/// Runs `cmd` with `sh -c` in namespace `ns` (the host when `None`).
pub fn sh_in(ns: Option<&str>, cmd: &str) -> (bool, String) {
    let out = match ns {
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output(),
        None => Command::new("sh").args(["-c", cmd]).output(),
    }
    .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A BPF program of two instructions (`r0 = verdict; exit`), loaded with
/// the raw `bpf()` syscall and pinned in a bpffs of the test's own, so that
/// `tc` and `ip` attach it by path; unpinned and unmounted when dropped.
/// No compiler is needed to make a tc or XDP program that drops.
pub struct PinnedProgram {
    dir: PathBuf,
    pub path: PathBuf,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    rest: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    rest: [u64; 14],
}

/// `BPF_PROG_TYPE_SCHED_CLS`: a tc classifier; its verdict 2 is `TC_ACT_SHOT`.
pub const PROG_TC: u32 = 3;
/// `BPF_PROG_TYPE_XDP`; its verdict 1 is `XDP_DROP`.
pub const PROG_XDP: u32 = 6;

impl PinnedProgram {
    pub fn load(prog_type: u32, verdict: i32, name: &str) -> Self {
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_OBJ_PIN: libc::c_long = 6;
        let mov_r0: u64 = 0xb7 | (u64::from(verdict as u32) << 32);
        let exit: u64 = 0x95;
        let insns = [mov_r0, exit];
        let license = c"GPL";
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        attr.prog_name[..name.len().min(15)]
            .copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
        // SAFETY: BPF_PROG_LOAD with a valid attribute of the size given;
        // the instructions and licence outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoadAttr,
                std::mem::size_of::<ProgLoadAttr>(),
            )
        };
        assert!(
            fd >= 0,
            "BPF_PROG_LOAD: {}",
            std::io::Error::last_os_error()
        );
        let dir =
            std::env::temp_dir().join(format!("pathtrace-bpffs-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mounted = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "mounting a bpffs at {}", dir.display());
        let path = dir.join(name);
        let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).expect("path");
        let pin = ObjPinAttr {
            pathname: c_path.as_ptr() as u64,
            bpf_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: BPF_OBJ_PIN of a descriptor we hold, to a path that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_PIN,
                &pin as *const ObjPinAttr,
                std::mem::size_of::<ObjPinAttr>(),
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: fd is ours; the pin (and later the attachment) holds the program.
        unsafe { libc::close(fd as i32) };
        let me = Self { dir, path };
        assert_eq!(rc, 0, "BPF_OBJ_PIN: {err}");
        me
    }
}

impl Drop for PinnedProgram {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A python script run in a namespace by a test, that prints `listening`
/// once it serves; ended by its pid when dropped.
pub struct Spawned(Child);

impl Spawned {
    pub fn python_in(ns: &str, script: &str) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting python in {ns}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let me = Self(child);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "listening" => me,
            other => panic!("the script in {ns} did not start: {other:?}"),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether pathtrace's stderr says rule tracing was armed in namespace `ns`
/// before the first packet (it is on the flow's likely path).
pub fn armed_at_start(stderr: &[String], ns: &str) -> bool {
    stderr.iter().any(|l| {
        l.strip_prefix("pathtrace: rule tracing armed before the first packet in ")
            .is_some_and(|list| list.split(", ").any(|n| n == ns))
    })
}

/// `conntrack -E` (the kernel's own conntrack events) running in a
/// namespace from when it is subscribed until [`CtEvents::stop`].
pub struct CtEvents {
    child: Child,
    reader: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl CtEvents {
    /// Starts `conntrack -E ARGS` in `ns` and waits (by condition, at most
    /// 10 s) until its netlink socket has joined the event groups.
    pub fn start(ns: &str, args: &str) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "conntrack", "-E"])
            .args(args.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting conntrack -E in {ns}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let reader =
            std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
        let me = Self {
            child,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !me.subscribed() {
            assert!(
                Instant::now() < deadline,
                "conntrack -E in {ns} did not subscribe to events within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    /// Whether one of the process's sockets is a netfilter netlink socket
    /// with event groups joined (`/proc/PID/net/netlink`).
    fn subscribed(&self) -> bool {
        let pid = self.child.id();
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| {
                l.to_string_lossy()
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .map(str::to_owned)
            })
            .collect();
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
            f.len() >= 10 && f[1] == "12" && f[3] != "00000000" && inodes.iter().any(|i| i == f[9])
        })
    }

    /// Ends it (by its pid) and returns the events it printed.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for CtEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real firewalld running in a namespace, on a D-Bus system bus of its
/// own (nothing on the host's bus, nothing in `/etc/firewalld`: its
/// configuration lives in a directory of the test's, its runtime files on
/// a private tmpfs). Ended by pid when dropped; it removes its table then.
pub struct Firewalld {
    dbus: Child,
    daemon: Child,
    dir: PathBuf,
}

impl Firewalld {
    pub fn start(test: &str, ns: &str) -> Self {
        Self::start_with(test, ns, &[])
    }

    /// Starts with `config` (a path under its configuration directory, and
    /// the file's text) written first: permanent settings it reads as it
    /// starts, with no `firewall-cmd --reload` (which can outlast D-Bus's
    /// 25 s reply timeout on a slow machine).
    pub fn start_with(test: &str, ns: &str, config: &[(String, String)]) -> Self {
        require_tool(test, "firewalld");
        require_tool(test, "dbus-daemon");
        let dir = std::env::temp_dir().join(format!("pathtrace-firewalld-{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).expect("firewalld's directory");
        for (path, text) in config {
            let file = dir.join("etc").join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).expect("firewalld's configuration directory");
            }
            std::fs::write(&file, text)
                .unwrap_or_else(|e| panic!("{test}: writing {}: {e}", file.display()));
        }
        let bus = dir.join("bus");
        std::fs::write(
            dir.join("bus.conf"),
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
                bus.display()
            ),
        )
        .expect("bus configuration");
        let dbus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: starting dbus-daemon: {e}"));
        let daemon = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(format!(
                "mkdir -p /run/firewalld && mount -t tmpfs none /run/firewalld && \
                 exec firewalld --nofork --nopid --system-config {} --log-target console",
                dir.join("etc").display()
            ))
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", bus.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: starting firewalld in {ns}: {e}"));
        let me = Self { dbus, daemon, dir };
        let deadline = Instant::now() + limit(60);
        loop {
            let (ok, out) = me.cmd(ns, "firewall-cmd --state");
            if ok && out.trim() == "running" {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "{test}: firewalld in {ns} did not come up within {:?}: {out}",
                limit(60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The environment that points `firewall-cmd` at this firewalld's bus.
    pub fn env(&self) -> String {
        format!(
            "DBUS_SYSTEM_BUS_ADDRESS=unix:path={}",
            self.dir.join("bus").display()
        )
    }

    /// Runs `cmd` (a printed fix, exactly as printed) with `sh -c` in `ns`,
    /// with [`Firewalld::env`] set.
    pub fn cmd(&self, ns: &str, cmd: &str) -> (bool, String) {
        sh_in(Some(ns), &format!("export {}; {cmd}", self.env()))
    }
}

impl Drop for Firewalld {
    fn drop(&mut self) {
        // SIGTERM: firewalld takes its table down as it exits.
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        let deadline = Instant::now() + limit(20);
        while Instant::now() < deadline {
            if matches!(self.daemon.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `promtool check metrics` run on `text`: its output, for the caller to judge.
pub fn promtool_check(text: &str) -> std::process::Output {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    promtool.wait_with_output().expect("promtool finishes")
}

/// A private copy of ufw's configuration (/etc/ufw, /etc/default/ufw) and
/// state (/lib/ufw). Each command runs under `ip netns exec`, which gives
/// it a mount namespace of its own whose mounts do not propagate back:
/// there the copies are bind-mounted over the originals, and a tmpfs over
/// /run takes ufw's lock file. The host's ufw files are never written.
pub struct UfwCopy(PathBuf);

impl UfwCopy {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pathtrace-{tag}-ufw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("ufw copy dir");
        for (from, to) in [
            ("/etc/ufw", "etc-ufw"),
            ("/lib/ufw", "lib-ufw"),
            ("/etc/default/ufw", "default-ufw"),
        ] {
            let ok = Command::new("cp")
                .args(["-a", from])
                .arg(dir.join(to))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "copying {from}");
        }
        Self(dir)
    }

    /// `cmd`, run on the copy.
    pub fn wrap(&self, cmd: &str) -> String {
        let d = self.0.display();
        format!(
            "mount --bind {d}/etc-ufw /etc/ufw && mount --bind {d}/lib-ufw /lib/ufw && \
             mount --bind {d}/default-ufw /etc/default/ufw && \
             mount -t tmpfs pathtrace-ufw-run /run && {cmd}"
        )
    }

    /// Lets ufw route: forwarded traffic accepted unless a rule says
    /// otherwise, and its sysctl file leaving IPv4 and IPv6 forwarding on.
    pub fn routing(&self) {
        let edit = |file: &str, from: &str, to: &str| {
            let path = self.0.join(file);
            let text = std::fs::read_to_string(&path).expect("ufw copy file");
            let text: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.trim_start_matches('#').starts_with(from) {
                        to.to_owned()
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            std::fs::write(&path, text.join("\n") + "\n").expect("ufw copy write");
        };
        edit(
            "default-ufw",
            "DEFAULT_FORWARD_POLICY=",
            "DEFAULT_FORWARD_POLICY=\"ACCEPT\"",
        );
        for key in [
            "net/ipv4/ip_forward",
            "net/ipv6/conf/default/forwarding",
            "net/ipv6/conf/all/forwarding",
        ] {
            edit(
                "etc-ufw/sysctl.conf",
                &format!("{key}="),
                &format!("{key}=1"),
            );
        }
    }

    /// Runs `cmd` with `sh -c` in namespace `ns`, on the copy.
    pub fn run(&self, ns: &str, cmd: &str) -> (bool, String) {
        sh_in(Some(ns), &self.wrap(cmd))
    }
}

impl Drop for UfwCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! A real Podman of a test's own: its storage, run and temporary roots in
//! one folder, its commands run in a network namespace the test made, and
//! everything it leaves (containers, conmon, mounts, cgroups, the folder, the
//! namespace) removed however the test ends. Used by the engines suite (the
//! API service) and the image suite (the CLI, as users run the image).
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::limit;

/// Runs `cmd` to its end, killing it (by its pid) after `within`.
pub fn run_bounded(cmd: &mut Command, within: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // SAFETY: signalling the child we spawned, by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            panic!("{what} did not finish within {within:?}");
        }
    }
}

/// A Podman whose commands run in namespace `ns`, optionally with its API
/// service (`podman system service`) there, its socket at
/// `$XDG_RUNTIME_DIR/podman/podman.sock` under the folder. Drop removes the
/// containers, stops the service by its pid, reaps conmon, unmounts what
/// Podman mounted, removes its cgroups, the folder and the namespace.
pub struct Podman {
    pub dir: PathBuf,
    pub ns: String,
    /// The cgroup its containers are put under (`--cgroup-parent=/NAME`).
    pub cgroup: String,
    service: Option<Child>,
    /// conmon double-forks: it is reparented to this process (a subreaper).
    conmons: Vec<i32>,
}

impl Podman {
    /// `$XDG_RUNTIME_DIR` of the API service.
    pub fn xdg(&self) -> PathBuf {
        self.dir.join("xdg")
    }

    fn socket(&self) -> PathBuf {
        self.xdg().join("podman/podman.sock")
    }

    /// Flags that give every podman command this Podman's own state.
    pub fn global_flags(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            format!("--root={}", d("root")),
            format!("--runroot={}", d("runroot")),
            format!("--tmpdir={}", d("tmp")),
            format!("--volumepath={}", d("volumes")),
            format!("--network-config-dir={}", d("networks")),
            "--storage-driver=vfs".into(),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=none".into(),
            // crun refuses this machine's hybrid cgroup layout.
            "--runtime=runc".into(),
        ]
    }

    /// `podman ARGS` as this Podman's CLI, run in its namespace, with no
    /// engine variables of the caller's.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg("podman")
            .args(self.global_flags())
            .args(args);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("DOCKER_") || k.starts_with("CONTAINER") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    /// Runs `podman ARGS` (the CLI, see [`Podman::command`]) to its end
    /// within `within`; returns its stdout, failing the test on an error.
    pub fn local(&self, args: &[&str], within: Duration, what: &str) -> String {
        let out = run_bounded(&mut self.command(args), within, what);
        assert!(
            out.status.success(),
            "{what}: podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The podman CLI, as a client of the API service only.
    pub fn remote(&self, args: &[&str], what: &str) -> String {
        let out = run_bounded(
            Command::new("podman")
                .arg("--remote")
                .arg(format!("--url=unix://{}", self.socket().display()))
                .args(args)
                .env_remove("CONTAINER_HOST")
                .env_remove("CONTAINER_CONNECTION"),
            limit(60),
            what,
        );
        assert!(
            out.status.success(),
            "{what}: podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Remembers a conmon (it double-forks, so this process reaps it).
    pub fn adopt_conmon(&mut self, pid: i32) {
        self.conmons.push(pid);
    }

    /// A Podman with folders under the temporary folder and namespace
    /// `{prefix}-host`, both named after `prefix`, and no API service.
    pub fn new(prefix: &str) -> Self {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
        let mut podman = Self {
            dir: std::env::temp_dir().join(format!("pathtrace-podman-{prefix}")),
            ns: format!("{prefix}-host"),
            cgroup: format!("pathtrace-podman-{prefix}"),
            service: None,
            conmons: Vec::new(),
        };
        // What a killed run of this test left behind.
        podman.clean();
        for sub in [
            "xdg/podman",
            "root",
            "runroot",
            "tmp",
            "volumes",
            "networks",
        ] {
            std::fs::create_dir_all(podman.dir.join(sub)).expect("mkdir podman state");
        }
        std::fs::set_permissions(podman.xdg(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod XDG_RUNTIME_DIR");
        sh(&["ip", "netns", "add", &podman.ns]);
        sh(&["ip", "-n", &podman.ns, "link", "set", "lo", "up"]);
        podman
    }

    /// A Podman ([`Podman::new`]) with its API service running.
    pub fn start(prefix: &str) -> Self {
        let mut podman = Self::new(prefix);
        let log_path = podman.dir.join("service.log");
        let log = std::fs::File::create(&log_path).expect("service log");
        let socket = format!("unix://{}", podman.socket().display());
        let mut cmd = podman.command(&["system", "service", "--time=0", &socket]);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        podman.service = Some(cmd.spawn().expect("nsenter … podman system service"));
        let deadline = Instant::now() + limit(30);
        while !ping(&podman.socket()) {
            if let Some(Ok(Some(status))) = podman.service.as_mut().map(Child::try_wait) {
                podman.service = None;
                panic!(
                    "podman system service exited ({status}): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "podman system service: no API on {} within {:?}: {}",
                podman.socket().display(),
                limit(30),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        podman
    }

    fn clean(&mut self) {
        let sock = self.socket();
        if self.service.is_some() && sock.exists() {
            let _ = run_bounded(
                Command::new("podman")
                    .arg("--remote")
                    .arg(format!("--url=unix://{}", sock.display()))
                    .args(["rm", "-f", "-t", "0", "--all"]),
                limit(60),
                "podman rm",
            );
        } else if self.dir.join("root").exists() && Path::new("/run/netns").join(&self.ns).exists()
        {
            let _ = run_bounded(
                &mut self.command(&["rm", "-f", "-t", "0", "--all"]),
                limit(60),
                "podman rm",
            );
        }
        if let Some(mut service) = self.service.take() {
            let pid = service.id() as i32;
            // SAFETY: signalling the service this test started, by its pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(service.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = service.kill();
            let _ = service.wait();
        }
        // conmon and anything else still running from this engine's folders.
        let mine = self.dir.display().to_string();
        for pid in engine_pids(&mine) {
            // SAFETY: a process of this test's engine (its command line names our folder).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            self.conmons.push(pid);
        }
        // The container's processes, if its engine is gone (a killed run).
        let root = Path::new("/sys/fs/cgroup");
        let hierarchies = std::fs::read_dir(root).into_iter().flatten().flatten();
        let mut in_cgroup: Vec<i32> = std::iter::once(root.to_path_buf())
            .chain(hierarchies.map(|h| h.path()))
            .flat_map(|h| cgroup_pids(&h.join(&self.cgroup)))
            .collect();
        in_cgroup.sort_unstable();
        in_cgroup.dedup();
        for &pid in &in_cgroup {
            // SAFETY: a process in this test's engine's cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.conmons.extend(in_cgroup);
        for &pid in &self.conmons {
            reap(pid);
        }
        for target in mounts_under(&self.dir) {
            let c = std::ffi::CString::new(target).expect("mount path");
            // SAFETY: a valid C string; a lazy unmount of a mount Podman made in our folder.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        remove_cgroup(&root.join(&self.cgroup));
        for h in std::fs::read_dir(root).into_iter().flatten().flatten() {
            remove_cgroup(&h.path().join(&self.cgroup));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if Path::new("/run/netns").join(&self.ns).exists() {
            let _ = lab::delete_netns(&self.ns);
        }
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
    }
}

/// The processes in a cgroup and the ones under it.
fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if sub.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&sub.path()));
        }
    }
    pids
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.clean();
    }
}

/// `GET /_ping` on an engine API socket.
fn ping(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.") && reply.contains(" 200 ")
}

/// Runs a short command, failing the test when it fails.
pub fn sh(args: &[&str]) {
    let out = run_bounded(Command::new(args[0]).args(&args[1..]), limit(30), args[0]);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Podman's processes (the service, conmon, runc, `podman container
/// cleanup`) whose command line mentions `needle`.
pub fn engine_pids(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            matches!(comm.trim(), "podman" | "conmon" | "runc")
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(needle))
                    .unwrap_or(false)
        })
        .collect()
}

/// Reaps `pid` if it became this process's child (we are a subreaper), for
/// up to 5 s.
fn reap(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        match ppid {
            None => return,
            Some(p) if p == std::process::id() => {
                let mut status = 0;
                // SAFETY: waiting for our own child by its pid, without blocking.
                if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                    return;
                }
            }
            Some(_) => {}
        }
        if Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mut found: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

/// Removes a cgroup folder and the ones under it, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(subs) = std::fs::read_dir(dir) {
        for s in subs.flatten() {
            if s.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&s.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

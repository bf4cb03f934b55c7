//! Engine sockets found where users' tools find them, with real engines and
//! no `--docker-socket` or `DOCKER_HOST`: rootless Docker's socket under
//! `$XDG_RUNTIME_DIR` (and under the sudo user's `/run/user/UID`), and
//! Podman's Docker-compatible API under `$XDG_RUNTIME_DIR/podman/`.
//! (`DOCKER_HOST` is proven by tests/install.rs.)
use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use lab::{Block, Lab};
use pathtrace_tests::{
    connect, docker_lab, limit, of_type, pathtrace_bin, records, require_root, require_tool, tier,
    Running,
};
use serde_json::Value;

/// The engine sockets pathtrace would find on this machine without any of
/// the variables: a control run is only meaningful when there are none.
const SYSTEM_SOCKETS: [&str; 2] = ["/run/podman/podman.sock", "/var/run/docker.sock"];

/// Starts `pathtrace ARGS` with none of the engine variables but `env`.
fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let child = pathtrace_with_env(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", pathtrace_bin().display()));
    Running::adopt(child)
}

fn pathtrace_with_env(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(pathtrace_bin());
    cmd.args(args).args(["--tier", tier().as_str()]);
    for var in ["DOCKER_HOST", "XDG_RUNTIME_DIR", "SUDO_UID"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Runs `cmd` to its end, killing it (by its pid) after `within`.
fn run_bounded(cmd: &mut Command, within: Duration, what: &str) -> Output {
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

/// The DOCKER-USER drop, traced with `env` as the only engine variables.
fn trace_drop(lab: &Lab, env: &[(&str, &str)]) -> Vec<Value> {
    let src = lab.addrs.client.to_string();
    let run = start_with_env(
        &[
            "--src",
            &src,
            "--dport",
            "8092",
            "--netns",
            &lab.names.dock,
            "--json",
            "--duration",
            "30",
        ],
        env,
    );
    let outcome = connect(lab, &lab.names.client);
    eprintln!("probe from the client: {outcome:?}");
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    records(&lines)
}

/// The diagnoses of the client's dropped requests (at least one).
fn drop_messages(recs: &[Value]) -> Vec<String> {
    let msgs: Vec<String> = of_type(recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .map(|p| {
            assert_eq!(p["fate"], "dropped", "{p}");
            p["diagnosis"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(!msgs.is_empty(), "no request packets: {recs:#?}");
    msgs
}

/// A folder removed however the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/run/user/UID` for a UID that has none, removed (with `/run/user` if
/// this made it) however the test ends.
struct RunUserDir {
    dir: PathBuf,
    made_parent: bool,
}

impl RunUserDir {
    fn new() -> (Self, u32) {
        let parent = Path::new("/run/user");
        let made_parent = !parent.exists();
        let uid = (4_000_000_000u32..)
            .find(|u| !parent.join(u.to_string()).exists())
            .expect("a free uid");
        let dir = parent.join(uid.to_string());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        (Self { dir, made_parent }, uid)
    }
}

impl Drop for RunUserDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.made_parent {
            let _ = std::fs::remove_dir(Path::new("/run/user"));
        }
    }
}

#[test]
fn rootless_docker_socket_under_the_runtime_folder_names_the_container() {
    let test = "rootless_docker_socket_under_the_runtime_folder_names_the_container";
    require_root(test);
    let lab = docker_lab("ptengrl", Block::Drop);
    let socket = lab
        .docker_socket()
        .expect("a real dockerd has a socket")
        .to_path_buf();

    // $XDG_RUNTIME_DIR/docker.sock, where rootless Docker listens.
    let xdg = TempDir::new("pathtrace-xdg");
    std::os::unix::fs::symlink(&socket, xdg.0.join("docker.sock")).expect("symlink docker.sock");
    let xdg_dir = xdg.0.display().to_string();
    for msg in drop_messages(&trace_drop(&lab, &[("XDG_RUNTIME_DIR", &xdg_dir)])) {
        for want in ["container web", "rule 1 of chain DOCKER-USER"] {
            assert!(
                msg.contains(want),
                "XDG_RUNTIME_DIR: diagnosis lacks {want:?}: {msg}"
            );
        }
    }

    // /run/user/$SUDO_UID/docker.sock: the rootless Docker of the user who ran sudo.
    let (run_user, uid) = RunUserDir::new();
    std::os::unix::fs::symlink(&socket, run_user.dir.join("docker.sock"))
        .expect("symlink /run/user/UID/docker.sock");
    let uid = uid.to_string();
    for msg in drop_messages(&trace_drop(&lab, &[("SUDO_UID", &uid)])) {
        assert!(
            msg.contains("container web"),
            "SUDO_UID: diagnosis lacks the container: {msg}"
        );
    }
    drop(run_user);

    // With neither, the engine is still found, through its own process
    // (dockerd's root under /proc/PID/root), as it is inside a guest.
    for msg in drop_messages(&trace_drop(&lab, &[])) {
        assert!(
            msg.contains("container web"),
            "no variables: the engine's process did not name the container: {msg}"
        );
    }
}

/// Podman's addresses: a test namespace for the engine and a veth into the container.
const PODMAN_HOST_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const PODMAN_CTR_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const PODMAN_CONTAINER: &str = "ptpodweb";

/// A real Podman API service (`podman system service`) in a namespace of
/// its own, with its storage, run and temporary roots in one folder, and
/// its socket at `$XDG_RUNTIME_DIR/podman/podman.sock` under that folder.
/// Drop removes the container, stops the service by its pid, reaps conmon,
/// unmounts what Podman mounted, removes its cgroups, the folder and the
/// namespace.
struct Podman {
    dir: PathBuf,
    ns: String,
    cgroup: String,
    service: Option<Child>,
    /// conmon double-forks: it is reparented to this process (a subreaper).
    conmons: Vec<i32>,
}

impl Podman {
    fn xdg(&self) -> PathBuf {
        self.dir.join("xdg")
    }

    fn socket(&self) -> PathBuf {
        self.xdg().join("podman/podman.sock")
    }

    fn global_flags(&self) -> Vec<String> {
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

    /// The podman CLI, as a client of this service only.
    fn remote(&self, args: &[&str], what: &str) -> String {
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

    fn start(prefix: &str) -> Self {
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

        let log_path = podman.dir.join("service.log");
        let log = std::fs::File::create(&log_path).expect("service log");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", podman.ns))
            .arg("--")
            .arg("podman")
            .args(podman.global_flags())
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", podman.socket().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("DOCKER_") || k.starts_with("CONTAINER") {
                cmd.env_remove(k);
            }
        }
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

    /// Runs busybox httpd from an offline root folder (no registry, no
    /// image store), with no network of Podman's, and returns its pid.
    fn run_web(&mut self) -> i32 {
        let rootfs = self.dir.join("rootfs");
        for sub in ["bin", "www"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("mkdir rootfs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for tool in ["sh", "httpd"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool))
                .expect("busybox link");
        }
        std::fs::write(rootfs.join("www/index.html"), "podman\n").expect("index.html");
        let rootfs = rootfs.display().to_string();
        let cgroup_parent = format!("--cgroup-parent=/{}", self.cgroup);
        self.remote(
            &[
                "run",
                "-d",
                "--name",
                PODMAN_CONTAINER,
                "--network=none",
                &cgroup_parent,
                // This machine can't raise the limits Podman sets by default.
                "--ulimit=nofile=1024:1024",
                "--ulimit=nproc=1024:1024",
                "--rootfs",
                &rootfs,
                "/bin/httpd",
                "-f",
                "-p",
                "80",
                "-h",
                "/www",
            ],
            "podman run",
        );
        let conmon_pidfile = self.remote(
            &["inspect", "-f", "{{.ConmonPidFile}}", PODMAN_CONTAINER],
            "podman inspect",
        );
        if let Some(pid) = std::fs::read_to_string(&conmon_pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            self.conmons.push(pid);
        }
        let pid: i32 = self
            .remote(
                &["inspect", "-f", "{{.State.Pid}}", PODMAN_CONTAINER],
                "podman inspect",
            )
            .parse()
            .expect("the container's pid");
        assert!(pid > 0, "the container runs");
        pid
    }

    /// A veth from the engine's namespace into the container's.
    fn wire(&self, pid: i32) {
        let pid = pid.to_string();
        let host = format!("{PODMAN_HOST_IP}/24");
        let ctr = format!("{PODMAN_CTR_IP}/24");
        let ns = self.ns.as_str();
        sh(&[
            "ip", "-n", ns, "link", "add", "ptpod0", "type", "veth", "peer", "name", "eth0",
            "netns", &pid,
        ]);
        sh(&["ip", "-n", ns, "addr", "add", &host, "dev", "ptpod0"]);
        sh(&["ip", "-n", ns, "link", "set", "ptpod0", "up"]);
        let inside = format!("--net=/proc/{pid}/ns/net");
        sh(&["nsenter", &inside, "ip", "addr", "add", &ctr, "dev", "eth0"]);
        sh(&["nsenter", &inside, "ip", "link", "set", "eth0", "up"]);
        sh(&["nsenter", &inside, "ip", "link", "set", "lo", "up"]);
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
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
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

fn sh(args: &[&str]) {
    let out = run_bounded(Command::new(args[0]).args(&args[1..]), limit(30), args[0]);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Podman's processes (the service, conmon, runc, `podman container
/// cleanup`) whose command line mentions `needle`.
fn engine_pids(needle: &str) -> Vec<i32> {
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
fn mounts_under(dir: &Path) -> Vec<String> {
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

#[test]
fn podman_socket_under_the_runtime_folder_names_the_container() {
    let test = "podman_socket_under_the_runtime_folder_names_the_container";
    require_root(test);
    for tool in ["podman", "conmon", "runc", "nsenter", "ip", "busybox"] {
        require_tool(test, tool);
    }
    let mut podman = Podman::start("ptpod");
    let pid = podman.run_web();
    podman.wire(pid);
    let ctr_netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .expect("the container's namespace")
        .ino();
    let xdg = podman.xdg().display().to_string();
    let dst = PODMAN_CTR_IP.to_string();
    let args = [
        "--dst",
        dst.as_str(),
        "--dport",
        "80",
        "--netns",
        PODMAN_CONTAINER,
        "--json",
        "--duration",
        "30",
    ];

    // The control: with no engine socket, `--netns ptpodweb` names nothing.
    if SYSTEM_SOCKETS.iter().all(|s| !Path::new(s).exists()) {
        let out = run_bounded(
            &mut pathtrace_with_env(&args, &[]),
            limit(30),
            "pathtrace with no engine",
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("no network namespace or container named"),
            "--netns {PODMAN_CONTAINER} with no engine socket: {said}"
        );
    } else {
        eprintln!("{test}: a system engine socket exists, so no control run without sockets");
    }

    // With only XDG_RUNTIME_DIR, the container's name leads to its namespace
    // through the Podman API, and its packets are shown there by name.
    let run = start_with_env(&args, &[("XDG_RUNTIME_DIR", &xdg)]);
    let outcome = lab::tcp_connect(
        &podman.ns,
        IpAddr::V4(PODMAN_CTR_IP),
        80,
        Duration::from_millis(1500),
    );
    assert_eq!(
        outcome,
        lab::ProbeOutcome::Connected,
        "httpd in the Podman container answers"
    );
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace exit status");
    let recs = records(&lines);
    let requests: Vec<&Value> = of_type(&recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .collect();
    assert!(!requests.is_empty(), "no request packets: {recs:#?}");
    for p in &requests {
        assert_eq!(p["container"], PODMAN_CONTAINER, "{p}");
    }
    let in_ctr: Vec<&Value> = of_type(&recs, "hop")
        .into_iter()
        .filter(|h| h["netns"].as_u64() == Some(ctr_netns))
        .collect();
    assert!(
        !in_ctr.is_empty(),
        "no hop in the container's namespace: {recs:#?}"
    );
    for h in in_ctr {
        assert_eq!(h["netns_name"], PODMAN_CONTAINER, "{h}");
    }
    let (dir, cgroup) = (podman.dir.clone(), podman.cgroup.clone());
    drop(podman);
    assert!(mounts_under(&dir).is_empty(), "Podman's mounts are left");
    assert!(!dir.exists(), "Podman's folder is left");
    assert!(
        !Path::new("/sys/fs/cgroup/pids").join(&cgroup).exists(),
        "Podman's cgroup is left"
    );
    let dir = dir.display().to_string();
    assert!(
        engine_pids(&dir).is_empty(),
        "a Podman process outlived the test"
    );
    assert!(
        !Path::new("/run/netns/ptpod-host").exists(),
        "the engine's namespace is left"
    );
}

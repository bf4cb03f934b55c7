//! Engine sockets found where users' tools find them, with real engines and
//! no `--docker-socket` or `DOCKER_HOST`: rootless Docker's socket under
//! `$XDG_RUNTIME_DIR` (and under the sudo user's `/run/user/UID`), and
//! Podman's Docker-compatible API under `$XDG_RUNTIME_DIR/podman/`.
//! (`DOCKER_HOST` is proven by tests/install.rs.)
use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use lab::{Block, Lab};
use pathtrace_tests::{
    connect, docker_lab, limit, of_type, pathtrace_bin,
    podman::{engine_pids, mounts_under, run_bounded, sh, Podman},
    records, require_root, require_tool, tier, Running,
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

/// Runs busybox httpd from an offline root folder (no registry, no
/// image store), with no network of Podman's, and returns its pid.
fn run_web(podman: &mut Podman) -> i32 {
    let rootfs = podman.dir.join("rootfs");
    for sub in ["bin", "www"] {
        std::fs::create_dir_all(rootfs.join(sub)).expect("mkdir rootfs");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    for tool in ["sh", "httpd"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).expect("busybox link");
    }
    std::fs::write(rootfs.join("www/index.html"), "podman\n").expect("index.html");
    let rootfs = rootfs.display().to_string();
    let cgroup_parent = format!("--cgroup-parent=/{}", podman.cgroup);
    podman.remote(
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
        ]
        .into_iter()
        .chain(lab::httpd_command("80"))
        .collect::<Vec<_>>(),
        "podman run",
    );
    let conmon_pidfile = podman.remote(
        &["inspect", "-f", "{{.ConmonPidFile}}", PODMAN_CONTAINER],
        "podman inspect",
    );
    if let Some(pid) = std::fs::read_to_string(&conmon_pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        podman.adopt_conmon(pid);
    }
    let pid: i32 = podman
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
fn wire(podman: &Podman, pid: i32) {
    let pid = pid.to_string();
    let host = format!("{PODMAN_HOST_IP}/24");
    let ctr = format!("{PODMAN_CTR_IP}/24");
    let ns = podman.ns.as_str();
    sh(&[
        "ip", "-n", ns, "link", "add", "ptpod0", "type", "veth", "peer", "name", "eth0", "netns",
        &pid,
    ]);
    sh(&["ip", "-n", ns, "addr", "add", &host, "dev", "ptpod0"]);
    sh(&["ip", "-n", ns, "link", "set", "ptpod0", "up"]);
    let inside = format!("--net=/proc/{pid}/ns/net");
    sh(&["nsenter", &inside, "ip", "addr", "add", &ctr, "dev", "eth0"]);
    sh(&["nsenter", &inside, "ip", "link", "set", "eth0", "up"]);
    sh(&["nsenter", &inside, "ip", "link", "set", "lo", "up"]);
}

#[test]
fn podman_socket_under_the_runtime_folder_names_the_container() {
    let test = "podman_socket_under_the_runtime_folder_names_the_container";
    require_root(test);
    for tool in ["podman", "conmon", "runc", "nsenter", "ip", "busybox"] {
        require_tool(test, tool);
    }
    let mut podman = Podman::start("ptpod");
    let pid = run_web(&mut podman);
    wire(&podman, pid);
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

//! A real dockerd inside the Docker host namespace.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::cmd::Cmd;
use super::config::{cgroup_parent, Firewall, BRIDGE_IP};
use super::error::LabError;
use super::netns::ns_path;
use super::procs;

/// A dockerd this lab started (nsenter execs it, so the child's pid is dockerd's).
#[derive(Debug)]
pub(crate) struct RealDocker {
    child: Option<Child>,
    pid: i32,
    socket: PathBuf,
    pub(super) state: PathBuf,
    cli: String,
}

pub(super) fn first_existing(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

pub(super) fn mkdir(path: &Path) -> Result<(), LabError> {
    fs::create_dir_all(path).map_err(|e| LabError::io(format!("mkdir {}", path.display()), e))
}

pub(super) fn write(path: &Path, data: &str) -> Result<(), LabError> {
    fs::write(path, data).map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

/// Last lines of dockerd's log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// `GET /_ping` over the API socket.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.") && reply.contains(" 200 ") && reply.trim_end().ends_with("OK")
}

impl RealDocker {
    /// Starts dockerd in `dock_ns` with everything under `state`, and waits for its API.
    pub(crate) fn start(
        prefix: &str,
        dock_ns: &str,
        state: &Path,
        fw: Firewall,
        ready_timeout: Duration,
    ) -> Result<Self, LabError> {
        let dockerd = first_existing(&["/usr/sbin/dockerd", "/usr/bin/dockerd"])
            .ok_or_else(|| LabError::DockerUnavailable("dockerd is not installed".into()))?;
        let cli = first_existing(&["/usr/bin/docker", "/usr/local/bin/docker"])
            .ok_or_else(|| LabError::DockerUnavailable("the docker CLI is not installed".into()))?;
        Self::prepare_state(state, fw)?;
        let socket = state.join("docker.sock");
        let log_path = state.join("dockerd.log");
        let mut command = Self::command(prefix, dock_ns, state, &dockerd, &log_path)?;
        let child = command.spawn().map_err(|e| {
            LabError::DockerUnavailable(format!("could not run nsenter … {dockerd}: {e}"))
        })?;
        let docker = RealDocker {
            pid: child.id() as i32,
            child: Some(child),
            socket,
            state: state.to_path_buf(),
            cli,
        };
        docker.ready(&log_path, ready_timeout)
    }

    /// dockerd's folders, its `iptables` links and its own `daemon.json`,
    /// under `state`.
    fn prepare_state(state: &Path, fw: Firewall) -> Result<(), LabError> {
        for sub in ["data", "exec", "bin", "cli"] {
            mkdir(&state.join(sub))?;
        }
        // dockerd runs `iptables` from PATH; these links pin the configured backend.
        // `modprobe` is a no-op, so dockerd never loads kernel modules host-wide.
        let bin = state.join("bin");
        let stub = bin.join("modprobe");
        let _ = fs::remove_file(&stub);
        symlink("/bin/true", &stub)
            .map_err(|e| LabError::io(format!("symlink {}", stub.display()), e))?;
        for name in ["iptables", "iptables-save", "iptables-restore"]
            .into_iter()
            .chain(["ip6tables", "ip6tables-save", "ip6tables-restore"])
        {
            let link = bin.join(name);
            let _ = fs::remove_file(&link);
            symlink(fw.multi_binary(), &link)
                .map_err(|e| LabError::io(format!("symlink {}", link.display()), e))?;
        }
        // Its own daemon.json (never /etc/docker/daemon.json) and trust key (never
        // /etc/docker/key.json).
        let config = state.join("daemon.json");
        let key = state.join("key.json");
        write(
            &config,
            &format!("{{\"deprecated-key-path\": \"{}\"}}\n", key.display()),
        )?;
        Ok(())
    }

    /// `nsenter … dockerd` in `dock_ns`, with every path under `state`,
    /// its output to `log_path` and none of the caller's Docker settings.
    fn command(
        prefix: &str,
        dock_ns: &str,
        state: &Path,
        dockerd: &str,
        log_path: &Path,
    ) -> Result<Command, LabError> {
        let bin = state.join("bin");
        let config = state.join("daemon.json");
        let socket = state.join("docker.sock");
        let log = fs::File::create(log_path)
            .map_err(|e| LabError::io(format!("create {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| LabError::io("dup dockerd log", e))?;
        let s = |p: &str| state.join(p).display().to_string();
        let path_env = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin.display()
        );
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", ns_path(dock_ns).display()))
            .arg("--")
            .arg(dockerd)
            .arg(format!("--config-file={}", config.display()))
            .arg(format!("--data-root={}", s("data")))
            .arg(format!("--exec-root={}", s("exec")))
            .arg(format!("--pidfile={}", s("dockerd.pid")))
            .arg(format!("--host=unix://{}", socket.display()))
            .arg("--storage-driver=vfs")
            .arg(format!("--bip={BRIDGE_IP}/24"))
            // Container cgroups under /pathtrace-lab-{prefix}, not /docker.
            .arg(format!("--cgroup-parent=/{}", cgroup_parent(prefix)))
            .arg("--exec-opt=native.cgroupdriver=cgroupfs")
            .args(["--iptables=true", "--ip-forward=true", "--ip-masq=true"])
            .args(["--userland-proxy=true", "--live-restore=false"])
            .arg("--log-level=info")
            .env("PATH", path_env)
            .env("XTABLES_LOCKFILE", s("xtables.lock"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        super::procs::as_daemon(&mut command);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("DOCKER_") || k.starts_with("CONTAINERD_") {
                command.env_remove(k);
            }
        }
        Ok(command)
    }

    /// Waits until the API answers; stops dockerd if it doesn't within
    /// `ready_timeout` or the lab is cancelled.
    fn ready(mut self, log_path: &Path, ready_timeout: Duration) -> Result<Self, LabError> {
        let deadline = Instant::now() + ready_timeout;
        loop {
            if ping(&self.socket) {
                return Ok(self);
            }
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                _ => None,
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(LabError::DockerUnavailable(format!(
                    "dockerd exited ({status}): {}",
                    log_tail(log_path)
                )));
            }
            if super::cancel::stopped() {
                self.stop();
                return Err(LabError::Cancelled);
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(LabError::DockerUnavailable(format!(
                    "dockerd API not ready within {:.0}s: {}",
                    ready_timeout.as_secs_f64(),
                    log_tail(log_path)
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Runs the docker CLI against this daemon only.
    pub(crate) fn cli(&self, args: &[&str]) -> Result<Output, LabError> {
        self.cli_cmd(args).run()
    }

    fn cli_cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(&self.cli)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env(
                "DOCKER_CONFIG",
                self.state.join("cli").display().to_string(),
            )
            .env("DOCKER_CONTEXT", "default")
            .timeout(Duration::from_secs(60))
    }

    /// Stops dockerd by its pid: SIGTERM, wait up to 15 s, then SIGKILL; reaps it.
    /// (On SIGTERM dockerd stops its containerd and unmounts what it mounted.)
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        procs::signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut killed = false;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() >= deadline && !killed => {
                    log::warn!("dockerd {} ignored SIGTERM for 15s; killing it", self.pid);
                    let _ = child.kill();
                    killed = true;
                }
                Ok(None) if Instant::now() >= deadline + Duration::from_secs(5) => {
                    log::error!(
                        "dockerd {} survived SIGKILL; leaving it to the sweep",
                        self.pid
                    );
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    log::warn!("waiting for dockerd {}: {e}", self.pid);
                    break;
                }
            }
        }
    }
}

impl Drop for RealDocker {
    fn drop(&mut self) {
        self.stop();
    }
}

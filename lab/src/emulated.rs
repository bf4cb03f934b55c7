//! Emulated Docker: what dockerd 20.10 sets up for `docker run -p 8092:80`, without it.
//!
//! docker0 (198.51.100.1/24) in the Docker host namespace, a container namespace
//! `{p}-ctr` behind a veth (`eth0` 198.51.100.2 inside, `vethXXXXXXX` on docker0),
//! busybox httpd on port 80 inside (started with nsenter, tracked by pid), and Docker's
//! nat and filter rules (`firewall::docker_rules`). Not emulated: docker-proxy (LAN
//! traffic is DNATed before it could reach it anyway) and IPv6.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::config::{Firewall, LabNames, BRIDGE_IP, CONTAINER_IP, CONTAINER_PORT};
use super::error::LabError;
use super::firewall;
use super::netns::{self, ns_path};
use super::probe::{tcp_connect, ProbeOutcome};
use super::procs;

/// The emulated container.
#[derive(Debug)]
pub(crate) struct Emulated {
    httpd: Option<Child>,
    www: PathBuf,
    ctr_ns: String,
    veth: String,
}

/// Docker-style host-side veth name: "veth" and 7 hex digits (here derived from the prefix).
pub(crate) fn veth_name(prefix: &str) -> String {
    // FNV-1a, so the name is stable for a prefix.
    let hash = prefix.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("veth{:07x}", hash & 0x0fff_ffff)
}

impl Emulated {
    /// Builds docker0, the container namespace and Docker's rules; starts httpd if asked.
    pub(crate) fn start(
        prefix: &str,
        names: &LabNames,
        state: &Path,
        fw: Firewall,
        listener: bool,
    ) -> Result<Self, LabError> {
        let dock = names.dock.as_str();
        let ctr = names.ctr.as_str();
        let veth = veth_name(prefix);
        let bridge_cidr = format!("{BRIDGE_IP}/24");
        let ctr_cidr = format!("{CONTAINER_IP}/24");
        let gateway = BRIDGE_IP.to_string();

        netns::ip(dock, &["link", "add", "docker0", "type", "bridge"])?;
        netns::ip(dock, &["addr", "add", &bridge_cidr, "dev", "docker0"])?;
        netns::ip(dock, &["link", "set", "docker0", "up"])?;
        netns::add(ctr)?;
        netns::ip(
            dock,
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ctr,
            ],
        )?;
        netns::ip(dock, &["link", "set", &veth, "master", "docker0", "up"])?;
        netns::ip(ctr, &["link", "set", "lo", "up"])?;
        netns::ip(ctr, &["addr", "add", &ctr_cidr, "dev", "eth0"])?;
        netns::ip(ctr, &["link", "set", "eth0", "up"])?;
        netns::ip(ctr, &["route", "add", "default", "via", &gateway])?;

        let lock = state.join("xtables.lock");
        firewall::restore(&ns_path(dock), fw, &lock, &firewall::docker_rules())?;

        let www = state.join("www");
        fs::create_dir_all(&www)
            .map_err(|e| LabError::io(format!("mkdir {}", www.display()), e))?;
        let index = www.join("index.html");
        fs::write(&index, "pathtrace lab (emulated): hello from web\n")
            .map_err(|e| LabError::io(format!("write {}", index.display()), e))?;
        let mut emulated = Emulated {
            httpd: None,
            www,
            ctr_ns: ctr.to_string(),
            veth,
        };
        emulated.set_listener(listener)?;
        Ok(emulated)
    }

    pub(crate) fn veth(&self) -> &str {
        &self.veth
    }

    pub(crate) fn httpd_pid(&self) -> Option<i32> {
        self.httpd.as_ref().map(|c| c.id() as i32)
    }

    /// Starts or stops httpd in the container namespace.
    pub(crate) fn set_listener(&mut self, listener: bool) -> Result<(), LabError> {
        if !listener {
            self.stop();
            return Ok(());
        }
        if self.httpd.is_some() {
            return Ok(());
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| LabError::Unsupported("busybox-static is not installed".into()))?;
        let port = CONTAINER_PORT.to_string();
        let www = self.www.display().to_string();
        let shown = format!(
            "nsenter --net={} -- {busybox} httpd -f -p {port} -h {www}",
            ns_path(&self.ctr_ns).display()
        );
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", ns_path(&self.ctr_ns).display()))
            .arg("--")
            .arg(busybox)
            .args(["httpd", "-f", "-p", &port, "-h", &www])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = super::procs::as_daemon(&mut command)
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
        self.httpd = Some(child);
        // Ready when it accepts a connection inside the container namespace.
        let deadline = Instant::now() + Duration::from_secs(5);
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        loop {
            let outcome = tcp_connect(&self.ctr_ns, local, CONTAINER_PORT, Duration::from_secs(1));
            if outcome == ProbeOutcome::Connected {
                return Ok(());
            }
            let exited = self
                .httpd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.httpd = None;
                return Err(LabError::Command {
                    cmd: shown,
                    status: status.to_string(),
                    stderr: "httpd exited at start".into(),
                });
            }
            if super::cancel::stopped() {
                self.stop();
                return Err(LabError::Cancelled);
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(LabError::Timeout(format!("{shown} to listen")));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops httpd by its pid (SIGTERM, then SIGKILL) and reaps it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.httpd.take() {
            let pid = child.id() as i32;
            if !procs::terminate(&[pid], Duration::from_secs(2)).is_empty() {
                log::warn!("emulated httpd {pid} did not exit");
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        self.stop();
    }
}

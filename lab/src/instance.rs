//! `Lab`: start (real or emulated Docker), listener changes and teardown.

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cancel::{self, StopFlag};
use super::cleanup::{self, SweepReport};
use super::cmd::Cmd;
use super::config::{
    state_dir, validate_prefix, Block, ContainerInfo, DockerMode, LabAddrs, LabConfig, LabNames,
};
use super::docker::RealDocker;
use super::emulated::Emulated;
use super::error::LabError;
use super::netns;
use super::probe::ProbeOutcome;
use super::{host, mounts, procs};

#[cfg(test)]
thread_local! {
    /// Tests set this to make a real start fail once dockerd runs (Auto fallback test).
    pub(crate) static FAIL_REAL_AFTER_IMAGE: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

pub(super) enum Backend {
    None,
    Real(RealDocker),
    Emulated(Emulated),
}

/// A running lab. Dropping it tears it down.
pub struct Lab {
    /// Namespace names (read-only by convention; also [`Lab::names`]).
    pub names: LabNames,
    /// Addresses and ports (read-only by convention; also [`Lab::addrs`]).
    pub addrs: LabAddrs,
    pub(super) config: LabConfig,
    pub(super) state: PathBuf,
    pub(super) backend: Backend,
    pub(super) container: ContainerInfo,
    pub(super) block: Block,
    pub(super) torn_down: bool,
}

impl Lab {
    /// Sweeps leftovers of the same prefix, then builds the lab. On error everything
    /// already built is torn down again.
    pub fn start(config: LabConfig) -> Result<Lab, LabError> {
        Self::start_cancellable(config, &StopFlag::new())
    }

    /// [`Lab::start`] that returns [`LabError::Cancelled`] soon after `stop`
    /// is set (checked between steps, while a command runs and while it
    /// waits for dockerd or httpd), with what was built torn down.
    pub fn start_cancellable(config: LabConfig, stop: &StopFlag) -> Result<Lab, LabError> {
        validate_prefix(&config.prefix)?;
        cleanup::require_root()?;
        let started = Instant::now();
        cleanup::sweep(&config.prefix)?;
        let state = state_dir(&config.prefix);
        host::record_before_start(&state)?;
        let names = LabNames::new(&config.prefix);
        let mut lab = Lab {
            container: ContainerInfo {
                netns: names.ctr.clone(),
                ..ContainerInfo::default()
            },
            names,
            addrs: LabAddrs::default(),
            state,
            backend: Backend::None,
            block: Block::None,
            torn_down: false,
            config,
        };
        let built = {
            let _scope = cancel::Scope::enter(stop);
            cancel::check().and_then(|()| lab.build())
        };
        // On error (stopped included), `lab` is dropped here, out of the
        // stop scope, and tears down what was built.
        built?;
        log::info!(
            "lab {} ready in {:.2}s ({} docker, {:?})",
            lab.config.prefix,
            started.elapsed().as_secs_f64(),
            if lab.docker_is_real() {
                "real"
            } else {
                "emulated"
            },
            lab.config.firewall
        );
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        netns::build_lan(&self.names)?;
        cancel::check()?;
        if self.config.hypervisor {
            self.make_hypervisor()?;
            cancel::check()?;
        }
        if self.config.defer_docker {
            return Ok(());
        }
        self.start_docker()
    }

    /// Starts Docker in the Docker host namespace (real, or emulated), runs
    /// the container and applies the block. [`Lab::start`] does this itself
    /// unless the configuration defers it.
    pub fn start_docker(&mut self) -> Result<(), LabError> {
        if !matches!(self.backend, Backend::None) || self.torn_down {
            return Err(LabError::Unsupported(
                "Docker runs already, or the lab is torn down".into(),
            ));
        }
        let cfg = self.config.clone();
        match cfg.docker {
            DockerMode::Emulated => self.start_emulated()?,
            DockerMode::Real => self.start_real()?,
            DockerMode::Auto => match self.start_real() {
                Err(LabError::Cancelled) => return Err(LabError::Cancelled),
                Err(e) => {
                    log::warn!(
                        "lab {}: real dockerd unavailable ({e}); emulating Docker instead",
                        cfg.prefix
                    );
                    self.discard_real()?;
                    cancel::check()?;
                    self.start_emulated()?;
                }
                Ok(()) => {}
            },
        }
        cancel::check()?;
        self.set_block(cfg.block)
    }

    /// br_netfilter on the LAN bridge, and a hypervisor firewall that
    /// accepts the LAN's bridged traffic in FORWARD (as Proxmox's does).
    fn make_hypervisor(&self) -> Result<(), LabError> {
        // A module on Debian's kernels, built in on others.
        let _ = Cmd::new("modprobe").arg("br_netfilter").run();
        netns::sysctl(&self.names.lan, "net/bridge/bridge-nf-call-iptables", "1")?;
        let lan = super::config::LAN_CIDR;
        fs::create_dir_all(&self.state)
            .map_err(|e| LabError::io(format!("creating {}", self.state.display()), e))?;
        super::firewall::iptables(
            &netns::ns_path(&self.names.lan),
            self.config.firewall,
            &self.state.join("xtables.lock"),
            &["-A", "FORWARD", "-s", lan, "-d", lan, "-j", "ACCEPT"],
        )
        .map(|_| ())
    }

    /// Starts this lab's dockerd in the Docker host namespace.
    fn spawn_dockerd(&self) -> Result<RealDocker, LabError> {
        let cfg = &self.config;
        RealDocker::start(
            &cfg.prefix,
            &self.names.dock,
            &self.state,
            cfg.firewall,
            cfg.ready_timeout,
        )
    }

    fn start_real(&mut self) -> Result<(), LabError> {
        self.backend = Backend::Real(self.spawn_dockerd()?);
        cancel::check()?;
        if let Backend::Real(docker) = &self.backend {
            docker.build_image()?;
        }
        cancel::check()?;
        #[cfg(test)]
        if FAIL_REAL_AFTER_IMAGE.with(std::cell::Cell::get) {
            return Err(LabError::DockerUnavailable(
                "failure injected by a test".into(),
            ));
        }
        self.run_real_container()
    }

    /// `docker run` the web container, attach its namespace as `{p}-ctr`, wait for httpd.
    fn run_real_container(&mut self) -> Result<(), LabError> {
        let Backend::Real(docker) = &self.backend else {
            return Err(LabError::Unsupported("no real dockerd".into()));
        };
        docker.run_web(self.config.listener)?;
        cancel::check()?;
        let sandbox = docker.sandbox()?;
        if sandbox.ip != self.addrs.container.to_string() {
            return Err(LabError::Parse {
                cmd: "docker inspect web".into(),
                detail: format!(
                    "container got {}, expected {}",
                    sandbox.ip, self.addrs.container
                ),
            });
        }
        netns::delete(&self.names.ctr)?;
        Cmd::new("ip")
            .args(["netns", "attach", &self.names.ctr, &sandbox.pid.to_string()])
            .run()?;
        self.container.sandbox = Some(sandbox.path);
        self.container.pid = Some(sandbox.pid);
        self.discover_container()?;
        if self.config.listener {
            self.wait_listening()?;
        }
        Ok(())
    }

    /// After a failed real start (Auto mode): stop what was started, forget its files and
    /// recreate the Docker host namespace, so the emulation starts from a clean slate.
    fn discard_real(&mut self) -> Result<(), LabError> {
        if let Backend::Real(mut docker) = std::mem::replace(&mut self.backend, Backend::None) {
            docker.stop();
        }
        let cgroup = super::config::cgroup_parent(&self.config.prefix);
        let pids: Vec<i32> = procs::find(&self.state, &cgroup)
            .iter()
            .map(|p| p.pid)
            .collect();
        procs::terminate(&pids, Duration::from_secs(3));
        let left = mounts::unmount_all_under(&self.state);
        if !left.is_empty() {
            return Err(LabError::Cleanup(left));
        }
        for sub in ["data", "exec"] {
            let _ = fs::remove_dir_all(self.state.join(sub));
        }
        netns::delete(&self.names.ctr)?;
        netns::reset_dock(&self.names)
    }

    fn start_emulated(&mut self) -> Result<(), LabError> {
        let cfg = &self.config;
        let emulated = Emulated::start(
            &cfg.prefix,
            &self.names,
            &self.state,
            cfg.firewall,
            cfg.listener,
        )?;
        self.container.pid = emulated.httpd_pid();
        self.backend = Backend::Emulated(emulated);
        self.discover_container()
    }

    /// Fills in the container's namespace inode and host-side veth.
    fn discover_container(&mut self) -> Result<(), LabError> {
        self.container.netns_inode = Some(netns::inode(&self.names.ctr)?);
        self.container.veth = match netns::peer_ifindex(&self.names.ctr, "eth0")? {
            Some(idx) => netns::link_name_by_index(&self.names.dock, idx)?,
            None => None,
        };
        if let (Backend::Emulated(e), None) = (&self.backend, &self.container.veth) {
            self.container.veth = Some(e.veth().to_string());
        }
        Ok(())
    }

    fn wait_listening(&self) -> Result<(), LabError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let addr = IpAddr::V4(self.addrs.container);
        loop {
            let outcome = self.tcp_connect(
                &self.names.ctr,
                addr,
                self.addrs.container_port,
                Duration::from_secs(1),
            );
            if outcome == ProbeOutcome::Connected {
                return Ok(());
            }
            cancel::check()?;
            if Instant::now() >= deadline {
                return Err(LabError::Timeout(format!(
                    "httpd in web to listen (last: {outcome})"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts or stops the container's listener (real mode: recreates the container with
    /// the same name, port mapping and address).
    pub fn set_listener(&mut self, listener: bool) -> Result<(), LabError> {
        if listener == self.config.listener {
            return Ok(());
        }
        self.config.listener = listener;
        if let Backend::Emulated(e) = &mut self.backend {
            e.set_listener(listener)?;
            self.container.pid = e.httpd_pid();
            return Ok(());
        }
        let Backend::Real(docker) = &self.backend else {
            return Err(LabError::Unsupported("lab is torn down".into()));
        };
        netns::delete(&self.names.ctr)?;
        docker.remove_containers()?;
        self.run_real_container()
    }

    /// Restarts dockerd (real mode): the container is removed, dockerd stopped by its
    /// pid and started again with the same state, and the container run again (new
    /// namespace, new veth, same name, address and port mapping).
    pub fn restart_dockerd(&mut self) -> Result<(), LabError> {
        let Backend::Real(docker) = &mut self.backend else {
            return Err(LabError::Unsupported("no real dockerd to restart".into()));
        };
        netns::delete(&self.names.ctr)?;
        docker.remove_containers()?;
        docker.stop();
        self.backend = Backend::Real(self.spawn_dockerd()?);
        self.run_real_container()
    }

    /// Removes the container, stops dockerd (or the emulated httpd) by pid, kills what it
    /// left, unmounts, deletes the namespaces, cgroups and state dir. Idempotent.
    pub fn teardown(&mut self) -> Result<(), LabError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut problems = Vec::new();
        match std::mem::replace(&mut self.backend, Backend::None) {
            Backend::Real(mut docker) => {
                // Detach {p}-ctr first so the container's namespace can go with it.
                if let Err(e) = netns::delete(&self.names.ctr) {
                    problems.push(e.to_string());
                }
                // If this fails (dockerd died), the sweep below still kills the
                // containers' processes; only what is left then counts as a failure.
                if let Err(e) = docker.remove_containers() {
                    log::warn!("lab {}: docker rm -f: {e}", self.config.prefix);
                }
                docker.stop();
            }
            Backend::Emulated(mut emulated) => emulated.stop(),
            Backend::None => {}
        }
        let mut report = SweepReport::default();
        problems.extend(cleanup::remove_all(&self.config.prefix, &mut report));
        if !report.killed.is_empty() {
            log::debug!(
                "lab {}: killed left-over processes {:?}",
                self.config.prefix,
                report.killed
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LabError::Cleanup(problems))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            log::error!("lab {}: teardown: {e}", self.config.prefix);
        }
    }
}

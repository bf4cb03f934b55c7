//! `Lab`'s probes, command helpers, block changes and accessors.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde::Serialize;

use super::cmd::Cmd;
use super::config::{Block, ContainerInfo, Firewall, LabAddrs, LabNames};
use super::error::LabError;
use super::firewall::{self, block_rules, change_args};
use super::instance::{Backend, Lab};
use super::netns::{self, ns_path};
use super::probe::{self, ProbeOutcome};

/// A serialisable summary of a running lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabInfo {
    /// The prefix.
    pub prefix: String,
    /// Namespace names.
    pub names: LabNames,
    /// Namespace inodes, by name.
    pub netns_inodes: Vec<(String, u64)>,
    /// Addresses and ports.
    pub addrs: LabAddrs,
    /// Whether a real dockerd runs (false: emulated).
    pub docker_is_real: bool,
    /// dockerd's API socket (real mode).
    pub docker_socket: Option<PathBuf>,
    /// The iptables backend.
    pub firewall: Firewall,
    /// The current block.
    pub block: Block,
    /// Whether httpd listens in the container.
    pub listener: bool,
    /// The container.
    pub container: ContainerInfo,
}

impl Lab {
    /// Replaces the current client block with `block` (undoing the old one's rules).
    pub fn set_block(&mut self, block: Block) -> Result<(), LabError> {
        for change in block_rules(self.block).iter().rev() {
            self.iptables_owned(&change_args(change, false))?;
        }
        self.block = Block::None;
        for change in block_rules(block) {
            self.iptables_owned(&change_args(&change, true))?;
        }
        self.block = block;
        Ok(())
    }

    fn iptables_owned(&self, args: &[String]) -> Result<Output, LabError> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.iptables(&refs)
    }

    /// Runs `iptables -w ARGS` in the Docker host namespace with the lab's backend.
    pub fn iptables(&self, args: &[&str]) -> Result<Output, LabError> {
        let lock = self.state.join("xtables.lock");
        firewall::iptables(
            &ns_path(&self.names.dock),
            self.config.firewall,
            &lock,
            args,
        )
    }

    /// Runs a command in namespace `ns` (a lab namespace name, any name under /run/netns,
    /// or a path) via `nsenter --net=...`; fails unless it exits with status 0.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output, LabError> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| LabError::Unsupported("exec needs a command".into()))?;
        Cmd::in_netns(&ns_path(ns), program).args(rest).run()
    }

    /// Runs the docker CLI against the lab's dockerd (real mode only).
    pub fn docker(&self, args: &[&str]) -> Result<Output, LabError> {
        match &self.backend {
            Backend::Real(docker) => docker.cli(args),
            _ => Err(LabError::Unsupported(
                "docker is emulated in this lab".into(),
            )),
        }
    }

    /// A TCP connection attempt from namespace `ns`; bounded by `timeout` (plus 2 s).
    pub fn tcp_connect(
        &self,
        ns: &str,
        addr: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> ProbeOutcome {
        probe::tcp_connect(ns, addr, port, timeout)
    }

    /// `GET /` from namespace `ns`; the raw reply, or why it failed.
    pub fn http_get(
        &self,
        ns: &str,
        addr: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<String, ProbeOutcome> {
        probe::http_get(ns, addr, port, timeout)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// Namespace names.
    pub fn names(&self) -> &LabNames {
        &self.names
    }

    /// All namespaces of the lab.
    pub fn namespaces(&self) -> Vec<&str> {
        self.names.all().to_vec()
    }

    /// (name, inode) of every lab namespace that exists.
    pub fn netns_inodes(&self) -> Vec<(String, u64)> {
        self.names
            .all()
            .iter()
            .filter_map(|n| netns::inode(n).ok().map(|i| (n.to_string(), i)))
            .collect()
    }

    /// Addresses and ports.
    pub fn addrs(&self) -> &LabAddrs {
        &self.addrs
    }

    /// The container's namespace, inode, veth and pid.
    pub fn container(&self) -> &ContainerInfo {
        &self.container
    }

    /// Whether a real dockerd runs (false: Docker is emulated).
    pub fn docker_is_real(&self) -> bool {
        matches!(self.backend, Backend::Real(_))
    }

    /// dockerd's API socket (`unix://` path), real mode only.
    pub fn docker_socket(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Real(d) => Some(d.socket()),
            _ => None,
        }
    }

    /// dockerd's pid, real mode only.
    pub fn dockerd_pid(&self) -> Option<i32> {
        match &self.backend {
            Backend::Real(d) => Some(d.pid()),
            _ => None,
        }
    }

    /// The iptables backend.
    pub fn firewall(&self) -> Firewall {
        self.config.firewall
    }

    /// The current block.
    pub fn block(&self) -> Block {
        self.block
    }

    /// Whether httpd listens in the container.
    pub fn listener(&self) -> bool {
        self.config.listener
    }

    /// The lab's state dir (`/run/pathtrace-lab/{prefix}`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// A serialisable summary.
    pub fn info(&self) -> LabInfo {
        LabInfo {
            prefix: self.config.prefix.clone(),
            names: self.names.clone(),
            netns_inodes: self.netns_inodes(),
            addrs: self.addrs.clone(),
            docker_is_real: self.docker_is_real(),
            docker_socket: self.docker_socket().map(Path::to_path_buf),
            firewall: self.config.firewall,
            block: self.block,
            listener: self.config.listener,
            container: self.container.clone(),
        }
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.config.prefix)
            .field("docker_is_real", &self.docker_is_real())
            .field("firewall", &self.config.firewall)
            .field("block", &self.block)
            .field("listener", &self.config.listener)
            .finish()
    }
}

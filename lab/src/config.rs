//! Lab options, fixed addresses and names.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::LabError;

/// Where each lab keeps its state: `/run/pathtrace-lab/{prefix}/`.
pub const STATE_ROOT: &str = "/run/pathtrace-lab";
/// The LAN (documentation range, never routed off the machine).
pub const LAN_CIDR: &str = "192.0.2.0/24";
/// The reverse proxy that fails in the incident.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
/// Another LAN machine, for which the published port works.
pub const OTHER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 134);
/// The Docker host.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
/// docker0's address (`--bip`).
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// docker0's network.
pub const BRIDGE_CIDR: &str = "198.51.100.0/24";
/// The `web` container's address (the first one Docker hands out on docker0).
pub const CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The port httpd listens on inside the container.
pub const CONTAINER_PORT: u16 = 80;
/// The port published on the Docker host (`-p 8092:80`).
pub const PUBLISHED_PORT: u16 = 8092;
/// The offline-built image.
pub const IMAGE: &str = "pathtrace-lab/busybox:1";
/// The container's name.
pub const CONTAINER_NAME: &str = "web";

/// The image's web server listening on `port`: the `web` container's
/// command, and that of any other container serving the image's page.
pub fn httpd_command(port: &str) -> [&str; 6] {
    ["/bin/httpd", "-f", "-p", port, "-h", "/www"]
}

/// How the client (192.0.2.9) is blocked on the Docker host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Block {
    /// No block: every LAN machine reaches the published port.
    #[default]
    None,
    /// `iptables -I DOCKER-USER -s 192.0.2.9 -j DROP`: the client times out.
    Drop,
    /// `iptables -I DOCKER-USER -s 192.0.2.9 -p tcp -j REJECT --reject-with tcp-reset`:
    /// the client gets "connection refused".
    Reject,
    /// FORWARD policy DROP, and the client's packets are kept away from Docker's ACCEPT
    /// rule so that the chain *policy* drops them (see `firewall::block_rules`).
    PolicyDrop,
}

/// Which iptables backend writes the rules on the Docker host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firewall {
    /// iptables-nft (Debian 12's default): rules live in nftables `ip filter`/`ip nat`.
    #[default]
    Nft,
    /// iptables-legacy (x_tables).
    Legacy,
}

impl Firewall {
    /// The multi-call binary implementing this backend.
    pub(crate) fn multi_binary(self) -> &'static str {
        match self {
            Firewall::Nft => "/usr/sbin/xtables-nft-multi",
            Firewall::Legacy => "/usr/sbin/xtables-legacy-multi",
        }
    }

    /// The `iptables` command for this backend.
    pub fn iptables(self) -> &'static str {
        match self {
            Firewall::Nft => "/usr/sbin/iptables-nft",
            Firewall::Legacy => "/usr/sbin/iptables-legacy",
        }
    }

    /// The `iptables-restore` command for this backend.
    pub fn iptables_restore(self) -> &'static str {
        match self {
            Firewall::Nft => "/usr/sbin/iptables-nft-restore",
            Firewall::Legacy => "/usr/sbin/iptables-legacy-restore",
        }
    }
}

/// Whether to run a real dockerd or to emulate what it sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerMode {
    /// Try a real dockerd; fall back to emulation (with a warning) if it can't start.
    #[default]
    Auto,
    /// A real dockerd or an error.
    Real,
    /// Always emulate: docker0, a container namespace and Docker 20.10's rules.
    Emulated,
}

/// Options for [`super::Lab::start`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabConfig {
    /// Prefix of every namespace name (`{prefix}-lan`, ...); 1-8 of `[a-z0-9]`.
    pub prefix: String,
    /// How the client is blocked.
    pub block: Block,
    /// Whether httpd listens in the container (false: nothing listens, the port is still
    /// published, so connections are refused by the container's stack).
    pub listener: bool,
    /// The iptables backend.
    pub firewall: Firewall,
    /// Real or emulated Docker.
    pub docker: DockerMode,
    /// How long to wait for dockerd and the container to become ready.
    pub ready_timeout: Duration,
    /// The incident's real shape: `{p}-lan` is a hypervisor whose bridge
    /// passes bridged frames through iptables (br_netfilter,
    /// `bridge-nf-call-iptables=1`) with a firewall accepting the LAN, and
    /// the Docker host behind it is its guest.
    pub hypervisor: bool,
    /// Build the namespaces only: Docker (real or emulated) and the block
    /// come later, with [`super::Lab::start_docker`].
    pub defer_docker: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            prefix: "pt".to_string(),
            block: Block::None,
            listener: true,
            firewall: Firewall::Nft,
            docker: DockerMode::Auto,
            ready_timeout: Duration::from_secs(30),
            hypervisor: false,
            defer_docker: false,
        }
    }
}

impl LabConfig {
    /// A default configuration with the given prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        LabConfig {
            prefix: prefix.into(),
            ..LabConfig::default()
        }
    }
}

/// Checks a prefix: short enough for every derived name, and free of `-` so that
/// `{prefix}-{role}` can't collide with another prefix's names.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), LabError> {
    let ok = (1..=8).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(LabError::InvalidPrefix(prefix.to_string()))
    }
}

/// The state directory of the lab with this prefix.
pub fn state_dir(prefix: &str) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(prefix)
}

/// The cgroup (in every hierarchy) that holds the real containers' cgroups.
pub(crate) fn cgroup_parent(prefix: &str) -> String {
    format!("pathtrace-lab-{prefix}")
}

/// Names of the lab's network namespaces (all under `/run/netns/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabNames {
    /// The LAN: a namespace holding bridge `br0`.
    pub lan: String,
    /// The client (192.0.2.9), the reverse proxy that fails.
    pub client: String,
    /// Another LAN machine (192.0.2.134) that works.
    pub other: String,
    /// The Docker host (192.0.2.25), where dockerd runs.
    pub dock: String,
    /// The `web` container's namespace (attached from Docker's sandbox, or emulated).
    pub ctr: String,
}

impl LabNames {
    pub(crate) fn new(prefix: &str) -> Self {
        LabNames {
            lan: format!("{prefix}-lan"),
            client: format!("{prefix}-client"),
            other: format!("{prefix}-other"),
            dock: format!("{prefix}-dock"),
            ctr: format!("{prefix}-ctr"),
        }
    }

    /// All namespace names, in creation order.
    pub fn all(&self) -> [&str; 5] {
        [&self.lan, &self.client, &self.other, &self.dock, &self.ctr]
    }
}

/// Addresses and ports of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabAddrs {
    /// The client that fails (192.0.2.9).
    pub client: Ipv4Addr,
    /// The other machine that works (192.0.2.134).
    pub other: Ipv4Addr,
    /// The Docker host (192.0.2.25).
    pub host: Ipv4Addr,
    /// docker0 on the Docker host (198.51.100.1).
    pub bridge: Ipv4Addr,
    /// The container (198.51.100.2).
    pub container: Ipv4Addr,
    /// The container's port (80).
    pub container_port: u16,
    /// The port published on the Docker host (8092).
    pub published_port: u16,
}

impl Default for LabAddrs {
    fn default() -> Self {
        LabAddrs {
            client: CLIENT_IP,
            other: OTHER_IP,
            host: HOST_IP,
            bridge: BRIDGE_IP,
            container: CONTAINER_IP,
            container_port: CONTAINER_PORT,
            published_port: PUBLISHED_PORT,
        }
    }
}

/// The `web` container's network identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    /// Its namespace's name under /run/netns (`{p}-ctr`, attached from Docker's sandbox
    /// in real mode).
    pub netns: String,
    /// Docker's sandbox path (`{exec-root}/netns/ID`), real mode only.
    pub sandbox: Option<PathBuf>,
    /// The namespace's inode (as BPF's `ns.inum` and /proc/PID/ns/net show it).
    pub netns_inode: Option<u64>,
    /// The host-side veth on docker0.
    pub veth: Option<String>,
    /// The container's init pid (real) or the emulated httpd's pid.
    pub pid: Option<i32>,
}

//! Namespace labs used by `pathtrace demo`, the benchmark and the tests.
//!
//! Also owns the small test topologies ([`topo`]), the one helper that runs code
//! inside a network namespace ([`in_netns`]) and the one root gate for tests
//! ([`require_root`]).
//!
//! A lab reproduces the incident: a LAN (`{p}-lan`, bridge `br0`, 192.0.2.0/24) with a
//! client (`{p}-client`, 192.0.2.9), another machine (`{p}-other`, 192.0.2.134) and a
//! Docker host (`{p}-dock`, 192.0.2.25) running a real dockerd (or an emulation of what
//! it sets up) with container `web` (198.51.100.2:80) published on port 8092. The
//! client can be blocked on the Docker host the way the incident's host was.
//!
//! ```no_run
//! # fn main() -> Result<(), lab::LabError> {
//! use std::time::Duration;
//! use lab::{Block, Lab, LabConfig, ProbeOutcome};
//!
//! let mut lab = Lab::start(LabConfig { block: Block::Drop, ..LabConfig::with_prefix("pt") })?;
//! let a = lab.addrs().clone();
//! let outcome = lab.tcp_connect(&lab.names().client, a.host.into(), a.published_port,
//!                               Duration::from_secs(2));
//! assert_eq!(outcome, ProbeOutcome::TimedOut);
//! lab.teardown()?;
//! # Ok(()) }
//! ```
//!
//! All traffic stays between the lab's namespaces; nothing is routed off the machine.
//! Teardown (also on drop and on panic) stops only the processes the lab started, by
//! pid, and leaves the host as it was; `sweep` removes what a killed run left behind.

mod access;
mod cancel;
mod cleanup;
mod cmd;
mod config;
mod docker;
mod emulated;
mod error;
mod firewall;
mod gate;
mod host;
mod instance;
mod mounts;
mod netns;
mod probe;
mod procs;
pub mod topo;
mod web;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cleanup;

pub use access::LabInfo;
pub use cancel::StopFlag;
pub use cleanup::{leftovers, sweep, SweepReport};
pub use config::{
    httpd_command, state_dir, Block, ContainerInfo, DockerMode, Firewall, LabAddrs, LabConfig,
    LabNames, BRIDGE_CIDR, BRIDGE_IP, CLIENT_IP, CONTAINER_IP, CONTAINER_NAME, CONTAINER_PORT,
    HOST_IP, IMAGE, LAN_CIDR, OTHER_IP, PUBLISHED_PORT, STATE_ROOT,
};
pub use error::LabError;
pub use gate::{is_root, require_root};
pub use instance::Lab;
pub use mounts::cgroup2_root;
pub use netns::{delete as delete_netns, enter_netns, in_netns, ns_path};
pub use probe::{http_get, tcp_connect, ProbeOutcome};

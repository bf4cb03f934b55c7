//! Human names: network namespaces (`host`, `ip netns` names, Docker
//! containers, processes), veths named after the container at their other
//! end, and published ports.
mod docker;
mod engines;
mod netns;
mod view;

pub use docker::{Container, DockerApi, Published};
pub use engines::api_sockets;
pub use netns::{in_netns, NetnsNames};
pub use view::View;

use std::collections::HashMap;

/// Everything known about the containers on this host, by namespace inode.
#[derive(Clone, Debug, Default)]
pub struct Containers {
    pub by_netns: HashMap<u32, Container>,
}

impl Containers {
    /// Asks each engine API that answers (Docker or Podman) which containers
    /// run, and where their namespaces are.
    pub fn discover(sockets: &[std::path::PathBuf]) -> Self {
        let mut out = Self::default();
        for socket in sockets {
            match DockerApi::new(socket).containers() {
                Ok(list) => {
                    for c in list {
                        if let Some(ino) = c.netns {
                            out.by_netns.entry(ino).or_insert(c);
                        }
                    }
                }
                Err(e) => log::debug!("no container names from {}: {e}", socket.display()),
            }
        }
        out
    }

    /// The container whose address is `ip`.
    pub fn with_ip(&self, ip: &str) -> Option<&Container> {
        self.by_netns.values().find(|c| c.ip.as_deref() == Some(ip))
    }

    /// The container that publishes `port` (host side), if any.
    pub fn publishing(&self, port: u16, proto: &str) -> Option<(&Container, &Published)> {
        self.by_netns.values().find_map(|c| {
            c.ports
                .iter()
                .find(|p| p.public == port && p.proto == proto)
                .map(|p| (c, p))
        })
    }
}

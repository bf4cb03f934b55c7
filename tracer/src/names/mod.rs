//! Human names: network namespaces (`host`, `ip netns` names, Docker
//! containers, processes), veths named after the container at their other
//! end, and published ports.
mod docker;
mod engines;
mod interfaces;
mod lookup;
mod netns;
mod view;

pub use docker::{Container, DockerApi, Published};
pub use engines::{api_sockets, engine_processes, EngineSocket};
pub use interfaces::Interfaces;
pub use lookup::{EngineLookup, EngineSources};
pub use netns::{guest_of_cgroup, netns_opener, own_netns, NetnsKind, NetnsNames};
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
        Self::discover_with(sockets, &[])
    }

    /// [`Containers::discover`] on the engines found through their
    /// processes (see [`engine_processes`]), which say where they run, and
    /// on `sockets` (pathtrace's own); each engine once, however many paths
    /// lead to its socket (a slow engine is slow for every question).
    pub fn discover_with(sockets: &[std::path::PathBuf], engines: &[EngineSocket]) -> Self {
        use std::os::unix::fs::MetadataExt;
        let found = engines.iter().map(|e| {
            (
                DockerApi::new(&e.path).with_proc_root(&e.proc_root),
                Some(e.netns),
            )
        });
        let own = sockets.iter().map(|s| (DockerApi::new(s), None));
        let mut asked = std::collections::HashSet::new();
        let mut out = Self::default();
        for (api, host_netns) in found.chain(own) {
            let socket = api.socket().to_path_buf();
            if let Ok(m) = std::fs::metadata(&socket) {
                if !asked.insert((m.dev(), m.ino())) {
                    continue;
                }
            }
            match api.containers() {
                Ok(list) => {
                    for mut c in list {
                        c.host_netns = host_netns;
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

    /// Adds what `newer` knows; its answers replace older ones.
    pub fn merge(&mut self, newer: Containers) {
        self.by_netns.extend(newer.by_netns);
    }

    /// The containers that publish `port` (host side): one per Docker
    /// host at most, but several hosts may publish the same port.
    pub fn publishing<'a>(
        &'a self,
        port: u16,
        proto: &'a str,
    ) -> impl Iterator<Item = (&'a Container, &'a Published)> + 'a {
        self.by_netns.values().filter_map(move |c| {
            c.ports
                .iter()
                .find(|p| p.public == port && p.proto == proto)
                .map(|p| (c, p))
        })
    }
}

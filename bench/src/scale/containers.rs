//! The containers step: a real dockerd in the lab's Docker host namespace
//! (lab prefix `ptsdock`), running the lab's `web` container (published on
//! 8092) and more busybox httpd containers, each published on a port of its
//! own. The host grows from one step's size to the next by running more
//! containers in the same dockerd. The traced flow is a TCP connection from
//! the lab's `other` host (192.0.2.134) to web's published port, and the
//! awaited rule-attributed hop is in the Docker host namespace (Docker's
//! DNAT and FORWARD chains).
use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lab::{Block, DockerMode, Lab, LabConfig};

use super::probe::{Probe, Traffic};

/// The lab's prefix: namespaces `ptsdock-lan`, `ptsdock-dock`, …
const LAB_PREFIX: &str = "ptsdock";
/// Every namespace of the lab starts with this.
pub const NETNS_PREFIX: &str = "ptsdock-";
/// Container `i`'s published port (`web`, container 0, has 8092).
const FIRST_PORT: u16 = 19_400;

/// A real dockerd and the containers it runs.
pub struct Containers {
    lab: Lab,
    running: usize,
}

impl Containers {
    /// Starts the lab with a real dockerd and its `web` container.
    pub fn start() -> Result<Containers> {
        let lab = Lab::start(LabConfig {
            block: Block::None,
            docker: DockerMode::Real,
            ready_timeout: Duration::from_secs(90),
            ..LabConfig::with_prefix(LAB_PREFIX)
        })
        .context("starting a lab with a real dockerd")?;
        Ok(Containers { lab, running: 1 })
    }

    /// Runs more containers until `n` run (`web` included); the time it took.
    pub fn grow_to(&mut self, n: usize) -> Result<Duration> {
        let t = Instant::now();
        for i in self.running..n {
            let name = format!("s{i}");
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| FIRST_PORT.checked_add(i))
                .context("too many containers for the port range")?;
            let inner = lab::CONTAINER_PORT.to_string();
            let publish = format!("{port}:{inner}");
            let mut args = vec!["run", "-d", "--name", &name, "-p", &publish, lab::IMAGE];
            args.extend(lab::httpd_command(&inner));
            self.lab
                .docker(&args)
                .with_context(|| format!("docker run {name}"))?;
            self.running = i + 1;
        }
        Ok(t.elapsed())
    }

    /// What a run follows: TCP from `other` to web's published port.
    pub fn probe(&self) -> Probe {
        let a = self.lab.addrs();
        let names = self.lab.names();
        Probe {
            filter: [
                "--src",
                &a.other.to_string(),
                "--proto",
                "tcp",
                "--dport",
                &a.published_port.to_string(),
            ]
            .map(String::from)
            .to_vec(),
            traffic: Traffic::Tcp {
                ns: names.other.clone(),
                to: SocketAddrV4::new(a.host, a.published_port),
            },
            awaited_ns: names.dock.clone(),
        }
    }

    /// Removes the containers, dockerd and the lab's namespaces.
    pub fn teardown(mut self) -> Result<()> {
        self.lab
            .teardown()
            .context("tearing the containers' lab down")
    }
}

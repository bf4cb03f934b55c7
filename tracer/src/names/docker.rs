//! A minimal Docker Engine API client over its unix socket (blocking,
//! bounded in time): container names, namespaces and published ports.
use std::{
    io::{Read, Write},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("connecting to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to Docker: {0}")]
    Io(#[from] std::io::Error),
    #[error("Docker answered {0}")]
    Status(String),
    #[error("Docker's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub public: u16,
    pub private: u16,
    pub proto: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub ip: Option<String>,
    pub netns: Option<u32>,
    pub pid: Option<i64>,
    pub ports: Vec<Published>,
    /// The namespace of the engine that runs it (its Docker host), when
    /// the engine was found through its process.
    pub host_netns: Option<u32>,
}

pub struct DockerApi {
    socket: PathBuf,
    /// Where the pids the engine reports are looked up (`/proc`, or the
    /// engine's own `/proc` when it runs in another pid namespace).
    proc_root: PathBuf,
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..pos])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        rest = &rest[pos + 2..];
        if size == 0 || size > rest.len() {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Splits an HTTP/1.1 response into status line and (de-chunked) body.
pub(crate) fn parse_response(raw: &[u8]) -> Result<Vec<u8>, DockerError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| DockerError::Status("a truncated response".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.lines().next().unwrap_or_default().to_owned();
    if !status.contains(" 200 ") {
        return Err(DockerError::Status(status));
    }
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    })
}

fn netns_of_pid(proc_root: &Path, pid: i64) -> Option<u32> {
    std::fs::metadata(proc_root.join(pid.to_string()).join("ns/net"))
        .ok()
        .map(|m| m.ino() as u32)
}

impl DockerApi {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Looks the engine's container pids up under `proc_root`.
    pub fn with_proc_root(mut self, proc_root: &Path) -> Self {
        self.proc_root = proc_root.to_owned();
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn get(&self, path: &str) -> Result<Value, DockerError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|source| DockerError::Connect {
            path: self.socket.display().to_string(),
            source,
        })?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.take(16 << 20).read_to_end(&mut raw)?;
        Ok(serde_json::from_slice(&parse_response(&raw)?)?)
    }

    /// Running containers, with their namespace inode and published ports.
    pub fn containers(&self) -> Result<Vec<Container>, DockerError> {
        let list = self.get("/containers/json")?;
        let mut out = Vec::new();
        for c in list.as_array().into_iter().flatten() {
            let id = c["Id"].as_str().unwrap_or_default().to_owned();
            let name = c["Names"][0]
                .as_str()
                .unwrap_or(&id)
                .trim_start_matches('/')
                .to_owned();
            let ports = c["Ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some(Published {
                        public: u16::try_from(p["PublicPort"].as_u64()?).ok()?,
                        private: u16::try_from(p["PrivatePort"].as_u64()?).ok()?,
                        proto: p["Type"].as_str().unwrap_or("tcp").to_owned(),
                    })
                })
                .collect();
            let inspect = self.get(&format!("/containers/{id}/json")).ok();
            let pid = inspect
                .as_ref()
                .and_then(|i| i["State"]["Pid"].as_i64())
                .filter(|&p| p > 0);
            let netns = pid.and_then(|p| netns_of_pid(&self.proc_root, p));
            let ip = inspect
                .as_ref()
                .and_then(|i| {
                    i["NetworkSettings"]["Networks"]
                        .as_object()
                        .and_then(|n| n.values().next().cloned())
                })
                .and_then(|n| n["IPAddress"].as_str().map(str::to_owned))
                .filter(|ip| !ip.is_empty());
            out.push(Container {
                id,
                name,
                ip,
                netns,
                pid,
                ports,
                host_netns: None,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[1]";
        assert_eq!(parse_response(plain).expect("ok"), b"[1]");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).expect("ok"), b"[1,2]");
        let err = b"HTTP/1.1 404 Not Found\r\n\r\n{}";
        assert!(matches!(parse_response(err), Err(DockerError::Status(s)) if s.contains("404")));
        assert!(parse_response(b"garbage").is_err());
    }
}

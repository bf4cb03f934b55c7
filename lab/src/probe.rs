//! TCP probes from inside a namespace, in Rust (a thread that `setns`es, then connects).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

use super::netns::in_netns;

/// Extra time allowed beyond the connect timeout before a probe is declared hung.
const SLACK: Duration = Duration::from_secs(2);

/// The result of a TCP connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// The three-way handshake completed.
    Connected,
    /// A RST came back (ECONNREFUSED): REJECT with tcp-reset, or nothing listening.
    Refused,
    /// No answer within the timeout: the SYN (or the SYN-ACK) was dropped.
    TimedOut,
    /// Anything else (unreachable, namespace missing, ...).
    Other(String),
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeOutcome::Connected => f.write_str("connected"),
            ProbeOutcome::Refused => f.write_str("refused"),
            ProbeOutcome::TimedOut => f.write_str("timed out"),
            ProbeOutcome::Other(s) => write!(f, "error: {s}"),
        }
    }
}

fn classify(err: &std::io::Error) -> ProbeOutcome {
    match err.kind() {
        ErrorKind::ConnectionRefused => ProbeOutcome::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ProbeOutcome::TimedOut,
        _ => ProbeOutcome::Other(err.to_string()),
    }
}

/// Connects to `addr:port` from namespace `ns` (a name under /run/netns or a path),
/// giving up after `timeout`. Never takes much longer than `timeout`.
pub fn tcp_connect(ns: &str, addr: IpAddr, port: u16, timeout: Duration) -> ProbeOutcome {
    let target = SocketAddr::new(addr, port);
    let run = move || match TcpStream::connect_timeout(&target, timeout) {
        Ok(_stream) => ProbeOutcome::Connected,
        Err(e) => classify(&e),
    };
    match in_netns(ns, timeout + SLACK, run) {
        Ok(outcome) => outcome,
        Err(Some(e)) => ProbeOutcome::Other(e.to_string()),
        Err(None) => ProbeOutcome::Other(format!("probe from {ns} hung")),
    }
}

/// `GET /` over HTTP/1.0 from namespace `ns`; returns the status line and body on
/// success, the connect outcome otherwise.
pub fn http_get(
    ns: &str,
    addr: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<String, ProbeOutcome> {
    let target = SocketAddr::new(addr, port);
    let run = move || -> Result<String, ProbeOutcome> {
        let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| classify(&e))?;
        let io = |e: std::io::Error| ProbeOutcome::Other(format!("after connecting: {e}"));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
            .map_err(io)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).map_err(io)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    match in_netns(ns, timeout * 2 + SLACK, run) {
        Ok(result) => result,
        Err(Some(e)) => Err(ProbeOutcome::Other(e.to_string())),
        Err(None) => Err(ProbeOutcome::Other(format!("probe from {ns} hung"))),
    }
}

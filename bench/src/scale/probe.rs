//! One run of a step: pathtrace starts following the step's traced flow,
//! a sender in the client's namespace starts it (a UDP datagram or a TCP
//! connection every 20 ms), and the run records the time to pathtrace's
//! ready line, the time from the first packet sent to the first
//! rule-attributed hop in the awaited namespace on its JSON output, and
//! then its peak RSS and the kernel memory it holds.
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{
    bpf,
    peers::{PtRun, Tools},
};

/// How long a run waits for its first rule-attributed hop.
pub const HOP_LIMIT: Duration = Duration::from_secs(15);
/// One packet (or connection) this often.
const EVERY: Duration = Duration::from_millis(20);

/// The packets a step's runs send, from namespace `ns`.
#[derive(Clone, Debug)]
pub enum Traffic {
    /// Datagrams from `from` (an address of the client) to `to`.
    Udp {
        ns: String,
        from: Ipv4Addr,
        to: SocketAddrV4,
    },
    /// A TCP connection to `to`, closed once made.
    Tcp { ns: String, to: SocketAddrV4 },
}

/// What one step's runs follow, send and wait for.
#[derive(Clone, Debug)]
pub struct Probe {
    /// pathtrace's filter (the runs add `--json`).
    pub filter: Vec<String>,
    pub traffic: Traffic,
    /// The namespace whose first `nf_rule` hop ends the wait.
    pub awaited_ns: String,
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub ready_ms: f64,
    pub first_rule_hop_ms: f64,
    pub peak_rss_kib: f64,
    /// `memlock` of the BPF maps pathtrace holds (what `bpftool` shows as
    /// `bytes_memlock`), KiB.
    pub maps_kib: f64,
    /// `memlock` of its BPF programs, KiB.
    pub progs_kib: f64,
}

/// An `nf_rule` hop record in namespace `netns`, in one JSON line.
pub fn is_rule_hop(line: &str, netns: u64) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    v.get("type").and_then(|t| t.as_str()) == Some("hop")
        && v.get("kind").and_then(|t| t.as_str()) == Some("nf_rule")
        && v.get("netns").and_then(serde_json::Value::as_u64) == Some(netns)
}

/// Sends `traffic` every 20 ms from a thread of its own in the client's
/// namespace, until `stop` is set or `HOP_LIMIT` has passed; the instant
/// of the first packet arrives on the returned channel.
fn spawn_sender(
    traffic: Traffic,
    stop: Arc<AtomicBool>,
) -> Result<(JoinHandle<Result<()>>, mpsc::Receiver<Instant>)> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("scale-sender".into())
        .spawn(move || -> Result<()> {
            let ns = match &traffic {
                Traffic::Udp { ns, .. } | Traffic::Tcp { ns, .. } => ns.clone(),
            };
            lab::enter_netns(&ns).with_context(|| format!("entering {ns}"))?;
            let udp = match &traffic {
                Traffic::Udp { from, .. } => Some(UdpSocket::bind((*from, 0))?),
                Traffic::Tcp { .. } => None,
            };
            let start = Instant::now();
            let mut next = start;
            let mut first = Some(tx);
            while !stop.load(Ordering::SeqCst) && start.elapsed() < HOP_LIMIT {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Instant::now());
                }
                match (&traffic, &udp) {
                    (Traffic::Udp { to, .. }, Some(sock)) => {
                        let _ = sock.send_to(b"ptscale", to);
                    }
                    (Traffic::Tcp { to, .. }, _) => {
                        let _ = TcpStream::connect_timeout(&(*to).into(), EVERY * 10);
                    }
                    _ => bail!("a UDP probe without its socket"),
                }
                next += EVERY;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok(())
        })
        .context("starting the sender")?;
    Ok((handle, rx))
}

/// Waits for the first rule-attributed hop in namespace `netns` on `out`,
/// from the first packet the sender sends; the time it took.
fn first_rule_hop(
    out: &Path,
    netns: u64,
    traffic: &Traffic,
    stop: &Arc<AtomicBool>,
) -> Result<Duration> {
    let (sender, first) = spawn_sender(traffic.clone(), Arc::clone(stop))?;
    let waited = (|| {
        let start = first
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("the sender sent nothing"))?;
        loop {
            let text = std::fs::read_to_string(out).unwrap_or_default();
            if text.lines().any(|l| is_rule_hop(l, netns)) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > HOP_LIMIT {
                bail!("no rule-attributed hop within {HOP_LIMIT:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    })();
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().map_err(|_| anyhow!("the sender panicked"))?;
    let hop = waited?;
    sent?;
    Ok(hop)
}

/// The `memlock` of the maps and programs process `pid` holds, KiB.
fn kernel_memory(pid: i32) -> Result<(f64, f64)> {
    let held = bpf::held_by(pid)?;
    let progs: u64 = held.progs.iter().filter_map(|p| p.memlock).sum();
    Ok((held.map_memlock as f64 / 1024.0, progs as f64 / 1024.0))
}

/// One run of a step.
pub fn one_run(tools: &Tools, probe: &Probe, out: &Path) -> Result<Figures> {
    let netns = std::fs::metadata(lab::ns_path(&probe.awaited_ns))
        .with_context(|| format!("namespace {}", probe.awaited_ns))?
        .ino();
    let mut args = probe.filter.clone();
    args.push("--json".into());
    let mut run = PtRun::start(
        tools,
        &args,
        HOP_LIMIT + Duration::from_secs(30),
        out.to_path_buf(),
        None,
    )?;
    let result = (|| {
        let ready = run.ready.context("pathtrace did not start")?;
        let stop = Arc::new(AtomicBool::new(false));
        let hop = first_rule_hop(out, netns, &probe.traffic, &stop)
            .with_context(|| format!("in {}", probe.awaited_ns))?;
        let rss = run.proc.vm_hwm_kib().unwrap_or(0) as f64;
        let (maps_kib, progs_kib) = kernel_memory(run.proc.pid)?;
        Ok(Figures {
            ready_ms: ready.as_secs_f64() * 1e3,
            first_rule_hop_ms: hop.as_secs_f64() * 1e3,
            peak_rss_kib: rss,
            maps_kib,
            progs_kib,
        })
    })();
    let stopped = run.finish();
    let r = result.map_err(|e: anyhow::Error| {
        let said = run.proc.stderr_text();
        let last = said.lines().last().unwrap_or("").trim().to_string();
        anyhow!("{e:#} (pathtrace's last line: {last})")
    })?;
    stopped?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rule_hop_of_the_server() {
        let hop = r#"{"type":"hop","kind":"nf_rule","netns":4026532999,"chain":"INPUT"}"#;
        assert!(is_rule_hop(hop, 4_026_532_999));
        assert!(!is_rule_hop(hop, 1));
        assert!(!is_rule_hop(
            r#"{"type":"hop","kind":"rx","netns":4026532999}"#,
            4_026_532_999
        ));
    }
}

//! Starting and stopping what is measured: pathtrace, the bpftrace peer and
//! nftables' own tracing.
use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::Ipv4Addr,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lab::Lab;
use serde::Serialize;

use crate::children::{self, Proc};

/// How long a tracer may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long a tracer may take to exit after SIGINT (it drains and prints first).
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// The programs under test.
#[derive(Clone, Debug)]
pub struct Tools {
    pub pathtrace: PathBuf,
    pub bpftrace: Option<Bpftrace>,
    /// The floor's eBPF object (`floor.rs`).
    pub floor_obj: PathBuf,
    /// Where tracers write their output (removed at the end).
    pub work: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Bpftrace {
    pub bin: PathBuf,
    pub version: String,
    /// tracefs is not mounted here: run bpftrace in a private mount namespace
    /// with tracefs mounted (its `tracepoint:` probes read formats from it).
    pub private_tracefs: bool,
}

impl Bpftrace {
    /// Finds bpftrace and checks that it runs.
    pub fn detect() -> Result<Bpftrace> {
        let bin = find_in_path("bpftrace").context("bpftrace is not installed")?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--version");
        let version = children::output(cmd, Duration::from_secs(10))?
            .trim()
            .to_string();
        let private_tracefs = !Path::new("/sys/kernel/tracing/events").exists()
            && !Path::new("/sys/kernel/debug/tracing/events").exists();
        if private_tracefs && find_in_path("unshare").is_none() {
            anyhow::bail!("tracefs is not mounted and unshare(1) is missing");
        }
        Ok(Bpftrace {
            bin,
            version,
            private_tracefs,
        })
    }
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A pathtrace process started for a measurement.
pub struct PtRun {
    pub proc: Proc,
    pub out: PathBuf,
    /// From spawn to the `pathtrace: ready` line.
    pub ready: Option<Duration>,
    /// How it ended, once `finish` has run.
    pub stop: Option<StopInfo>,
    /// No stats line is expected on stderr: with `--json` the stats go to
    /// the JSON output, and `drops --quiet` counts for `--metrics` alone.
    no_stats_line: bool,
}

/// Which signal ended a pathtrace run, and how long after the SIGINT.
#[derive(Clone, Debug, Serialize)]
pub struct StopInfo {
    pub signal: String,
    pub ms: f64,
}

/// How long pathtrace gets to exit after SIGINT before SIGTERM follows.
const SIGINT_GRACE: Duration = Duration::from_secs(5);

/// pathtrace's exit line: `N packets, N events, N lost (tier T)`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PtStats {
    pub packets: u64,
    pub events: u64,
    pub lost: u64,
    pub tier: String,
}

pub fn parse_stats(stderr: &str) -> Option<PtStats> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" packets, ") && l.contains(" events, ") && l.contains(" lost"))?;
    let line = line.trim_start_matches("pathtrace: ");
    let num_before = |word: &str| -> Option<u64> {
        let end = line.find(word)?;
        line[..end]
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let tier = line
        .split("(tier ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or("")
        .to_string();
    Some(PtStats {
        packets: num_before(" packets")?,
        events: num_before(" events")?,
        lost: num_before(" lost")?,
        tier,
    })
}

impl PtRun {
    /// Starts `pathtrace ARGS --duration BOUND` (in namespace `netns` if given)
    /// with stdout to `out`, and waits for its ready line. If it exits first
    /// (a refused tier), `ready` is None and the process has ended.
    pub fn start(
        tools: &Tools,
        args: &[String],
        bound: Duration,
        out: PathBuf,
        netns: Option<&str>,
    ) -> Result<PtRun> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(&tools.pathtrace);
                c
            }
            None => Command::new(&tools.pathtrace),
        };
        cmd.args(args)
            .arg("--duration")
            .arg(format!("{:.0}", bound.as_secs_f64().ceil()))
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        let file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut proc = Proc::spawn(cmd, "pathtrace", Stdio::from(file))?;
        let ready = proc
            .wait_line(|l| l.starts_with("pathtrace: ready"), READY_LIMIT)
            .map(|t| t - proc.started);
        if ready.is_none() {
            proc.stop(libc::SIGINT, Duration::from_secs(5))?;
        }
        Ok(PtRun {
            proc,
            out,
            ready,
            stop: None,
            no_stats_line: args.iter().any(|a| a == "--json" || a == "--quiet"),
        })
    }

    /// SIGINT (what Ctrl-C sends), wait for the exit and its stats line. If
    /// SIGINT has not ended it within `SIGINT_GRACE`, SIGTERM (then SIGKILL).
    pub fn finish(&mut self) -> Result<Option<PtStats>> {
        let t = Instant::now();
        self.proc.signal(libc::SIGINT);
        let status = if self.proc.wait_exit(SIGINT_GRACE) {
            let st = self.proc.stop(libc::SIGINT, EXIT_GRACE)?;
            self.stop = Some(StopInfo {
                signal: if st.signal() == Some(libc::SIGINT) {
                    "killed by SIGINT (no handler installed yet: no stats line)".into()
                } else {
                    "SIGINT".into()
                },
                ms: t.elapsed().as_secs_f64() * 1000.0,
            });
            st
        } else {
            log::warn!(
                "pathtrace (pid {}) still running {:.0}s after SIGINT: SIGTERM",
                self.proc.pid,
                SIGINT_GRACE.as_secs_f64()
            );
            let term = Instant::now();
            let st = self.proc.stop(libc::SIGTERM, EXIT_GRACE)?;
            self.stop = Some(StopInfo {
                signal: if st.signal() == Some(libc::SIGKILL) {
                    "SIGINT and SIGTERM ignored: SIGKILL".into()
                } else {
                    format!(
                        "SIGINT ignored; exited {:.0} ms after SIGTERM",
                        term.elapsed().as_secs_f64() * 1000.0
                    )
                },
                ms: t.elapsed().as_secs_f64() * 1000.0,
            });
            st
        };
        let text = self.proc.stderr_text();
        let stats = parse_stats(&text);
        if stats.is_none() && !self.no_stats_line {
            log::warn!("pathtrace ({status}) printed no stats line: {text}");
        }
        Ok(stats)
    }
}

/// A tracepoint pathtrace's programs are attached to, and the bpftrace probe
/// on the same tracepoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttachPoint {
    /// The kernel's name for it (`bpftool link show`: `tp_name`).
    pub name: String,
    /// The bpftrace probe, `tracepoint:CATEGORY:NAME`.
    pub probe: String,
    /// Where the IP header starts there: `skb->data` on receive (the link
    /// layer is already pulled), else `skb->head + skb->network_header`;
    /// pathtrace reads it from the same place.
    pub l3_at_data: bool,
}

impl AttachPoint {
    /// The bpftrace probe on the tracepoint pathtrace calls `name`; None for
    /// one the peer can't mirror.
    pub fn mirror(name: &str) -> Option<AttachPoint> {
        let (category, l3_at_data) = match name {
            "netif_receive_skb" => ("net", true),
            "net_dev_queue" | "net_dev_start_xmit" => ("net", false),
            "kfree_skb" | "consume_skb" => ("skb", false),
            _ => return None,
        };
        Some(AttachPoint {
            name: name.to_string(),
            probe: format!("tracepoint:{category}:{name}"),
            l3_at_data,
        })
    }

    /// The program name the kernel keeps for bpftrace's program (15 bytes).
    pub fn prog_name(&self) -> String {
        self.name.chars().take(15).collect()
    }

    /// What pathtrace's tracepoint tier attaches to on kernels with drop
    /// reasons, for when its attach list can't be read.
    pub fn tracepoint_tier() -> Vec<AttachPoint> {
        [
            "netif_receive_skb",
            "net_dev_queue",
            "kfree_skb",
            "consume_skb",
        ]
        .into_iter()
        .filter_map(AttachPoint::mirror)
        .collect()
    }
}

/// The bpftrace peer: a probe on each tracepoint pathtrace attaches to
/// (`attach`), with the same address test pathtrace's `--src ADDR` filter
/// makes (source, or for replies destination, read from the `sk_buff` where
/// pathtrace reads it), printing one line per matching event.
pub fn bpftrace_script(addr: Ipv4Addr, bound: Duration, attach: &[AttachPoint]) -> String {
    // The address as the kernel's u32 load of the header field sees it (little-endian).
    let a = u32::from_le_bytes(addr.octets());
    let secs = bound.as_secs().max(1);
    let mut s = format!(
        "// pathtrace-bench's bpftrace peer: src or dst {addr}.\nBEGIN {{ printf(\"bpftrace: ready\\n\"); }}\n"
    );
    for at_data in [true, false] {
        let probes: Vec<&str> = attach
            .iter()
            .filter(|p| p.l3_at_data == at_data)
            .map(|p| p.probe.as_str())
            .collect();
        if probes.is_empty() {
            continue;
        }
        let (guard, ip) = if at_data {
            ("", "$skb->data")
        } else {
            (
                " && $skb->network_header != 0xffff",
                "$skb->head + $skb->network_header",
            )
        };
        s += &format!(
            r#"{probes}
{{
  $skb = (struct sk_buff *)args->skbaddr;
  if ($skb->protocol == 0x0008{guard}) {{
    $ip = (struct iphdr *)({ip});
    if ($ip->saddr == {a} || $ip->daddr == {a}) {{
      $l4 = (struct udphdr *)((uint8 *)$ip + ((*(uint8 *)$ip) & 0x0f) * 4);
      printf("%s %llu %s %u %u %u %u %u %u\n", probe, nsecs, $skb->dev->name,
             $skb->dev->nd_net.net->ns.inum, $ip->saddr, $ip->daddr,
             $l4->source, $l4->dest, $skb->len);
    }}
  }}
}}
"#,
            probes = probes.join(", ")
        );
    }
    s += &format!("interval:s:{secs} {{ exit(); }}\n");
    s
}

/// What has appeared in a bpftrace output file.
#[derive(Clone, Copy, Debug, Default)]
pub struct BtCounts {
    /// Event lines (one per traced hop).
    pub events: u64,
    /// Sum of its `Lost N events` lines.
    pub lost: u64,
    pub attaching: bool,
    pub ready: bool,
}

/// Reads a growing file from where it left off.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    pub total: BtCounts,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
            total: BtCounts::default(),
        }
    }

    /// Counts what the complete lines written since the last call hold.
    pub fn read(&mut self) -> Result<BtCounts> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BtCounts::default()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.path.display())),
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut new = BtCounts::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            let mut data = std::mem::take(&mut self.partial);
            data.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(pos) = data[start..].iter().position(|&b| b == b'\n') {
                count_line(&data[start..start + pos], &mut new);
                start += pos + 1;
            }
            self.partial = data[start..].to_vec();
        }
        self.total.events += new.events;
        self.total.lost += new.lost;
        self.total.attaching |= new.attaching;
        self.total.ready |= new.ready;
        Ok(new)
    }
}

fn count_line(line: &[u8], c: &mut BtCounts) {
    if line.starts_with(b"tracepoint:") {
        c.events += 1;
    } else if line.starts_with(b"Lost ") {
        let n = std::str::from_utf8(&line[5..])
            .ok()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u64>().ok());
        c.lost += n.unwrap_or(0);
    } else if line.starts_with(b"Attaching ") {
        c.attaching = true;
    } else if line.starts_with(b"bpftrace: ready") {
        c.ready = true;
    }
}

/// A bpftrace process started for a measurement.
pub struct BtRun {
    pub proc: Proc,
    pub tail: Tail,
    pub out: PathBuf,
    /// From spawn to its `Attaching N probes...` line.
    pub attaching: Option<Duration>,
    /// From spawn to its BEGIN probe's line (all probes attached).
    pub ready: Option<Duration>,
}

impl BtRun {
    pub fn start(bt: &Bpftrace, script: &Path, out: PathBuf) -> Result<BtRun> {
        let mut cmd = if bt.private_tracefs {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg("mount -t tracefs nodev /sys/kernel/tracing && exec \"$0\" \"$@\"")
                .arg(&bt.bin);
            c
        } else {
            Command::new(&bt.bin)
        };
        // stdout to the file, not `-o FILE`: bpftrace 0.17 buffers `-o` output
        // until exit whatever `-B` says, but flushes stdout line by line.
        cmd.arg(script);
        let file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut proc = Proc::spawn(cmd, "bpftrace", Stdio::from(file))?;
        let mut tail = Tail::new(out.clone());
        let (mut attaching, mut ready) = (None, None);
        let deadline = Instant::now() + READY_LIMIT;
        while Instant::now() < deadline && proc.exited().is_none() {
            tail.read()?;
            let now = Instant::now();
            if tail.total.attaching && attaching.is_none() {
                attaching = Some(now - proc.started);
            }
            if tail.total.ready {
                ready = Some(now - proc.started);
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        if ready.is_none() {
            log::warn!("bpftrace did not start: {}", proc.stderr_text());
            proc.stop(libc::SIGINT, Duration::from_secs(5))?;
        }
        Ok(BtRun {
            proc,
            tail,
            out,
            attaching,
            ready,
        })
    }

    /// SIGINT, wait for the exit, count the rest of its output.
    pub fn finish(&mut self) -> Result<BtCounts> {
        self.proc.stop(libc::SIGINT, EXIT_GRACE)?;
        self.tail.read()?;
        Ok(self.tail.total)
    }
}

/// nftables tracing of the stream on the Docker host: a table whose chain
/// sets `meta nftrace set 1` for packets from the source, and
/// `nft monitor trace > /dev/null` running there.
pub struct NftTrace {
    monitor: Proc,
    ns: String,
}

const NFT_TABLE: &str = "ptbench_trace";

impl NftTrace {
    pub fn start(lab: &Lab, src: Ipv4Addr, bound: Duration, work: &Path) -> Result<NftTrace> {
        let ns = lab.names().dock.clone();
        let rules = format!(
            "table inet {NFT_TABLE} {{\n  chain pre {{\n    type filter hook prerouting priority -350; policy accept;\n    ip saddr {src} meta nftrace set 1\n  }}\n}}\n"
        );
        let file = work.join("nftrace.nft");
        std::fs::write(&file, rules).with_context(|| format!("writing {}", file.display()))?;
        let path = file.display().to_string();
        lab.exec(&ns, &["nft", "-f", &path])
            .context("adding the nftrace table")?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "timeout", "--signal=TERM"])
            .arg(format!("{}", bound.as_secs().max(1)))
            .args(["nft", "monitor", "trace"]);
        let monitor = match Proc::spawn(cmd, "nft monitor trace", Stdio::null()) {
            Ok(p) => p,
            Err(e) => {
                let _ = lab.exec(&ns, &["nft", "delete", "table", "inet", NFT_TABLE]);
                return Err(e);
            }
        };
        // `nft monitor` subscribes at once; give it a moment.
        thread::sleep(Duration::from_millis(200));
        Ok(NftTrace { monitor, ns })
    }

    pub fn finish(mut self, lab: &Lab) -> Result<()> {
        self.monitor.stop(libc::SIGTERM, Duration::from_secs(5))?;
        lab.exec(&self.ns, &["nft", "delete", "table", "inet", NFT_TABLE])
            .context("deleting the nftrace table")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stats_line() {
        let s = parse_stats(
            "pathtrace: ready, x\npathtrace: 12 packets, 96 events, 3 lost (tier tracepoint)",
        )
        .expect("stats");
        assert_eq!((s.packets, s.events, s.lost), (12, 96, 3));
        assert_eq!(s.tier, "tracepoint");
        let s = parse_stats("pathtrace: 1 packets, 2 events, 0 lost (tier kprobe), 5 evicted from the full tracking map")
            .expect("stats");
        assert_eq!(
            (s.packets, s.events, s.lost, s.tier.as_str()),
            (1, 2, 0, "kprobe")
        );
    }

    #[test]
    fn counts_bpftrace_lines() {
        let mut c = BtCounts::default();
        for l in [
            "Attaching 6 probes...",
            "bpftrace: ready",
            "tracepoint:net:netif_receive_skb 1 eth0 1 2 3 4 5 6",
            "Lost 17 events",
        ] {
            count_line(l.as_bytes(), &mut c);
        }
        assert_eq!(
            (c.events, c.lost, c.attaching, c.ready),
            (1, 17, true, true)
        );
    }

    #[test]
    fn script_compares_the_loaded_address() {
        let s = bpftrace_script(
            Ipv4Addr::new(192, 0, 2, 134),
            Duration::from_secs(60),
            &AttachPoint::tracepoint_tier(),
        );
        assert!(s.contains(&format!("{}", 0x8602_00c0u32)));
        for p in [
            "tracepoint:net:netif_receive_skb",
            "tracepoint:net:net_dev_queue",
            "tracepoint:skb:kfree_skb",
            "tracepoint:skb:consume_skb",
        ] {
            assert_eq!(s.matches(p).count(), 1, "{p} once in:\n{s}");
        }
        assert!(!s.contains("netif_rx"));
    }
}

//! pcap-ng output (`--pcap FILE|-`): one interface per (namespace, device)
//! a packet was seen on, one Enhanced Packet Block per hop that carries
//! packet bytes, and what pathtrace knows about that hop in its comment.
//!
//! The framing is written here rather than with a crate: `pcap-file`'s last
//! release (2.0.0) writes Enhanced Packet Block timestamps without regard to
//! the interface's `if_tsresol` (fixed only in a 3.0 pre-release), and three
//! block kinds with a few options each are a page of code, checked against
//! the spec by the unit tests and against `tshark`/`capinfos` by
//! tests/pcap.rs.
mod format;

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

use tracer_common::SNAP_LEN;

use crate::{
    events::{Hop, HopKind},
    names::View,
    ruletrace::deciding_rule,
    track::Packet,
};
use format::{Direction, PacketRecord};

/// `--pcap -`: standard output (then text and JSON go to standard error).
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Why `--pcap PATH` can't be written.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--pcap needs a file name, or - for standard output")]
    NoName,
    #[error("--pcap {}: is a directory", .0.display())]
    IsDirectory(PathBuf),
    #[error("--pcap {}: no directory {}", .path.display(), .dir.display())]
    NoDirectory { path: PathBuf, dir: PathBuf },
}

/// Whether `--pcap PATH` can be written, before anything starts: `-`, or
/// a file (not a directory) in a directory that exists.
pub fn check_target(path: &Path) -> Result<(), TargetError> {
    if is_stdout(path) {
        return Ok(());
    }
    if path.as_os_str().is_empty() {
        return Err(TargetError::NoName);
    }
    if path.is_dir() {
        return Err(TargetError::IsDirectory(path.to_owned()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(TargetError::NoDirectory {
            path: path.to_owned(),
            dir: dir.to_owned(),
        });
    }
    Ok(())
}

/// Interface names (`netns/device`) seen so far, at most this many; later
/// ones share the last.
const MAX_INTERFACES: usize = 4096;

/// Writes a pcap-ng stream as packets settle.
pub struct PcapWriter<W: Write> {
    out: W,
    interfaces: HashMap<String, u32>,
    /// Wall clock minus the kernel's monotonic clock, in ns.
    wall_offset_ns: i128,
}

#[derive(Debug, thiserror::Error)]
#[error("--pcap {}: {source}", path.display())]
pub struct OpenError {
    path: PathBuf,
    source: std::io::Error,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl PcapWriter<Box<dyn Write + Send>> {
    /// Creates `path` (or takes standard output for `-`) and writes the
    /// section header.
    pub fn create(path: &Path) -> Result<Self, OpenError> {
        let err = |source| OpenError {
            path: path.to_path_buf(),
            source,
        };
        let out: Box<dyn Write + Send> = if is_stdout(path) {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(err)?,
            ))
        };
        Self::new(out).map_err(err)
    }
}

impl<W: Write> PcapWriter<W> {
    /// Starts the stream with its section header.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        let app = format!("pathtrace {}", env!("CARGO_PKG_VERSION"));
        out.write_all(&format::section_header(&app))?;
        out.flush()?;
        Ok(Self {
            out,
            interfaces: HashMap::new(),
            wall_offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        })
    }

    fn interface_id(&mut self, name: String) -> std::io::Result<u32> {
        if let Some(&id) = self.interfaces.get(&name) {
            return Ok(id);
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Ok(MAX_INTERFACES as u32 - 1);
        }
        let id = self.interfaces.len() as u32;
        self.out
            .write_all(&format::interface(&name, SNAP_LEN as u32))?;
        self.interfaces.insert(name, id);
        Ok(id)
    }

    /// Writes the blocks of one settled packet: one per hop with bytes.
    pub fn packet(&mut self, p: &Packet, view: &View) -> std::io::Result<()> {
        let with_bytes: Vec<usize> = (0..p.hops.len())
            .filter(|&i| p.hops[i].bytes.as_ref().is_some_and(|b| !b.data.is_empty()))
            .collect();
        let mut since = 0;
        for (n, &i) in with_bytes.iter().enumerate() {
            let hop = &p.hops[i];
            let Some(bytes) = hop.bytes.as_ref() else {
                continue;
            };
            let ns = view
                .netns_name(hop.netns)
                .unwrap_or_else(|| format!("netns:{}", hop.netns));
            let dev = if hop.ifname.is_empty() {
                "-"
            } else {
                &hop.ifname
            };
            let interface = self.interface_id(format!("{ns}/{dev}"))?;
            let last = n + 1 == with_bytes.len();
            let comment = comment(p, since, i, view, last);
            since = i + 1;
            self.out.write_all(&format::enhanced_packet(&PacketRecord {
                interface,
                ts_ns: (i128::from(hop.t_ns) + self.wall_offset_ns).max(0) as u64,
                data: &bytes.data,
                orig_len: bytes.orig_len,
                direction: match hop.kind {
                    HopKind::Rx => Direction::Inbound,
                    HopKind::Tx => Direction::Outbound,
                    _ => Direction::Unknown,
                },
                comment: &comment,
            }))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `ip INPUT`, `bridge FORWARD`, `INPUT` (family unknown). A drop's hook
/// comes from its stack, without family: that of the deciding rule at that
/// hook, else of the `nf_hook_slow` call at that hook before it.
fn hook_with_family(p: &Packet, hop: &Hop) -> Option<String> {
    let hook = hop.hook?;
    let family = match hop.rule.as_deref() {
        Some(r) => Some(r.family),
        None => hop.hook_family(),
    }
    .or_else(|| {
        deciding_rule(p)
            .filter(|r| hop.kind == HopKind::Drop && r.hook == Some(hook))
            .map(|r| r.family)
    })
    .or_else(|| {
        p.hops
            .iter()
            .filter(|h| hop.kind == HopKind::Drop && h.t_ns <= hop.t_ns && h.hook == Some(hook))
            .find_map(Hop::hook_family)
    });
    Some(match family {
        Some(f) => format!("{f} {}", hook.as_str()),
        None => hook.as_str().to_owned(),
    })
}

/// What pathtrace knows about hop `i` of `p`: its kind, hook and family,
/// the netfilter hooks and their verdicts since the previous block (hops
/// `since..i`), drop reason and location; on the packet's last block, its
/// outcome and the rule that decided it.
fn comment(p: &Packet, since: usize, i: usize, view: &View, last: bool) -> String {
    let hop = &p.hops[i];
    let mut parts = vec![format!("pathtrace packet {}: {}", p.id, hop.kind.as_str())];
    let passed: Vec<String> = p.hops[since..i]
        .iter()
        .filter(|h| h.kind == HopKind::NfHook)
        .filter_map(|h| {
            let hook = hook_with_family(p, h)?;
            Some(match &h.verdict {
                Some(v) => format!("{hook} {v}"),
                None => hook,
            })
        })
        .collect();
    if !passed.is_empty() {
        parts.push(format!("hooks {}", passed.join(", ")));
    }
    if let Some(h) = hook_with_family(p, hop) {
        parts.push(format!("hook {h}"));
    }
    if let Some(v) = &hop.verdict {
        parts.push(format!("verdict {v}"));
    }
    if let Some(r) = view.reason(hop) {
        parts.push(format!("reason {r}"));
    }
    if hop.kind == HopKind::Drop {
        if let Some(l) = view.location(hop) {
            parts.push(format!("at {l}"));
        }
    }
    if last {
        let mut outcome = format!("outcome {}", p.fate.kind.as_str());
        if let Some(h) = p.fate.at.and_then(|at| hook_with_family(p, &p.hops[at])) {
            outcome.push_str(&format!(" at {h}"));
        } else if let Some(h) = p.fate.hook {
            outcome.push_str(&format!(" at {}", h.as_str()));
        }
        parts.push(outcome);
        if let Some(r) = deciding_rule(p) {
            parts.push(format!("decided by {} (verdict {})", r.phrase(), r.verdict));
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::Captured,
        kernel::drop_reason::DropReasons,
        model::{Hook, Verdict},
        names::{Interfaces, NetnsNames},
        track::Fate,
    };

    fn hop(t: u64, kind: HopKind, netns: u32, ifname: &str) -> Hop {
        let mut syn = vec![0x45, 0, 0, 60];
        syn.resize(60, 0);
        Hop {
            bytes: matches!(kind, HopKind::Rx | HopKind::Tx | HopKind::Drop).then(|| {
                Box::new(Captured {
                    orig_len: 60,
                    data: syn,
                })
            }),
            ..Hop::for_test(t, kind, netns, 2, ifname)
        }
    }

    /// (block type, body) of each block in `stream`.
    fn blocks(stream: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let u32_at = |at: usize| u32::from_ne_bytes(stream[at..at + 4].try_into().expect("4"));
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let len = u32_at(at + 4) as usize;
            out.push((u32_at(at), stream[at + 8..at + len - 4].to_vec()));
            at += len;
        }
        assert_eq!(at, stream.len(), "blocks fill the stream exactly");
        out
    }

    fn text(body: &[u8]) -> String {
        String::from_utf8_lossy(body).into_owned()
    }

    #[test]
    fn one_interface_per_namespace_and_device_and_the_outcome_on_the_last_block() {
        let mut netns = NetnsNames::default();
        netns.insert(11, "ptdemo-client");
        netns.insert(22, "ptdemo-dock");
        let view = View {
            reasons: DropReasons::default(),
            syms: None,
            netns,
            interfaces: Interfaces::default(),
        };
        let mut nf = hop(3, HopKind::NfHook, 22, "eth0");
        nf.hook = Some(Hook::Forward);
        nf.nf_family = 2;
        nf.verdict = Some(Verdict::Drop);
        let mut drop = hop(4, HopKind::Drop, 22, "eth0");
        drop.hook = Some(Hook::Forward);
        let hops = vec![
            hop(1, HopKind::Tx, 11, "eth0"),
            hop(2, HopKind::Rx, 22, "eth0"),
            nf,
            drop,
        ];
        let p = Packet {
            id: 1,
            fate: Fate::of(&hops),
            hops,
            rules_late: Vec::new(),
            notes: Vec::new(),
        };
        let mut w = PcapWriter::new(Vec::new()).expect("in memory");
        w.packet(&p, &view).expect("in memory");
        w.packet(&p, &view).expect("in memory");
        let all = blocks(&w.out);
        let kinds: Vec<u32> = all.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [0x0A0D_0D0A, 1, 6, 1, 6, 6, 6, 6, 6],
            "a section, then each interface once, before its first packet"
        );
        let names: Vec<String> = all
            .iter()
            .filter(|(k, _)| *k == 1)
            .map(|(_, b)| text(b))
            .collect();
        assert!(names[0].contains("ptdemo-client/eth0") && names[1].contains("ptdemo-dock/eth0"));
        let comments: Vec<String> = all
            .iter()
            .filter(|(k, _)| *k == 6)
            .map(|(_, b)| text(b))
            .collect();
        assert!(
            comments[0].contains("pathtrace packet 1: tx"),
            "{}",
            comments[0]
        );
        assert!(!comments[1].contains("outcome"), "{}", comments[1]);
        assert!(
            comments[2].contains("drop; hooks ip FORWARD DROP; hook ip FORWARD")
                && comments[2].contains("outcome dropped at ip FORWARD"),
            "{}",
            comments[2]
        );
    }
}

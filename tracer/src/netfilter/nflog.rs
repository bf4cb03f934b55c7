//! nfnetlink_log: binding the logger, and decoding the `TRACE:` packets that
//! iptables-legacy's TRACE target logs through it.

use super::attrs::{self, AttrIter, AttrWriter};
use super::netlink::{self, NFNL_SUBSYS_ULOG};
use super::socket::NlSocket;
use super::NfError;

pub const NFULNL_MSG_PACKET: u16 = libc::NFULNL_MSG_PACKET as u16;
const NFULNL_MSG_CONFIG: u16 = libc::NFULNL_MSG_CONFIG as u16;
const NFULA_PACKET_HDR: u16 = libc::NFULA_PACKET_HDR as u16;
const NFULA_MARK: u16 = libc::NFULA_MARK as u16;
const NFULA_IFINDEX_INDEV: u16 = libc::NFULA_IFINDEX_INDEV as u16;
const NFULA_IFINDEX_OUTDEV: u16 = libc::NFULA_IFINDEX_OUTDEV as u16;
const NFULA_PAYLOAD: u16 = libc::NFULA_PAYLOAD as u16;
const NFULA_PREFIX: u16 = libc::NFULA_PREFIX as u16;
const NFULA_CFG_CMD: u16 = libc::NFULA_CFG_CMD as u16;
const NFULA_CFG_MODE: u16 = libc::NFULA_CFG_MODE as u16;
const NFULA_CFG_TIMEOUT: u16 = libc::NFULA_CFG_TIMEOUT as u16;
const NFULA_CFG_QTHRESH: u16 = libc::NFULA_CFG_QTHRESH as u16;
const NFULNL_CFG_CMD_BIND: u8 = libc::NFULNL_CFG_CMD_BIND as u8;
const NFULNL_CFG_CMD_PF_BIND: u8 = libc::NFULNL_CFG_CMD_PF_BIND as u8;
const NFULNL_CFG_CMD_PF_UNBIND: u8 = libc::NFULNL_CFG_CMD_PF_UNBIND as u8;
const NFULNL_COPY_PACKET: u8 = libc::NFULNL_COPY_PACKET as u8;
/// Bytes of each packet to copy: enough for IP and transport headers.
const COPY_RANGE: u32 = 256;

/// The nflog group the TRACE target logs to (the default loginfo's).
pub const TRACE_GROUP: u16 = 0;

fn config(
    sock: &mut NlSocket,
    family: u8,
    group: u16,
    a: &AttrWriter,
    what: &str,
) -> Result<(), NfError> {
    let kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    sock.request(kind, family, group, a.as_bytes(), what)
}

/// Makes nfnetlink_log the logger of `pf` (AF_INET/AF_INET6) in the socket's
/// namespace (what `/proc/sys/net/netfilter/nf_log/<pf>` shows).
pub fn bind_pf(sock: &mut NlSocket, pf: u8) -> Result<(), NfError> {
    let mut a = AttrWriter::new();
    a.put_u8(NFULA_CFG_CMD, NFULNL_CFG_CMD_PF_UNBIND);
    // Unbinding what isn't bound is fine; only the bind must succeed.
    if let Err(e) = config(sock, pf, 0, &a, "nflog PF_UNBIND") {
        log::debug!("netfilter: {e}");
    }
    let mut a = AttrWriter::new();
    a.put_u8(NFULA_CFG_CMD, NFULNL_CFG_CMD_PF_BIND);
    config(sock, pf, 0, &a, "nflog PF_BIND")
}

/// Binds the socket to nflog group `group`, copying packet headers, with
/// every packet sent at once.
pub fn bind_group(sock: &mut NlSocket, group: u16) -> Result<(), NfError> {
    let mut a = AttrWriter::new();
    a.put_u8(NFULA_CFG_CMD, NFULNL_CFG_CMD_BIND);
    config(
        sock,
        0,
        group,
        &a,
        "nflog group bind (is another nflog listener on group 0?)",
    )?;
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    let mut a = AttrWriter::new();
    a.put(NFULA_CFG_MODE, &mode)
        .put_be32(NFULA_CFG_QTHRESH, 1)
        .put_be32(NFULA_CFG_TIMEOUT, 1);
    config(sock, 0, group, &a, "nflog mode")
}

/// One NFLOG packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NflogPacket {
    pub prefix: String,
    pub hook: Option<u8>,
    pub hw_protocol: Option<u16>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub mark: Option<u32>,
    /// From the network header on.
    pub payload: Vec<u8>,
}

/// Decodes the attributes of an `NFULNL_MSG_PACKET` message.
pub fn decode_packet(buf: &[u8]) -> NflogPacket {
    let mut p = NflogPacket::default();
    for (k, v) in AttrIter::new(buf) {
        match k {
            NFULA_PACKET_HDR => {
                p.hw_protocol = attrs::be16(v);
                p.hook = v.get(2).copied();
            }
            NFULA_MARK => p.mark = attrs::be32(v),
            NFULA_IFINDEX_INDEV => p.iif = attrs::be32(v),
            NFULA_IFINDEX_OUTDEV => p.oif = attrs::be32(v),
            NFULA_PAYLOAD => p.payload = v.to_vec(),
            NFULA_PREFIX => p.prefix = attrs::string(v),
            _ => {}
        }
    }
    p
}

/// The iptables-legacy TRACE packets of one datagram read from the nflog
/// socket, in order: (family, parsed prefix, packet). Other messages and
/// other log prefixes are skipped.
pub fn trace_packets(buf: &[u8]) -> impl Iterator<Item = (u8, TracePrefix, NflogPacket)> + '_ {
    netlink::messages(buf)
        .into_iter()
        .filter(|m| m.kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
        .filter_map(|m| {
            let (family, attrs) = m.nf()?;
            let pkt = decode_packet(attrs);
            let prefix = parse_trace_prefix(&pkt.prefix)?;
            Some((family, prefix, pkt))
        })
}

/// A parsed `TRACE: table:chain:type:rulenum ` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePrefix {
    pub table: String,
    pub chain: String,
    /// "rule", "return" or "policy".
    pub kind: String,
    pub rulenum: u32,
}

/// Parses the prefix xt_TRACE logs with; None for other log messages.
pub fn parse_trace_prefix(prefix: &str) -> Option<TracePrefix> {
    let rest = prefix.strip_prefix("TRACE: ")?.trim_end();
    // Chain names can't contain ':', table names neither.
    let mut it = rest.rsplitn(3, ':');
    let rulenum = it.next()?.parse().ok()?;
    let kind = it.next()?.to_string();
    let (table, chain) = it.next()?.split_once(':')?;
    Some(TracePrefix {
        table: table.to_string(),
        chain: chain.to_string(),
        kind,
        rulenum,
    })
}

pub fn logger_path(pf: u8) -> String {
    format!("/proc/sys/net/netfilter/nf_log/{pf}")
}

pub fn read_logger(pf: u8) -> Option<String> {
    std::fs::read_to_string(logger_path(pf))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Puts back the loggers that were there before; runs in the namespace.
pub fn restore_loggers(saved: &[(u8, String)]) {
    for (pf, prev) in saved {
        if read_logger(*pf).as_deref() == Some(prev.as_str()) {
            continue;
        }
        if let Err(e) = std::fs::write(logger_path(*pf), prev) {
            log::warn!("netfilter: restoring nf_log/{pf} to {prev}: {e}");
        }
    }
}

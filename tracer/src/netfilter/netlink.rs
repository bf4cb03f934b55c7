//! nfnetlink message framing: building requests, splitting replies. The
//! `nlmsghdr` is read and written with `netlink-packet-core`; the nfnetlink
//! part (`nfgenmsg`, the batch, the attributes) is pathtrace's own.
use bytes::Bytes;
use netlink_packet_core::NetlinkBuffer;

pub const NFNL_SUBSYS_ULOG: u16 = libc::NFNL_SUBSYS_ULOG as u16;
pub const NFNL_SUBSYS_NFTABLES: u16 = libc::NFNL_SUBSYS_NFTABLES as u16;
pub const NFNL_MSG_BATCH_BEGIN: u16 = libc::NFNL_MSG_BATCH_BEGIN as u16;
pub const NFNL_MSG_BATCH_END: u16 = libc::NFNL_MSG_BATCH_END as u16;
/// Multicast group of `NFT_MSG_TRACE` events.
pub const NFNLGRP_NFTRACE: u32 = libc::NFNLGRP_NFTRACE as u32;
/// Multicast group of ruleset changes (what `nft monitor` hears).
pub const NFNLGRP_NFTABLES: u32 = libc::NFNLGRP_NFTABLES as u32;

pub const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
pub const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
pub const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
pub const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
pub const NLM_F_DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = libc::NLM_F_EXCL as u16;
pub const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
pub const NLM_F_APPEND: u16 = libc::NLM_F_APPEND as u16;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// Builds one nfnetlink message: `nlmsghdr` + `nfgenmsg` + attributes.
pub fn nfmsg(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Bytes {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut m = vec![0u8; len];
    let mut b = NetlinkBuffer::new(&mut m[..]);
    b.set_length(u32::try_from(len).unwrap_or(u32::MAX));
    b.set_message_type(kind);
    b.set_flags(flags);
    b.set_sequence_number(seq);
    let p = b.payload_mut();
    p[0] = family; // NFNETLINK_V0 follows
    p[2..4].copy_from_slice(&res_id.to_be_bytes());
    p[NFGENMSG_LEN..].copy_from_slice(attrs);
    Bytes::from(m)
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
pub struct RawMsg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after `nlmsghdr`.
    pub payload: &'a [u8],
}

impl<'a> RawMsg<'a> {
    /// For nfnetlink messages: (nfgen_family, attributes).
    pub fn nf(&self) -> Option<(u8, &'a [u8])> {
        if self.payload.len() < NFGENMSG_LEN {
            return None;
        }
        Some((self.payload[0], &self.payload[NFGENMSG_LEN..]))
    }

    /// For `NLMSG_ERROR`/`NLMSG_DONE`: (errno as a positive number or 0, seq of the request).
    pub fn error(&self) -> Option<(i32, u32)> {
        let err = i32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?);
        let seq = self
            .payload
            .get(4 + 8..4 + 12)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .unwrap_or(self.seq);
        Some((-err, seq))
    }
}

/// Splits a datagram into netlink messages. Stops at a malformed header.
pub fn messages(mut buf: &[u8]) -> Vec<RawMsg<'_>> {
    let mut out = Vec::new();
    while let Ok(m) = NetlinkBuffer::new_checked(buf) {
        let len = m.length() as usize;
        out.push(RawMsg {
            kind: m.message_type(),
            flags: m.flags(),
            seq: m.sequence_number(),
            payload: m.payload(),
        });
        buf = &buf[super::attrs::align4(len).min(buf.len())..];
    }
    out
}

//! Packet bytes (`--pcap`): the kernel's [`PacketBytes`] records, decoded and
//! paired with the event of their hop.
use std::collections::HashMap;

use tracer_common::{record_kind, PacketBytes};

use super::{CtRecord, Hop};
use crate::model::Conntrack;

/// The first bytes of a packet at one hop, from its network header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The packet's whole length from its network header.
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// A decoded [`PacketBytes`] record: which hop it belongs to, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BytesRecord {
    pub skb: u64,
    pub ts_ns: u64,
    pub captured: Captured,
}

/// Decodes a [`PacketBytes`] record, told apart from other records by its
/// size and its kind. `None` for any other record.
pub fn decode_bytes(bytes: &[u8]) -> Option<BytesRecord> {
    if bytes.len() != std::mem::size_of::<PacketBytes>() {
        return None;
    }
    // SAFETY: the length was checked, PacketBytes is plain old data, and
    // read_unaligned copes with any alignment of the ring-buffer slot.
    let p: PacketBytes = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<PacketBytes>()) };
    if p.kind != record_kind::PACKET_BYTES {
        return None;
    }
    let n = (p.cap_len as usize).min(p.data.len());
    Some(BytesRecord {
        skb: p.skb,
        ts_ns: p.ts_ns,
        captured: Captured {
            orig_len: p.orig_len,
            data: p.data[..n].to_vec(),
        },
    })
}

/// Records waiting for the event of their hop (bytes, conntrack), which the
/// kernel writes right after them on the same CPU (other CPUs' records may
/// come in between).
#[derive(Default)]
pub struct Pending {
    by_hop: HashMap<(u64, u64), Captured>,
    ct_by_hop: HashMap<(u64, u64), Conntrack>,
}

/// At most this many waiting records: a lost event leaves its bytes behind.
const MAX_PENDING: usize = 4096;

impl Pending {
    pub fn insert(&mut self, r: BytesRecord) {
        if self.by_hop.len() >= MAX_PENDING {
            self.by_hop.clear();
        }
        self.by_hop.insert((r.skb, r.ts_ns), r.captured);
    }

    pub fn insert_ct(&mut self, r: CtRecord) {
        if self.ct_by_hop.len() >= MAX_PENDING {
            self.ct_by_hop.clear();
        }
        self.ct_by_hop.insert((r.skb, r.ts_ns), r.ct);
    }

    /// Gives `hop` the bytes and conntrack entry recorded for it, if any.
    pub fn attach(&mut self, hop: &mut Hop) {
        let key = (hop.skb, hop.t_ns);
        hop.bytes = self.by_hop.remove(&key).map(Box::new);
        hop.ct = self.ct_by_hop.remove(&key).map(Box::new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, cap_len: u32) -> Vec<u8> {
        let mut data = [0u8; tracer_common::SNAP_LEN];
        data[0] = 0x45;
        let p = PacketBytes {
            kind,
            cap_len,
            ts_ns: 7,
            skb: 0xffff_8880_0000_1000,
            orig_len: 60,
            _pad: 0,
            data,
        };
        // SAFETY: PacketBytes is plain old data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (&raw const p).cast::<u8>(),
                std::mem::size_of::<PacketBytes>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn a_bytes_record_keeps_its_valid_bytes_and_its_hop() {
        let r = decode_bytes(&record(record_kind::PACKET_BYTES, 60)).expect("a bytes record");
        assert_eq!((r.skb, r.ts_ns), (0xffff_8880_0000_1000, 7));
        assert_eq!(r.captured.orig_len, 60);
        assert_eq!(r.captured.data.len(), 60);
        assert_eq!(r.captured.data[0], 0x45);
    }

    #[test]
    fn other_records_are_not_bytes() {
        assert_eq!(decode_bytes(&record(0, 60)), None, "wrong kind");
        let mut short = record(record_kind::PACKET_BYTES, 60);
        short.pop();
        assert_eq!(decode_bytes(&short), None, "wrong size");
        assert_eq!(
            decode_bytes(&vec![0; std::mem::size_of::<tracer_common::Event>()]),
            None
        );
    }

    #[test]
    fn a_cap_len_past_the_snapshot_is_cut_to_it() {
        let r = decode_bytes(&record(record_kind::PACKET_BYTES, 9999)).expect("a bytes record");
        assert_eq!(r.captured.data.len(), tracer_common::SNAP_LEN);
    }
}

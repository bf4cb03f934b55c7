//! The kernel's [`ConnTrack`] records, decoded: a followed packet's
//! conntrack entry where it changed, paired with that hop's event.
use tracer_common::{record_kind, ConnTrack};

use crate::model::{decode_tuple, Conntrack, CtEntry, CtInfo};

/// A decoded [`ConnTrack`] record: which hop it belongs to, and the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtRecord {
    pub skb: u64,
    pub ts_ns: u64,
    pub ct: Conntrack,
}

/// Decodes a [`ConnTrack`] record, told apart from other records by its
/// size and kind. `None` for any other record.
pub fn decode_conntrack(bytes: &[u8]) -> Option<CtRecord> {
    if bytes.len() != std::mem::size_of::<ConnTrack>() {
        return None;
    }
    // SAFETY: the length was checked, ConnTrack is plain old data, and
    // read_unaligned copes with any alignment of the ring-buffer slot.
    let r: ConnTrack = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnTrack>()) };
    if r.kind != record_kind::CONNTRACK {
        return None;
    }
    let entry = if r.has_entry != 0 {
        match (decode_tuple(&r.original), decode_tuple(&r.reply)) {
            (Some(original), Some(reply)) => Some(CtEntry {
                status: r.status,
                tcp_state: r.tcp_state,
                mark: r.mark,
                zone: r.zone,
                original,
                reply,
            }),
            _ => None,
        }
    } else {
        None
    };
    Some(CtRecord {
        skb: r.skb,
        ts_ns: r.ts_ns,
        ct: Conntrack {
            info: CtInfo::from_raw(r.ctinfo),
            entry,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_another_kind_or_size_is_not_conntrack() {
        let mut r = ConnTrack {
            kind: record_kind::CONNTRACK,
            ctinfo: 7,
            tcp_state: 0,
            zone: 0,
            ts_ns: 5,
            skb: 9,
            has_entry: 0,
            status: 0,
            mark: 0,
            _pad: 0,
            original: [0; 40],
            reply: [0; 40],
        };
        // SAFETY: ConnTrack is plain old data without padding.
        let bytes = |r: &ConnTrack| unsafe {
            std::slice::from_raw_parts((r as *const ConnTrack).cast::<u8>(), size_of::<ConnTrack>())
                .to_vec()
        };
        let d = decode_conntrack(&bytes(&r)).expect("a conntrack record");
        assert_eq!(
            (d.skb, d.ts_ns, d.ct.info, d.ct.entry),
            (9, 5, CtInfo::Untracked, None)
        );
        assert!(decode_conntrack(&bytes(&r)[..100]).is_none());
        r.kind = record_kind::HOP;
        assert!(decode_conntrack(&bytes(&r)).is_none());
    }
}

//! Ring-buffer records: `tracer::events::decode` on arbitrary bytes.
//!
//! The kernel side writes fixed-size records (`Event`, `DropEvent`), each
//! starting with its kind, but userspace must survive any length and any
//! field value (a stale or mismatched eBPF object, a corrupt record): decode
//! returns an error or a `Hop`, never panics.
#![no_main]

use std::mem::size_of;

use libfuzzer_sys::fuzz_target;
use tracer::events::{decode, DecodeError};
use tracer_common::{record_kind, DropEvent, Event, STACK_DEPTH};

fuzz_target!(|data: &[u8]| {
    let tag = data
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let size = match tag {
        Some(record_kind::HOP) => Some(size_of::<Event>()),
        Some(record_kind::DROP) => Some(size_of::<DropEvent>()),
        _ => None,
    };
    match decode(data) {
        Ok(hop) => {
            assert_eq!(Some(data.len()), size);
            assert!(hop.stack.len() <= STACK_DEPTH);
            assert!(tag == Some(record_kind::DROP) || hop.stack.is_empty());
            assert_eq!(
                hop.ip_id.is_some(),
                hop.tuple.is_some_and(|t| t.saddr.is_ipv4())
            );
            let _ = format!("{hop:?}");
            let _ = hop.kind.as_str();
            if let Some(t) = hop.tuple {
                let _ = t.proto_name();
            }
        }
        Err(DecodeError::Size { got, want }) => {
            assert_eq!(got, data.len());
            assert_ne!(got, want);
            assert!(size.is_none_or(|s| s == want));
        }
        Err(DecodeError::UnknownRecord(k)) => {
            assert_eq!(tag, Some(k));
            assert!(size.is_none());
        }
        Err(e @ DecodeError::UnknownKind(_)) => {
            assert_eq!(Some(data.len()), size);
            let _ = e.to_string();
        }
    }
});

//! Ring-buffer records: `tracer::events::decode` on arbitrary bytes.
//!
//! The kernel side writes fixed-size `Event`s, but userspace must survive any
//! length and any field value (a stale or mismatched eBPF object, a corrupt
//! record): decode returns an error or a `Hop`, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::events::{decode, DecodeError};
use tracer_common::{Event, STACK_DEPTH};

fuzz_target!(|data: &[u8]| {
    let want = std::mem::size_of::<Event>();
    match decode(data) {
        Ok(hop) => {
            assert!(data.len() >= want);
            assert!(hop.stack.len() <= STACK_DEPTH);
            assert_eq!(
                hop.ip_id.is_some(),
                hop.tuple.is_some_and(|t| t.saddr.is_ipv4())
            );
            // Bytes past one record are ignored.
            assert_eq!(decode(&data[..want]).as_ref(), Ok(&hop));
            let _ = format!("{hop:?}");
            let _ = hop.kind.as_str();
            if let Some(t) = hop.tuple {
                let _ = t.proto_name();
            }
        }
        Err(DecodeError::Short { got, want: w }) => {
            assert_eq!((got, w), (data.len(), want));
            assert!(got < w);
        }
        Err(e @ DecodeError::UnknownKind(_)) => {
            assert!(data.len() >= want);
            let _ = e.to_string();
        }
    }
});

//! Netlink trace datagrams: `tracer::netfilter::decode_datagram` on arbitrary
//! bytes, the parsing `RuleTracer::read_pending` (NFT_MSG_TRACE) and
//! `LegacyTracer::read_pending` (iptables-legacy TRACE through NFLOG) run on
//! what `recv` returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::netfilter::{decode_datagram, family_name, hook_name};

/// nlmsghdr (16) + nfgenmsg (4): the smallest message that can yield an event.
const MIN_MSG: usize = 20;

fuzz_target!(|data: &[u8]| {
    let events = decode_datagram(data);
    assert!(events.len() <= data.len() / MIN_MSG);
    for ev in &events {
        // What the renderers do with an event must not fail either.
        let json = serde_json::to_string(ev).expect("a trace event serialises");
        assert!(!json.is_empty());
        if let Some(v) = &ev.verdict {
            let _ = v.to_string();
            let _ = v.is_final();
        }
        let _ = family_name(ev.family);
        if let Some(h) = ev.hook {
            let _ = hook_name(ev.family, h);
        }
    }
});

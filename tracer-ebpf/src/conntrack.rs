//! A followed packet's conntrack entry: written as a [`ConnTrack`] record of
//! its own, before the hop's event, whenever it differs from the one the
//! packet carried at its last hop (a new entry, a NAT mapping set up, the
//! entry confirmed, seen in reply, or gone).
use tracer_common::{config_flags, counter, record_kind, Config, ConnTrack, Tracked, CT_TUPLE_LEN};

use crate::{
    maps::{bump, EVENTS, TRACKED},
    probe,
};

/// `IP_CT_UNTRACKED`: `notrack` (`-j CT --notrack`) packets.
const IP_CT_UNTRACKED: u64 = 7;
const NFCT_INFO_MASK: u64 = 7;

/// Writes the record when the packet's entry changed since `last` (the
/// packet's `TRACKED` value at this hop), and remembers what it wrote.
#[inline(always)]
pub unsafe fn note(cfg: &Config, skb: u64, ts_ns: u64, last: &Tracked) {
    let o = &cfg.offsets;
    if o.skb_nfct == 0 || cfg.flags & config_flags::CONNTRACK == 0 {
        return;
    }
    let nfct: u64 = unsafe { probe::read(skb + o.skb_nfct as u64) };
    let ct = nfct & !NFCT_INFO_MASK;
    let info = (nfct & NFCT_INFO_MASK) as u8;
    let status: u32 = if ct != 0 {
        unsafe { probe::read(ct + o.ct_status as u64) }
    } else {
        0
    };
    if ct == last.ct && info == last.ctinfo && status == last.ct_status {
        return;
    }
    if let Some(t) = TRACKED.get_ptr_mut(&skb) {
        unsafe {
            (*t).ct = ct;
            (*t).ctinfo = info;
            (*t).ct_status = status;
        }
    }
    // Leaving a namespace drops the entry: not worth a record of its own.
    if ct == 0 && nfct & NFCT_INFO_MASK != IP_CT_UNTRACKED {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ConnTrack>(0) else {
        bump(counter::LOST);
        return;
    };
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).kind = record_kind::CONNTRACK;
        (*r).ctinfo = info;
        (*r).ts_ns = ts_ns;
        (*r).skb = skb;
        (*r).has_entry = (ct != 0) as u32;
        (*r).status = status;
        (*r)._pad = 0;
        (*r).tcp_state = 0;
        (*r).zone = 0;
        (*r).mark = 0;
        (*r).original = [0; CT_TUPLE_LEN];
        (*r).reply = [0; CT_TUPLE_LEN];
        if ct != 0 {
            (*r).tcp_state = probe::read(ct + o.ct_tcp_state as u64);
            if o.ct_zone != 0 {
                (*r).zone = probe::read(ct + o.ct_zone as u64);
            }
            if o.ct_mark != 0 {
                (*r).mark = probe::read(ct + o.ct_mark as u64);
            }
            let tuple = ct + o.ct_tuple as u64;
            probe::read_into(tuple, &mut (*r).original);
            probe::read_into(tuple + o.ct_tuple_stride as u64, &mut (*r).reply);
        }
    }
    entry.submit(0);
}

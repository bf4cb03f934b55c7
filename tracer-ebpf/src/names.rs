//! Ties every map, program and global to its name in
//! [`tracer_common::names`], which the loader looks them up by: renaming
//! either side without the other fails this crate's build.
use tracer_common::names::{global, map, program, same};

use crate::{maps::*, skb::*, *};

/// `item => NAME`: `item` exists, and its symbol is spelt `NAME`.
macro_rules! named {
    ($($item:ident => $name:expr),* $(,)?) => {
        $(
            const _: () = assert!(
                same(stringify!($item), $name),
                concat!("`", stringify!($item), "` is not named as in tracer_common::names"),
            );
        )*
        #[expect(dead_code, reason = "only checks that every item exists")]
        fn every_item_exists() {
            $( let _ = &$item; )*
        }
    };
}

named! {
    CONFIG => map::CONFIG,
    EVENTS => map::EVENTS,
    TRACKED => map::TRACKED,
    LIVE => map::LIVE,
    COUNTERS => map::COUNTERS,
    NF_STACK => map::NF_STACK,
    PROBE_VIEW => map::PROBE_VIEW,
    MATCH_SCRATCH => map::MATCH_SCRATCH,
    SCRATCH => map::SCRATCH,
    DROP_COUNTS => map::DROP_COUNTS,
    kfree_skb => program::KFREE_SKB,
    kfree_skb_noreason => program::KFREE_SKB_NOREASON,
    consume_skb => program::CONSUME_SKB,
    netif_receive_skb => program::NETIF_RECEIVE_SKB,
    net_dev_queue => program::NET_DEV_QUEUE,
    nf_hook_slow_fentry => program::NF_HOOK_SLOW_FENTRY,
    nf_hook_slow_fexit => program::NF_HOOK_SLOW_FEXIT,
    nf_hook_slow_kprobe => program::NF_HOOK_SLOW_KPROBE,
    nf_hook_slow_kretprobe => program::NF_HOOK_SLOW_KRETPROBE,
    SKB_PROTOCOL => global::SKB_PROTOCOL,
    SKB_NETWORK_HEADER => global::SKB_NETWORK_HEADER,
    SKB_HEAD => global::SKB_HEAD,
    SKB_DATA => global::SKB_DATA,
    FILTER_ATOMS => global::FILTER_ATOMS,
    FILTER_TERMS => global::FILTER_TERMS,
    FILTER_BIDIR => global::FILTER_BIDIR,
}

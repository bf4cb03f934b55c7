//! Writes the seed corpora under `fuzz/seeds/`:
//!
//! - `event_decode/`: valid ring records (`tracer_common::Event`, and a
//!   `DropEvent` with a full stack), one per kind, IPv4 and IPv6, plus a
//!   truncated record;
//! - `netlink_trace/`: the kernel captures of `tracer/src/netfilter/fixtures.rs`
//!   (read from the source, so they stay in sync), one per file, plus whole
//!   multi-message datagrams.
//!
//! Run from `fuzz/`: `cargo run --example gen_seeds`. Also checks that every
//! capture decodes through `tracer::netfilter::decode_datagram`.
use std::fs;
use std::path::{Path, PathBuf};

use tracer_common::{
    record_kind, verdict, DropEvent, Event, EventKind, HOOK_NONE, STACK_DEPTH,
};

fn image<T>(rec: &T) -> Vec<u8> {
    // SAFETY: the records are repr(C) plain old data without implicit
    // padding (their sizes are pinned by tracer-common), so every byte is
    // initialised.
    unsafe {
        std::slice::from_raw_parts((rec as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
    .to_vec()
}

fn base(kind: EventKind) -> Event {
    // SAFETY: all-zero bytes are a valid Event (integers and byte arrays).
    let mut ev: Event = unsafe { std::mem::zeroed() };
    ev.record = record_kind::HOP;
    ev.ts_ns = 1_000_000_123;
    ev.skb = 0xffff_8880_0a1b_2c00;
    ev.track_id = 999_000_111;
    ev.netns = 4_026_531_840;
    ev.ifindex = 2;
    ev.kind = kind as u8;
    ev.hook = HOOK_NONE;
    ev.ip_version = 4;
    ev.proto = 6;
    ev.saddr[..4].copy_from_slice(&[192, 0, 2, 1]);
    ev.daddr[..4].copy_from_slice(&[192, 0, 2, 2]);
    ev.sport = 52860;
    ev.dport = 8092;
    ev.tcp_flags = 0x02;
    ev.ip_id = 0x6115;
    ev.len = 60;
    ev
}

fn event_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rx = base(EventKind::Rx);
    let mut tx6 = base(EventKind::Tx);
    tx6.ip_version = 6;
    tx6.proto = 17;
    tx6.ip_id = 0;
    tx6.saddr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    tx6.daddr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut hook = base(EventKind::NfHook);
    hook.hook = 1;
    hook.verdict = verdict::DROP;
    hook.nf_family = 2;
    hook.retval = -1;
    hook.filter = 1;
    // SAFETY: all-zero bytes are a valid DropEvent (integers and arrays).
    let mut drop: DropEvent = unsafe { std::mem::zeroed() };
    drop.event = base(EventKind::Drop);
    drop.event.record = record_kind::DROP;
    drop.event.reason = 12;
    drop.event.location = 0xffff_ffff_81a0_0000;
    drop.stack_len = STACK_DEPTH as u32;
    for (i, f) in drop.stack.iter_mut().enumerate() {
        *f = 0xffff_ffff_8100_0000 + (i as u64) * 0x40;
    }
    let mut consume = base(EventKind::Consume);
    consume.ip_version = 0;
    consume.ifindex = 0;
    let truncated = image(&rx)[..100].to_vec();
    vec![
        ("rx_ipv4_tcp", image(&rx)),
        ("tx_ipv6_udp", image(&tx6)),
        ("nf_hook_drop", image(&hook)),
        ("drop_full_stack", image(&drop)),
        ("consume_no_ip", image(&consume)),
        ("truncated", truncated),
    ]
}

/// `pub const NAME: &[u8] = &[0x.., ...];` items of fixtures.rs.
fn fixtures(src: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("pub const ") {
        rest = &rest[i + "pub const ".len()..];
        let Some((name, body)) = rest.split_once(": &[u8] = &[") else {
            continue;
        };
        let Some((list, after)) = body.split_once("];") else {
            break;
        };
        let bytes = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| u8::from_str_radix(t.trim_start_matches("0x"), 16).expect("hex byte"))
            .collect();
        out.push((name.trim().to_lowercase(), bytes));
        rest = after;
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    println!("{} ({} bytes)", p.display(), bytes.len());
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");

    let dir = seeds.join("event_decode");
    fs::create_dir_all(&dir).expect("seeds/event_decode");
    for (name, bytes) in event_seeds() {
        if name != "truncated" {
            tracer::events::decode(&bytes).expect("seed decodes");
        }
        write(&dir, name, &bytes);
    }

    let src = root.join("../tracer/src/netfilter/fixtures.rs");
    let src = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let fx = fixtures(&src);
    assert!(fx.len() >= 8, "found only {} fixtures", fx.len());
    let dir = seeds.join("netlink_trace");
    fs::create_dir_all(&dir).expect("seeds/netlink_trace");
    for (name, bytes) in &fx {
        let n = tracer::netfilter::decode_datagram(bytes).len();
        assert_eq!(n, 1, "fixture {name} decodes to {n} events");
        write(&dir, name, bytes);
    }
    // Whole datagrams of several messages, as recv returns them.
    let get = |n: &str| fx.iter().find(|(k, _)| k == n).map(|(_, b)| b.clone());
    for (name, parts, events) in [
        (
            "walk_rules",
            &["own_rule", "input_jump", "chk_end", "input_drop"][..],
            4,
        ),
        ("walk_policy", &["input_end", "input_policy"][..], 2),
        ("nflog_walk", &["nflog_raw_policy", "nflog_trace"][..], 2),
    ] {
        let mut d = Vec::new();
        for p in parts {
            d.extend(get(p).unwrap_or_else(|| panic!("fixture {p}")));
        }
        assert_eq!(tracer::netfilter::decode_datagram(&d).len(), events);
        write(&dir, name, &d);
    }
}

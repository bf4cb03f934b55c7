//! A namespace's conntrack entries, from `/proc/net/nf_conntrack`: where a
//! packet's hops carry none (a tier that sees no hook, or the stack reset
//! it before the drop), the entry its flow belongs to.
use std::net::IpAddr;

use crate::model::{CtEntry, Tuple};

const SEEN_REPLY: u32 = 1 << 1;
const ASSURED: u32 = 1 << 2;
const CONFIRMED: u32 = 1 << 3;
const SRC_NAT: u32 = 1 << 4;
const DST_NAT: u32 = 1 << 5;

fn proto_number(name: &str, number: &str) -> Option<u8> {
    number.parse().ok().or(match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        _ => None,
    })
}

/// One line: `ipv4 2 udp 17 29 src=… dst=… sport=… dport=… [UNREPLIED]
/// src=… dst=… sport=… dport=… [ASSURED] mark=0 zone=0 use=2`. The status
/// bits it can't show are derived: NAT where the reply is not the original
/// reversed.
fn parse_line(line: &str) -> Option<CtEntry> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let proto = proto_number(words.get(2)?, words.get(3)?)?;
    let values =
        |key: &str| -> Vec<&str> { words.iter().filter_map(|w| w.strip_prefix(key)).collect() };
    let (src, dst) = (values("src="), values("dst="));
    let (sport, dport) = (values("sport="), values("dport="));
    let side = |i: usize| -> Option<Tuple> {
        Some(Tuple {
            saddr: src.get(i)?.parse::<IpAddr>().ok()?,
            daddr: dst.get(i)?.parse::<IpAddr>().ok()?,
            sport: sport.get(i).and_then(|p| p.parse().ok()).unwrap_or(0),
            dport: dport.get(i).and_then(|p| p.parse().ok()).unwrap_or(0),
            proto,
        })
    };
    let (original, reply) = (side(0)?, side(1)?);
    let mut status = CONFIRMED;
    if !words.contains(&"[UNREPLIED]") {
        status |= SEEN_REPLY;
    }
    if words.contains(&"[ASSURED]") {
        status |= ASSURED;
    }
    if (reply.saddr, reply.sport) != (original.daddr, original.dport) {
        status |= DST_NAT;
    }
    if (reply.daddr, reply.dport) != (original.saddr, original.sport) {
        status |= SRC_NAT;
    }
    let number = |key: &str| {
        values(key)
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(CtEntry {
        status,
        tcp_state: 0,
        mark: number("mark="),
        zone: number("zone=") as u16,
        original,
        reply,
    })
}

/// The entry whose original direction is `t`, in the table's text.
pub fn find(table: &str, t: &Tuple) -> Option<CtEntry> {
    table
        .lines()
        .filter_map(parse_line)
        .find(|e| e.original == *t)
}

/// The entry whose original direction is `t`, in the calling thread's namespace.
pub fn find_here(t: &Tuple) -> Option<CtEntry> {
    find(&super::net_file("nf_conntrack")?, t)
}

/// The entry whose reply direction is `reply`: the one that already holds
/// a mapping another connection was NATed to, in the table's text.
pub fn holding_reply(table: &str, reply: &Tuple) -> Option<CtEntry> {
    table
        .lines()
        .filter_map(parse_line)
        .find(|e| e.reply == *reply)
}

/// [`holding_reply`] in the calling thread's namespace.
pub fn holding_reply_here(reply: &Tuple) -> Option<CtEntry> {
    holding_reply(&super::net_file("nf_conntrack")?, reply)
}

/// Why conntrack called a packet of flow `t` INVALID in the calling
/// thread's namespace, as far as its table and settings tell.
pub fn why_invalid_here(t: &Tuple, tcp_flags: u8) -> String {
    let reversed = Tuple {
        saddr: t.daddr,
        daddr: t.saddr,
        sport: t.dport,
        dport: t.sport,
        proto: t.proto,
    };
    let table = super::net_file("nf_conntrack").unwrap_or_default();
    let entry = find(&table, t).or_else(|| find(&table, &reversed));
    let loose = super::sysctl("net/netfilter/nf_conntrack_tcp_loose");
    const SYN: u8 = 0x02;
    match entry {
        Some(_) => "conntrack has an entry for this connection but judged the packet outside it (its TCP window or state): a path that shows conntrack only one direction, or something rewriting sequence numbers".into(),
        None if t.proto == 6 && tcp_flags & SYN == 0 && loose == Some(0) => "conntrack has no entry for this connection (it began before conntrack tracked it here, or its entry was flushed or expired), and net.netfilter.nf_conntrack_tcp_loose=0 keeps it from picking a connection up mid-stream".into(),
        None => "conntrack has no entry for this connection and could not start one from this packet".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_without_nat_and_one_with_dnat() {
        let table = "ipv4     2 udp      17 170 src=192.0.2.1 dst=192.0.2.254 sport=40123 dport=5300 src=192.0.2.254 dst=192.0.2.1 sport=5300 dport=40123 [ASSURED] mark=0 zone=0 use=2\n\
ipv4     2 tcp      6 117 SYN_SENT src=192.0.2.1 dst=192.0.2.254 sport=5000 dport=8092 [UNREPLIED] src=198.51.100.2 dst=192.0.2.1 sport=80 dport=5000 mark=3 zone=0 use=2\n";
        let t = |s: &str, sp, d: &str, dp, proto| Tuple {
            saddr: s.parse().expect("ip"),
            daddr: d.parse().expect("ip"),
            sport: sp,
            dport: dp,
            proto,
        };
        let plain = find(table, &t("192.0.2.1", 40123, "192.0.2.254", 5300, 17)).expect("entry");
        assert!(plain.seen_reply() && !plain.natted());
        let natted = find(table, &t("192.0.2.1", 5000, "192.0.2.254", 8092, 6)).expect("entry");
        assert!(!natted.seen_reply() && natted.snat().is_none());
        assert_eq!(
            natted.dnat().map(|m| m.to.to_string()).as_deref(),
            Some("198.51.100.2:80")
        );
        assert_eq!(natted.mark, 3);
        assert_eq!(
            find(table, &t("192.0.2.9", 1, "192.0.2.254", 5300, 17)),
            None
        );
    }

    #[test]
    fn the_entry_holding_a_snat_mapping_is_found_by_its_reply() {
        let table = "ipv4     2 tcp      6 59 ESTABLISHED src=192.0.2.1 dst=198.51.100.2 sport=39254 dport=8080 src=198.51.100.2 dst=198.51.100.254 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2\n";
        let reply = Tuple {
            saddr: "198.51.100.2".parse().expect("ip"),
            daddr: "198.51.100.254".parse().expect("ip"),
            sport: 8080,
            dport: 40000,
            proto: 6,
        };
        let e = holding_reply(table, &reply).expect("entry");
        assert_eq!(e.original.sport, 39254);
        assert!(e.snat().is_some());
        let other = Tuple {
            dport: 40001,
            ..reply
        };
        assert_eq!(holding_reply(table, &other), None);
    }
}

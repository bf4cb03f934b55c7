//! ICMP and ICMPv6 errors: what they say, and the flow they quote.
use std::fmt;

use serde::Serialize;

use super::Tuple;

/// An ICMP or ICMPv6 error, with the flow of the packet it answers (as
/// quoted, so in that packet's direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct IcmpError {
    /// 4 for ICMP, 6 for ICMPv6.
    pub version: u8,
    #[serde(rename = "type")]
    pub ty: u8,
    pub code: u8,
    pub quoted: Tuple,
}

/// What an ICMP error tells the sender's socket, in the words of `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IcmpMeaning {
    /// ECONNREFUSED: port unreachable.
    Refused,
    /// EHOSTUNREACH / ENETUNREACH / EACCES: host, network or admin unreachable.
    Unreachable,
    /// Administratively prohibited (a firewall's reject).
    Prohibited,
    /// Fragmentation needed / packet too big: the path MTU is smaller.
    TooBig,
    /// TTL / hop limit exceeded on the way.
    TimeExceeded,
    Other,
}

impl IcmpError {
    pub fn meaning(&self) -> IcmpMeaning {
        match (self.version, self.ty, self.code) {
            (4, 3, 3) | (6, 1, 4) => IcmpMeaning::Refused,
            (4, 3, 4) | (6, 2, _) => IcmpMeaning::TooBig,
            (4, 3, 9 | 10 | 13) | (6, 1, 1) => IcmpMeaning::Prohibited,
            (4, 3, _) | (6, 1, _) => IcmpMeaning::Unreachable,
            (4, 11, _) | (6, 3, _) => IcmpMeaning::TimeExceeded,
            _ => IcmpMeaning::Other,
        }
    }

    /// The message's name, as the RFCs and `iptables --reject-with` say it.
    pub fn name(&self) -> &'static str {
        match (self.version, self.ty, self.code) {
            (4, 3, 0) => "net-unreachable",
            (4, 3, 1) => "host-unreachable",
            (4, 3, 2) => "protocol-unreachable",
            (4, 3, 3) => "port-unreachable",
            (4, 3, 4) => "fragmentation-needed",
            (4, 3, 9) => "net-prohibited",
            (4, 3, 10) => "host-prohibited",
            (4, 3, 13) => "admin-prohibited",
            (4, 3, _) => "destination-unreachable",
            (4, 11, _) => "ttl-exceeded",
            (4, 12, _) => "parameter-problem",
            (6, 1, 0) => "no-route",
            (6, 1, 1) => "admin-prohibited",
            (6, 1, 3) => "addr-unreachable",
            (6, 1, 4) => "port-unreachable",
            (6, 1, _) => "destination-unreachable",
            (6, 2, _) => "packet-too-big",
            (6, 3, _) => "hop-limit-exceeded",
            (6, 4, _) => "parameter-problem",
            _ => "error",
        }
    }

    /// Whether a connected UDP socket reports it (without `IP_RECVERR`):
    /// the kernel's hard errors only (`icmp_err_convert`, `icmpv6_err_convert`).
    /// Net and host unreachable, too big and time exceeded are soft: the
    /// socket takes them silently, and its owner sees no answer.
    pub fn reported_to_udp(&self) -> bool {
        match (self.version, self.ty) {
            (4, 3) => matches!(self.code, 2 | 3 | 6..=10 | 13..=15),
            (4, 12) | (6, 4) => true,
            (6, 1) => matches!(self.code, 1 | 4..=6),
            _ => false,
        }
    }

    /// The error a client's socket reports for it.
    pub fn errno_name(&self) -> &'static str {
        match (self.meaning(), self.version, self.code) {
            (IcmpMeaning::Refused, ..) => "ECONNREFUSED",
            (IcmpMeaning::Unreachable, 4, 0) | (IcmpMeaning::Unreachable, 6, 0) => "ENETUNREACH",
            (IcmpMeaning::Prohibited, 6, _) => "EACCES",
            (IcmpMeaning::Unreachable | IcmpMeaning::Prohibited, ..) => "EHOSTUNREACH",
            (IcmpMeaning::TooBig, ..) => "EMSGSIZE",
            (IcmpMeaning::TimeExceeded, ..) => "EHOSTUNREACH",
            (IcmpMeaning::Other, ..) => "EPROTO",
        }
    }
}

impl fmt::Display for IcmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.version == 6 { "ICMPv6" } else { "ICMP" };
        write!(
            f,
            "{proto} {} (type {}, code {})",
            self.name(),
            self.ty,
            self.code
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(version: u8, ty: u8, code: u8) -> IcmpError {
        IcmpError {
            version,
            ty,
            code,
            quoted: Tuple {
                saddr: "192.0.2.9".parse().expect("ip"),
                daddr: "192.0.2.25".parse().expect("ip"),
                sport: 40000,
                dport: 8092,
                proto: 6,
            },
        }
    }

    #[test]
    fn rejects_map_to_what_the_socket_reports() {
        assert_eq!(err(4, 3, 3).errno_name(), "ECONNREFUSED");
        assert_eq!(err(4, 3, 10).meaning(), IcmpMeaning::Prohibited);
        assert_eq!(err(4, 3, 10).errno_name(), "EHOSTUNREACH");
        assert_eq!(err(4, 3, 13).name(), "admin-prohibited");
        assert_eq!(err(6, 1, 4).errno_name(), "ECONNREFUSED");
        assert_eq!(err(6, 1, 1).errno_name(), "EACCES");
        assert_eq!(err(4, 3, 4).meaning(), IcmpMeaning::TooBig);
        assert_eq!(err(4, 11, 0).meaning(), IcmpMeaning::TimeExceeded);
        assert!(err(4, 3, 3).reported_to_udp() && err(6, 1, 4).reported_to_udp());
        assert!(!err(4, 3, 1).reported_to_udp() && !err(6, 1, 3).reported_to_udp());
        assert!(!err(4, 3, 0).reported_to_udp() && !err(4, 11, 0).reported_to_udp());
        assert_eq!(
            err(4, 3, 13).to_string(),
            "ICMP admin-prohibited (type 3, code 13)"
        );
    }
}

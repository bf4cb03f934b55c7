//! Netfilter hook points and protocol families.

use std::fmt;

use serde::Serialize;

/// A netfilter hook. Bridge hooks (`NF_BR_*`) use the same numbering as
/// `NF_INET_*`, so one enum covers both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    /// From `NF_INET_PRE_ROUTING` (0) .. `NF_INET_POST_ROUTING` (4).
    pub fn from_nf_inet(raw: u8) -> Option<Hook> {
        Self::ALL.get(usize::from(raw)).copied()
    }

    pub fn as_nf_inet(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Protocol family a hook ran for (`NFPROTO_*`).
/// A netfilter family (`NFPROTO_*`), named as nft names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Ipv4,
    Ipv6,
    Arp,
    Netdev,
    /// Bridged traffic: the bridge family itself (with br_netfilter, the
    /// IPv4 and IPv6 hooks run inside its hooks).
    Bridge,
    Unknown,
}

impl Family {
    /// From `NFPROTO_*`.
    pub fn from_nfproto(raw: u8) -> Family {
        match i32::from(raw) {
            libc::NFPROTO_INET => Family::Inet,
            libc::NFPROTO_IPV4 => Family::Ipv4,
            libc::NFPROTO_ARP => Family::Arp,
            libc::NFPROTO_NETDEV => Family::Netdev,
            libc::NFPROTO_BRIDGE => Family::Bridge,
            libc::NFPROTO_IPV6 => Family::Ipv6,
            _ => Family::Unknown,
        }
    }

    /// The family's name in nft: `ip`, `ip6`, `inet`, `arp`, `bridge`, `netdev`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
            Family::Arp => "arp",
            Family::Netdev => "netdev",
            Family::Bridge => "bridge",
            Family::Unknown => "unknown",
        }
    }
}

impl Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf_inet_numbers_round_trip() {
        for (i, hook) in Hook::ALL.iter().enumerate() {
            assert_eq!(Hook::from_nf_inet(i as u8), Some(*hook));
            assert_eq!(usize::from(hook.as_nf_inet()), i);
        }
        assert_eq!(Hook::from_nf_inet(5), None);
        assert_eq!(Hook::from_nf_inet(0).map(Hook::as_str), Some("PREROUTING"));
        assert_eq!(Hook::Postrouting.to_string(), "POSTROUTING");
    }

    #[test]
    fn families() {
        assert_eq!(Family::from_nfproto(2), Family::Ipv4);
        assert_eq!(Family::from_nfproto(10), Family::Ipv6);
        assert_eq!(Family::from_nfproto(7).as_str(), "bridge");
        assert_eq!(Family::from_nfproto(1).as_str(), "inet");
        assert_eq!(Family::from_nfproto(2).as_str(), "ip");
        assert_eq!(Family::from_nfproto(99), Family::Unknown);
    }

    #[test]
    fn serializes_like_iptables_chain_names() {
        assert_eq!(
            serde_json::to_string(&Hook::Forward).ok().as_deref(),
            Some("\"FORWARD\"")
        );
        assert_eq!(
            serde_json::to_string(&Family::Ipv6).ok().as_deref(),
            Some("\"ip6\"")
        );
    }
}

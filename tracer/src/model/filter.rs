//! The flow filter: parsed from the command line, handed to the kernel.
use std::{fmt, net::IpAddr, str::FromStr};

use tracer_common::{addr_words, filter_flags, prefix_mask, Filter};

/// An address with an optional prefix length: `192.0.2.9`, `192.0.2.0/24`, `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("'{s}' has a prefix length outside 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// An IP protocol by name or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proto(pub u8);

impl FromStr for Proto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n = match s.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" | "icmp6" => 58,
            "sctp" => 132,
            "gre" => 47,
            "esp" => 50,
            other => other.parse::<u8>().map_err(|_| {
                format!("'{s}' is not a protocol (tcp, udp, icmp, icmpv6, sctp or a number 0-255)")
            })?,
        };
        Ok(Self(n))
    }
}

impl Proto {
    pub fn name(self) -> String {
        proto_name(self.0)
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        0 => "hopopt".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        n => n.to_string(),
    }
}

/// A port number 1-65535 (0 is never a real port to filter on).
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{s}' is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub src: Option<Cidr>,
    pub dst: Option<Cidr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub proto: Option<Proto>,
    /// Also follow the reply direction.
    pub both_directions: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("--src {0} and --dst {1} mix IPv4 and IPv6")]
    MixedFamilies(Cidr, Cidr),
    #[error("--sport/--dport need a protocol with ports, not {0}")]
    PortsWithoutPorts(String),
}

fn bytes16(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
    }
    out
}

impl FlowFilter {
    pub fn validate(&self) -> Result<(), FilterError> {
        if let (Some(s), Some(d)) = (self.src, self.dst) {
            if s.addr.is_ipv4() != d.addr.is_ipv4() {
                return Err(FilterError::MixedFamilies(s, d));
            }
        }
        if let Some(p) = self.proto {
            if (self.sport.is_some() || self.dport.is_some()) && !matches!(p.0, 6 | 17 | 132 | 136)
            {
                return Err(FilterError::PortsWithoutPorts(p.name()));
            }
        }
        Ok(())
    }

    /// Whether a packet with this tuple matches, in the forward direction.
    pub fn matches(&self, t: &super::Tuple) -> bool {
        let within = |c: &Cidr, a: &std::net::IpAddr| match (c.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(c.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(*a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(c.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(*a) & mask
            }
            _ => false,
        };
        self.src.is_none_or(|c| within(&c, &t.saddr))
            && self.dst.is_none_or(|c| within(&c, &t.daddr))
            && self.sport.is_none_or(|p| p == t.sport)
            && self.dport.is_none_or(|p| p == t.dport)
            && self.proto.is_none_or(|p| p.0 == t.proto)
    }

    pub fn is_empty(&self) -> bool {
        self.src.is_none()
            && self.dst.is_none()
            && self.sport.is_none()
            && self.dport.is_none()
            && self.proto.is_none()
    }

    /// The kernel-side form of this filter.
    pub fn to_kernel(&self) -> Filter {
        let mut f = Filter::default();
        let masked = |c: &Cidr| {
            let mask = prefix_mask(c.prefix);
            let a = addr_words(&bytes16(c.addr));
            ([a[0] & mask[0], a[1] & mask[1]], mask)
        };
        if let Some(c) = self.src {
            f.flags |= filter_flags::SRC;
            (f.saddr, f.smask) = masked(&c);
            f.ip_version = if c.addr.is_ipv4() { 4 } else { 6 };
        }
        if let Some(c) = self.dst {
            f.flags |= filter_flags::DST;
            (f.daddr, f.dmask) = masked(&c);
            f.ip_version = if c.addr.is_ipv4() { 4 } else { 6 };
        }
        if let Some(p) = self.sport {
            f.flags |= filter_flags::SPORT;
            f.sport = p;
        }
        if let Some(p) = self.dport {
            f.flags |= filter_flags::DPORT;
            f.dport = p;
        }
        if let Some(p) = self.proto {
            f.flags |= filter_flags::PROTO;
            f.proto = p.0;
        }
        if self.both_directions {
            f.flags |= filter_flags::BIDIR;
        }
        f
    }
}

impl fmt::Display for FlowFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.proto {
            parts.push(p.name());
        }
        if let Some(c) = self.src {
            parts.push(format!("src {c}"));
        }
        if let Some(p) = self.sport {
            parts.push(format!("sport {p}"));
        }
        if let Some(c) = self.dst {
            parts.push(format!("dst {c}"));
        }
        if let Some(p) = self.dport {
            parts.push(format!("dport {p}"));
        }
        if parts.is_empty() {
            parts.push("all IP packets".into());
        }
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_plain_and_prefixed() {
        let c: Cidr = "192.0.2.9".parse().expect("valid");
        assert_eq!(c.prefix, 32);
        let c: Cidr = "2001:db8::/32".parse().expect("valid");
        assert_eq!(c.prefix, 32);
        assert!("192.0.2.0/33".parse::<Cidr>().is_err());
        assert!("300.1.1.1".parse::<Cidr>().is_err());
        assert!("".parse::<Cidr>().is_err());
        assert!("192.0.2.1/".parse::<Cidr>().is_err());
    }

    #[test]
    fn ports_and_protocols() {
        assert_eq!(parse_port("8092"), Ok(8092));
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(parse_port("-1").is_err());
        assert_eq!("TCP".parse::<Proto>(), Ok(Proto(6)));
        assert_eq!("47".parse::<Proto>(), Ok(Proto(47)));
        assert!("tcpp".parse::<Proto>().is_err());
        assert!("256".parse::<Proto>().is_err());
    }

    #[test]
    fn kernel_filter_carries_every_field() {
        let f = FlowFilter {
            src: Some("192.0.2.9".parse().expect("valid")),
            dport: Some(8092),
            proto: Some(Proto(6)),
            ..Default::default()
        };
        let k = f.to_kernel();
        assert_eq!(
            k.flags,
            filter_flags::SRC | filter_flags::DPORT | filter_flags::PROTO
        );
        assert_eq!(
            k.saddr,
            addr_words(&[192, 0, 2, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(k.smask, prefix_mask(32));
        assert_eq!(k.ip_version, 4);
        assert_eq!(k.dport, 8092);
        assert_eq!(k.proto, 6);
        assert_eq!(f.to_string(), "tcp src 192.0.2.9 dport 8092");
    }

    #[test]
    fn userspace_match_follows_prefixes_and_ports() {
        let f = FlowFilter {
            src: Some("192.0.2.0/24".parse().expect("valid")),
            dport: Some(8092),
            ..Default::default()
        };
        let t = |s: &str, d: &str, dport| crate::model::Tuple {
            saddr: s.parse().expect("ip"),
            daddr: d.parse().expect("ip"),
            sport: 40000,
            dport,
            proto: 6,
        };
        assert!(f.matches(&t("192.0.2.9", "192.0.2.25", 8092)));
        assert!(!f.matches(&t("198.51.100.9", "192.0.2.25", 8092)));
        assert!(!f.matches(&t("192.0.2.9", "192.0.2.25", 80)));
        assert!(!f.matches(&t("2001:db8::1", "2001:db8::2", 8092)));
        let zero = FlowFilter {
            src: Some("0.0.0.0/0".parse().expect("valid")),
            ..Default::default()
        };
        assert!(zero.matches(&t("203.0.113.1", "192.0.2.25", 1)));
    }

    #[test]
    fn prefix_masks_cover_whole_and_partial_bytes() {
        let bytes = |w: [u64; 2]| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&w[0].to_ne_bytes());
            b[8..].copy_from_slice(&w[1].to_ne_bytes());
            b
        };
        assert_eq!(bytes(prefix_mask(0)), [0; 16]);
        assert_eq!(bytes(prefix_mask(24))[..4], [0xff, 0xff, 0xff, 0]);
        assert_eq!(bytes(prefix_mask(20))[..4], [0xff, 0xff, 0xf0, 0]);
        assert_eq!(bytes(prefix_mask(128)), [0xff; 16]);
        let f = FlowFilter {
            dst: Some("192.0.2.77/24".parse().expect("valid")),
            ..Default::default()
        }
        .to_kernel();
        assert_eq!(bytes(f.daddr)[..4], [192, 0, 2, 0], "the network, masked");
    }

    #[test]
    fn validation_rejects_mixed_families_and_portless_protocols() {
        let f = FlowFilter {
            src: Some("192.0.2.9".parse().expect("valid")),
            dst: Some("2001:db8::1".parse().expect("valid")),
            ..Default::default()
        };
        assert!(matches!(f.validate(), Err(FilterError::MixedFamilies(..))));
        let f = FlowFilter {
            proto: Some(Proto(1)),
            dport: Some(80),
            ..Default::default()
        };
        assert!(matches!(
            f.validate(),
            Err(FilterError::PortsWithoutPorts(_))
        ));
    }
}

//! The flow filter: parsed from the command line, handed to the kernel.
use std::{fmt, net::IpAddr, str::FromStr};

use tracer_common::{
    addr_words, atom_dir, atom_kind, has_ports, ports, prefix_mask, term_flags, Atom, Filter,
    FlowFields, Term, MAX_ATOMS, MAX_TERMS,
};

use super::expr::{self, Dir, Dnf, Expr, ExprError, Prim};

/// An address with an optional prefix length: `192.0.2.9`, `192.0.2.0/24`, `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
pub fn parse_port(s: &str) -> Result<u16, FilterError> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(FilterError::NotAPort(s.to_owned())),
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
    /// A filter expression (pcap-filter), combined with the flags by `and`.
    pub expr: Option<Expr>,
    /// Also follow the reply direction.
    pub both_directions: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("--src {0} and --dst {1} mix IPv4 and IPv6")]
    MixedFamilies(Cidr, Cidr),
    #[error("--sport/--dport need a protocol with ports, not {0}")]
    PortsWithoutPorts(String),
    #[error("'{0}' is not a port (1-65535)")]
    NotAPort(String),
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
            if (self.sport.is_some() || self.dport.is_some()) && !has_ports(p.0) {
                return Err(FilterError::PortsWithoutPorts(p.name()));
            }
        }
        Ok(())
    }

    /// Whether a packet with this tuple matches, in the forward direction.
    pub fn matches(&self, t: &super::Tuple) -> bool {
        let forward = FlowFilter {
            both_directions: false,
            ..self.clone()
        };
        compile(&[forward]).is_ok_and(|f| terms_match(&f, t))
    }

    pub fn is_empty(&self) -> bool {
        self.src.is_none()
            && self.dst.is_none()
            && self.sport.is_none()
            && self.dport.is_none()
            && self.proto.is_none()
            && self.expr.is_none()
    }

    /// The flags as primitives, then the expression: what the filter means.
    fn conjuncts(&self) -> Vec<Expr> {
        let port_proto = self.proto.map_or(0, |p| p.0);
        let mut out: Vec<Expr> = Vec::new();
        if let Some(p) = self.proto {
            out.push(Expr::Prim(Prim::Proto {
                version: 0,
                proto: p.0,
            }));
        }
        if let Some(net) = self.src {
            out.push(Expr::Prim(Prim::Net { dir: Dir::Src, net }));
        }
        if let Some(net) = self.dst {
            out.push(Expr::Prim(Prim::Net { dir: Dir::Dst, net }));
        }
        for (dir, p) in [(Dir::Src, self.sport), (Dir::Dst, self.dport)] {
            if let Some(p) = p {
                out.push(Expr::Prim(Prim::Port {
                    dir,
                    lo: p,
                    hi: p,
                    proto: port_proto,
                }));
            }
        }
        out.extend(self.expr.clone());
        out
    }

    /// The filter as a simplified disjunction of conjunctions; one empty
    /// conjunction for no filter at all.
    pub fn dnf(&self) -> Result<Dnf, ExprError> {
        let all = self
            .conjuncts()
            .into_iter()
            .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)));
        match all {
            None => Ok(vec![Vec::new()]),
            Some(e) => expr::dnf(&e, false),
        }
    }
}

/// The flows of one run, each a [`FlowFilter`] (flow `i` is the kernel's
/// flow `i`), checked to fit the kernel's filter when they were made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flows {
    filters: Vec<FlowFilter>,
    kernel: Filter,
}

impl Flows {
    /// The flows, or why the kernel can't hold them.
    pub fn new(filters: Vec<FlowFilter>) -> Result<Self, ExprError> {
        let kernel = compile(&filters)?;
        Ok(Self { filters, kernel })
    }
}

impl std::ops::Deref for Flows {
    type Target = [FlowFilter];

    fn deref(&self) -> &[FlowFilter] {
        &self.filters
    }
}

/// The kernel's form of the flows.
impl From<&Flows> for Filter {
    fn from(flows: &Flows) -> Self {
        flows.kernel
    }
}

/// The kernel-side filter of every flow (flow `i` is `filters[i]`).
fn compile(filters: &[FlowFilter]) -> Result<Filter, ExprError> {
    let mut prims: Vec<Prim> = Vec::new();
    let mut terms: Vec<Term> = Vec::new();
    let mut bidir = false;
    for (flow, f) in filters.iter().enumerate() {
        bidir |= f.both_directions;
        let dnf = f.dnf()?;
        if dnf.is_empty() {
            return Err(ExprError::MatchesNothing {
                flow: match filters.len() {
                    1 => String::new(),
                    _ => format!(" in flow {}", ["A", "B"].get(flow).unwrap_or(&"?")),
                },
            });
        }
        for conj in dnf {
            let mut t = Term {
                flow: flow as u32,
                flags: if f.both_directions {
                    term_flags::BIDIR
                } else {
                    0
                },
                ..Term::default()
            };
            for lit in conj {
                let i = match prims.iter().position(|p| *p == lit.prim) {
                    Some(i) => i,
                    None => {
                        prims.push(lit.prim);
                        prims.len() - 1
                    }
                };
                // Bits past 31 are refused below, before they are used.
                let bit = 1u32.checked_shl(i as u32).unwrap_or(0);
                if lit.negate {
                    t.neg |= bit;
                } else {
                    t.pos |= bit;
                }
            }
            terms.push(t);
        }
    }
    if terms.len() > MAX_TERMS || prims.len() > MAX_ATOMS {
        return Err(ExprError::TooLarge {
            terms: terms.len(),
            atoms: prims.len(),
            max_terms: MAX_TERMS,
            max_atoms: MAX_ATOMS,
        });
    }
    let mut out = Filter {
        n_atoms: prims.len() as u32,
        n_terms: terms.len() as u32,
        bidir: u32::from(bidir),
        ..Filter::default()
    };
    for (slot, p) in out.atoms.iter_mut().zip(&prims) {
        *slot = atom(p);
    }
    for (slot, t) in out.terms.iter_mut().zip(terms) {
        *slot = t;
    }
    Ok(out)
}

/// Whether `t` matches the filter in its own direction, decided by the
/// kernel's own match function.
pub fn terms_match(filter: &Filter, t: &super::Tuple) -> bool {
    filter.matches_forward(&FlowFields {
        ip_version: if t.saddr.is_ipv4() { 4 } else { 6 },
        proto: t.proto,
        ports: if has_ports(t.proto) {
            ports::KNOWN
        } else {
            ports::NONE
        },
        _pad: 0,
        sport: t.sport,
        dport: t.dport,
        saddr: bytes16(t.saddr),
        daddr: bytes16(t.daddr),
    })
}

fn atom(prim: &Prim) -> Atom {
    let mut a = Atom::default();
    let dir = |d: Dir| match d {
        Dir::Src => atom_dir::SRC,
        Dir::Dst => atom_dir::DST,
        Dir::Either => atom_dir::EITHER,
        Dir::Both => atom_dir::BOTH,
    };
    match *prim {
        Prim::Version(v) => {
            a.kind = atom_kind::VERSION;
            a.version = v;
        }
        Prim::Proto { version, proto } => {
            a.kind = atom_kind::PROTO;
            a.version = version;
            a.proto = proto;
        }
        Prim::Net { dir: d, net } => {
            a.kind = atom_kind::NET;
            a.dir = dir(d);
            a.version = if net.addr.is_ipv4() { 4 } else { 6 };
            a.mask = prefix_mask(net.prefix);
            let w = addr_words(&bytes16(net.addr));
            a.net = [w[0] & a.mask[0], w[1] & a.mask[1]];
        }
        Prim::Port {
            dir: d,
            lo,
            hi,
            proto,
        } => {
            a.kind = atom_kind::PORT;
            a.dir = dir(d);
            a.lo = lo;
            a.hi = hi;
            a.proto = proto;
        }
    }
    a
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
        match (&self.expr, parts.is_empty()) {
            (Some(e), true) => write!(f, "{e}"),
            (Some(e), false) => write!(f, "{} and ({e})", parts.join(" ")),
            (None, true) => f.write_str("all IP packets"),
            (None, false) => f.write_str(&parts.join(" ")),
        }
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
        let k = Filter::from(&Flows::new(vec![FlowFilter::default(), f.clone()]).expect("fits"));
        assert_eq!((k.n_terms, k.n_atoms), (2, 3));
        assert_eq!(
            (k.terms[0].pos, k.terms[0].neg),
            (0, 0),
            "flow 0 matches all"
        );
        assert_eq!(
            (k.terms[1].flow, k.terms[1].pos, k.terms[1].neg),
            (1, 0b111, 0)
        );
        let kinds: Vec<u8> = k.atoms[..3].iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [atom_kind::PROTO, atom_kind::NET, atom_kind::PORT]);
        let net = &k.atoms[1];
        assert_eq!(
            net.net,
            addr_words(&[192, 0, 2, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(net.mask, prefix_mask(32));
        assert_eq!((net.version, net.dir), (4, atom_dir::SRC));
        let port = &k.atoms[2];
        assert_eq!(
            (port.lo, port.hi, port.dir, port.proto),
            (8092, 8092, atom_dir::DST, 6)
        );
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
        };
        let f = compile(&[f]).expect("fits");
        assert_eq!(
            bytes(f.atoms[0].net)[..4],
            [192, 0, 2, 0],
            "the network, masked"
        );
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

    fn fields(s: &str, d: &str, proto: u8, sport: u16, dport: u16) -> FlowFields {
        let (s, d): (IpAddr, IpAddr) = (s.parse().expect("ip"), d.parse().expect("ip"));
        FlowFields {
            ip_version: if s.is_ipv4() { 4 } else { 6 },
            proto,
            ports: if proto == 1 {
                ports::NONE
            } else {
                ports::KNOWN
            },
            _pad: 0,
            sport,
            dport,
            saddr: bytes16(s),
            daddr: bytes16(d),
        }
    }

    #[test]
    fn replies_and_quoted_packets_match_only_when_replies_are_followed() {
        let flow = |expr: &str, both_directions| FlowFilter {
            expr: expr::parse(&[expr.to_owned()]).expect("parses"),
            both_directions,
            ..FlowFilter::default()
        };
        let request = fields("192.0.2.9", "192.0.2.25", 6, 40000, 8092);
        let reply = fields("192.0.2.25", "192.0.2.9", 6, 8092, 40000);
        let icmp_error = fields("192.0.2.1", "192.0.2.9", 1, 0, 0);
        let mut s = tracer_common::MatchScratch::default();
        for bidir in [false, true] {
            let f =
                compile(&[flow("src host 192.0.2.9 and tcp dst port 8092", bidir)]).expect("fits");
            let m = |own: &FlowFields, quoted: Option<&FlowFields>, s: &mut _| {
                f.first_match(f.shape(), own, quoted.unwrap_or(own), quoted.is_some(), s)
            };
            assert_eq!(m(&request, None, &mut s), Some(0));
            assert_eq!(m(&reply, None, &mut s).is_some(), bidir, "the reply");
            assert_eq!(
                m(&icmp_error, Some(&request), &mut s).is_some(),
                bidir,
                "an ICMP error quoting the request"
            );
            assert_eq!(m(&icmp_error, None, &mut s), None);
        }
        let f = compile(&[flow("not tcp", true)]).expect("fits");
        assert_eq!(
            f.first_match(f.shape(), &request, &request, false, &mut s),
            None,
            "a quoted flow that isn't there matches no negation"
        );
        let two =
            compile(&[flow("dst port 80", false), flow("dst port 8092", false)]).expect("fits");
        assert_eq!(two.n_atoms, 2);
        assert_eq!(
            two.first_match(two.shape(), &request, &request, false, &mut s),
            Some(1),
            "the flow of the term that matched"
        );
    }
}

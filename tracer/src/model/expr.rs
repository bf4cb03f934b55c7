//! tcpdump's filter language (pcap-filter), the part the kernel side can
//! decide: parsed into a tree, then brought into a disjunction of
//! conjunctions of (possibly negated) primitives, which is what the kernel
//! holds ([`tracer_common::Term`]).
//!
//! As in pcap-filter, `and` and `or` bind equally and associate to the
//! left, `not` binds tightest, and an id without qualifiers takes those of
//! the primitive before it (`port 80 or 443`).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use super::filter::Cidr;

/// Which address or port of the packet a primitive looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    Src,
    Dst,
    /// `src or dst`, the default.
    Either,
    /// `src and dst`.
    Both,
}

impl Dir {
    fn word(self) -> &'static str {
        match self {
            Dir::Src => "src ",
            Dir::Dst => "dst ",
            Dir::Either => "",
            Dir::Both => "src and dst ",
        }
    }
}

/// One primitive, with tcpdump's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prim {
    /// `ip` (4) or `ip6` (6).
    Version(u8),
    /// `proto N` (version 0: either), `ip proto N`, `icmp` (4, 1), `tcp` (0, 6)…
    Proto { version: u8, proto: u8 },
    /// `host`/`net`: the address family is the network's.
    Net { dir: Dir, net: Cidr },
    /// `port`/`portrange`; `proto` 0 is TCP, UDP or SCTP, else that protocol.
    Port {
        dir: Dir,
        lo: u16,
        hi: u16,
        proto: u8,
    },
}

impl fmt::Display for Prim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto_word = |p: u8| match p {
            6 => "tcp ",
            17 => "udp ",
            132 => "sctp ",
            _ => "",
        };
        match *self {
            Prim::Version(4) => f.write_str("ip"),
            Prim::Version(_) => f.write_str("ip6"),
            Prim::Proto { version: 0, proto } if matches!(proto, 6 | 17 | 132) => {
                f.write_str(proto_word(proto).trim_end())
            }
            Prim::Proto {
                version: 4,
                proto: 1,
            } => f.write_str("icmp"),
            Prim::Proto {
                version: 6,
                proto: 58,
            } => f.write_str("icmp6"),
            Prim::Proto { version: 0, proto } => write!(f, "proto {proto}"),
            Prim::Proto { version: 4, proto } => write!(f, "ip proto {proto}"),
            Prim::Proto { proto, .. } => write!(f, "ip6 proto {proto}"),
            Prim::Net { dir, net } => {
                let max = if net.addr.is_ipv4() { 32 } else { 128 };
                let kind = if net.prefix == max { "host" } else { "net" };
                write!(f, "{}{kind} {net}", dir.word())
            }
            Prim::Port { dir, lo, hi, proto } if lo == hi => {
                write!(f, "{}{}port {lo}", proto_word(proto), dir.word())
            }
            Prim::Port { dir, lo, hi, proto } => {
                write!(f, "{}{}portrange {lo}-{hi}", proto_word(proto), dir.word())
            }
        }
    }
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Prim(Prim),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wrap = |e: &Expr, f: &mut fmt::Formatter<'_>| match e {
            Expr::Prim(_) | Expr::Not(_) => write!(f, "{e}"),
            _ => write!(f, "({e})"),
        };
        match self {
            Expr::Prim(p) => write!(f, "{p}"),
            Expr::Not(e) => {
                f.write_str("not ")?;
                wrap(e, f)
            }
            Expr::And(a, b) => {
                // Left-associative, like pcap-filter: only the right side
                // needs parentheses.
                match **a {
                    Expr::Or(..) => wrap(a, f)?,
                    _ => write!(f, "{a}")?,
                }
                f.write_str(" and ")?;
                wrap(b, f)
            }
            Expr::Or(a, b) => {
                match **a {
                    Expr::And(..) => wrap(a, f)?,
                    _ => write!(f, "{a}")?,
                }
                f.write_str(" or ")?;
                wrap(b, f)
            }
        }
    }
}

/// The primitives pathtrace supports, for the refusal line.
pub const SUPPORTED: &str = "host, net (ADDR/LEN or ADDR mask MASK), port, portrange, \
     each with src, dst, src or dst, src and dst; ip, ip6, tcp, udp, icmp, icmp6, sctp, \
     proto N; and (&&), or (||), not (!), parentheses";

/// Why an expression can't be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExprError {
    #[error("filter expression: '{0}' is not supported; pathtrace supports {SUPPORTED}")]
    Unsupported(String),
    #[error("filter expression: {0}")]
    Syntax(String),
    #[error(
        "the filter matches no packet{flow}, as tcpdump says of such an expression (it rejects all packets)"
    )]
    MatchesNothing { flow: String },
    #[error(
        "filter expression: it needs {terms} alternatives of up to {atoms} primitives; the kernel \
         side holds {max_terms} of up to {max_atoms} (simplify it or trace with fewer flows)"
    )]
    TooLarge {
        terms: usize,
        atoms: usize,
        max_terms: usize,
        max_atoms: usize,
    },
}

/// Words of pcap-filter that pathtrace doesn't decide in the kernel.
const UNSUPPORTED_WORDS: &[&str] = &[
    "ether",
    "fddi",
    "tr",
    "wlan",
    "link",
    "ppp",
    "slip",
    "arp",
    "rarp",
    "vlan",
    "mpls",
    "pppoed",
    "pppoes",
    "geneve",
    "vxlan",
    "gateway",
    "greater",
    "less",
    "len",
    "broadcast",
    "multicast",
    "inbound",
    "outbound",
    "ifname",
    "on",
    "rnr",
    "rulenum",
    "reason",
    "rset",
    "srnr",
    "subrulenum",
    "action",
    "protochain",
    "igmp",
    "igrp",
    "pim",
    "vrrp",
    "carp",
    "ah",
    "esp",
    "atalk",
    "aarp",
    "decnet",
    "iso",
    "stp",
    "ipx",
    "netbeui",
    "lat",
    "sca",
    "moprc",
    "mopdl",
    "isis",
    "clnp",
    "esis",
    "es-is",
    "is-is",
    "l1",
    "l2",
    "iih",
    "lsp",
    "snp",
    "csnp",
    "psnp",
    "llc",
    "type",
    "subtype",
    "dir",
    "ra",
    "ta",
    "addr1",
    "addr2",
    "addr3",
    "addr4",
    "bpf",
    "radio",
    "hsls",
    "lane",
    "oam",
    "oamf4",
    "oamf4ec",
    "oamf4sc",
    "metac",
    "bcc",
    "sc",
    "ilmic",
    "connectmsg",
    "metaconnect",
    "vpi",
    "vci",
    "fisu",
    "lssu",
    "msu",
    "sio",
    "opc",
    "dpc",
    "sls",
    "gre",
    "udplite",
    "sctp6",
    "tcp6",
    "udp6",
    "ip6proto",
    "host6",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    LParen,
    RParen,
    Not,
    And,
    Or,
}

fn lex(words: &[String]) -> Result<Vec<Tok>, ExprError> {
    let mut out = Vec::new();
    for w in words {
        let mut word = String::new();
        let mut chars = w.chars().peekable();
        let flush = |word: &mut String, out: &mut Vec<Tok>| {
            if !word.is_empty() {
                let t = match word.as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Word(word.clone()),
                };
                out.push(t);
                word.clear();
            }
        };
        while let Some(c) = chars.next() {
            match c {
                c if c.is_whitespace() => flush(&mut word, &mut out),
                '(' | ')' => {
                    flush(&mut word, &mut out);
                    out.push(if c == '(' { Tok::LParen } else { Tok::RParen });
                }
                '!' if chars.peek() != Some(&'=') => {
                    flush(&mut word, &mut out);
                    out.push(Tok::Not);
                }
                '&' | '|' if chars.peek() == Some(&c) => {
                    chars.next();
                    flush(&mut word, &mut out);
                    out.push(if c == '&' { Tok::And } else { Tok::Or });
                }
                '[' => {
                    return Err(ExprError::Unsupported(format!(
                        "{}[…] (byte offsets)",
                        if word.is_empty() { "" } else { &word }
                    )))
                }
                '=' | '<' | '>' | '&' | '|' | '+' | '*' | '%' | '^' | ']' => {
                    return Err(ExprError::Unsupported(format!(
                        "'{c}' (arithmetic and comparisons)"
                    )))
                }
                c => word.push(c),
            }
        }
        flush(&mut word, &mut out);
    }
    Ok(out)
}

/// The qualifiers of a primitive, kept for the ids that follow it bare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Quals {
    proto: Option<ProtoQual>,
    dir: Option<Dir>,
    kind: Option<Kind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProtoQual {
    Ip,
    Ip6,
    Transport(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Host,
    Net,
    Port,
    PortRange,
    Proto,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    last: Option<Quals>,
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "ip" | "ip6"
            | "tcp"
            | "udp"
            | "sctp"
            | "icmp"
            | "icmp6"
            | "src"
            | "dst"
            | "host"
            | "net"
            | "port"
            | "portrange"
            | "proto"
            | "mask"
    )
}

fn unsupported_word(w: &str) -> Option<ExprError> {
    let lower = w.to_ascii_lowercase();
    UNSUPPORTED_WORDS
        .contains(&lower.as_str())
        .then(|| ExprError::Unsupported(w.to_owned()))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_word(&self, at: usize) -> Option<&str> {
        match self.toks.get(self.pos + at) {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                    let right = self.unary()?;
                    left = Expr::And(Box::new(left), Box::new(right));
                }
                Some(Tok::Or) => {
                    self.pos += 1;
                    let right = self.unary()?;
                    left = Expr::Or(Box::new(left), Box::new(right));
                }
                _ => return Ok(left),
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        match self.next() {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::LParen) => {
                let e = self.expr()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err(ExprError::Syntax("a '(' is not closed".into())),
                }
            }
            Some(Tok::Word(w)) => {
                self.pos -= 1;
                self.primitive(&w)
            }
            Some(Tok::RParen) => Err(ExprError::Syntax(
                "')' without a primitive before it".into(),
            )),
            Some(Tok::And | Tok::Or) => Err(ExprError::Syntax(
                "'and'/'or' without a primitive before it".into(),
            )),
            None => Err(ExprError::Syntax(
                "it ends where a primitive should follow".into(),
            )),
        }
    }

    fn primitive(&mut self, first: &str) -> Result<Expr, ExprError> {
        if let Some(e) = unsupported_word(first) {
            return Err(e);
        }
        if !is_keyword(first) {
            // A bare id takes the qualifiers of the primitive before it.
            let Some(q) = self.last else {
                return Err(ExprError::Syntax(format!(
                    "'{first}' needs a qualifier such as host, net or port before it"
                )));
            };
            self.pos += 1;
            return self.id(q, first).map(Expr::Prim);
        }
        if let Some(icmp) = self.icmp(first)? {
            return Ok(Expr::Prim(icmp));
        }
        let q = Quals {
            proto: self.proto_qualifier(first),
            dir: self.dir_qualifier(),
            kind: self.kind_qualifier(),
        };
        if q.dir.is_none() && q.kind.is_none() {
            return self.proto_alone(q.proto, first).map(Expr::Prim);
        }
        let id = match self.next() {
            Some(Tok::Word(w)) => w,
            _ => {
                return Err(ExprError::Syntax(format!(
                    "'{first}…' ends where an address, network or port should follow"
                )))
            }
        };
        if let Some(e) = unsupported_word(&id) {
            return Err(e);
        }
        if is_keyword(&id) && !id.starts_with('\\') {
            return Err(ExprError::Syntax(format!(
                "'{id}' can't follow those qualifiers"
            )));
        }
        let prim = self.id(q, &id)?;
        self.last = Some(q);
        Ok(Expr::Prim(prim))
    }

    /// `icmp` and `icmp6`, which take no qualifier after them.
    fn icmp(&mut self, first: &str) -> Result<Option<Prim>, ExprError> {
        let (version, proto) = match first {
            "icmp" => (4, 1),
            "icmp6" => (6, 58),
            _ => return Ok(None),
        };
        self.pos += 1;
        self.refuse_following_qualifier(first)?;
        Ok(Some(Prim::Proto { version, proto }))
    }

    /// `ip`, `ip6`, `tcp`, `udp`, `sctp`, taken when `first` is one.
    fn proto_qualifier(&mut self, first: &str) -> Option<ProtoQual> {
        let q = match first {
            "ip" => ProtoQual::Ip,
            "ip6" => ProtoQual::Ip6,
            "tcp" => ProtoQual::Transport(6),
            "udp" => ProtoQual::Transport(17),
            "sctp" => ProtoQual::Transport(132),
            _ => return None,
        };
        self.pos += 1;
        Some(q)
    }

    /// A direction qualifier: src, dst, src or dst, src and dst.
    fn dir_qualifier(&mut self) -> Option<Dir> {
        let d @ ("src" | "dst") = self.peek_word(0)? else {
            return None;
        };
        let is_src = d == "src";
        let other = if is_src { "dst" } else { "src" };
        self.pos += 1;
        let joined = match (self.peek(), self.peek_word(1)) {
            (Some(Tok::Or), Some(w)) if w == other => Some(Dir::Either),
            (Some(Tok::And), Some(w)) if w == other => Some(Dir::Both),
            _ => None,
        };
        Some(match joined {
            Some(j) => {
                self.pos += 2;
                j
            }
            None if is_src => Dir::Src,
            None => Dir::Dst,
        })
    }

    /// A type qualifier: host, net, port, portrange, proto.
    fn kind_qualifier(&mut self) -> Option<Kind> {
        let kind = match self.peek_word(0)? {
            "host" => Kind::Host,
            "net" => Kind::Net,
            "port" => Kind::Port,
            "portrange" => Kind::PortRange,
            "proto" => Kind::Proto,
            _ => return None,
        };
        self.pos += 1;
        Some(kind)
    }

    /// A protocol alone: `ip`, `tcp`.
    fn proto_alone(&self, proto: Option<ProtoQual>, first: &str) -> Result<Prim, ExprError> {
        let p = match proto {
            Some(ProtoQual::Ip) => Prim::Version(4),
            Some(ProtoQual::Ip6) => Prim::Version(6),
            Some(ProtoQual::Transport(p)) => Prim::Proto {
                version: 0,
                proto: p,
            },
            None => {
                return Err(ExprError::Syntax(format!(
                    "'{first}' needs a value after it"
                )))
            }
        };
        self.refuse_following_qualifier(first)?;
        Ok(p)
    }

    /// pcap-filter has no `tcp src` or `icmp port`: a direction or a type
    /// after a protocol alone is an error, not a silently different filter.
    fn refuse_following_qualifier(&self, first: &str) -> Result<(), ExprError> {
        match self.peek_word(0) {
            Some(w) if is_keyword(w) && !matches!(w, "ip" | "ip6") => Err(ExprError::Syntax(
                format!("'{first} {w}' is not a primitive"),
            )),
            Some(w) if !is_keyword(w) && unsupported_word(w).is_none() => Err(ExprError::Syntax(
                format!("'{w}' after '{first}' is not a primitive"),
            )),
            _ => Ok(()),
        }
    }

    fn id(&mut self, q: Quals, id: &str) -> Result<Prim, ExprError> {
        let dir = q.dir.unwrap_or(Dir::Either);
        let kind = q.kind.unwrap_or(Kind::Host);
        match kind {
            Kind::Host | Kind::Net => {
                let version = match q.proto {
                    None => None,
                    Some(ProtoQual::Ip) => Some(4),
                    Some(ProtoQual::Ip6) => Some(6),
                    Some(ProtoQual::Transport(p)) => {
                        return Err(ExprError::Syntax(format!(
                            "'{}' can't qualify a host or a network",
                            super::filter::proto_name(p)
                        )))
                    }
                };
                let net = if kind == Kind::Host {
                    host(id)?
                } else {
                    self.net(id)?
                };
                let v = if net.addr.is_ipv4() { 4 } else { 6 };
                if version.is_some_and(|want| want != v) {
                    return Err(ExprError::Syntax(format!(
                        "'{id}' is not an IPv{} address",
                        version.unwrap_or(v)
                    )));
                }
                Ok(Prim::Net { dir, net })
            }
            Kind::Port | Kind::PortRange => {
                let proto = match q.proto {
                    None => 0,
                    Some(ProtoQual::Transport(p)) => p,
                    Some(_) => {
                        return Err(ExprError::Syntax(
                            "'ip'/'ip6' can't qualify a port; use tcp, udp or sctp".into(),
                        ))
                    }
                };
                let (lo, hi) = if kind == Kind::Port {
                    let p = port(id)?;
                    (p, p)
                } else {
                    let (a, b) = id.split_once('-').ok_or_else(|| {
                        ExprError::Syntax(format!("'{id}' is not a port range (LOW-HIGH)"))
                    })?;
                    let (a, b) = (port(a)?, port(b)?);
                    (a.min(b), a.max(b))
                };
                Ok(Prim::Port { dir, lo, hi, proto })
            }
            Kind::Proto => {
                if q.dir.is_some() {
                    return Err(ExprError::Syntax("'src'/'dst' can't qualify proto".into()));
                }
                let version = match q.proto {
                    None => 0,
                    Some(ProtoQual::Ip) => 4,
                    Some(ProtoQual::Ip6) => 6,
                    Some(ProtoQual::Transport(_)) => {
                        return Err(ExprError::Syntax(
                            "only ip and ip6 can qualify proto".into(),
                        ))
                    }
                };
                let proto = match id.strip_prefix('\\').unwrap_or(id) {
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    "icmp6" => 58,
                    "sctp" => 132,
                    n => n.parse::<u8>().map_err(|_| {
                        ExprError::Syntax(format!(
                            "'{id}' is not a protocol number (0-255) or \\tcp, \\udp, \\icmp, \\icmp6, \\sctp"
                        ))
                    })?,
                };
                Ok(Prim::Proto { version, proto })
            }
        }
    }

    fn net(&mut self, id: &str) -> Result<Cidr, ExprError> {
        if self.peek_word(0) == Some("mask") {
            self.pos += 1;
            let mask = match self.next() {
                Some(Tok::Word(m)) => m,
                _ => return Err(ExprError::Syntax("'mask' needs a netmask after it".into())),
            };
            let (Ok(a), Ok(m)) = (id.parse::<Ipv4Addr>(), mask.parse::<Ipv4Addr>()) else {
                return Err(ExprError::Syntax(format!(
                    "'{id} mask {mask}' needs an IPv4 network and an IPv4 netmask"
                )));
            };
            let m = u32::from(m);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err(ExprError::Syntax(format!(
                    "'{mask}' is not a netmask of contiguous bits"
                )));
            }
            if u32::from(a) & !m != 0 {
                return Err(ExprError::Syntax(format!(
                    "'{id} mask {mask}' has bits set outside the mask"
                )));
            }
            return Ok(Cidr {
                addr: IpAddr::V4(a),
                prefix: m.leading_ones() as u8,
            });
        }
        let c = if id.contains('/') {
            id.parse::<Cidr>().map_err(ExprError::Syntax)?
        } else if let Some(c) = partial_v4(id) {
            c
        } else {
            id.parse::<Cidr>().map_err(|_| not_an_address(id))?
        };
        if masked(c) != c.addr {
            return Err(ExprError::Syntax(format!(
                "'{id}' has bits set outside its prefix (the network is {}/{})",
                masked(c),
                c.prefix
            )));
        }
        Ok(c)
    }
}

fn not_an_address(id: &str) -> ExprError {
    if id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && id.chars().any(|c| c.is_ascii_alphabetic())
    {
        ExprError::Unsupported(format!("{id} (host names: give an address)"))
    } else {
        ExprError::Syntax(format!("'{id}' is not an IPv4 or IPv6 address"))
    }
}

fn host(id: &str) -> Result<Cidr, ExprError> {
    if id.contains('/') {
        return Err(ExprError::Syntax(format!(
            "'{id}': a prefix is for 'net', not 'host'"
        )));
    }
    let addr: IpAddr = id.parse().map_err(|_| not_an_address(id))?;
    Ok(Cidr {
        addr,
        prefix: if addr.is_ipv4() { 32 } else { 128 },
    })
}

/// tcpdump's `net 192.0.2` (a /24) and `net 10` (a /8).
fn partial_v4(id: &str) -> Option<Cidr> {
    let parts: Vec<&str> = id.split('.').collect();
    if parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        *o = p.parse().ok()?;
    }
    Some(Cidr {
        addr: IpAddr::from(octets),
        prefix: 8 * parts.len() as u8,
    })
}

fn masked(c: Cidr) -> IpAddr {
    match c.addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(c.prefix)).unwrap_or(0);
            IpAddr::from((u32::from(a) & m).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(c.prefix))
                .unwrap_or(0);
            IpAddr::from((u128::from(a) & m).to_be_bytes())
        }
    }
}

fn port(s: &str) -> Result<u16, ExprError> {
    s.parse::<u16>().map_err(|_| {
        if s.chars().any(|c| c.is_ascii_alphabetic()) {
            ExprError::Unsupported(format!("{s} (service names: give the port number)"))
        } else {
            ExprError::Syntax(format!("'{s}' is not a port (0-65535)"))
        }
    })
}

/// Parses an expression given as one or several command-line words.
pub fn parse(words: &[String]) -> Result<Option<Expr>, ExprError> {
    let toks = lex(words)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        last: None,
    };
    let e = p.expr()?;
    match p.peek() {
        None => Ok(Some(e)),
        Some(Tok::RParen) => Err(ExprError::Syntax("a ')' has no '(' before it".into())),
        Some(Tok::Word(w)) => Err(unsupported_word(w).unwrap_or_else(|| {
            ExprError::Syntax(format!(
                "'{w}' follows a complete primitive (join them with and/or)"
            ))
        })),
        Some(_) => Err(ExprError::Syntax(
            "'not' must come before a primitive".into(),
        )),
    }
}

/// A primitive or its negation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lit {
    pub prim: Prim,
    pub negate: bool,
}

/// A disjunction of conjunctions.
pub type Dnf = Vec<Vec<Lit>>;

/// Past this many alternatives while expanding, the expression is refused
/// before simplification can bring it back down.
const EXPAND_LIMIT: usize = 4096;

fn too_large(terms: usize) -> ExprError {
    ExprError::TooLarge {
        terms,
        atoms: 0,
        max_terms: tracer_common::MAX_TERMS,
        max_atoms: tracer_common::MAX_ATOMS,
    }
}

/// The expression (negated when `neg`) as a simplified disjunction of
/// conjunctions.
pub fn dnf(e: &Expr, neg: bool) -> Result<Dnf, ExprError> {
    let d = match (e, neg) {
        (Expr::Prim(p), negate) => vec![vec![Lit { prim: *p, negate }]],
        (Expr::Not(e), neg) => dnf(e, !neg)?,
        (Expr::And(a, b), false) | (Expr::Or(a, b), true) => {
            let (a, b) = (dnf(a, neg)?, dnf(b, neg)?);
            if a.len() * b.len() > EXPAND_LIMIT {
                return Err(too_large(a.len() * b.len()));
            }
            let mut out = Vec::with_capacity(a.len() * b.len());
            for x in &a {
                for y in &b {
                    let mut t = x.clone();
                    t.extend_from_slice(y);
                    out.push(t);
                }
            }
            out
        }
        (Expr::Or(a, b), false) | (Expr::And(a, b), true) => {
            let mut a = dnf(a, neg)?;
            a.extend(dnf(b, neg)?);
            a
        }
    };
    Ok(simplify(d))
}

/// Sorts and dedups each conjunction, drops those that contradict
/// themselves, and drops those that another (a subset) already covers.
pub fn simplify(d: Dnf) -> Dnf {
    let mut terms: Vec<Vec<Lit>> = d
        .into_iter()
        .filter_map(|mut t| {
            t.sort();
            t.dedup();
            let contradicts = t.iter().any(|l| {
                t.contains(&Lit {
                    prim: l.prim,
                    negate: !l.negate,
                })
            });
            (!contradicts && satisfiable_versions(&t)).then_some(t)
        })
        .collect();
    terms.sort_by_key(Vec::len);
    terms.dedup();
    let mut out: Vec<Vec<Lit>> = Vec::new();
    for t in terms {
        if !out.iter().any(|kept| kept.iter().all(|l| t.contains(l))) {
            out.push(t);
        }
    }
    out
}

/// False when the conjunction's positive primitives need both IPv4 and
/// IPv6 (`ip and ip6`, `host 192.0.2.1 and icmp6`).
fn satisfiable_versions(t: &[Lit]) -> bool {
    let mut need = 0u8;
    for l in t.iter().filter(|l| !l.negate) {
        let v = match l.prim {
            Prim::Version(v) => v,
            Prim::Proto { version, .. } => version,
            Prim::Net { net, .. } => {
                if net.addr.is_ipv4() {
                    4
                } else {
                    6
                }
            }
            Prim::Port { .. } => 0,
        };
        if v != 0 {
            if need != 0 && need != v {
                return false;
            }
            need = v;
        }
    }
    true
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;

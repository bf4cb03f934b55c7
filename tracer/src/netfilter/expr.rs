//! nf_tables expressions that set `meta nftrace` on packets matching a filter.

use std::net::IpAddr;

use tracer_common::{has_ports, PORT_DEFAULT_PROTOS};

use super::attrs::AttrWriter;
use super::NfError;
use crate::model::{Cidr, FlowFilter};

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFT_REG_1: u32 = libc::NFT_REG_1 as u32;
const NFT_CMP_EQ: u32 = libc::NFT_CMP_EQ as u32;

pub const NFT_META_NFTRACE: u32 = libc::NFT_META_NFTRACE as u32;
pub const NFT_META_NFPROTO: u32 = libc::NFT_META_NFPROTO as u32;
pub const NFT_META_L4PROTO: u32 = libc::NFT_META_L4PROTO as u32;
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;

/// One nf_tables expression, always working on register 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg 1`
    Meta(u32),
    /// `payload load LEN @ BASE + OFFSET => reg 1`
    Payload { base: u32, offset: u32, len: u32 },
    /// `bitwise reg 1 = (reg 1 & MASK) ^ 0`
    Mask(Vec<u8>),
    /// `cmp eq reg 1 VALUE`
    Eq(Vec<u8>),
    /// `immediate reg 1 1; meta set nftrace with reg 1`
    SetNftrace,
}

fn addr_match(out: &mut Vec<Expr>, a: (IpAddr, u8), src: bool) -> Result<(), NfError> {
    addr_at(out, a, NFT_PAYLOAD_NETWORK_HEADER, addr_offset(a.0, src))
}

/// Where an IP header holds its source or destination address.
fn addr_offset(addr: IpAddr, src: bool) -> u32 {
    match (addr, src) {
        (IpAddr::V4(_), true) => 12,
        (IpAddr::V4(_), false) => 16,
        (IpAddr::V6(_), true) => 8,
        (IpAddr::V6(_), false) => 24,
    }
}

/// Matches `addr/prefix` at `base + offset`.
fn addr_at(
    out: &mut Vec<Expr>,
    (addr, prefix): (IpAddr, u8),
    base: u32,
    offset: u32,
) -> Result<(), NfError> {
    let bytes = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let prefix = usize::from(prefix);
    if prefix > bytes.len() * 8 {
        return Err(NfError::Filter(format!(
            "prefix /{prefix} too long for {addr}"
        )));
    }
    if prefix == 0 {
        return Ok(());
    }
    let nbytes = prefix.div_ceil(8);
    let mut mask = vec![0xffu8; nbytes];
    if prefix % 8 != 0 {
        mask[nbytes - 1] = 0xffu8 << (8 - prefix % 8);
    }
    let value: Vec<u8> = bytes[..nbytes]
        .iter()
        .zip(&mask)
        .map(|(b, m)| b & m)
        .collect();
    out.push(Expr::Payload {
        base,
        offset,
        len: nbytes as u32,
    });
    if prefix % 8 != 0 {
        out.push(Expr::Mask(mask));
    }
    out.push(Expr::Eq(value));
    Ok(())
}

struct Dir {
    src: Option<(IpAddr, u8)>,
    dst: Option<(IpAddr, u8)>,
    sport: Option<u16>,
    dport: Option<u16>,
}

fn rules_for_dir(f: &FlowFilter, d: &Dir, out: &mut Vec<Vec<Expr>>) -> Result<(), NfError> {
    let v6 = match (d.src.map(|a| a.0), d.dst.map(|a| a.0)) {
        (Some(a), Some(b)) if a.is_ipv6() != b.is_ipv6() => {
            return Err(NfError::Filter(format!(
                "{a} and {b} are of different families"
            )))
        }
        (Some(a), _) | (None, Some(a)) => Some(a.is_ipv6()),
        (None, None) => None,
    };
    let with_ports = d.sport.is_some() || d.dport.is_some();
    let protos: Vec<Option<u8>> = match f.proto.map(|p| p.0) {
        Some(p) if with_ports && !has_ports(p) => {
            return Err(NfError::Filter(format!("protocol {p} has no ports")))
        }
        Some(p) => vec![Some(p)],
        None if with_ports => PORT_DEFAULT_PROTOS.map(Some).to_vec(),
        None => vec![None],
    };
    for proto in protos {
        let mut r = Vec::new();
        if let Some(v6) = v6 {
            r.push(Expr::Meta(NFT_META_NFPROTO));
            r.push(Expr::Eq(vec![if v6 {
                super::NFPROTO_IPV6
            } else {
                super::NFPROTO_IPV4
            }]));
        }
        if let Some(p) = proto {
            r.push(Expr::Meta(NFT_META_L4PROTO));
            r.push(Expr::Eq(vec![p]));
        }
        if let Some(a) = d.src {
            addr_match(&mut r, a, true)?;
        }
        if let Some(a) = d.dst {
            addr_match(&mut r, a, false)?;
        }
        for (port, offset) in [(d.sport, 0), (d.dport, 2)] {
            if let Some(port) = port {
                r.push(Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset,
                    len: 2,
                });
                r.push(Expr::Eq(port.to_be_bytes().to_vec()));
            }
        }
        r.push(Expr::SetNftrace);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if let Some(v6) = v6 {
        icmp_errors_for_dir(v6, d, out)?;
    }
    Ok(())
}

/// Rules that trace the ICMP errors about this direction's packets (a
/// router's fragmentation-needed, a host-unreachable, a time-exceeded),
/// matched on the header they quote: the IP header after the ICMP one's 8
/// bytes, then the ports.
fn icmp_errors_for_dir(v6: bool, d: &Dir, out: &mut Vec<Vec<Expr>>) -> Result<(), NfError> {
    let (nfproto, l4, types, inner_ports): (u8, u8, &[u8], u32) = if v6 {
        (super::NFPROTO_IPV6, 58, &[1, 2, 3], 8 + 40)
    } else {
        (super::NFPROTO_IPV4, 1, &[3, 11], 8 + 20)
    };
    for &ty in types {
        let mut r = vec![
            Expr::Meta(NFT_META_NFPROTO),
            Expr::Eq(vec![nfproto]),
            Expr::Meta(NFT_META_L4PROTO),
            Expr::Eq(vec![l4]),
            Expr::Payload {
                base: NFT_PAYLOAD_TRANSPORT_HEADER,
                offset: 0,
                len: 1,
            },
            Expr::Eq(vec![ty]),
        ];
        for (a, src) in [(d.src, true), (d.dst, false)] {
            if let Some(a) = a {
                addr_at(
                    &mut r,
                    a,
                    NFT_PAYLOAD_TRANSPORT_HEADER,
                    8 + addr_offset(a.0, src),
                )?;
            }
        }
        for (port, offset) in [(d.sport, 0), (d.dport, 2)] {
            if let Some(port) = port {
                r.push(Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: inner_ports + offset,
                    len: 2,
                });
                r.push(Expr::Eq(port.to_be_bytes().to_vec()));
            }
        }
        r.push(Expr::SetNftrace);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(())
}

/// The rules (lists of expressions) that trace packets matching any filter
/// (each said by its [`FlowFilter::flag_cover`]). No filter at all traces
/// every packet.
pub fn rules_for(filters: &[FlowFilter]) -> Result<Vec<Vec<Expr>>, NfError> {
    let mut out = Vec::new();
    if filters.is_empty() {
        out.push(vec![Expr::SetNftrace]);
    }
    let net = |c: Option<Cidr>| c.map(|c| (c.addr, c.prefix));
    for f in filters.iter().flat_map(FlowFilter::flag_cover) {
        let fwd = Dir {
            src: net(f.src),
            dst: net(f.dst),
            sport: f.sport,
            dport: f.dport,
        };
        rules_for_dir(&f, &fwd, &mut out)?;
        if f.both_directions {
            let rev = Dir {
                src: net(f.dst),
                dst: net(f.src),
                sport: f.dport,
                dport: f.sport,
            };
            rules_for_dir(&f, &rev, &mut out)?;
        }
    }
    Ok(out)
}

fn expr(w: &mut AttrWriter, name: &str, data: impl FnOnce(&mut AttrWriter)) {
    w.nest(NFTA_LIST_ELEM, |w| {
        w.put_str(NFTA_EXPR_NAME, name);
        w.nest(NFTA_EXPR_DATA, data);
    });
}

/// Writes the content of `NFTA_RULE_EXPRESSIONS` for one rule.
pub fn encode(w: &mut AttrWriter, exprs: &[Expr]) {
    for e in exprs {
        match e {
            Expr::Meta(key) => expr(w, "meta", |w| {
                w.put_be32(NFTA_META_DREG, NFT_REG_1)
                    .put_be32(NFTA_META_KEY, *key);
            }),
            Expr::Payload { base, offset, len } => expr(w, "payload", |w| {
                w.put_be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
                    .put_be32(NFTA_PAYLOAD_BASE, *base)
                    .put_be32(NFTA_PAYLOAD_OFFSET, *offset)
                    .put_be32(NFTA_PAYLOAD_LEN, *len);
            }),
            Expr::Mask(mask) => expr(w, "bitwise", |w| {
                w.put_be32(NFTA_BITWISE_SREG, NFT_REG_1)
                    .put_be32(NFTA_BITWISE_DREG, NFT_REG_1)
                    .put_be32(NFTA_BITWISE_LEN, mask.len() as u32)
                    .nest(NFTA_BITWISE_MASK, |w| {
                        w.put(NFTA_DATA_VALUE, mask);
                    })
                    .nest(NFTA_BITWISE_XOR, |w| {
                        w.put(NFTA_DATA_VALUE, &vec![0u8; mask.len()]);
                    });
            }),
            Expr::Eq(value) => expr(w, "cmp", |w| {
                w.put_be32(NFTA_CMP_SREG, NFT_REG_1)
                    .put_be32(NFTA_CMP_OP, NFT_CMP_EQ)
                    .nest(NFTA_CMP_DATA, |w| {
                        w.put(NFTA_DATA_VALUE, value);
                    });
            }),
            Expr::SetNftrace => {
                expr(w, "immediate", |w| {
                    w.put_be32(NFTA_IMMEDIATE_DREG, NFT_REG_1)
                        .nest(NFTA_IMMEDIATE_DATA, |w| {
                            w.put(NFTA_DATA_VALUE, &[1]);
                        });
                });
                expr(w, "meta", |w| {
                    w.put_be32(NFTA_META_KEY, NFT_META_NFTRACE)
                        .put_be32(NFTA_META_SREG, NFT_REG_1);
                });
            }
        }
    }
}

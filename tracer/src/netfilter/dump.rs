//! Listing nf_tables tables, chains and rules over netlink (`NFT_MSG_GET*` dumps).

use std::path::Path;
use std::time::Duration;

use super::attrs::{self, AttrIter, AttrWriter};
use super::netlink::*;
use super::socket::{BatchItem, NlSocket};
use super::NfError;
use crate::kernel::owner::TagKind;

pub const NFT_MSG_NEWTABLE: u16 = libc::NFT_MSG_NEWTABLE as u16;
pub const NFT_MSG_GETTABLE: u16 = libc::NFT_MSG_GETTABLE as u16;
pub const NFT_MSG_DELTABLE: u16 = libc::NFT_MSG_DELTABLE as u16;
pub const NFT_MSG_NEWCHAIN: u16 = libc::NFT_MSG_NEWCHAIN as u16;
pub const NFT_MSG_GETCHAIN: u16 = libc::NFT_MSG_GETCHAIN as u16;
pub const NFT_MSG_NEWRULE: u16 = libc::NFT_MSG_NEWRULE as u16;
pub const NFT_MSG_GETRULE: u16 = libc::NFT_MSG_GETRULE as u16;
pub const NFT_MSG_GETGEN: u16 = libc::NFT_MSG_GETGEN as u16;
const NFTA_GEN_ID: u16 = 1;

pub const NFTA_TABLE_NAME: u16 = 1;

/// Name of the table pathtrace creates (tagged with its owner when another
/// pathtrace in the same namespace already owns it, or on kernels without
/// owned tables).
pub const TABLE_NAME: &str = "pathtrace";
pub const NFTA_TABLE_FLAGS: u16 = 2;
pub const NFTA_TABLE_OWNER: u16 = 7;
pub const NFT_TABLE_F_OWNER: u32 = 2;

pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;

pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;

/// Runs a dump request and returns each reply as (nfgen_family, attributes).
pub(super) fn run_dump(
    sock: &mut NlSocket,
    kind: u16,
    family: u8,
    attrs: &[u8],
) -> Result<Vec<(u8, Vec<u8>)>, NfError> {
    dump_each(sock, kind, family, attrs, |out: &mut Vec<_>, fam, a| {
        out.push((fam, a.to_vec()));
    })
}

/// Runs a dump request and folds each reply (nfgen_family, attributes)
/// into a `T` as it arrives, so a dump of many rules is never held whole.
/// An interrupted dump starts again from `T::default()`.
pub(super) fn dump_each<T: Default>(
    sock: &mut NlSocket,
    kind: u16,
    family: u8,
    attrs: &[u8],
    mut each: impl FnMut(&mut T, u8, &[u8]),
) -> Result<T, NfError> {
    for _attempt in 0..3 {
        let seq = sock.next_seq();
        sock.send(&nfmsg(
            kind,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            0,
            attrs,
        ))?;
        let mut out = T::default();
        let mut interrupted = false;
        let mut buf = vec![0u8; 256 * 1024];
        'recv: loop {
            let n = match sock.recv(&mut buf, false) {
                Ok(Some(n)) => n,
                Ok(None) => return Err(NfError::Timeout("waiting for a netlink dump")),
                Err(source) => {
                    return Err(NfError::Io {
                        op: "recv(netlink dump)",
                        source,
                    })
                }
            };
            for m in messages(&buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.kind {
                    NLMSG_DONE => break 'recv,
                    NLMSG_ERROR => {
                        let errno = m.error().map_or(libc::EIO, |(e, _)| e);
                        if errno == 0 {
                            break 'recv;
                        }
                        return Err(NfError::Kernel {
                            what: "dump".to_string(),
                            source: std::io::Error::from_raw_os_error(errno),
                        });
                    }
                    _ => {
                        if let Some((fam, a)) = m.nf() {
                            each(&mut out, fam, a);
                        }
                    }
                }
            }
        }
        if !interrupted {
            return Ok(out);
        }
    }
    Err(NfError::Timeout("netlink dump kept being interrupted"))
}

/// A table as the kernel lists it.
#[derive(Debug, Clone)]
pub struct TableRec {
    pub family: u8,
    pub name: String,
    pub flags: u32,
    pub owner: Option<u32>,
}

/// A chain: its name, and its hook when it is a base chain.
#[derive(Debug, Clone)]
pub struct ChainRec {
    pub name: String,
    pub hook: Option<u8>,
}

/// A rule: where it is, its handle, and what iptables-nft leaves in it.
#[derive(Debug, Clone)]
pub struct RuleRec {
    pub chain: String,
    pub handle: u64,
    /// It has xt compat expressions (`match`, `target`).
    pub compat: bool,
    /// It has a `counter` expression.
    pub counter: bool,
    pub has_userdata: bool,
}

fn msg(kind: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | kind
}

/// All tables of `family` (NFPROTO_UNSPEC = 0 for every family).
pub fn tables(sock: &mut NlSocket, family: u8) -> Result<Vec<TableRec>, NfError> {
    let replies = run_dump(sock, msg(NFT_MSG_GETTABLE), family, &[])?;
    Ok(replies
        .into_iter()
        .map(|(family, a)| TableRec {
            family,
            name: attrs::find(&a, NFTA_TABLE_NAME)
                .map(attrs::string)
                .unwrap_or_default(),
            flags: attrs::find(&a, NFTA_TABLE_FLAGS)
                .and_then(attrs::be32)
                .unwrap_or(0),
            owner: attrs::find(&a, NFTA_TABLE_OWNER).and_then(attrs::be32),
        })
        .collect())
}

/// The chains of one table.
pub fn chains(sock: &mut NlSocket, family: u8, table: &str) -> Result<Vec<ChainRec>, NfError> {
    // The kernel doesn't filter chain dumps by table: filter here.
    let replies = run_dump(sock, msg(NFT_MSG_GETCHAIN), family, &[])?;
    let mut out = Vec::new();
    for (fam, a) in replies {
        let t = attrs::find(&a, NFTA_CHAIN_TABLE).map(attrs::string);
        if fam != family || t.as_deref() != Some(table) {
            continue;
        }
        let hook = attrs::find(&a, NFTA_CHAIN_HOOK)
            .and_then(|h| attrs::find(h, NFTA_HOOK_HOOKNUM))
            .and_then(attrs::be32)
            .and_then(|h| u8::try_from(h).ok());
        out.push(ChainRec {
            name: attrs::find(&a, NFTA_CHAIN_NAME)
                .map(attrs::string)
                .unwrap_or_default(),
            hook,
        });
    }
    Ok(out)
}

/// The ruleset's generation: the kernel counts every change committed to
/// the namespace's ruleset.
pub fn generation(sock: &mut NlSocket) -> Result<u32, NfError> {
    let seq = sock.next_seq();
    sock.send(&nfmsg(msg(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, 0, 0, &[]))?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match sock.recv(&mut buf, false) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(NfError::Timeout("waiting for the ruleset generation")),
            Err(source) => {
                return Err(NfError::Io {
                    op: "recv(ruleset generation)",
                    source,
                })
            }
        };
        for m in messages(&buf[..n]).into_iter().filter(|m| m.seq == seq) {
            if m.kind == NLMSG_ERROR {
                let errno = m.error().map_or(libc::EIO, |(e, _)| e);
                return Err(NfError::Kernel {
                    what: "the ruleset generation".to_string(),
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
            if let Some(id) = m
                .nf()
                .and_then(|(_, a)| attrs::find(a, NFTA_GEN_ID))
                .and_then(attrs::be32)
            {
                return Ok(id);
            }
        }
    }
}

/// Every table with a chain of type nat, as (family, name).
pub fn nat_tables(sock: &mut NlSocket) -> Result<Vec<(u8, String)>, NfError> {
    let replies = run_dump(sock, msg(NFT_MSG_GETCHAIN), 0, &[])?;
    let mut out: Vec<(u8, String)> = Vec::new();
    for (family, a) in replies {
        let nat = attrs::find(&a, NFTA_CHAIN_TYPE).map(attrs::string);
        let table = attrs::find(&a, NFTA_CHAIN_TABLE).map(attrs::string);
        if let (Some("nat"), Some(table)) = (nat.as_deref(), table) {
            if !out.iter().any(|(f, t)| *f == family && *t == table) {
                out.push((family, table));
            }
        }
    }
    Ok(out)
}

/// What the rules of a table hold, for telling iptables-nft's tables.
#[derive(Debug, Default, Clone, Copy)]
pub struct RuleKinds {
    /// Some rule has xt compat expressions or userdata.
    pub compat: bool,
    /// Every rule has a `counter` (true for no rules).
    pub all_counted: bool,
}

/// Each chain's rule handles, in rule order.
pub type ChainHandles = Vec<(String, Vec<u64>)>;

/// The handles of the rules of one table, by chain, each chain in rule
/// order, folded as the dump arrives (no record per rule is kept).
pub fn rule_handles(
    sock: &mut NlSocket,
    family: u8,
    table: &str,
) -> Result<(ChainHandles, RuleKinds), NfError> {
    type Fold = (ChainHandles, Option<RuleKinds>);
    let mut req = AttrWriter::new();
    req.put_str(NFTA_RULE_TABLE, table);
    let (chains, kinds) = dump_each(
        sock,
        msg(NFT_MSG_GETRULE),
        family,
        req.as_bytes(),
        |(chains, kinds): &mut Fold, fam, a| {
            let Some(r) = (fam == family).then(|| rule_rec(a, table)).flatten() else {
                return;
            };
            let k = kinds.get_or_insert(RuleKinds {
                compat: false,
                all_counted: true,
            });
            k.compat |= r.compat || r.has_userdata;
            k.all_counted &= r.counter;
            // A dump lists a chain's rules together.
            match chains.last_mut() {
                Some((c, handles)) if *c == r.chain => handles.push(r.handle),
                _ => chains.push((r.chain, vec![r.handle])),
            }
        },
    )?;
    let kinds = kinds.unwrap_or(RuleKinds {
        compat: false,
        all_counted: true,
    });
    Ok((chains, kinds))
}

/// One rule of `table` from its attributes.
fn rule_rec(a: &[u8], table: &str) -> Option<RuleRec> {
    if attrs::find(a, NFTA_RULE_TABLE)
        .map(attrs::string)
        .as_deref()
        != Some(table)
    {
        return None;
    }
    let handle = attrs::find(a, NFTA_RULE_HANDLE).and_then(attrs::be64)?;
    let (mut compat, mut counter) = (false, false);
    let names = attrs::find(a, NFTA_RULE_EXPRESSIONS)
        .into_iter()
        .flat_map(AttrIter::new)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .filter_map(|(_, e)| attrs::find(e, NFTA_EXPR_NAME));
    for name in names {
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        compat |= name == b"match" || name == b"target";
        counter |= name == b"counter";
    }
    Some(RuleRec {
        chain: attrs::find(a, NFTA_RULE_CHAIN)
            .map(attrs::string)
            .unwrap_or_default(),
        handle,
        compat,
        counter,
        has_userdata: attrs::find(a, NFTA_RULE_USERDATA).is_some(),
    })
}

/// Whether a table name is one pathtrace creates ("pathtrace", or one
/// tagged with its owner: "pathtrace-<pid>-<start>", "pathtrace-<pid>").
pub fn is_ours(name: &str) -> bool {
    name == TABLE_NAME || TagKind::NftTable.parse(name).is_some()
}

/// Deletes the table `name` of `family`.
pub fn delete_table(ctl: &mut NlSocket, family: u8, name: &str) -> Result<(), NfError> {
    let mut a = AttrWriter::new();
    a.put_str(NFTA_TABLE_NAME, name);
    ctl.batch(&[BatchItem {
        kind: NFT_MSG_DELTABLE,
        flags: 0,
        family,
        attrs: a.into_bytes(),
        what: format!("deleting table {name}"),
    }])
}

/// Whether an unowned table of ours was left by a process that is gone: a
/// tagged name names its creator; a bare "pathtrace" came from a version
/// that never left one behind on purpose.
fn is_leftover(name: &str) -> bool {
    TagKind::NftTable
        .parse(name)
        .is_none_or(|owner| !owner.alive())
}

pub fn sweep(ctl: &mut NlSocket) -> Result<usize, NfError> {
    let mut n = 0;
    for t in tables(ctl, 0)? {
        if !is_ours(&t.name)
            || t.flags & NFT_TABLE_F_OWNER != 0
            || t.owner.is_some()
            || !is_leftover(&t.name)
        {
            continue;
        }
        delete_table(ctl, t.family, &t.name)?;
        log::info!(
            "netfilter: deleted leftover nftables table {} (family {})",
            t.name,
            t.family
        );
        n += 1;
    }
    Ok(n)
}

/// Deletes "pathtrace" tables that no socket owns (left by an older version).
/// Returns how many were deleted.
pub fn sweep_leftovers(netns: Option<&Path>) -> Result<usize, NfError> {
    in_netns::call_opt(netns, || {
        let mut ctl = NlSocket::open(false)?;
        ctl.set_rcv_timeout(Duration::from_secs(3))?;
        sweep(&mut ctl)
    })?
}

/// Whether the namespace at `netns` has firewall rules worth tracing: an
/// nftables table that isn't pathtrace's own (iptables-nft's included), or
/// an iptables-legacy table.
pub fn has_rules(netns: Option<&Path>) -> Result<bool, NfError> {
    in_netns::call_opt(netns, has_rules_here)?
}

/// [`has_rules`] for the calling thread's namespace.
pub fn has_rules_here() -> Result<bool, NfError> {
    let mut ctl = NlSocket::open(false)?;
    ctl.set_rcv_timeout(Duration::from_secs(3))?;
    let nft = tables(&mut ctl, 0)?.iter().any(|t| !is_ours(&t.name));
    let legacy = std::fs::read_to_string("/proc/thread-self/net/ip_tables_names")
        .is_ok_and(|names| !names.trim().is_empty());
    Ok(nft || legacy)
}

/// The ruleset generation of the namespace at `netns` (see [`generation`]).
pub fn ruleset_generation(netns: Option<&Path>) -> Result<u32, NfError> {
    in_netns::call_opt(netns, || {
        let mut ctl = NlSocket::open(false)?;
        ctl.set_rcv_timeout(Duration::from_secs(3))?;
        generation(&mut ctl)
    })?
}

/// The nat tables of a namespace: which they are, and a digest of their
/// rules' places and handles (a rule's handle is never given to another
/// rule of its table, so the digest changes exactly when the rules do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatTables {
    /// The ruleset generation, read first: a change between the reads
    /// shows as a newer generation next time.
    pub generation: u32,
    pub tables: Vec<(u8, String)>,
    pub digest: u64,
}

/// The tables with a nat chain in the namespace at `netns` (see [`NatTables`]).
pub fn nat_tables_at(netns: Option<&Path>) -> Result<NatTables, NfError> {
    in_netns::call_opt(netns, || {
        let mut ctl = NlSocket::open(false)?;
        ctl.set_rcv_timeout(Duration::from_secs(3))?;
        let generation = generation(&mut ctl)?;
        let tables = nat_tables(&mut ctl)?;
        let digest = rules_digest(&mut ctl, &tables)?;
        Ok::<_, NfError>(NatTables {
            generation,
            tables,
            digest,
        })
    })?
}

/// A digest of the chains and handles of the rules of `tables`.
fn rules_digest(ctl: &mut NlSocket, tables: &[(u8, String)]) -> Result<u64, NfError> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut digest = DefaultHasher::new();
    for (family, table) in tables {
        (family, table).hash(&mut digest);
        let mut req = AttrWriter::new();
        req.put_str(NFTA_RULE_TABLE, table);
        let h = dump_each(
            ctl,
            msg(NFT_MSG_GETRULE),
            *family,
            req.as_bytes(),
            |h: &mut DefaultHasher, _, a| {
                attrs::find(a, NFTA_RULE_CHAIN).hash(h);
                attrs::find(a, NFTA_RULE_HANDLE).hash(h);
            },
        )?;
        h.finish().hash(&mut digest);
    }
    Ok(digest.finish())
}

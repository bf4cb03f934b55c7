//! The compiled flow filter and the one function that matches a packet
//! against it, run by the kernel programs and by userspace alike.
//!
//! A filter is a table of distinct primitives ([`Atom`]s) and a disjunction
//! of [`Term`]s; a term is a conjunction of atoms that must hold and atoms
//! that must not, as two bit masks over the table. So each atom is judged
//! once per packet (and direction), and a term costs two mask tests. Each
//! term names the flow it belongs to (`compare` has two), and the first
//! term that matches decides the flow. Each atom means what its pcap-filter
//! primitive means in tcpdump, so that its negation (`not port 53`) matches
//! what tcpdump's `not` matches.
use core::mem::size_of;

/// Terms the kernel holds, for every flow together.
pub const MAX_TERMS: usize = 16;
/// Distinct atoms the kernel holds, for every flow together (at most 32:
/// a term's masks are `u32`).
pub const MAX_ATOMS: usize = 16;

pub mod atom_kind {
    /// `ip` / `ip6`: the IP version is `Atom::version`.
    pub const VERSION: u8 = 1;
    /// `proto N`: the protocol is `Atom::proto`, and the version is
    /// `Atom::version` unless that is 0 (`icmp` is IPv4's, `icmp6` IPv6's).
    pub const PROTO: u8 = 2;
    /// `net`/`host`: an address of version `Atom::version` within `net`/`mask`.
    pub const NET: u8 = 3;
    /// `port`/`portrange`: a TCP, UDP or SCTP packet (or one of protocol
    /// `Atom::proto` when that is not 0), not an IPv4 fragment after the
    /// first, with a port within `lo..=hi`.
    pub const PORT: u8 = 4;
}

/// Which of the packet's addresses or ports an atom looks at.
pub mod atom_dir {
    pub const SRC: u8 = 1;
    pub const DST: u8 = 2;
    /// `src or dst` (tcpdump's default).
    pub const EITHER: u8 = 3;
    /// `src and dst`.
    pub const BOTH: u8 = 4;
}

pub mod term_flags {
    /// Also match with source and destination swapped (the replies), and
    /// ICMP errors quoting a matching packet.
    pub const BIDIR: u32 = 1 << 0;
}

/// One primitive. Addresses are 16 bytes (IPv4 uses the first four), held
/// as two native-endian words with the mask applied.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Atom {
    /// [`atom_kind`].
    pub kind: u8,
    pub _pad0: u8,
    /// [`atom_dir`], for `NET` and `PORT`.
    pub dir: u8,
    /// 4 or 6; for `PROTO`, 0 is either.
    pub version: u8,
    pub proto: u8,
    pub _pad: [u8; 3],
    pub lo: u16,
    pub hi: u16,
    pub _pad1: u32,
    pub net: [u64; 2],
    pub mask: [u64; 2],
}
const _: () = assert!(size_of::<Atom>() == 48);

/// A conjunction: the atoms of `pos` hold and those of `neg` don't (bit
/// `i` is `Filter::atoms[i]`). No bit at all matches every IP packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Term {
    /// Index of the flow this term belongs to.
    pub flow: u32,
    /// [`term_flags`].
    pub flags: u32,
    pub pos: u32,
    pub neg: u32,
}
const _: () = assert!(size_of::<Term>() == 16);

/// The whole filter, as the kernel holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub atoms: [Atom; MAX_ATOMS],
    pub terms: [Term; MAX_TERMS],
    pub n_atoms: u32,
    pub n_terms: u32,
    /// 1 when a term has [`term_flags::BIDIR`]: only then are the
    /// reverse and quoted flows judged.
    pub bidir: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Filter>() == MAX_ATOMS * 48 + MAX_TERMS * 16 + 16);

/// Whether protocol `proto`'s transport header starts with the two ports,
/// and pathtrace reads them: TCP, UDP, SCTP and UDP-Lite. The kernel
/// programs and userspace (the filter, rule tracing) both ask this.
#[inline(always)]
pub const fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

/// The protocols a `port` primitive without one means, as in tcpdump:
/// TCP, UDP and SCTP.
pub const PORT_DEFAULT_PROTOS: [u8; 3] = [6, 17, 132];

/// Whether `proto` is one of [`PORT_DEFAULT_PROTOS`].
#[inline(always)]
pub const fn port_default(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

/// Whether a packet's ports were read.
pub mod ports {
    /// No ports: a protocol without them, or an IPv4 fragment after the first.
    pub const NONE: u8 = 0;
    pub const KNOWN: u8 = 1;
    /// Not read yet: port atoms count as matching, whatever their sign, so
    /// the answer is a superset of the final one.
    pub const UNKNOWN: u8 = 2;
}

/// The packet fields a filter looks at. The kernel keeps them in map
/// memory and the match reads each field afresh ([`FlowFields::get`]): a
/// value the verifier has compared stays a known value in a register, and
/// every atom of every term would then be walked once per value it has
/// seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFields {
    /// 4 or 6; 0 is not an IP packet and matches nothing.
    pub ip_version: u8,
    pub proto: u8,
    /// [`ports`].
    pub ports: u8,
    pub _pad: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<FlowFields>() == 40);

/// A flow to match: the fields, by reference.
pub type FlowView<'a> = &'a FlowFields;

#[inline(always)]
fn get<T: Copy>(r: &T) -> T {
    // SAFETY: `r` is a valid reference; a volatile read of it is a read.
    unsafe { core::ptr::read_volatile(r) }
}

/// The two native-endian words of a 16-byte address.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
}

/// The mask of a prefix of `len` bits over a 16-byte address, as words.
pub fn prefix_mask(len: u8) -> [u64; 2] {
    let mut m = [0u8; 16];
    for (i, b) in m.iter_mut().enumerate() {
        let bits = (len as i32 - i as i32 * 8).clamp(0, 8);
        *b = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    addr_words(&m)
}

#[inline(always)]
fn within(addr: &[u8; 16], net: &[u64; 2], mask: &[u64; 2]) -> bool {
    let a = addr_words(&get(addr));
    (a[0] & mask[0]) == net[0] && (a[1] & mask[1]) == net[1]
}

#[inline(always)]
fn by_dir(dir: u8, s: bool, d: bool) -> bool {
    match dir {
        atom_dir::SRC => s,
        atom_dir::DST => d,
        atom_dir::EITHER => s || d,
        _ => s && d,
    }
}

/// An atom's truth in the packet's own direction and in the reverse one
/// (source and destination swapped), judged in one pass.
#[derive(Clone, Copy)]
struct Both {
    fwd: bool,
    rev: bool,
}

impl Both {
    #[inline(always)]
    fn same(b: bool) -> Self {
        Self { fwd: b, rev: b }
    }

    /// From the source side's and the destination side's truth.
    #[inline(always)]
    fn by_dir(dir: u8, s: bool, d: bool) -> Self {
        Self {
            fwd: by_dir(dir, s, d),
            rev: by_dir(dir, d, s),
        }
    }
}

impl Atom {
    /// The atom's truth for `v` (before its negation), both ways.
    #[inline(always)]
    fn holds(&self, v: &FlowFields) -> Both {
        let version = get(&v.ip_version);
        let proto = get(&v.proto);
        match self.kind {
            atom_kind::VERSION => Both::same(version == self.version),
            atom_kind::PROTO => {
                Both::same((self.version == 0 || version == self.version) && proto == self.proto)
            }
            atom_kind::NET => {
                if version != self.version {
                    return Both::same(false);
                }
                Both::by_dir(
                    self.dir,
                    within(&v.saddr, &self.net, &self.mask),
                    within(&v.daddr, &self.net, &self.mask),
                )
            }
            atom_kind::PORT => {
                let carries = get(&v.ports) == ports::KNOWN
                    && if self.proto == 0 {
                        port_default(proto)
                    } else {
                        proto == self.proto
                    };
                if !carries {
                    return Both::same(false);
                }
                let (sport, dport) = (get(&v.sport), get(&v.dport));
                Both::by_dir(
                    self.dir,
                    self.lo <= sport && sport <= self.hi,
                    self.lo <= dport && dport <= self.hi,
                )
            }
            _ => Both::same(false),
        }
    }
}

/// How much of a [`Filter`] is in use. The kernel programs take it from
/// read-only globals the loader sets, so the verifier walks only the atoms
/// and terms there are (and, without replies, no reverse or quoted flow),
/// not every slot: its work, and the programs' load time, follow the
/// expression's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub atoms: u32,
    pub terms: u32,
    pub bidir: bool,
}

impl Filter {
    /// The shape this filter's own counts give.
    pub fn shape(&self) -> Shape {
        Shape {
            atoms: self.n_atoms,
            terms: self.n_terms,
            bidir: self.bidir != 0,
        }
    }
}

/// Where the match keeps which atoms hold: in map memory in the kernel,
/// for the reason [`FlowFields`] is there (a mask the verifier knows bit by
/// bit doubles its states with every atom).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MatchScratch {
    /// Per flow judged (own forward, own reverse, quoted forward, quoted
    /// reverse): the atoms that hold, and those that can't be judged yet.
    pub holds: [u32; 4],
    pub unknown: [u32; 4],
}
const _: () = assert!(size_of::<MatchScratch>() == 32);

#[inline(always)]
fn put(r: &mut u32, v: u32) {
    // SAFETY: `r` is a valid, exclusive reference.
    unsafe { core::ptr::write_volatile(r, v) }
}

const OWN_FWD: usize = 0;
const OWN_REV: usize = 1;
const QUOTED_FWD: usize = 2;
const QUOTED_REV: usize = 3;

impl MatchScratch {
    /// Judges the first `atoms` atoms of `f` for `v` into slot `k`, and
    /// with `reverse_too` for `v` with source and destination swapped into
    /// slot `k + 1`, in one pass.
    #[inline(always)]
    fn judge(&mut self, k: usize, f: &Filter, atoms: u32, v: &FlowFields, reverse_too: bool) {
        if k + 1 >= 4 {
            return;
        }
        for slot in [k, k + 1] {
            put(&mut self.holds[slot], 0);
            put(&mut self.unknown[slot], 0);
        }
        if get(&v.ip_version) == 0 {
            return;
        }
        let mut i = 0usize;
        while i < MAX_ATOMS {
            if (i as u32) >= atoms {
                break;
            }
            let a = &f.atoms[i];
            if a.kind == atom_kind::PORT && get(&v.ports) == ports::UNKNOWN {
                let u = get(&self.unknown[k]) | 1 << i;
                put(&mut self.unknown[k], u);
                put(&mut self.unknown[k + 1], u);
            } else {
                let b = a.holds(v);
                if b.fwd {
                    let h = get(&self.holds[k]) | 1 << i;
                    put(&mut self.holds[k], h);
                }
                if reverse_too && b.rev {
                    let h = get(&self.holds[k + 1]) | 1 << i;
                    put(&mut self.holds[k + 1], h);
                }
            }
            i += 1;
        }
    }

    #[inline(always)]
    fn satisfies(&self, k: usize, t: &Term) -> bool {
        if k >= 4 {
            return false;
        }
        let holds = get(&self.holds[k]);
        let unknown = get(&self.unknown[k]);
        (holds | unknown) & t.pos == t.pos && holds & t.neg == 0
    }
}

impl Filter {
    /// The flow of the first term `own` matches. With [`term_flags::BIDIR`],
    /// replies match too, and so does an ICMP error whose `quoted` packet
    /// matches in either direction (`with_quoted`: there is one). `quoted`
    /// is a reference either way: a null one the compiler tests apart from
    /// `with_quoted` is a null dereference to older verifiers.
    #[inline(always)]
    pub fn first_match(
        &self,
        shape: Shape,
        own: &FlowFields,
        quoted: &FlowFields,
        with_quoted: bool,
        s: &mut MatchScratch,
    ) -> Option<u32> {
        if get(&own.ip_version) == 0 {
            return None;
        }
        let (bidir, atoms) = (shape.bidir, shape.atoms);
        s.judge(OWN_FWD, self, atoms, own, bidir);
        let with_quoted = bidir && with_quoted && get(&quoted.ip_version) != 0;
        if with_quoted {
            s.judge(QUOTED_FWD, self, atoms, quoted, true);
        }
        let mut i = 0usize;
        while i < MAX_TERMS {
            if (i as u32) >= shape.terms {
                break;
            }
            let t = &self.terms[i];
            if s.satisfies(OWN_FWD, t) {
                return Some(t.flow);
            }
            if t.flags & term_flags::BIDIR != 0
                && (s.satisfies(OWN_REV, t)
                    || (with_quoted && (s.satisfies(QUOTED_FWD, t) || s.satisfies(QUOTED_REV, t))))
            {
                return Some(t.flow);
            }
            i += 1;
        }
        None
    }

    /// Whether `own` matches a term in its own direction (no replies).
    pub fn matches_forward(&self, own: &FlowFields) -> bool {
        let mut s = MatchScratch::default();
        s.judge(OWN_FWD, self, self.n_atoms, own, false);
        own.ip_version != 0
            && self.terms[..(self.n_terms as usize).min(MAX_TERMS)]
                .iter()
                .any(|t| s.satisfies(OWN_FWD, t))
    }
}

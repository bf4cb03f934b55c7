//! Byte-level layout of a BTF blob: header, type records, strings, name index.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use super::{invalid, Btf, BtfError, Kind, Result};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_HEADER_LEN: usize = 12;

pub(super) struct Inner {
    base: Option<Btf>,
    data: Vec<u8>,
    big_endian: bool,
    /// Byte offset in `data` of each local type, indexed by `id - start_id`.
    offsets: Vec<u32>,
    strs: Range<usize>,
    start_id: u32,
    start_str_off: u32,
    index: OnceLock<NameIndex>,
}

/// Index of local type names: (hash of the name, local index) of every named
/// type, sorted; 8 bytes a type (a hash map with chains took 30).
struct NameIndex(Vec<(u32, u32)>);

/// A decoded view of one type.
#[derive(Clone, Copy)]
pub(crate) struct Ty<'a> {
    pub(crate) owner: &'a Btf,
    pub(crate) id: u32,
    pub(crate) kind: Kind,
    pub(crate) kind_flag: bool,
    pub(crate) vlen: usize,
    pub(crate) name_off: u32,
    pub(crate) size_or_type: u32,
    body: &'a [u8],
}

impl<'a> Ty<'a> {
    pub(crate) fn name(&self) -> Result<&'a str> {
        self.owner.str_at(self.name_off)
    }

    /// The `i`-th 32-bit word of the kind-specific data (bounds checked at parse time).
    pub(crate) fn word(&self, i: usize) -> u32 {
        let b = &self.body[i * 4..i * 4 + 4];
        let bytes = [b[0], b[1], b[2], b[3]];
        if self.owner.0.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    }
}

fn read_u32(data: &[u8], off: usize, big_endian: bool) -> u32 {
    let bytes = [data[off], data[off + 1], data[off + 2], data[off + 3]];
    if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl Btf {
    /// The blob this was parsed from (for vmlinux: the whole of it).
    pub fn raw(&self) -> &[u8] {
        &self.0.data
    }

    pub(super) fn parse(data: Vec<u8>, base: Option<Btf>) -> Result<Btf> {
        if data.len() < HEADER_LEN {
            return invalid("shorter than the BTF header");
        }
        if u32::try_from(data.len()).is_err() {
            return invalid("larger than 4 GiB");
        }
        let big_endian = match u16::from_le_bytes([data[0], data[1]]) {
            MAGIC => false,
            m if m == MAGIC.swap_bytes() => true,
            m => return invalid(format!("bad magic {m:#06x}")),
        };
        if data[2] != 1 {
            return invalid(format!("unsupported version {}", data[2]));
        }
        if let Some(b) = &base {
            if b.0.big_endian != big_endian {
                return invalid("split BTF endianness differs from its base");
            }
        }
        let field = |i: usize| read_u32(&data, 4 + 4 * i, big_endian) as usize;
        let hdr_len = field(0);
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return invalid(format!("bad header length {hdr_len}"));
        }
        let types = section(&data, hdr_len, field(1), field(2), "type")?;
        let strs = section(&data, hdr_len, field(3), field(4), "string")?;

        let mut offsets = Vec::with_capacity(types.len() / 16);
        let mut pos = types.start;
        while pos < types.end {
            if pos + TYPE_HEADER_LEN > types.end {
                return invalid(format!("truncated type header at byte {pos}"));
            }
            let info = read_u32(&data, pos + 4, big_endian);
            let raw_kind = (info >> 24) & 0x1f;
            let kind = match Kind::from_raw(raw_kind) {
                Some(Kind::Void) | None => {
                    return invalid(format!("unknown kind {raw_kind} at byte {pos}"))
                }
                Some(kind) => kind,
            };
            let end = pos + TYPE_HEADER_LEN + kind.body_len((info & 0xffff) as usize);
            if end > types.end {
                return invalid(format!("truncated {kind:?} type at byte {pos}"));
            }
            // Cannot truncate: the whole blob was checked to fit in u32.
            offsets.push(pos as u32);
            pos = end;
        }

        let (start_id, start_str_off) = match &base {
            Some(b) => (b.next_type_id(), b.str_end()),
            None => (1, 0),
        };
        let count = u32::try_from(offsets.len()).ok();
        if count.and_then(|c| c.checked_add(start_id)).is_none() {
            return invalid("too many types");
        }
        Ok(Btf(Arc::new(Inner {
            base,
            data,
            big_endian,
            offsets,
            strs,
            start_id,
            start_str_off,
            index: OnceLock::new(),
        })))
    }

    /// The id the first type of a split BTF built on top of this one would get.
    pub fn next_type_id(&self) -> u32 {
        self.0.start_id + self.0.offsets.len() as u32
    }

    /// True for module BTF parsed on top of a base.
    pub fn is_split(&self) -> bool {
        self.0.base.is_some()
    }

    /// Ids of the types defined in this blob (not in its base).
    pub fn local_type_ids(&self) -> Range<u32> {
        self.0.start_id..self.next_type_id()
    }

    pub(crate) fn str_end(&self) -> u32 {
        self.0.start_str_off + self.0.strs.len() as u32
    }

    fn str_bytes(&self, off: u32) -> Result<&[u8]> {
        if off < self.0.start_str_off {
            return match &self.0.base {
                Some(base) => base.str_bytes(off),
                None => invalid(format!("string offset {off} below section start")),
            };
        }
        let strs = &self.0.data[self.0.strs.clone()];
        let local = (off - self.0.start_str_off) as usize;
        if local == 0 && strs.is_empty() {
            return Ok(&[]);
        }
        let Some(tail) = strs.get(local..) else {
            return invalid(format!("string offset {off} out of range"));
        };
        match tail.iter().position(|&b| b == 0) {
            Some(end) => Ok(&tail[..end]),
            None => invalid(format!("unterminated string at offset {off}")),
        }
    }

    pub(crate) fn str_at(&self, off: u32) -> Result<&str> {
        std::str::from_utf8(self.str_bytes(off)?)
            .or_else(|_| invalid(format!("string at offset {off} is not UTF-8")))
    }

    pub(crate) fn ty(&self, id: u32) -> Result<Ty<'_>> {
        if id == 0 {
            return Ok(Ty {
                owner: self,
                id,
                kind: Kind::Void,
                kind_flag: false,
                vlen: 0,
                name_off: 0,
                size_or_type: 0,
                body: &[],
            });
        }
        if id < self.0.start_id {
            return match &self.0.base {
                Some(base) => base.ty(id),
                None => Err(BtfError::BadTypeId(id)),
            };
        }
        let off = *self
            .0
            .offsets
            .get((id - self.0.start_id) as usize)
            .ok_or(BtfError::BadTypeId(id))? as usize;
        let data = &self.0.data;
        let be = self.0.big_endian;
        let info = read_u32(data, off + 4, be);
        let kind = Kind::from_raw((info >> 24) & 0x1f).ok_or(BtfError::BadTypeId(id))?;
        let vlen = (info & 0xffff) as usize;
        let body_start = off + TYPE_HEADER_LEN;
        Ok(Ty {
            owner: self,
            id,
            kind,
            kind_flag: info >> 31 == 1,
            vlen,
            name_off: read_u32(data, off, be),
            size_or_type: read_u32(data, off + 8, be),
            body: &data[body_start..body_start + kind.body_len(vlen)],
        })
    }

    /// A BTF blob in this machine's byte order with this one's type ids, in
    /// which the first type of each `(name, kind)` in `keep` is itself and
    /// every other id is a nameless `void *`: enough to look the kept types
    /// up by name and get their ids, at 12 bytes a type. Only kinds without
    /// member data (typedefs, functions) can be kept; names not found are
    /// left out.
    pub fn id_stub(&self, keep: &[(&str, Kind)]) -> Result<Vec<u8>> {
        if self.is_split() {
            return invalid("an id stub is made from base BTF only");
        }
        let mut kept: Vec<(u32, u32, &str)> = Vec::new();
        for &(name, kind) in keep {
            if kind.body_len(1) != 0 {
                return invalid(format!("{kind:?} `{name}` has member data"));
            }
            if let Some(ty) = self.find_all(name, &[kind]).into_iter().next() {
                let info = (u32::from(ty.kind_flag) << 31) | ((kind as u32) << 24) | ty.vlen as u32;
                kept.push((ty.id, info, name));
            }
        }
        kept.sort_by_key(|&(id, ..)| id);
        kept.dedup_by_key(|&mut (id, ..)| id);
        let last = kept.last().map_or(0, |&(id, ..)| id) as usize;
        let mut strings = vec![0u8];
        let mut records = vec![0u8; last * TYPE_HEADER_LEN];
        for rec in records.as_chunks_mut::<TYPE_HEADER_LEN>().0 {
            rec[4..8].copy_from_slice(&((Kind::Ptr as u32) << 24).to_ne_bytes());
        }
        for &(id, info, name) in &kept {
            let at = (id as usize - 1) * TYPE_HEADER_LEN;
            let name_off = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            records[at..at + 4].copy_from_slice(&name_off.to_ne_bytes());
            records[at + 4..at + 8].copy_from_slice(&info.to_ne_bytes());
        }
        let mut blob = Vec::with_capacity(HEADER_LEN + records.len() + strings.len());
        blob.extend_from_slice(&MAGIC.to_ne_bytes());
        blob.extend_from_slice(&[1, 0]);
        for word in [
            HEADER_LEN as u32,
            0,
            records.len() as u32,
            records.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&word.to_ne_bytes());
        }
        blob.extend_from_slice(&records);
        blob.extend_from_slice(&strings);
        Ok(blob)
    }

    fn index(&self) -> &NameIndex {
        self.0.index.get_or_init(|| {
            let inner = &self.0;
            let mut named = Vec::with_capacity(inner.offsets.len());
            for (i, &off) in inner.offsets.iter().enumerate() {
                let name_off = read_u32(&inner.data, off as usize, inner.big_endian);
                match self.str_bytes(name_off) {
                    Ok(name) if !name.is_empty() => named.push((fnv1a(name), i as u32)),
                    _ => {}
                }
            }
            named.sort_unstable();
            named.shrink_to_fit();
            NameIndex(named)
        })
    }

    /// All types named `name` with one of `kinds`, local ones first, then the base's.
    pub(crate) fn find_all(&self, name: &str, kinds: &[Kind]) -> Vec<Ty<'_>> {
        let index = &self.index().0;
        let hash = fnv1a(name.as_bytes());
        let first = index.partition_point(|&(h, _)| h < hash);
        let mut found = Vec::new();
        for &(_, i) in index[first..].iter().take_while(|&&(h, _)| h == hash) {
            if let Ok(ty) = self.ty(self.0.start_id + i) {
                if kinds.contains(&ty.kind) && ty.name().is_ok_and(|n| n == name) {
                    found.push(ty);
                }
            }
        }
        if found.is_empty() {
            if let Some(base) = &self.0.base {
                return base.find_all(name, kinds);
            }
        }
        found.sort_by_key(|t| t.id);
        found
    }

    /// The named type with the most members (skips empty forward-style copies).
    pub(crate) fn find(&self, name: &str, kinds: &[Kind]) -> Option<Ty<'_>> {
        self.find_all(name, kinds)
            .into_iter()
            .min_by_key(|t| (std::cmp::Reverse(t.vlen), t.id))
    }

    /// Id of a type with this name and kind, if any.
    pub fn find_type_id(&self, name: &str, kind: Kind) -> Option<u32> {
        self.find(name, &[kind]).map(|t| t.id)
    }

    pub fn kind_of(&self, id: u32) -> Result<Kind> {
        Ok(self.ty(id)?.kind)
    }
}

fn section(
    data: &[u8],
    hdr_len: usize,
    off: usize,
    len: usize,
    what: &str,
) -> Result<Range<usize>> {
    let start = hdr_len.checked_add(off);
    match start.and_then(|s| s.checked_add(len).map(|e| s..e)) {
        Some(r) if r.end <= data.len() => Ok(r),
        _ => invalid(format!("{what} section out of bounds")),
    }
}

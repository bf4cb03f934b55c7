//! Netlink attribute (TLV) parsing and building.
//!
//! Attributes are `struct nlattr { u16 len; u16 type; }` followed by the
//! payload, padded to 4 bytes. nf_tables integers are big-endian.
use bytes::{BufMut, Bytes, BytesMut};
use netlink_packet_core::NlasIterator;

/// Set on the type of an attribute that holds nested attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_HDRLEN: usize = 4;

/// Rounds `len` up to the netlink alignment (4 bytes).
pub fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Iterates over the attributes in a buffer, with `netlink-packet-core`'s
/// checked reader. Stops at the first malformed attribute (see
/// [`AttrIter::malformed`]).
pub struct AttrIter<'a> {
    inner: NlasIterator<&'a [u8]>,
    malformed: bool,
}

impl<'a> AttrIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            inner: NlasIterator::new(buf),
            malformed: false,
        }
    }

    /// True when iteration stopped on a truncated or inconsistent attribute.
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for AttrIter<'a> {
    /// (type without flag bits, payload)
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self.inner.next()? {
            Ok(nla) => {
                let (kind, len) = (nla.kind(), usize::from(nla.length()));
                Some((kind, &nla.into_inner()[NLA_HDRLEN..len]))
            }
            Err(_) => {
                self.malformed = true;
                None
            }
        }
    }
}

/// Reads a big-endian u16 payload.
pub fn be16(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(..2)?.try_into().ok()?))
}

/// Reads a big-endian u32 payload.
pub fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

/// Reads a big-endian u64 payload.
pub fn be64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

/// Reads a string payload, dropping the NUL terminator and anything after it.
pub fn string(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// Finds the first attribute of type `kind`.
pub fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    AttrIter::new(buf).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// Builds a buffer of attributes, with nesting.
#[derive(Debug, Default, Clone)]
pub struct AttrWriter {
    buf: BytesMut,
    nests: Vec<usize>,
}

impl AttrWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an attribute with a raw payload.
    pub fn put(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        self.header(NLA_HDRLEN + payload.len(), kind);
        self.buf.put_slice(payload);
        self.pad();
        self
    }

    pub fn put_be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    pub fn put_u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.put(kind, &[v])
    }

    /// Appends a NUL-terminated string.
    pub fn put_str(&mut self, kind: u16, s: &str) -> &mut Self {
        self.header(NLA_HDRLEN + s.len() + 1, kind);
        self.buf.put_slice(s.as_bytes());
        self.buf.put_u8(0);
        self.pad();
        self
    }

    /// Opens a nested attribute; close it with [`AttrWriter::end_nest`].
    pub fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.header(0, kind | NLA_F_NESTED);
        self
    }

    /// Closes the innermost nested attribute, fixing up its length.
    pub fn end_nest(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// Appends a nested attribute whose content `f` writes.
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut AttrWriter)) -> &mut Self {
        self.begin_nest(kind);
        f(self);
        self.end_nest()
    }

    /// `nlattr`: length (u16; callers only build small attributes) and kind.
    fn header(&mut self, len: usize, kind: u16) {
        self.buf.put_u16_ne(u16::try_from(len).unwrap_or(u16::MAX));
        self.buf.put_u16_ne(kind);
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Bytes {
        self.buf.freeze()
    }
}

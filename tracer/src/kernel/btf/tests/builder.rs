//! Test-only writer for small BTF blobs, so parsing can be tested without root.

use crate::kernel::btf::Btf;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

pub(crate) struct BtfBuilder {
    words: Vec<u32>,
    strings: Vec<u8>,
    next_id: u32,
    str_base: u32,
}

impl BtfBuilder {
    pub(crate) fn new() -> Self {
        Self {
            words: Vec::new(),
            strings: vec![0],
            next_id: 1,
            str_base: 0,
        }
    }

    /// A builder for module BTF on top of `base`.
    pub(crate) fn new_split(base: &Btf) -> Self {
        Self {
            words: Vec::new(),
            strings: Vec::new(),
            next_id: base.next_type_id(),
            str_base: base.str_end(),
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.str_base + self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn push(&mut self, name: &str, kind: u32, flag: bool, vlen: usize, size_or_type: u32) -> u32 {
        let name_off = self.str(name);
        let info = (u32::from(flag) << 31) | (kind << 24) | vlen as u32;
        self.words.extend([name_off, info, size_or_type]);
        self.next_id += 1;
        self.next_id - 1
    }

    pub(crate) fn int(&mut self, name: &str, size: u32, signed: bool) -> u32 {
        self.int_bits(name, size, signed, 0, size * 8)
    }

    /// An INT with the legacy in-type bitfield encoding.
    pub(crate) fn int_bits(
        &mut self,
        name: &str,
        size: u32,
        signed: bool,
        off: u32,
        bits: u32,
    ) -> u32 {
        let id = self.push(name, KIND_INT, false, 0, size);
        self.words
            .push((u32::from(signed) << 24) | (off << 16) | bits);
        id
    }

    pub(crate) fn float(&mut self, name: &str, size: u32) -> u32 {
        self.push(name, KIND_FLOAT, false, 0, size)
    }

    pub(crate) fn ptr(&mut self, target: u32) -> u32 {
        self.push("", KIND_PTR, false, 0, target)
    }

    pub(crate) fn typedef(&mut self, name: &str, target: u32) -> u32 {
        self.push(name, KIND_TYPEDEF, false, 0, target)
    }

    pub(crate) fn const_(&mut self, target: u32) -> u32 {
        self.push("", KIND_CONST, false, 0, target)
    }

    pub(crate) fn volatile(&mut self, target: u32) -> u32 {
        self.push("", KIND_VOLATILE, false, 0, target)
    }

    pub(crate) fn fwd_struct(&mut self, name: &str) -> u32 {
        self.push(name, KIND_FWD, false, 0, 0)
    }

    pub(crate) fn array(&mut self, elem: u32, index: u32, len: u32) -> u32 {
        let id = self.push("", KIND_ARRAY, false, 0, 0);
        self.words.extend([elem, index, len]);
        id
    }

    /// Members are `(name, type, bit offset)`.
    pub(crate) fn struct_(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.composite(KIND_STRUCT, name, size, members)
    }

    pub(crate) fn union_(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.composite(KIND_UNION, name, size, members)
    }

    fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let id = self.push(name, kind, false, members.len(), size);
        for &(m, ty, off) in members {
            let m = self.str(m);
            self.words.extend([m, ty, off]);
        }
        id
    }

    /// A kind_flag struct; members are `(name, type, bit offset, bitfield bits)`.
    pub(crate) fn bitfield_struct(
        &mut self,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let id = self.push(name, KIND_STRUCT, true, members.len(), size);
        for &(m, ty, off, bits) in members {
            let m = self.str(m);
            self.words.extend([m, ty, (bits << 24) | off]);
        }
        id
    }

    pub(crate) fn enum32(&mut self, name: &str, signed: bool, variants: &[(&str, i64)]) -> u32 {
        let id = self.push(name, KIND_ENUM, signed, variants.len(), 4);
        for &(v, value) in variants {
            let v = self.str(v);
            self.words.extend([v, value as u32]);
        }
        id
    }

    pub(crate) fn enum64(&mut self, name: &str, variants: &[(&str, u64)]) -> u32 {
        let id = self.push(name, KIND_ENUM64, false, variants.len(), 8);
        for &(v, value) in variants {
            let v = self.str(v);
            self.words.extend([v, value as u32, (value >> 32) as u32]);
        }
        id
    }

    /// Params are `(name, type)`; a trailing `("", 0)` means varargs.
    pub(crate) fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let id = self.push("", KIND_FUNC_PROTO, false, params.len(), ret);
        for &(p, ty) in params {
            let p = self.str(p);
            self.words.extend([p, ty]);
        }
        id
    }

    pub(crate) fn func(&mut self, name: &str, proto: u32) -> u32 {
        self.push(name, KIND_FUNC, false, 1, proto)
    }

    pub(crate) fn decl_tag(&mut self, name: &str, target: u32) -> u32 {
        let id = self.push(name, KIND_DECL_TAG, false, 0, target);
        self.words.push(u32::MAX);
        id
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        self.encode(false)
    }

    pub(crate) fn build_big_endian(&self) -> Vec<u8> {
        self.encode(true)
    }

    fn encode(&self, big_endian: bool) -> Vec<u8> {
        let word = |w: u32| {
            if big_endian {
                w.to_be_bytes()
            } else {
                w.to_le_bytes()
            }
        };
        let type_len = self.words.len() as u32 * 4;
        let mut out = Vec::new();
        let magic: u16 = 0xeb9f;
        out.extend(if big_endian {
            magic.to_be_bytes()
        } else {
            magic.to_le_bytes()
        });
        out.extend([1, 0]);
        for field in [24, 0, type_len, type_len, self.strings.len() as u32] {
            out.extend(word(field));
        }
        for &w in &self.words {
            out.extend(word(w));
        }
        out.extend(&self.strings);
        out
    }
}

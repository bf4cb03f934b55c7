//! Struct and union member lookups on a parsed [`Btf`].

use super::{Btf, BtfError, Kind, Result, Ty, MAX_DEPTH};

const COMPOSITE: &[Kind] = &[Kind::Struct, Kind::Union];
const POINTER_SIZE: u32 = std::mem::size_of::<usize>() as u32;

/// Where a (possibly nested) member sits inside its outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberInfo {
    pub bit_offset: u32,
    /// Width of a bitfield member, 0 for ordinary members.
    pub bitfield_bits: u32,
    pub type_id: u32,
    /// Size of the member's type; for a bitfield, of its storage type.
    pub size: u32,
}

impl MemberInfo {
    pub fn is_bitfield(&self) -> bool {
        self.bitfield_bits != 0 || !self.bit_offset.is_multiple_of(8)
    }
}

struct RawMember {
    bit_offset: u32,
    bitfield_bits: u32,
    type_id: u32,
}

fn is_composite(ty: &Ty<'_>) -> bool {
    COMPOSITE.contains(&ty.kind)
}

impl Btf {
    /// Follows typedefs and const/volatile/restrict/type-tag modifiers.
    pub(crate) fn resolve(&self, mut id: u32) -> Result<Ty<'_>> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            match ty.kind {
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    id = ty.size_or_type
                }
                _ => return Ok(ty),
            }
        }
        Err(BtfError::Invalid(format!(
            "type chain from id {id} too deep"
        )))
    }

    /// Locates `member_path` (dotted, e.g. `nd_net.net`) in struct or union
    /// `struct_name`, looking inside anonymous structs and unions. Pointers are not
    /// followed.
    pub fn member(&self, struct_name: &str, member_path: &str) -> Result<MemberInfo> {
        let root = self
            .find(struct_name, COMPOSITE)
            .or_else(|| self.find(struct_name, &[Kind::Typedef]))
            .ok_or_else(|| BtfError::TypeNotFound(struct_name.to_owned()))?;
        let not_found = || BtfError::MemberNotFound {
            ty: struct_name.to_owned(),
            member: member_path.to_owned(),
        };
        let mut cur = root.id;
        let mut bit_offset = 0u32;
        let mut bitfield_bits = 0;
        for component in member_path.split('.') {
            let ty = self.resolve(cur)?;
            if !is_composite(&ty) {
                return Err(BtfError::NotComposite {
                    ty: struct_name.to_owned(),
                    path: member_path.to_owned(),
                    component: component.to_owned(),
                });
            }
            if component.is_empty() {
                return Err(not_found());
            }
            let m = self.find_member(ty, component, 0)?.ok_or_else(not_found)?;
            bit_offset = bit_offset
                .checked_add(m.bit_offset)
                .ok_or_else(|| BtfError::Invalid("member offset overflow".into()))?;
            bitfield_bits = m.bitfield_bits;
            cur = m.type_id;
        }
        if bitfield_bits == 0 {
            // Pre-kind_flag encoding: the bitfield lives in the INT type itself.
            let ty = self.resolve(cur)?;
            if ty.kind == Kind::Int {
                let enc = ty.word(0);
                let (int_offset, int_bits) = ((enc >> 16) & 0xff, enc & 0xff);
                if int_offset != 0 || int_bits != ty.size_or_type.saturating_mul(8) {
                    bit_offset = bit_offset.saturating_add(int_offset);
                    bitfield_bits = int_bits;
                }
            }
        }
        Ok(MemberInfo {
            bit_offset,
            bitfield_bits,
            type_id: cur,
            size: self.type_size(cur)?,
        })
    }

    /// Byte offset of a byte-aligned, non-bitfield member.
    pub fn member_offset(&self, struct_name: &str, member_path: &str) -> Result<u32> {
        let m = self.member(struct_name, member_path)?;
        if m.is_bitfield() {
            return Err(BtfError::Bitfield {
                ty: struct_name.to_owned(),
                path: member_path.to_owned(),
                bit_offset: m.bit_offset,
            });
        }
        Ok(m.bit_offset / 8)
    }

    pub fn member_size(&self, struct_name: &str, member_path: &str) -> Result<u32> {
        Ok(self.member(struct_name, member_path)?.size)
    }

    fn find_member(&self, ty: Ty<'_>, name: &str, depth: usize) -> Result<Option<RawMember>> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Invalid(
                "anonymous members nested too deep".into(),
            ));
        }
        for i in 0..ty.vlen {
            let (name_off, type_id, raw) = (ty.word(3 * i), ty.word(3 * i + 1), ty.word(3 * i + 2));
            let (bit_offset, bitfield_bits) = if ty.kind_flag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            let member_name = ty.owner.str_at(name_off)?;
            if member_name.is_empty() {
                let inner = self.resolve(type_id)?;
                if is_composite(&inner) {
                    if let Some(mut m) = self.find_member(inner, name, depth + 1)? {
                        m.bit_offset += bit_offset;
                        return Ok(Some(m));
                    }
                }
            } else if member_name == name {
                return Ok(Some(RawMember {
                    bit_offset,
                    bitfield_bits,
                    type_id,
                }));
            }
        }
        Ok(None)
    }

    pub fn type_size(&self, id: u32) -> Result<u32> {
        let mut id = id;
        let mut count = 1u32;
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            let size = match ty.kind {
                Kind::Typedef
                | Kind::Const
                | Kind::Volatile
                | Kind::Restrict
                | Kind::TypeTag
                | Kind::Var => {
                    id = ty.size_or_type;
                    continue;
                }
                Kind::Array => {
                    count = count
                        .checked_mul(ty.word(2))
                        .ok_or_else(|| BtfError::Invalid("array size overflow".into()))?;
                    id = ty.word(0);
                    continue;
                }
                Kind::Ptr => POINTER_SIZE,
                Kind::Int
                | Kind::Struct
                | Kind::Union
                | Kind::Enum
                | Kind::Enum64
                | Kind::Float
                | Kind::Datasec => ty.size_or_type,
                Kind::Void | Kind::Fwd | Kind::Func | Kind::FuncProto | Kind::DeclTag => {
                    return Err(BtfError::Unsized(id))
                }
            };
            return size
                .checked_mul(count)
                .ok_or_else(|| BtfError::Invalid("type size overflow".into()));
        }
        Err(BtfError::Invalid(format!(
            "type chain from id {id} too deep"
        )))
    }
}

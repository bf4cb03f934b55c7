//! Enum, function and type-name lookups on a parsed [`Btf`].

use super::{Btf, BtfError, Kind, Result, Ty, MAX_DEPTH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfEnum {
    pub name: String,
    pub variants: Vec<(String, i64)>,
}

impl Btf {
    /// Variants of `enum <enum_name>` (ENUM or ENUM64), in declaration order.
    pub fn enum_variants(&self, enum_name: &str) -> Result<Vec<(String, i64)>> {
        let ty = self
            .find(enum_name, &[Kind::Enum, Kind::Enum64])
            .ok_or_else(|| BtfError::TypeNotFound(format!("enum {enum_name}")))?;
        enum_values(ty)
    }

    /// Enums with at least one variant defined in this blob itself (for module BTF:
    /// not those of vmlinux).
    pub fn local_enums(&self) -> Result<Vec<BtfEnum>> {
        let mut enums = Vec::new();
        for id in self.local_type_ids() {
            let ty = self.ty(id)?;
            if matches!(ty.kind, Kind::Enum | Kind::Enum64) && ty.vlen > 0 {
                enums.push(BtfEnum {
                    name: ty.name()?.to_owned(),
                    variants: enum_values(ty)?,
                });
            }
        }
        Ok(enums)
    }

    pub fn has_func(&self, name: &str) -> bool {
        self.find(name, &[Kind::Func]).is_some()
    }

    /// Parameter types of a `typedef <ret> (*name)(params...)`, e.g.
    /// `btf_trace_kfree_skb` → `["void *", "struct sk_buff *", "void *", ...]`.
    pub fn typedef_func_proto_params(&self, name: &str) -> Result<Vec<String>> {
        let typedef = self
            .find(name, &[Kind::Typedef])
            .ok_or_else(|| BtfError::TypeNotFound(name.to_owned()))?;
        let mut target = self.resolve(typedef.size_or_type)?;
        if target.kind == Kind::Ptr {
            target = self.resolve(target.size_or_type)?;
        }
        if target.kind != Kind::FuncProto {
            return Err(BtfError::NotFuncProto(name.to_owned()));
        }
        self.proto_params(target)
    }

    /// Parameter types of kernel function `name` (a FUNC).
    pub fn func_params(&self, name: &str) -> Result<Vec<String>> {
        let func = self
            .find(name, &[Kind::Func])
            .ok_or_else(|| BtfError::TypeNotFound(name.to_owned()))?;
        let proto = self.ty(func.size_or_type)?;
        if proto.kind != Kind::FuncProto {
            return Err(BtfError::NotFuncProto(name.to_owned()));
        }
        self.proto_params(proto)
    }

    fn proto_params(&self, proto: Ty<'_>) -> Result<Vec<String>> {
        (0..proto.vlen)
            .map(|i| match proto.word(2 * i + 1) {
                0 if i + 1 == proto.vlen => Ok("...".to_owned()),
                type_id => self.type_name(type_id),
            })
            .collect()
    }

    /// C-like spelling of a type: `struct sk_buff *`, `const char *`, `u32`, `int[4]`.
    pub fn type_name(&self, id: u32) -> Result<String> {
        self.type_name_at(id, 0)
    }

    fn type_name_at(&self, id: u32, depth: usize) -> Result<String> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Invalid(format!(
                "type chain from id {id} too deep"
            )));
        }
        let ty = self.ty(id)?;
        let name = ty.name()?;
        let tagged = |tag: &str| match name {
            "" => format!("{tag} (anon)"),
            _ => format!("{tag} {name}"),
        };
        let inner = || self.type_name_at(ty.size_or_type, depth + 1);
        Ok(match ty.kind {
            Kind::Void => "void".to_owned(),
            Kind::Struct => tagged("struct"),
            Kind::Union => tagged("union"),
            Kind::Enum | Kind::Enum64 => tagged("enum"),
            Kind::Fwd if ty.kind_flag => tagged("union"),
            Kind::Fwd => tagged("struct"),
            Kind::Ptr => {
                let target = inner()?;
                if target.ends_with('*') {
                    format!("{target}*")
                } else {
                    format!("{target} *")
                }
            }
            Kind::Const => format!("const {}", inner()?),
            Kind::Volatile => format!("volatile {}", inner()?),
            Kind::Restrict => format!("{} restrict", inner()?),
            Kind::TypeTag => inner()?,
            Kind::Array => format!(
                "{}[{}]",
                self.type_name_at(ty.word(0), depth + 1)?,
                ty.word(2)
            ),
            Kind::FuncProto => "func_proto".to_owned(),
            Kind::Int
            | Kind::Float
            | Kind::Typedef
            | Kind::Func
            | Kind::Var
            | Kind::Datasec
            | Kind::DeclTag => name.to_owned(),
        })
    }
}

fn enum_values(ty: Ty<'_>) -> Result<Vec<(String, i64)>> {
    (0..ty.vlen)
        .map(|i| {
            let (name_off, value) = if ty.kind == Kind::Enum64 {
                let (lo, hi) = (ty.word(3 * i + 1), ty.word(3 * i + 2));
                (
                    ty.word(3 * i),
                    ((u64::from(hi) << 32) | u64::from(lo)) as i64,
                )
            } else {
                let raw = ty.word(2 * i + 1);
                // kind_flag marks a signed enum.
                let value = if ty.kind_flag {
                    i64::from(raw as i32)
                } else {
                    i64::from(raw)
                };
                (ty.word(2 * i), value)
            };
            Ok((ty.owner.str_at(name_off)?.to_owned(), value))
        })
        .collect()
}

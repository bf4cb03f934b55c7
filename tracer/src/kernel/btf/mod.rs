//! Minimal parser for the kernel's BTF type format, including split (module) BTF.
//!
//! Parsing only records where each type starts; types are decoded on demand and
//! the name index is built on the first lookup by name.

mod decl;
mod kernel;
mod query;
mod raw;
#[cfg(test)]
pub(crate) mod tests;

pub use decl::BtfEnum;
pub use kernel::KernelBtf;
pub use query::MemberInfo;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raw::Inner;
pub(crate) use raw::Ty;

pub const BTF_DIR: &str = "/sys/kernel/btf";
pub const VMLINUX_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Bound on typedef/modifier chains and nesting, so corrupt BTF cannot loop forever.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "kernel BTF not found at {path}: this kernel was built without \
         CONFIG_DEBUG_INFO_BTF=y, which pathtrace needs"
    )]
    KernelBtfMissing { path: PathBuf },
    #[error("failed to read BTF from {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid BTF: {0}")]
    Invalid(String),
    #[error("type id {0} does not exist in this BTF")]
    BadTypeId(u32),
    #[error("type `{0}` not found in BTF")]
    TypeNotFound(String),
    #[error("`{ty}` has no member `{member}`")]
    MemberNotFound { ty: String, member: String },
    #[error(
        "`{ty}.{path}`: `{component}` is not inside a struct or union (pointers are not followed)"
    )]
    NotComposite {
        ty: String,
        path: String,
        component: String,
    },
    #[error("`{ty}.{path}` is a bitfield at bit offset {bit_offset}, not byte-addressable")]
    Bitfield {
        ty: String,
        path: String,
        bit_offset: u32,
    },
    #[error("type id {0} has no size")]
    Unsized(u32),
    #[error("`{0}` is not a typedef of a function-prototype pointer")]
    NotFuncProto(String),
}

pub type Result<T> = std::result::Result<T, BtfError>;

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(BtfError::Invalid(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Kind> {
        use Kind::*;
        const KINDS: [Kind; 20] = [
            Void, Int, Ptr, Array, Struct, Union, Enum, Fwd, Typedef, Volatile, Const, Restrict,
            Func, FuncProto, Var, Datasec, Float, DeclTag, TypeTag, Enum64,
        ];
        KINDS.get(raw as usize).copied()
    }

    /// Length of the kind-specific data after the 12-byte common header.
    fn body_len(self, vlen: usize) -> usize {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * vlen,
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            _ => 0,
        }
    }
}

/// A parsed BTF blob. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Btf(Arc<Inner>);

impl Btf {
    /// Reads `/sys/kernel/btf/vmlinux`.
    pub fn vmlinux() -> Result<Btf> {
        match std::fs::read(VMLINUX_PATH) {
            Ok(data) => Self::parse(data, None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BtfError::KernelBtfMissing {
                path: PathBuf::from(VMLINUX_PATH),
            }),
            Err(source) => Err(BtfError::Io {
                path: PathBuf::from(VMLINUX_PATH),
                source,
            }),
        }
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf> {
        Self::parse(read_file(path.as_ref())?, None)
    }

    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Btf> {
        Self::parse(bytes.into(), None)
    }

    /// Parses module BTF whose type ids and string offsets continue after `base`'s.
    pub fn from_split_bytes(bytes: impl Into<Vec<u8>>, base: &Btf) -> Result<Btf> {
        Self::parse(bytes.into(), Some(base.clone()))
    }

    pub fn split_from_file(path: impl AsRef<Path>, base: &Btf) -> Result<Btf> {
        Self::parse(read_file(path.as_ref())?, Some(base.clone()))
    }

    /// Parses every module BTF file in `/sys/kernel/btf` against `self` (vmlinux).
    /// Modules that fail to parse are logged and skipped.
    pub fn load_modules(&self) -> Vec<(String, Btf)> {
        let entries = match std::fs::read_dir(BTF_DIR) {
            Ok(entries) => entries,
            Err(e) => {
                log::debug!("cannot list {BTF_DIR}: {e}");
                return Vec::new();
            }
        };
        let mut modules = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "vmlinux" {
                continue;
            }
            match Self::split_from_file(entry.path(), self) {
                Ok(btf) => modules.push((name, btf)),
                Err(e) => log::warn!("skipping module BTF {name}: {e}"),
            }
        }
        modules.sort_by(|a, b| a.0.cmp(&b.0));
        modules
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| BtfError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.local_type_ids())
            .field("split", &self.is_split())
            .finish()
    }
}

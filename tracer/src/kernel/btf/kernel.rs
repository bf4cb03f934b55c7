//! The running kernel's BTF, read and parsed once per run and shared by
//! the loader (struct offsets, tracepoint signatures, attaching) and the
//! drop-reason names (vmlinux and module enums).
use std::sync::OnceLock;

use super::{Btf, Result};

pub struct KernelBtf {
    pub vmlinux: Btf,
    /// Module BTF (split on top of vmlinux), parsed on first use: only the
    /// drop-reason names need it, and they are not on the path to "ready".
    modules: OnceLock<Vec<(String, Btf)>>,
}

impl KernelBtf {
    /// Reads `/sys/kernel/btf/vmlinux`; module BTF beside it is read when asked for.
    pub fn load() -> Result<Self> {
        Ok(Self {
            vmlinux: Btf::vmlinux()?,
            modules: OnceLock::new(),
        })
    }

    /// Every module's BTF, by module name.
    pub fn modules(&self) -> &[(String, Btf)] {
        self.modules.get_or_init(|| self.vmlinux.load_modules())
    }

    /// One module's BTF, without reading the others when they were not read yet.
    pub fn module(&self, name: &str) -> Option<Btf> {
        if let Some(all) = self.modules.get() {
            return all.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone());
        }
        let path = std::path::Path::new(super::BTF_DIR).join(name);
        Btf::split_from_file(path, &self.vmlinux).ok()
    }

    /// Module BTFs without their names.
    pub fn module_btfs(&self) -> Vec<Btf> {
        self.modules().iter().map(|(_, b)| b.clone()).collect()
    }
}

//! The running kernel's BTF, read and parsed once per run and shared by
//! the loader (struct offsets, tracepoint signatures, attaching) and the
//! drop-reason names (vmlinux and module enums).
use super::{Btf, Result};

pub struct KernelBtf {
    pub vmlinux: Btf,
    /// Module BTF (split on top of vmlinux), by module name.
    pub modules: Vec<(String, Btf)>,
}

impl KernelBtf {
    /// Reads `/sys/kernel/btf/vmlinux` and every module's BTF beside it.
    pub fn load() -> Result<Self> {
        let vmlinux = Btf::vmlinux()?;
        let modules = vmlinux.load_modules();
        Ok(Self { vmlinux, modules })
    }

    /// Module BTFs without their names.
    pub fn module_btfs(&self) -> Vec<Btf> {
        self.modules.iter().map(|(_, b)| b.clone()).collect()
    }
}

//! Kernel facts read at run time: BTF, kallsyms, drop reasons, hook inference.

pub mod btf;
pub mod drop_reason;
pub mod hook;
pub mod hook_infer;
pub mod kallsyms;

pub use hook::{Family, Hook};

//! Unit tests of the BTF parser (no root): blobs written by `builder.rs`, a
//! cut-down `sk_buff` world (`fixture.rs`), and the running kernel's own BTF.

pub(crate) mod builder;
mod fixture;
mod parse;

//! Unit tests of rule tracing (no root): netlink attributes and framing,
//! trace filters as nf_tables expressions, and the decoding of trace messages
//! captured from the kernel (`fixtures.rs`). The root tests, with real
//! namespaces and packets, are in the tests crate (`tests/netfilter.rs`).

mod expr;
mod fixtures;
mod legacy;
mod unit;

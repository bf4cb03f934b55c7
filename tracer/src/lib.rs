//! pathtrace: follow packets through the Linux kernel, hop by hop.
pub mod cli;
pub mod demo;
pub mod diagnose;
pub mod drops;
pub mod error;
pub mod events;
pub mod filter;
pub mod kernel;
pub mod lab;
pub mod loader;
pub mod names;
pub mod netfilter;
pub mod privileges;
pub mod render;
pub mod ruletrace;
pub mod session;
pub mod track;

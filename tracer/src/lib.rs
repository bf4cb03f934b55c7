//! pathtrace: follow packets through the Linux kernel, hop by hop.
pub mod cli;
pub mod cmd;
pub mod diagnose;
pub mod docs;
pub mod error;
pub mod events;
pub mod kernel;
pub mod loader;
pub mod model;
pub mod names;
pub mod netfilter;
pub mod privileges;
pub mod render;
pub mod ruletrace;
pub mod session;
pub mod signals;
pub mod track;

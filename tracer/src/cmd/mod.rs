//! One module per subcommand, over the layers: each turns its parsed
//! arguments into options, checks privileges and runs a session.
pub mod compare;
pub mod demo;
pub mod drops;
pub mod trace;

use std::io::IsTerminal;

use crate::{cli::OutputArgs, error::Error};

/// Colour on a terminal only, unless asked otherwise (or `NO_COLOR` is set).
/// `on_stderr`: the text goes to standard error (`--pcap -`).
pub fn use_color(o: &OutputArgs, on_stderr: bool) -> bool {
    let terminal = if on_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    match o.color {
        crate::cli::ColorChoice::Always => true,
        crate::cli::ColorChoice::Never => false,
        crate::cli::ColorChoice::Auto => terminal && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// The single-threaded runtime every command runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("starting the runtime: {e}")))
}

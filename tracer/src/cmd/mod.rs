//! One module per subcommand, over the layers: each turns its parsed
//! arguments into options, checks privileges and runs a session.
pub mod compare;
pub mod demo;
pub mod drops;
pub mod trace;

use std::io::IsTerminal;

use crate::{cli::OutputArgs, error::Error, render::Format};

/// JSON with `--json`, else text, in colour on a terminal only unless asked
/// otherwise (or `NO_COLOR` is set). `on_stderr`: the text goes to standard
/// error (`--pcap -`).
pub fn format(o: &OutputArgs, on_stderr: bool) -> Format {
    if o.json {
        return Format::Json;
    }
    let terminal = if on_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let color = match o.color {
        crate::cli::ColorChoice::Always => true,
        crate::cli::ColorChoice::Never => false,
        crate::cli::ColorChoice::Auto => terminal && std::env::var_os("NO_COLOR").is_none(),
    };
    Format::Text { color }
}

/// The single-threaded runtime every command runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("starting the runtime: {e}")))
}

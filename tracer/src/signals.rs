//! SIGINT and SIGTERM, caught from before the "ready" line on: a signal that
//! arrives at any moment after it ends the run cleanly instead of killing it.
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::error::Error;

pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    pub fn install() -> Result<Self, Error> {
        let hook = |kind, name| {
            signal(kind).map_err(|e| Error::Runtime(format!("installing the {name} handler: {e}")))
        };
        Ok(Self {
            int: hook(SignalKind::interrupt(), "SIGINT")?,
            term: hook(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Resolves at the first SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

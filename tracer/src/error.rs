//! The errors `pathtrace` reports, and the exit status each maps to.
use crate::loader::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line: exit status 2.
    #[error("{0}")]
    Usage(String),
    #[error("missing privileges: {0}")]
    Privileges(#[from] crate::privileges::MissingCapabilities),
    #[error("{0}")]
    Kernel(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("lab: {0}")]
    Lab(#[from] lab::LabError),
    #[error("writing output: {0}")]
    Output(std::io::Error),
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            // A closed pipe (`pathtrace … | head`) is not a failure.
            Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            _ => 1,
        }
    }
}

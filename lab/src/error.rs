//! The lab's error type.

use std::io;

/// Everything that can go wrong while building, probing or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab creates namespaces and starts daemons, so it needs euid 0.
    #[error("the lab needs root (euid 0)")]
    NotRoot,
    /// The prefix is used in namespace, interface and cgroup names.
    #[error("invalid lab prefix {0:?}: use 1-8 characters [a-z0-9], starting with a letter")]
    InvalidPrefix(String),
    /// An external command ran but exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line, shell-quoted.
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its trimmed standard error (or standard output when stderr was empty).
        stderr: String,
    },
    /// An external command could not be started.
    #[error("could not run `{cmd}`: {source}")]
    Spawn {
        /// The command line, shell-quoted.
        cmd: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },
    /// An external command did not finish in time (it was killed).
    #[error("`{cmd}` did not finish within {secs:.1}s and was killed")]
    CommandTimeout {
        /// The command line, shell-quoted.
        cmd: String,
        /// The time limit in seconds.
        secs: f64,
    },
    /// A file-system or system-call operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A real dockerd was required but could not be started.
    #[error("real dockerd unavailable: {0}")]
    DockerUnavailable(String),
    /// The requested combination of options is not supported.
    #[error("unsupported lab configuration: {0}")]
    Unsupported(String),
    /// Code could not be run in a network namespace.
    #[error(transparent)]
    Netns(#[from] in_netns::Error),
    /// Something did not become ready in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A command's output could not be understood.
    #[error("unexpected output from `{cmd}`: {detail}")]
    Parse {
        /// The command line, shell-quoted.
        cmd: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The build was told to stop ([`crate::StopFlag`]); what it built is removed.
    #[error("the lab build was stopped")]
    Cancelled,
    /// Teardown or sweep could not remove everything; the messages say what is left.
    #[error("lab cleanup incomplete: {}", .0.join("; "))]
    Cleanup(Vec<String>),
}

impl LabError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

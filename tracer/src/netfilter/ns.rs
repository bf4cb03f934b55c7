//! Running code and commands inside another network namespace.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use super::NfError;

/// Runs `f` with the network namespace at `netns` (None: the current one).
///
/// `setns` happens in a dedicated thread that ends with `f`, so the caller's
/// thread never changes namespace. Sockets made by `f` stay in that namespace.
pub fn with_netns<T: Send>(
    netns: Option<&Path>,
    f: impl FnOnce() -> Result<T, NfError> + Send,
) -> Result<T, NfError> {
    let Some(path) = netns else {
        return f();
    };
    let file = std::fs::File::open(path).map_err(|source| NfError::Netns {
        path: path.to_path_buf(),
        source,
    })?;
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            // SAFETY: setns on a descriptor we hold open; only this thread moves.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc < 0 {
                return Err(NfError::Netns {
                    path: path.to_path_buf(),
                    source: std::io::Error::last_os_error(),
                });
            }
            f()
        });
        handle.join().map_err(|_| NfError::Thread)?
    })
}

/// A command that runs `prog` inside `netns` (through `nsenter --net=`).
pub fn command(netns: Option<&Path>, prog: &str) -> Command {
    let mut cmd = match netns {
        Some(path) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", path.display()))
                .arg("--")
                .arg(prog);
            c
        }
        None => Command::new(prog),
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `prog args…` in `netns` and returns its standard output.
pub fn run(netns: Option<&Path>, prog: &str, args: &[&str]) -> Result<String, NfError> {
    let shown = format!("{prog} {}", args.join(" "));
    let out = command(netns, prog)
        .args(args)
        .output()
        .map_err(|e| NfError::Command {
            cmd: shown.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NfError::Command {
            cmd: shown,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

//! Running code and commands inside another network namespace.
//!
//! Code runs on a thread of its own that `setns`es into the namespace, so the
//! caller's threads never change namespace; sockets that code makes stay in
//! that namespace. Commands run through `nsenter --net=PATH`, which, unlike
//! `ip netns exec`, leaves `/sys` as it is.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("entering network namespace {}: {source}", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a thread for network namespace {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread in network namespace {} panicked", path.display())]
    Panicked { path: PathBuf },
    #[error("no answer from network namespace {} within {} s", path.display(), limit.as_secs_f64())]
    TimedOut { path: PathBuf, limit: Duration },
    #[error("running `{cmd}`: {detail}")]
    Command { cmd: String, detail: String },
}

/// Moves the calling thread into the network namespace at `path`. Only call
/// it on a thread of its own: the thread stays there.
pub fn enter(path: &Path) -> Result<(), Error> {
    enter_file(&open(path)?, path)
}

fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| Error::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// [`enter`] with the namespace's file, already open.
fn enter_file(file: &File, path: &Path) -> Result<(), Error> {
    // SAFETY: setns on a descriptor held open; CLONE_NEWNET moves only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Enter {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` in the network namespace at `path`, on a thread that ends with
/// `f`. A namespace that can't be opened costs no thread.
pub fn call<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    let file = open(path)?;
    std::thread::scope(|s| {
        let handle = s.spawn(|| enter_file(&file, path).map(|()| f()));
        handle.join().map_err(|_| Error::Panicked {
            path: path.to_path_buf(),
        })?
    })
}

/// Runs `f` in each namespace of `paths`, on up to `threads` threads that
/// each enter one namespace after another (no thread per namespace).
/// Results in the order of `paths`; an error where a namespace could not
/// be entered.
pub fn call_each<T: Send>(
    paths: &[&Path],
    threads: usize,
    f: impl Fn() -> T + Sync,
) -> Vec<Result<T, Error>> {
    let per = paths.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(per)
            .map(|chunk| {
                let f = &f;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|path| enter(path).map(|()| f()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .zip(paths.chunks(per))
            .flat_map(|(w, chunk)| {
                w.join().unwrap_or_else(|_| {
                    chunk
                        .iter()
                        .map(|p| {
                            Err(Error::Panicked {
                                path: p.to_path_buf(),
                            })
                        })
                        .collect()
                })
            })
            .collect()
    })
}

/// [`call`] when `netns` is given; `f` here, on the calling thread, when not.
pub fn call_opt<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    match netns {
        Some(path) => call(path, f),
        None => Ok(f()),
    }
}

/// Like [`call`], but gives up waiting after `limit` with
/// [`Error::TimedOut`]; the thread is then left to finish on its own.
pub fn call_within<T, F>(path: &Path, limit: Duration, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let _ = tx.send(enter(&owned).map(|()| f()));
        })
        .map_err(|source| Error::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::TimedOut {
            path: path.to_path_buf(),
            limit,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Panicked {
            path: path.to_path_buf(),
        }),
    }
}

/// The `nsenter` arguments that run a program in the namespace at `path`:
/// `nsenter --net=PATH -- PROGRAM …`.
pub fn nsenter_args(path: &Path) -> [String; 2] {
    [format!("--net={}", path.display()), "--".into()]
}

/// A command that runs `prog` in `netns` (None: here), with no standard input.
pub fn command(netns: Option<&Path>, prog: &str) -> Command {
    let mut cmd = match netns {
        Some(path) => {
            let mut c = Command::new("nsenter");
            c.args(nsenter_args(path)).arg(prog);
            c
        }
        None => Command::new(prog),
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `prog args…` in `netns` and returns its standard output.
pub fn output(netns: Option<&Path>, prog: &str, args: &[&str]) -> Result<String, Error> {
    let shown = format!("{prog} {}", args.join(" "));
    let out = command(netns, prog)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            cmd: shown.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn own_netns() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
    }

    #[test]
    fn without_a_namespace_code_runs_here() {
        let here = own_netns();
        assert_eq!(call_opt(None, own_netns).ok(), Some(here));
        let out = output(None, "echo", &["hi"]).ok();
        assert_eq!(out.as_deref(), Some("hi\n"));
    }

    #[test]
    fn a_missing_namespace_is_an_error_that_names_it() {
        let path = Path::new("/run/netns/in-netns-test-does-not-exist");
        let err = call(path, || ()).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("in-netns-test-does-not-exist")),
            "{err:?}"
        );
        let err = call_within(path, Duration::from_secs(5), || ()).err();
        assert!(matches!(err, Some(Error::Enter { .. })), "{err:?}");
        let each = call_each(&[path, path, path], 2, || ());
        assert_eq!(each.len(), 3);
        let err = each.into_iter().next().and_then(Result::err);
        assert!(matches!(err, Some(Error::Enter { .. })), "{err:?}");
    }
}

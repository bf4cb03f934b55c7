//! Traces a lab leaves on the host outside its state dir, and putting them back.
//!
//! A few paths are created by tools the lab runs and can't be redirected:
//! `ip netns add` creates (and bind-mounts) `/run/netns`, dockerd 20.10 creates
//! `/run/docker/plugins` (hard-coded plugin exec root), containerd-shim creates
//! `/run/containerd/s` (hard-coded socket dir). Before a lab starts, each of these that
//! doesn't exist yet is recorded in `/run/pathtrace-lab/host-created`; once the last lab
//! is gone and no dockerd/containerd runs on the host at all, the recorded paths are
//! removed again (only if they are empty), so the host is left as it was.
//! (`/etc/docker/key.json` is avoided with daemon.json's `deprecated-key-path`, and
//! `/run/xtables.lock` with `XTABLES_LOCKFILE`, so neither is created.)

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::config::STATE_ROOT;
use super::error::LabError;
use super::mounts;
use super::procs;

/// Paths the lab's tools may create outside its state dir.
const HOST_PATHS: [&str; 3] = ["/run/netns", "/run/docker", "/run/containerd"];

/// An exclusive `flock` on the state root, serialising record and restore between
/// labs, in this process (separate opens conflict) and in others.
struct RootLock {
    _dir: File,
}

/// Locks the state root (creating it if `create`). `None` if it doesn't exist and
/// `create` is false. Retries if the root was removed and recreated while waiting.
fn lock_root(create: bool) -> Result<Option<RootLock>, LabError> {
    loop {
        if create {
            fs::create_dir_all(STATE_ROOT)
                .map_err(|e| LabError::io(format!("mkdir {STATE_ROOT}"), e))?;
        }
        let dir = match File::open(STATE_ROOT) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LabError::io(format!("open {STATE_ROOT}"), e)),
        };
        loop {
            // SAFETY: flock on a valid fd owned by `dir`.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(LabError::io(format!("flock {STATE_ROOT}"), err));
            }
        }
        let locked = dir.metadata().map(|m| (m.dev(), m.ino())).ok();
        let current = fs::metadata(STATE_ROOT).map(|m| (m.dev(), m.ino())).ok();
        if locked.is_some() && locked == current {
            return Ok(Some(RootLock { _dir: dir }));
        }
        if current.is_none() && !create {
            return Ok(None);
        }
    }
}

fn record_file() -> PathBuf {
    Path::new(STATE_ROOT).join("host-created")
}

fn read_record() -> Vec<String> {
    fs::read_to_string(record_file())
        .map(|t| {
            t.lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Records which of the host paths don't exist yet, and creates the lab's state dir
/// (under the same lock, so a concurrent last-lab restore can't miss this lab).
/// Call before creating anything else.
pub(crate) fn record_before_start(state: &Path) -> Result<(), LabError> {
    let _lock = lock_root(true)?;
    fs::create_dir_all(state).map_err(|e| LabError::io(format!("mkdir {}", state.display()), e))?;
    let known = read_record();
    let missing: Vec<&str> = HOST_PATHS
        .iter()
        .copied()
        .filter(|p| fs::symlink_metadata(p).is_err() && !known.iter().any(|k| k == p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let path = record_file();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
    for p in missing {
        writeln!(file, "{p}").map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
    }
    Ok(())
}

/// Whether any lab state dir is left under the state root.
fn other_labs_present() -> bool {
    fs::read_dir(STATE_ROOT)
        .map(|entries| entries.flatten().any(|e| e.path().is_dir()))
        .unwrap_or(false)
}

/// What `restore_if_last` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Restore {
    /// Nothing recorded (or no state root): nothing to do.
    NothingToDo,
    /// Other labs still exist; left for the last one.
    OtherLabs,
    /// A dockerd or containerd (pid, comm) still runs on the host; left for later.
    DaemonRunning(i32, String),
    /// The recorded paths were removed, except those in use by others (`kept`, still
    /// recorded for a later teardown or sweep) and those that failed (`problems`).
    Done {
        kept: Vec<String>,
        problems: Vec<String>,
    },
}

/// Why a recorded path could not be removed.
enum Keep {
    /// Something else uses it now (not an error: it stays recorded).
    InUse(String),
    /// Removing it failed.
    Failed(String),
}

/// Once no lab is left: removes the recorded host paths (only if nobody else uses
/// them), the record and the state root.
pub(crate) fn restore_if_last() -> Restore {
    let _lock = match lock_root(false) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Restore::NothingToDo,
        Err(e) => {
            return Restore::Done {
                kept: Vec::new(),
                problems: vec![e.to_string()],
            }
        }
    };
    if other_labs_present() {
        return Restore::OtherLabs;
    }
    // A dockerd or containerd (ours are gone by now) may still use /run/docker and
    // /run/containerd: then leave everything and the record for a later teardown.
    for comm in ["dockerd", "containerd"] {
        if let Some(pid) = procs::find_named(comm) {
            return Restore::DaemonRunning(pid, comm.to_string());
        }
    }
    let (mut kept, mut problems, mut still_recorded) = (Vec::new(), Vec::new(), Vec::new());
    for entry in read_record() {
        let path = Path::new(&entry);
        if !HOST_PATHS.contains(&entry.as_str()) || fs::symlink_metadata(path).is_err() {
            continue;
        }
        match remove_recorded(path) {
            Ok(()) => {}
            Err(Keep::InUse(why)) => {
                kept.push(format!("{}: {why}", path.display()));
                still_recorded.push(entry);
            }
            Err(Keep::Failed(why)) => {
                problems.push(format!("{}: {why}", path.display()));
                still_recorded.push(entry);
            }
        }
    }
    if still_recorded.is_empty() {
        let _ = fs::remove_file(record_file());
        if let Err(e) = fs::remove_dir(STATE_ROOT) {
            problems.push(format!("rmdir {STATE_ROOT}: {e}"));
        }
    } else {
        let text: String = still_recorded.iter().map(|e| format!("{e}\n")).collect();
        if let Err(e) = fs::write(record_file(), text) {
            problems.push(format!("rewrite {}: {e}", record_file().display()));
        }
    }
    Restore::Done { kept, problems }
}

fn remove_recorded(path: &Path) -> Result<(), Keep> {
    let failed = |e: std::io::Error| Keep::Failed(e.to_string());
    let meta = fs::symlink_metadata(path).map_err(failed)?;
    if !meta.is_dir() {
        return Err(Keep::InUse("not a directory; left in place".into()));
    }
    if path == Path::new("/run/netns") {
        // `ip netns add` bind-mounts /run/netns onto itself (shared propagation).
        let names: Vec<String> = fs::read_dir(path)
            .map_err(failed)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !names.is_empty() {
            return Err(Keep::InUse(format!("holds namespaces {names:?}")));
        }
        if mounts::is_mount_point(path) {
            mounts::umount_detach(path).map_err(failed)?;
        }
        return fs::remove_dir(path).map_err(failed);
    }
    remove_empty_tree(path).map_err(|e| Keep::InUse(e.to_string()))
}

/// Why a directory tree was left in place.
#[derive(Debug, thiserror::Error)]
enum TreeError {
    #[error("{} is not empty; left in place", .0.display())]
    NotEmpty(PathBuf),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Removes a directory tree that holds only (empty) directories.
fn remove_empty_tree(path: &Path) -> Result<(), TreeError> {
    let io = |op| {
        move |source| TreeError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    for entry in fs::read_dir(path).map_err(io("reading"))?.flatten() {
        let child = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_empty_tree(&child)?;
        } else {
            return Err(TreeError::NotEmpty(child));
        }
    }
    fs::remove_dir(path).map_err(io("rmdir"))
}

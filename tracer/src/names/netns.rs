//! Names for network namespaces: Docker containers, `host`, `ip netns`
//! names, and the process living in an otherwise unnamed namespace.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

#[derive(Default)]
pub struct NetnsNames {
    names: HashMap<u32, String>,
    /// A path that opens each namespace (`/run/netns/NAME`, `/proc/PID/ns/net`).
    paths: HashMap<u32, std::path::PathBuf>,
    /// Container names win over namespace and process names.
    containers: HashMap<u32, String>,
    refreshed: Option<Instant>,
}

fn inode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

impl NetnsNames {
    pub fn load() -> Self {
        let mut n = Self::default();
        n.refresh();
        n
    }

    /// Re-reads the namespace names, at most once a second.
    pub fn refresh(&mut self) {
        if self
            .refreshed
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.refreshed = Some(Instant::now());
        let mut names = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                if let Some(ino) = inode(&e.path().join("ns/net")) {
                    self.paths
                        .entry(ino)
                        .or_insert_with(|| e.path().join("ns/net"));
                    names.entry(ino).or_insert_with(|| {
                        let comm =
                            std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                        format!("{} (pid {pid})", comm.trim())
                    });
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for e in dir.flatten() {
                if let Some(ino) = inode(&e.path()) {
                    self.paths.insert(ino, e.path());
                    names.insert(ino, e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if let Some(ino) = inode(Path::new("/proc/1/ns/net")) {
            names.insert(ino, "host".into());
        }
        self.names.extend(names);
    }

    pub fn name(&mut self, ino: u32) -> Option<&str> {
        if self.containers.contains_key(&ino) {
            return self.containers.get(&ino).map(String::as_str);
        }
        if ino != 0 && !self.names.contains_key(&ino) {
            self.refresh();
        }
        self.names.get(&ino).map(String::as_str)
    }

    /// A path that opens namespace `ino`.
    pub fn path(&mut self, ino: u32) -> Option<std::path::PathBuf> {
        if !self.paths.contains_key(&ino) {
            self.refresh();
        }
        self.paths.get(&ino).cloned()
    }

    /// The Docker container living in namespace `ino`, if any.
    pub fn container(&self, ino: u32) -> Option<&str> {
        self.containers.get(&ino).map(String::as_str)
    }

    pub fn set_containers(&mut self, containers: &super::Containers) {
        self.containers = containers
            .by_netns
            .iter()
            .map(|(ino, c)| (*ino, c.name.clone()))
            .collect();
    }

    pub fn insert(&mut self, ino: u32, name: impl Into<String>) {
        self.names.insert(ino, name.into());
    }
}

/// Runs `f` on a thread that entered the network namespace at `path`.
/// `None` when the namespace can't be entered.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Option<T> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::File::open(path).ok()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns affects only this scoped thread, which ends after `f`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            Some(f())
        })
        .join()
        .ok()
        .flatten()
    })
}

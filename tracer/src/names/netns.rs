//! Names for network namespaces, best first: `host`, Docker containers,
//! LXC/Proxmox guests (`CT 103`), systemd-nspawn machines, `ip netns` names,
//! and the process living in an otherwise unnamed namespace.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

/// What a namespace's name says it is, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NetnsKind {
    Process,
    Netns,
    Nspawn,
    Lxc,
    Container,
    Host,
}

impl NetnsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Netns => "netns",
            Self::Nspawn => "nspawn",
            Self::Lxc => "lxc",
            Self::Container => "container",
            Self::Host => "host",
        }
    }
}

#[derive(Default)]
pub struct NetnsNames {
    names: HashMap<u32, (String, NetnsKind)>,
    /// A path that opens each namespace (`/run/netns/NAME`, `/proc/PID/ns/net`).
    paths: HashMap<u32, std::path::PathBuf>,
    /// Container names win over every name but `host`.
    containers: HashMap<u32, String>,
    host: Option<u32>,
    refreshed: Option<Instant>,
    /// When each namespace's path was last found to still open it.
    checked: HashMap<u32, Instant>,
}

/// How long a namespace's path, once found to open it, is trusted.
const RECHECK: Duration = Duration::from_secs(1);

fn inode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// The inode of pathtrace's own network namespace.
pub fn own_netns() -> Option<u32> {
    inode(Path::new("/proc/self/ns/net"))
}

/// The guest a process belongs to, from its cgroup path: an LXC/Proxmox
/// container (`/lxc.payload.103/…`, `/lxc/103/…`) or a systemd-nspawn
/// machine (`/machine.slice/machine-web.scope/…`,
/// `…/systemd-nspawn@web.service/…`).
pub fn guest_of_cgroup(cgroup: &str) -> Option<(NetnsKind, String)> {
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        let mut segs = path.split('/').filter(|s| !s.is_empty()).peekable();
        while let Some(seg) = segs.next() {
            if let Some(ct) = seg
                .strip_prefix("lxc.payload.")
                .or_else(|| seg.strip_prefix("lxc.monitor."))
            {
                return Some((NetnsKind::Lxc, ct.to_owned()));
            }
            if seg == "lxc" {
                if let Some(ct) = segs.peek() {
                    return Some((NetnsKind::Lxc, (*ct).to_owned()));
                }
            }
            let machine = seg
                .strip_prefix("machine-")
                .and_then(|m| m.strip_suffix(".scope"))
                .or_else(|| {
                    seg.strip_prefix("systemd-nspawn@")
                        .and_then(|m| m.strip_suffix(".service"))
                });
            if let Some(m) = machine {
                return Some((NetnsKind::Nspawn, m.replace("\\x2d", "-")));
            }
        }
    }
    None
}

/// How a guest is shown: `CT 103 (seafile)`, `machine web`.
fn guest_label(kind: NetnsKind, id: &str, hostname: Option<&str>) -> String {
    let base = match kind {
        NetnsKind::Lxc => format!("CT {id}"),
        _ => format!("machine {id}"),
    };
    match hostname
        .map(str::trim)
        .filter(|h| !h.is_empty() && *h != id)
    {
        Some(h) => format!("{base} ({h})"),
        None => base,
    }
}

impl NetnsNames {
    pub fn load() -> Self {
        let mut n = Self::default();
        n.refresh();
        n
    }

    fn offer(
        names: &mut HashMap<u32, (String, NetnsKind)>,
        ino: u32,
        name: String,
        kind: NetnsKind,
    ) {
        match names.get(&ino) {
            Some((_, k)) if *k >= kind => {}
            _ => {
                names.insert(ino, (name, kind));
            }
        }
    }

    /// Re-reads the namespace names, at most once a second (and at most
    /// 65536 processes).
    pub fn refresh(&mut self) {
        if self
            .refreshed
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.refreshed = Some(Instant::now());
        // Kernel threads (kthreadd, pid 2) always live in the initial namespace.
        let host =
            inode(Path::new("/proc/1/ns/net")).or_else(|| inode(Path::new("/proc/2/ns/net")));
        self.host = host;
        let mut names = HashMap::new();
        let mut paths = HashMap::new();
        let mut guests_seen: HashMap<u32, ()> = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten().take(65536) {
                let pid = e.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Some(ino) = inode(&e.path().join("ns/net")) else {
                    continue;
                };
                paths.entry(ino).or_insert_with(|| e.path().join("ns/net"));
                if !names.contains_key(&ino) {
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    Self::offer(
                        &mut names,
                        ino,
                        format!("{} (pid {pid})", comm.trim()),
                        NetnsKind::Process,
                    );
                }
                if Some(ino) == host || guests_seen.contains_key(&ino) {
                    continue;
                }
                let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
                if let Some((kind, id)) = guest_of_cgroup(&cgroup) {
                    guests_seen.insert(ino, ());
                    let hostname = std::fs::read_to_string(e.path().join("root/etc/hostname")).ok();
                    Self::offer(
                        &mut names,
                        ino,
                        guest_label(kind, &id, hostname.as_deref()),
                        kind,
                    );
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for e in dir.flatten().take(4096) {
                if let Some(ino) = inode(&e.path()) {
                    paths.insert(ino, e.path());
                    Self::offer(
                        &mut names,
                        ino,
                        e.file_name().to_string_lossy().into_owned(),
                        NetnsKind::Netns,
                    );
                }
            }
        }
        if let Some(ino) = host {
            names.insert(ino, ("host".into(), NetnsKind::Host));
        }
        // What was found is what lives now: it replaces what was known of
        // those inodes (a gone namespace's number, or a gone process's pid,
        // may have been reused). Names of namespaces not found are kept for
        // the packets seen in them before they went.
        let now = Instant::now();
        for (ino, path) in paths {
            self.paths.insert(ino, path);
            self.checked.insert(ino, now);
        }
        self.names.extend(names);
    }

    /// Whether namespace `ino`'s path still opens it (checked at most once
    /// a second): once a namespace is gone its inode number is reused, and
    /// once a process is gone its pid, so a kept name or path would belong
    /// to another namespace. A namespace known without a path holds.
    fn still_holds(&mut self, ino: u32) -> bool {
        let Some(path) = self.paths.get(&ino) else {
            return true;
        };
        if self
            .checked
            .get(&ino)
            .is_some_and(|t| t.elapsed() < RECHECK)
        {
            return true;
        }
        let holds = inode(path) == Some(ino);
        if holds {
            self.checked.insert(ino, Instant::now());
        }
        holds
    }

    /// Forgets namespace `ino` when what is known of it no longer holds.
    fn drop_if_stale(&mut self, ino: u32) {
        if !self.still_holds(ino) {
            self.names.remove(&ino);
            self.paths.remove(&ino);
            self.checked.remove(&ino);
        }
    }

    /// Makes namespace `ino`'s name known if it can be: the names are
    /// read again (at most once a second) when it is new.
    pub fn resolve(&mut self, ino: u32) {
        let container = Some(ino) != self.host && self.containers.contains_key(&ino);
        if ino == 0 || container {
            return;
        }
        self.drop_if_stale(ino);
        if !self.names.contains_key(&ino) {
            self.refresh();
        }
    }

    fn known(&self, ino: u32) -> Option<(&str, NetnsKind)> {
        if Some(ino) != self.host {
            if let Some(c) = self.containers.get(&ino) {
                return Some((c.as_str(), NetnsKind::Container));
            }
        }
        self.names.get(&ino).map(|(n, k)| (n.as_str(), *k))
    }

    /// The name of namespace `ino`, as far as [`NetnsNames::resolve`] found it.
    pub fn name(&self, ino: u32) -> Option<&str> {
        self.known(ino).map(|(n, _)| n)
    }

    /// What the name of namespace `ino` says it is.
    pub fn kind(&self, ino: u32) -> Option<NetnsKind> {
        self.known(ino).map(|(_, k)| k)
    }

    /// A path that opens namespace `ino`.
    pub fn path(&mut self, ino: u32) -> Option<std::path::PathBuf> {
        self.drop_if_stale(ino);
        if !self.paths.contains_key(&ino) {
            self.refresh();
        }
        self.paths.get(&ino).cloned()
    }

    /// Every namespace known so far, with a path that opens it.
    pub fn known_paths(&self) -> Vec<(u32, std::path::PathBuf)> {
        self.paths.iter().map(|(i, p)| (*i, p.clone())).collect()
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
        self.names.insert(ino, (name.into(), NetnsKind::Netns));
    }
}

/// A path that still opens namespace `ino`, when anything but pathtrace's
/// own sockets holds it: `path` itself, a mount of it (`ip netns`, Docker's
/// sandboxes), or a process living in it. `None`: it is gone.
pub fn netns_opener(ino: u32, path: &Path) -> Option<std::path::PathBuf> {
    if inode(path) == Some(ino) {
        return Some(path.to_path_buf());
    }
    let mounted = format!("net:[{ino}]");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount_point = mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some(mounted.as_str()))
        .find_map(|l| l.split_whitespace().nth(4))
        .map(std::path::PathBuf::from)
        .filter(|p| inode(p) == Some(ino));
    if mount_point.is_some() {
        return mount_point;
    }
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .take(65536)
        .filter(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            pid != me && pid.bytes().all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"))
        .find(|p| inode(p) == Some(ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_whose_path_opens_another_namespace_or_none_is_forgotten() {
        let dir = std::env::temp_dir().join(format!("pathtrace-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Files stand in for namespaces: a path and the inode it opens.
        let (kept, reused) = (dir.join("kept"), dir.join("reused"));
        for f in [&kept, &reused] {
            std::fs::write(f, "").expect("write");
        }
        let (kept_ino, reused_ino) = (inode(&kept).expect("inode"), inode(&reused).expect("inode"));
        let mut n = NetnsNames {
            // Read just now: no scan of the host's namespaces in this test.
            refreshed: Some(Instant::now()),
            ..NetnsNames::default()
        };
        for (ino, name, path) in [(kept_ino, "kept", &kept), (reused_ino, "old", &reused)] {
            n.names.insert(ino, (name.to_owned(), NetnsKind::Netns));
            n.paths.insert(ino, path.clone());
        }
        // The second path now opens something else (a pid reused by a
        // process in another namespace); a second has passed.
        let other = dir.join("other");
        std::fs::write(&other, "").expect("write");
        std::fs::rename(&other, &reused).expect("rename");
        n.checked.clear();
        n.resolve(kept_ino);
        n.resolve(reused_ino);
        assert_eq!(n.name(kept_ino), Some("kept"));
        assert_eq!(n.path(kept_ino), Some(kept.clone()));
        assert_eq!(n.name(reused_ino), None);
        assert_eq!(n.path(reused_ino), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn guests_from_cgroups() {
        let lxc = "0::/lxc.payload.103/system.slice/docker.service\n";
        assert_eq!(
            guest_of_cgroup(lxc),
            Some((NetnsKind::Lxc, "103".to_owned()))
        );
        let pve_v1 = "12:pids:/lxc/104/ns/init.scope\n";
        assert_eq!(
            guest_of_cgroup(pve_v1),
            Some((NetnsKind::Lxc, "104".to_owned()))
        );
        let nspawn = "0::/machine.slice/machine-build\\x2dbox.scope/payload\n";
        assert_eq!(
            guest_of_cgroup(nspawn),
            Some((NetnsKind::Nspawn, "build-box".to_owned()))
        );
        assert_eq!(guest_of_cgroup("0::/system.slice/docker.service\n"), None);
        assert_eq!(
            guest_label(NetnsKind::Lxc, "103", Some("seafile\n")),
            "CT 103 (seafile)"
        );
        assert_eq!(
            guest_label(NetnsKind::Nspawn, "web", Some("web")),
            "machine web"
        );
    }
}

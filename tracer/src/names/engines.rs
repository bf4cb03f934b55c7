//! Where Docker-compatible engine APIs listen, found the way users' own
//! tools find them: `--docker-socket`, else `DOCKER_HOST`, else every
//! conventional socket that exists (rootless Docker and Podman under the
//! runtime folder of the user, or of the user who ran sudo, then the
//! system-wide Podman and Docker sockets).
use std::path::{Path, PathBuf};

/// The API sockets to ask for container names, in order of precedence.
pub fn api_sockets(explicit: Option<&Path>) -> Vec<PathBuf> {
    api_sockets_with(explicit, |k| std::env::var(k).ok(), Path::exists)
}

fn api_sockets_with(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    exists: impl Fn(&Path) -> bool,
) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    if let Some(host) = env("DOCKER_HOST").filter(|h| !h.is_empty()) {
        match host.strip_prefix("unix://") {
            Some(path) => return vec![PathBuf::from(path)],
            None => log::warn!(
                "DOCKER_HOST={host} is not a unix socket; looking for local engines instead"
            ),
        }
    }
    let mut runtime_dirs: Vec<PathBuf> = env("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(uid) = env("SUDO_UID").filter(|u| u.parse::<u32>().is_ok()) {
        runtime_dirs.push(PathBuf::from(format!("/run/user/{uid}")));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in &runtime_dirs {
        candidates.push(dir.join("docker.sock"));
        candidates.push(dir.join("podman/podman.sock"));
    }
    candidates.push(PathBuf::from("/run/podman/podman.sock"));
    candidates.push(PathBuf::from("/var/run/docker.sock"));
    let mut out: Vec<PathBuf> = Vec::new();
    for c in candidates {
        if exists(&c) && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn explicit_socket_wins_over_everything() {
        let got = api_sockets_with(
            Some(Path::new("/x.sock")),
            env(&[("DOCKER_HOST", "unix:///y.sock")]),
            |_| true,
        );
        assert_eq!(got, vec![PathBuf::from("/x.sock")]);
    }

    #[test]
    fn docker_host_unix_socket_is_the_only_one_asked() {
        let got = api_sockets_with(None, env(&[("DOCKER_HOST", "unix:///y.sock")]), |_| true);
        assert_eq!(got, vec![PathBuf::from("/y.sock")]);
    }

    #[test]
    fn conventions_in_order_and_only_existing() {
        let got = api_sockets_with(
            None,
            env(&[
                ("DOCKER_HOST", "tcp://192.0.2.1:2375"),
                ("XDG_RUNTIME_DIR", "/run/user/0"),
                ("SUDO_UID", "1000"),
            ]),
            |p| !p.ends_with("run/user/0/docker.sock"),
        );
        assert_eq!(
            got,
            [
                "/run/user/0/podman/podman.sock",
                "/run/user/1000/docker.sock",
                "/run/user/1000/podman/podman.sock",
                "/run/podman/podman.sock",
                "/var/run/docker.sock",
            ]
            .map(PathBuf::from)
        );
    }
}

/// A container engine's API socket found through the process serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineSocket {
    /// `/proc/PID/root/…`: reachable whatever mount namespace the engine has.
    pub path: PathBuf,
    pub pid: u32,
    /// The engine's network namespace.
    pub netns: u32,
    /// Its `/proc` as seen from its own root, where the pids its API
    /// reports (from its own pid namespace) can be looked up.
    pub proc_root: PathBuf,
}

/// The unix socket paths an engine's command line says it serves, else its
/// default. `comm` is `dockerd` or `podman`.
fn served_paths(comm: &str, args: &[String], runtime_dir: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter().skip(1).peekable();
    while let Some(a) = it.next() {
        let value = match a.as_str() {
            "-H" | "--host" => it.next().cloned(),
            _ => a
                .strip_prefix("--host=")
                .or_else(|| a.strip_prefix("-H="))
                .or_else(|| a.strip_prefix("-H"))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .or_else(|| (comm == "podman").then(|| a.clone())),
        };
        if let Some(path) = value.as_deref().and_then(|v| v.strip_prefix("unix://")) {
            out.push(path.to_owned());
        }
    }
    if out.is_empty() {
        match comm {
            "dockerd" => out.push("/var/run/docker.sock".into()),
            "podman" if args.iter().any(|a| a == "service") => out.push(match runtime_dir {
                Some(dir) => format!("{dir}/podman/podman.sock"),
                None => "/run/podman/podman.sock".into(),
            }),
            _ => {}
        }
    }
    out
}

fn nul_split(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Docker and Podman API services running on this machine, in any
/// namespace, with their sockets reached through each process's root
/// (paths to one socket may repeat: [`Containers::discover_with`](super::Containers::discover_with)
/// asks each socket once). At most 4096 processes are looked at.
pub fn engine_processes() -> Vec<EngineSocket> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<EngineSocket> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten().take(4096) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let proc = e.path();
        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm != "dockerd" && comm != "podman" {
            continue;
        }
        let args = nul_split(&std::fs::read(proc.join("cmdline")).unwrap_or_default());
        let runtime_dir = nul_split(&std::fs::read(proc.join("environ")).unwrap_or_default())
            .into_iter()
            .find_map(|v| v.strip_prefix("XDG_RUNTIME_DIR=").map(str::to_owned));
        let Some(netns) = std::fs::metadata(proc.join("ns/net"))
            .ok()
            .map(|m| m.ino() as u32)
        else {
            continue;
        };
        let root = proc.join("root");
        for p in served_paths(comm, &args, runtime_dir.as_deref()) {
            // Through /proc/PID/root, the absolute symlink /var/run → /run
            // would resolve in pathtrace's root: try /run's spelling first.
            let spellings = match p.strip_prefix("/var/run/") {
                Some(rest) => vec![format!("run/{rest}"), p.trim_start_matches('/').to_owned()],
                None => vec![p.trim_start_matches('/').to_owned()],
            };
            let Some(path) = spellings
                .into_iter()
                .map(|s| root.join(s))
                .find(|path| path.exists())
            else {
                continue;
            };
            out.push(EngineSocket {
                path,
                pid,
                netns,
                proc_root: root.join("proc"),
            });
        }
    }
    out
}

#[cfg(test)]
mod served_tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn sockets_from_engine_command_lines() {
        assert_eq!(
            served_paths(
                "dockerd",
                &args("dockerd --data-root /x --host=unix:///run/lab/docker.sock"),
                None
            ),
            ["/run/lab/docker.sock"]
        );
        assert_eq!(
            served_paths(
                "dockerd",
                &args("dockerd -H unix:///a.sock -H tcp://192.0.2.1:2375"),
                None
            ),
            ["/a.sock"]
        );
        assert_eq!(
            served_paths("dockerd", &args("/usr/bin/dockerd -H fd://"), None),
            ["/var/run/docker.sock"]
        );
        assert_eq!(
            served_paths(
                "podman",
                &args("podman system service --time=0 unix:///tmp/p.sock"),
                None
            ),
            ["/tmp/p.sock"]
        );
        assert_eq!(
            served_paths(
                "podman",
                &args("podman system service --time=0"),
                Some("/run/user/1000")
            ),
            ["/run/user/1000/podman/podman.sock"]
        );
        assert!(served_paths("podman", &args("podman run x"), None).is_empty());
    }
}

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

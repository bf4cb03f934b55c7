//! Network namespaces: creation, the LAN topology, deletion, and running code inside one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cmd::Cmd;
use super::config::{LabNames, CLIENT_IP, HOST_IP, OTHER_IP};
use super::error::LabError;

/// Where `ip netns` keeps named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// The path of a namespace: a name under /run/netns, or an absolute path as given.
pub fn ns_path(ns: &str) -> PathBuf {
    if ns.starts_with('/') {
        PathBuf::from(ns)
    } else {
        Path::new(NETNS_DIR).join(ns)
    }
}

pub(crate) fn exists(name: &str) -> bool {
    ns_path(name).exists()
}

/// The inode of a namespace (what `/proc/PID/ns/net` and BPF's `ns.inum` show).
pub(crate) fn inode(ns: &str) -> Result<u64, LabError> {
    let path = ns_path(ns);
    std::fs::metadata(&path)
        .map(|m| m.ino())
        .map_err(|e| LabError::io(format!("stat {}", path.display()), e))
}

pub(crate) fn add(name: &str) -> Result<(), LabError> {
    Cmd::new("ip")
        .args(["netns", "add", name])
        .run()
        .map(|_| ())
}

/// Deletes a named namespace if it exists (`ip netns delete` unmounts and
/// unlinks it). Its TCP and UDP sockets are destroyed first (`ss -K`): a
/// socket that outlives the name (an orphaned connection, a probe's thread
/// that ran past its limit) keeps the namespace alive and frees what it
/// holds whenever it closes, into whatever is traced then. Every test
/// reuses the same addresses, so that would be the next test's trace.
pub fn delete(name: &str) -> Result<(), LabError> {
    if !exists(name) {
        return Ok(());
    }
    // Best effort: a kernel without socket destruction (INET_DIAG_DESTROY)
    // only leaves the sockets to the namespace's own cleanup.
    let _ = Cmd::new("ip")
        .args(["netns", "exec", name, "ss", "-K", "-a", "-t", "-u"])
        .run();
    Cmd::new("ip")
        .args(["netns", "delete", name])
        .run()
        .map(|_| ())
}

/// `ip -n NS ARGS...`
pub(crate) fn ip(ns: &str, args: &[&str]) -> Result<(), LabError> {
    Cmd::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .run()
        .map(|_| ())
}

/// Runs `f` on a fresh thread that has joined the network namespace `ns` (a name or a
/// path). Only that thread changes namespace. Gives up waiting after `limit` and
/// returns `Err(None)` (the thread is then left to finish on its own).
pub fn in_netns<T, F>(ns: &str, limit: Duration, f: F) -> Result<T, Option<LabError>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    in_netns::call_within(&ns_path(ns), limit, f).map_err(|e| match e {
        in_netns::Error::TimedOut { .. } => None,
        e => Some(e.into()),
    })
}

/// Moves the calling thread into the network namespace `ns` (a name under
/// /run/netns or a path). Only call it on a thread of its own: it stays there.
pub fn enter_netns(ns: &str) -> Result<(), LabError> {
    Ok(in_netns::enter(&ns_path(ns))?)
}

/// Writes a sysctl under /proc/sys in namespace `ns` (e.g. `net/ipv4/ip_forward`).
pub(crate) fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let file = format!("/proc/sys/{key}");
    let value = value.to_string();
    let shown = format!("writing {value} to {file} in {ns}");
    match in_netns(ns, Duration::from_secs(5), move || {
        std::fs::write(&file, value.as_bytes())
    }) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(LabError::io(shown, e)),
        Err(Some(e)) => Err(e),
        Err(None) => Err(LabError::Timeout(shown)),
    }
}

/// Builds the LAN: `{p}-lan` with bridge `br0`, and `{p}-client`, `{p}-other` and
/// `{p}-dock`, each with an `eth0` on the bridge. Every interface is created inside a
/// lab namespace, never in the caller's.
pub(crate) fn build_lan(names: &LabNames) -> Result<(), LabError> {
    add(&names.lan)?;
    ip(&names.lan, &["link", "set", "lo", "up"])?;
    ip(&names.lan, &["link", "add", "br0", "type", "bridge"])?;
    ip(&names.lan, &["link", "set", "br0", "up"])?;
    attach_host(names, &names.client, "veth-client", CLIENT_IP)?;
    attach_host(names, &names.other, "veth-other", OTHER_IP)?;
    add_dock(names)?;
    Ok(())
}

/// (Re)creates the Docker host namespace and plugs it into the LAN, with ip_forward=1.
pub(crate) fn add_dock(names: &LabNames) -> Result<(), LabError> {
    attach_host(names, &names.dock, "veth-dock", HOST_IP)?;
    sysctl(&names.dock, "net/ipv4/ip_forward", "1")
}

/// Recreates the Docker host namespace from scratch (after a failed dockerd start that
/// may have left bridges and rules behind).
pub(crate) fn reset_dock(names: &LabNames) -> Result<(), LabError> {
    // Deleting one end of a veth pair deletes both at once; a namespace's interfaces
    // only go when the kernel gets round to destroying it.
    ip(&names.lan, &["link", "del", "veth-dock"])?;
    delete(&names.dock)?;
    add_dock(names)
}

fn attach_host(
    names: &LabNames,
    ns: &str,
    lan_side: &str,
    addr: std::net::Ipv4Addr,
) -> Result<(), LabError> {
    add(ns)?;
    let cidr = format!("{addr}/24");
    ip(
        &names.lan,
        &[
            "link", "add", lan_side, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    ip(
        &names.lan,
        &["link", "set", lan_side, "master", "br0", "up"],
    )?;
    ip(ns, &["link", "set", "lo", "up"])?;
    ip(ns, &["addr", "add", &cidr, "dev", "eth0"])?;
    ip(ns, &["link", "set", "eth0", "up"])?;
    Ok(())
}

/// Names of the interface in namespace `ns` with index `ifindex`.
pub(crate) fn link_name_by_index(ns: &str, ifindex: u32) -> Result<Option<String>, LabError> {
    let out = Cmd::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .run()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_links(&text)
        .into_iter()
        .find(|(idx, _, _)| *idx == ifindex)
        .map(|(_, name, _)| name))
}

/// The peer ifindex of `dev` in the namespace at `ns` (a name or path), from `dev@ifN`.
pub(crate) fn peer_ifindex(ns: &str, dev: &str) -> Result<Option<u32>, LabError> {
    let out = Cmd::in_netns(&ns_path(ns), "ip")
        .args(["-o", "link", "show", "dev", dev])
        .run()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_links(&text).into_iter().find_map(|(_, _, peer)| peer))
}

/// Parses `ip -o link` lines: `5: veth57afa44@if4: <...` into (index, name, peer index).
pub(crate) fn parse_links(text: &str) -> Vec<(u32, String, Option<u32>)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ": ");
            let idx = parts.next()?.trim().parse().ok()?;
            let full = parts.next()?;
            let (name, peer) = match full.split_once('@') {
                Some((n, p)) => (n, p.strip_prefix("if").and_then(|x| x.parse().ok())),
                None => (full, None),
            };
            Some((idx, name.to_string(), peer))
        })
        .collect()
}

#[cfg(test)]
mod parse_tests {
    use super::parse_links;

    #[test]
    fn parses_ip_link_lines() {
        let text = "1: lo: <LOOPBACK,UP> mtu 65536\n\
                    5: veth57afa44@if4: <BROADCAST> mtu 1500 master docker0\n\
                    2: eth0@if5: <UP> mtu 1500 link-netns x\n";
        let links = parse_links(text);
        assert_eq!(links[0], (1, "lo".to_string(), None));
        assert_eq!(links[1], (5, "veth57afa44".to_string(), Some(4)));
        assert_eq!(links[2], (2, "eth0".to_string(), Some(5)));
    }
}

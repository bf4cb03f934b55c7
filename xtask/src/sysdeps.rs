//! The system packages each task needs, and installing the missing ones.
//!
//! On Debian and Ubuntu the check asks dpkg and the install is one
//! `apt-get install`; elsewhere a missing tool stops the task with one line
//! naming the packages to install by hand.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::proc::{is_root, run_quiet};

/// A Debian package, one tool that shows it is there, and why it is needed.
pub struct Need {
    pub package: &'static str,
    pub tool: &'static str,
    pub why: &'static str,
}

const fn need(package: &'static str, tool: &'static str, why: &'static str) -> Need {
    Need { package, tool, why }
}

/// What `pathtrace demo` runs: the namespace lab with a real Docker engine.
pub const DEMO: &[Need] = &[
    need("iproute2", "ip", "the lab's namespaces"),
    need("util-linux", "nsenter", "entering them"),
    need("iptables", "iptables-nft-restore", "Docker's chains"),
    need("nftables", "nft", "rule text"),
    need("docker.io", "dockerd", "the Docker engine"),
    need("busybox-static", "busybox", "the container image"),
];

/// What the integration suites run on top of the demo's.
pub const TEST: &[Need] = &[
    need("bpftool", "bpftool", "leak checks"),
    need("procps", "ps", "process checks"),
    need("kmod", "modprobe", "kernel modules"),
    need("man-db", "man", "the installed man page"),
    need("dpkg", "dpkg-deb", "the .deb"),
    need("podman", "podman", "the Podman engine test"),
    // Podman's runtime there: crun refuses the machine's hybrid cgroups.
    need("runc", "runc", "Podman's runtime"),
    need("prometheus", "promtool", "checking and scraping --metrics"),
    // Installed with DEBIAN_FRONTEND=noninteractive, wireshark-common's
    // question about non-root capture takes its default (no) and never blocks.
    need("tshark", "tshark", "reading --pcap files"),
    need(
        "tcpdump",
        "tcpdump",
        "judging filter expressions against tcpdump's",
    ),
    need("wireshark-common", "capinfos", "checking --pcap files"),
    need(
        "python3",
        "python3",
        "the listeners of the explain and failures suites",
    ),
    need(
        "ufw",
        "ufw",
        "real ufw in the explain suite (a private copy of /etc/ufw)",
    ),
    need(
        "conntrack",
        "conntrack",
        "flushing conntrack state for the INVALID case",
    ),
    // Run by the tests only, in a namespace with a private D-Bus; the
    // install starts no service (see NoServiceStarts).
    need(
        "firewalld",
        "firewall-cmd",
        "a real firewalld in a namespace (failures suite)",
    ),
    need("dbus-daemon", "dbus-daemon", "firewalld's private D-Bus"),
];

/// What `cargo xtask dist` runs.
pub const DIST: &[Need] = &[need("dpkg", "dpkg-deb", "the .deb")];

/// What the VM kernel matrix runs.
pub const VM: &[Need] = &[
    need("dpkg", "dpkg-deb", "unpacking kernel packages"),
    need("qemu-system-x86", "qemu-system-x86_64", "the VM"),
    need("kmod", "depmod", "the guest's modules"),
    need("python3-venv", "python3", "virtme-ng"),
];

/// What the arm64 guest (`cargo xtask test --arm64`) runs.
pub const ARM64: &[Need] = &[
    need(
        "mmdebstrap",
        "mmdebstrap",
        "unpacking the arm64 guest's Debian packages",
    ),
    need("qemu-system-arm", "qemu-system-aarch64", "the arm64 VM"),
    need("cpio", "cpio", "the arm64 guest's initramfs"),
    need("kmod", "depmod", "the guest's modules"),
];

/// What the benchmark runs besides the demo lab.
pub const BENCH: &[Need] = &[
    need("bpftrace", "bpftrace", "the peer tracer"),
    need("bpftool", "bpftool", "kernel statistics"),
];

pub fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .any(|dir| dir.join(tool).is_file())
}

fn have_dpkg() -> bool {
    on_path("dpkg-query")
}

fn installed(n: &Need) -> bool {
    if have_dpkg() {
        Command::new("dpkg-query")
            .args(["-W", "-f=${db:Status-Status}", n.package])
            .output()
            // A package whose triggers wait on another's install is there.
            .map(|o| {
                o.status.success()
                    && matches!(
                        o.stdout.as_slice(),
                        b"installed" | b"triggers-pending" | b"triggers-awaited"
                    )
            })
            .unwrap_or(false)
    } else {
        on_path(n.tool)
    }
}

/// Installs whatever `needs` lists that is missing, saying in one line what
/// and why, for `task`.
pub fn ensure(task: &str, needs: &[&[Need]]) -> Result<()> {
    let mut missing: Vec<&Need> = Vec::new();
    for n in needs.iter().flat_map(|n| n.iter()) {
        if !missing.iter().any(|m| m.package == n.package) && !installed(n) {
            missing.push(n);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|n| n.package).collect();
    let why: Vec<String> = missing
        .iter()
        .map(|n| format!("{} for {}", n.package, n.why))
        .collect();
    if !on_path("apt-get") {
        bail!(
            "{task} needs {} and there is no apt-get here: install them with your package manager",
            names.join(" ")
        );
    }
    if !is_root() {
        bail!(
            "{task} needs {} (not installed), and installing them needs root: run it as root",
            names.join(" ")
        );
    }
    eprintln!("xtask: {task} installs {}", why.join(", "));
    let install = || {
        run_quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&names)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    // Packages must not start their services on the host (a host dockerd
    // would write its own chains into the namespace the tests compare).
    let guard = NoServiceStarts::new()?;
    let result = install().or_else(|_| {
        run_quiet(Command::new("apt-get").args(["update", "-qq"]))
            .context("apt-get update failed")?;
        install()
    });
    drop(guard);
    result.with_context(|| format!("`apt-get install {}` failed", names.join(" ")))?;
    let still: Vec<&str> = missing
        .iter()
        .filter(|n| !installed(n))
        .map(|n| n.package)
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

/// Debian's `policy-rc.d` convention: while it exists and exits 101,
/// maintainer scripts start no services. Removed again on drop, unless the
/// machine already had one.
struct NoServiceStarts {
    ours: bool,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStarts {
    fn new() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        if Path::new(POLICY_RC_D).exists() {
            return Ok(Self { ours: false });
        }
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# pathtrace xtask: no service starts while installing\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { ours: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.ours {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

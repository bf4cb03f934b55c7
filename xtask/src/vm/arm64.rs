//! `cargo xtask test --arm64`: the arm64 build (`dist --target
//! aarch64-unknown-linux-musl`) in a Debian arm64 kernel under
//! `qemu-system-aarch64` (software emulation), running the smoke suite
//! (tests/smoke.rs, built for aarch64) on every tier that kernel allows.
//!
//! The guest's root is an initramfs, so no host filesystem is shared:
//! - Debian's arm64 kernel (`linux-image-arm64`) and a small userland
//!   (busybox, iproute2, iptables, nftables, util-linux, bpftool, kmod) are
//!   unpacked once with `mmdebstrap --variant=extract` (no package scripts
//!   run, so no arm64 emulation on the host) into `.tools/arm64/root/`;
//! - from it, one cpio archive of the userland and the networking modules is
//!   kept in `.tools/arm64/`; each run appends one holding the binaries and
//!   the init script (the kernel unpacks concatenated archives in turn).
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{
    guest,
    kernel::system_debian_uri,
    report::{Mark, Outcome, Step},
    VmOpts,
};
use crate::{
    build::integration_test_for,
    dist::{self, Arch},
    ebpf,
    proc::run_quiet,
    sysdeps,
    workspace::workspace_root,
};

/// The Debian packages the guest's root is made of.
const PACKAGES: &[&str] = &[
    "linux-image-arm64",
    "busybox-static",
    "iproute2",
    "iptables",
    "nftables",
    "util-linux",
    "mount",
    "bpftool",
    "kmod",
];

/// The tiers, and whether Debian 12's arm64 kernel (6.1) allows each. It
/// refuses fentry: arm64 attaches BPF trampolines to kernel functions through
/// ftrace direct calls, which arm64 has from Linux 6.4 (attaching fails with
/// ENOTSUPP); there the smoke suite checks the one-line refusal.
const TIERS: &[(&str, bool)] = &[("tracepoint", true), ("fentry", false), ("kprobe", true)];

/// Kernel module folders the lab and pathtrace load from (with what they
/// depend on, all under these).
const MODULE_DIRS: &[&str] = &[
    "kernel/net/netfilter",
    "kernel/net/ipv4",
    "kernel/net/ipv6",
    "kernel/net/bridge",
    "kernel/net/802",
    "kernel/net/llc",
    "kernel/net/sched",
    "kernel/lib",
    "kernel/crypto",
    "kernel/drivers/net/veth.ko",
];

/// What of the unpacked root the guest doesn't need.
const LEFT_OUT: &[&str] = &[
    "./boot",
    "./lib/modules",
    "./usr/lib/modules",
    "./usr/lib/linux-image-*",
    "./usr/lib/klibc",
    "./usr/share/doc",
    "./usr/share/man",
    "./usr/share/locale",
    "./usr/share/info",
    "./lib/udev/hwdb.bin",
    "./usr/lib/udev/hwdb.bin",
    "./var/cache",
];

/// Runs the guest the smoke suite needs: the kernel's tracefs and bpffs,
/// then the suite once per tier, marked for the host (report.rs).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /usr/local/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# busybox's applets only where Debian's own tools are missing.
/bin/busybox --install -s /usr/local/bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin
export LC_ALL=C NO_COLOR=1 RUST_BACKTRACE=1 HOME=/tmp
echo 1 >/proc/sys/kernel/printk
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
mark() { while IFS= read -r l || [ -n "$l" ]; do printf 'PTVM| %s\n' "$l"; done; }
step() {
    name=$1; shift
    echo "PTVM# begin $name"
    ( "$@" 2>&1; echo $? >/tmp/ptvm.rc ) </dev/null | mark
    echo "PTVM# end $name $(cat /tmp/ptvm.rc 2>/dev/null || echo 255)"
}
guest_checks() {
    echo "kernel $(uname -r) $(uname -m), $(nproc) vCPU(s)"
    [ -r /sys/kernel/btf/vmlinux ] && echo "btf: yes" || echo "btf: MISSING"
    for m in veth bridge nf_tables nft_compat nf_nat nf_conntrack nft_chain_nat xt_conntrack xt_addrtype xt_nat; do
        modprobe "$m" 2>&1 || echo "modprobe $m: FAILED"
    done
    echo "nf_hook_slow traceable: $(grep -c '^nf_hook_slow\b' /sys/kernel/tracing/available_filter_functions)"
    /usr/bin/pathtrace --version
}
step guest-checks guest_checks
export PATHTRACE_BIN=/usr/bin/pathtrace PATHTRACE_TEST_DOCKER=emulated PATHTRACE_TEST_TIMEOUT_SCALE=10
@STEPS@dmesg | grep -iE 'bpf|oops|bug:|call trace|panic|segfault' | tail -n 20 | sed 's/^/dmesg: /' | mark
echo "PTVM# done"
poweroff -f
"#;

fn cache() -> PathBuf {
    workspace_root().join(".tools/arm64")
}

/// The unpacked root and its kernel release, made with mmdebstrap on
/// first use (about 70 s and 150 MB of downloads).
fn ensure_root() -> Result<(PathBuf, String)> {
    let root = cache().join("root");
    let stamp = root.join(".complete");
    let want = PACKAGES.join(",");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        let fresh = cache().join("root.new");
        let _ = fs::remove_dir_all(&fresh);
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(cache())?;
        eprintln!("xtask: unpacking Debian's arm64 kernel and userland with mmdebstrap (once, about a minute)");
        run_quiet(
            Command::new("mmdebstrap")
                .args(["--variant=extract", "--architectures=arm64", "--quiet"])
                .arg(format!("--include={want}"))
                .arg("bookworm")
                .arg(&fresh)
                .arg(format!("deb {} bookworm main", system_debian_uri())),
        )
        .context("mmdebstrap of the arm64 guest's root failed")?;
        fs::write(fresh.join(".complete"), &want)?;
        fs::rename(&fresh, &root)?;
    }
    let release = fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .max()
        .context("the arm64 root holds no boot/vmlinuz-*")?;
    Ok((root, release))
}

/// Appends to `out` a newc cpio archive of `dir`'s tree, less `prune`.
fn append_cpio(dir: &Path, prune: &[&str], out: &Path) -> Result<()> {
    let mut find = Command::new("find");
    find.arg(".").current_dir(dir);
    if !prune.is_empty() {
        find.arg("(");
        for (i, p) in prune.iter().enumerate() {
            if i > 0 {
                find.arg("-o");
            }
            find.args(["-path", p]);
        }
        find.args([")", "-prune", "-o", "-print"]);
    }
    let mut lister = find
        .stdout(Stdio::piped())
        .spawn()
        .context("running find")?;
    let names = lister.stdout.take().context("find's stdout")?;
    let sink = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    let status = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(dir)
        .stdin(names)
        .stdout(sink)
        .status()
        .context("running cpio (package cpio)")?;
    let listed = lister.wait()?;
    if !status.success() || !listed.success() {
        bail!("packing {} into {} failed", dir.display(), out.display());
    }
    Ok(())
}

/// The cached archive of the guest's userland and modules.
fn base_initramfs(root: &Path, release: &str) -> Result<PathBuf> {
    let base = cache().join(format!("base-{release}.cpio"));
    if base.exists() {
        return Ok(base);
    }
    let partial = cache().join("base.cpio.partial");
    let _ = fs::remove_file(&partial);
    append_cpio(root, LEFT_OUT, &partial)?;
    let stage = cache().join("modules");
    let _ = fs::remove_dir_all(&stage);
    let from = root.join("lib/modules").join(release);
    let to = stage.join("lib/modules").join(release);
    fs::create_dir_all(&to)?;
    for entry in fs::read_dir(&from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    for dir in MODULE_DIRS {
        let target = to.join(dir);
        fs::create_dir_all(target.parent().context("a module path")?)?;
        run_quiet(
            Command::new("cp")
                .arg("-a")
                .arg(from.join(dir))
                .arg(&target),
        )?;
    }
    run_quiet(
        Command::new("depmod")
            .arg("-a")
            .arg("-b")
            .arg(&stage)
            .arg(release),
    )
    .context("depmod failed (package kmod) for the arm64 guest's modules")?;
    append_cpio(&stage, &[], &partial)?;
    fs::remove_dir_all(&stage)?;
    fs::rename(&partial, &base)?;
    Ok(base)
}

/// The per-run archive: the binaries and `/init`.
fn run_initramfs(pathtrace: &Path, smoke: &Path, args: &[String]) -> Result<PathBuf> {
    let dir = workspace_root().join("target/arm64");
    let stage = dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(stage.join("usr/bin"))?;
    fs::copy(pathtrace, stage.join("usr/bin/pathtrace"))?;
    fs::copy(smoke, stage.join("smoke"))?;
    let args: Vec<String> = args.iter().map(|a| guest::sh_quote(a)).collect();
    let steps: Vec<String> = TIERS
        .iter()
        .map(|(tier, allowed)| {
            let refused = if *allowed {
                ""
            } else {
                " PATHTRACE_TEST_TIER_REFUSED=1"
            };
            format!(
                "step smoke-{tier} env PATHTRACE_TEST_TIER={tier}{refused} /smoke --test-threads=1 --show-output {}\n",
                args.join(" ")
            )
        })
        .collect();
    let init = INIT.replace("@STEPS@", &steps.concat());
    fs::write(stage.join("init"), init)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(stage.join("init"), fs::Permissions::from_mode(0o755))?;
    let out = dir.join("run.cpio");
    let _ = fs::remove_file(&out);
    append_cpio(&stage, &[], &out)?;
    Ok(out)
}

/// The whole initramfs: the cached base, then this run's archive.
fn initramfs(base: &Path, run: &Path) -> Result<PathBuf> {
    let out = workspace_root().join("target/arm64/initrd.cpio");
    let mut file = File::create(&out)?;
    for part in [base, run] {
        std::io::copy(&mut File::open(part)?, &mut file)
            .with_context(|| format!("appending {}", part.display()))?;
    }
    Ok(out)
}

fn qemu(kernel: &Path, initrd: &Path, cpus: u32) -> Command {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args([
        "-M",
        "virt",
        "-m",
        "2G",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    // `max` with QEMU's own pointer authentication is the fast choice
    // under software emulation.
    .args(["-cpu", "max,pauth-impdef=on"])
    .arg("-smp")
    .arg(cpus.to_string())
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args([
        "-append",
        "console=ttyAMA0 rdinit=/init panic=-1 quiet loglevel=1 apparmor=0",
    ]);
    cmd
}

/// The tests that passed; what went wrong with each tier's step goes to
/// `problems`.
fn judge(steps: &[Step], problems: &mut Vec<String>) -> usize {
    let mut passed = 0;
    for (tier, _) in TIERS {
        let name = format!("smoke-{tier}");
        let Some(s) = steps.iter().find(|s| s.name == name) else {
            problems.push(format!("{name} did not run"));
            continue;
        };
        let results = s.results();
        passed += results
            .iter()
            .filter(|(_, o, _)| *o == Outcome::Passed)
            .count();
        if s.rc != Some(0) {
            problems.push(format!("{name} exited {:?}", s.rc));
        } else if results.is_empty() || results.iter().any(|(_, o, _)| *o != Outcome::Passed) {
            problems.push(format!("{name}: not every test passed"));
        }
    }
    passed
}

/// Default limit for the whole run: boot, then three tiers of the suite.
pub const DEFAULT_TIMEOUT_SECS: u64 = 15 * 60;

/// `cargo xtask test --arm64`: `opts` as for `--vm`, `args` for the smoke
/// suite.
pub fn run(opts: &VmOpts, args: &[String]) -> Result<()> {
    let VmOpts {
        cpus,
        timeout,
        console,
    } = *opts;
    let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    sysdeps::ensure("cargo xtask test --arm64", &[sysdeps::ARM64])?;
    let packages = dist::build(&[Arch::Aarch64])?
        .pop()
        .context("dist built nothing for arm64")?;
    let obj = ebpf::build_for(Arch::Aarch64)?;
    let smoke = integration_test_for(&obj, Arch::Aarch64, "smoke")?;
    let (root, release) = ensure_root()?;
    let base = base_initramfs(&root, &release)?;
    let run = run_initramfs(&packages.binary, &smoke, args)?;
    let initrd = initramfs(&base, &run)?;
    let kernel = root.join("boot").join(format!("vmlinuz-{release}"));
    let cpus = cpus.unwrap_or(2);
    let log = workspace_root().join("target/arm64/console.log");
    let tiers: Vec<String> = TIERS
        .iter()
        .map(|(t, allowed)| {
            if *allowed {
                t.to_string()
            } else {
                format!("{t} (refused)")
            }
        })
        .collect();
    let tiers = tiers.join(", ");
    println!(
        "[arm64] booting {release} in qemu-system-aarch64 ({cpus} vCPU, software emulation): smoke on tiers {tiers}"
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut current: Option<Step> = None;
    let out = guest::watch(
        qemu(&kernel, &initrd, cpus),
        &log,
        Duration::from_secs(timeout),
        console,
        |mark, at| match mark {
            Mark::Begin(step) => {
                println!("[arm64] {:>6.1}s ---- {step}", at.as_secs_f64());
                current = Some(Step::new(&step, at));
            }
            Mark::Output(line) => {
                println!("[arm64] {line}");
                if let Some(s) = current.as_mut() {
                    s.feed(&line, at);
                }
            }
            Mark::End(step, rc) => {
                println!("[arm64] {:>6.1}s ---- {step} exited {rc}", at.as_secs_f64());
                if let Some(mut s) = current.take() {
                    s.rc = Some(rc);
                    steps.push(s);
                }
            }
            Mark::Done => {}
        },
    )?;
    let mut problems = Vec::new();
    if out.timed_out {
        problems.push(format!("timed out after {timeout} s"));
    } else if !out.done {
        problems.push("the guest did not finish".to_owned());
        for l in guest::console_tail(&out.log, 40) {
            println!("[arm64] console: {l}");
        }
    }
    let passed = judge(&steps, &mut problems);
    println!(
        "[arm64] {release}: {passed} passed on tiers {tiers}; VM {:.1} s (boot {:.1} s); console log {}",
        out.wall.as_secs_f64(),
        out.boot.map(|b| b.as_secs_f64()).unwrap_or(f64::NAN),
        out.log.display()
    );
    if !problems.is_empty() {
        bail!("arm64 smoke: {}", problems.join("; "));
    }
    Ok(())
}

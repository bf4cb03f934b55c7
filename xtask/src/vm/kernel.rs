//! Stock Debian kernels for the VM: the newest `linux-image-<series>…-amd64-unsigned`
//! package, downloaded with `apt-get download` (never installed) and unpacked
//! with `dpkg-deb -x` into `.tools/vm-kernels/<release>/`.
//!
//! A finished unpack holds a `.complete` stamp; once a series has one, later
//! runs use it without asking apt (pass `update` to look for a newer package).
//!
//! 6.1 and 6.12 come from the system's own (bookworm) sources. 5.10 is Debian
//! 11's (bullseye), which those sources don't list: apt is pointed at a
//! sources list of our own under `.tools/vm-kernels/.apt-bullseye/` (one
//! `deb URI bullseye main` line, URI taken from the system's Debian sources),
//! with its own lists and cache, so the system's apt state is never touched.
use std::{
    cmp::Ordering,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::proc::{output_of, run_quiet};
use crate::workspace::workspace_root;

/// `cargo xtask vm-kernel KERNEL [--update]`.
#[derive(clap::Args)]
pub struct Options {
    pub kernel: String,
    /// Ask apt for a newer package even when one is cached.
    #[arg(long)]
    pub update: bool,
}

/// `cargo xtask vm-kernel KERNEL`: the kernel and the tools, ready.
pub fn run(opts: Options) -> Result<()> {
    super::tools::ensure()?;
    let k = ensure(&opts.kernel, opts.update)?;
    println!("{}", k.vmlinuz.display());
    eprintln!(
        "xtask: kernel {} ({}) in {}",
        k.series,
        k.release,
        k.dir.display()
    );
    Ok(())
}

/// The kernel series `cargo xtask vm` and `test --vm` know.
pub const SERIES: &[&str] = &["5.10", "6.1", "6.12"];

/// The Debian suite a series comes from when the system's sources don't list
/// it: `(series, suite)`.
const OTHER_SUITES: &[(&str, &str)] = &[("5.10", "bullseye")];

const STAMP: &str = ".complete";

/// An unpacked kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// What was asked for: `6.1`, `6.12`.
    pub series: String,
    /// `uname -r` of the guest: `6.1.0-56-amd64`.
    pub release: String,
    /// The unpacked package's root (holds `boot/` and `lib/modules/`).
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
}

impl Kernel {
    /// vCPUs that boot reliably under software emulation: Debian's 6.12
    /// oopses (`int3`) with 2 vCPUs under TCG, 6.1 is fine with 2, 5.10 was
    /// checked with 1.
    pub fn default_cpus(&self) -> u32 {
        if self.series == "6.1" {
            2
        } else {
            1
        }
    }
}

pub fn cache_root() -> PathBuf {
    workspace_root().join(".tools/vm-kernels")
}

fn check_series(series: &str) -> Result<()> {
    if !SERIES.contains(&series) {
        bail!(
            "unknown kernel {series:?}: choose one of {}",
            SERIES.join(", ")
        );
    }
    Ok(())
}

/// The `<release>` part of `linux-image-<release>-unsigned` when `name` is the
/// generic amd64 flavour of `series` (not `cloud`, which lacks 9p, nor `rt`).
fn release_of_package(name: &str, series: &str) -> Option<String> {
    let release = name
        .strip_prefix("linux-image-")?
        .strip_suffix("-unsigned")?;
    let abi = release.strip_suffix("-amd64")?;
    let rest = abi.strip_prefix(series)?.strip_prefix('.')?;
    // 6.1: `0-56`; 6.12: `117+deb12`. Anything with a flavour in it (`-cloud`,
    // `-rt`) has a part that isn't a number.
    let mut parts = rest.split('-');
    let first = parts.next()?;
    let (numbers, suffix) = first.split_once('+').unwrap_or((first, ""));
    let numbers_ok = !numbers.is_empty()
        && numbers
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix.bytes().all(|b| b.is_ascii_alphanumeric());
    let rest_ok = parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (numbers_ok && suffix_ok && rest_ok).then(|| release.to_string())
}

/// Orders versions by their runs of digits as numbers (`6.1.0-9` < `6.1.0-56`).
fn version_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
            }
            _ => x.1.cmp(&y.1),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The newest unpacked kernel of `series` in the cache.
fn cached(series: &str) -> Result<Option<Kernel>> {
    let root = cache_root();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(None);
    };
    let mut best: Option<Kernel> = None;
    for entry in entries {
        let dir = entry?.path();
        let Some(release) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let package = format!("linux-image-{release}-unsigned");
        if release_of_package(&package, series).is_none() || !dir.join(STAMP).exists() {
            continue;
        }
        let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
        if !vmlinuz.exists() {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|b| version_cmp(&release, &b.release) == Ordering::Greater)
        {
            best = Some(Kernel {
                series: series.to_string(),
                release,
                dir,
                vmlinuz,
            });
        }
    }
    Ok(best)
}

/// The Debian mirror the system's own sources use (deb822 `URIs:` in
/// `/etc/apt/sources.list.d/*.sources`, or a `deb URI …` line), not the
/// security one; Debian's main mirror when none is found.
pub(super) fn system_debian_uri() -> String {
    let mut texts: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    for text in &texts {
        for line in text.lines().map(str::trim) {
            let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                // `deb [options] URI suite components`
                let rest = match rest.trim_start().strip_prefix('[') {
                    Some(r) => r.split_once(']').map(|(_, t)| t).unwrap_or(""),
                    None => rest,
                };
                rest.split_whitespace().take(1).collect()
            } else {
                Vec::new()
            };
            if let Some(uri) = uris
                .into_iter()
                .find(|u| u.contains("debian") && !u.contains("security"))
            {
                return uri.trim_end_matches('/').to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// How apt is run for `series`: no options (the system's sources), or those
/// of a private sources list, lists and cache for a suite the system's
/// sources lack, set up (and `apt-get update`d) on first use.
fn apt_options(series: &str, refresh: bool) -> Result<Vec<String>> {
    let Some((_, suite)) = OTHER_SUITES.iter().find(|(s, _)| *s == series) else {
        return Ok(Vec::new());
    };
    let dir = cache_root().join(format!(".apt-{suite}"));
    let list = dir.join("sources.list");
    let lists = dir.join("lists");
    let cache = dir.join("cache");
    for d in [lists.join("partial"), cache.join("archives/partial")] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let line = format!("deb {} {suite} main\n", system_debian_uri());
    if std::fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
        std::fs::write(&list, &line).with_context(|| format!("writing {}", list.display()))?;
        let _ = std::fs::remove_file(dir.join(".updated"));
    }
    let opts = vec![
        "-o".to_string(),
        format!("Dir::Etc::sourcelist={}", list.display()),
        "-o".to_string(),
        "Dir::Etc::sourceparts=-".to_string(),
        "-o".to_string(),
        format!("Dir::State::Lists={}", lists.display()),
        "-o".to_string(),
        format!("Dir::Cache={}", cache.display()),
    ];
    if refresh || !dir.join(".updated").exists() {
        eprintln!(
            "xtask: reading Debian's {suite} package list ({}, kept apart from the system's apt state)",
            line.trim()
        );
        run_quiet(Command::new("apt-get").args(&opts).args(["update", "-qq"])).with_context(
            || format!("apt-get update of the private {suite} sources list failed"),
        )?;
        std::fs::write(dir.join(".updated"), "")?;
    }
    Ok(opts)
}

/// Package names apt knows for `series`, newest first.
fn apt_candidates(series: &str, opts: &[String]) -> Result<Vec<(String, String)>> {
    let pattern = format!(
        "^linux-image-{}\\..*-amd64-unsigned$",
        series.replace('.', "\\.")
    );
    let search = |update: bool| -> Result<Vec<(String, String)>> {
        if update {
            eprintln!("xtask: apt-cache knows no {series} kernel; running apt-get update");
            run_quiet(Command::new("apt-get").args(opts).args(["update", "-qq"]))
                .context("apt-get update failed (needed to find Debian's kernel packages)")?;
        }
        let out = output_of(Command::new("apt-cache").args(opts).args([
            "search",
            "--names-only",
            &pattern,
        ]))
        .context("apt-cache is missing or failed: a Debian system is needed to fetch VM kernels")?;
        let mut found: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|name| release_of_package(name, series).map(|r| (name.to_string(), r)))
            .collect();
        found.sort_by(|a, b| version_cmp(&b.1, &a.1));
        Ok(found)
    };
    let found = search(false)?;
    if !found.is_empty() {
        return Ok(found);
    }
    search(true)
}

/// Whether apt has a downloadable candidate for `package`.
fn has_candidate(package: &str, opts: &[String]) -> bool {
    let Ok(out) = output_of(
        Command::new("apt-cache")
            .args(opts)
            .args(["policy", package]),
    ) else {
        return false;
    };
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .is_some_and(|c| c.trim() != "(none)")
}

fn download_and_unpack(
    series: &str,
    package: &str,
    release: &str,
    opts: &[String],
) -> Result<Kernel> {
    let root = cache_root();
    let dir = root.join(release);
    let work = root.join(format!(".download-{release}"));
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!("xtask: downloading {package} (about 70 MB, once)");
    run_quiet(
        Command::new("apt-get")
            .args(opts)
            .args(["download", "-qq", package])
            .current_dir(&work),
    )
    .with_context(|| format!("apt-get download {package} failed"))?;
    let deb = std::fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                work.display()
            )
        })?;
    let unpack = work.join("root");
    eprintln!("xtask: unpacking {}", deb.display());
    run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack))
        .context("dpkg-deb -x failed (dpkg-deb is needed to unpack the kernel package)")?;
    let vmlinuz_rel = Path::new("boot").join(format!("vmlinuz-{release}"));
    if !unpack.join(&vmlinuz_rel).exists() {
        bail!("{package} holds no {}", vmlinuz_rel.display());
    }
    let modules = unpack.join("lib/modules").join(release);
    if !modules.is_dir() {
        bail!("{package} holds no lib/modules/{release}");
    }
    // Debian's packages leave modules.dep to the installer; the guest's modprobe needs it.
    run_quiet(
        Command::new("depmod")
            .arg("-a")
            .arg("-b")
            .arg(&unpack)
            .arg(release),
    )
    .context("depmod failed (package kmod) while indexing the VM kernel's modules")?;
    std::fs::write(unpack.join(STAMP), format!("{package}\n"))?;
    std::fs::rename(&unpack, &dir)
        .with_context(|| format!("moving the kernel to {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    let vmlinuz = dir.join(vmlinuz_rel);
    Ok(Kernel {
        series: series.to_string(),
        release: release.to_string(),
        dir,
        vmlinuz,
    })
}

/// Makes sure a kernel of `series` is unpacked in the cache and returns it.
/// With `update`, asks apt for a newer package even when one is cached.
pub fn ensure(series: &str, update: bool) -> Result<Kernel> {
    check_series(series)?;
    let have = cached(series)?;
    if let (Some(k), false) = (&have, update) {
        return Ok(k.clone());
    }
    let opts = apt_options(series, update)?;
    let candidates = apt_candidates(series, &opts)?;
    let Some((package, release)) = candidates
        .into_iter()
        .find(|(p, _)| has_candidate(p, &opts))
    else {
        bail!("no Debian package linux-image-{series}.*-amd64-unsigned is available from apt (is bookworm in the apt sources?)");
    };
    if let Some(k) = have {
        if k.release == release {
            return Ok(k);
        }
    }
    download_and_unpack(series, &package, &release, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_generic_flavour_of_the_series() {
        let r = |n: &str, s: &str| release_of_package(n, s);
        assert_eq!(
            r("linux-image-6.1.0-56-amd64-unsigned", "6.1").as_deref(),
            Some("6.1.0-56-amd64")
        );
        assert_eq!(
            r("linux-image-6.12.117+deb12-amd64-unsigned", "6.12").as_deref(),
            Some("6.12.117+deb12-amd64")
        );
        assert_eq!(r("linux-image-6.1.0-56-cloud-amd64-unsigned", "6.1"), None);
        assert_eq!(r("linux-image-6.1.0-56-rt-amd64-unsigned", "6.1"), None);
        assert_eq!(
            r("linux-image-6.12.117+deb12-cloud-amd64-unsigned", "6.12"),
            None
        );
        assert_eq!(r("linux-image-6.12.117+deb12-amd64-unsigned", "6.1"), None);
        assert_eq!(r("linux-image-6.1.0-56-amd64-unsigned", "6.12"), None);
        assert_eq!(r("linux-image-6.1.0-56-amd64", "6.1"), None);
        assert_eq!(
            r("linux-image-5.10.0-32-amd64-unsigned", "5.10").as_deref(),
            Some("5.10.0-32-amd64")
        );
        assert_eq!(r("linux-image-5.10.0-32-rt-amd64-unsigned", "5.10"), None);
    }

    #[test]
    fn orders_versions_numerically() {
        assert_eq!(
            version_cmp("6.1.0-9-amd64", "6.1.0-56-amd64"),
            Ordering::Less
        );
        assert_eq!(
            version_cmp("6.12.117+deb12-amd64", "6.12.107+deb12-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp("6.1.0-56-amd64", "6.1.0-56-amd64"),
            Ordering::Equal
        );
    }
}

//! The package users install: `cargo xtask dist`'s `.deb` is installed with
//! dpkg, its binary traces the DOCKER-USER drop in the real-Docker lab from a
//! PATH with no Rust toolchain, names the container through `DOCKER_HOST`
//! alone, and `dpkg -r` leaves nothing behind. The tarball's binary runs too.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use lab::Block;
use pathtrace_tests::{docker_lab, records, require_root, require_tool};

const PATH_WITHOUT_RUST: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The drop exporter's systemd unit, shipped but not enabled.
const EXPORTER_UNIT: &str = "/usr/lib/systemd/system/pathtrace-drops-exporter.service";

fn artifact(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("install: {var} is not set: run the suite with `cargo xtask test`, which builds the packages")
    });
    assert!(path.is_file(), "install: {} is missing", path.display());
    path
}

fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("PATH", PATH_WITHOUT_RUST)
        .output()
        .unwrap_or_else(|e| panic!("install: running {cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let o = sh(cmd, args);
    assert!(
        o.status.success(),
        "install: {cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn package_installed() -> bool {
    sh("dpkg-query", &["-W", "-f=${db:Status-Status}", "pathtrace"]).stdout == b"installed"
}

/// Removes the package however the test ends.
struct Installed;

impl Installed {
    fn new(deb: &Path) -> Self {
        assert!(
            !package_installed(),
            "install: a pathtrace package is already installed; this test installs and removes its own"
        );
        ok("dpkg", &["-i", &deb.display().to_string()]);
        Self
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = sh("dpkg", &["-r", "pathtrace"]);
    }
}

/// The git revision the packages were built from: `cargo xtask` hands the
/// builds and this suite the same `PATHTRACE_GIT_REV`.
fn revision() -> String {
    std::env::var("PATHTRACE_GIT_REV").unwrap_or_else(|_| {
        panic!("install: PATHTRACE_GIT_REV is not set: run the suite with `cargo xtask test`")
    })
}

fn check_version(bin: &str) {
    let version = ok(bin, &["--version"]);
    let want = format!(
        "pathtrace {} (git {}",
        env!("CARGO_PKG_VERSION"),
        revision()
    );
    assert!(
        version.starts_with(&want),
        "{bin} --version: {version:?}, want {want:?}…"
    );
}

#[test]
fn installed_package_traces_and_names_the_container_then_removes_cleanly() {
    let test = "installed_package_traces_and_names_the_container_then_removes_cleanly";
    require_root(test);
    for tool in ["dpkg", "man"] {
        require_tool(test, tool);
    }
    let deb = artifact("PATHTRACE_DEB");
    let installed = Installed::new(&deb);

    check_version("/usr/bin/pathtrace");
    let page = ok("man", &["-w", "pathtrace"]);
    assert!(
        page.trim().ends_with("pathtrace.1.gz"),
        "man -w pathtrace: {page}"
    );
    for sub in ["drops", "compare", "demo", "trace"] {
        ok("man", &["-w", &format!("pathtrace-{sub}")]);
    }
    let man = ok("man", &["-P", "cat", "pathtrace-drops"]);
    assert!(man.contains("--top"), "pathtrace-drops(1) documents --top");
    assert!(
        man.contains("--metrics"),
        "pathtrace-drops(1) documents --metrics"
    );
    let unit = std::fs::read_to_string(EXPORTER_UNIT)
        .unwrap_or_else(|e| panic!("{EXPORTER_UNIT} installed: {e}"));
    assert!(
        unit.contains("ExecStart=/usr/bin/pathtrace drops --quiet --metrics "),
        "{unit}"
    );
    for completion in [
        "/usr/share/bash-completion/completions/pathtrace",
        "/usr/share/zsh/vendor-completions/_pathtrace",
        "/usr/share/fish/vendor_completions.d/pathtrace.fish",
    ] {
        assert!(Path::new(completion).is_file(), "{completion} installed");
    }

    let lab = docker_lab("ptinst", Block::Drop);
    let socket = lab.docker_socket().expect("a real dockerd has a socket");
    let child = Command::new("/usr/bin/pathtrace")
        .args([
            "--src",
            &lab.addrs.client.to_string(),
            "--dport",
            "8092",
            "--netns",
            &lab.names.dock,
            "--json",
            "--duration",
            "30",
            "--tier",
            &pathtrace_tests::tier(),
        ])
        .env_clear()
        .env("PATH", PATH_WITHOUT_RUST)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the installed pathtrace starts");
    let run = pathtrace_tests::Running::adopt(child);
    let outcome = pathtrace_tests::connect(&lab, &lab.names.client);
    eprintln!("probe from the client: {outcome:?}");
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "installed pathtrace's exit status");
    let recs = records(&lines);
    let dropped: Vec<_> = recs
        .iter()
        .filter(|r| r["type"] == "packet" && r["direction"] == "request")
        .collect();
    assert!(!dropped.is_empty(), "no request packets: {recs:#?}");
    for p in dropped {
        assert_eq!(p["fate"], "dropped", "{p}");
        assert_eq!(p["hook"], "FORWARD", "{p}");
        let msg = p["diagnosis"]["message"].as_str().unwrap_or_default();
        for want in ["container web", "rule 1 of chain DOCKER-USER"] {
            assert!(msg.contains(want), "diagnosis lacks {want:?}: {msg}");
        }
        assert_eq!(
            p["saddr"].as_str().and_then(|s| s.parse::<IpAddr>().ok()),
            Some(IpAddr::V4(lab.addrs.client)),
            "{p}"
        );
    }
    drop(lab);

    drop(installed);
    assert!(
        !package_installed(),
        "pathtrace still installed after dpkg -r"
    );
    let status = sh("dpkg-query", &["-W", "pathtrace"]);
    let left = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        !status.status.success() || left.trim() == "pathtrace",
        "dpkg still knows pathtrace: {left}"
    );
    for path in [
        "/usr/bin/pathtrace",
        "/usr/share/man/man1/pathtrace.1.gz",
        "/usr/share/bash-completion/completions/pathtrace",
        "/usr/share/doc/pathtrace",
        EXPORTER_UNIT,
    ] {
        assert!(!Path::new(path).exists(), "{path} left after dpkg -r");
    }
    let man = sh("man", &["-w", "pathtrace"]);
    assert!(
        !man.status.success(),
        "man still finds pathtrace after dpkg -r"
    );
}

#[test]
fn tarball_holds_a_static_binary_man_pages_and_completions() {
    let test = "tarball_holds_a_static_binary_man_pages_and_completions";
    for tool in ["tar", "ldd"] {
        require_tool(test, tool);
    }
    let tarball = artifact("PATHTRACE_TARBALL");
    let dir = std::env::temp_dir().join(format!("pathtrace-tar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    ok(
        "tar",
        &[
            "-xzf",
            &tarball.display().to_string(),
            "-C",
            &dir.display().to_string(),
        ],
    );
    let root = std::fs::read_dir(&dir)
        .expect("extracted")
        .next()
        .expect("one top folder")
        .expect("entry")
        .path();
    let bin = root.join("bin/pathtrace").display().to_string();
    check_version(&bin);
    let ldd = sh("ldd", &[&bin]);
    let said = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "the tarball's binary is not static: ldd says {said}"
    );
    for file in [
        "share/man/man1/pathtrace.1.gz",
        "share/man/man1/pathtrace-drops.1.gz",
        "share/bash-completion/completions/pathtrace",
        "share/zsh/vendor-completions/_pathtrace",
        "share/fish/vendor_completions.d/pathtrace.fish",
        "README.md",
        "LICENSE-MIT",
    ] {
        assert!(root.join(file).is_file(), "{file} in the tarball");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Embeds the eBPF object built by `cargo xtask build-ebpf`. Without it the
//! crate still builds (so unit tests run anywhere), and `pathtrace` says at
//! run time how to build the object.
use std::path::PathBuf;

/// The git revision `pathtrace --version` names: `PATHTRACE_GIT_REV` (set by
/// `cargo xtask`), else asked of git, else `unknown`.
fn git_revision() -> String {
    println!("cargo:rerun-if-env-changed=PATHTRACE_GIT_REV");
    if let Ok(rev) = std::env::var("PATHTRACE_GIT_REV") {
        return rev;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    println!("cargo:rustc-env=PATHTRACE_GIT_REV={}", git_revision());
    println!("cargo:rerun-if-env-changed=PATHTRACE_EBPF_OBJ");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let obj = std::env::var_os("PATHTRACE_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            manifest.join("../tracer-ebpf/target/bpfel-unknown-none/release/tracer-ebpf")
        });
    // A missing file counts as changed on every build: watch its folder then.
    match (obj.exists(), obj.parent()) {
        (false, Some(dir)) if dir.exists() => println!("cargo:rerun-if-changed={}", dir.display()),
        _ => println!("cargo:rerun-if-changed={}", obj.display()),
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("tracer-ebpf.o");
    let bytes = std::fs::read(&obj).unwrap_or_else(|_| {
        println!(
            "cargo:warning=no eBPF object at {}: run `cargo xtask build-ebpf` (pathtrace will refuse to trace)",
            obj.display()
        );
        Vec::new()
    });
    if let Err(e) = std::fs::write(&out, bytes) {
        panic!("writing {}: {e}", out.display());
    }
}

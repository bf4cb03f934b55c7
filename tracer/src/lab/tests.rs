//! Root-only lab tests. Without root they print "SKIPPED: needs root" and pass.
//! Run: `cargo test -p tracer --lib lab -- --test-threads=1 --nocapture`
//! (the `#[ignore]`d `lab_manual_check` with `--ignored`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;

const PROBE: Duration = Duration::from_secs(2);

fn needs_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n********** SKIPPED: needs root (lab tests create namespaces) **********\n");
        return true;
    }
    false
}

fn host(lab: &Lab) -> IpAddr {
    IpAddr::V4(lab.addrs().host)
}

/// Client and other → 192.0.2.25:8092.
fn probe_both(lab: &Lab) -> (ProbeOutcome, ProbeOutcome) {
    let port = lab.addrs().published_port;
    let client = lab.tcp_connect(&lab.names().client, host(lab), port, PROBE);
    let other = lab.tcp_connect(&lab.names().other, host(lab), port, PROBE);
    (client, other)
}

/// The incident and its variants, on one lab: each block, then no listener.
fn check_scenarios(lab: &mut Lab) -> Result<(), LabError> {
    use ProbeOutcome::*;
    let expected = [
        (Block::None, Connected),
        (Block::Drop, TimedOut),
        (Block::Reject, Refused),
        (Block::PolicyDrop, TimedOut),
    ];
    for (block, client_expected) in expected {
        lab.set_block(block)?;
        let t = Instant::now();
        let (client, other) = probe_both(lab);
        println!(
            "  [{}] block={block:?}: client → {client}, other → {other} ({:.2}s)",
            lab.prefix(),
            t.elapsed().as_secs_f64()
        );
        assert_eq!(client, client_expected, "client with {block:?}");
        assert_eq!(other, Connected, "other with {block:?}");
        if block == Block::PolicyDrop {
            // The client's SYNs were dropped by FORWARD's policy, not by a rule.
            let out = lab.iptables(&["-L", "FORWARD", "-v", "-n", "-x"])?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let head = text.lines().next().unwrap_or_default().to_string();
            assert!(head.starts_with("Chain FORWARD (policy DROP"), "{head}");
            assert!(!head.contains("policy DROP 0 packets"), "{head}");
        }
    }
    if lab.docker_is_real() || lab.container().pid.is_some() {
        let page = lab
            .http_get(
                &lab.names().other,
                host(lab),
                lab.addrs().published_port,
                PROBE,
            )
            .map_err(|o| LabError::Unsupported(format!("http_get: {o}")))?;
        assert!(
            page.starts_with("HTTP/1.") && page.contains("hello from web"),
            "{page}"
        );
    }
    lab.set_block(Block::None)?;
    lab.set_listener(false)?;
    let (client, other) = probe_both(lab);
    println!(
        "  [{}] listener=false: client → {client}, other → {other}",
        lab.prefix()
    );
    assert_eq!(client, Refused);
    assert_eq!(other, Refused);
    Ok(())
}

/// Docker's chains are in the configured backend's tables, and only there.
fn check_backend(lab: &Lab) -> Result<(), LabError> {
    let (ours, theirs) = match lab.firewall() {
        Firewall::Nft => ("iptables-nft-save", "iptables-legacy-save"),
        Firewall::Legacy => ("iptables-legacy-save", "iptables-nft-save"),
    };
    let dock = lab.names().dock.clone();
    let ours = String::from_utf8_lossy(&lab.exec(&dock, &[ours])?.stdout).into_owned();
    let theirs = String::from_utf8_lossy(&lab.exec(&dock, &[theirs])?.stdout).into_owned();
    assert!(ours.contains(":DOCKER-USER") && ours.contains("--to-destination 198.51.100.2:80"));
    assert!(
        !theirs.contains("DOCKER"),
        "rules leaked into the other backend: {theirs}"
    );
    Ok(())
}

fn run_lab(config: LabConfig) -> Result<bool, LabError> {
    let prefix = config.prefix.clone();
    let t = Instant::now();
    let mut lab = Lab::start(config.clone())?;
    let start = t.elapsed();
    println!(
        "[{prefix}] started in {:.2}s: real docker = {}, firewall = {:?}, container = {:?}",
        start.as_secs_f64(),
        lab.docker_is_real(),
        lab.firewall(),
        lab.container()
    );
    let real = lab.docker_is_real();
    check_backend(&lab)?;
    check_scenarios(&mut lab)?;
    let t = Instant::now();
    lab.teardown()?;
    println!("[{prefix}] teardown in {:.2}s", t.elapsed().as_secs_f64());
    lab.teardown()?; // idempotent
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(real)
}

#[test]
fn lab_real_docker_nft() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    let real = run_lab(LabConfig {
        docker: DockerMode::Real,
        ..LabConfig::with_prefix("tr")
    })?;
    assert!(real);
    Ok(())
}

#[test]
fn lab_real_docker_legacy() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    let real = run_lab(LabConfig {
        docker: DockerMode::Real,
        firewall: Firewall::Legacy,
        ..LabConfig::with_prefix("tl")
    })?;
    assert!(real);
    Ok(())
}

#[test]
fn lab_emulated_nft() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    let real = run_lab(LabConfig {
        docker: DockerMode::Emulated,
        ..LabConfig::with_prefix("te")
    })?;
    assert!(!real);
    Ok(())
}

#[test]
fn lab_emulated_legacy() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    let real = run_lab(LabConfig {
        docker: DockerMode::Emulated,
        firewall: Firewall::Legacy,
        ..LabConfig::with_prefix("tg")
    })?;
    assert!(!real);
    Ok(())
}

#[test]
fn lab_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Lab>();
}

/// Auto mode falls back to the emulation when the real start fails (here: injected
/// after dockerd is up and the image is imported), after removing what dockerd left.
#[test]
fn lab_auto_falls_back_to_emulation() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    instance::FAIL_REAL_AFTER_IMAGE.with(|f| f.set(true));
    let started = Lab::start(LabConfig {
        block: Block::Drop,
        ..LabConfig::with_prefix("ta")
    });
    instance::FAIL_REAL_AFTER_IMAGE.with(|f| f.set(false));
    let mut lab = started?;
    let state = lab.state_dir().to_path_buf();
    assert!(!state.join("data").exists() && !state.join("exec").exists());
    let procs = procs::find(&state, &config::cgroup_parent("ta"));
    assert!(
        procs.iter().all(|p| p.cmdline.contains(" httpd ")),
        "only the emulated httpd should run: {procs:?}"
    );
    assert!(!lab.docker_is_real());
    assert!(lab.docker_socket().is_none());
    let (client, other) = probe_both(&lab);
    assert_eq!(
        (client, other),
        (ProbeOutcome::TimedOut, ProbeOutcome::Connected)
    );
    lab.teardown()?;
    let left = leftovers("ta");
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn lab_listener_false_at_start() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    let mut lab = Lab::start(LabConfig {
        listener: false,
        ..LabConfig::with_prefix("tn")
    })?;
    let (client, other) = probe_both(&lab);
    assert_eq!(
        (client, other),
        (ProbeOutcome::Refused, ProbeOutcome::Refused)
    );
    lab.teardown()?;
    assert!(leftovers("tn").is_empty());
    Ok(())
}

#[test]
fn lab_cleans_up_after_panic() {
    if needs_root() {
        return;
    }
    let result = std::thread::spawn(|| {
        let lab = Lab::start(LabConfig::with_prefix("tp")).expect("lab starts");
        assert!(netns::exists(&lab.names().dock));
        panic!("deliberate panic with a running lab");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let left = leftovers("tp");
    assert!(left.is_empty(), "left behind after panic: {left:?}");
}

/// Helper for `lab_sweep_after_kill`: starts a lab and waits to be SIGKILLed.
#[test]
#[ignore]
fn lab_helper_start_and_wait() {
    let Ok(prefix) = std::env::var("PT_LAB_HELPER_PREFIX") else {
        return;
    };
    let lab = Lab::start(LabConfig::with_prefix(prefix)).expect("lab starts");
    let ready = lab.state_dir().join("helper-ready");
    std::fs::write(&ready, b"ready").expect("write ready marker");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn lab_sweep_after_kill() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| LabError::io("current_exe", e))?;
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "lab::tests::lab_helper_start_and_wait",
            "--ignored",
        ])
        .env("PT_LAB_HELPER_PREFIX", "tk")
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| LabError::io("spawn helper", e))?;
    let ready = state_dir("tk").join("helper-ready");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ready.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill(); // SIGKILL: no Drop, no teardown
    let _ = child.wait();
    assert!(ready.exists(), "helper lab never became ready");
    assert!(
        !leftovers("tk").is_empty(),
        "a killed lab should leave something"
    );
    let t = Instant::now();
    let report = sweep("tk")?;
    println!(
        "[tk] sweep after SIGKILL in {:.2}s: {report:?}",
        t.elapsed().as_secs_f64()
    );
    assert!(!report.is_clean());
    let left = leftovers("tk");
    assert!(left.is_empty(), "left behind after sweep: {left:?}");
    Ok(())
}

fn shell(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Manual end-to-end check with timings and a host-cleanliness diff.
#[test]
#[ignore]
fn lab_manual_check() -> Result<(), LabError> {
    if needs_root() {
        return Ok(());
    }
    // Only what a lab could leave (other people's namespaces may come and go meanwhile).
    let snapshot = "ip netns list | grep -E '^pt-'; ps -eo pid,stat,comm | grep -E ' (dockerd|containerd)'; \
                    grep -E 'pathtrace|netns/pt-' /proc/self/mountinfo; \
                    ls -d /run/docker /run/containerd /run/pathtrace-lab /run/mount /run/xtables.lock \
                          /etc/docker/key.json /sys/fs/cgroup/*/docker /sys/fs/cgroup/*/pathtrace-lab-* \
                          2>/dev/null; true";
    let before = shell(snapshot);
    for (mode, fw) in [
        (DockerMode::Real, Firewall::Nft),
        (DockerMode::Real, Firewall::Legacy),
        (DockerMode::Emulated, Firewall::Nft),
        (DockerMode::Emulated, Firewall::Legacy),
    ] {
        println!("== {mode:?} / {fw:?}");
        let mut lab = Lab::start(LabConfig {
            docker: mode,
            firewall: fw,
            ..LabConfig::with_prefix("pt")
        })?;
        let info = serde_json::to_string(&lab.info()).unwrap_or_default();
        println!("{info}");
        let rules = lab.iptables(&["-S", "DOCKER-USER"])?;
        println!("{}", String::from_utf8_lossy(&rules.stdout).trim());
        check_scenarios(&mut lab)?;
        lab.teardown()?;
    }
    let after = shell(snapshot);
    println!("host before:\n{before}\nhost after:\n{after}");
    assert_eq!(before, after, "host changed");
    Ok(())
}

/// Manual helper: `PT_SWEEP=prefix cargo test ... lab_sweep_env -- --ignored`.
#[test]
#[ignore]
fn lab_sweep_env() -> Result<(), LabError> {
    if let Ok(prefix) = std::env::var("PT_SWEEP") {
        println!("{:?}", sweep(&prefix)?);
    }
    Ok(())
}

//! Root-only lab tests of cleanup: after a panic, after SIGKILL (sweep), and the manual
//! end-to-end check. Without root they fail, naming themselves.

use std::time::{Duration, Instant};

use super::tests::check_scenarios;
use super::*;

#[test]
fn lab_cleans_up_after_panic() {
    crate::require_root("lab_cleans_up_after_panic");
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
#[ignore = "a helper process: lab_sweep_after_kill runs it"]
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
    crate::require_root("lab_sweep_after_kill");
    let exe = std::env::current_exe().map_err(|e| LabError::io("current_exe", e))?;
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "tests_cleanup::lab_helper_start_and_wait",
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
    let became_ready = ready.exists();
    let left_by_kill = leftovers("tk");
    if !became_ready {
        let log = std::fs::read_to_string(state_dir("tk").join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        println!("[tk] helper not ready; leftovers {left_by_kill:?}; dockerd.log tail {tail:?}");
        sweep("tk")?;
    }
    assert!(became_ready, "helper lab never became ready");
    assert!(
        !left_by_kill.is_empty(),
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

/// Manual end-to-end check: every mode, with start-up/teardown timings and a diff of
/// what a lab could leave on the host. `--ignored --nocapture`.
#[test]
#[ignore = "a manual end-to-end check with timings, run by hand"]
fn lab_manual_check() -> Result<(), LabError> {
    crate::require_root("lab_manual_check");
    // Only what a lab could leave (other people's namespaces may come and go meanwhile).
    let snapshot = "ip netns list | grep -E '^pt-'; ps -eo pid,stat,comm | grep -E ' (dockerd|containerd)'; \
                    grep -E 'pathtrace|netns/pt-' /proc/self/mountinfo; \
                    ls -d /run/docker /run/containerd /run/pathtrace-lab /run/mount /run/xtables.lock \
                          /etc/docker/key.json /sys/fs/cgroup/*/docker /sys/fs/cgroup/*/pathtrace-lab-* \
                          2>/dev/null; true";
    let before = shell(snapshot);
    let runs = [
        (DockerMode::Real, Firewall::Nft),
        (DockerMode::Real, Firewall::Nft),
        (DockerMode::Real, Firewall::Nft),
        (DockerMode::Real, Firewall::Legacy),
        (DockerMode::Emulated, Firewall::Nft),
        (DockerMode::Emulated, Firewall::Legacy),
    ];
    for (mode, fw) in runs {
        let t = Instant::now();
        let mut lab = Lab::start(LabConfig {
            docker: mode,
            firewall: fw,
            ..LabConfig::with_prefix("pt")
        })?;
        let start = t.elapsed();
        println!("== {mode:?} / {fw:?}: start {:.3}s", start.as_secs_f64());
        println!("{}", serde_json::to_string(&lab.info()).unwrap_or_default());
        check_scenarios(&mut lab)?;
        let t = Instant::now();
        lab.teardown()?;
        println!(
            "== {mode:?} / {fw:?}: teardown {:.3}s",
            t.elapsed().as_secs_f64()
        );
    }
    let after = shell(snapshot);
    println!("host before:\n{before}\nhost after:\n{after}");
    assert_eq!(before, after, "host changed");
    Ok(())
}

/// Manual helper: `PT_SWEEP=prefix cargo test ... lab_sweep_env -- --ignored`.
#[test]
#[ignore = "a manual sweep helper, run by hand"]
fn lab_sweep_env() -> Result<(), LabError> {
    if let Ok(prefix) = std::env::var("PT_SWEEP") {
        println!("{:?}", sweep(&prefix)?);
    }
    Ok(())
}

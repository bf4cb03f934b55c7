//! Root-only lab tests: the incident's scenarios in every mode. Without root they
//! fail, naming what they need.
//! Run: `cargo test -p lab --lib -- --test-threads=1 --nocapture`
//! (and the `#[ignore]`d `lab_manual_check` with `--ignored`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;

pub(super) const PROBE: Duration = Duration::from_secs(2);

pub(super) fn host(lab: &Lab) -> IpAddr {
    IpAddr::V4(lab.addrs().host)
}

/// Client and other → 192.0.2.25:8092.
pub(super) fn probe_both(lab: &Lab) -> (ProbeOutcome, ProbeOutcome) {
    let port = lab.addrs().published_port;
    let client = lab.tcp_connect(&lab.names().client, host(lab), port, PROBE);
    let other = lab.tcp_connect(&lab.names().other, host(lab), port, PROBE);
    (client, other)
}

/// The incident and its variants, on one lab: each block, then no listener.
pub(super) fn check_scenarios(lab: &mut Lab) -> Result<(), LabError> {
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
pub(super) fn check_backend(lab: &Lab) -> Result<(), LabError> {
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

pub(super) fn run_lab(config: LabConfig) -> Result<bool, LabError> {
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
    require_root("lab_real_docker_nft");
    let real = run_lab(LabConfig {
        docker: DockerMode::Real,
        ..LabConfig::with_prefix("tr")
    })?;
    assert!(real);
    Ok(())
}

#[test]
fn lab_real_docker_legacy() -> Result<(), LabError> {
    require_root("lab_real_docker_legacy");
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
    require_root("lab_emulated_nft");
    let real = run_lab(LabConfig {
        docker: DockerMode::Emulated,
        ..LabConfig::with_prefix("te")
    })?;
    assert!(!real);
    Ok(())
}

#[test]
fn lab_emulated_legacy() -> Result<(), LabError> {
    require_root("lab_emulated_legacy");
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
    require_root("lab_auto_falls_back_to_emulation");
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
    require_root("lab_listener_false_at_start");
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

/// Starts a lab on another thread and sets its stop flag once `ready` holds
/// (polled, at most 60 s); returns the build's result and how long it took
/// to return after the flag was set.
fn stop_build_when(
    config: LabConfig,
    ready: impl Fn(&LabNames, &std::path::Path) -> bool,
) -> (Result<Lab, LabError>, Duration) {
    let stop = StopFlag::new();
    let names = LabNames::new(&config.prefix);
    let state = state_dir(&config.prefix);
    let build = {
        let stop = stop.clone();
        std::thread::spawn(move || Lab::start_cancellable(config, &stop))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(&names, &state) && !build.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !build.is_finished(),
        "the build ended before the stop point"
    );
    assert!(ready(&names, &state), "the stop point never came");
    let stopped = Instant::now();
    stop.stop();
    let result = build.join().expect("the build thread");
    (result, stopped.elapsed())
}

/// When to stop a build, from its namespace names and state folder.
type StopPoint = fn(&LabNames, &std::path::Path) -> bool;

/// A build told to stop returns soon, whatever it is doing (running a
/// command, waiting for dockerd's API), and leaves nothing behind.
#[test]
fn lab_build_stops_when_told() {
    require_root("lab_build_stops_when_told");
    let cases: [(&str, DockerMode, StopPoint); 3] = [
        ("namespaces made", DockerMode::Emulated, |n, _| {
            netns::exists(&n.lan)
        }),
        ("dockerd starting", DockerMode::Real, |_, s| {
            s.join("dockerd.log").exists()
        }),
        ("dockerd up", DockerMode::Real, |_, s| {
            s.join("docker.sock").exists()
        }),
    ];
    for (point, docker, ready) in cases {
        let (result, took) = stop_build_when(
            LabConfig {
                docker,
                block: Block::Drop,
                ..LabConfig::with_prefix("tc")
            },
            ready,
        );
        println!(
            "  stopped at {point}: returned after {:.2}s",
            took.as_secs_f64()
        );
        assert!(
            matches!(result, Err(LabError::Cancelled)),
            "{point}: {:?}",
            result.map(|l| l.prefix().to_string())
        );
        // Teardown included: stopping dockerd is most of it.
        assert!(took < Duration::from_secs(20), "{point}: {took:?} to stop");
        let left = leftovers("tc");
        assert!(left.is_empty(), "{point}: left behind: {left:?}");
    }
}

//! `pathtrace demo`: the incident, rebuilt in namespaces and traced the way
//! an admin would: `pathtrace` itself, run where they would run it, with
//! the flow as its only flags.
use std::{net::IpAddr, os::fd::AsRawFd, process::Stdio, sync::Arc, time::Duration};

use clap::ValueEnum;
use lab::{Block, DockerMode, Lab, LabConfig, ProbeOutcome};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::Notify,
};

use crate::{
    cli::{ColorChoice, DemoArgs, DemoLayout, DockerChoice, TierArg},
    error::Error,
    signals::StopSignals,
};

fn say(line: &str) {
    eprintln!("pathtrace demo: {line}");
}

pub fn lab_config(docker: DockerChoice, layout: DemoLayout) -> LabConfig {
    LabConfig {
        block: Block::Drop,
        docker: match docker {
            DockerChoice::Auto => DockerMode::Auto,
            DockerChoice::Real => DockerMode::Real,
            DockerChoice::Emulated => DockerMode::Emulated,
        },
        hypervisor: layout == DemoLayout::Hypervisor,
        ..LabConfig::with_prefix("ptdemo")
    }
}

/// `pathtrace demo`: the incident rebuilt in a lab, traced, then removed.
pub fn run_blocking(args: &DemoArgs) -> Result<(), Error> {
    crate::privileges::check().map_err(Error::Privileges)?;
    super::runtime()?.block_on(run(args))
}

/// The `pathtrace` command line the demo runs, without the program.
fn trace_args(args: &DemoArgs, lab: &Lab) -> Vec<String> {
    let port = lab.addrs.published_port.to_string();
    let mut out: Vec<String> = if args.compare {
        [
            "compare",
            "--src",
            &lab.addrs.client.to_string(),
            "--src",
            &lab.addrs.other.to_string(),
            "--dport",
            &port,
        ]
        .map(str::to_owned)
        .to_vec()
    } else {
        // The flow: connections to the published port (of the Docker host,
        // as other programs on this machine may use the same port).
        vec![
            "--dst".into(),
            lab.addrs.host.to_string(),
            "--dport".into(),
            port,
        ]
    };
    if args.output.json {
        out.push("--json".into());
    }
    if let Some(c) = args
        .output
        .color
        .to_possible_value()
        .filter(|_| args.output.color != ColorChoice::Auto)
    {
        out.extend(["--color".into(), c.get_name().to_owned()]);
    }
    if let Some(tier) = args
        .tier
        .to_possible_value()
        .filter(|_| args.tier != TierArg::Auto)
    {
        out.extend(["--tier".into(), tier.get_name().to_owned()]);
    }
    out
}

pub async fn run(args: &DemoArgs) -> Result<(), Error> {
    // From here on a SIGINT or SIGTERM ends the demo through its teardown.
    let mut signals = StopSignals::install()?;
    let layout = args.layout;
    say(match layout {
        DemoLayout::Hypervisor => {
            "building the incident: hypervisor ptdemo-lan (bridge br0, br_netfilter on), \
             Docker in its guest ptdemo-dock (192.0.2.25, web publishing 8092 → 80), \
             the reverse proxy 192.0.2.9 and another host 192.0.2.134 on the bridge"
        }
        DemoLayout::SingleHost => {
            "building the incident: LAN 192.0.2.0/24, Docker host ptdemo-dock \
             (192.0.2.25, web publishing 8092 → 80), the reverse proxy 192.0.2.9 \
             and another host 192.0.2.134"
        }
    });
    let cfg = lab_config(args.docker, layout);
    let stop = lab::StopFlag::new();
    let mut build = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || Lab::start_cancellable(cfg, &stop))
    };
    let built = tokio::select! {
        r = &mut build => r,
        _ = signals.recv() => {
            say("interrupted: stopping the lab build and removing what it built");
            stop.stop();
            return match build.await {
                Ok(Ok(mut lab)) => lab.teardown().map_err(Error::from),
                Ok(Err(lab::LabError::Cancelled)) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(Error::Runtime(format!("lab start-up task: {e}"))),
            };
        }
    };
    let lab = Arc::new(built.map_err(|e| Error::Runtime(format!("lab start-up task: {e}")))??);
    if lab.docker_is_real() {
        say(&format!("real dockerd running in {}", lab.names.dock));
    } else {
        say("dockerd could not run here: EMULATING Docker's bridge, veth and chains");
    }
    say(&format!(
        "DOCKER-USER in {} drops {} (the reverse proxy)",
        lab.names.dock, lab.addrs.client
    ));
    let result = trace_and_probe(args, &lab, &mut signals).await;
    say("removing the lab");
    // The probes' clones are gone by now; were one left, dropping the last
    // one would tear the lab down all the same.
    let removed = match Arc::try_unwrap(lab) {
        Ok(mut lab) => lab.teardown().map_err(Error::from),
        Err(_) => Ok(()),
    };
    result.and(removed)
}

async fn trace_and_probe(
    args: &DemoArgs,
    lab: &Arc<Lab>,
    signals: &mut StopSignals,
) -> Result<(), Error> {
    let (where_, ns) = match args.layout {
        DemoLayout::Hypervisor => ("on the hypervisor", &lab.names.lan),
        DemoLayout::SingleHost => ("on the Docker host", &lab.names.dock),
    };
    let argv = trace_args(args, lab);
    say(&format!("{where_} ({ns}): pathtrace {}", argv.join(" ")));
    let mut child = spawn_in(ns, &argv)?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            eprintln!("{line}");
            if line.starts_with("pathtrace: ready") {
                return true;
            }
        }
        false
    });
    let (ready, interrupted) = tokio::select! {
        r = ready => (r.unwrap_or(false), false),
        _ = signals.recv() => (false, true),
    };
    // The guest's rules are traced from the first packet that enters it.
    let followed = Arc::new(Notify::new());
    let pump = {
        let (followed, guest) = (followed.clone(), lab.names.dock.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("{line}");
                if line.contains("followed the packet into") && line.contains(&guest) {
                    followed.notify_one();
                }
            }
        })
    };
    if !ready {
        let status = stop(&mut child).await;
        let _ = pump.await;
        if interrupted {
            say("interrupted");
            return Ok(());
        }
        return Err(Error::Runtime(format!(
            "pathtrace ended before tracing ({status})"
        )));
    }
    let probe = |from: String, wait: u64| {
        let lab = lab.clone();
        tokio::task::spawn_blocking(move || {
            let host = IpAddr::V4(lab.addrs.host);
            lab.tcp_connect(
                &from,
                host,
                lab.addrs.published_port,
                Duration::from_millis(wait),
            )
        })
    };
    // The other host first: its SYN arms rule tracing in the guest, so the
    // proxy's first SYN already meets the deciding rule there.
    let mut probes = None;
    if let Some(other) = finished(probe(lab.names.other.clone(), 1500), signals).await? {
        if args.layout == DemoLayout::Hypervisor {
            let _ = tokio::time::timeout(Duration::from_secs(2), followed.notified()).await;
        }
        if let Some(client) = finished(probe(lab.names.client.clone(), 2500), signals).await? {
            probes = Some((client, other));
        }
    }
    let Some((client, other)) = probes else {
        stop(&mut child).await;
        let _ = pump.await;
        say("interrupted");
        return Ok(());
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = stop(&mut child).await;
    let _ = pump.await;
    let (host, port) = (lab.addrs.host, lab.addrs.published_port);
    say(&format!(
        "probes: {} → {host}:{port} {}; {} → {host}:{port} {}",
        lab.addrs.client,
        outcome(client),
        lab.addrs.other,
        outcome(other)
    ));
    if status.success() {
        Ok(())
    } else {
        Err(Error::Runtime(format!("pathtrace ended with {status}")))
    }
}

/// The probe's outcome, or `None` when a signal came first (the probe,
/// bounded in time, is still waited for: it holds the lab).
async fn finished(
    mut task: tokio::task::JoinHandle<ProbeOutcome>,
    signals: &mut StopSignals,
) -> Result<Option<ProbeOutcome>, Error> {
    let failed = |e: tokio::task::JoinError| Error::Runtime(format!("probe task: {e}"));
    tokio::select! {
        r = &mut task => r.map(Some).map_err(failed),
        _ = signals.recv() => {
            task.await.map_err(failed)?;
            Ok(None)
        }
    }
}

fn outcome(o: ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Connected => "connected".into(),
        ProbeOutcome::TimedOut => "timed out".into(),
        other => other.to_string(),
    }
}

/// Starts `pathtrace ARGV` in network namespace `ns` (as `nsenter --net`
/// would: /sys stays as it is), with `DOCKER_HOST` unset, ended with
/// SIGTERM should the demo die first.
fn spawn_in(ns: &str, argv: &[String]) -> Result<Child, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Runtime(format!("finding pathtrace's own binary: {e}")))?;
    let netns = std::fs::File::open(lab::ns_path(ns))
        .map_err(|e| Error::Runtime(format!("opening namespace {ns}: {e}")))?;
    let fd = netns.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(argv)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::Runtime(format!("starting pathtrace in {ns}: {e}")))?;
    drop(netns);
    Ok(child)
}

/// SIGINT (a trace's normal end), then SIGKILL after 15 s.
async fn stop(child: &mut Child) -> std::process::ExitStatus {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    }
    match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
        Ok(Ok(status)) => status,
        _ => {
            let _ = child.kill().await;
            child.wait().await.unwrap_or_default()
        }
    }
}

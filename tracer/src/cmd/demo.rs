//! `pathtrace demo`: the incident, rebuilt in namespaces and traced.
use std::{net::IpAddr, path::Path, sync::Arc, time::Duration};

use lab::{Block, DockerMode, Lab, LabConfig};
use tokio::sync::{oneshot, Notify};

use crate::{
    cli::{DemoArgs, DockerChoice},
    cmd::compare::CompareSink,
    error::Error,
    loader::LoadOptions,
    model::{FlowFilter, Proto},
    ruletrace::NetnsTarget,
    session::{self, TraceOptions},
};

pub fn lab_config(docker: DockerChoice) -> LabConfig {
    LabConfig {
        block: Block::Drop,
        docker: match docker {
            DockerChoice::Auto => DockerMode::Auto,
            DockerChoice::Real => DockerMode::Real,
            DockerChoice::Emulated => DockerMode::Emulated,
        },
        ..LabConfig::with_prefix("ptdemo")
    }
}

fn flow(src: IpAddr, dport: u16) -> FlowFilter {
    FlowFilter {
        src: Some(crate::model::Cidr {
            addr: src,
            prefix: if src.is_ipv4() { 32 } else { 128 },
        }),
        dport: Some(dport),
        proto: Some(Proto(6)),
        both_directions: true,
        ..Default::default()
    }
}

/// `pathtrace demo`: the incident rebuilt in a lab, traced, then removed.
pub fn run_blocking(args: &DemoArgs) -> Result<(), Error> {
    crate::privileges::check().map_err(Error::Privileges)?;
    let color = super::use_color(&args.output, false);
    super::runtime()?.block_on(run(args, color))
}

pub async fn run(args: &DemoArgs, color: bool) -> Result<(), Error> {
    eprintln!("pathtrace demo: building the lab (LAN 192.0.2.0/24, Docker host 192.0.2.25 publishing 8092 → web:80)");
    let cfg = lab_config(args.docker);
    let lab = tokio::task::spawn_blocking(move || Lab::start(cfg))
        .await
        .map_err(|e| Error::Runtime(format!("lab start-up task: {e}")))??;
    if lab.docker_is_real() {
        eprintln!("pathtrace demo: real dockerd running in {}", lab.names.dock);
    } else {
        eprintln!("pathtrace demo: dockerd could not run here; EMULATING Docker's bridge, veth and chains");
    }
    eprintln!(
        "pathtrace demo: DOCKER-USER drops {} (the reverse proxy); {} is another LAN host",
        lab.addrs.client, lab.addrs.other
    );
    let port = lab.addrs.published_port;
    let host = IpAddr::V4(lab.addrs.host);
    let opts = TraceOptions {
        filters: vec![
            flow(IpAddr::V4(lab.addrs.client), port),
            flow(IpAddr::V4(lab.addrs.other), port),
        ],
        json: args.output.json,
        color,
        count: None,
        duration: Some(Duration::from_secs(30)),
        load: LoadOptions {
            tier: args.tier,
            ..Default::default()
        },
        rule_netns: NetnsTarget::named(&lab.names.dock, &[])
            .map(|t| vec![t])
            .map_err(Error::Runtime)?,
        follow: true,
        engine_sockets: lab
            .docker_socket()
            .map(Path::to_path_buf)
            .into_iter()
            .collect(),
        engines_pinned: true,
        pcap: None,
    };
    let stop = Arc::new(Notify::new());
    let (ready_tx, ready_rx) = oneshot::channel();
    let trace_stop = stop.clone();
    let compare = args.compare;
    let trace = tokio::spawn(async move {
        let mut out = std::io::stdout();
        if compare {
            let labels = [opts.filters[0].to_string(), opts.filters[1].to_string()];
            let mut sink = CompareSink::new(&mut out, opts.json, opts.color, labels, None);
            session::run(&opts, &mut sink, trace_stop, Some(ready_tx)).await
        } else {
            let mut printer = session::Printer::new(&mut out, opts.json, opts.color, None);
            session::run(&opts, &mut printer, trace_stop, Some(ready_tx)).await
        }
    });
    if ready_rx.await.is_err() {
        drop(lab);
        return trace
            .await
            .map_err(|e| Error::Runtime(e.to_string()))?
            .map(|_| ());
    }
    let lab = Arc::new(lab);
    let probes = {
        let lab = lab.clone();
        tokio::task::spawn_blocking(move || {
            let client =
                lab.tcp_connect(&lab.names.client, host, port, Duration::from_millis(1500));
            let other = lab.tcp_connect(&lab.names.other, host, port, Duration::from_millis(1500));
            (client, other)
        })
        .await
        .map_err(|e| Error::Runtime(format!("probe task: {e}")))?
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_one();
    let result = trace.await.map_err(|e| Error::Runtime(e.to_string()))?;
    eprintln!(
        "pathtrace demo: {} → {host}:{port}: {:?};  {} → {host}:{port}: {:?}",
        lab.addrs.client, probes.0, lab.addrs.other, probes.1
    );
    eprintln!("pathtrace demo: removing the lab");
    drop(lab);
    result.map(|_| ())
}

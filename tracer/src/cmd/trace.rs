//! `pathtrace trace` (the default command): follow matching packets.
use super::runtime;
use crate::{
    cli::{RunArgs, TraceArgs},
    error::Error,
    loader::LoadOptions,
    model::Flows,
    privileges,
    render::{text_out, Printer},
    ruletrace::NetnsTarget,
    session::{self, TraceOptions},
};

/// The options of a tracing run (`trace` and `compare`) from its arguments.
pub fn run_options(run: &RunArgs, filters: Flows) -> Result<TraceOptions, Error> {
    for f in filters.iter() {
        if f.is_empty() {
            return Err(Error::Usage(
                "give at least one of --src, --dst, --sport, --dport or --proto".into(),
            ));
        }
        f.validate().map_err(|e| Error::Usage(e.to_string()))?;
    }
    let engine_sockets = crate::names::api_sockets(run.docker_socket.as_deref());
    let mut rule_netns = Vec::new();
    if run.no_rules && !run.netns.is_empty() {
        return Err(Error::Usage(
            "--netns and --no-rules contradict each other".into(),
        ));
    }
    if !run.no_rules {
        rule_netns.push(
            NetnsTarget::current()
                .map_err(|e| Error::Runtime(format!("reading this namespace: {e}")))?,
        );
        for spec in &run.netns {
            let t = NetnsTarget::named(spec, &engine_sockets)
                .map_err(|e| Error::Usage(e.to_string()))?;
            if !rule_netns.iter().any(|r| r.inode == t.inode) {
                rule_netns.push(t);
            }
        }
    }
    if let Some(p) = &run.pcap {
        crate::render::pcapng::check_target(p).map_err(|e| Error::Usage(e.to_string()))?;
    }
    Ok(TraceOptions {
        filters,
        format: super::format(
            &run.output,
            run.pcap
                .as_deref()
                .is_some_and(crate::render::pcapng::is_stdout),
        ),
        count: run.count,
        duration: run.duration,
        load: LoadOptions {
            tier: run.tier.into(),
            ring_bytes: run.ring_bytes,
            tracked_max: run.tracked_max,
            config_flags: tracer_common::config_flags::CONNTRACK
                | if run.pcap.is_some() {
                    tracer_common::config_flags::CAPTURE_BYTES
                } else {
                    0
                },
            ..Default::default()
        },
        rule_netns,
        follow: !run.no_follow,
        engine_sockets,
        engines_pinned: run.docker_socket.is_some()
            || std::env::var("DOCKER_HOST").is_ok_and(|h| h.starts_with("unix://")),
        pcap: run.pcap.clone(),
    })
}

fn trace_options(args: &TraceArgs) -> Result<TraceOptions, Error> {
    run_options(
        &args.run,
        args.flows().map_err(|e| Error::Usage(e.to_string()))?,
    )
}

pub fn run(args: &TraceArgs) -> Result<(), Error> {
    let opts = trace_options(args)?;
    privileges::check().map_err(Error::Privileges)?;
    let mut out = text_out(opts.pcap.as_deref());
    let mut printer = Printer::new(&mut out, opts.format, opts.count);
    runtime()?
        .block_on(session::run(&opts, &mut printer))
        .map(|_| ())
}

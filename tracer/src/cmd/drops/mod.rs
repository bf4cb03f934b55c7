//! `pathtrace drops`: every drop on the host, as a throttled live stream or
//! as a live table of the most frequent (reason, location, device, namespace),
//! either one optionally also served to Prometheus.
mod metrics;
mod stream;
mod top;

use std::{net::SocketAddr, time::Duration};

use tracer_common::config_flags;

pub use metrics::SERIES_LIMIT;
pub use stream::{run_stream, Throttle};
pub use top::{run_top, TopRow};

use crate::{
    error::Error,
    loader::{LoadOptions, TierRequest, Tracer},
    model::Flows,
    names::View,
    session::{load_programs, view},
};

/// Loads the drop programs with the run's filter, and the names drops are
/// read with; `config_flags` says what the kernel counts.
fn load(opts: &DropsOptions, config_flags: u32) -> Result<(Tracer, View), Error> {
    let all_drops = if opts.filter[0].is_empty() {
        config_flags::ALL_DROPS
    } else {
        0
    };
    let load = LoadOptions {
        tier: opts.tier,
        hops: false,
        config_flags: config_flags | all_drops,
        ..Default::default()
    };
    let (tracer, btf) = load_programs(&load, &opts.filter)?;
    let view = view(&btf)?;
    Ok((tracer, view))
}

pub struct DropsOptions {
    /// One flow; empty: every drop on the host.
    pub filter: Flows,
    pub format: crate::render::Format,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    /// Stream: the most lines printed per second before summarising the rest.
    pub max_rate: u32,
    /// Top: how often to refresh.
    pub interval: Duration,
    /// Top: redraw in place (on a terminal) rather than printing snapshots.
    pub redraw: bool,
    /// Serve the kernel's counts on `http://ADDR/metrics` while running.
    pub metrics: Option<SocketAddr>,
    /// Print no drops (only serve them, with `metrics`).
    pub quiet: bool,
    pub tier: TierRequest,
}

/// Resolves when the duration has passed (never without one).
pub(crate) async fn deadline(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// `pathtrace drops`: every drop as it happens, or `--top` counts.
pub fn run(args: &crate::cli::DropsArgs) -> Result<(), crate::error::Error> {
    use std::io::IsTerminal;

    use crate::error::Error;
    let filter = args
        .filter
        .single(false)
        .map_err(|e| Error::Usage(e.to_string()))?;
    filter[0]
        .validate()
        .map_err(|e| Error::Usage(e.to_string()))?;
    crate::privileges::check().map_err(Error::Privileges)?;
    let opts = DropsOptions {
        filter,
        format: super::format(&args.output, false),
        duration: args.duration,
        count: args.count,
        max_rate: args.max_rate,
        interval: args.interval,
        redraw: std::io::stdout().is_terminal() && !args.output.json,
        metrics: args.metrics,
        quiet: args.quiet,
        tier: args.tier.into(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let rt = super::runtime()?;
    if args.top || args.quiet {
        rt.block_on(run_top(&opts, &mut out)).map(|_| ())
    } else {
        rt.block_on(run_stream(&opts, &mut out))
    }
}

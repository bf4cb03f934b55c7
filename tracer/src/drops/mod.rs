//! `pathtrace drops`: every drop on the host, as a throttled live stream or
//! as a live table of the most frequent (reason, location, device, namespace).
mod stream;
mod top;

use std::time::Duration;

pub use stream::{run_stream, Throttle};
pub use top::{run_top, TopRow};

use crate::{filter::FlowFilter, loader::TierRequest};

pub struct DropsOptions {
    /// Empty: every drop on the host.
    pub filter: FlowFilter,
    pub json: bool,
    pub color: bool,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    /// Stream: the most lines printed per second before summarising the rest.
    pub max_rate: u32,
    /// Top: how often to refresh.
    pub interval: Duration,
    /// Top: redraw in place (on a terminal) rather than printing snapshots.
    pub redraw: bool,
    pub tier: TierRequest,
}

/// Resolves when the duration has passed (never without one).
pub(crate) async fn deadline(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

//! The drop stream: one line (or JSON record) per drop, throttled.
use std::{io::Write, time::Instant};

use tracer_common::config_flags;

use super::{
    deadline,
    metrics::{next_scrape, DropMetrics, Exporter},
    DropsOptions,
};
use crate::{
    error::Error,
    events::decode,
    names::View,
    render::{
        drops::{self, StreamTotals},
        Format,
    },
    session::enrich,
};

/// Lets through at most `per_sec` items a second and counts the rest.
#[derive(Debug, Default)]
pub struct Throttle {
    per_sec: u32,
    window: Option<Instant>,
    shown: u32,
    held: u64,
}

impl Throttle {
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            window: None,
            shown: 0,
            held: 0,
        }
    }

    /// Whether to print this item. When a new second starts, returns how
    /// many items the last one held back, so the caller can say so.
    pub fn admit(&mut self, now: Instant) -> (bool, u64) {
        let mut held_back = 0;
        if self
            .window
            .is_none_or(|w| now.duration_since(w).as_secs() >= 1)
        {
            held_back = std::mem::take(&mut self.held);
            self.window = Some(now);
            self.shown = 0;
        }
        if self.shown < self.per_sec {
            self.shown += 1;
            (true, held_back)
        } else {
            self.held += 1;
            (false, held_back)
        }
    }

    /// What is held back and not yet reported.
    pub fn pending(&mut self) -> u64 {
        std::mem::take(&mut self.held)
    }
}

#[derive(Default)]
struct StreamState {
    throttle: Throttle,
    drops: u64,
    events: u64,
    unprinted: u64,
    failed: Option<std::io::Error>,
}

impl StreamState {
    /// One ring record: a drop, named, then printed unless the throttle
    /// holds it back.
    fn handle<W: Write>(&mut self, bytes: &[u8], format: Format, view: &mut View, out: &mut W) {
        self.events += 1;
        let Ok(mut hop) = decode(bytes) else { return };
        self.drops += 1;
        enrich(&mut hop, view);
        view.resolve_netns(hop.netns);
        let (show, held) = self.throttle.admit(Instant::now());
        self.unprinted += u64::from(!show);
        let res = drops::held(out, format, held).and_then(|_| match show {
            false => Ok(()),
            true => drops::drop(out, format, &hop, view),
        });
        if let Err(e) = res {
            self.failed.get_or_insert(e);
        }
    }
}

pub async fn run_stream<W: Write>(opts: &DropsOptions, out: &mut W) -> Result<(), Error> {
    let counts = if opts.metrics.is_some() {
        config_flags::COUNT_DROPS
    } else {
        0
    };
    let (mut tracer, mut view) = super::load(opts, counts)?;
    let mut reader = tracer.events()?;
    let mut exporter = Exporter::for_flag(opts.metrics).await?;
    let mut metrics = DropMetrics::default();
    let mut signals = crate::signals::StopSignals::install()?;
    eprintln!(
        "pathtrace: ready, streaming drops of {}",
        if opts.filter[0].is_empty() {
            "every packet".into()
        } else {
            opts.filter[0].to_string()
        }
    );
    let mut st = StreamState {
        throttle: Throttle::new(opts.max_rate),
        ..Default::default()
    };
    let end = deadline(opts.duration);
    tokio::pin!(end);
    loop {
        let scrape = tokio::select! {
            r = reader.next_batch(|b| st.handle(b, opts.format, &mut view, out)) => {
                r.map_err(|e| Error::Runtime(format!("reading events: {e}")))?;
                let _ = out.flush();
                None
            }
            s = next_scrape(&mut exporter) => Some(s),
            _ = &mut end => break,
            _ = signals.recv() => break,
        };
        if let Some(s) = scrape {
            metrics.answer(s, &tracer, &mut view);
        }
        if st.failed.is_some() || opts.count.is_some_and(|c| st.drops >= c) {
            break;
        }
    }
    if let Some(e) = st.failed {
        return Err(Error::Output(e));
    }
    let StreamState {
        mut throttle,
        drops,
        events,
        unprinted,
        ..
    } = st;
    drops::held(out, opts.format, throttle.pending()).map_err(Error::Output)?;
    let totals = StreamTotals {
        tier: tracer.tier,
        events,
        drops,
        unprinted,
        lost: tracer.counters().lost,
    };
    drops::stream_totals(out, opts.format, &totals)
        .and_then(|_| out.flush())
        .map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Throttle;

    #[test]
    fn throttle_admits_a_rate_and_reports_the_rest() {
        let mut t = Throttle::new(2);
        let t0 = std::time::Instant::now();
        assert_eq!(t.admit(t0), (true, 0));
        assert_eq!(t.admit(t0), (true, 0));
        assert_eq!(t.admit(t0), (false, 0));
        assert_eq!(t.admit(t0 + Duration::from_millis(500)), (false, 0));
        assert_eq!(
            t.admit(t0 + Duration::from_millis(1100)),
            (true, 2),
            "the next second reports two held back"
        );
        assert_eq!(t.admit(t0 + Duration::from_millis(1200)), (true, 0));
        assert_eq!(t.admit(t0 + Duration::from_millis(1300)), (false, 0));
        assert_eq!(t.pending(), 1);
        assert_eq!(t.pending(), 0);
    }
}

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
    events::{decode, Hop},
    names::View,
    render::{
        records::{DropRecord, Record, StatsRecord, ThrottledRecord},
        text::tuple,
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

fn line(hop: &Hop, view: &mut View) -> String {
    let ns = view
        .netns_name(hop.netns)
        .unwrap_or_else(|| format!("netns:{}", hop.netns));
    let reason = view.reason(hop).unwrap_or_default();
    let loc = view.location(hop).unwrap_or_else(|| "?".into());
    let hook = hop
        .hook
        .map(|h| format!(" [{}]", h.as_str()))
        .unwrap_or_default();
    let t = hop
        .tuple
        .map(|t| format!("  {}", tuple(&t)))
        .unwrap_or_default();
    let dev = if hop.ifname.is_empty() {
        "-"
    } else {
        &hop.ifname
    };
    format!("{reason:<22} {loc:<34} {dev:<12} {ns}{hook}{t}")
}

fn record(hop: &Hop, view: &mut View) -> Record {
    Record::Drop(DropRecord {
        t_ns: hop.t_ns,
        reason: view.reason(hop),
        location: view.location(hop),
        hook: hop.hook.map(|h| h.as_str()),
        netns: hop.netns,
        netns_name: view.netns_name(hop.netns),
        ifname: hop.ifname.clone(),
        ifindex: hop.ifindex,
        flow: hop.tuple.into(),
    })
}

fn say_held<W: Write>(out: &mut W, json: bool, n: u64) -> std::io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    if json {
        writeln!(
            out,
            "{}",
            Record::Throttled(ThrottledRecord { unprinted: n })
        )
    } else {
        writeln!(out, "… {n} more drops in the last second not printed")
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
    fn handle<W: Write>(&mut self, bytes: &[u8], json: bool, view: &mut View, out: &mut W) {
        self.events += 1;
        let Ok(mut hop) = decode(bytes) else { return };
        self.drops += 1;
        enrich(&mut hop, view);
        let (show, held) = self.throttle.admit(Instant::now());
        self.unprinted += u64::from(!show);
        let res = say_held(out, json, held).and_then(|_| match (show, json) {
            (false, _) => Ok(()),
            (true, true) => writeln!(out, "{}", record(&hop, view)),
            (true, false) => writeln!(out, "{}", line(&hop, view)),
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
        if opts.filter.is_empty() {
            "every packet".into()
        } else {
            opts.filter.to_string()
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
            r = reader.next_batch(|b| st.handle(b, opts.json, &mut view, out)) => {
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
    say_held(out, opts.json, throttle.pending()).map_err(Error::Output)?;
    let lost = tracer.counters().lost;
    if opts.json {
        let stats = Record::Stats(StatsRecord {
            tier: tracer.tier,
            events,
            lost,
            drops: Some(drops),
            unprinted: Some(unprinted),
            ..StatsRecord::default()
        });
        writeln!(out, "{stats}").map_err(Error::Output)?;
    } else {
        eprintln!("pathtrace: {drops} drops, {unprinted} not printed, {lost} lost");
    }
    out.flush().map_err(Error::Output)
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

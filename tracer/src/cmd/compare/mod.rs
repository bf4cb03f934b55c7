//! `pathtrace compare`: trace two flows at once, show their paths side by
//! side, and point at the first hop where they part — the answer to "why
//! does it work from here and not from there".
mod align;
mod render;

use std::io::Write;

pub use align::{align, divergence, Divergence, Row, Step};

use crate::{
    diagnose::{Direction, Outcomes, Report},
    names::View,
    render::Stats,
    session::PacketSink,
    track::Packet,
};

/// The first request packet of each flow, with its verdict.
pub struct CompareSink<'a, W: Write> {
    out: &'a mut W,
    json: bool,
    color: bool,
    labels: [String; 2],
    /// Stop once both flows have this many request packets.
    count: Option<u64>,
    seen: [u64; 2],
    first: [Option<(Packet, Report)>; 2],
}

impl<'a, W: Write> CompareSink<'a, W> {
    pub fn new(
        out: &'a mut W,
        json: bool,
        color: bool,
        labels: [String; 2],
        count: Option<u64>,
    ) -> Self {
        Self {
            out,
            json,
            color,
            labels,
            count,
            seen: [0, 0],
            first: [None, None],
        }
    }
}

impl<W: Write> PacketSink for CompareSink<'_, W> {
    fn packet(&mut self, p: &Packet, _view: &mut View, report: &Report) -> std::io::Result<bool> {
        if report.direction != Direction::Request {
            return Ok(false);
        }
        let side = usize::from(p.hops.first().is_some_and(|h| h.filter == 1));
        self.seen[side] += 1;
        if self.first[side].is_none() {
            self.first[side] = Some((p.clone(), report.clone()));
        }
        Ok(self
            .count
            .is_some_and(|c| self.seen.iter().all(|&n| n >= c)))
    }

    fn finish(
        &mut self,
        outcomes: &Outcomes,
        stats: &Stats,
        view: &mut View,
    ) -> std::io::Result<()> {
        let [a, b] = &self.first;
        let text = render::comparison(
            a.as_ref(),
            b.as_ref(),
            &self.labels,
            view,
            self.json,
            self.color,
        );
        write!(self.out, "{text}")?;
        if self.json {
            writeln!(self.out, "{}", crate::render::json::summary(outcomes))?;
            writeln!(self.out, "{}", crate::render::json::stats(stats))?;
        } else {
            eprintln!("pathtrace: {}", crate::render::text::stats(stats));
        }
        self.out.flush()
    }
}

/// `pathtrace compare`: two flows side by side.
pub fn run(args: &crate::cli::CompareArgs) -> Result<(), crate::error::Error> {
    use crate::error::Error;
    let flows = args.flows().map_err(|e| Error::Usage(e.to_string()))?;
    let labels = [flows[0].to_string(), flows[1].to_string()];
    let opts = super::trace::run_options(&args.run, flows.to_vec())?;
    crate::privileges::check().map_err(Error::Privileges)?;
    let mut out = crate::session::text_out(opts.pcap.as_deref());
    let mut sink = CompareSink::new(&mut out, opts.json, opts.color, labels, opts.count);
    super::runtime()?
        .block_on(crate::session::run(
            &opts,
            &mut sink,
            std::sync::Arc::default(),
            None,
        ))
        .map(|_| ())
}

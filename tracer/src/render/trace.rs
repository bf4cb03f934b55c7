//! Where settled packets go, and the trace's own output: a block (or JSON
//! records) per packet, then the summary and the totals.
use std::io::Write;

use super::{json, text, Format, Stats};
use crate::{
    diagnose::{Outcomes, Report},
    names::View,
    track::Packet,
};

/// Where settled packets go: the trace printer, or `compare`.
pub trait PacketSink {
    /// Takes one settled, named packet; `Ok(true)` ends the run.
    fn packet(&mut self, p: &Packet, view: &View, report: &Report) -> std::io::Result<bool>;
    /// Pushes buffered output out (once per tick, not once per packet).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// At exit: the grouped outcomes and the totals.
    fn finish(&mut self, outcomes: &Outcomes, stats: &Stats, view: &View) -> std::io::Result<()>;
}

/// The trace's own output.
pub struct Printer<'a, W: Write> {
    out: &'a mut W,
    format: Format,
    /// Stop after this many packets.
    count: Option<u64>,
    printed: u64,
    /// One packet's text, reused from packet to packet.
    text: String,
}

impl<'a, W: Write> Printer<'a, W> {
    pub fn new(out: &'a mut W, format: Format, count: Option<u64>) -> Self {
        Self {
            out,
            format,
            count,
            printed: 0,
            text: String::new(),
        }
    }
}

impl<W: Write> PacketSink for Printer<'_, W> {
    fn packet(&mut self, p: &Packet, view: &View, report: &Report) -> std::io::Result<bool> {
        match self.format {
            Format::Json => {
                for h in &p.hops {
                    writeln!(self.out, "{}", json::hop(p.id, h, view))?;
                }
                writeln!(self.out, "{}", json::packet_with(p, view, report))?;
            }
            Format::Text { .. } => {
                let style = self.format.style();
                self.text.clear();
                text::packet(&mut self.text, p, view, style);
                text::diagnosis(&mut self.text, &report.diagnosis, style);
                self.text.push('\n');
                self.out.write_all(self.text.as_bytes())?;
            }
        }
        self.printed += 1;
        Ok(self.count.is_some_and(|c| self.printed >= c))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self, outcomes: &Outcomes, stats: &Stats, _view: &View) -> std::io::Result<()> {
        match self.format {
            Format::Json => {
                writeln!(self.out, "{}", json::summary(outcomes))?;
                writeln!(self.out, "{}", json::stats(stats))?;
            }
            Format::Text { .. } => {
                write!(self.out, "{}", text::summary(outcomes, self.format.style()))?;
                eprintln!("pathtrace: {}", text::stats(stats));
            }
        }
        self.out.flush()
    }
}

//! `pathtrace compare`: trace two flows at once, show their paths side by
//! side, and point at the first hop where they part — the answer to "why
//! does it work from here and not from there".
use crate::{
    cli::CompareArgs,
    error::Error,
    render::{compare::CompareSink, text_out},
    session,
};

/// `pathtrace compare`: two flows side by side.
pub fn run(args: &CompareArgs) -> Result<(), Error> {
    let flows = args.flows().map_err(|e| Error::Usage(e.to_string()))?;
    let labels = [flows[0].to_string(), flows[1].to_string()];
    let opts = super::trace::run_options(&args.run, flows)?;
    crate::privileges::check().map_err(Error::Privileges)?;
    let mut out = text_out(opts.pcap.as_deref());
    let mut sink = CompareSink::new(&mut out, opts.format, labels, opts.count);
    super::runtime()?
        .block_on(session::run(&opts, &mut sink))
        .map(|_| ())
}

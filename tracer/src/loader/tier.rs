//! Choosing the [`Tier`] that sees `nf_hook_slow`: the one asked for, or
//! the best the kernel allows.
use aya::Ebpf;

use super::LoadError;
use crate::{kernel::btf::Btf, model::Tier};

/// The tier a run asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierRequest {
    /// The best that attaches: fentry, else kprobe, else tracepoint.
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

type Attach<'a> = &'a mut dyn FnMut(&mut Ebpf) -> Result<(), LoadError>;

/// Tries the tiers in order of preference and keeps the first that attaches.
pub(super) fn choose(
    req: TierRequest,
    ebpf: &mut Ebpf,
    btf: &Btf,
    fentry: fn(&mut Ebpf, &Btf) -> Result<(), LoadError>,
    kprobe: Attach<'_>,
    describe: fn(&dyn std::error::Error) -> String,
) -> Result<(Tier, Vec<(Tier, String)>), LoadError> {
    let mut try_fentry = |e: &mut Ebpf| fentry(e, btf);
    let mut try_kprobe = |e: &mut Ebpf| kprobe(e);
    let candidates: Vec<(Tier, Attach<'_>)> = match req {
        TierRequest::Auto => vec![
            (Tier::Fentry, &mut try_fentry),
            (Tier::Kprobe, &mut try_kprobe),
        ],
        TierRequest::Fentry => vec![(Tier::Fentry, &mut try_fentry)],
        TierRequest::Kprobe => vec![(Tier::Kprobe, &mut try_kprobe)],
        TierRequest::Tracepoint => vec![],
    };
    let forced = req != TierRequest::Auto;
    let mut refused = Vec::new();
    for (tier, attach) in candidates {
        match attach(ebpf) {
            Ok(()) => return Ok((tier, refused)),
            Err(e) if forced => {
                return Err(LoadError::TierUnavailable {
                    tier,
                    why: describe(&e),
                });
            }
            Err(e) => refused.push((tier, describe(&e))),
        }
    }
    Ok((Tier::Tracepoint, refused))
}

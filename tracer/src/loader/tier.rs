//! Which mechanism sees `nf_hook_slow`: trampolines, kprobes, or neither.
use std::fmt;

use aya::Ebpf;

use super::LoadError;
use crate::kernel::btf::Btf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TierRequest {
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// fentry/fexit on `nf_hook_slow`: every hook's verdict.
    Fentry,
    /// kprobe/kretprobe on `nf_hook_slow`: the same, without trampolines.
    Kprobe,
    /// Tracepoints and `tp_btf` only: device hops and drops.
    Tracepoint,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

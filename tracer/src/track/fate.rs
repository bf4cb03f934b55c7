//! A packet's fate, read off its hops.
use crate::{
    events::{Hop, HopKind},
    model::Hook,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FateKind {
    Dropped,
    Delivered,
    Forwarded,
    Unknown,
}

impl FateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dropped => "dropped",
            Self::Delivered => "delivered",
            Self::Forwarded => "forwarded",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fate {
    pub kind: FateKind,
    /// Index into the packet's hops of the hop that decided the fate.
    pub at: Option<usize>,
    pub hook: Option<Hook>,
}

impl Fate {
    pub fn of(hops: &[Hop]) -> Self {
        if let Some(i) = hops.iter().position(|h| h.kind == HopKind::Drop) {
            let nf_drop = hops[..i]
                .iter()
                .rev()
                .take_while(|h| matches!(h.kind, HopKind::NfHook | HopKind::NfRule))
                .find(|h| h.verdict == Some(crate::model::Verdict::Drop))
                .and_then(|h| h.hook);
            return Self {
                kind: FateKind::Dropped,
                at: Some(i),
                hook: hops[i].hook.or(nf_drop),
            };
        }
        if let Some(i) = hops.iter().rposition(|h| h.kind == HopKind::Consume) {
            let before = hops[..i]
                .iter()
                .rev()
                .find(|h| matches!(h.kind, HopKind::Rx | HopKind::Tx));
            let kind = match before.map(|h| h.kind) {
                Some(HopKind::Tx) => FateKind::Forwarded,
                _ => FateKind::Delivered,
            };
            return Self {
                kind,
                at: Some(i),
                hook: None,
            };
        }
        let nf_drop = hops.iter().position(|h| {
            h.kind == HopKind::NfHook && h.verdict == Some(crate::model::Verdict::Drop)
        });
        if let Some(i) = nf_drop {
            return Self {
                kind: FateKind::Dropped,
                at: Some(i),
                hook: hops[i].hook,
            };
        }
        Self {
            kind: FateKind::Unknown,
            at: hops.len().checked_sub(1),
            hook: None,
        }
    }
}

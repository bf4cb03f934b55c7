//! Naming what a hop carries: drop reasons, kernel symbols, namespaces.
use super::{Interfaces, NetnsNames};
use crate::{
    events::Hop,
    kernel::{drop_reason::DropReasons, kallsyms::Kallsyms},
};

pub struct View {
    pub reasons: DropReasons,
    pub syms: Option<Kallsyms>,
    pub netns: NetnsNames,
    pub interfaces: Interfaces,
}

impl View {
    /// Names the hop's interface from its namespace and index.
    pub fn name_interface(&mut self, hop: &mut Hop) {
        hop.ifname = self
            .interfaces
            .name(&mut self.netns, hop.netns, hop.ifindex);
    }

    /// The drop's reason; none on kernels that report no reasons (before
    /// 5.17), rather than a made-up `UNKNOWN(0)`.
    pub fn reason(&self, hop: &Hop) -> Option<String> {
        if hop.kind != crate::events::HopKind::Drop {
            return None;
        }
        self.reason_named(hop.reason_raw)
    }

    /// The name of raw drop reason `raw`; none on kernels that report no
    /// reasons.
    pub fn reason_named(&self, raw: u32) -> Option<String> {
        (!self.reasons.is_empty()).then(|| self.reasons.name(raw))
    }

    pub fn location(&self, hop: &Hop) -> Option<String> {
        if hop.location == 0 {
            return None;
        }
        let syms = self.syms.as_ref()?;
        syms.symbolize(hop.location)
            .map(|(name, off)| format!("{name}+{off:#x}"))
    }

    /// Makes namespace `ino`'s name known (before anything reads it).
    pub fn resolve_netns(&mut self, ino: u32) {
        self.netns.resolve(ino);
    }

    /// The name of namespace `ino`, once [`View::resolve_netns`] looked it up.
    pub fn netns_name(&self, ino: u32) -> Option<String> {
        self.netns.name(ino).map(str::to_owned)
    }

    /// `host`, `container`, `lxc`, `nspawn`, `netns` or `process`.
    pub fn netns_kind(&self, ino: u32) -> Option<&'static str> {
        self.netns.kind(ino).map(super::NetnsKind::as_str)
    }
}

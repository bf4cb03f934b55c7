//! Interface names from (network namespace, ifindex). Events carry only the
//! index: the name is asked once per interface, in its namespace, and kept.
use std::{
    collections::HashMap,
    ffi::CStr,
    time::{Duration, Instant},
};

use super::netns::NetnsNames;
use crate::model::IfName;

/// How long a name is kept before it is asked again (an interface can be
/// renamed; indexes are not reused before they wrap).
const KEEP: Duration = Duration::from_secs(5);
/// How long "not found" is kept: a namespace that can't be entered is not
/// asked for again on every event.
const KEEP_MISSING: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Interfaces {
    names: HashMap<(u32, u32), (Option<IfName>, Instant)>,
    /// This process's own network namespace: asked without entering it.
    own: Option<u32>,
}

/// The name of interface `ifindex` in the calling thread's namespace.
fn index_to_name(ifindex: u32) -> Option<IfName> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(IfName::new(&name.to_string_lossy()))
}

impl Interfaces {
    pub fn new() -> Self {
        Self {
            own: super::own_netns(),
            ..Self::default()
        }
    }

    /// The name of `ifindex` in namespace `netns` (empty when unknown).
    pub fn name(&mut self, netns_names: &mut NetnsNames, netns: u32, ifindex: u32) -> IfName {
        if ifindex == 0 {
            return IfName::default();
        }
        let key = (netns, ifindex);
        let fresh = self.names.get(&key).is_some_and(|(name, at)| {
            at.elapsed() < if name.is_some() { KEEP } else { KEEP_MISSING }
        });
        if !fresh {
            let name = if Some(netns) == self.own {
                index_to_name(ifindex)
            } else {
                netns_names
                    .path(netns)
                    .and_then(|path| in_netns::call(&path, || index_to_name(ifindex)).ok())
                    .flatten()
            };
            // A name once known outlives its interface: a late event still
            // says where the packet was.
            let kept = self.names.get(&key).and_then(|(n, _)| *n);
            self.names.insert(key, (name.or(kept), Instant::now()));
        }
        self.names
            .get(&key)
            .and_then(|(n, _)| *n)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_loopback_of_this_namespace() {
        let mut ifaces = Interfaces::new();
        let mut netns = NetnsNames::default();
        let own = ifaces.own.expect("own namespace");
        // Index 1 is the loopback device in every namespace.
        assert_eq!(ifaces.name(&mut netns, own, 1), "lo");
        assert_eq!(ifaces.name(&mut netns, own, 0), "");
        assert_eq!(ifaces.name(&mut netns, own, u32::MAX), "");
    }
}

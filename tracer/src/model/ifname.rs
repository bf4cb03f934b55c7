//! An interface's name, held inline: the kernel's names fit in
//! `IFNAMSIZ` (16) bytes with their NUL, so a hop carries its device's name
//! without a heap allocation of its own.
use std::{fmt, ops::Deref};

/// Longest interface name the kernel allows (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// An interface name of at most [`IFNAME_MAX`] bytes; empty when unknown.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IfName {
    len: u8,
    bytes: [u8; IFNAME_MAX],
}

impl IfName {
    /// `name`, cut to [`IFNAME_MAX`] bytes at a character boundary (no
    /// kernel name is longer).
    pub fn new(name: &str) -> Self {
        let mut end = name.len().min(IFNAME_MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; IFNAME_MAX];
        bytes[..end].copy_from_slice(&name.as_bytes()[..end]);
        Self {
            len: end as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only `new` fills the bytes, from a str cut at a char boundary.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Deref for IfName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for IfName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl PartialEq<str> for IfName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for IfName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for IfName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_any_kernel_name_and_cuts_longer_ones_at_a_character() {
        assert_eq!(IfName::default().as_str(), "");
        assert_eq!(IfName::new("veth1a2b3c4d5e6").as_str(), "veth1a2b3c4d5e6");
        assert_eq!(
            IfName::new("a-name-longer-than-15").as_str(),
            "a-name-longer-t"
        );
        // 'é' is two bytes: the 15-byte cut would split it.
        assert_eq!(IfName::new("aaaaaaaaaaaaaaé").as_str(), "aaaaaaaaaaaaaa");
        assert_eq!(format!("[{:>5}]", IfName::new("lo")), "[   lo]");
        assert_eq!(std::mem::size_of::<IfName>(), 16);
    }
}

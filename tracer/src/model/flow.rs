//! A flow's addresses, ports and protocol.
use std::net::IpAddr;

use serde::Serialize;

use super::filter::proto_name;

/// The addresses and ports of a packet as seen at one point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Tuple {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    pub fn proto_name(&self) -> String {
        proto_name(self.proto)
    }

    /// The same flow seen the other way: the answer's headers.
    pub fn reversed(self) -> Self {
        Self {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

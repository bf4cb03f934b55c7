//! Sockets bound in a namespace, from `/proc/net/{tcp,tcp6,udp,udp6}`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TCP_LISTEN: u8 = 0x0a;
const UDP_UNCONNECTED: u8 = 0x07;

/// A TCP socket listening, or a UDP socket bound and unconnected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    /// TCP listeners: connections waiting in the accept queue.
    pub accept_queue: Option<u32>,
    /// The interface the socket is bound to (`SO_BINDTODEVICE`): it takes
    /// only what arrives there.
    pub device: Option<String>,
}

impl Bound {
    /// Whether a packet to `addr` reaches this socket by address.
    pub fn takes(&self, addr: IpAddr) -> bool {
        self.addr.is_unspecified() || self.addr == addr || v4_mapped(self.addr, addr)
    }

    pub fn endpoint(&self) -> String {
        let dev = self
            .device
            .as_ref()
            .map(|d| format!("%{d}"))
            .unwrap_or_default();
        match self.addr {
            IpAddr::V6(a) => format!("[{a}]{dev}:{}", self.port),
            IpAddr::V4(a) => format!("{a}{dev}:{}", self.port),
        }
    }
}

/// An IPv6 socket on `::` also takes IPv4 (unless v6only, which /proc
/// does not say); `::ffff:a.b.c.d` is that IPv4 address.
fn v4_mapped(bound: IpAddr, to: IpAddr) -> bool {
    match (bound, to) {
        (IpAddr::V6(b), IpAddr::V4(t)) => b.to_ipv4_mapped() == Some(t),
        _ => false,
    }
}

fn addr_v4(hex: &str) -> Option<IpAddr> {
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(n.swap_bytes())))
}

fn addr_v6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// The listening (TCP) or bound (UDP) sockets of one `/proc/net` table.
pub fn parse(text: &str, proto: u8) -> Vec<Bound> {
    let wanted = if proto == 6 {
        TCP_LISTEN
    } else {
        UDP_UNCONNECTED
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, queues) = (f.get(1)?, f.get(3)?, f.get(4)?);
            if u8::from_str_radix(state, 16).ok()? != wanted {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let addr = if addr.len() == 8 {
                addr_v4(addr)?
            } else {
                addr_v6(addr)?
            };
            let port = u16::from_str_radix(port, 16).ok()?;
            let accept_queue = (proto == 6).then(|| {
                let (_, rx) = queues.split_once(':').unwrap_or(("0", "0"));
                u32::from_str_radix(rx, 16).unwrap_or(0)
            });
            Some(Bound {
                proto,
                addr,
                port,
                accept_queue,
                device: None,
            })
        })
        .collect()
}

/// The interfaces sockets are bound to, from `ss -Hlntu` (which reads them
/// over sock_diag; `/proc/net` does not show them): (protocol, address,
/// port, device).
pub fn parse_devices(ss: &str) -> Vec<(u8, IpAddr, u16, String)> {
    ss.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let proto = match *f.first()? {
                "tcp" => 6,
                "udp" => 17,
                _ => return None,
            };
            let (host, port) = f.get(4)?.rsplit_once(':')?;
            let (addr, dev) = host.split_once('%')?;
            let addr = match addr.trim_start_matches('[').trim_end_matches(']') {
                "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                a => a.parse().ok()?,
            };
            Some((proto, addr, port.parse().ok()?, dev.to_owned()))
        })
        .collect()
}

/// Gives each socket of `bound` the interface `ss` says it is bound to.
pub fn add_devices(bound: &mut [Bound], devices: &[(u8, IpAddr, u16, String)]) {
    for b in bound.iter_mut() {
        let same = |(proto, addr, port, _): &&(u8, IpAddr, u16, String)| {
            *proto == b.proto
                && *port == b.port
                && (*addr == b.addr || (addr.is_unspecified() && b.addr.is_unspecified()))
        };
        if let Some((.., dev)) = devices.iter().find(same) {
            b.device = Some(dev.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_from_proc() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 0100007F:1F90 00000000:0000 0A 00000001:00000002 00:00000000 00000000     0        0 1062 1\n\
   1: 020200C0:D7DE 507100CB:01BB 01 00000000:00000000 00:00000000 00000000     0        0 9995 1\n";
        let b = parse(tcp, 6);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].addr, "127.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(b[0].port, 8080);
        assert_eq!(b[0].accept_queue, Some(2));
        assert!(!b[0].takes("198.51.100.2".parse().expect("ip")));
        let tcp6 = "h\n   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
   1: 0000000000000000FFFF00000201A8C0:0051 00000000000000000000000000000000:0000 0A 00000000:00000000\n";
        let b = parse(tcp6, 6);
        assert!(b[0].takes("192.0.2.2".parse().expect("ip")));
        assert_eq!(
            b[1].addr,
            "::ffff:192.168.1.2".parse::<IpAddr>().expect("ip")
        );
        assert!(b[1].takes("192.168.1.2".parse().expect("ip")));
        assert_eq!(b[1].endpoint(), "[::ffff:192.168.1.2]:81");
    }

    #[test]
    fn bound_interfaces_from_ss() {
        let ss = "tcp LISTEN 0 8 0.0.0.0%s9:8742 0.0.0.0:*\n\
                  tcp LISTEN 0 8 [::]%eth1:22 [::]:*\n\
                  udp UNCONN 0 0 *%lo:53 *:*\n\
                  tcp LISTEN 0 8 0.0.0.0:80 0.0.0.0:*\n";
        let devs = parse_devices(ss);
        assert_eq!(devs.len(), 3);
        let mut bound = vec![Bound {
            proto: 6,
            addr: "0.0.0.0".parse().expect("ip"),
            port: 8742,
            accept_queue: Some(0),
            device: None,
        }];
        add_devices(&mut bound, &devs);
        assert_eq!(bound[0].endpoint(), "0.0.0.0%s9:8742");
        assert_eq!(devs[1].1, "::".parse::<IpAddr>().expect("ip"));
    }
}

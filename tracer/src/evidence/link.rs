//! Which device a namespace routes an address out of, and that device's
//! MTU: read from inside the namespace (`/proc/net/route`, `SIOCGIFMTU`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest-prefix IPv4 route to an address in a `/proc/net/route` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dev: String,
    /// Its prefix length (0: the default route).
    pub len: u32,
    /// Through a gateway (`RTF_GATEWAY`), not on the link.
    pub via_gateway: bool,
}

/// The longest-prefix IPv4 route to `dst` in a `/proc/net/route` table.
pub fn best_route(table: &str, dst: Ipv4Addr) -> Option<Route> {
    const RTF_GATEWAY: u32 = 0x2;
    let dst = u32::from(dst);
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let net = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            let dev = (*f.first()?).to_owned();
            (dst & mask == net).then(|| Route {
                dev,
                len: mask.count_ones(),
                via_gateway: flags & RTF_GATEWAY != 0,
            })
        })
        .max_by_key(|r| r.len)
}

/// The device of the longest-prefix IPv4 route to `dst` in a
/// `/proc/net/route` table.
pub fn route_dev(table: &str, dst: Ipv4Addr) -> Option<String> {
    best_route(table, dst).map(|r| r.dev)
}

/// Asks the calling thread's namespace about `dev` with `SIOCGIF*`
/// request `req`; the answer, as the request fills it.
fn ask(dev: &str, req: libc::c_ulong) -> Option<libc::ifreq> {
    if dev.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a datagram socket used for one ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(dev.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: fd is open and ifr a valid ifreq for these get requests.
    let rc = unsafe { libc::ioctl(fd, req as _, &mut ifr) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    (rc == 0).then_some(ifr)
}

/// The MTU of `dev` in the calling thread's namespace.
pub fn mtu_of(dev: &str) -> Option<u32> {
    let ifr = ask(dev, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU fills ifru_mtu.
    Some(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}

/// The IPv4 address and prefix length of `dev`, in the calling thread's namespace.
pub fn v4_net_of(dev: &str) -> Option<(Ipv4Addr, u32)> {
    let addr = |ifr: libc::ifreq| {
        // SAFETY: SIOCGIFADDR and SIOCGIFNETMASK fill ifru_addr with a sockaddr_in.
        let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&ifr.ifr_ifru.ifru_addr) };
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
    };
    let a = addr(ask(dev, libc::SIOCGIFADDR)?);
    let m = addr(ask(dev, libc::SIOCGIFNETMASK)?);
    Some((a, u32::from(m).count_ones()))
}

/// The device of the longest-prefix IPv6 route to `dst` in a
/// `/proc/net/ipv6_route` table, passing over local and reject routes.
pub fn route6_dev(table: &str, dst: Ipv6Addr) -> Option<String> {
    const RTF_REJECT: u32 = 0x0200;
    const RTF_LOCAL: u32 = 0x8000_0000;
    let dst = u128::from(dst);
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let net = u128::from_str_radix(f.first()?, 16).ok()?;
            let len = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let flags = u32::from_str_radix(f.get(8)?, 16).ok()?;
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            let dev = (*f.get(9)?).to_owned();
            let usable = flags & (RTF_REJECT | RTF_LOCAL) == 0;
            (usable && dst & mask == net).then_some((len, dev))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, dev)| dev)
}

/// The device the calling thread's namespace routes `dst` out of, and its MTU.
pub fn out_link(dst: IpAddr) -> Option<(String, u32)> {
    let dev = match dst {
        IpAddr::V4(d) => route_dev(
            &std::fs::read_to_string("/proc/thread-self/net/route").ok()?,
            d,
        )?,
        IpAddr::V6(d) => route6_dev(
            &std::fs::read_to_string("/proc/thread-self/net/ipv6_route").ok()?,
            d,
        )?,
    };
    let mtu = mtu_of(&dev)?;
    Some((dev, mtu))
}

/// The calling thread's namespace's IPv4 addresses: (device, address, prefix length).
pub fn v4_addrs() -> Vec<(String, Ipv4Addr, u32)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of its family.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address and netmask are sockaddr_in.
        let (addr, mask) = unsafe {
            (
                *(ifa.ifa_addr as *const libc::sockaddr_in),
                *(ifa.ifa_netmask as *const libc::sockaddr_in),
            )
        };
        // SAFETY: ifa_name is a NUL-terminated interface name.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push((
            name,
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u32::from_be(mask.sin_addr.s_addr).count_ones(),
        ));
    }
    // SAFETY: the list getifaddrs gave us, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The calling thread's namespace's global IPv6 addresses: (device,
/// address, prefix length); link-local ones name no route across links.
pub fn v6_addrs() -> Vec<(String, Ipv6Addr, u32)> {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/if_inet6") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr = Ipv6Addr::from(u128::from_str_radix(f.first()?, 16).ok()?);
            let len = u32::from_str_radix(f.get(2)?, 16).ok()?;
            let dev = (*f.get(5)?).to_owned();
            (!addr.is_loopback() && !addr.is_unicast_link_local()).then_some((dev, addr, len))
        })
        .collect()
}

/// The calling thread's namespace's addresses of both families.
pub fn addrs() -> Vec<(String, IpAddr, u32)> {
    let v4 = v4_addrs()
        .into_iter()
        .map(|(d, a, l)| (d, IpAddr::V4(a), l));
    let v6 = v6_addrs()
        .into_iter()
        .map(|(d, a, l)| (d, IpAddr::V6(a), l));
    v4.chain(v6).collect()
}

/// Whether the calling thread's namespace holds `addr` (a socket binds to it).
pub fn holds(addr: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((addr, 0)).is_ok()
}

/// A neighbour of `here` (its addresses, from [`addrs`]) that holds an
/// address of `there` of `family`'s kind (`dst`'s): (its address, the
/// device of `here` it is on).
pub fn adjacent(
    here: &[(String, IpAddr, u32)],
    there: &[(String, IpAddr, u32)],
    dst: IpAddr,
) -> Option<(IpAddr, String)> {
    let net = |a: IpAddr, len: u32| -> Option<u128> {
        let (bits, width) = match a {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        };
        (len < width).then(|| bits.checked_shr(width - len).unwrap_or(0))
    };
    there
        .iter()
        .filter(|(_, theirs, _)| theirs.is_ipv6() == dst.is_ipv6())
        .find_map(|(_, theirs, _)| {
            here.iter()
                .find(|(dev, ours, len)| {
                    dev != "lo"
                        && ours != theirs
                        && ours.is_ipv6() == theirs.is_ipv6()
                        && net(*ours, *len).is_some_and(|n| Some(n) == net(*theirs, *len))
                })
                .map(|(dev, _, _)| (*theirs, dev.clone()))
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_longest_prefix_wins() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
r1\t00000000\tFE6433C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
r0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let ip = |s: &str| s.parse().expect("ip");
        assert_eq!(
            super::route_dev(table, ip("192.0.2.1")).as_deref(),
            Some("r0")
        );
        assert_eq!(
            super::route_dev(table, ip("203.0.113.9")).as_deref(),
            Some("r1")
        );
    }

    #[test]
    fn the_longest_ipv6_prefix_wins_and_reject_and_local_routes_do_not_count() {
        let table = "20010db8000a00000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000005 00000000 00000001       x0\n\
20010db8000c00000000000000000000 40 00000000000000000000000000000000 00 20010db8000b00000000000000000002 00000400 00000003 00000000 00000003       x1\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
20010db8000a00000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001       x0\n";
        let ip = |s: &str| s.parse().expect("ip");
        assert_eq!(
            super::route6_dev(table, ip("2001:db8:a::10")).as_deref(),
            Some("x0")
        );
        assert_eq!(
            super::route6_dev(table, ip("2001:db8:c::20")).as_deref(),
            Some("x1")
        );
        assert_eq!(
            super::route6_dev(table, ip("2001:db8:a::1")).as_deref(),
            Some("x0")
        );
        assert_eq!(super::route6_dev(table, ip("2001:db8:f::1")), None);
    }

    #[test]
    fn a_neighbour_that_holds_the_destination() {
        let ip = |s: &str| s.parse().expect("ip");
        let router = vec![
            ("lo".to_owned(), ip("127.0.0.1"), 8),
            ("r0".to_owned(), ip("192.0.2.254"), 24),
            ("r1".to_owned(), ip("198.51.100.254"), 24),
            ("r1".to_owned(), ip("2001:db8:2::fe"), 64),
        ];
        let server = vec![
            ("lo".to_owned(), ip("127.0.0.1"), 8),
            ("b0".to_owned(), ip("198.51.100.2"), 24),
            ("lo".to_owned(), ip("203.0.113.9"), 32),
            ("b0".to_owned(), ip("2001:db8:2::2"), 64),
            ("lo".to_owned(), ip("2001:db8:99::9"), 128),
        ];
        assert_eq!(
            super::adjacent(&router, &server, ip("203.0.113.9")),
            Some((ip("198.51.100.2"), "r1".to_owned()))
        );
        assert_eq!(
            super::adjacent(&router, &server, ip("2001:db8:99::9")),
            Some((ip("2001:db8:2::2"), "r1".to_owned()))
        );
        assert_eq!(
            super::adjacent(&router, &router[..1], ip("203.0.113.9")),
            None
        );
    }
}

//! Which device a namespace routes an address out of, and that device's
//! MTU: read from inside the namespace (`/proc/net/route`, `SIOCGIFMTU`).
use std::net::Ipv4Addr;

/// The device of the longest-prefix IPv4 route to `dst` in a
/// `/proc/net/route` table.
pub fn route_dev(table: &str, dst: Ipv4Addr) -> Option<String> {
    let dst = u32::from(dst);
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let net = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            let dev = (*f.first()?).to_owned();
            (dst & mask == net).then(|| (mask.count_ones(), dev))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, dev)| dev)
}

/// The MTU of `dev` in the calling thread's namespace.
pub fn mtu_of(dev: &str) -> Option<u32> {
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
    // SAFETY: fd is open and ifr a valid ifreq for SIOCGIFMTU.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU as _, &mut ifr) };
    // SAFETY: SIOCGIFMTU fills ifru_mtu.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    (rc == 0).then_some(mtu as u32)
}

/// The device the calling thread's namespace routes `dst` out of, and its MTU.
pub fn out_link(dst: Ipv4Addr) -> Option<(String, u32)> {
    let table = std::fs::read_to_string("/proc/thread-self/net/route").ok()?;
    let dev = route_dev(&table, dst)?;
    let mtu = mtu_of(&dev)?;
    Some((dev, mtu))
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
}

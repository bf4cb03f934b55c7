//! IPv4 neighbour (ARP) entries of a namespace, from `/proc/net/arp`.
use std::net::IpAddr;

/// `ATF_COM`: the entry has a link-layer address.
const ATF_COM: u32 = 0x2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub device: String,
    /// Whether the neighbour answered (a link-layer address is known).
    pub resolved: bool,
}

pub fn parse(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.first()?.parse().ok()?;
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            Some(Neighbour {
                addr,
                device: (*f.get(5)?).to_owned(),
                resolved: flags & ATF_COM != 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn arp_table() {
        let text =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0\n\
192.0.2.77       0x1         0x0         00:00:00:00:00:00     *        a0\n";
        let n = super::parse(text);
        assert_eq!(n.len(), 2);
        assert!(n[0].resolved);
        assert!(!n[1].resolved);
        assert_eq!(n[1].device, "a0");
    }
}

//! Names of `kfree_skb` drop reasons, read from the running kernel's BTF: the core
//! `enum skb_drop_reason`, plus subsystem reasons (mac80211, openvswitch, ...)
//! whose values carry the subsystem id in their high 16 bits.

use std::collections::HashMap;

use super::btf::{Btf, BtfEnum, BtfError, KernelBtf};

/// `SKB_DROP_REASON_SUBSYS_SHIFT`.
pub const SUBSYS_SHIFT: u32 = 16;
const REASON_ENUM: &str = "skb_drop_reason";
const SUBSYS_ENUM: &str = "skb_drop_reason_subsys";

#[derive(Debug, thiserror::Error)]
pub enum DropReasonError {
    #[error(
        "kernel BTF has no `enum skb_drop_reason` (kernels before 5.17 report no drop reasons)"
    )]
    NoDropReasons,
    #[error(transparent)]
    Btf(#[from] BtfError),
}

pub type Result<T> = std::result::Result<T, DropReasonError>;

#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    by_value: HashMap<u32, String>,
    by_name: HashMap<String, u32>,
    subsystems: HashMap<u16, String>,
}

/// `SKB_DROP_REASON_NETFILTER_DROP` → `NETFILTER_DROP`, `SKB_CONSUMED` → `CONSUMED`,
/// as the kernel's own tracepoint output spells them.
fn strip_core(name: &str) -> &str {
    name.strip_prefix("SKB_DROP_REASON_")
        .or_else(|| name.strip_prefix("SKB_"))
        .unwrap_or(name)
}

/// Enum values are read as i64; reasons are u32 (signed enums hold them negative).
fn to_u32(v: i64) -> Option<u32> {
    u32::try_from(v)
        .ok()
        .or_else(|| i32::try_from(v).ok().map(|v| v as u32))
}

fn subsys_of(raw: u32) -> u16 {
    (raw >> SUBSYS_SHIFT) as u16
}

impl DropReasons {
    /// From the running kernel's BTF: vmlinux and every module.
    pub fn from_kernel(btf: &KernelBtf) -> Result<Self> {
        Self::from_btfs(&btf.vmlinux, &btf.module_btfs())
    }

    pub fn from_btf(vmlinux: &Btf) -> Result<Self> {
        Self::from_btfs(vmlinux, &[])
    }

    /// `modules` are split BTFs on top of `vmlinux`.
    pub fn from_btfs(vmlinux: &Btf, modules: &[Btf]) -> Result<Self> {
        let core = match vmlinux.enum_variants(REASON_ENUM) {
            Ok(core) => core,
            Err(BtfError::TypeNotFound(_)) => return Err(DropReasonError::NoDropReasons),
            Err(e) => return Err(e.into()),
        };
        let mut reasons = Self::default();
        for (name, value) in &core {
            let name = strip_core(name);
            if let (Some(v), false) = (to_u32(*value), matches!(name, "MAX" | "SUBSYS_MASK")) {
                reasons.insert(name, v);
            }
        }
        match vmlinux.enum_variants(SUBSYS_ENUM) {
            Ok(subsys) => {
                for (name, value) in subsys {
                    let name = name
                        .strip_prefix("SKB_DROP_REASON_SUBSYS_")
                        .unwrap_or(&name);
                    if let (Ok(id @ 1..), false) = (u16::try_from(value), name == "NUM") {
                        reasons.subsystems.insert(id, name.to_owned());
                    }
                }
            }
            Err(BtfError::TypeNotFound(_)) => return Ok(reasons),
            Err(e) => return Err(e.into()),
        }
        // A subsystem built into the kernel has its reasons in vmlinux itself.
        for btf in std::iter::once(vmlinux).chain(modules) {
            match btf.local_enums() {
                Ok(enums) => enums.iter().for_each(|e| reasons.add_subsystem_enum(e)),
                Err(e) => log::warn!("skipping drop reasons in {btf:?}: {e}"),
            }
        }
        Ok(reasons)
    }

    fn insert(&mut self, name: &str, value: u32) {
        self.by_value
            .entry(value)
            .or_insert_with(|| name.to_owned());
        self.by_name.entry(name.to_owned()).or_insert(value);
    }

    /// Takes the variants of an enum like `ovs_drop_reason`, recognised by a
    /// marker variant equal to `subsys << 16` (e.g. `__OVS_DROP_REASON`).
    fn add_subsystem_enum(&mut self, e: &BtfEnum) {
        let markers: Vec<u16> = e
            .variants
            .iter()
            .filter_map(|&(_, v)| to_u32(v))
            .filter(|&v| v & 0xffff == 0 && self.subsystems.contains_key(&subsys_of(v)))
            .map(subsys_of)
            .collect();
        if markers.is_empty() {
            return;
        }
        for (name, value) in &e.variants {
            let Some(v) = to_u32(*value) else { continue };
            let sentinel = name.starts_with('_') || name.ends_with("_MAX");
            if v & 0xffff != 0 && markers.contains(&subsys_of(v)) && !sentinel {
                self.insert(name, v);
            }
        }
    }

    /// The reason's name, or `UNKNOWN(<raw>)`.
    pub fn name(&self, raw: u32) -> String {
        match self.by_value.get(&raw) {
            Some(name) => name.clone(),
            None => format!("UNKNOWN({raw})"),
        }
    }

    /// The value of `NETFILTER_DROP` (or `SKB_DROP_REASON_NETFILTER_DROP`).
    pub fn value(&self, name: &str) -> Option<u32> {
        self.by_name
            .get(name)
            .or_else(|| self.by_name.get(strip_core(name)))
            .copied()
    }

    /// Subsystem name (e.g. `OPENVSWITCH`) for a subsystem reason.
    pub fn subsystem(&self, raw: u32) -> Option<&str> {
        self.subsystems.get(&subsys_of(raw)).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.by_value.iter().map(|(&v, n)| (v, n.as_str()))
    }

    pub fn len(&self) -> usize {
        self.by_value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::kernel::btf::tests::builder::BtfBuilder;

    fn vmlinux() -> Btf {
        let mut b = BtfBuilder::new();
        b.enum32(
            "skb_drop_reason",
            false,
            &[
                ("SKB_NOT_DROPPED_YET", 0),
                ("SKB_CONSUMED", 1),
                ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
                ("SKB_DROP_REASON_NETFILTER_DROP", 12),
                ("SKB_DROP_REASON_MAX", 13),
                ("SKB_DROP_REASON_SUBSYS_MASK", 0xffff_0000),
            ],
        );
        b.enum32(
            "skb_drop_reason_subsys",
            false,
            &[
                ("SKB_DROP_REASON_SUBSYS_CORE", 0),
                ("SKB_DROP_REASON_SUBSYS_MAC80211_UNUSABLE", 1),
                ("SKB_DROP_REASON_SUBSYS_MAC80211_MONITOR", 2),
                ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 3),
                ("SKB_DROP_REASON_SUBSYS_NUM", 4),
            ],
        );
        b.enum32(
            "mac80211_drop_reason",
            false,
            &[
                ("RX_CONTINUE", 0xffff_ffff),
                ("___RX_DROP_UNUSABLE", 1 << 16),
                ("RX_DROP_U_MIC_FAIL", (1 << 16) + 1),
                ("___RX_DROP_MONITOR", 2 << 16),
                ("RX_DROP_M_UNEXPECTED_4ADDR_FRAME", (2 << 16) + 1),
            ],
        );
        b.enum32(
            "unrelated_flags",
            false,
            &[("F_A", 0x1_0001), ("F_B", 0x3_0002)],
        );
        Btf::from_bytes(b.build()).unwrap()
    }

    fn openvswitch(base: &Btf) -> Btf {
        let mut m = BtfBuilder::new_split(base);
        m.enum32(
            "ovs_drop_reason",
            false,
            &[
                ("__OVS_DROP_REASON", 3 << 16),
                ("OVS_DROP_LAST_ACTION", (3 << 16) + 1),
                ("OVS_DROP_ACTION_ERROR", (3 << 16) + 2),
                ("OVS_DROP_MAX", (3 << 16) + 3),
            ],
        );
        Btf::from_split_bytes(m.build(), base).unwrap()
    }

    #[test]
    fn core_reasons_lose_their_prefix() {
        let r = DropReasons::from_btf(&vmlinux()).unwrap();
        assert_eq!(r.name(12), "NETFILTER_DROP");
        assert_eq!(r.name(1), "CONSUMED");
        assert_eq!(r.name(0), "NOT_DROPPED_YET");
        assert_eq!(r.name(2), "NOT_SPECIFIED");
        assert_eq!(r.name(13), "UNKNOWN(13)");
        assert_eq!(r.name(0xffff_0000), "UNKNOWN(4294901760)");
        assert_eq!(r.value("NETFILTER_DROP"), Some(12));
        assert_eq!(r.value("SKB_DROP_REASON_NETFILTER_DROP"), Some(12));
        assert_eq!(r.value("SKB_CONSUMED"), Some(1));
        assert_eq!(r.value("MAX"), None);
    }

    #[test]
    fn subsystem_reasons_from_vmlinux_and_modules() {
        let base = vmlinux();
        let r = DropReasons::from_btfs(&base, &[openvswitch(&base)]).unwrap();
        assert_eq!(r.name(0x3_0001), "OVS_DROP_LAST_ACTION");
        assert_eq!(r.name(0x3_0002), "OVS_DROP_ACTION_ERROR");
        assert_eq!(r.name(0x3_0003), "UNKNOWN(196611)");
        assert_eq!(r.name(0x3_0000), "UNKNOWN(196608)");
        assert_eq!(r.subsystem(0x3_0001), Some("OPENVSWITCH"));
        assert_eq!(r.subsystem(12), None);
        assert_eq!(r.name(0x1_0001), "RX_DROP_U_MIC_FAIL");
        assert_eq!(r.name(0x2_0001), "RX_DROP_M_UNEXPECTED_4ADDR_FRAME");
        assert_eq!(r.value("OVS_DROP_ACTION_ERROR"), Some(0x3_0002));
        assert_eq!(r.value("F_B"), None);
        assert_eq!(r.len(), 4 + 4);
    }

    #[test]
    fn missing_enum_is_a_clear_error() {
        let mut b = BtfBuilder::new();
        b.int("int", 4, true);
        let btf = Btf::from_bytes(b.build()).unwrap();
        let err = DropReasons::from_btf(&btf).unwrap_err();
        assert!(matches!(err, DropReasonError::NoDropReasons));
        assert!(err.to_string().contains("5.17"));
    }

    #[test]
    fn running_kernel() {
        assert!(
            std::path::Path::new(crate::kernel::btf::VMLINUX_PATH).exists(),
            "running_kernel needs /sys/kernel/btf/vmlinux"
        );
        let start = std::time::Instant::now();
        let r = DropReasons::from_kernel(&KernelBtf::load().unwrap()).unwrap();
        eprintln!("{} drop reasons loaded in {:?}", r.len(), start.elapsed());
        let nf = r.value("NETFILTER_DROP").unwrap();
        assert_eq!(r.name(nf), "NETFILTER_DROP");
        assert_eq!(r.name(r.value("SKB_CONSUMED").unwrap()), "CONSUMED");
    }
}

/// On kernels that report no drop reasons (before 5.17), the function that
/// freed a packet says which reason a newer kernel gives there. Only
/// functions whose drops are of one kind in practice are listed;
/// `ip_forward` (too big, but also TTL and policy) is left to the caller,
/// which can check the packet against the link's MTU.
const BY_LOCATION: &[(&str, &str)] = &[
    ("nf_hook_slow", "NETFILTER_DROP"),
    ("nft_do_chain", "NETFILTER_DROP"),
    ("tcp_v4_rcv", "NO_SOCKET"),
    ("tcp_v6_rcv", "NO_SOCKET"),
    ("__udp4_lib_rcv", "NO_SOCKET"),
    ("__udp6_lib_rcv", "NO_SOCKET"),
    ("neigh_invalidate", "NEIGH_FAILED"),
    ("__neigh_event_send", "NEIGH_QUEUEFULL"),
    ("ip_error", "IP_INADDRERRORS"),
    ("ip_rcv_finish", "IP_RPFILTER"),
    ("sch_handle_ingress", "TC_INGRESS"),
    ("sch_handle_egress", "TC_EGRESS"),
    // A socket's (or a qdisc's) queue emptied as it closes or resets: the
    // out-of-order segments a closing TCP socket still held.
    ("skb_rbtree_purge", "QUEUE_PURGE"),
];

/// The reason a newer kernel gives for a drop at `location` (`symbol+0x…`).
pub fn reason_by_location(location: &str) -> Option<&'static str> {
    let symbol = location.split('+').next()?;
    let symbol = symbol.split('.').next().unwrap_or(symbol);
    BY_LOCATION
        .iter()
        .find(|(f, _)| *f == symbol)
        .map(|(_, r)| *r)
}

#[cfg(test)]
mod location_tests {
    #[test]
    fn reasons_by_where_the_packet_was_freed() {
        use super::reason_by_location as r;
        assert_eq!(r("neigh_invalidate+0x7e"), Some("NEIGH_FAILED"));
        assert_eq!(r("sch_handle_ingress.constprop.0+0x1a"), Some("TC_INGRESS"));
        assert_eq!(r("ip_forward+0x2c0"), None);
        assert_eq!(r("skb_rbtree_purge+0x4d"), Some("QUEUE_PURGE"));
        assert_eq!(r("skb_release_data+0x10"), None);
    }
}

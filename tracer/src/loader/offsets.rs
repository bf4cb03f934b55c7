//! Struct member offsets the kernel programs need, from the running kernel's BTF.
use tracer_common::Offsets;

use crate::kernel::btf::{Btf, BtfError};

fn off(btf: &Btf, ty: &str, member: &str) -> Result<u32, BtfError> {
    btf.member_offset(ty, member)
}

/// Reads every offset in [`Offsets`]; fails if the kernel lacks any of them.
pub fn from_btf(btf: &Btf) -> Result<Offsets, BtfError> {
    let hook_size = btf.member_size("nf_hook_state", "hook")?;
    Ok(Offsets {
        skb_head: off(btf, "sk_buff", "head")?,
        skb_data: off(btf, "sk_buff", "data")?,
        skb_len: off(btf, "sk_buff", "len")?,
        skb_dev: off(btf, "sk_buff", "dev")?,
        skb_sk: off(btf, "sk_buff", "sk")?,
        skb_protocol: off(btf, "sk_buff", "protocol")?,
        skb_network_header: off(btf, "sk_buff", "network_header")?,
        skb_mac_header: off(btf, "sk_buff", "mac_header")?,
        dev_name: off(btf, "net_device", "name")?,
        dev_ifindex: off(btf, "net_device", "ifindex")?,
        dev_nd_net: off(btf, "net_device", "nd_net.net")?,
        net_ns_inum: off(btf, "net", "ns.inum")?,
        sk_net: off(btf, "sock", "__sk_common.skc_net.net")?,
        hook_state_hook: off(btf, "nf_hook_state", "hook")?,
        hook_state_pf: off(btf, "nf_hook_state", "pf")?,
        hook_state_in: off(btf, "nf_hook_state", "in")?,
        hook_state_out: off(btf, "nf_hook_state", "out")?,
        hook_state_net: off(btf, "nf_hook_state", "net")?,
        hook_state_hook_size: hook_size,
        skb_tail: off(btf, "sk_buff", "tail")?,
    })
}

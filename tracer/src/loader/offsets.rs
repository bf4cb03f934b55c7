//! Struct member offsets the kernel programs need, from the running kernel's BTF.
use tracer_common::Offsets;

use tracer_common::CT_TUPLE_LEN;

use crate::kernel::btf::{Btf, BtfError, KernelBtf};

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
        ..Offsets::default()
    })
}

/// Fills in the conntrack members, from vmlinux or, where conntrack is a
/// module, its BTF. Without them (no conntrack, or its module not loaded
/// yet) the programs write no conntrack records.
pub fn add_conntrack(o: &mut Offsets, kernel: &KernelBtf) {
    let found = conntrack(&kernel.vmlinux, &kernel.vmlinux).or_else(|_| {
        let module = kernel
            .module("nf_conntrack")
            .ok_or_else(|| BtfError::TypeNotFound("nf_conn (nf_conntrack module BTF)".into()))?;
        conntrack(&kernel.vmlinux, &module)
    });
    match found {
        Ok(ct) => {
            o.skb_nfct = ct.skb_nfct;
            o.ct_status = ct.ct_status;
            o.ct_tuple = ct.ct_tuple;
            o.ct_tuple_stride = ct.ct_tuple_stride;
            o.ct_mark = ct.ct_mark;
            o.ct_tcp_state = ct.ct_tcp_state;
            o.ct_zone = ct.ct_zone;
        }
        Err(e) => log::debug!("no conntrack state on hops: {e}"),
    }
}

fn conntrack(vmlinux: &Btf, btf: &Btf) -> Result<Offsets, BtfError> {
    let tuple_len = btf.member_size("nf_conntrack_tuple_hash", "tuple")?;
    if tuple_len as usize != CT_TUPLE_LEN {
        return Err(BtfError::Invalid(format!(
            "nf_conntrack_tuple has {tuple_len} bytes, not {CT_TUPLE_LEN}"
        )));
    }
    Ok(Offsets {
        skb_nfct: off(vmlinux, "sk_buff", "_nfct")?,
        ct_status: off(btf, "nf_conn", "status")?,
        ct_tuple: off(btf, "nf_conn", "tuplehash")? + off(btf, "nf_conntrack_tuple_hash", "tuple")?,
        ct_tuple_stride: btf.member_size("nf_conn", "tuplehash")? / 2,
        ct_mark: off(btf, "nf_conn", "mark").unwrap_or(0),
        ct_tcp_state: off(btf, "nf_conn", "proto")? + off(btf, "ip_ct_tcp", "state")?,
        ct_zone: off(btf, "nf_conn", "zone.id").unwrap_or(0),
        ..Offsets::default()
    })
}

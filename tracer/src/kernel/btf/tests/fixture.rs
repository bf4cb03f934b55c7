//! A BTF blob shaped like the kernel's networking structs, for unit tests.

use super::builder::BtfBuilder;

/// A cut-down `sk_buff` world shaped like the kernel's.
pub(crate) fn fixture() -> BtfBuilder {
    let mut b = BtfBuilder::new();
    let uint = b.int("unsigned int", 4, false);
    let int = b.int("int", 4, true);
    let uchar = b.int("unsigned char", 1, false);
    let ushort = b.int("short unsigned int", 2, false);
    let ulong = b.int("long unsigned int", 8, false);
    let char_ = b.int("char", 1, true);
    b.float("double", 8);
    let be16 = b.typedef("__be16", ushort);
    let void_ptr = b.ptr(0);

    let ns_common = b.struct_(
        "ns_common",
        24,
        &[("stashed", void_ptr, 0), ("inum", uint, 128)],
    );
    let net = b.struct_("net", 64, &[("passive", int, 0), ("ns", ns_common, 64)]);
    let net_ptr = b.ptr(net);
    let possible_net = b.struct_("", 8, &[("net", net_ptr, 0)]);
    let possible_net_t = b.typedef("possible_net_t", possible_net);
    let name = b.array(char_, int, 16);
    let net_device = b.struct_(
        "net_device",
        256,
        &[
            ("name", name, 0),
            ("ifindex", int, 128),
            ("nd_net", possible_net_t, 160 * 8),
        ],
    );
    let dev_ptr = b.ptr(net_device);
    let sock_common = b.struct_(
        "sock_common",
        136,
        &[("skc_daddr", uint, 0), ("skc_net", possible_net_t, 48 * 8)],
    );
    let sock = b.struct_(
        "sock",
        800,
        &[("__sk_common", sock_common, 0), ("sk_mark", uint, 200 * 8)],
    );
    let sock_ptr = b.ptr(sock);

    let skb_fwd = b.fwd_struct("sk_buff");
    let skb_fwd_ptr = b.ptr(skb_fwd);
    let dev_union = b.union_("", 8, &[("dev", dev_ptr, 0), ("dev_scratch", ulong, 0)]);
    let list = b.struct_(
        "",
        24,
        &[
            ("next", skb_fwd_ptr, 0),
            ("prev", skb_fwd_ptr, 64),
            ("", dev_union, 128),
        ],
    );
    let rb_node = b.struct_("rb_node", 24, &[("__rb_parent_color", ulong, 0)]);
    let head_union = b.union_("", 24, &[("", list, 0), ("rbnode", rb_node, 0)]);
    let sk_union = b.union_("", 8, &[("sk", sock_ptr, 0), ("ip_defrag_offset", int, 0)]);
    let volatile_uint = b.volatile(uint);
    let cv_uint = b.const_(volatile_uint);
    let flags = b.bitfield_struct(
        "",
        1,
        &[("pkt_type", uchar, 0, 3), ("ignore_df", uchar, 3, 1)],
    );
    let hdrs = b.struct_(
        "",
        8,
        &[
            ("protocol", be16, 0),
            ("transport_header", ushort, 16),
            ("network_header", ushort, 32),
            ("mac_header", ushort, 48),
        ],
    );
    let hdrs_group = b.union_("", 8, &[("", hdrs, 0), ("headers", hdrs, 0)]);
    let uchar_ptr = b.ptr(uchar);
    let skb = b.struct_(
        "sk_buff",
        232,
        &[
            ("", head_union, 0),
            ("", sk_union, 24 * 8),
            ("len", cv_uint, 112 * 8),
            ("", flags, 128 * 8),
            ("", hdrs_group, 180 * 8),
            ("head", uchar_ptr, 200 * 8),
            ("data", uchar_ptr, 208 * 8),
        ],
    );
    b.decl_tag("user", skb);
    let skb_ptr = b.ptr(skb);

    let u16_ = b.typedef("u16", ushort);
    b.bitfield_struct(
        "flags_test",
        4,
        &[("a", uchar, 0, 1), ("b", uchar, 1, 3), ("c", u16_, 16, 0)],
    );
    let legacy = b.int_bits("unsigned int", 4, false, 2, 5);
    b.struct_("legacy_bits", 8, &[("x", uint, 0), ("y", legacy, 32)]);

    let reason = b.enum32(
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
    b.enum32("sign_test", true, &[("NEG", -1), ("POS", 1)]);
    b.enum64("big64", &[("HUGE", 1 << 40), ("ALL", u64::MAX)]);

    let trace_proto = b.func_proto(
        0,
        &[
            ("", void_ptr),
            ("", skb_ptr),
            ("", void_ptr),
            ("", reason),
            ("", sock_ptr),
        ],
    );
    let trace_ptr = b.ptr(trace_proto);
    b.typedef("btf_trace_kfree_skb", trace_ptr);
    let hook_proto = b.func_proto(
        int,
        &[
            ("skb", skb_ptr),
            ("state", void_ptr),
            ("e", void_ptr),
            ("s", uint),
        ],
    );
    b.func("nf_hook_slow", hook_proto);
    let const_char = b.const_(char_);
    let fmt = b.ptr(const_char);
    let printk = b.func_proto(int, &[("fmt", fmt), ("", 0)]);
    b.func("_printk", printk);
    b
}
